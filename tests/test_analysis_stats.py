"""Statistics of the analyses against scipy and float64 loop references; the block-permutation test keeps
null voxels at their nominal rate and finds planted ones."""
import numpy as np
import pytest
import scipy.stats

from braintune_dist.analysis.stats import (block_permutation_test, block_permutations, bootstrap_ci,
                                           bootstrap_means, compare_groups, compare_paired, fdr_bh, holm, wilcoxon)


def holm_reference(p):
    """Textbook Holm step-down, one p-value at a time (float64)."""
    p = np.asarray(p, float)
    order, m = np.argsort(p), len(p)
    adj, running = np.empty(m), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def ar1(rng, n, k, phi=0.6):
    """(n, k) unit-variance AR(1) noise: autocorrelated like fMRI."""
    e = rng.normal(size=(n, k))
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, n):
        out[t] = phi * out[t - 1] + np.sqrt(1 - phi ** 2) * e[t]
    return out


def test_holm_and_fdr_match_references():
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10)])
    assert np.allclose(holm(p), holm_reference(p), rtol=0, atol=1e-15)
    assert np.allclose(fdr_bh(p), scipy.stats.false_discovery_control(p), rtol=0, atol=1e-15)
    # NaNs stay NaN and are left out of the family; shapes are kept
    q = p.copy()
    q[[3, 7]] = np.nan
    grid = q.reshape(5, 10)
    keep = np.isfinite(q)
    assert fdr_bh(grid).shape == (5, 10) and np.isnan(fdr_bh(q)[[3, 7]]).all()
    assert np.allclose(fdr_bh(q)[keep], scipy.stats.false_discovery_control(q[keep]))
    assert np.allclose(holm(q)[keep], holm_reference(q[keep]))


def test_wilcoxon_columns_match_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 4))
    b = a - np.array([0.0, 0.3, 1.0, 0.0]) + 0.5 * rng.normal(size=(30, 4))
    b[:, 3] = a[:, 3]                                                  # identical column: no evidence
    stat, p = wilcoxon(a, b)
    for j in range(3):
        ref = scipy.stats.wilcoxon(a[:, j], b[:, j])
        assert np.isclose(stat[j], ref.statistic) and np.isclose(p[j], ref.pvalue)
    assert p[3] == 1.0 and p[2] < 1e-4
    _, p_greater = wilcoxon(a[:, 2], b[:, 2], alternative="greater")
    assert np.isclose(p_greater, scipy.stats.wilcoxon(a[:, 2], b[:, 2], alternative="greater").pvalue)
    with pytest.raises(ValueError, match="alternative"):
        wilcoxon(a, b, alternative="bigger")


def test_bootstrap_ci_matches_scipy_and_blocks_widen_it():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=300)
    lo, hi = bootstrap_ci(x, n_boot=20000, seed=3)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", rng=4).confidence_interval
    se = x.std() / np.sqrt(len(x))
    assert abs(lo - ref.low) < 0.1 * se and abs(hi - ref.high) < 0.1 * se       # Monte Carlo error ≈ 0.03 se
    # columns share the resamples (paired) and match one-column calls
    two = bootstrap_means(np.stack([x, 2 * x], 1), n_boot=500, seed=5)
    assert np.allclose(two[:, 1], 2 * two[:, 0]) and np.allclose(two[:, 0], bootstrap_means(x, 500, seed=5))
    # autocorrelated series: resampling blocks gives a wider (honest) interval than resampling rows
    y = ar1(rng, 2000, 1, phi=0.9)[:, 0]
    w_rows = np.subtract(*bootstrap_ci(y, 2000, seed=0)[::-1])
    w_blocks = np.subtract(*bootstrap_ci(y, 2000, block=50, seed=0)[::-1])
    assert w_blocks > 2 * w_rows


