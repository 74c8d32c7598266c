"""Fused kernels of the voxel-wise ridge (CuPy on the GPU) and their NumPy twins (CPU, tests).

The ridge spends its time in large GEMMs; what is left is per-column (= per-voxel) elementwise
work that, written with array operators, makes several passes over (n_rows, n_voxels) temporaries.
These kernels do each in one pass and accumulate in float64 whatever the input dtype:

* ``sse_columns(P, Y, out)``   : out[j] += sum_i (P[i, j] - Y[i, j])**2
      validation error of one alpha from its predictions P (direct form).
* ``alpha_scale(C, lam, alpha, out)`` : out[i, j] = C[i, j] / (lam[i] + alpha[j])
      the ridge "solve" in the eigenbasis, one alpha per column (refit with per-voxel alphas),
      computed in float64 and stored in ``out``'s dtype.

Arrays are 2-D with unit stride along columns (row slices and column slices of a C-ordered
array qualify). CuPy sources are compiled lazily on first use: importing this module on a
machine without CUDA (or without cupy) costs nothing.
"""
from __future__ import annotations

import functools

import numpy as np

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


# --------------------------------------------------------------------------- CuPy kernels

_SRC = r"""
// One thread per column j, blockIdx.y picks a chunk of ROWS rows; float64 partial sums are
// atomically added to out[j]. Row strides (ld*) let inputs be row/column slices of bigger arrays;
// adjacent threads read adjacent columns, so every load is coalesced.
#define ROWS 64
template<typename T>
__global__ void sse_cols(const T* P, long long ldp, const T* Y, long long ldy,
                         double* out, long long n, long long v) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= v) return;
    long long r0 = (long long)blockIdx.y * ROWS, r1 = min(r0 + ROWS, n);
    double acc = 0.0;
    for (long long i = r0; i < r1; ++i) {
        double d = (double)P[i * ldp + j] - (double)Y[i * ldy + j];
        acc += d * d;
    }
    atomicAdd(out + j, acc);
}
"""
_NAMES = ["sse_cols<float>", "sse_cols<double>"]
_THREADS, _ROWS = 128, 64


@functools.lru_cache(maxsize=None)
def _module():
    import cupy as cp
    return cp.RawModule(code=_SRC, options=("-std=c++17",), name_expressions=_NAMES)


def _kernel(name, dtype):
    t = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}[np.dtype(dtype)]
    return _module().get_function(f"{name}<{t}>")


def _rowmajor(a):
    """(array, row stride in elements) with unit column stride, copying only if needed."""
    import cupy as cp
    if a.ndim != 2 or a.strides[1] != a.itemsize or a.strides[0] % a.itemsize:
        a = cp.ascontiguousarray(a)
    return a, np.int64(a.strides[0] // a.itemsize)


def _launch(name, arrays, out):
    n, v = arrays[0].shape
    dtype = arrays[0].dtype
    args = []
    for a in arrays:
        assert a.shape == (n, v) and a.dtype == dtype, (a.shape, a.dtype)
        args += list(_rowmajor(a))
    grid = ((v + _THREADS - 1) // _THREADS, max(1, (n + _ROWS - 1) // _ROWS))
    _kernel(name, dtype)(grid, (_THREADS,), tuple(args) + (out, np.int64(n), np.int64(v)))
    return out


def sse_columns_cupy(P, Y, out):
    """CuPy twin of :func:`sse_columns_numpy` (P is not modified); out float64 (v,) on device."""
    return _launch("sse_cols", (P, Y), out)


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
