#!/usr/bin/env python
"""The leave-one-story-out tier of the ridge benchmark: ds003020's story count scaled to this machine.

84 stories × 60 rows (n 5,040), p 1,536 (a 384-wide layer × 4 delays), v 1,000 voxels, float32, 10 alphas
logspace(0, 6, 10), one split per story. In one run, on the same data: braintune_dist's RidgeCV with the CV errors
from one decomposition of all rows (``block_cv="auto"``, what the evaluation uses), the same with one decomposition
per split (``block_cv=False``, the path it replaces), and himalaya's RidgeCV (numpy backend) with the same splits.
Reported: seconds, speedups, agreement of the chosen alphas and max |Δ| of the CV scores and test r.

    python benchmarks/ridge_loso.py [--stories 84] [--rows 60] [--p 1536] [--v 1000] [--reps 2]
Results in benchmarks/results/ridge_loso.json.
"""
import argparse
import datetime
import json
import os
import sys
import time
import warnings

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from braintune_dist.io import write_text  # noqa: E402
from braintune_dist.ridge import RidgeCV, correlation_score  # noqa: E402


def data(stories, rows, p, v, n_test=300, seed=0):
    """Correlated float32 features, planted weights with a spread of SNRs (so the chosen alphas vary)."""
    rng = np.random.default_rng(seed)
    n = stories * rows
    X = (rng.standard_normal((n + n_test, p)) * (1 + np.arange(p)) ** -0.3).astype(np.float32)
    signal = X @ (rng.standard_normal((p, v)) / np.sqrt(p)).astype(np.float32)
    snr = (10 ** rng.uniform(-2, 0.5, v)).astype(np.float32)
    Y = np.sqrt(snr) * signal / signal.std(0) + rng.standard_normal((n + n_test, v)).astype(np.float32)
    cuts = np.arange(0, n + 1, rows)
    splits = [(np.r_[0:a, b:n], np.arange(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]
    return X[:n], Y[:n], X[n:], Y[n:], splits


def timed(fit, reps):
    times, model = [], None
    for _ in range(reps):
        t = time.perf_counter()
        model = fit()
        times.append(time.perf_counter() - t)
    return min(times), [round(s, 2) for s in times], model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=84)
    ap.add_argument("--rows", type=int, default=60)
    ap.add_argument("--p", type=int, default=1536)
    ap.add_argument("--v", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2, help="repetitions of the fast path (the slow ones run once)")
    ap.add_argument("--no-himalaya", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "ridge_loso.json"))
    a = ap.parse_args()
    X, Y, Xt, Yt, splits = data(a.stories, a.rows, a.p, a.v)
    alphas = np.logspace(0, 6, 10)
    res = dict(date=datetime.date.today().isoformat(), stories=a.stories, rows=a.rows, p=a.p, v=a.v,
               n_alphas=len(alphas), dtype="float32", cpus=os.cpu_count())
    fast_s, fast_all, fast = timed(lambda: RidgeCV(alphas, cv=splits, backend="numpy").fit(X, Y), a.reps)
    print(f"block leave-out: {fast_all} s", flush=True)
    slow_s, _, slow = timed(lambda: RidgeCV(alphas, cv=splits, backend="numpy", block_cv=False).fit(X, Y), 1)
    print(f"one decomposition per split: {slow_s:.1f} s", flush=True)
    r_fast, r_slow = fast.score(Xt, Yt), slow.score(Xt, Yt)
    res.update(block_s=round(fast_s, 2), block_all_s=fast_all, per_split_s=round(slow_s, 2),
               speedup_vs_per_split=round(slow_s / fast_s, 1),
               alphas_equal_per_split=float(np.mean(fast.best_alphas_ == slow.best_alphas_)),
               max_rel_cv_score_diff=float(np.max(np.abs(fast.cv_scores_ - slow.cv_scores_)
                                                  / np.abs(slow.cv_scores_))),
               max_abs_dr_per_split=float(np.abs(r_fast - r_slow).max()))
    if not a.no_himalaya:
        from himalaya.backend import set_backend
        from himalaya.ridge import RidgeCV as HimalayaRidgeCV
        set_backend("numpy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            him_s, _, him = timed(lambda: HimalayaRidgeCV(alphas=alphas.astype(np.float32), cv=splits).fit(X, Y), 1)
        print(f"himalaya: {him_s:.1f} s", flush=True)
        r_him = np.asarray(correlation_score(Yt, np.asarray(him.predict(Xt))))
        res.update(himalaya_s=round(him_s, 2), speedup_vs_himalaya=round(him_s / fast_s, 1),
                   alphas_equal_himalaya=float(np.mean(np.isclose(fast.best_alphas_,
                                                                  np.asarray(him.best_alphas_, np.float64),
                                                                  rtol=1e-4))),
                   max_abs_dr_himalaya=float(np.abs(r_fast - r_him).max()))
    print(json.dumps(res))
    write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
