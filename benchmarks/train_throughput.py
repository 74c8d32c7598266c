"""Benchmark: brain-tuning training throughput, plain PyTorch loop against the project's distributed path.

    # CPU (2-core box): plain loop vs Ray Train + DeepSpeed ZeRO-2 vs Ray Train + DDP, and Ray Data delivery
    python benchmarks/train_throughput.py [--shards /tmp/tp/shards] [--size tiny] [--batch 4] [--epochs 4]
    # (without --shards: simulates 3 participants × 4 stories of 60 TRs and writes their shards in $TMPDIR)
    # GPU (no Ray there): plain bf16 loop vs the project's Engine in-process (ddp single process, deepspeed)
    PYTHONPATH=. python3 benchmarks/train_throughput.py --device cuda --size base --batch 32 --steps 20

Writes ``benchmarks/results/train_throughput.json`` (CPU) or ``train_throughput_cuda.json`` (--device cuda).
All ratios come from one run on one machine.

CPU measures, on the same model, data (the train split of ``--shards``) and per-step sample count:
* (a) a plain single-process loop: BrainTuner + AdamW + brain_loss('mse') over batches preloaded in memory,
  global batch = workers × ``--batch``, at torch 2 threads (the whole box) and at 1 thread, timed before
  Ray starts and after it stops (ratios use the faster pass), at Ray's worker niceness (15) so that on a
  shared box it competes with other jobs as the workers do;
* (b) ``build_trainer(cfg).fit()`` with 2 workers × 0.5 CPU (1 torch thread each, set by Ray), engine
  deepspeed ZeRO-2 and engine ddp; steady-state rate = Σ samples / Σ ``epoch_seconds`` over epochs ≥ 1 as
  reported by rank 0 × workers (validation is off so ``epoch_seconds`` is stream + steps only);
* (c) Ray Data: rows/s of ``make_dataset(train).iter_torch_batches`` in the driver, no model, against (b).
In-process (``--device cuda``, or ``--inprocess`` on CPU): (a) against (d) ``Engine`` kind ddp (single
process: the plain model, bf16 autocast on GPU) and kind deepspeed ZeRO-2 (bf16 weights on GPU), on
synthetic batches of the shard shapes (the GPU machine has no shards; the compute does not depend on values).
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")     # Ray on loopback only
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from braintune_dist.model.config import ModelConfig  # noqa: E402
from braintune_dist.train.losses import brain_loss                        # noqa: E402
from braintune_dist.model.tuner import BrainTuner  # noqa: E402
from braintune_dist.model.config import HeadSettings, LoraSettings

LOSS = "mse"


# --------------------------------------------------------------------------- data
def shard_batches(shards: str, batch: int) -> tuple[list[dict], torch.Tensor]:
    """The train split of ``shards`` as in-memory bind-mode batches (the stream's own conversion, no Ray),
    and the (P, V) coverage mask the trainer uses."""
    import numpy as np
    import pyarrow.parquet as pq
    from braintune_dist.data.manifest import load_manifest, read_coverage
    from braintune_dist.data.stream import StreamConfig, _to_tensors, select
    m, cfg = load_manifest(shards), StreamConfig()
    sel = select(m, "train", cfg)
    files = [Path(shards) / sh["file"] for sh in m["shards"] if sh["split"] == "train"]
    store = ({s: np.load(Path(shards) / f["file"]) for s, f in m["audio_files"].items()}
             if m["audio_store"] == "story" else None)
    cols = {}
    for f in files:
        out = _to_tensors(pq.read_table(f), mode="bind", space="common", participants=sel.participants,
                          slots=[m["subjects"].index(p) for p in sel.participants], n_participants=len(m["subjects"]),
                          story_index={s: i for i, s in enumerate(sel.story_names)}, keep=sel.keep(),
                          sizes=[m["n_vertices"]] * len(sel.participants), n_samples=m["window_samples"],
                          audio=store)
        for k in ("audio", "responses", "mask"):
            cols.setdefault(k, []).append(torch.from_numpy(np.ascontiguousarray(out[k])))
    cols = {k: torch.cat(v) for k, v in cols.items()}
    n = len(cols["audio"]) // batch * batch                     # whole batches only: equal work per step
    batches = [{k: v[i:i + batch] for k, v in cols.items()} for i in range(0, n, batch)]
    cov = read_coverage(shards)[[m["subjects"].index(p) for p in sel.participants]]
    return batches, torch.as_tensor(cov, dtype=torch.bool)


def default_shards(work: Path) -> str:
    """Simulate 3 participants × 4 stories of 60 TRs and write their shards (story04 validates) under ``work``
    unless there already; returns the shard folder."""
    from braintune_dist.data.lebel import DataConfig
    from braintune_dist.data.shards import ShardConfig, write_shards
    from braintune_dist.data.simulate import SimConfig, simulate
    if not (work / "shards" / "manifest.json").is_file():
        simulate(SimConfig(participants=3, stories=4, trs_per_story=60), str(work / "sim"), overwrite=True)
        write_shards(ShardConfig(overwrite=True), DataConfig(root=str(work / "sim"), val_stories=["story04"]),
                     str(work / "shards"))
    return str(work / "shards")


def synthetic_batches(batch: int, n_batches: int, samples: int, participants: int, vertices: int):
    """Random batches of the shard shapes (float16 audio as stored, float32 responses, every pair present)."""
    g = torch.Generator().manual_seed(0)
    return ([{"audio": torch.randn(batch, samples, generator=g).half(),
              "responses": torch.randn(batch, participants, vertices, generator=g),
              "mask": torch.ones(batch, participants, dtype=torch.bool)} for _ in range(n_batches)],
            torch.ones(participants, vertices, dtype=torch.bool))


# --------------------------------------------------------------------------- timing helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _summary(step_s: list[float], batch: int, device: torch.device, **extra) -> dict:
    total = sum(step_s)
    out = dict(batch=batch, steps=len(step_s), samples_s=round(batch * len(step_s) / total, 2),
               step_ms_median=round(1e3 * statistics.median(step_s), 1),
               step_ms_min=round(1e3 * min(step_s), 1), step_ms_max=round(1e3 * max(step_s), 1), **extra)
    if device.type == "cuda":
        out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


def _timed_steps(step, batches, warmup: int, steps: int, device: torch.device) -> list[float]:
    """Run ``step(batch) -> loss`` warmup + steps times; per-step seconds of the timed ones. Each step
    reads the loss back (float), as the project's worker loop does, so the time is the real step time."""
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        float(step(batches[i % len(batches)]))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _model(a, n_participants: int, n_vertices: int) -> BrainTuner:
    return BrainTuner(ModelConfig(size=a.size), LoraSettings(rank=a.lora_rank), HeadSettings(), n_vertices,
                      n_participants)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------- (a) plain loop
def bench_plain(a, batches, vmask, device: torch.device, threads: int | None = None, nice: int | None = None) -> dict:
    """BrainTuner + AdamW + brain_loss; bf16 autocast on GPU (what the Engine's ddp path does), fp32 on CPU.
    ``nice``: run at this niceness (then restore it), to compete for a shared CPU as Ray's workers do."""
    if nice is not None:
        old = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        try:
            return dict(bench_plain(a, batches, vmask, device, threads), nice=nice)
        finally:
            os.setpriority(os.PRIO_PROCESS, 0, old)  # lowering it again needs root/CAP_SYS_NICE
    if threads:
        torch.set_num_threads(threads)
    _free(device)
    model = _model(a, vmask.shape[0], vmask.shape[1]).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    vm = vmask.to(device)
    bf16 = device.type == "cuda"

    def step(b):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(b["audio"].to(device, non_blocking=True))
        loss = brain_loss(LOSS, pred, b["responses"].to(device), b["mask"].to(device), vm)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    out = _summary(_timed_steps(step, batches, a.warmup, a.steps, device), len(batches[0]["audio"]), device,
                   torch_threads=torch.get_num_threads(), precision="bf16-autocast" if bf16 else "fp32")
    del model, opt
    return out


# --------------------------------------------------------------------------- (d) Engine in-process
def bench_engine(a, kind: str, batches, vmask, device: torch.device) -> dict:
    from braintune_dist.train.engine import Engine
    from braintune_dist.train.config import EngineSettings, OptimSettings
    _free(device)
    model = _model(a, vmask.shape[0], vmask.shape[1])
    t0 = time.perf_counter()
    engine = Engine(model, OptimSettings(), EngineSettings(kind=kind, zero_stage=2), a.warmup + a.steps,
                    len(batches[0]["audio"]))
    init_s = time.perf_counter() - t0
    engine.module.train()
    vm = vmask.to(engine.device)

    def step(b):                                      # the worker loop's _batch_loss + backward_step
        pred = engine.forward(b["audio"])
        loss = brain_loss(LOSS, pred, b["responses"].to(engine.device), b["mask"].to(engine.device), vm)
        engine.backward_step(loss)
        return loss.detach()

    out = _summary(_timed_steps(step, batches, a.warmup, a.steps, device), len(batches[0]["audio"]), device,
                   kind=kind, zero_stage=2 if kind == "deepspeed" else None, engine_init_s=round(init_s, 2),
                   precision="bf16" if engine.bf16 else "fp32", torch_threads=torch.get_num_threads())
    del engine, model
    return out


def run_inprocess(a, device: torch.device) -> dict:
    if a.shards:
        batches, vmask = shard_batches(a.shards, a.batch)
    else:
        batches, vmask = synthetic_batches(a.batch, 4, a.window_samples, a.participants, a.vertices)
    res: dict = dict(data="shards " + a.shards if a.shards else
                     f"synthetic: {a.participants} participants, {a.vertices} vertices, {a.window_samples} samples")
    if device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(device)
    res["plain"] = bench_plain(a, batches, vmask, device)
    print("plain", res["plain"], flush=True)
    res["engine"] = {}
    for kind in a.engines:
        try:
            res["engine"][kind] = bench_engine(a, kind, batches, vmask, device)
        except Exception as exc:                      # e.g. deepspeed not importable: say so, keep the rest
            res["engine"][kind] = dict(error=f"{type(exc).__name__}: {exc}"[:500])
        print(kind, res["engine"][kind], flush=True)
    res["ratios"] = {f"engine_{k}_vs_plain_samples_s": round(v["samples_s"] / res["plain"]["samples_s"], 3)
                     for k, v in res["engine"].items() if "samples_s" in v}
    return res


# --------------------------------------------------------------------------- (b), (c) Ray
def _stream(a) -> dict:
    return {"batch_size": a.batch, "shuffle": a.shuffle, "local_shuffle_buffer": a.local_shuffle_buffer}


def tune_cfg(a, kind: str, storage: str):
    from braintune_dist.config import from_dict
    from braintune_dist.train.config import FitConfig
    return from_dict(FitConfig, {
        "data": {"val_stories": []},                  # no validation: epoch_seconds = stream + train steps
        "shards": a.shards, "model": {"size": a.size}, "lora": {"rank": a.lora_rank},
        "stream": _stream(a),                         # project defaults otherwise: bind mode
        "engine": {"kind": kind, "zero_stage": 2},
        "train": {"epochs": a.epochs, "loss": LOSS, "patience": 0, "max_steps_per_epoch": a.max_steps_per_epoch},
        "ray": {"num_workers": a.workers, "cpus_per_worker": a.cpus_per_worker, "storage_path": storage,
                "run_name": f"bench-{kind}", "keep_checkpoints": a.epochs},
        "tracking": {"enabled": False}})


def bench_ray_train(a, kind: str, storage: str) -> dict:
    from braintune_dist.train.trainer import build_trainer
    from braintune_dist.train.plan import plan
    cfg = tune_cfg(a, kind, storage)
    p = plan(cfg)
    t0 = time.perf_counter()
    result = build_trainer(cfg, run_plan=p).fit()
    fit_s = time.perf_counter() - t0
    hist = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    steady = [m for m in hist if m["epoch"] >= 1]     # epoch 0 pays worker start-up, model build, first read
    samples = sum(m["samples"] for m in steady) * a.workers   # rank 0's count × workers (equal split)
    secs = sum(m["epoch_seconds"] for m in steady)
    return dict(kind=kind, workers=a.workers, cpus_per_worker=a.cpus_per_worker, batch_per_worker=a.batch,
                steps_per_epoch=p.steps_per_epoch, epochs=len(hist), fit_s=round(fit_s, 1),
                epoch_s=[round(m["epoch_seconds"], 2) for m in hist],
                samples_s=round(samples / secs, 2), train_loss=[round(m["train_loss"], 4) for m in hist])


def bench_ray_data(a, epochs: int) -> dict:
    from braintune_dist.config import from_dict
    from braintune_dist.data.stream import StreamConfig, iter_kwargs, make_dataset
    cfg = from_dict(StreamConfig, _stream(a))         # the trainer's train stream
    ds = make_dataset(a.shards, "train", cfg)
    res = []
    for _ in range(epochs):
        t0, rows = time.perf_counter(), 0
        for b in ds.iter_torch_batches(**iter_kwargs(cfg)):
            rows += len(b["audio"])
        res.append((time.perf_counter() - t0, rows))
    secs, rows = sum(r[0] for r in res[1:]), sum(r[1] for r in res[1:])
    return dict(shuffle=cfg.shuffle, batch=a.batch, rows_per_epoch=res[0][1],
                epoch_s=[round(r[0], 2) for r in res], rows_s=round(rows / secs, 1))


def run_ray(a) -> dict:
    res: dict = dict(data=a.shards)
    batches, vmask = shard_batches(a.shards, a.batch * a.workers)   # same global batch per optimizer step
    res["dataset"] = dict(train_rows=sum(len(b["audio"]) for b in batches), participants=int(vmask.shape[0]),
                          vertices=int(vmask.shape[1]), window_samples=int(batches[0]["audio"].shape[1]))
    dev = torch.device("cpu")
    # (a) before Ray starts and again after it stops (no Ray process shares the cores with it): the box is
    # shared, so bracketing shows the drift; the ratios use the faster pass (the stricter baseline)
    res["plain"] = []

    def plain_pass(when: str) -> None:
        for th in a.plain_threads:
            r = bench_plain(a, batches, vmask, dev, threads=th, nice=a.plain_nice)
            res["plain"].append(dict(r, when=when))
            print("plain", when, r, flush=True)
    plain_pass("before_ray")
    import ray
    import ray.data
    # an exported OMP_NUM_THREADS would reach the workers and override Ray's 1 thread per 0.5-CPU worker
    res["omp_num_threads_env_removed"] = os.environ.pop("OMP_NUM_THREADS", None)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False

    @ray.remote(num_cpus=a.cpus_per_worker)
    class Probe:                                      # an actor sized like a train worker: threads, niceness
        def threads(self):
            import torch as t
            return t.get_num_threads(), os.environ.get("OMP_NUM_THREADS"), os.getpriority(os.PRIO_PROCESS, 0)
    th, omp, nice = ray.get(Probe.remote().threads.remote())
    res["worker"] = dict(torch_threads=th, OMP_NUM_THREADS=omp, nice=nice)
    res["ray_data"] = bench_ray_data(a, a.data_epochs)
    print("ray data", res["ray_data"], flush=True)
    res["ray_train"] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as storage:
        for kind in a.engines:
            res["ray_train"][kind] = bench_ray_train(a, kind, storage)
            print("ray train", res["ray_train"][kind], flush=True)
    ray.shutdown()
    time.sleep(5)                                     # let Ray's processes exit before timing again
    plain_pass("after_ray")

    plain: dict[int, float] = {}
    for r in res["plain"]:
        plain[r["torch_threads"]] = max(plain.get(r["torch_threads"], 0.0), r["samples_s"])
    res["plain_best_samples_s"] = plain
    rt = res["ray_train"]
    ratios = {}
    for kind, r in rt.items():
        for t, s in plain.items():
            ratios[f"ray_{kind}_vs_plain_{t}thread"] = round(r["samples_s"] / s, 3)
        if 1 in plain:                                # perfect data parallelism: each worker as fast as 1 thread alone
            ratios[f"ray_{kind}_vs_{a.workers}x_plain_1thread"] = round(r["samples_s"] / (a.workers * plain[1]), 3)
        ratios[f"ray_data_delivery_vs_ray_{kind}_consumption"] = round(res["ray_data"]["rows_s"] / r["samples_s"], 2)
    res["ratios"] = ratios
    return res


# --------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda implies --inprocess")
    ap.add_argument("--inprocess", action="store_true", help="(a) vs (d) Engine in-process, no Ray")
    ap.add_argument("--shards", default="", help="shard dir (CPU with Ray: simulated if empty; in-process: synthetic)")
    ap.add_argument("--size", default="tiny", choices=["tiny", "base"], help="random-init wav2vec2 size")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="micro-batch per worker (in-process: per step)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps of the in-process loops")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--engines", nargs="+", default=["deepspeed", "ddp"], choices=["deepspeed", "ddp"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus-per-worker", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4, help="Ray Train epochs (the first is excluded)")
    ap.add_argument("--max-steps-per-epoch", type=int, default=0, help="Ray Train cap (0 = whole shard)")
    ap.add_argument("--data-epochs", type=int, default=3, help="Ray Data epochs (the first is excluded)")
    ap.add_argument("--shuffle", default="global", choices=["global", "blocks", "none"], help="StreamConfig.shuffle")
    ap.add_argument("--local-shuffle-buffer", type=int, default=0, help="StreamConfig.local_shuffle_buffer")
    ap.add_argument("--plain-threads", type=int, nargs="+", default=[2, 1], help="torch threads of (a) on CPU")
    ap.add_argument("--plain-nice", type=int, default=15,
                    help="niceness of (a) on CPU: Ray runs its workers at 15 (worker_niceness); -1 = leave as is")
    ap.add_argument("--participants", type=int, default=3, help="synthetic data shape")
    ap.add_argument("--vertices", type=int, default=600, help="synthetic data shape")
    ap.add_argument("--window-samples", type=int, default=160_000, help="synthetic data: 10 s at 16 kHz")
    ap.add_argument("--out", default="")
    a = ap.parse_args(argv)
    inproc = a.inprocess or a.device == "cuda"
    a.plain_nice = None if a.plain_nice < 0 else a.plain_nice
    if not inproc and not a.shards:                  # the data of the CPU table in BENCHMARKS.md, made here
        a.shards = default_shards(Path(tempfile.gettempdir()) / "braintune_tp")
    device = torch.device(a.device)
    out = Path(a.out or Path(__file__).parent / "results" /
               ("train_throughput.json" if not inproc else
                "train_throughput_cuda.json" if a.device == "cuda" else "train_throughput_cpu_inprocess.json"))

    import transformers
    results: dict = dict(
        date=dt.datetime.now().isoformat(timespec="seconds"),
        command="python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
                     loadavg_start=[round(x, 2) for x in os.getloadavg()]),
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
        config=dict(vars(a), loss=LOSS))
    for mod in ("peft", "deepspeed", "ray"):
        try:
            results["versions"][mod] = __import__(mod).__version__
        except Exception:                             # absent on the GPU image unless carried
            results["versions"][mod] = None
    results.update(run_inprocess(a, device) if inproc else run_ray(a))
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
