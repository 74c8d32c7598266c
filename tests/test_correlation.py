"""correlation_score: Pearson r per column against a float64 reference, on every backend."""
import numpy as np
import pytest

from braintune_dist.ridge import correlation_score, get_backend
from braintune_dist.ridge.backend import gpu_available

BACKENDS = ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="needs a CUDA GPU with cupy (cupy backend)")])]


def reference_r(a, b):
    """np.corrcoef column by column, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.array([np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(a.shape[1])])


def make(n, v, dtype, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, v))
    b = 0.6 * a + rng.standard_normal((n, v)) * rng.uniform(0.1, 3, v)
    return (a + offset).astype(dtype), (b - offset).astype(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_float64_reference(backend, dtype):
    a, b = make(301, 57, dtype)
    be = get_backend(backend)
    r = correlation_score(be.asarray(a), be.asarray(b))
    assert be.is_backend_array(r) and r.shape == (57,)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(be.to_numpy(r), reference_r(a, b), atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_offset_and_batches(backend):
    # mean 1e3 x the spread: a naive one-pass formula in float32 would lose every digit
    a, b = make(200, 33, np.float32, seed=1, offset=3e3)
    be = get_backend(backend)
    ref = reference_r(a, b)
    np.testing.assert_allclose(be.to_numpy(correlation_score(be.asarray(a), be.asarray(b))),
                               ref, atol=1e-6)
    np.testing.assert_allclose(correlation_score(a, b, batch=5), ref, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constant_columns_give_zero(backend):
    a, b = make(50, 4, np.float32, seed=2)
    a[:, 1] = 0.1                     # constant measured voxel (0.1 is inexact in binary)
    b[:, 2] = -7.3                    # constant prediction
    a[:, 3] = b[:, 3] = 5.0
    be = get_backend(backend)
    r = be.to_numpy(correlation_score(be.asarray(a), be.asarray(b)))
    assert np.all(np.isfinite(r))
    np.testing.assert_array_equal(r[1:], 0.0)
    assert abs(r[0] - reference_r(a[:, :1], b[:, :1])[0]) < 1e-6


def test_one_dimensional_and_errors():
    a, b = make(40, 1, np.float64, seed=3)
    r = correlation_score(a[:, 0], b[:, 0])
    assert np.ndim(r) == 0 and abs(float(r) - reference_r(a, b)[0]) < 1e-12
    assert correlation_score(a[:, 0], a[:, 0]) == pytest.approx(1.0)
    assert correlation_score(a[:, 0], -a[:, 0]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="same shape"):
        correlation_score(a, b[:-1])
    with pytest.raises(ValueError, match="at least one row"):
        correlation_score(np.zeros((0, 3)), np.zeros((0, 3)))
