"""Benchmark: the evaluation on Ray (feature actor pool, ridge tasks) and a cost model of the full ds003020 run.

    python benchmarks/evaluate.py [--out benchmarks/results/evaluate.json] [--data /tmp/evalbench]

Makes its own simulated dataset (``--data``, kept for re-runs). All ratios come from one run.

(a) feature windows/s: the Ray Data actor pool (1 and 2 actors of 1 CPU) against a plain batched forward
    loop in this process with one torch thread, same model (the demo's tiny wav2vec2), same windows;
    per-worker efficiency = pool rate / (actors × plain rate). Both rates count the whole call: model
    builds in both, actor start-up and the cache-key tasks in the pool's. In-actor efficiency = plain
    seconds / the seconds the actors spent on their units (the steady state of a long run).
(b) evaluation wall time (features + every ridge fit + data-efficiency refits) with 1 and with 2 workers.
(c) a cost model of the full evaluation (8 participants, 84 training stories ≈ 6 h of audio, 16.1 s windows
    every 0.1 s, 13 hidden states, 80 k voxels, p = 768 × 4 delays, 2 checkpoints): the base model's
    per-window cost measured here on CPU, ridge costs from ``results/ridge.json`` (CPU tier M measured on
    this machine type, GPU tier L measured on an H100), scaled to the full problem, on N workers.
(d) the effect of bfloat16 inference on r: the same evaluation with features from a bfloat16 backbone
    (``features.dtype``), in this process; per-voxel |Δr| and Δ of the region means.

``--parts a,b,c,d`` runs a subset; results are merged into the output file.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")     # Ray on loopback only
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from braintune_dist.data.lebel import DataConfig, LebelDataset  # noqa: E402
from braintune_dist.data.simulate import SimConfig, simulate  # noqa: E402
from braintune_dist.data.voxels import find_common_space  # noqa: E402
from braintune_dist.evaluate.compute import ComputeSettings  # noqa: E402
from braintune_dist.evaluate.encoding import RidgeConfig  # noqa: E402
from braintune_dist.evaluate.featurize import ModelSpec, featurize  # noqa: E402
from braintune_dist.evaluate.pipeline import encode  # noqa: E402
from braintune_dist.features.extract import FeatureExtractor  # noqa: E402
from braintune_dist.features.config import FeatureConfig
from braintune_dist.model.backbone import build_backbone  # noqa: E402
from braintune_dist.model.config import ModelConfig

FEATURES = FeatureConfig(window=8.0, stride=0.5, device="cpu")          # the demo's evaluation features
MODELS = [ModelSpec("untuned", ModelConfig()), ModelSpec("seed1", ModelConfig(seed=1))]
FULL = dict(participants=8, stories=84, audio_hours=6.0, stride_s=0.1, window_s=16.1, layers=13, voxels=80_000,
            checkpoints=2, hidden=768, delays=4, n_train_rows=10_800)


def plain_rate(ds: LebelDataset, stories: list[str]) -> dict:
    """Windows/s of FeatureExtractor.story_windows in this process, one torch thread, both models."""
    torch.set_num_threads(1)
    t0, n = time.perf_counter(), 0
    for spec in MODELS:
        fx = FeatureExtractor(spec.load(), FEATURES)
        for s in stories:
            n += len(fx.story_windows(ds.load_audio(s))[0])
    sec = time.perf_counter() - t0
    return dict(windows=n, seconds=round(sec, 2), windows_s=round(n / sec, 1))


def pool_rate(ds: LebelDataset, stories: list[str], actors: int, cache: Path) -> dict:
    """Windows/s of featurize's actor pool (``actors`` actors of 1 CPU), fresh cache."""
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    t0 = time.perf_counter()
    _, stats = featurize(ds, MODELS, stories, dataclasses.replace(FEATURES, cache_dir=str(cache)),
                         ComputeSettings(runner="ray", feature_workers=actors, feature_cpus=1.0),
                         log=lambda line: rows.append((time.perf_counter() - t0, line)))
    sec = time.perf_counter() - t0
    return dict(actors=actors, windows=stats["windows"], seconds=round(sec, 2),
                windows_s=round(stats["windows"] / sec, 1), feature_seconds=round(stats["seconds"], 2),
                unit_seconds=round(stats["unit_seconds"], 2))


