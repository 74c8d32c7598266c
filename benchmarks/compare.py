"""Benchmark of the science: the comparison job (untuned vs brain-tuned vs control-tuned Whisper tiny.en on the
simulated dataset, replicate seeds), its headline table and per-layer curves kept as a result file.

    python benchmarks/compare.py [--tag NAME] [job overrides ...]          # run jobs/compare.py, then collect
    python benchmarks/compare.py --collect runs/reports/NAME --tag NAME   # collect an earlier run's tables

Runs ``jobs/compare.py --config jobs/configs/compare/demo.yaml`` with the given overrides (default: 3 seeds of
brain- and shuffled-tuning, one epoch each) and writes ``benchmarks/results/compare_<tag>.json``: the job's
headline rows (``summary.csv``), brain vs control (``control_contrast.csv``) and, per model group, layer and
region, the mean and SD over seeds of r / noise ceiling (``alignment.csv``). ``tables.py`` turns them into
BENCHMARKS.md's tables.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from braintune_dist.evaluate.summary import group_of  # noqa: E402

DEFAULT = ["--compare.seeds", "[0,1,2]"]


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _num(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        try:
            out[k] = float(v) if v not in ("", None) else None
        except ValueError:
            out[k] = v
    return out


def collect(folder: Path) -> dict:
    """The result record of one comparison's report folder."""
    per: dict = defaultdict(list)                     # (group, layer, region) → per-seed mean over participants
    by_model: dict = defaultdict(list)
    for r in _csv(folder / "alignment.csv"):
        if r["kind"] == "layer" and r["mean_r_norm"] not in ("", "nan"):
            by_model[(r["model"], r["layer"], r["region"])].append(float(r["mean_r_norm"]))
    for (model, layer, region), v in by_model.items():
        per[(group_of(model), int(layer), region)].append(float(np.mean(v)))
    layers = [dict(model=g, layer=lay, region=reg, mean=float(np.mean(v)), sd=float(np.std(v, ddof=1)) if len(v) > 1
                   else None, n_seeds=len(v)) for (g, lay, reg), v in sorted(per.items())]
    contrast = folder / "control_contrast.csv"
    return dict(summary=[_num(r) for r in _csv(folder / "summary.csv")],
                contrast=[_num(r) for r in _csv(contrast)] if contrast.is_file() else [], layers=layers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="demo3")
    ap.add_argument("--collect", type=Path, default=None, help="an earlier run's report folder (no run)")
    args, overrides = ap.parse_known_args()
    overrides = overrides or DEFAULT
    seconds = None
    if args.collect is None:
        name = f"bench-{args.tag}"
        cmd = [sys.executable, "jobs/compare.py", "--config", "jobs/configs/compare/demo.yaml", *overrides,
               "--compare.name", name]
        t0 = time.time()
        subprocess.run(cmd, cwd=REPO, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        seconds = time.time() - t0
        folder = REPO / "runs" / "reports" / name
    else:
        folder = args.collect
    out = REPO / "benchmarks" / "results" / f"compare_{args.tag}.json"
    record = dict(date=dt.date.today().isoformat(), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  preset="jobs/configs/compare/demo.yaml", overrides=overrides, seconds=seconds,
                  folder=str(folder), **collect(folder))
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"[bench] {out}")


if __name__ == "__main__":
    main()