def test_paired_and_group_comparisons():
    rng = np.random.default_rng(6)
    b = rng.normal(size=200)
    a = b + 0.3 + 0.2 * rng.normal(size=200)
    res = compare_paired(a, b, n_boot=2000)
    assert res["n"] == 200 and res["ci_low"] < 0.3 < res["ci_high"] and res["p"] < 1e-10
    assert np.isclose(res["diff"], np.mean(a - b)) and res["ci_low"] < res["diff"] < res["ci_high"]
    same = compare_paired(b, b)
    assert same["diff"] == 0 and same["p"] == 1.0
    nan = compare_paired(np.r_[a, np.nan], np.r_[b, 1.0])
    assert nan["n"] == 200                                              # NaN pairs dropped
    with pytest.raises(ValueError, match="same length"):
        compare_paired(a, b[:-1])
    g1, g2 = rng.normal(0.5, 1, 80), rng.normal(0.0, 1, 120)
    grp = compare_groups(g1, g2)
    assert np.isclose(grp["p"], scipy.stats.mannwhitneyu(g1, g2).pvalue)
    assert grp["ci_low"] < grp["diff"] < grp["ci_high"] and grp["n_a"] == 80


def test_block_permutation_null_matches_a_loop():
    rng = np.random.default_rng(7)
    n, block, n_perm = 53, 5, 40                                        # 10 blocks + 3 tail rows in place
    yt, yp = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    yp[:, 0] += yt[:, 0]
    res = block_permutation_test(yt, yp, block, n_perm, seed=11, return_null=True)
    perms = block_permutations(n // block, n_perm, seed=11)
    for k, order in enumerate(perms):
        idx = np.concatenate([np.arange(b * block, (b + 1) * block) for b in order] + [np.arange(50, n)])
        for v in range(3):
            assert np.isclose(res.null[k, v], np.corrcoef(yt[:, v], yp[idx, v])[0, 1], rtol=0, atol=1e-12)
    assert np.allclose(res.r, [np.corrcoef(yt[:, v], yp[:, v])[0, 1] for v in range(3)], atol=1e-12)
    assert np.allclose(res.p, (1 + (res.null >= res.r - 1e-12).sum(0)) / (1 + n_perm))
    one = block_permutation_test(yt[:, 0], yp[:, 0], block, n_perm, seed=11)
    assert np.isclose(one.r, res.r[0]) and np.isclose(one.p, res.p[0]) and one.null is None
    # batches of voxels give the same answer as one batch
    assert np.allclose(block_permutation_test(yt, yp, block, n_perm, seed=11, batch=1).p, res.p)
    with pytest.raises(ValueError, match="at least 2 blocks"):
        block_permutation_test(yt[:9], yp[:9], block=5)
    with pytest.raises(ValueError, match="same 1-D or 2-D shape"):
        block_permutation_test(yt, yp[:, :2])


def test_block_permutation_null_voxels_calibrated_planted_significant():
    rng = np.random.default_rng(8)
    n, n_null, n_sig = 300, 400, 20
    truth = ar1(rng, n, n_null + n_sig)
    pred = ar1(rng, n, n_null + n_sig)                                  # null voxels: independent AR(1)
    pred[:, n_null:] = truth[:, n_null:] + 1.5 * ar1(rng, n, n_sig)     # planted: r ≈ 0.55
    res = block_permutation_test(truth, pred, block=10, n_perm=1000, seed=0)
    assert (res.p[n_null:] < 0.01).all()                                # every planted voxel is significant
    null_p = res.p[:n_null]
    assert 0.01 <= np.mean(null_p < 0.05) <= 0.10                       # nominal false-positive rate
    assert 0.4 < np.mean(null_p) < 0.6                                  # ~uniform under the null
    found = fdr_bh(res.p) < 0.05
    assert found[n_null:].all() and found[:n_null].sum() / found.sum() < 0.2   # false discovery proportion
    two = block_permutation_test(truth, -pred, block=10, n_perm=200, alternative="two-sided")
    assert (two.p[n_null:] < 0.01).all()                                # |r| counts both signs
