"""Validation error of every alpha from one eigendecomposition: the "pole" form of ridge CV.

In a split's eigenbasis (G_tr = V diag(lam) Vᵀ, m components) the validation predictions of alpha
are ``A diag(e) c`` with A = X_val V (n_val, m), c = Vᵀ X_trᵀ y (m,) and e_i = 1 / (lam_i + alpha).
With H = AᵀA and r = Aᵀy the squared error is

    sse(alpha) = ||y||² - 2 Σ_i e_i c_i r_i + Σ_i e_i² c_i² H_ii + Σ_{i != l} e_i e_l c_i c_l H_il.

The last (quadratic) term would cost one (m, m) x (m, v) product per alpha. The partial fractions
e_i e_l = (e_i - e_l) / (lam_l - lam_i) turn it into ONE product K @ C for all alphas, with the
antisymmetric K_il = H_il / (lam_l - lam_i):  Σ_{i != l} ... = 2 Σ_i e_i c_i (K c)_i.

Precision. Written that way, each pair's term is computed as a difference of two much larger
ones (by (lam_l + alpha) / |lam_l - lam_i|): in float32 the rounding of K c would swamp the result
at large alpha. Because K is antisymmetric, a constant s may be subtracted from e for any block
pair (I, J): Σ_{i∈I, l∈J} (e_i - s) c_i K_il c_l + Σ_{l∈J, i∈I} (e_l - s) c_l K_li c_i is unchanged.
With the components sorted by eigenvalue, splitting them in halves recursively and taking
s = 1 / (lam_b + alpha) at the boundary lam_b between the halves bounds every pair's weight by its
exact term (|e_i - s| <= e_i e_l |lam_l - lam_i| for lam_i <= lam_b <= lam_l). So the big product
runs in float32 blocks (the off-diagonal halves of a binary tree, LEAF-sized diagonal blocks left
over), with the error of a direct float32 evaluation; the diagonal blocks and near-degenerate pairs
(|lam_l - lam_i| tiny, where even float64 fractions cancel) are summed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

NEAR = 1e-9   # eigenvalue pairs closer than NEAR * (lam + max alpha) are summed exactly
LEAF = 128    # components per diagonal block summed in float64


@dataclass
class Terms:
    """A split's terms of the pole form (arrays on the backend; m components, n_alphas alphas)."""

    E: Any
    """(n_alphas, m) float64: 1 / (lam + alpha)."""
    L: Any
    """(n_alphas, 2m) in the product dtype: weights of [C∘R; C∘C] (linear and diagonal terms)."""
    K: Any
    """(m, m) in the product dtype: H_il / (lam_l - lam_i), zero on the diagonal and at near pairs."""
    levels: list
    """Tree levels of (lo, mid, hi) nodes (:func:`tree`)."""
    W: list
    """One (n_alphas, m) weight per level, in the product dtype."""
    leaves: list
    """(lo, hi) diagonal blocks left under the tree."""
    KL: list
    """float64 K of each leaf block."""
    S: Any
    """(n_near,) indices of components in near-degenerate pairs."""
    N: Any
    """(n_near, n_near) float64: H at the near pairs, summed exactly."""


def cost(be, m, n_val, n_alphas):
    """(pole, direct) cost in float32 multiply-adds per voxel, to choose the cheaper form."""
    return m * m + be.f64_cost * min(LEAF, m) * m + n_val * m, n_alphas * n_val * m