def evaluation_time(ds: LebelDataset, workers: int, cache: Path) -> dict:
    """Wall time of featurize + encode (every layer, both participants, data-efficiency refits)."""
    shutil.rmtree(cache, ignore_errors=True)
    train = ds.split()["train"]
    compute = ComputeSettings(runner="ray", feature_workers=workers, feature_cpus=2.0 / workers,
                              ridge_cpus=2.0 / workers)
    t0 = time.perf_counter()
    sources, _ = featurize(ds, MODELS, train + [ds.cfg.test_story], dataclasses.replace(FEATURES, cache_dir=str(cache)),
                           compute, log=lambda *a: None)
    t1 = time.perf_counter()
    rows, _ = encode(ds, sources, ds.participants(), train, RidgeConfig(), find_common_space(ds.root, "", ds.participants()),
                     compute, efficiency=[1, 2, 4], log=lambda *a: None)
    t2 = time.perf_counter()
    return dict(workers=workers, features_s=round(t1 - t0, 2), ridge_s=round(t2 - t1, 2), total_s=round(t2 - t0, 2),
                fits=sum(1 for r in rows if r["region"] == "all"))


def base_window_cost(n_windows: int = 8, batch: int = 4) -> dict:
    """Seconds per 16.1 s window of a random-init base wav2vec2 (95 M parameters), batched, on this CPU."""
    torch.set_num_threads(os.cpu_count() or 1)
    bb = build_backbone(ModelConfig(size="base")).eval()
    wav = torch.randn(batch, int(FULL["window_s"] * 16_000))
    with torch.no_grad():
        bb(wav[:1])                                                     # warm-up
        t0 = time.perf_counter()
        for _ in range(n_windows // batch):
            bb(wav)
    sec = (time.perf_counter() - t0) / n_windows
    return dict(model="wav2vec2 base (random init)", threads=torch.get_num_threads(), batch=batch,
                s_per_window=round(sec, 4))


def cost_model(window_s_cpu: float, ridge: list[dict]) -> dict:
    """Predicted wall time of the full evaluation on N workers from measured unit costs."""
    f = FULL
    windows = f["audio_hours"] * 3600 / f["stride_s"] * f["checkpoints"]            # all layers in one forward
    fits = f["participants"] * f["layers"] * f["checkpoints"]
    tier = {(r["tier"], r["backend"]): r for r in ridge}
    # ridge cost grows ~linearly with voxels, folds (leave-one-story-out: one per training story) and rows
    scale_rows, folds = f["n_train_rows"] / 9000, f["stories"]
    cpu = tier.get(("M", "numpy"))
    gpu = tier.get(("L", "cupy"))
    out = dict(sizes=f, windows=int(windows), ridge_fits=fits,
               assumptions="ridge time ∝ voxels × folds × rows from the benchmarked tier; 84 leave-one-story-out "
                           "folds; features: every layer from one forward per window")
    if cpu:
        per_fit = cpu["ours_s"] * (f["voxels"] / cpu["v"]) * (folds / cpu["folds"]) * scale_rows
        out["cpu"] = dict(s_per_window=window_s_cpu, ridge_s_per_fit=round(per_fit, 1), source_ridge=f"tier M {cpu['date']}")
        out["cpu"]["predicted_h"] = {n: round((windows * window_s_cpu + fits * per_fit) / n / 3600, 1)
                                     for n in (1, 8, 64)}
    if gpu:
        per_fit = gpu["ours_s"] / gpu["layers"] * (folds / gpu["folds"]) * scale_rows
        # no GPU feature rate was measured: forward-only from the measured H100 training rate
        # (base, bf16, 10 s windows, fwd+bwd ≈ 3 forwards), scaled to 16.1 s windows
        train = json.loads((REPO / "benchmarks/results/train_throughput_cuda.json").read_text())["runs"][0]
        fwd_rate = train["plain"]["samples_s"] * 3 * 10.0 / f["window_s"]
        out["gpu"] = dict(device=gpu["device"], ridge_s_per_fit=round(per_fit, 1), source_ridge=f"tier L {gpu['date']}",
                          windows_s_derived=round(fwd_rate, 0),
                          windows_note="derived from the measured bf16 training rate, not measured on features")
        out["gpu"]["predicted_min"] = {n: round((windows / fwd_rate + fits * per_fit) / n / 60, 1) for n in (1, 8)}
    return out


def precision_effect(ds: LebelDataset, work: Path) -> dict:
    """r with float32 vs bfloat16 backbone features (runner local: the numerics, not the scheduling)."""
    train, local = ds.split()["train"], ComputeSettings(runner="local")
    space = find_common_space(ds.root, "", ds.participants())
    r, means = {}, {}
    for dtype in ("float32", "bfloat16"):
        fc = dataclasses.replace(FEATURES, dtype=dtype, cache_dir=str(work / f"prec-{dtype}"))
        sources, _ = featurize(ds, MODELS[:1], train + [ds.cfg.test_story], fc, local, log=lambda *a: None)
        rows, scores = encode(ds, sources, ds.participants(), train, RidgeConfig(), space, local, log=lambda *a: None)
        vs = scores[MODELS[0].label]
        r[dtype] = {(s, lay): v.r[lay] for s, v in vs.items() for lay in v.r}
        means[dtype] = {f"{x['subject']}/{x['layer']}/{x['region']}": x["mean_r"] for x in rows}
    dr = [abs(r["bfloat16"][k] - r["float32"][k]).max() for k in r["float32"]]
    dm = [abs(means["bfloat16"][k] - means["float32"][k]) for k in means["float32"]]
    return dict(max_abs_dr_voxel=float(max(dr)), max_abs_d_mean_r=float(max(dm)),
                mean_abs_d_mean_r=float(sum(dm) / len(dm)), device="cpu (bfloat16 matmuls on CPU)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/evaluate.json"))
    ap.add_argument("--data", default=str(Path(tempfile.gettempdir()) / "evalbench"))
    ap.add_argument("--parts", default="a,b,c,d")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    root = Path(args.data)
    if not (root / "derivative").is_dir():
        simulate(SimConfig(participants=2, stories=6, trs_per_story=80, n_vertices=400, seed=2), str(root))
    ds = LebelDataset(root, DataConfig(root=str(root)))
    stories = ds.split()["train"] + [ds.cfg.test_story]
    work = Path(tempfile.mkdtemp(prefix="evalbench-cache-"))
    out = Path(args.out)
    res: dict = json.loads(out.read_text()) if out.is_file() else {}
    res.update(date=dt.datetime.now().isoformat(timespec="seconds"), parts=sorted(parts),
               machine=dict(cpus=os.cpu_count(), platform=platform.platform(), loadavg_start=os.getloadavg()),
               features=dict(window=FEATURES.window, stride=FEATURES.stride, model="tiny wav2vec2", models=2,
                             stories=len(stories)))
    if parts & {"a", "b"}:
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    if "a" in parts:
        res["plain"] = plain_rate(ds, stories)
        res["pool"] = [pool_rate(ds, stories, n, work / f"pool{n}") for n in (1, 2)]
        for p in res["pool"]:
            p["per_worker_efficiency"] = round(p["windows_s"] / (p["actors"] * res["plain"]["windows_s"]), 3)
            # the same work inside the actors only (no process start, imports, model builds, scheduling)
            p["in_actor_efficiency"] = round(res["plain"]["seconds"] / p["unit_seconds"], 3)
    if "b" in parts:
        res["evaluation"] = [evaluation_time(ds, n, work / f"eval{n}") for n in (1, 2)]
        res["evaluation_speedup_2_vs_1"] = round(res["evaluation"][0]["total_s"] / res["evaluation"][1]["total_s"], 2)
    if parts & {"a", "b"}:
        ray.shutdown()
    if "c" in parts:
        res["base_window"] = base_window_cost()
        ridge = json.loads((REPO / "benchmarks/results/ridge.json").read_text())
        res["cost_model"] = cost_model(res["base_window"]["s_per_window"], ridge)
    if "d" in parts:
        res["bfloat16"] = precision_effect(ds, work)
    res["machine"]["loadavg_end"] = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
