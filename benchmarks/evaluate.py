"""Benchmark: the evaluation on Ray (feature actor pool, ridge tasks) and a cost model of the full ds003020 run.

    python benchmarks/evaluate.py [--out benchmarks/results/evaluate.json] [--data /tmp/evalbench]

Makes its own simulated dataset (``--data``, kept for re-runs). All ratios come from one run.

(a) feature windows/s: the Ray Data actor pool (1 and 2 actors of 1 CPU) against a plain batched forward
    loop in this process with one torch thread, same model (the demo's tiny wav2vec2), same windows;
    per-worker efficiency = pool rate / (actors × plain rate). Both rates count the whole call: model
    builds in both, actor start-up and the cache-key tasks in the pool's. In-actor efficiency = plain
    seconds / the seconds the actors spent on their units (the steady state of a long run).
(b) evaluation wall time (features + every ridge fit + data-efficiency refits) with 1 and with 2 workers.
(c) the cost model, checked: unit costs measured here in this run (seconds per window of the feature actor's
    ``story_windows``, 1 thread; this CPU's float32/float64 GEMM rates and one eigh, 1 thread; one ridge task's
    ``fit_layer`` at a small shape, whose ratio to its operation-count floor scales every other shape; a base
    wav2vec2 16.1 s window, 2 threads), ``predict`` of one evaluation from them, that evaluation run end to end
    as ``jobs/evaluate.py`` in a subprocess (Ray, actor pool, ridge tasks; its own simulated dataset
    ``--e2e-*``, Whisper tiny.en) with its measured wall time, and the predictions of the full ds003020
    evaluation (the paper preset's, and the earlier model's size) on CPU workers and one H100 (the H100's
    GEMM rates and window rate are derived from earlier measurements, not measured here).
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
from braintune_dist.features.extract import FeatureExtractor, window_ends  # noqa: E402
from braintune_dist.features.config import FeatureConfig
from braintune_dist.model.backbone import build_backbone  # noqa: E402
from braintune_dist.model.config import ModelConfig

FEATURES = FeatureConfig(window=8.0, stride=0.5, device="cpu")          # the demo's evaluation features
MODELS = [ModelSpec("untuned", ModelConfig()), ModelSpec("seed1", ModelConfig(seed=1))]
PAPER_WINDOW = 16.1                                                     # the papers' evaluation window (s)


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


# --------------------------------------------------------------------------- (c) the cost model, checked end to end
ALPHAS = len(RidgeConfig().alphas)
# The H100's rates, measured once (BENCHMARKS § voxel-wise ridge, "GPU per layer", 2026-11-23): float32 and float64
# GEMM, one float64 eigh at p = 3072. Host → device copy of the responses: assumed (pageable copies), not measured.
H100 = dict(device="NVIDIA H100 80GB HBM3", f32=44.7e12, f64=55.4e12, eigh_s=0.067, eigh_m=3072, h2d=10e9)
# ds003020 (LeBel et al. 2023): UTS01-03 heard 84 stories (≈ 6 h), UTS04-08 27 of them. Rows of a story after the
# trims ≈ 10,800 / 84; the test story wheretheressmoke: 241 evaluation rows, ~600 s of audio.
DS = dict(story_rows=10_800 / 84, story_audio_s=6 * 3600 / 84, test_rows=241, test_audio_s=600, voxels=80_000)
SCENARIOS = {
    # what compare/paper_hubert.yaml's evaluation runs: untuned + 2 targets × 3 seeds, held-out UTS04-08 on the
    # 25 stories they all heard (27 minus test and validation), eval.features.layers (7), its efficiency refits
    "paper": dict(models=7, participants=5, stories=25, layers=7, hidden=768, efficiency=[2, 3, 5, 10, 15, 20, 24]),
    # the earlier model's size (an upper bound no job runs: UTS04-08 heard 27 stories, not 84)
    "earlier": dict(models=2, participants=8, stories=84, layers=13, hidden=768, efficiency=[]),
}


def ridge_ops(n: int, p: int, v: int, blocks: list[int], alphas: int = ALPHAS, n_test: int = 0) -> dict:
    """Operation count of one ``fit_layer`` on the block leave-out path (``ridge/blocks.py``): fit, refit, predict.

    f32: C = AᵀY once and A·Z per alpha (2 n m v each), the refit's XᵀY (feature space) or W·C (kernel), the test
    prediction; f64: per block and alpha the (I − H_bb)⁻¹ product with the residuals, the H_bb and their inverses,
    the Gram and A = XV (feature space) or XᵀU (kernel), the Cholesky refit (one factor per alpha, 2 p² v of solves);
    eigh: one (m, m) float64 eigendecomposition, m = min(n, p).
    """
    m, kernel = min(n, p), p > n
    sb2, sb3 = sum(b * b for b in blocks), sum(b ** 3 for b in blocks)
    f32 = 2 * n * m * v * (alphas + 1) + (2 * p * m * v if kernel else 2 * n * p * v) + 2 * n_test * p * v
    f64 = alphas * 2 * v * sb2 + alphas * (2 * m * sb2 + sb3)
    f64 += (n * n * p + 2 * p * n * n) if kernel else (n * p * p + 2 * n * p * p + 2 * p * p * v + alphas * p ** 3 / 3)
    return dict(f32=float(f32), f64=float(f64), m=m, bytes=4.0 * n * v)


def ridge_seconds(ops: dict, rates: dict) -> float:
    """Floor time of ``ops`` at ``rates``: GEMM rates, eigh scaled as m³, the responses' host → device copy (GPU)."""
    return (ops["f32"] / rates["f32"] + ops["f64"] / rates["f64"] + rates["eigh_s"] * (ops["m"] / rates["eigh_m"]) ** 3
            + ops["bytes"] / rates.get("h2d", float("inf")))


