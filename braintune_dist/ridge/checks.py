"""Input checks and CV splits of :class:`.ridge.RidgeCV` (one clear error per bad field)."""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Split:
    """One CV split of the rows."""

    tr: Any
    """Training rows: a slice, or an int array (n_tr,)."""
    val: Any
    """Validation rows: a slice, or an int array (n_val,); None for the refit on all rows."""
    ntr: int
    """Number of training rows."""
    nv: int
    """Number of validation rows."""
    comp: bool
    """The training rows are exactly the complement of the validation rows (then X_trᵀX_tr = G - X_valᵀX_val)."""


def check_X(be, X, name):
    X = be.asarray(X)
    if X.ndim != 2 or 0 in X.shape or X.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a non-empty numeric 2-D array (n_samples, n_features), "
                         f"got shape {X.shape} dtype {X.dtype}")
    dt = np.float32 if X.dtype == np.float32 else np.float64
    X = X.astype(dt, copy=False)
    if not bool(be.xp.isfinite(X).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return X, dt


def check_Y(Y, n):
    Y = Y if hasattr(Y, "shape") else np.asarray(Y)
    if Y.ndim not in (1, 2) or (Y.ndim == 2 and Y.shape[1] == 0) or Y.dtype.kind not in "fiub":
        raise ValueError(f"Y must be a numeric 1-D or 2-D array (n_samples, n_targets), "
                         f"got shape {Y.shape} dtype {Y.dtype}")
    if Y.shape[0] != n:
        raise ValueError(f"Y has {Y.shape[0]} rows but X has {n} (samples must match)")
    return (Y[:, None], True) if Y.ndim == 1 else (Y, False)


def alphas_problem(alphas) -> str:
    """What is wrong with a grid of ridge penalties ('' when nothing): the rule of :func:`check_alphas`, for
    config checks that name their own field."""
    try:
        a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return f"must be an array of positive numbers, got {alphas!r}"
    if a.size == 0:
        return "is empty: give at least one positive value"
    bad = ~(np.isfinite(a) & (a > 0))
    return f"must be positive and finite, got {a[bad]}" if bad.any() else ""


def check_alphas(alphas):
    why = alphas_problem(alphas)
    if why:
        raise ValueError(f"alphas {why}")
    return np.asarray(alphas, dtype=np.float64).reshape(-1)


def make_splits(cv, n):
    """The :class:`Split` of every CV fold, and whether the validation sets partition the rows (then
    XᵀY = Σ blocks)."""
    msg = f"cv must be an int, a splitter or (train, test) pairs, got {cv!r}"
    if isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if not 2 <= cv <= n:
            raise ValueError(f"cv={cv}: need 2 <= folds <= n_samples ({n})")
        sizes = np.full(cv, n // cv)
        sizes[: n % cv] += 1                      # sklearn KFold(shuffle=False) sizes
        e = np.concatenate([[0], np.cumsum(sizes)])
        pairs = [(np.r_[0:a, b:n], np.arange(a, b)) for a, b in zip(e[:-1], e[1:])]
    elif isinstance(cv, (str, bytes, bool)) or cv is None or not (
            hasattr(cv, "split") or hasattr(cv, "__iter__")):
        raise ValueError(msg)
    else:
        pairs = list(cv.split(np.zeros((n, 1))) if hasattr(cv, "split") else cv)
    if not pairs:
        raise ValueError(msg + " (no splits)")
    splits, count = [], np.zeros(n, np.int64)
    for i, pair in enumerate(pairs):
        try:
            tr, val = (np.asarray(x).reshape(-1) for x in pair)
        except (TypeError, ValueError):
            raise ValueError(f"cv split {i} is not a (train, test) pair") from None
        for name, idx in (("train", tr), ("test", val)):
            if idx.size == 0 or idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"cv split {i}: {name} indices must be non-empty ints in [0, {n})")
        count[val] += 1
        comp = bool(np.all(np.bincount(np.concatenate([tr, val]), minlength=n) == 1))
        splits.append(Split(tr=as_slice(tr), val=as_slice(val), ntr=tr.size, nv=val.size, comp=comp))
    return splits, bool(np.all(count == 1) and all(s.comp for s in splits))


def as_slice(idx):
    """A contiguous increasing index array as a slice (cheap views), else the array itself."""
    if idx[-1] - idx[0] == idx.size - 1 and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx
