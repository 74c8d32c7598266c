"""Statistics for the analyses: paired and two-group tests, multiple-comparison corrections, bootstrap
confidence intervals and the block-permutation test of Pearson r.

Every comparison a report makes ("tuned is higher than untuned", "semantic beats auditory") goes through
:func:`compare_paired` or :func:`compare_groups`, which return the difference of means, a percentile
bootstrap CI of it and a p-value, so each "higher" carries both. Wilcoxon signed-rank and Mann-Whitney U
come from scipy (a declared dependency); the rest is batched NumPy: bootstrap means are one GEMM of
resampling counts, and the permutation null of every voxel and permutation is one GEMM of block
cross-products (no per-voxel Python loop).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import scipy.stats

from braintune_dist.data.voxels import zscore

ALTERNATIVES = ("two-sided", "greater", "less")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


# --------------------------------------------------------------------------- tests
def wilcoxon(x, y=None, alternative: str = "two-sided") -> tuple[np.ndarray, np.ndarray]:
    """Wilcoxon signed-rank test of ``x - y`` (or ``x``) against 0, column by column.

    Parameters
    ----------
    x, y : array of shape (n,) or (n, k)
        Paired samples; NaN pairs are dropped per column.
    alternative : {"two-sided", "greater", "less"}
        "greater": the differences tend to be positive.

    Returns
    -------
    statistic, p : arrays of shape () or (k,), float64
        scipy's statistic and p (exact for small n without ties, normal approximation otherwise);
        a column whose differences are all zero or NaN gets p = 1 (no evidence either way).
    """
    _check_alternative(alternative)
    d = np.asarray(x, np.float64) - (0.0 if y is None else np.asarray(y, np.float64))
    one = d.ndim == 1
    d = d[:, None] if one else d
    stat, p = np.full(d.shape[1], np.nan), np.full(d.shape[1], np.nan)
    # scipy picks exact vs normal-approximation p for a whole call: columns with zeros or NaNs (approximation)
    # go in a second call, so clean columns get the same p as a one-column call
    clean = ~(np.isnan(d) | (d == 0)).any(0)
    with warnings.catch_warnings():     # all-zero columns: scipy divides by zero, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        for cols in (clean, ~clean):
            if cols.any():
                res = scipy.stats.wilcoxon(d[:, cols], alternative=alternative, axis=0, nan_policy="omit")
                stat[cols], p[cols] = res.statistic, res.pvalue
    empty = ~np.any(np.nan_to_num(d) != 0, axis=0)
    p = np.where(empty | np.isnan(p), 1.0, p)
    return (stat[0], p[0]) if one else (stat, p)


def _adjust(p, step) -> np.ndarray:
    """Apply ``step(sorted finite p) -> adjusted`` to the finite entries of ``p``; NaNs stay NaN and are
    left out of the family (m = number of finite p-values). Any shape in, same shape out, float64."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    order = np.argsort(p[ok], kind="stable")
    res = np.empty(order.size)
    res[order] = step(p[ok][order])
    out[ok] = res
    return out


def holm(p) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), NaN entries left out of the family.

    p : array of any shape → array of the same shape, float64: ``max_{j<=i} min(1, (m - j + 1) p_(j))``
    in ascending order of p.
    """
    return _adjust(p, lambda q: np.minimum(1.0, np.maximum.accumulate((q.size - np.arange(q.size)) * q)))


def fdr_bh(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaN entries left out of the family.

    p : array of any shape → array of the same shape, float64: scipy's
    ``false_discovery_control(method='bh')`` on the finite entries.
    """
    import scipy.stats
    return _adjust(p, lambda q: scipy.stats.false_discovery_control(q, method="bh"))


# --------------------------------------------------------------------------- bootstrap
def _resample_counts(rng: np.random.Generator, n_units: int, n_boot: int) -> np.ndarray:
    """(n_boot, n_units) float64: how often each unit is drawn in each bootstrap sample."""
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    flat = draws + (np.arange(n_boot) * n_units)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_units).reshape(n_boot, n_units).astype(np.float64)


def bootstrap_means(x, n_boot: int = 2000, block: int = 1, seed: int = 0, batch: int = 500) -> np.ndarray:
    """Bootstrap distribution of the mean of ``x`` (rows resampled with replacement).

    Parameters
    ----------
    x : array of shape (n,) or (n, k)
        Columns are bootstrapped with the same resamples (paired); NaN rows are dropped.
    block : int
        Resample contiguous blocks of ``block`` rows instead of single rows (autocorrelated series,
        e.g. probe scores over time); the mean stays the mean over the drawn rows.
    batch : int
        Bootstrap samples per GEMM (bounds the (batch, n_blocks) count matrix).

    Returns
    -------
    means : array of shape (n_boot,) or (n_boot, k), float64
    """
    x = np.asarray(x, np.float64)
    one = x.ndim == 1
    x2 = x[:, None] if one else x
    x2 = x2[~np.isnan(x2).any(1)]
    if x2.shape[0] == 0:
        out = np.full((n_boot, x2.shape[1]), np.nan)
        return out[:, 0] if one else out
    nb = -(-x2.shape[0] // block)
    edges = np.minimum(np.arange(nb + 1) * block, x2.shape[0])
    sums = np.add.reduceat(x2, edges[:-1], axis=0)                    # (n_blocks, k) per-block sums
    sizes = np.diff(edges).astype(np.float64)                          # (n_blocks,) last one may be short
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, x2.shape[1]))
    for b0 in range(0, n_boot, batch):                                 # batches of bootstrap samples
        W = _resample_counts(rng, nb, min(batch, n_boot - b0))         # (b, n_blocks)
        out[b0:b0 + W.shape[0]] = (W @ sums) / (W @ sizes)[:, None]
    return out[:, 0] if one else out