def tree(m, leaf=None):
    """Binary split of components 0..m: levels of (lo, mid, hi) nodes, then the leaves (lo, hi).

    Every level covers all m components (sibling sizes differ by at most one), so one buffer
    of shape (m, v) holds a whole level's products.
    """
    leaf = LEAF if leaf is None else leaf
    levels, nodes = [], [(0, m)]
    while max(hi - lo for lo, hi in nodes) > leaf:
        level = [(lo, (lo + hi) // 2, hi) for lo, hi in nodes]
        levels.append(level)
        nodes = [x for lo, mid, hi in level for x in ((lo, mid), (mid, hi))]
    return levels, nodes


def setup(be, lam, A64, alphas, dt):
    """Per-split terms of the pole form, or None when near-degenerate pairs are too many.

    Parameters
    ----------
    lam : array of shape (m,), float64, ascending (as eigh returns them)
    A64 : array of shape (n_val, m), float64, validation design in the eigenbasis
    alphas : array of shape (n_alphas,), float64
    dt : float32 or float64, the dtype of the big products

    Returns
    -------
    terms : :class:`Terms`, or None
    """
    xp = be.xp
    m = lam.shape[0]
    H = be.gram(A64)                                   # AᵀA (m, m) float64
    amax = alphas.max()
    # near pairs: with lam sorted, a component has a near partner iff a neighbour is near
    close = xp.diff(lam) <= NEAR * (lam[1:] + amax)
    flag = xp.zeros(m, bool)
    flag[:-1] |= close
    flag[1:] |= close
    S = xp.flatnonzero(flag)
    if S.shape[0] > m // 4:                            # the exact part would dominate
        return None
    K = lam[None, :] - lam[:, None]                    # gap[i, l] = lam_l - lam_i
    with np.errstate(divide="ignore", invalid="ignore"):
        xp.divide(H, K, out=K)                         # K_il = H_il / (lam_l - lam_i)
    xp.fill_diagonal(K, 0.0)
    N = xp.zeros((S.shape[0], S.shape[0]))
    if S.shape[0]:
        ls = lam[S]
        near = xp.abs(ls[None, :] - ls[:, None]) <= NEAR * (xp.maximum(ls[:, None], ls[None, :]) + amax)
        xp.fill_diagonal(near, False)
        ix = xp.ix_(S, S)
        N = xp.where(near, H[ix], 0.0)
        K[ix] = xp.where(near, 0.0, K[ix])
    E = 1.0 / (lam[None, :] + alphas[:, None])         # (n_alphas, m)
    levels, leaves = tree(m)
    return Terms(E=E, L=xp.concatenate([-2 * E, E * E * xp.diagonal(H)], axis=1).astype(dt),
                 KL=[K[lo:hi, lo:hi].copy() for lo, hi in leaves], K=K.astype(dt, copy=False), levels=levels,
                 W=[_level_weights(xp, lam, E, alphas, level, dt) for level in levels], leaves=leaves, S=S, N=N)


def _level_weights(xp, lam, E, alphas, level, dt):
    """2 (e_i - s_b) for every component i of a level, s_b = 1 / (lam_b + alpha) at its node's
    boundary lam_b = (lam[mid-1] + lam[mid]) / 2; as (lam_b - lam_i) e_i s_b (no cancellation)."""
    lo, mid, hi = (np.array(x) for x in zip(*level))
    node = xp.asarray(np.repeat(np.arange(len(level)), hi - lo))        # (m,) node of each row
    lb = (0.5 * (lam[xp.asarray(mid - 1)] + lam[xp.asarray(mid)]))[node]
    return (2 * (lb - lam)[None, :] * E / (lb[None, :] + alphas[:, None])).astype(dt)


def sse(be, f, C, R, y2):
    """Validation sum of squared errors of every alpha, (n_alphas, v) float64.

    Parameters
    ----------
    f : :class:`Terms` from :func:`setup`
    C : array of shape (m, v), eigen-coefficients Vᵀ X_trᵀ Y_tr (float32 or float64)
    R : array of shape (m, v), Aᵀ Y_val, same dtype (overwritten: used as scratch)
    y2 : array of shape (v,), float64, ||y_val||² per voxel
    """
    xp = be.xp
    m = C.shape[0]
    D = xp.empty((2 * m, C.shape[1]), C.dtype)
    xp.multiply(C, R, out=D[:m])
    xp.multiply(C, C, out=D[m:])
    acc = f.L @ D                                   # linear and diagonal terms, (n_alphas, v)
    del D
    P, K = R, f.K                                   # P (m, v): one level's K-block products
    for level, W in zip(f.levels, f.W):
        for lo, mid, hi in level:
            xp.matmul(K[lo:mid, mid:hi], C[mid:hi], out=P[lo:mid])
            xp.matmul(K[mid:hi, lo:mid], C[lo:mid], out=P[mid:hi])
        P *= C
        acc += W @ P
    out = acc.astype(xp.float64)
    out += y2
    E = f.E
    for (lo, hi), KL in zip(f.leaves, f.KL):    # diagonal blocks, float64 fractions
        c = C[lo:hi].astype(xp.float64)
        out += (2 * E[:, lo:hi]) @ (c * (KL @ c))
    S = f.S
    if S.shape[0]:                                     # near-degenerate pairs, exact products
        Cs = C[S].astype(xp.float64)
        for a in range(E.shape[0]):
            Z = Cs * E[a, S][:, None]
            out[a] += (Z * (f.N @ Z)).sum(0)
    return out
