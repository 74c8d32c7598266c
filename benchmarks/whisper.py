"""Benchmark: Whisper tiny.en input length, padded to 30 s vs the window's own length ("native").

    python benchmarks/whisper.py [--out benchmarks/results/whisper.json] [--data /tmp/whisperbench]

Makes its own simulated dataset (the demo's size; ``--data``, kept for re-runs) and imports the bundled
Whisper tiny.en. All ratios come from one run, in this process (no Ray), 2 torch threads:

(a) speed: one forward pass of a batch of 8 windows (8 s: the demo's evaluation window; 10 s: its training
    window; 16.1 s: the papers' evaluation window), and one LoRA train step (forward + backward + AdamW) of
    a batch of 8 10 s windows, padded vs native;
(b) alignment: the untuned encoder's r / noise ceiling per region for the held-out participant sim04
    (best layer by CV), features padded vs native, and the feature seconds per second of audio.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
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
from braintune_dist.model.backbone import build_backbone  # noqa: E402
from braintune_dist.model.config import ModelConfig
from braintune_dist.model.tuner import BrainTuner  # noqa: E402
from braintune_dist.model.config import HeadSettings, LoraSettings

MODES = ("padded", "native")


def timed(fn, reps: int = 3) -> float:
    fn()                                                     # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def speed(pretrained: str) -> dict:
    out = {}
    for mode in MODES:
        cfg = ModelConfig(family="whisper", pretrained=pretrained, whisper_input=mode)
        bb = build_backbone(cfg).eval()
        for sec in (8.0, 10.0, 16.1):
            wav = torch.randn(8, int(sec * 16000)) * 0.1
            with torch.no_grad():
                out[f"forward_{sec:g}s_{mode}"] = timed(lambda: bb(wav))
        tuner = BrainTuner(cfg, LoraSettings(rank=8), HeadSettings(), n_vertices=600).train()
        opt = torch.optim.AdamW([p for p in tuner.parameters() if p.requires_grad], lr=1e-4)
        wav, y = torch.randn(8, 160_000) * 0.1, torch.randn(8, 600)

        def step():
            opt.zero_grad()
            torch.nn.functional.mse_loss(tuner(wav), y).backward()
            opt.step()
        out[f"train_step_10s_{mode}"] = timed(step, reps=2)
    return out


def alignment(pretrained: str, data: Path) -> dict:
    ds = LebelDataset(data / "sim", DataConfig(root=str(data / "sim"), val_stories=["story08"]))
    train = ds.split()["train"]
    feats = FeatureConfig(window=8.0, stride=2.0, device="cpu", cache_dir=str(data / "cache"))
    specs = [ModelSpec(m, ModelConfig(family="whisper", pretrained=pretrained, whisper_input=m)) for m in MODES]
    compute = ComputeSettings(runner="local")
    sources, stats = featurize(ds, specs, train + [ds.cfg.test_story], feats, compute, log=print)
    space = find_common_space(ds.root, "", ["sim04"])
    rows, _ = encode(ds, sources, ["sim04"], train, RidgeConfig(), space, compute, log=print)
    per = stats.get("per_model", {})
    return {"r_norm_best_layer": at_best_layer(rows),
            "feature_seconds_per_audio_second": {m: s / a for m, (s, a) in per.items()},
            "features": "8 s windows every 2 s (the demo's), one process, 2 torch threads"}


def main() -> None:
    args, data, pretrained = whisper_bench(__doc__, "whisper")
    res = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
           "torch": torch.__version__, "speed_seconds": speed(pretrained)}
    s = res["speed_seconds"]
    res["speedup_native"] = {k.replace("_native", ""): s[k.replace("native", "padded")] / s[k]
                             for k in s if k.endswith("native")}
    res["alignment"] = alignment(pretrained, data)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
