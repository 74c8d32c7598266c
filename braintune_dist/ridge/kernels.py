"""Fused per-column kernels of the voxel-wise ridge: CuPy on the GPU, NumPy twins on the CPU.

The ridge spends its time in large GEMMs; what is left is per-column (= per-voxel) work that, written
with array operators, makes several passes over (n_rows, n_voxels) temporaries. Each kernel here does
it in one pass and accumulates in float64 whatever the input dtype:

* ``sse_columns(P, Y, out)``          : out[j] += sum_i (P[i, j] - Y[i, j])**2, the validation error of
  one alpha from its predictions;
* ``alpha_scale(C, lam, alpha, out)`` : out[i, j] = C[i, j] / (lam[i] + alpha[j]), the ridge solve in the
  eigenbasis with one alpha per column;
* ``pearson_columns(a, b)``           : Pearson r per column. Both versions subtract each column's first
  row first, so a constant column is exactly zero and its r is 0 (not NaN).

The CUDA sources are the ``.cu`` files of the repository's top-level ``kernels/`` folder, installed as
package data of ``braintune_dist.kernels`` and read by :func:`kernel_source`. They are compiled on first
use, never at import: importing this module on a machine without CUDA (or without cupy) costs nothing.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np

KERNEL_PACKAGE = "braintune_dist.kernels"
_CHECKOUT = Path(__file__).resolve().parents[2]
_THREADS, _ROWS = 128, 64     # threads per block (one per column); rows per block (ROWS in the .cu files)


# --------------------------------------------------------------------------- NumPy twins
def sse_columns_numpy(P, Y, out):
    """out += column sums of (P - Y)**2 in float64. P (n, v) is overwritten (scratch)."""
    np.subtract(P, Y, out=P)
    np.square(P, out=P)
    out += P.sum(0, dtype=np.float64)
    return out


def alpha_scale_numpy(C, lam, alpha, out=None):
    """C[i, j] / (lam[i] + alpha[j]); lam (m,), alpha (v,) or scalar; float64 denominators."""
    den = np.asarray(lam, np.float64)[:, None] + np.asarray(alpha, np.float64).reshape(1, -1)
    if out is None:
        out = np.empty(C.shape, C.dtype)
    np.divide(C, den, out=out, casting="unsafe")
    return out


def _finish(xp, s, n):
    """r from shifted moments s (5, v) float64; zero-variance columns -> 0."""
    sa, sb, saa, sbb, sab = s
    cov = sab - sa * sb / n
    va = saa - sa * sa / n
    vb = sbb - sb * sb / n
    ok = (va > 0) & (vb > 0)
    den = xp.sqrt(xp.where(ok, va * vb, 1.0))
    return xp.clip(xp.where(ok, cov / den, 0.0), -1.0, 1.0)


def pearson_columns_numpy(a, b, batch: int = 4096):
    """Pearson r per column of a, b (n, v) -> (v,) float64, two-pass, batched over columns."""
    n, v = a.shape
    r = np.empty(v, np.float64)
    for s in range(0, v, batch):
        x = np.asarray(a[:, s:s + batch], np.float64)
        y = np.asarray(b[:, s:s + batch], np.float64)
        x = x - x[:1]                 # exact zeros for constant columns
        y = y - y[:1]
        x -= x.mean(0)
        y -= y.mean(0)
        mom = np.stack([np.zeros(x.shape[1]), np.zeros(x.shape[1]),
                        np.einsum("ij,ij->j", x, x), np.einsum("ij,ij->j", y, y),
                        np.einsum("ij,ij->j", x, y)])
        r[s:s + batch] = _finish(np, mom, n)
    return r


# --------------------------------------------------------------------------- CuPy kernels
def _kernel_dir():
    """The folder of the ``.cu`` sources: the installed ``braintune_dist.kernels``, else a checkout's."""
    try:
        return resources.files(KERNEL_PACKAGE)
    except ModuleNotFoundError:
        # setuptools' default editable install (and a checkout on PYTHONPATH) cannot import a namespace
        # package mapped from outside braintune_dist/, so there the sources are read where they live
        if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "kernels").is_dir():
            return _CHECKOUT / "kernels"
        raise FileNotFoundError(f"the CUDA sources ({KERNEL_PACKAGE}) are not installed") from None


def kernel_source(name: str) -> str:
    """The text of the CUDA source ``<name>.cu``."""
    folder = _kernel_dir()
    path = folder / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"CUDA source {name}.cu is missing from {folder}")
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _raw_module(name: str):
    """The RawModule of ``kernels/<name>.cu`` with its float and double instantiations."""
    import cupy as cp
    return cp.RawModule(code=kernel_source(name), options=("-std=c++17",),
                        name_expressions=[f"{name}<float>", f"{name}<double>"])


def _column_kernel(name: str, a, b, out):
    """Launch ``name(A, lda, B, ldb, out, n, v)``: a, b (n, v) on device, one thread per column and one
    block row per ``_ROWS`` rows. Inputs are cast to a common float dtype and made unit-stride along
    columns (row and column slices of a C-ordered array are used as they are)."""
    import cupy as cp
    dtype = cp.result_type(a.dtype, b.dtype, cp.float32)
    args = []
    for x in (a, b):
        x = x.astype(dtype, copy=False)
        if x.ndim != 2 or x.strides[1] != x.itemsize or x.strides[0] % x.itemsize:
            x = cp.ascontiguousarray(x)
        args += [x, np.int64(x.strides[0] // x.itemsize)]
    n, v = a.shape
    t = "float" if dtype == cp.float32 else "double"
    grid = ((v + _THREADS - 1) // _THREADS, max(1, (n + _ROWS - 1) // _ROWS))
    _raw_module(name).get_function(f"{name}<{t}>")(grid, (_THREADS,), tuple(args) + (out, np.int64(n), np.int64(v)))
    return out


def sse_columns_cupy(P, Y, out):
    """CuPy twin of :func:`sse_columns_numpy` (P is not modified); out float64 (v,) on device."""
    return _column_kernel("sse_cols", P, Y, out)


def pearson_columns_cupy(a, b):
    """CuPy twin of :func:`pearson_columns_numpy`: a, b (n, v) on device -> (v,) float64."""
    import cupy as cp
    m = _column_kernel("pearson_moments", a, b, cp.zeros((5, a.shape[1]), cp.float64))
    return _finish(cp, m, a.shape[0])


@functools.lru_cache(maxsize=None)
def _scale_kernel():
    import cupy as cp
    return cp.ElementwiseKernel(
        "T c, float64 lam, float64 alpha", "T out",
        "out = (T)((double)c / (lam + alpha))", "alpha_scale")


def alpha_scale_cupy(C, lam, alpha, out=None):
    """CuPy twin of :func:`alpha_scale_numpy` (one fused pass, broadcasting lam[:, None], alpha[None])."""
    import cupy as cp
    lam = cp.asarray(lam, cp.float64)[:, None]
    alpha = cp.asarray(alpha, cp.float64).reshape(1, -1)
    if out is None:
        out = cp.empty(C.shape, C.dtype)
    return _scale_kernel()(C, lam, alpha, out)
