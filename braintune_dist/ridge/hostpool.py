"""Reuse host memory across the large temporaries of a CPU ridge fit (glibc only).

A RidgeCV fit on the CPU allocates and frees hundreds of arrays of 20-150 MB (voxel batches,
eigen-coefficients, Gram copies, LAPACK workspaces). glibc serves each of them with a fresh
``mmap`` and returns it with ``munmap`` on free, so every one is page-faulted in again, and with
transparent huge pages on ``madvise`` each fault may stall on memory compaction. Measured at
tier M of the ridge benchmark (p 3072, v 8000, 2 cores): 44.6 s as is, 37.3 s with the pool,
about +10 % peak RSS (BENCHMARKS.md).

:func:`host_pool` does on the host what CuPy's memory pool does on the GPU: while it is active,
glibc takes large blocks from its heap (``M_MMAP_MAX = 0``) and keeps freed ones for reuse
(``M_TRIM_THRESHOLD`` high). On exit it sets both parameters back to glibc's default values and
trims the heap (``malloc_trim``), so the memory goes back to the system.

It is opt-in (``RidgeCV(host_pool=True)``, ``eval.ridge.host_pool``) because it changes malloc for the
whole process: while a fit runs, every thread (Ray's, torch's) allocates from the same unbounded heap,
and after it glibc's *dynamic* mmap threshold stays off for the rest of the process (any ``mallopt`` of
these parameters turns it off, and no call turns it back on): the threshold stays at its value when the
pool opened instead of rising after large frees. Use it in a process that only fits ridges (a ridge
worker). Nested and concurrent fits share one activation; other C libraries (musl, macOS) are left alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import threading

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4          # mallopt parameters (malloc.h)
DEFAULT_TRIM, DEFAULT_MMAP_MAX = 128 * 1024, 65536
_lock = threading.Lock()
_depth = 0


@functools.lru_cache(maxsize=1)
def _glibc():
    """glibc's handle, or None under another C library (mallopt semantics differ there)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version                # AttributeError outside glibc
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def host_pool():
    """Serve large allocations from a reusable heap for the duration of the block."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2 ** 31 - 1))   # keep freed blocks
            libc.mallopt(M_MMAP_MAX, ctypes.c_int(0))                   # no fresh mmaps
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, ctypes.c_int(DEFAULT_MMAP_MAX))
                libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(DEFAULT_TRIM))
                libc.malloc_trim(ctypes.c_size_t(0))   # give the free heap back to the system
