"""RidgeCV against himalaya's RidgeCV (numpy backend, the oracle) and a float64 direct solve."""
import warnings

import numpy as np
import pytest

from braintune_dist.ridge import RidgeCV, correlation_score, get_backend, pole
from braintune_dist.ridge.backend import gpu_available

BACKENDS = ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="needs a CUDA GPU with cupy (cupy backend)")])]
ALPHAS = np.logspace(-1, 5, 9)


def make(n, p, v, dtype=np.float64, seed=0, n_test=60, offset=0.0):
    """Correlated features, planted weights, per-voxel SNR spread so the chosen alphas vary."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((p, p)) / np.sqrt(p) + np.eye(p)
    X = rng.standard_normal((n + n_test, p)) @ (mix * (1 + np.arange(p)) ** -0.5)
    W = rng.standard_normal((p, v)) / np.sqrt(p)
    snr = 10 ** rng.uniform(-2, 1, v)
    signal = X @ W
    Y = np.sqrt(snr) * signal / signal.std(0) + rng.standard_normal((n + n_test, v))
    X, Y = X + offset, Y + offset
    X, Y = X.astype(dtype), Y.astype(dtype)
    return X[:n], Y[:n], X[n:], Y[n:]


def reference(X, Y, alphas, splits, fit_intercept=False):
    """Per-alpha float64 direct solves: (best_alphas, coef, cv_scores (n_alphas, v))."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    solve = (lambda A, B, a: np.linalg.solve(A.T @ A + a * np.eye(A.shape[1]), A.T @ B))
    mse = np.zeros((len(alphas), Y.shape[1]))
    for tr, te in splits:
        mx, my = (X[tr].mean(0), Y[tr].mean(0)) if fit_intercept else (0.0, 0.0)
        for i, a in enumerate(alphas):
            W = solve(X[tr] - mx, Y[tr] - my, a)
            mse[i] += (((X[te] - mx) @ W - (Y[te] - my)) ** 2).mean(0)
    mse /= len(splits)
    best = np.argmax(-mse + 1e-10 * np.log(alphas)[:, None], axis=0)
    mx, my = (X.mean(0), Y.mean(0)) if fit_intercept else (0.0, 0.0)
    coef = np.stack([solve(X - mx, Y[:, j] - my[j] if fit_intercept else Y[:, j], alphas[b])
                     for j, b in enumerate(best)], axis=1)
    return alphas[best], coef, -mse


def himalaya_fit(X, Y, alphas, cv, fit_intercept=False):
    # imported here, not skipped when missing: himalaya is in the dev extra (./run tests installs it), and the
    # tests that check against the float64 reference alone must run without it
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    set_backend("numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return HimalayaRidgeCV(alphas=np.asarray(alphas, X.dtype), cv=cv,
                                      fit_intercept=fit_intercept).fit(X, Y)


def kfold(n, k):
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    e = np.concatenate([[0], np.cumsum(sizes)])
    return [(np.r_[0:a, b:n], np.arange(a, b)) for a, b in zip(e[:-1], e[1:])]


def stories(n, lengths):
    """Leave one story out, stories stacked in order (train indices are not contiguous)."""
    e = np.concatenate([[0], np.cumsum(lengths)])
    assert e[-1] == n
    return [(np.r_[0:a, b:n], np.arange(a, b)) for a, b in zip(e[:-1], e[1:])]


# name: (n, p, v, dtype, cv, fit_intercept, n_alphas); with 9 alphas the float64 "pole" form of
# the CV error is cheaper, with 3 the direct form (predictions per alpha) is: both are covered.
CASES = {
    "n_not_divisible": (203, 30, 25, np.float64, 5, False, 9),
    "direct_form": (203, 60, 25, np.float64, 5, False, 3),
    "wide_p_gt_n": (90, 150, 20, np.float64, 5, False, 9),           # kernel (sample) space
    "wide_pole": (90, 150, 20, np.float64, 3, False, 9),
    "float32": (300, 80, 30, np.float32, 4, False, 9),
    "float32_direct": (300, 80, 30, np.float32, 4, False, 3),
    "float32_wide": (90, 150, 20, np.float32, 3, False, 9),
    "custom_splitter": (240, 40, 20, np.float64, "stories", False, 9),  # leave one story out
    "degenerate_features": (203, 30, 20, np.float64, 5, False, 9),   # repeated eigenvalues
    "intercept": (203, 40, 20, np.float64, 5, True, 9),
    "intercept_wide": (80, 120, 10, np.float64, 4, True, 9),
}


