"""The pole form of the ridge CV error: float32 tree blocks keep the error of a direct evaluation."""
import numpy as np
import pytest

from braintune_dist.ridge import pole
from braintune_dist.ridge.backend import get_backend, gpu_available

BACKENDS = ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="needs a CUDA GPU with cupy (cupy backend)")])]


@pytest.mark.parametrize("m,leaf", [(300, 8), (301, 7), (5, 2), (128, 128)])
def test_tree_levels_cover_every_component(m, leaf):
    levels, leaves = pole.tree(m, leaf)
    for level in levels:                                   # each level: disjoint, covering, in order
        assert [lo for lo, _, _ in level][0] == 0 and level[-1][2] == m
        assert all(a[2] == b[0] for a, b in zip(level, level[1:]))
        assert all(lo < mid < hi for lo, mid, hi in level)
    assert sum(hi - lo for lo, hi in leaves) == m and max(hi - lo for lo, hi in leaves) <= leaf
    if m > leaf:
        assert len(levels) >= 1


def problem(m=300, nv=120, v=50, seed=0, dense=False):
    """Spread (or dense: many close pairs) spectrum with a near-degenerate pair, coefficients and
    targets of one split."""
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.uniform(1000, 1100, m) if dense else 10 ** rng.uniform(0, 4, m))
    lam[11] = lam[10] * (1 + 1e-13)                       # near pair: summed exactly
    A = rng.standard_normal((nv, m))
    C = rng.standard_normal((m, v)) * np.sqrt(lam)[:, None]
    y = rng.standard_normal((nv, v)) + A @ (C / (lam[:, None] + 30))
    return lam, A, C, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dense", [False, True])
def test_pole_sse_matches_direct_predictions(monkeypatch, backend, dtype, dense):
    monkeypatch.setattr(pole, "LEAF", 8)                  # 5 levels of float32 blocks
    be = get_backend(backend)
    lam, A, C, y = problem(dense=dense)
    alphas = np.logspace(0, 6, 9)
    E = 1 / (lam[None] + alphas[:, None])
    ref = np.stack([((y - A @ (C * e[:, None])) ** 2).sum(0) for e in E])   # float64 direct
    # scale of the error of any float32 evaluation: the absolute terms of the expansion
    terms = np.stack([np.abs(2 * (e[:, None] * C) * (A.T @ y)).sum(0)
                      + ((np.abs(A) @ np.abs(e[:, None] * C)) ** 2).sum(0) for e in E])
    f = pole.setup(be, be.asarray(lam), be.asarray(A), be.asarray(alphas), dtype)
    assert f is not None and len(f.levels) >= 5 and {10, 11} <= set(be.to_numpy(f.S).tolist())
    assert f.K.dtype == dtype
    got = be.to_numpy(pole.sse(be, f, be.asarray(C.astype(dtype)), be.asarray((A.T @ y).astype(dtype)),
                               be.asarray((y ** 2).sum(0))))
    err = np.abs(got - ref) / terms
    assert err.max() < (5e-6 if dtype == np.float32 else 1e-10), err.max()


def test_unshifted_float32_fractions_would_fail():
    """Guard on the test problem: the plain float32 K @ C (no shift per block pair) is 10-100x
    further off than the tree on a dense spectrum."""
    be = get_backend("numpy")
    lam, A, C, y = problem(dense=True)
    alphas = np.logspace(0, 6, 9)
    E = 1 / (lam[None] + alphas[:, None])
    ref = np.stack([((y - A @ (C * e[:, None])) ** 2).sum(0) for e in E])
    terms = np.stack([np.abs(2 * (e[:, None] * C) * (A.T @ y)).sum(0)
                      + ((np.abs(A) @ np.abs(e[:, None] * C)) ** 2).sum(0) for e in E])
    f = pole.setup(be, lam, A, alphas, np.float64)        # K without near pairs, and N for them
    KC = (f.K.astype(np.float32) @ C.astype(np.float32)).astype(np.float64)
    Cs = C[f.S]
    near = np.stack([((Cs * e[f.S, None]) * (f.N @ (Cs * e[f.S, None]))).sum(0) for e in E])
    H = A.T @ A
    naive = ((-2 * E) @ (C * (A.T @ y)) + (E * E * np.diag(H)) @ (C * C) + 2 * E @ (C * KC)
             + (y ** 2).sum(0) + near)
    assert (np.abs(naive - ref) / terms).max() > 2e-5


def test_too_many_near_pairs_falls_back():
    be = get_backend("numpy")
    lam = np.repeat(np.arange(1.0, 11.0), 3)               # every eigenvalue three times
    A = np.random.default_rng(0).standard_normal((20, lam.size))
    assert pole.setup(be, lam, A, np.logspace(0, 3, 4), np.float32) is None
