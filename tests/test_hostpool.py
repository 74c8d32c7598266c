"""The CPU ridge's host memory pool: inside it, a freed large block is reused without new page
faults; outside it (and after it), glibc maps fresh pages for every large allocation."""
import resource

import numpy as np
import pytest

from braintune_dist.ridge import RidgeCV, hostpool

pytestmark = pytest.mark.skipif(hostpool._glibc() is None, reason="needs glibc (Linux)")
MB64 = 8 << 20                       # float64 elements in 64 MB, far above the mmap threshold


def faults_of_one_block():
    """Minor page faults of allocating, touching and freeing one 64 MB array."""
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(MB64)
    del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0


def test_freed_blocks_are_reused_only_inside_the_pool(monkeypatch):
    monkeypatch.delenv("BRAINTUNE_HOST_POOL", raising=False)
    # 64 MB is >= 32 huge pages or 16384 small ones: every fresh mapping faults at least 32 times
    assert min(faults_of_one_block() for _ in range(2)) >= 32
    with hostpool.host_pool():
        with hostpool.host_pool():                        # nesting shares one activation
            faults_of_one_block()                         # first use grows the heap
        assert max(faults_of_one_block() for _ in range(3)) < 8   # then reused: no new pages
    assert hostpool._depth == 0
    assert min(faults_of_one_block() for _ in range(2)) >= 32    # defaults restored on exit


def test_switched_off_by_env(monkeypatch):
    monkeypatch.setenv("BRAINTUNE_HOST_POOL", "0")
    with hostpool.host_pool():
        faults_of_one_block()
        assert min(faults_of_one_block() for _ in range(2)) >= 32


def test_fit_leaves_the_pool_closed():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    RidgeCV(alphas=[1.0, 10.0], cv=3, backend="numpy").fit(X, Y)
    assert hostpool._depth == 0
    with pytest.raises(ValueError, match="NaN"):          # an error inside fit closes it too
        RidgeCV(alphas=[1.0], cv=3, backend="numpy").fit(X, np.full((60, 2), np.nan))
    assert hostpool._depth == 0
    assert min(faults_of_one_block() for _ in range(2)) >= 32
