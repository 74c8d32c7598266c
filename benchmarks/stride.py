"""Benchmark: evaluation-feature stride and pooling against alignment, Whisper tiny.en (untuned).

    python benchmarks/stride.py [--out benchmarks/results/stride_stages.json] [--data /tmp/whisperbench]
                                [--settings 2:last,2:stride,1:stride,0.1:last]

Makes its own simulated dataset (the demo's size, the stage simulator; ``--data``, shared with ``whisper.py`` and
kept for re-runs) and imports the bundled Whisper tiny.en (native input). For 8 s windows at each ``stride:pool``
of ``--settings``, with the last frame of each window (``pool: last``) or the mean of the frames of its last
stride (``pool: stride``): r / noise ceiling of the held-out participant sim04 per region (best layer by CV and
each layer), and feature seconds per second of audio. The reference is the finest ``last`` setting (0.1 s, the
papers' 10 Hz): every other setting's Δ against it per region, and its feature cost as a fraction of the
reference's. One process, 2 torch threads. (``results/stride.json`` is the earlier three-region simulator's run
of this script, with 2, 1, 0.5 and 0.25 s.)

A stride near the TR point-samples a feature that changes every ~20 ms; the Lanczos step to the TRs
(cutoff 1/TR) cannot low-pass what was never sampled, so the feature aliases. This measures how much
alignment that costs and how much of it the stride mean recovers at no extra forward passes.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from common import whisper_bench  # noqa: E402
from braintune_dist.data.lebel import DataConfig, LebelDataset  # noqa: E402
from braintune_dist.data.voxels import find_common_space  # noqa: E402
from braintune_dist.evaluate.compute import ComputeSettings  # noqa: E402
from braintune_dist.evaluate.encoding import RidgeConfig  # noqa: E402
from braintune_dist.evaluate.featurize import ModelSpec, featurize  # noqa: E402
from braintune_dist.evaluate.pipeline import encode  # noqa: E402
from braintune_dist.evaluate.summary import at_best_layer  # noqa: E402
from braintune_dist.features.config import FeatureConfig  # noqa: E402
from braintune_dist.model.config import ModelConfig  # noqa: E402

SETTINGS = "2:last,2:stride,1:stride,0.1:last"


def one(ds: LebelDataset, pretrained: str, cache: Path, stride: float, pool: str) -> dict:
    train = ds.split()["train"]
    feats = FeatureConfig(window=8.0, stride=stride, pool=pool, device="cpu", cache_dir=str(cache))
    spec = ModelSpec("m", ModelConfig(family="whisper", pretrained=pretrained, whisper_input="native"))
    compute = ComputeSettings(runner="local")
    sources, stats = featurize(ds, [spec], train + [ds.cfg.test_story], feats, compute, log=lambda *a: None)
    rows, _ = encode(ds, sources, ["sim04"], train, RidgeConfig(), find_common_space(ds.root, "", ["sim04"]),
                     compute, log=lambda *a: None)
    seconds, audio = stats.get("per_model", {}).get("m", (float("nan"), 1.0))     # NaN: all cached, not timed
    per_layer = {f"{r['layer']}/{r['region']}": r["mean_r_norm"] for r in rows
                 if r["kind"] == "layer" and r["subject"] == "sim04"}
    return {"stride": stride, "pool": pool, "best_layer": {k.split("/", 1)[1]: v for k, v in at_best_layer(rows).items()},
            "per_layer": per_layer, "feature_seconds_per_audio_second": seconds / audio, "windows": stats["windows"],
            "feature_wall_s": round(stats["seconds"], 1)}


def main() -> None:
    args, data, pretrained = whisper_bench(__doc__, "stride_stages", lambda ap: ap.add_argument(
        "--settings", default=SETTINGS, help="comma-separated stride:pool (pool last or stride)"))
    settings = [(float(s.split(":")[0]), s.split(":")[1]) for s in args.settings.split(",")]
    ds = LebelDataset(data / "sim", DataConfig(root=str(data / "sim"), val_stories=["story08"]))
    runs = []
    for stride, pool in settings:
        runs.append(one(ds, pretrained, data / "cache", stride, pool))
        b = runs[-1]["best_layer"]
        print(f"stride {stride:4.2f} s, pool {pool:6s}: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(b.items()))
              + f"; {runs[-1]['feature_seconds_per_audio_second']:.3f} s per audio s", flush=True)
    ref = min((r for r in runs if r["pool"] == "last"), key=lambda r: r["stride"], default=None)
    if ref is not None:
        for r in runs:
            r["delta_vs_reference"] = {k: v - ref["best_layer"][k] for k, v in r["best_layer"].items()}
            r["cost_vs_reference"] = r["feature_seconds_per_audio_second"] / ref["feature_seconds_per_audio_second"]
    meta = json.loads((data / "sim" / "ground_truth" / "meta.json").read_text())
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "torch": torch.__version__, "window_s": 8.0, "subject": "sim04", "simulator": "stages",
           "stages": meta.get("stages"), "reference": None if ref is None else {"stride": ref["stride"], "pool": "last"},
           "loadavg_end": os.getloadavg(), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
