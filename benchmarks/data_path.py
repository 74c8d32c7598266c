"""Benchmark: the training data path. Bytes read per training window and Ray Data delivery for the two audio
stores, and what the shuffle choice does to the loss curve.

    python benchmarks/data_path.py [--data /tmp/datapath] [--seeds 0 1] [--epochs 4]

Writes ``benchmarks/results/data_path.json``. On the demo-sized simulated dataset (4 participants, 8 stories,
80 TRs, 10 s windows at a 2 s TR):

* (a) shards written three ways: 'windows' store float32 (every row holds its window), 'windows' float16
  (the previous demo), 'story' store auto (each story once, int16: the simulated wavs are 16-bit PCM).
  Bytes on disk, and bytes a training epoch reads per window (``summarize``: the shards read plus the story
  audio), from the manifests.
* (b) Ray Data delivery: rows/s of ``make_dataset(train).iter_torch_batches`` in the driver over epochs
  2..N (epoch 1 starts the workers), for each store × shuffle ('global'; 'blocks' + a 32-row local buffer).
* (c) loss curves: Ray Train + DDP fits of a random-init tiny wav2vec2 (LoRA r=8) on the story store, with
  shuffle 'global', 'blocks' + buffer 32 and 'none', over ``--seeds`` training seeds; per-epoch train and
  validation loss, and the epoch time.
All numbers of one run come from the same machine in one process; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")     # Ray on loopback only
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from braintune_dist.config import from_dict                                     # noqa: E402
from braintune_dist.data.lebel import DataConfig                                # noqa: E402
from braintune_dist.data.shards import ShardConfig, write_shards                # noqa: E402
from braintune_dist.data.simulate import SimConfig, simulate                    # noqa: E402
from braintune_dist.data.stream import StreamConfig, iter_kwargs, make_dataset, summarize   # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STORES = {"windows_float32": dict(audio_store="windows", audio_dtype="float32"),
          "windows_float16": dict(audio_store="windows", audio_dtype="float16"),
          "story_auto": dict(audio_store="story", audio_dtype="auto")}
SHUFFLES = {"global": dict(shuffle="global"), "blocks32": dict(shuffle="blocks", local_shuffle_buffer=32),
            "none": dict(shuffle="none")}


def write_all(sim: Path, out: Path, data: DataConfig) -> dict:
    res = {}
    for name, opts in STORES.items():
        t = time.perf_counter()
        write_shards(ShardConfig(overwrite=True, **opts), data, str(out / name))
        s = summarize(out / name, "train")
        disk = sum(p.stat().st_size for p in (out / name).rglob("*") if p.is_file())
        res[name] = dict(write_s=round(time.perf_counter() - t, 2), disk_mb=round(disk / 1e6, 2),
                         train_windows=s["windows"], read_mb_per_epoch=round(s["shard_mb"] + s["audio_mb"], 2),
                         read_kb_per_window=round(s["read_bytes_per_window"] / 1e3, 1))
        print("write", name, res[name], flush=True)
    base = res["windows_float32"]["read_kb_per_window"]
    for r in res.values():
        r["fewer_bytes_than_windows_float32"] = round(base / r["read_kb_per_window"], 2)
    return res


def delivery(shards: Path, shuffle: dict, epochs: int) -> dict:
    cfg = from_dict(StreamConfig, dict(batch_size=8, **shuffle))
    t0 = time.perf_counter()
    ds = make_dataset(shards, "train", cfg)
    build_s = time.perf_counter() - t0
    res = []
    for _ in range(epochs):
        t, rows, first = time.perf_counter(), 0, None
        for b in ds.iter_torch_batches(**iter_kwargs(cfg)):
            first = first if first is not None else time.perf_counter() - t
            rows += len(b["audio"])
        res.append((time.perf_counter() - t, rows, first))
    secs, rows = sum(r[0] for r in res[1:]), sum(r[1] for r in res[1:])
    return dict(build_s=round(build_s, 2), epoch_s=[round(r[0], 2) for r in res],
                first_batch_s=[round(r[2], 3) for r in res], rows_per_epoch=res[0][1], rows_s=round(rows / secs, 1))


def fit_curve(shards: Path, data: DataConfig, shuffle: dict, seed: int, epochs: int, storage: str) -> dict:
    from braintune_dist.train.config import FitConfig
    from braintune_dist.train.trainer import build_trainer
    cfg = from_dict(FitConfig, {
        "data": dataclasses.asdict(data), "shards": str(shards), "model": {"size": "tiny"}, "lora": {"rank": 8},
        "stream": {"batch_size": 4, "participants": ["sim01", "sim02", "sim03"], **shuffle},
        "optim": {"backbone_lr": 1e-3, "head_lr": 1e-3, "warmup_frac": 0.1},
        "engine": {"kind": "ddp"}, "train": {"epochs": epochs, "loss": "mse", "patience": 0, "seed": seed},
        "ray": {"num_workers": 2, "cpus_per_worker": 0.5, "storage_path": storage,
                "run_name": f"curve-{shuffle['shuffle']}-{seed}", "keep_checkpoints": epochs},
        "tracking": {"enabled": False}})
    result = build_trainer(cfg).fit()
    hist = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    return dict(seed=seed, train_loss=[round(m["train_loss"], 4) for m in hist],
                val_loss=[round(m["val_loss"], 4) for m in hist], epoch_s=[round(m["epoch_seconds"], 2) for m in hist])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/datapath")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each loss-curve fit")
    ap.add_argument("--data-epochs", type=int, default=3, help="Ray Data epochs per delivery run (first excluded)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/data_path.json"))
    a = ap.parse_args(argv)
    root = Path(a.data)
    sim = root / "sim"
    if not (sim / "derivative").is_dir():
        simulate(SimConfig(participants=4, stories=8, trs_per_story=80), str(sim), overwrite=True)
    data = DataConfig(root=str(sim), val_stories=["story08"])
    res: dict = dict(date=dt.datetime.now().isoformat(timespec="seconds"), command=" ".join(sys.argv),
                     loadavg_start=[round(x, 2) for x in os.getloadavg()])
    res["write"] = write_all(sim, root / "shards", data)

    import ray
    import ray.data
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    res["delivery"] = {}
    for store in STORES:
        for sh_name in ("global", "blocks32"):
            r = delivery(root / "shards" / store, SHUFFLES[sh_name], a.data_epochs)
            res["delivery"][f"{store}/{sh_name}"] = r
            print("delivery", store, sh_name, r, flush=True)
    res["curves"] = {}
    with tempfile.TemporaryDirectory(prefix="curves_") as storage:
        for sh_name, shuffle in SHUFFLES.items():
            res["curves"][sh_name] = [fit_curve(root / "shards" / "story_auto", data, shuffle, seed, a.epochs, storage)
                                      for seed in a.seeds]
            print("curve", sh_name, res["curves"][sh_name], flush=True)
    ray.shutdown()
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    shutil.rmtree(root / "shards", ignore_errors=True)


if __name__ == "__main__":
    main()
