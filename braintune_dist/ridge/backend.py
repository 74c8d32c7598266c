"""Array backends for the voxel-wise ridge: NumPy on CPU, CuPy on a CUDA GPU.

A backend is a small namespace object (himalaya style). It forwards every array-module function
(``zeros``, ``matmul``, ``sqrt``, ...) to its module ``xp`` and adds what the ridge needs on top:

* ``asarray(x, dtype=None)`` : move/convert to this backend (host <-> device as needed),
* ``to_numpy(x)``            : a NumPy array on the host,
* ``eigh(a, overwrite=False)`` : float64 symmetric eigendecomposition, ascending eigenvalues
  (LAPACK divide and conquer, ``syevd``), ``a`` may be destroyed when ``overwrite``,
* ``gram(a)``                : ``aᵀa``, exactly symmetric (BLAS ``syrk`` on the CPU: half a GEMM),
* ``cholesky(a)`` / ``cho_solve(L, b)`` : float64 lower Cholesky factor (None when ``a`` is not
  numerically positive definite) and the solve ``a⁻¹ b`` from it,
* ``synchronize()``          : wait for queued device work (timing),
* ``pool()``                 : context reusing memory across a fit's large temporaries
  (:func:`.hostpool.host_pool` on the CPU; CuPy has its own memory pool),
* the fused kernels of :mod:`.kernels`
  (``sse_columns``, ``alpha_scale``, ``pearson_columns``): CuPy kernels on the GPU, their NumPy
  twins on the CPU,
* ``f64_cost``               : time of a float64 GEMM relative to float32 (weighs the float64 part
  of the ridge's "pole" form against the direct form).

``get_backend("auto")`` gives CuPy only when a GPU is actually usable. On a CPU box with the cupy
wheel installed ``import cupy`` succeeds but any device call raises ``CUDARuntimeError``, so
usability is probed with a real device query, never assumed from the import.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np

from braintune_dist.errors import UserError
from braintune_dist.ridge import kernels as _k
from braintune_dist.ridge.hostpool import host_pool

BACKENDS = ("numpy", "cupy", "auto")


class BackendUnavailableError(UserError, RuntimeError):
    """The requested backend cannot run on this machine (e.g. ``"cupy"`` without a usable GPU)."""


class Backend:
    """Namespace over an array module ``xp``; unknown attributes are looked up on ``xp``."""

    def __init__(self, name: str, xp, kernels: dict):
        self.name = name
        self.xp = xp
        self.__dict__.update(kernels)

    def __getattr__(self, attr):        # only called when normal lookup fails
        if attr == "xp":                # not yet set (copy/pickle): no recursion
            raise AttributeError(attr)
        return getattr(self.xp, attr)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def is_backend_array(self, x) -> bool:
        return isinstance(x, self.xp.ndarray)


def _numpy_backend() -> Backend:
    def asarray(x, dtype=None):
        if _is_cupy_array(x):           # device -> host
            x = x.get()
        return np.asarray(x, dtype=dtype)

    def cholesky(a):
        import scipy.linalg
        try:
            # a.T: the same symmetric matrix, Fortran-ordered for LAPACK (no copy of a C array)
            return scipy.linalg.cholesky(a.T, lower=True, overwrite_a=True, check_finite=False)
        except np.linalg.LinAlgError:
            return None

    def cho_solve(L, b):
        import scipy.linalg
        return scipy.linalg.cho_solve((L, True), b, overwrite_b=True, check_finite=False)

    return Backend("numpy", np, dict(
        asarray=asarray, to_numpy=asarray, eigh=_eigh_numpy, gram=_gram_numpy, cholesky=cholesky,
        cho_solve=cho_solve, synchronize=lambda: None, pool=host_pool,
        sse_columns=_k.sse_columns_numpy, f64_cost=2.0,
        alpha_scale=_k.alpha_scale_numpy, pearson_columns=_k.pearson_columns_numpy))


def _eigh_numpy(a, overwrite=False):
    """LAPACK syevd (divide and conquer) through scipy; ``a`` symmetric, so ``a.T`` is the same
    matrix in the Fortran order LAPACK wants (no copy of a C-ordered array)."""
    import scipy.linalg
    a = np.asarray(a, dtype=np.float64)
    return scipy.linalg.eigh(a.T if a.flags.c_contiguous else a, driver="evd",
                             check_finite=False, overwrite_a=overwrite)


def _gram_numpy(a, block=256):
    """aᵀa for a (n, p) float32/float64: BLAS syrk (upper triangle), mirrored block by block."""
    from scipy.linalg import blas
    a = np.asarray(a)
    syrk = blas.dsyrk if a.dtype == np.float64 else blas.ssyrk
    # syrk(a, trans=0) = a aᵀ for a Fortran-ordered a: pass aᵀ (a view, no copy, for C-ordered a)
    c = syrk(1.0, a, trans=1) if a.flags.f_contiguous else syrk(1.0, a.T, trans=0)
    p = c.shape[0]
    for i in range(0, p, block):
        c[i + block:, i:i + block] = c[i:i + block, i + block:].T
        d = c[i:i + block, i:i + block]
        d[...] = np.triu(d) + np.triu(d, 1).T
    return c.T                                      # symmetric: the C-ordered view of the same


def _cupy_backend() -> Backend:
    import cupy as cp

    def asarray(x, dtype=None):
        return cp.asarray(x, dtype=dtype)

    def to_numpy(x):
        return cp.asnumpy(x) if isinstance(x, cp.ndarray) else np.asarray(x)

    def eigh(a, overwrite=False):
        return cp.linalg.eigh(cp.asarray(a, dtype=cp.float64))

    def gram(a):
        c = a.T @ a
        return (c + c.T) * 0.5                      # exactly symmetric (GEMM results may not be)

    def cholesky(a):
        L = cp.linalg.cholesky(a)                   # NaNs (no raise) when not positive definite
        return L if bool(cp.isfinite(L).all()) else None

    def cho_solve(L, b):
        from cupyx.scipy.linalg import solve_triangular
        return solve_triangular(L, solve_triangular(L, b, lower=True), trans="T", lower=True)

    return Backend("cupy", cp, dict(
        asarray=asarray, to_numpy=to_numpy, eigh=eigh, gram=gram, cholesky=cholesky,
        cho_solve=cho_solve, pool=contextlib.nullcontext,
        synchronize=lambda: cp.cuda.Device().synchronize(),
        sse_columns=_k.sse_columns_cupy, f64_cost=_f64_cost(cp),
        alpha_scale=_k.alpha_scale_cupy, pearson_columns=_k.pearson_columns_cupy))


def _f64_cost(cp) -> float:
    """Data-centre GPUs (P100, V100, A100, H100, B100/B200) run float64 GEMMs at >= 1/2 rate."""
    cc = cp.cuda.Device().compute_capability        # e.g. "90"
    return 1.0 if cc in ("60", "70", "80", "90", "100") else 32.0


def _is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy")


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy can run on a GPU here, and why not if it cannot."""
    try:
        import cupy as cp
    except Exception as e:              # no wheel, or CUDA libraries missing
        return False, f"cupy is not importable ({type(e).__name__}: {e})"
    try:
        if not cp.cuda.is_available():  # False (no raise) without driver or device
            return False, "cupy is installed but no CUDA device/driver is available"
        if cp.cuda.runtime.getDeviceCount() < 1:
            return False, "no CUDA device found"
        cp.zeros(1).sum().item()        # a real allocation + kernel launch
    except Exception as e:              # CUDARuntimeError is a RuntimeError
        return False, f"CUDA device unusable ({type(e).__name__}: {e})"
    return True, "ok"


