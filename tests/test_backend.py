"""Backend switch and the fused ridge kernels (CuPy kernels vs their NumPy twins vs float64)."""
import subprocess
import sys

import numpy as np
import pytest

from braintune_dist.ridge import get_backend
from braintune_dist.ridge.backend import BackendUnavailableError, gpu_available, gpu_status

BACKENDS = ["numpy", pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not gpu_available(), reason="needs a CUDA GPU with cupy (cupy backend)")])]


@pytest.fixture(params=BACKENDS)
def be(request):
    return get_backend(request.param)


def test_package_import_does_not_touch_cupy():
    code = ("import sys, braintune_dist.ridge, braintune_dist.ridge.kernels; "
            "assert 'cupy' not in sys.modules, 'cupy imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_names_and_auto():
    assert get_backend("numpy").name == "numpy"
    auto = get_backend("auto")
    assert auto.name == ("cupy" if gpu_available() else "numpy")
    assert get_backend(auto) is auto
    with pytest.raises(ValueError, match="backend must be one of"):
        get_backend("torch")


@pytest.mark.skipif(gpu_available(), reason="a GPU is usable here")
def test_cupy_without_gpu_raises_clearly():
    with pytest.raises(BackendUnavailableError, match="needs a usable CUDA GPU") as e:
        get_backend("cupy")
    assert gpu_status()[1] in str(e.value)


def test_namespace(be):
    x = be.asarray(np.arange(6.0).reshape(2, 3), dtype=np.float32)
    assert be.is_backend_array(x) and x.dtype == np.float32
    z = be.zeros((2, 3))                          # forwarded to the array module
    np.testing.assert_array_equal(be.to_numpy(be.matmul(x, z.T)), np.zeros((2, 2)))
    assert isinstance(be.to_numpy(x), np.ndarray)


def test_eigh_float64(be):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 20))
    g = a.T @ a
    lam, V = be.eigh(be.asarray(g, dtype=np.float32))
    lam, V = be.to_numpy(lam), be.to_numpy(V)
    assert lam.dtype == np.float64 and np.all(np.diff(lam) >= 0)
    np.testing.assert_allclose((V * lam) @ V.T, g, atol=1e-9 * np.abs(g).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("order", ["C", "F"])
def test_gram_exactly_symmetric(be, dtype, order):
    rng = np.random.default_rng(4)
    a = np.asarray(rng.standard_normal((70, 600)), dtype=dtype, order=order)   # > one mirror block
    g = be.to_numpy(be.gram(be.asarray(a)))
    assert g.shape == (600, 600) and g.dtype == dtype
    assert np.array_equal(g, g.T)
    ref = a.astype(np.float64).T @ a.astype(np.float64)
    np.testing.assert_allclose(g, ref, atol=(1e-4 if dtype == np.float32 else 1e-12) * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sse_kernel(be, dtype):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((2, 150, 300)).astype(dtype)
    P, Y = (be.asarray(m[:, 7:270]) for m in big)         # column slices: strided rows
    ref = ((big[0, :, 7:270].astype(np.float64) - big[1, :, 7:270]) ** 2).sum(0)
    out = be.zeros(263)
    be.sse_columns(P.copy(), Y, out)
    be.sse_columns(P.copy(), Y, out)                     # accumulates
    np.testing.assert_allclose(be.to_numpy(out), 2 * ref, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_alpha_scale(be, dtype):
    rng = np.random.default_rng(2)
    C = rng.standard_normal((40, 30)).astype(dtype)
    lam, alpha = rng.random(40) * 100, 10 ** rng.uniform(0, 6, 30)
    ref = C.astype(np.float64) / (lam[:, None] + alpha[None, :])
    got = be.to_numpy(be.alpha_scale(be.asarray(C), be.asarray(lam), be.asarray(alpha)))
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=1e-6 if dtype == np.float32 else 1e-14)
    Cd = be.asarray(C.copy())
    be.alpha_scale(Cd, be.asarray(lam), 3.0, out=Cd)      # scalar alpha, in place
    np.testing.assert_allclose(be.to_numpy(Cd), C / (lam[:, None] + 3.0), rtol=1e-6)
