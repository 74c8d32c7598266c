"""Per-column Pearson correlation: fused CuPy kernel and its NumPy twin.

Both subtract each column's first row before anything else, so a constant column becomes exactly
zero, its variance is exactly 0 and its r is reported as 0 (not NaN). Sums are float64.

The CuPy kernel makes ONE pass over both inputs, accumulating the five shifted moments
(sum a, sum b, sum a^2, sum b^2, sum ab) per column; the shift by the first row keeps the
one-pass variance formula accurate for data whose mean is large relative to its spread.
Compiled lazily on first use (never at import).
"""
from __future__ import annotations

import functools

import numpy as np


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


_SRC = r"""
#define ROWS 64
template<typename T>
__global__ void pearson_moments(const T* A, long long lda, const T* B, long long ldb,
                                double* m, long long n, long long v) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= v) return;
    long long r0 = (long long)blockIdx.y * ROWS, r1 = min(r0 + ROWS, n);
    double ka = (double)A[j], kb = (double)B[j];          // shift = row 0
    double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
    for (long long i = r0; i < r1; ++i) {
        double x = (double)A[i * lda + j] - ka, y = (double)B[i * ldb + j] - kb;
        sa += x; sb += y; saa += x * x; sbb += y * y; sab += x * y;
    }
    atomicAdd(m + j, sa); atomicAdd(m + v + j, sb); atomicAdd(m + 2 * v + j, saa);
    atomicAdd(m + 3 * v + j, sbb); atomicAdd(m + 4 * v + j, sab);
}
"""
_NAMES = ["pearson_moments<float>", "pearson_moments<double>"]
_THREADS, _ROWS = 128, 64


@functools.lru_cache(maxsize=None)
def _module():
    import cupy as cp
    return cp.RawModule(code=_SRC, options=("-std=c++17",), name_expressions=_NAMES)


def pearson_columns_cupy(a, b):
    """CuPy twin of :func:`pearson_columns_numpy`: a, b (n, v) on device -> (v,) float64."""
    import cupy as cp
    dtype = cp.result_type(a.dtype, b.dtype, cp.float32)
    ab = []
    for x in (a, b):
        x = x.astype(dtype, copy=False)
        if x.strides[1] != x.itemsize or x.strides[0] % x.itemsize:
            x = cp.ascontiguousarray(x)
        ab += [x, np.int64(x.strides[0] // x.itemsize)]
    n, v = a.shape
    m = cp.zeros((5, v), cp.float64)
    t = "float" if dtype == cp.float32 else "double"
    grid = ((v + _THREADS - 1) // _THREADS, max(1, (n + _ROWS - 1) // _ROWS))
    _module().get_function(f"pearson_moments<{t}>")(
        grid, (_THREADS,), tuple(ab) + (m, np.int64(n), np.int64(v)))
    return _finish(cp, m, n)
