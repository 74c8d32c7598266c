"""The CPU ridge's host memory pool: inside it, a freed large block is reused without new page
faults; outside it (and after it), glibc maps fresh pages for every large allocation."""
import resource

import numpy as np
import pytest

from braintune_dist.ridge import RidgeCV, hostpool

pytestmark = pytest.mark.skipif(hostpool._glibc() is None, reason="needs glibc (Linux)")
MB64 = 8 << 20                       # float64 elements in 64 MB, far above the mmap threshold


# this thread's faults only: in the full suite, threads of the session's Ray driver and MLflow fault pages too
WHO = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)


def faults_of_one_block():
    """Minor page faults of this thread allocating, touching and freeing one 64 MB array."""
    r0 = resource.getrusage(WHO).ru_minflt
    a = np.ones(MB64)
    del a
    return resource.getrusage(WHO).ru_minflt - r0


def test_freed_blocks_are_reused_only_inside_the_pool():
    # 64 MB is >= 32 huge pages or 16384 small ones: every fresh mapping faults at least 32 times
    assert min(faults_of_one_block() for _ in range(2)) >= 32
    with hostpool.host_pool():
        with hostpool.host_pool():                        # nesting shares one activation
            faults_of_one_block()                         # first use grows the heap
        assert max(faults_of_one_block() for _ in range(3)) < 8   # then reused: no new pages
    assert hostpool._depth == 0
    assert min(faults_of_one_block() for _ in range(2)) >= 32    # defaults restored on exit


def test_off_unless_asked(monkeypatch):
    """A plain fit leaves malloc alone; host_pool=True opens the pool for the fit only, and an error inside
    the fit closes it too."""
    opened, real = [], hostpool._glibc

    def spy():                                   # host_pool() asks for glibc once per activation
        opened.append(1)
        return real()
    monkeypatch.setattr(hostpool, "_glibc", spy)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    plain = RidgeCV(alphas=[1.0, 10.0], cv=3, backend="numpy").fit(X, Y)
    assert opened == [] and hostpool._depth == 0
    pooled = RidgeCV(alphas=[1.0, 10.0], cv=3, backend="numpy", host_pool=True).fit(X, Y)
    assert opened == [1] and hostpool._depth == 0
    np.testing.assert_array_equal(plain.coef_, pooled.coef_)    # same numbers either way
    with pytest.raises(ValueError, match="NaN"):
        RidgeCV(alphas=[1.0], cv=3, backend="numpy", host_pool=True).fit(X, np.full((60, 2), np.nan))
    assert hostpool._depth == 0
    assert min(faults_of_one_block() for _ in range(2)) >= 32