def get_cv(cv, n):
    return stories(n, [50, 70, 40, 80]) if cv == "stories" else cv


@pytest.mark.parametrize("block_cv", [True, False], ids=["block-cv", "per-split"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_himalaya_and_float64_reference(backend, case, block_cv):
    """Both CV paths (one decomposition of all rows where the splits partition them, one per split) against
    himalaya and the float64 direct solve."""
    n, p, v, dtype, cv, icpt, n_alphas = CASES[case]
    alphas = np.logspace(-1, 5, n_alphas)
    X, Y, Xt, Yt = make(n, p, v, dtype, seed=len(case), offset=3.0 if icpt else 0.0)
    if case == "degenerate_features":                        # exactly repeated eigenvalues (0)
        X[:, 5], Xt[:, 5] = X[:, 4], Xt[:, 4]
        X[:, 9] = Xt[:, 9] = 0.0
    Y[:, 0] = 0.0                                            # constant voxel: all alphas tie
    Y[:, 1] = 2.5                                            # constant, non-zero
    cv = get_cv(cv, n)
    model = RidgeCV(alphas=alphas, cv=cv, fit_intercept=icpt, backend=backend, block_cv=block_cv).fit(X, Y)
    ours = model.best_alphas_
    assert ours.shape == (v,) and model.coef_.shape == (p, v)
    assert model.cv_scores_.shape == (n_alphas, v)
    if not icpt:
        assert ours[0] == alphas.max()                       # exact tie -> larger alpha

    # the float64 direct solve first: it needs no other library
    tol = 1e-4 if dtype == np.float32 else 1e-9
    splits = kfold(n, cv) if isinstance(cv, int) else cv
    ref_alpha, ref_coef, ref_scores = reference(X, Y, alphas, splits, icpt)
    np.testing.assert_array_equal(ours, ref_alpha)
    scale = np.abs(ref_scores).max()
    np.testing.assert_allclose(model.cv_scores_, ref_scores, atol=(3e-6 if tol > 1e-6 else 1e-10) * scale)
    np.testing.assert_allclose(model.coef_, ref_coef, atol=tol * np.abs(ref_coef).max())

    him = himalaya_fit(X, Y, alphas, cv, icpt)
    h_alpha = np.asarray(him.best_alphas_, np.float64)
    same = np.isclose(ours, h_alpha, rtol=1e-4)
    assert same.all(), f"alphas differ on {np.flatnonzero(~same)}: {ours[~same]} vs {h_alpha[~same]}"
    r_ours = model.score(Xt, Yt)
    r_him = np.asarray(correlation_score(Yt, np.asarray(him.predict(Xt))))
    assert np.abs(r_ours - r_him).max() <= 1e-5
    np.testing.assert_allclose(model.coef_, him.coef_, atol=tol * np.abs(him.coef_).max())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["n_not_divisible", "wide_pole", "float32", "float32_wide",
                                  "degenerate_features", "intercept", "custom_splitter"])
def test_pole_tree_blocks(monkeypatch, backend, case):
    """Leaves of 4 components: the CV error goes through several levels of float32 tree blocks."""
    monkeypatch.setattr(pole, "LEAF", 4)
    assert len(pole.tree(CASES[case][1])[0]) >= 3
    test_matches_himalaya_and_float64_reference(backend, case, block_cv=False)   # the pole form is per split


def test_refit_when_cholesky_fails():
    """alpha 1e-10 on a singular XᵀX (duplicated column): the refit falls back to eigh."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 6)) * 1e4
    X[:, 5] = X[:, 4]
    Y = X[:, :3] @ rng.standard_normal((3, 4)) * 1e-4 + rng.standard_normal((200, 4))
    alphas = np.array([1e-12, 1e-10])
    be = get_backend("numpy")
    assert be.cholesky(X.T @ X + 1e-10 * np.eye(6)) is None
    model = RidgeCV(alphas=alphas, cv=4, backend="numpy").fit(X, Y)
    him = himalaya_fit(X, Y, alphas, 4)
    np.testing.assert_allclose(model.best_alphas_, np.asarray(him.best_alphas_, np.float64), rtol=1e-12)
    np.testing.assert_allclose(model.predict(X), him.predict(X), atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p, dtype", [(12, np.float64), (120, np.float64), (12, np.float32), (120, np.float32)],
                         ids=["feature-f64", "kernel-f64", "feature-f32", "kernel-f32"])
def test_block_cv_equals_one_decomposition_per_split(backend, p, dtype):
    """Leave one story out from one decomposition: the per-split path's alphas, CV scores and weights, with
    stories of odd lengths, a one-row story, a constant voxel, and small alphas where p > n makes the fit close."""
    lengths = [17, 1, 29, 8, 23]
    n = sum(lengths)
    X, Y, _, _ = make(n, p, 15, dtype, seed=p)
    Y[:, 0] = 0.0
    alphas = np.logspace(-2, 5, 8)
    cv = stories(n, lengths)
    fast, slow = (RidgeCV(alphas=alphas, cv=cv, backend=backend, block_cv=b).fit(X, Y) for b in (True, False))
    np.testing.assert_array_equal(fast.best_alphas_, slow.best_alphas_)
    tol = 1e-5 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(fast.cv_scores_, slow.cv_scores_, rtol=tol, atol=tol * np.abs(slow.cv_scores_).max())
    np.testing.assert_allclose(fast.coef_, slow.coef_, atol=10 * tol * np.abs(slow.coef_).max())


def test_block_cv_applies_to_a_partition_without_intercept_where_it_pays():
    from braintune_dist.ridge import blocks
    stories = [60] * 84                                             # ds003020's story count, p 1536, 1000 voxels
    assert blocks.usable(True, False, 10, stories, 1536, 1000)
    assert not blocks.usable(True, True, 10, stories, 1536, 1000)   # an intercept: centred per split
    assert not blocks.usable(False, False, 10, stories, 1536, 1000)  # overlapping or partial splits
    assert not blocks.usable(True, False, 10, [1800] * 5, 768, 2000)  # 5 large folds: per split is cheaper
    assert blocks.usable(True, False, 10, [1800] * 5, 768, 2000, when=True)          # forced
    assert not blocks.usable(True, False, 10, stories, 1536, 1000, when=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_voxel_and_one_dimensional_y(backend):
    X, Y, Xt, Yt = make(150, 20, 1, seed=3)
    m2 = RidgeCV(alphas=ALPHAS, backend=backend).fit(X, Y)
    m1 = RidgeCV(alphas=ALPHAS, backend=backend).fit(X, Y[:, 0])
    him = himalaya_fit(X, Y[:, 0], ALPHAS, 5)
    assert m1.coef_.shape == (20,) and m2.coef_.shape == (20, 1)
    np.testing.assert_allclose(m1.coef_, him.coef_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m1.coef_, m2.coef_[:, 0], rtol=1e-12)
    assert m1.best_alphas_.shape == (1,) and np.isclose(m1.best_alphas_[0], him.best_alphas_[0])
    pred = get_backend(backend).to_numpy(m1.predict(Xt))
    assert pred.shape == (60,)
    r = m1.score(Xt, Yt[:, 0])
    assert np.ndim(r) == 0 and abs(float(r) - np.corrcoef(pred, Yt[:, 0])[0, 1]) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_splitter_object_and_voxel_batches_agree(backend):
    from sklearn.model_selection import KFold
    X, Y, _, _ = make(180, 25, 23, seed=4)
    cv = KFold(4, shuffle=True, random_state=0)         # scattered validation rows
    full = RidgeCV(alphas=ALPHAS, cv=cv, backend=backend).fit(X, Y)
    small = RidgeCV(alphas=ALPHAS, cv=list(cv.split(X)), backend=backend,
                    n_targets_batch=4).fit(X, Y)
    np.testing.assert_array_equal(full.best_alphas_, small.best_alphas_)
    np.testing.assert_allclose(full.coef_, small.coef_, rtol=1e-10, atol=1e-13)
    ref_alpha, ref_coef, _ = reference(X, Y, ALPHAS, list(cv.split(X)))
    np.testing.assert_array_equal(full.best_alphas_, ref_alpha)
    him = himalaya_fit(X, Y, ALPHAS, cv)
    np.testing.assert_allclose(full.best_alphas_, him.best_alphas_, rtol=1e-6)


def test_overlapping_splits_are_solved_directly():
    # bootstrap-like splits: test sets overlap, some rows in neither train nor test
    X, Y, _, _ = make(160, 20, 12, seed=5)
    rng = np.random.default_rng(0)
    splits = []
    for _ in range(3):
        te = np.sort(rng.choice(160, 40, replace=False))
        tr = np.setdiff1d(np.arange(160), np.r_[te, rng.choice(160, 10)])
        splits.append((tr, te))
    m = RidgeCV(alphas=ALPHAS, cv=splits, backend="numpy").fit(X, Y)
    ref_alpha, ref_coef, ref_scores = reference(X, Y, ALPHAS, splits)
    np.testing.assert_array_equal(m.best_alphas_, ref_alpha)
    np.testing.assert_allclose(m.cv_scores_, ref_scores, rtol=1e-9)
    np.testing.assert_allclose(m.coef_, ref_coef, atol=1e-10 * np.abs(ref_coef).max())


def test_huth_convention_is_squared_alpha():
    X, Y, _, _ = make(120, 15, 3, seed=6)
    a = 30.0                                  # Huth: S / (S² + a²)  <=>  alpha = a²
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    huth = Vt.T @ np.diag(S / (S ** 2 + a ** 2)) @ U.T @ Y
    m = RidgeCV(alphas=[a ** 2], cv=3, backend="numpy").fit(X, Y)
    np.testing.assert_allclose(m.coef_, huth, rtol=1e-9)


@pytest.mark.parametrize("bad, match", [
    (dict(X=np.nan), "X contains NaN or Inf"),
    (dict(Y=np.inf), "Y contains NaN or Inf"),
    (dict(rows=1), "Y has 49 rows but X has 50"),
    (dict(alphas=[]), "alphas is empty"),
    (dict(alphas=[1.0, 0.0]), "alphas must be positive"),
    (dict(alphas=[-1.0]), "alphas must be positive"),
    (dict(alphas=[1.0, np.nan]), "alphas must be positive and finite"),
    (dict(cv=1), "cv=1"),
    (dict(cv=51), "cv=51"),
    (dict(cv=[(np.arange(10), np.array([60]))]), "cv split 0"),
    (dict(cv=[(np.arange(10), np.array([], int))]), "cv split 0"),
    (dict(cv="kfold"), "cv must be an int"),
    (dict(cv=[(np.arange(10), np.arange(5), 3)]), "cv split 0 is not a"),
    (dict(X1d=True), "X must be a non-empty numeric 2-D array"),
    (dict(batch=0), "n_targets_batch"),
])
def test_bad_input_raises_value_error(bad, match):
    X, Y, _, _ = make(50, 6, 4, seed=7)
    if "X" in bad:
        X[3, 2] = bad["X"]
    if "Y" in bad:
        Y[7, 1] = bad["Y"]
    if "rows" in bad:
        Y = Y[1:]
    if bad.get("X1d"):
        X = X[:, 0]
    m = RidgeCV(alphas=bad.get("alphas", ALPHAS), cv=bad.get("cv", 5), backend="numpy",
                n_targets_batch=bad.get("batch"))
    with pytest.raises(ValueError, match=match):
        m.fit(X, Y)


def test_predict_errors():
    X, Y, Xt, _ = make(50, 6, 4, seed=8)
    with pytest.raises(ValueError, match="not fitted"):
        RidgeCV(backend="numpy").predict(Xt)
    m = RidgeCV(alphas=ALPHAS, backend="numpy").fit(X, Y)
    with pytest.raises(ValueError, match="has 5 features but the model was fit with 6"):
        m.predict(Xt[:, :5])
    with pytest.raises(ValueError, match="X contains NaN"):
        m.predict(np.full_like(Xt, np.nan))
