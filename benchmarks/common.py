"""Setup shared by the Whisper benchmarks: arguments, the demo-sized simulated dataset, the imported model."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.experiment.imports import ImportSettings, ensure_imported

REPO = Path(__file__).resolve().parents[1]


def whisper_bench(doc: str, name: str, extra=None) -> tuple[argparse.Namespace, Path, str]:
    """(arguments ``--out``, ``--data`` and those ``extra(parser)`` adds; the data folder; the imported tiny.en
    folder). Simulates the demo's dataset (4 participants, 8 stories, 80 TRs) into ``<data>/sim`` unless one with
    processing stages is there, and imports the bundled Whisper tiny.en into ``<data>/tiny.en`` (reused when its
    checksum matches)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / f"benchmarks/results/{name}.json"))
    ap.add_argument("--data", default="/tmp/whisperbench")
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = Path(args.data)
    meta = data / "sim" / "ground_truth" / "meta.json"
    if not meta.is_file() or "stages" not in json.loads(meta.read_text()):
        shutil.rmtree(data / "cache", ignore_errors=True)     # the feature cache is keyed by story name only
        simulate(SimConfig(participants=4, stories=8, trs_per_story=80), str(data / "sim"), overwrite=True)
    return args, data, str(ensure_imported(ImportSettings(out=str(data / "tiny.en"))))