def predict(units: dict, work: dict) -> dict:
    """Predicted wall time of one evaluation: windows × s per window / feature workers + Σ fits of (ridge floor of
    the fit's shape × the measured floor-to-wall ratio) / ridge workers. Nothing else (Ray and actor start-up, the
    Lanczos alignment and z-scoring tasks, the report) is in it."""
    features = work["windows"] * units["s_per_window"] / work["feature_workers"]
    ridge = sum(k * ridge_seconds(ridge_ops(**shape), units["rates"]) for k, shape in work["fits"])
    ridge *= units["ridge_scale"] / work["ridge_workers"]
    return dict(features_s=round(features, 1), ridge_s=round(ridge, 1), total_s=round(features + ridge, 1))


def work_of(models: int, train: list[tuple[int, float]], test: tuple[int, float], voxels: list[int], layers: int,
            p: int, stride: float, efficiency: list[int], feature_workers: int, ridge_workers: int) -> dict:
    """The work of one evaluation: ``train`` (rows, audio seconds) per training story, ``test`` likewise; one fit per
    (model, participant, layer) on every training story, one refit per (model, participant, n) of ``efficiency``."""
    windows = models * sum(int(a / stride) for _, a in train + [test])
    rows = [r for r, _ in train]
    fits = [(models * layers, dict(n=sum(rows), p=p, v=v, blocks=rows, n_test=test[0])) for v in voxels]
    fits += [(models, dict(n=sum(rows[:k]), p=p, v=v, blocks=rows[:k], n_test=test[0]))
             for v in voxels for k in (min(n, len(rows)) for n in efficiency)]
    return dict(windows=windows, fits=fits, feature_workers=feature_workers, ridge_workers=ridge_workers)


