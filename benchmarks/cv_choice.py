#!/usr/bin/env python
"""Which cross-validation the voxel-wise ridge needs: leave one story out against cheaper choices, on the simulator.

A simulated dataset with ds003020's story count (84 training stories + the test story; ``--trs`` TRs each), the
oracle's four stage features as the layers (``data/simulate/oracle.py``: each region's own stage is its best layer),
every participant's voxels. For each layer and participant one ridge per CV choice, the same alpha grid as the
evaluation (``RidgeConfig().alphas``):

* ``loso``: leave one story out (the evaluation's default, block leave-out);
* ``folds5``: 5 folds of whole consecutive stories (block leave-out where it pays);
* ``boot3``: the papers' chunked bootstrap, 3 resamples × 25 % held out in 20-TR chunks (one decomposition each).

Reported per choice, against ``loso``: the share of voxels with the same chosen alpha, the mean and largest |Δr|
on the test story, the change of the mean r / noise ceiling (ceiling > 0.4), and the ridge seconds. One run;
results in benchmarks/results/cv_choice.json.

    python benchmarks/cv_choice.py [--stories 84] [--trs 40] [--participants 2]
"""
import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from braintune_dist.data.lebel import DataConfig, LebelDataset  # noqa: E402
from braintune_dist.data.simulate import SimConfig, simulate  # noqa: E402
from braintune_dist.data.simulate.brain import STAGES  # noqa: E402
from braintune_dist.data.simulate.oracle import OracleFeatures  # noqa: E402
from braintune_dist.data.voxels import find_common_space, normalised_alignment  # noqa: E402
from braintune_dist.evaluate.encoding import RidgeConfig, fit_layer, load_participant  # noqa: E402
from braintune_dist.io import write_text  # noqa: E402

CHOICES = {"loso": RidgeConfig(backend="numpy"), "folds5": RidgeConfig(backend="numpy", cv=5),
           "boot3": RidgeConfig(backend="numpy", bootstraps=3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=84)
    ap.add_argument("--trs", type=int, default=40)
    ap.add_argument("--participants", type=int, default=2)
    ap.add_argument("--root", default="/tmp/cv_choice_sim")
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "cv_choice.json"))
    a = ap.parse_args()
    t = time.time()
    simulate(SimConfig(participants=a.participants, stories=a.stories, trs_per_story=a.trs, seed=7), a.root,
             overwrite=True)
    ds = LebelDataset(a.root, DataConfig(root=a.root, val_stories=[]))
    train, test = ds.split()["train"], ds.cfg.test_story
    print(f"simulated {len(train)} training stories in {time.time() - t:.0f} s", flush=True)
    oracle = OracleFeatures(ds)
    X = {s: oracle.story_features(ds, s) for s in train + [test]}          # story → layer → (n_rows, d · delays)
    space = find_common_space(ds.root, "", ds.participants())
    fits = {c: {} for c in CHOICES}                                        # choice → (participant, layer) → fit
    seconds = {c: 0.0 for c in CHOICES}
    cc = {}
    for who in ds.participants():
        sub = load_participant(ds, who, train, space)
        cc[who] = sub.cc_max
        for layer in oracle.layers:
            Xl = {s: X[s][layer] for s in X}
            for name, cfg in CHOICES.items():
                t = time.perf_counter()
                fits[name][who, layer] = fit_layer(Xl, sub, train, test, cfg)
                seconds[name] += time.perf_counter() - t
    res = dict(date=datetime.date.today().isoformat(), stories=len(train), trs=a.trs, rows=sum(len(x[0]) for x in
               (X[s] for s in train)), participants=len(cc), voxels=int(sum(c.size for c in cc.values())),
               layers=list(STAGES), choices={})
    for name in CHOICES:
        same, dr, dnorm = [], [], []
        for (who, layer), f in fits[name].items():
            ref = fits["loso"][who, layer]
            same.append(f.alphas == ref.alphas)
            dr.append(np.abs(f.r - ref.r))
            dnorm.append(np.nanmean(normalised_alignment(f.r, cc[who], 0.4))
                         - np.nanmean(normalised_alignment(ref.r, cc[who], 0.4)))
        same, dr = np.concatenate(same), np.concatenate(dr)
        res["choices"][name] = dict(seconds=round(seconds[name], 2), same_alpha=float(same.mean()),
                                    mean_abs_dr=float(np.nanmean(dr)), max_abs_dr=float(np.nanmax(dr)),
                                    mean_r_norm_change=float(np.mean(dnorm)),
                                    max_abs_r_norm_change=float(np.max(np.abs(dnorm))))
        print(name, res["choices"][name], flush=True)
    write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
