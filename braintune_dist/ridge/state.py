"""The typed state of one :class:`.ridge.RidgeCV` fit: each split's decomposition and the refit's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from braintune_dist.ridge import pole
from braintune_dist.ridge.checks import Split


@dataclass
class Eigen:
    """Eigendecomposition of a split's training Gram (feature space) or kernel (sample space), or of the
    kernel refit on all rows (m components)."""

    kernel: bool
    """Sample space: the decomposition is of X_tr X_trᵀ (p > n_tr)."""
    lam: Any
    """(m,) float64 eigenvalues, >= 0."""
    mu: Any
    """(p,) float64 mean of the training rows of X, or None (no intercept)."""
    basis: Any
    """(p or n_tr, m) eigenvectors in the product dtype: they rotate XᵀY (feature) or Y_tr (kernel)."""
    tr: Any
    """Training rows (slice or int array)."""
    ntr: int
    """Number of training rows."""
    W: Any = None
    """(p, m) X_trᵀ basis: weights of the kernel refit (refit only)."""
    A: Any = None
    """(n_val, m) validation design in the eigenbasis (CV splits)."""
    F: Any = None
    """(n_alphas, m) 1 / (lam + alpha) of the direct form (CV splits without pole terms)."""
    pole: Optional[pole.Terms] = None
    """Terms of the pole form (CV splits where it is cheaper)."""


@dataclass
class GramRefit:
    """Feature-space refit on all rows, solved per chosen alpha by :func:`_solve_refit`."""

    G: Any
    """(p, p) float64 centred XᵀX."""
    mu: Any
    """(p,) float64 mean of the rows of X, or None (no intercept)."""
    kernel: bool = False


@dataclass
class Fold:
    """A split and its decomposition in one fit."""

    split: Split
    feat: bool
    """Feature space (p <= n_tr), else sample space."""
    eig: Optional[Eigen] = None
