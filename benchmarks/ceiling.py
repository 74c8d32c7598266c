"""Benchmark: peak memory and time of the noise ceiling at the real voxel count.

    python benchmarks/ceiling.py [--out benchmarks/results/ceiling.json] [--voxels 95000]

``individual_repeats`` of ds003020's test story (10 repeats × 241 evaluation rows × ~95 k voxels, float32,
0.9 GB) through ``noise_ceiling`` in voxel blocks (the default and two other sizes) and in one block of
every voxel, against the whole-array float64 computation written out below (a float64 copy of the input,
then z-scored out of place). Peak memory is what numpy allocates beyond the input (``tracemalloc``, which
numpy reports to), so the numbers do not depend on the machine's other load. Times are from one run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
import tracemalloc
from pathlib import Path

import numpy as np

from braintune_dist.data.voxels import noise_ceiling


def whole_array_ceiling(repeats: np.ndarray) -> np.ndarray:
    """Schoppe cc_max on the whole array at once in float64 (the straightforward version)."""
    R = np.asarray(repeats, dtype=np.float64)
    n = R.shape[0]
    mu, sd = R.mean(axis=1, keepdims=True), R.std(axis=1, keepdims=True)
    R = np.where(sd > 0, (R - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    sp = (n * R.mean(axis=0).var(axis=0, ddof=1) - 1.0) / (n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cc = 1.0 / np.sqrt(1.0 + (1.0 / n) * (1.0 / sp - 1.0))
    return np.nan_to_num(np.where(sp > 0, cc, 0.0), nan=0.0)


def measure(fn, *args, **kw) -> tuple[np.ndarray, float, float]:
    """(result, peak bytes allocated during the call, seconds)."""
    tracemalloc.start()
    t = time.perf_counter()
    out = fn(*args, **kw)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, float(peak), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/ceiling.json")
    ap.add_argument("--voxels", type=int, default=95_000)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rows", type=int, default=241)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.repeats, args.rows, args.voxels)
    signal = rng.standard_normal(shape[1:], dtype=np.float32)
    R = np.empty(shape, np.float32)
    for i in range(shape[0]):                                  # built repeat by repeat: no float64 temporary
        R[i] = signal + rng.standard_normal(shape[1:], dtype=np.float32)
    gb = 1024 ** 3
    runs = []
    ref, peak, secs = measure(whole_array_ceiling, R)
    runs.append(dict(method="whole array, float64", batch=None, peak_gib=peak / gb, seconds=secs, max_abs_diff=0.0))
    for batch in (1024, 4096, 16384, args.voxels):
        cc, peak, secs = measure(noise_ceiling, R, batch=batch)
        runs.append(dict(method="noise_ceiling", batch=batch, peak_gib=peak / gb, seconds=secs,
                         max_abs_diff=float(np.abs(cc - ref).max())))
    for r in runs:
        print(f"{r['method']:22s} batch {str(r['batch']):>6s}: peak {r['peak_gib']:6.2f} GiB beyond the input, "
              f"{r['seconds']:5.2f} s, max |Δ cc_max| {r['max_abs_diff']:.1e}")
    result = dict(benchmark="ceiling", date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  machine=platform.platform(), shape=list(shape), input_gib=R.nbytes / gb, runs=runs)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
