"""Cross-validation over a partition of the rows from one decomposition of all of them (block leave-out).

When the validation sets of the splits partition the rows (leave one story out, contiguous K-fold) and no
intercept is fitted, every split's training rows are the complement of its block. Then one eigendecomposition of
all rows gives every split's validation error exactly, by the block form of the leave-one-out identity (Woodbury):

    e_b(α) = (I − H_bb(α))⁻¹ (y_b − ŷ_b(α)),   ŷ(α) = A diag(d(α)) Aᵀ y,   H_bb(α) = A_b diag(d(α)) A_bᵀ

with, in feature space (p <= n), XᵀX = V diag(λ) Vᵀ, A = X V and d = 1 / (λ + α); in sample space (p > n),
X Xᵀ = U diag(λ) Uᵀ, A = U and d = λ / (λ + α). e_b is the residual on block b of the ridge refit without block b,
so the mean over blocks of ||e_b||² / n_b is the per-split path's validation MSE, to round-off. In sample space U
is square and orthonormal, so y − ŷ = U diag(r) Uᵀ y and I − H_bb = U_b diag(r) U_bᵀ with r = α / (λ + α): both
are computed in that form, without the cancellation of y − ŷ when the fit is close (small α, p > n).

Cost: one (p, p) or (n, n) eigendecomposition instead of one per split; per alpha one (n, m) × (m, v) product
(float32 when X is) and, per block, one (n_b, n_b) × (n_b, v) float64 product by the precomputed
(I − H_bb)⁻¹. The small matrices are float64: a block of high leverage makes I − H_bb ill-conditioned.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from braintune_dist.ridge.state import Eigen, GramRefit


@dataclass
class BlockCV:
    """The decomposition of all rows and, per block and alpha, (I − H_bb(α))⁻¹."""

    kernel: bool
    """Sample space (p > n): A is the kernel's eigenvectors."""
    A: Any
    """(n, m) design in the eigenbasis, in the product dtype."""
    D: Any
    """(n_alphas, m) per alpha, the diagonal that gives the predictions (feature space: d(α)) or the residuals
    (sample space: r(α)) from the coefficients Aᵀ y, in the product dtype."""
    blocks: list
    """Rows of each block (slice or int array), in split order."""
    sizes: list
    """n_b of each block."""
    inv: list
    """Per block, (n_alphas, n_b, n_b) float64 (I − H_bb(α))⁻¹."""
    refit: Any
    """The refit on all rows: ``GramRefit`` (feature space) or the kernel ``Eigen`` (sample space)."""


def prepare(be, X, splits, dt, alphas) -> BlockCV:
    """Decompose all rows of ``X`` (n, p) once and invert each block's I − H_bb for every alpha.

    Parameters
    ----------
    be : Backend
    X : array of shape (n, p), in ``dt``
    splits : list of ``Split`` whose validation sets partition the rows, each trained on the others
    dt : the product dtype (float32 or float64)
    alphas : array of shape (n_alphas,) on the backend, float64
    """
    xp = be.xp
    X64 = X.astype(xp.float64)
    n, p = X.shape
    kernel = p > n
    if kernel:                                           # X Xᵀ = U Λ Uᵀ: A = U, d = λ / (λ + α)
        lam, U = be.eigh(be.gram(X64.T), overwrite=True)
        lam = xp.maximum(lam, 0.0)
        A64, D64 = U, alphas[:, None] / (lam[None, :] + alphas[:, None])          # r(α)
        refit = Eigen(kernel=True, lam=lam, mu=None, basis=U.astype(dt), tr=slice(0, n), ntr=n,
                      W=(X64.T @ U).astype(dt))
    else:                                                # XᵀX = V Λ Vᵀ: A = X V, d = 1 / (λ + α)
        G = be.gram(X64)
        lam, V = be.eigh(G.copy(), overwrite=True)
        lam = xp.maximum(lam, 0.0)
        A64, D64 = X64 @ V, 1.0 / (lam[None, :] + alphas[:, None])                # d(α)
        refit = GramRefit(G=G, mu=None)
    blocks = [s.val for s in splits]
    inv = []
    for rows in blocks:
        Ab = A64[rows]                                   # (n_b, m)
        # (n_alphas, n_b, n_b): I − A_b diag(d) A_bᵀ, or U_b diag(r) U_bᵀ, for every alpha at once
        M = (Ab[None] * D64[:, None, :]) @ Ab.T         # (n_alphas, n_b, m) @ (m, n_b)
        inv.append(xp.linalg.inv(M if kernel else xp.eye(Ab.shape[0])[None] - M))
    return BlockCV(kernel=kernel, A=A64.astype(dt), D=D64.astype(dt), blocks=blocks,
                   sizes=[s.nv for s in splits], inv=inv, refit=refit)


def mse(be, st: BlockCV, Yb):
    """Mean over blocks of each block's validation MSE, for every alpha: (n_alphas, vb) float64; and the
    eigen-coefficients C = Aᵀ Y_b (m, vb) that the kernel refit reuses.

    Parameters
    ----------
    be : Backend
    st : BlockCV
    Yb : array of shape (n, vb), a voxel batch in the product dtype
    """
    xp = be.xp
    C = st.A.T @ Yb                                      # (m, vb)
    out = xp.zeros((st.D.shape[0], Yb.shape[1]), xp.float64)
    Z = xp.empty_like(C)
    P = xp.empty_like(Yb)
    for a in range(st.D.shape[0]):
        xp.multiply(C, st.D[a][:, None], out=Z)
        xp.matmul(st.A, Z, out=P)                        # (n, vb) residuals (kernel) or predictions of the fit on all rows
        if not st.kernel:
            xp.subtract(Yb, P, out=P)                    # residuals of that fit
        for rows, n_b, inv in zip(st.blocks, st.sizes, st.inv):
            e = inv[a] @ P[rows].astype(xp.float64)      # (n_b, vb) residuals of the fit without the block
            out[a] += xp.square(e).sum(0) / n_b
    out /= len(st.blocks)
    return out, C


def usable(partition: bool, fit_intercept: bool, n_alphas: int, sizes: list[int], p: int, v: int,
           when: str | bool = "auto") -> bool:
    """Whether to use block leave-out: the splits partition the rows and no intercept is fitted; with ``when``
    'auto', also its extra work (per block and alpha: H_bb, its inverse, its product with the residuals) must cost
    less than the per-split path's eigendecompositions (many short stories win by far; a few K-fold blocks of
    thousands of rows do not); True: whenever it applies; False: never.

    Parameters
    ----------
    sizes : rows of each block (n_b)
    p, v : features and targets
    """
    if not partition or fit_intercept or when is False:
        return False
    if when is True:
        return True
    n = sum(sizes)
    m = min(p, n)
    per_split = sum(9 * min(p, n - nb) ** 3 for nb in sizes)       # one eigendecomposition per split
    block = 9 * m ** 3 + sum(n_alphas * nb * nb * (2 * m + nb + 2 * v) for nb in sizes)
    return block < per_split


def refit_kernel(be, st: BlockCV, C, best_alphas):
    """Sample-space refit on all rows from the CV's coefficients: W = Xᵀ U diag(1 / (λ + α_j)) Uᵀ y_j, (p, vb)."""
    C = C.copy()
    be.alpha_scale(C, st.refit.lam, best_alphas, out=C)  # per-voxel (λ + α_j)⁻¹
    return st.refit.W @ C

