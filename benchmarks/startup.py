"""Start-up of every job's driver: ``jobs/<job>.py --help`` (the config classes, their docstrings, jsonargparse),
against the same ``--help`` after importing the training stack first (torch, transformers, Ray Train: what a
job's config module pulled in while the configs lived beside the code that uses torch). Both in one run, each the
median of ``--repeats`` fresh interpreters; results in ``benchmarks/results/startup.json``.

    python benchmarks/startup.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from braintune_dist.config import JOB_CONFIGS  # noqa: E402
from braintune_dist.io import write_text  # noqa: E402

HEAVY = "import braintune_dist.train.trainer, braintune_dist.evaluate.report"   # torch, transformers, Ray Train


def seconds(job: str, preload: str) -> tuple[float, bool]:
    """Wall time of one fresh interpreter running ``jobs/<job>.py --help`` after ``preload``; whether torch ended up
    imported."""
    probe = (f"{preload}\nimport runpy, sys; sys.argv = ['{job}', '--help']\n"
             f"try:\n    runpy.run_path('jobs/{job}.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('torch' in sys.modules, file=sys.stderr)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, proc.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/startup.json"))
    args = ap.parse_args()
    rows = []
    for job in sorted(JOB_CONFIGS):
        light = [seconds(job, "") for _ in range(args.repeats)]
        heavy = [seconds(job, HEAVY) for _ in range(args.repeats)]
        row = dict(job=job, help_s=round(statistics.median(s for s, _ in light), 3),
                   torch_imported=any(t for _, t in light),
                   with_training_stack_s=round(statistics.median(s for s, _ in heavy), 3))
        row["ratio"] = round(row["with_training_stack_s"] / row["help_s"], 2)
        rows.append(row)
        print(row)
    write_text(args.out, json.dumps(dict(repeats=args.repeats, python=sys.version.split()[0], jobs=rows), indent=1))


if __name__ == "__main__":
    main()
