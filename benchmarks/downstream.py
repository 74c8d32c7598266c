"""Benchmark of the model-side science: the downstream job (probes per layer on the espeak-ng suite, transcription,
word-pair preference) on the untuned Whisper tiny.en and every checkpoint of an earlier comparison run.

    python benchmarks/downstream.py [--tag demo3] [job overrides ...]   # run jobs/downstream.py, then collect
    python benchmarks/downstream.py --collect runs/reports/downstream-NAME --tag NAME

The checkpoints are those of ``benchmarks/compare.py --tag NAME`` (``runs/reports/bench-NAME/*/fit.json``).
Writes ``benchmarks/results/downstream_<tag>.json``: the probe headline (``downstream_summary.csv``), the levels
(``downstream_levels.csv``), the transcription table (``asr.csv``) and the preference (``preference_summary.csv``,
``preference_vs_untuned.csv``); ``tables.py`` turns them into BENCHMARKS.md's tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from compare import _csv, _num  # noqa: E402


def collect(folder: Path) -> dict:
    """The result record of one downstream report folder."""
    def rows(name: str) -> list[dict]:
        path = folder / name
        return [_num(r) for r in _csv(path)] if path.is_file() else []
    return dict(summary=rows("downstream_summary.csv"), levels=rows("downstream_levels.csv"), asr=rows("asr.csv"),
                preference=rows("preference_summary.csv"), preference_delta=rows("preference_vs_untuned.csv"),
                preference_layers=rows("preference_layers.csv"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="demo3")
    ap.add_argument("--collect", type=Path, default=None, help="an earlier run's report folder (no run)")
    args, overrides = ap.parse_known_args()
    seconds, checkpoints = None, []
    folder = args.collect or REPO / "runs" / "reports" / f"downstream-{args.tag}"
    if args.collect is None:
        fits = sorted((REPO / "runs" / "reports" / f"bench-{args.tag}").glob("*/fit.json"))
        if not fits:
            sys.exit(f"no runs/reports/bench-{args.tag}/*/fit.json: run benchmarks/compare.py --tag {args.tag} first")
        checkpoints = [json.loads(f.read_text())["checkpoint"] for f in fits]
        cmd = [sys.executable, "jobs/downstream.py", "--config", "jobs/configs/downstream/demo.yaml",
               "--checkpoints", json.dumps(checkpoints), "--out_dir", str(folder),
               "--run_name", f"downstream-{args.tag}", *overrides]
        t0 = time.time()
        subprocess.run(cmd, cwd=REPO, check=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        seconds = time.time() - t0
    out = REPO / "benchmarks" / "results" / f"downstream_{args.tag}.json"
    record = dict(date=dt.date.today().isoformat(), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  preset="jobs/configs/downstream/demo.yaml", overrides=overrides, seconds=seconds,
                  checkpoints=checkpoints, folder=str(folder), **collect(folder))
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"[bench] {out}")


if __name__ == "__main__":
    main()