def percentile_ci(samples, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``samples`` (n_boot, ...) → (low, high), each of shape (...)."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    lo, hi = np.nanpercentile(np.asarray(samples, np.float64), [50 * (1 - ci), 50 * (1 + ci)], axis=0)
    return lo, hi


def bootstrap_ci(x, n_boot: int = 2000, ci: float = 0.95, block: int = 1, seed: int = 0):
    """Percentile bootstrap CI of the mean of ``x`` (n,) or (n, k) → (low, high) of shape () or (k,)."""
    return percentile_ci(bootstrap_means(x, n_boot, block, seed), ci)


# --------------------------------------------------------------------------- comparisons
def compare_paired(a, b, n_boot: int = 2000, ci: float = 0.95, block: int = 1, seed: int = 0,
                   alternative: str = "two-sided") -> dict:
    """Is ``a`` higher than ``b`` on the same units (voxels, participants, test samples)?

    Parameters
    ----------
    a, b : arrays of shape (n,)
        Paired measurements; pairs with a NaN are dropped.
    block : int
        Units per block for autocorrelated series: the Wilcoxon test runs on block means and the
        bootstrap resamples blocks (1 = independent units).

    Returns
    -------
    dict
        ``n, mean_a, mean_b, diff (mean a - b), ci_low, ci_high, p`` (Wilcoxon signed-rank on the
        differences, or on their block means).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.shape} and {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    d = a - b
    if d.size == 0:
        return dict(n=0, mean_a=np.nan, mean_b=np.nan, diff=np.nan, ci_low=np.nan, ci_high=np.nan, p=np.nan)
    starts = np.arange(0, d.size, block)
    units = np.add.reduceat(d, starts) / np.diff(np.r_[starts, d.size])     # block means of the differences
    p = float(wilcoxon(units, alternative=alternative)[1]) if units.size > 1 else np.nan
    lo, hi = bootstrap_ci(d, n_boot, ci, block, seed)
    return dict(n=int(d.size), mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(d.mean()),
                ci_low=float(lo), ci_high=float(hi), p=p)


def compare_groups(a, b, n_boot: int = 2000, ci: float = 0.95, seed: int = 0,
                   alternative: str = "two-sided") -> dict:
    """Is group ``a`` higher than group ``b`` (different units, e.g. semantic vs auditory voxels)?

    a : (n_a,), b : (n_b,) → dict ``n_a, n_b, mean_a, mean_b, diff, ci_low, ci_high, p``: the CI
    resamples each group separately (stratified bootstrap), p is Mann-Whitney U (NaNs dropped).
    """
    _check_alternative(alternative)
    a, b = (np.asarray(v, np.float64).ravel() for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    row = dict(n_a=int(a.size), n_b=int(b.size), mean_a=np.nan, mean_b=np.nan, diff=np.nan,
               ci_low=np.nan, ci_high=np.nan, p=np.nan)
    if a.size == 0 or b.size == 0:
        return row
    boot = bootstrap_means(a, n_boot, seed=seed) - bootstrap_means(b, n_boot, seed=seed + 1)
    lo, hi = percentile_ci(boot, ci)
    p = float(scipy.stats.mannwhitneyu(a, b, alternative=alternative).pvalue)
    row.update(mean_a=float(a.mean()), mean_b=float(b.mean()), diff=float(a.mean() - b.mean()),
               ci_low=float(lo), ci_high=float(hi), p=p)
    return row


def add_corrections(rows: list[dict], key: str = "p") -> list[dict]:
    """Add ``p_holm`` and ``p_fdr`` to every row (the rows are one family of tests); returns ``rows``."""
    p = np.array([r.get(key, np.nan) for r in rows], np.float64)
    for r, h, f in zip(rows, holm(p), fdr_bh(p)):
        r["p_holm"], r["p_fdr"] = float(h), float(f)
    return rows


# --------------------------------------------------------------------------- block permutation
class PermutationResult(NamedTuple):
    """Result of :func:`block_permutation_test`."""

    r: np.ndarray
    """(n_voxels,) observed Pearson r."""
    p: np.ndarray
    """(n_voxels,) permutation p-value, ``(1 + #{null as extreme as r}) / (1 + n_perm)``."""
    null: np.ndarray | None
    """(n_perm, n_voxels) r under the permutations, when asked for."""


def block_permutations(n_blocks: int, n_perm: int, seed: int = 0) -> np.ndarray:
    """(n_perm, n_blocks) int: random orders of the blocks (each row a permutation)."""
    return np.argsort(np.random.default_rng(seed).random((n_perm, n_blocks)), axis=1)


def block_permutation_test(y_true, y_pred, block: int = 10, n_perm: int = 1000, seed: int = 0,
                           alternative: str = "greater", batch: int = 2048,
                           return_null: bool = False) -> PermutationResult:
    """Per-voxel permutation test of Pearson r that keeps the autocorrelation of fMRI time series.

    The prediction's rows are cut into ``n_blocks = n // block`` contiguous blocks whose order is
    shuffled (the same permutations for every voxel); the ``n % block`` rows after the last full
    block stay in place. With z-scored columns ``a`` (measured) and ``b`` (predicted), the permuted r
    is ``(Σ_i C[i, π(i)] + tail) / n`` with block cross-products ``C[i, j] = Σ_s a[i·L+s] b[j·L+s]``,
    so the whole null is one GEMM ``(n_perm, n_blocks²) @ (n_blocks², n_voxels)`` per voxel batch.

    Parameters
    ----------
    y_true, y_pred : arrays of shape (n_trs, n_voxels) or (n_trs,)
    block : int
        TRs per block (10 TRs = 20 s outlasts the HRF; at least 2 blocks are needed).
    alternative : {"greater", "two-sided", "less"}
        "greater": r is above chance; "two-sided" compares |r|.

    Returns
    -------
    PermutationResult
        ``r`` and ``p`` of shape (n_voxels,) (scalars for 1-D input), ``null`` (n_perm, n_voxels) or None.
    """
    _check_alternative(alternative)
    A, B = np.asarray(y_true), np.asarray(y_pred)
    if A.shape != B.shape or A.ndim not in (1, 2):
        raise ValueError(f"y_true and y_pred must have the same 1-D or 2-D shape, got {A.shape} and {B.shape}")
    one = A.ndim == 1
    A, B = (A[:, None], B[:, None]) if one else (A, B)
    n, v = A.shape
    nb = n // block if block >= 1 else 0
    if nb < 2:
        raise ValueError(f"block permutation needs at least 2 blocks of {block} TRs, got {n} TRs")
    m = nb * block
    onehot = np.zeros((n_perm, nb * nb))                                # row k selects C[i, π_k(i)]
    perms = block_permutations(nb, n_perm, seed)
    onehot[np.arange(n_perm)[:, None], np.arange(nb) * nb + perms] = 1.0
    r, p = np.empty(v), np.empty(v)
    null = np.empty((n_perm, v)) if return_null else None
    for v0 in range(0, v, batch):                                        # voxel batches bound memory
        sl = slice(v0, min(v, v0 + batch))
        a, b = zscore(A[:, sl], np.float64), zscore(B[:, sl], np.float64)
        tail = (a[m:] * b[m:]).sum(0)                                    # (vb,) rows that stay in place
        ab = a[:m].reshape(nb, block, -1).transpose(2, 0, 1)             # (vb, nb, L)
        bb = b[:m].reshape(nb, block, -1).transpose(2, 1, 0)             # (vb, L, nb)
        C = np.matmul(ab, bb).transpose(1, 2, 0).reshape(nb * nb, -1)    # (nb², vb) block cross-products
        nul = (onehot @ C + tail) / n                                    # (n_perm, vb)
        obs = (C[:: nb + 1].sum(0) + tail) / n                           # identity: the diagonal blocks
        if alternative == "greater":
            hits = nul >= obs - 1e-12
        elif alternative == "less":
            hits = nul <= obs + 1e-12
        else:
            hits = np.abs(nul) >= np.abs(obs) - 1e-12
        r[sl], p[sl] = obs, (1.0 + hits.sum(0)) / (1.0 + n_perm)
        if null is not None:
            null[:, sl] = nul
    if one:
        return PermutationResult(r[0], p[0], None if null is None else null[:, 0])
    return PermutationResult(r, p, null)