def gemm_rates(threads: int = 1) -> dict:
    """This CPU's float32 / float64 GEMM rate and one float64 eigh (the backend's) at ``threads`` BLAS threads."""
    from threadpoolctl import threadpool_limits
    from braintune_dist.ridge.backend import get_backend
    import numpy as np
    be, rng, out = get_backend("numpy"), np.random.default_rng(0), {}
    with threadpool_limits(threads):
        for dtype in ("float32", "float64"):
            a = rng.standard_normal((2048, 2048)).astype(dtype)
            a @ a
            t0 = time.perf_counter()
            for _ in range(3):
                a @ a
            out[dtype.replace("float", "f")] = 3 * 2 * 2048 ** 3 / (time.perf_counter() - t0)
        x = rng.standard_normal((3000, 1536))
        g = x.T @ x
        t0 = time.perf_counter()
        be.eigh(g.copy(), overwrite=True)
        out.update(eigh_s=time.perf_counter() - t0, eigh_m=1536, threads=threads)
    return out


def ridge_unit(stories: int, rows: int, p: int, v: int, n_test: int, threads: int = 1) -> dict:
    """Wall time of one ``fit_layer`` (what a ridge task runs) on synthetic data of this shape, ``threads`` BLAS."""
    import numpy as np
    from threadpoolctl import threadpool_limits
    from braintune_dist.evaluate.encoding import ParticipantData, fit_layer
    rng = np.random.default_rng(0)
    names = [f"s{i:02d}" for i in range(stories)]
    X = {s: rng.standard_normal((rows, p)).astype(np.float32) for s in names + ["test"]}
    X["test"] = X["test"][:n_test]
    W = (rng.standard_normal((p, v)) / np.sqrt(p)).astype(np.float32)
    Y = {s: (X[s] @ W * 0.3 + rng.standard_normal((len(X[s]), v))).astype(np.float32) for s in X}
    sub = ParticipantData("u", {s: Y[s] for s in names}, Y["test"], np.ones(v), np.full(v, "all"))
    with threadpool_limits(threads):
        t0 = time.perf_counter()
        fit_layer(X, sub, names, "test", RidgeConfig())
        sec = time.perf_counter() - t0
    return dict(stories=stories, rows=rows, p=p, v=v, n_test=n_test, threads=threads, seconds=round(sec, 2))


def window_unit(spec: ModelSpec, feats: FeatureConfig, wav, threads: int) -> dict:
    """Seconds per window of ``FeatureExtractor.story_windows`` (what a feature actor runs) on one story's audio."""
    torch.set_num_threads(threads)
    fx = FeatureExtractor(spec.load(), feats)
    t0 = time.perf_counter()
    n = len(fx.story_windows(wav)[0])
    sec = time.perf_counter() - t0
    return dict(windows=n, seconds=round(sec, 2), s_per_window=round(sec / n, 4), threads=threads,
                batch=feats.batch_size, window_s=feats.window, stride=feats.stride, pool=feats.pool)