def gpu_available() -> bool:
    """True when CuPy is importable and a CUDA GPU actually accepts work."""
    return gpu_status()[0]


@functools.lru_cache(maxsize=None)
def _cached(name: str) -> Backend:
    return _cupy_backend() if name == "cupy" else _numpy_backend()


def get_backend(name="auto") -> Backend:
    """Return the backend ``"numpy"``, ``"cupy"`` or ``"auto"`` (a Backend is passed through).

    Parameters
    ----------
    name : {"numpy", "cupy", "auto"} or Backend
        ``"auto"`` selects CuPy when a GPU is usable, else NumPy (no error, no warning).

    Raises
    ------
    ValueError
        Unknown backend name.
    BackendUnavailableError
        ``"cupy"`` was requested explicitly but no GPU is usable; the message says why.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        name = "cupy" if gpu_available() else "numpy"
    elif name == "cupy":
        ok, why = gpu_status()
        if not ok:
            raise BackendUnavailableError(
                f"backend='cupy' needs a usable CUDA GPU and the cupy package "
                f"(pip install braintune_dist[gpu]): {why}. Use backend='numpy' or 'auto'.")
    return _cached(name)


def backend_of(x) -> Backend:
    """The backend owning array ``x`` (CuPy arrays -> cupy, anything else -> numpy)."""
    return _cached("cupy") if _is_cupy_array(x) else _cached("numpy")