def base_window_cost(n_windows: int = 8, batch: int = 4, threads: int = 2) -> dict:
    """Seconds per 16.1 s window of a random-init base wav2vec2 (95 M parameters, HuBERT-base's shape), batched."""
    torch.set_num_threads(threads)
    bb = build_backbone(ModelConfig(size="base")).eval()
    wav = torch.randn(batch, int(PAPER_WINDOW * 16_000))
    with torch.no_grad():
        bb(wav[:1])                                                     # warm-up
        t0 = time.perf_counter()
        for _ in range(n_windows // batch):
            bb(wav)
    sec = (time.perf_counter() - t0) / n_windows
    return dict(model="wav2vec2 base (random init)", threads=threads, batch=batch, s_per_window=round(sec, 4))


def run_job(args: list[str], log_path: Path) -> dict:
    """``jobs/evaluate.py args`` in a subprocess; wall time, and the stage times read from its log lines."""
    import re
    import subprocess
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    lines = []
    with subprocess.Popen([sys.executable, str(REPO / "jobs/evaluate.py"), *args], cwd=str(REPO), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append((round(time.perf_counter() - t0, 2), line.rstrip()))
    wall = time.perf_counter() - t0
    log_path.write_text("".join(f"{s:8.2f} {line}\n" for s, line in lines))
    if proc.returncode:
        raise RuntimeError(f"jobs/evaluate.py exited {proc.returncode}; log {log_path}")
    first = lambda pat: next((s for s, line in lines if re.search(pat, line)), None)   # noqa: E731
    feat = next((float(m[1]) for _, line in lines if (m := re.search(r"\[features\] (\d+) s; worker", line))), None)
    ridge = next((float(m[1]) for _, line in lines if (m := re.search(r"\[ridge\] \d+ fits in (\d+) s", line))), None)
    # timestamps (s from the start) of: the feature stage's first line, its last, the ridge stage's last line
    marks = dict(features_start=first(r"\[features\] \d+ \(model, story\) units"),
                 features_end=first(r"\[features\] \d+ s; worker"), ridge_end=first(r"\[ridge\] \d+ fits in"))
    return dict(wall_s=round(wall, 1), features_s=feat, ridge_s=ridge, marks=marks)


def cost_check(root: Path, sim: dict, e2e: dict, pretrained: str, checkpoints: list[str], work_dir: Path) -> dict:
    """Unit costs on this machine, the prediction for one end-to-end evaluation, the evaluation itself
    (``jobs/evaluate.py``: Ray, actor pool, ridge tasks), and the full-size predictions; one run."""
    import numpy as np
    if not (root / "derivative").is_dir():
        t0 = time.perf_counter()
        simulate(SimConfig(**sim), str(root))
        print(f"simulated {sim} in {time.perf_counter() - t0:.0f} s", flush=True)
    val = f"story{sim['stories']:02d}"
    ds = LebelDataset(root, DataConfig(root=str(root), val_stories=[val]))
    train, test = ds.split()["train"], ds.cfg.test_story
    feats = FeatureConfig(window=e2e["window"], stride=e2e["stride"], pool=e2e["pool"], device="cpu")
    model = ModelConfig(family="whisper", pretrained=pretrained, whisper_input="native")
    cpus = os.cpu_count() or 1
    # ---- unit costs, this machine, this run
    units = dict(window=window_unit(ModelSpec("untuned", model), feats, ds.load_audio(train[0]), threads=1))
    print(f"window unit: {units['window']}", flush=True)
    units["rates_1_thread"] = gemm_rates(1)
    print(f"rates: {units['rates_1_thread']}", flush=True)
    ref = e2e["ridge_unit"]
    units["ridge"] = ridge_unit(**ref)
    shape = dict(n=ref["stories"] * ref["rows"], p=ref["p"], v=ref["v"], blocks=[ref["rows"]] * ref["stories"],
                 n_test=ref["n_test"])
    floor = ridge_seconds(ridge_ops(**shape), units["rates_1_thread"])
    units["ridge"].update(floor_s=round(floor, 2), scale=round(units["ridge"]["seconds"] / floor, 3))
    print(f"ridge unit: {units['ridge']}", flush=True)
    units["base_window"] = base_window_cost()
    print(f"base window: {units['base_window']}", flush=True)
    cpu = dict(s_per_window=units["window"]["s_per_window"], rates=units["rates_1_thread"],
               ridge_scale=units["ridge"]["scale"])
    # ---- the evaluation's work, from the dataset itself
    space = find_common_space(ds.root, "", ds.participants())
    voxels = [int(np.asarray(space.voxel_regions(s)).shape[0]) for s in ds.participants()]
    audio = {s: len(ds.load_audio(s)) / 16_000 for s in train + [test]}
    rows = {s: len(ds.row_tr_index(s)) for s in train}
    n_windows = len(checkpoints) + 1
    n_windows = n_windows * sum(len(window_ends(int(audio[s] * 16_000), feats)[0]) for s in train + [test])
    p = 384 * len(feats.delays)
    layers = 5                                                  # Whisper tiny.en: hidden states 0-4
    test_rows = rows[train[0]]                                 # the sim's test rows number as a training story's
    work = work_of(len(checkpoints) + 1, [(rows[s], audio[s]) for s in train], (test_rows, audio[test]), voxels,
                   layers, p, feats.stride, e2e["efficiency"], feature_workers=cpus, ridge_workers=cpus)
    work["windows"] = n_windows                                 # exact count (growing windows at story starts)
    pred = predict(cpu, work)
    print(f"predicted: {pred} for {work['windows']} windows, {sum(k for k, _ in work['fits'])} fits", flush=True)
    # ---- the evaluation, end to end
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    args = ["--data.root", str(root), "--data.val_stories", f"[{val}]", "--model.family", "whisper",
            "--model.pretrained", pretrained, "--model.whisper_input", "native",
            "--eval.features.window", str(feats.window), "--eval.features.stride", str(feats.stride),
            "--eval.features.pool", feats.pool, "--eval.features.cache_dir", str(work_dir / "cache"),
            "--eval.efficiency_stories", json.dumps(e2e["efficiency"]), "--eval.out_dir", str(work_dir / "reports"),
            "--tracking.uri", f"sqlite:///{work_dir / 'mlflow.db'}", "--run_name", "cost-check"]
    if checkpoints:
        args += ["--checkpoints", json.dumps(checkpoints)]
    measured = run_job(args, work_dir / "evaluate.log")
    print(f"measured: {measured}", flush=True)
    check = dict(dataset=dict(sim, train_stories=len(train), train_rows=sum(rows.values()), voxels=voxels,
                              audio_s=round(sum(audio.values()), 1)),
                 settings=dict(e2e, models=len(checkpoints) + 1, model="Whisper tiny.en (native input)", layers=layers,
                               p=p, feature_workers=cpus, ridge_workers=cpus, fits=sum(k for k, _ in work["fits"]),
                               windows=work["windows"]),
                 predicted=pred, measured=measured,
                 ratio=round(measured["wall_s"] / pred["total_s"], 3))
    # ---- full size: the paper preset's evaluation and the earlier model's size, CPU and one H100
    gpu_units = dict(s_per_window=1 / gpu_window_rate(), rates=H100, ridge_scale=1.0)
    base2 = units["base_window"]["s_per_window"]               # one 2-core worker: one actor, two ridge tasks
    full = {}
    for name, sc in SCENARIOS.items():
        train_s = [(DS["story_rows"], DS["story_audio_s"])] * sc["stories"]
        test_s = (DS["test_rows"], DS["test_audio_s"])
        shapes = lambda stride, f, r: work_of(sc["models"], [(round(a), b) for a, b in train_s], test_s,  # noqa: E731
                                              [DS["voxels"]] * sc["participants"], sc["layers"], sc["hidden"] * 4,
                                              stride, sc["efficiency"], f, r)
        out = dict(sc, voxels=DS["voxels"])
        for stride, pool in ((0.1, "last"), (e2e["stride"], e2e["pool"])):
            key = f"{stride:g}_{pool}"
            w = shapes(stride, 1, 1)
            out[key] = dict(windows=w["windows"], fits=sum(k for k, _ in w["fits"]),
                            h100=predict(gpu_units, w),
                            **{f"cpu_{n}x2": predict(dict(cpu, s_per_window=base2), shapes(stride, n, 2 * n))
                               for n in (1, 8)})
        full[name] = out
    return dict(units=units, check=check, full=full, h100_rates=H100, gpu_windows_s=round(gpu_window_rate(), 1),
                ds003020=DS)


def check_summary(c: dict) -> dict:
    """The end-to-end check of an earlier run, kept when a new run replaces ``cost_model``."""
    return dict(date=c["date"], loadavg_start=c["machine"]["loadavg_start"], loadavg_end=c["machine"]["loadavg_end"],
                s_per_window=c["units"]["window"]["s_per_window"], ridge_scale=c["units"]["ridge"]["scale"],
                predicted=c["check"]["predicted"], measured=c["check"]["measured"], ratio=c["check"]["ratio"])


def gpu_window_rate() -> float:
    """Windows/s of a base model on one H100, derived (not measured): the measured bf16 training rate
    (10 s windows, forward + backward ≈ 3 forwards) × 3, scaled to 16.1 s windows."""
    train = json.loads((REPO / "benchmarks/results/train_throughput_cuda.json").read_text())["runs"][0]
    return train["plain"]["samples_s"] * 3 * 10.0 / PAPER_WINDOW


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
    c = ap.add_argument_group("(c) the end-to-end check: its simulated dataset and settings")
    c.add_argument("--e2e-data", default=str(Path(tempfile.gettempdir()) / "costbench"))
    c.add_argument("--e2e-participants", type=int, default=2)
    c.add_argument("--e2e-stories", type=int, default=24, help="training stories + 1 validation story")
    c.add_argument("--e2e-trs", type=int, default=100)
    c.add_argument("--e2e-vertices", type=int, default=20_000)
    c.add_argument("--e2e-stride", type=float, default=1.0)
    c.add_argument("--e2e-pool", default="stride")
    c.add_argument("--e2e-efficiency", default="2,5,10", help="eval.efficiency_stories, comma-separated ('' = none)")
    c.add_argument("--pretrained", default="", help="Whisper tiny.en folder ('' = import the bundled one into "
                   "<e2e-data>/tiny.en, reused when its checksum matches)")
    c.add_argument("--checkpoints", default="", help="brain-tuned checkpoints of that model, comma-separated")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    out = Path(args.out)
    res: dict = json.loads(out.read_text()) if out.is_file() else {}
    work = Path(tempfile.mkdtemp(prefix="evalbench-cache-"))
    if parts & {"a", "b", "d"}:
        root = Path(args.data)
        if not (root / "derivative").is_dir():
            simulate(SimConfig(participants=2, stories=6, trs_per_story=80, n_vertices=400, seed=2), str(root))
        ds = LebelDataset(root, DataConfig(root=str(root)))
        stories = ds.split()["train"] + [ds.cfg.test_story]
        res.update(date=dt.datetime.now().isoformat(timespec="seconds"), parts=sorted(parts - {"c"}),
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
        sim = dict(participants=args.e2e_participants, stories=args.e2e_stories, trs_per_story=args.e2e_trs,
                   n_vertices=args.e2e_vertices, seed=5)
        e2e = dict(window=PAPER_WINDOW, stride=args.e2e_stride, pool=args.e2e_pool,
                   efficiency=[int(n) for n in args.e2e_efficiency.split(",") if n],
                   ridge_unit=dict(stories=20, rows=80, p=1536, v=3000, n_test=80))
        res.pop("base_window", None)
        load0, t0 = os.getloadavg(), dt.datetime.now().isoformat(timespec="seconds")
        prev = res.get("cost_model", {})
        earlier = prev.get("earlier_checks", []) + ([check_summary(prev)] if "check" in prev else [])
        if not args.pretrained:
            from braintune_dist.experiment.imports import ImportSettings, ensure_imported
            args.pretrained = str(ensure_imported(ImportSettings(out=str(Path(args.e2e_data) / "tiny.en"))))
        res["cost_model"] = cost_check(Path(args.e2e_data) / "sim", sim, e2e, args.pretrained,
                                       [c for c in args.checkpoints.split(",") if c], Path(args.e2e_data) / "run")
        res["cost_model"].update(date=t0, machine=dict(cpus=os.cpu_count(), platform=platform.platform(),
                                                        loadavg_start=load0, loadavg_end=os.getloadavg()),
                                 earlier_checks=earlier)
    if "d" in parts:
        res["bfloat16"] = precision_effect(ds, work)
    if parts & {"a", "b", "d"}:
        res["machine"]["loadavg_end"] = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
