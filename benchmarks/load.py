"""Benchmark: load — many participants × a wide common space on the simulated generator, tiny model.

    python benchmarks/load.py [--participants 4 8 16] [--vertices 3000 10000 30000] [--stories 4]
                              [--trs-per-story 60] [--engine deepspeed] [--epochs 3] [--tmp /tmp] [--keep]

Writes ``benchmarks/results/load.json``. All ratios come from one run on one machine.

For each vertex count V: one child process simulates max(--participants) listeners (``simulate``, 2 test
repeats), another writes the train split's shards (float16 audio; its peak RSS is the writer's), and the
simulated dataset is deleted. Then, for each participant count P, a child process (so that its peak RSS is
its own) starts a local Ray and runs a real ``build_trainer(cfg).fit()``: 2 workers × 0.5 CPU, tiny
random-init wav2vec2 + LoRA r=8 + shared head (``head.standardize`` on), ``stream.n_participants = P``
(the project's data-size selection: only those participants' columns are read), validation and MLflow off.
Recorded per (P, V):

* samples/s = Σ samples × workers / Σ ``epoch_seconds`` over epochs ≥ 1 (epoch 0 pays the worker start);
* peak RSS of each train worker, from inside (``peak_rss_mb``: rank 0, ``peak_rss_mb_max``: max over workers,
  both ``ru_maxrss``, and rank 0's anonymous RSS ``rss_anon_mb``, as the worker loop reports them each epoch)
  and from outside (psutil every 0.5 s: RSS and RSS minus shared pages, i.e. without the object-store pages
  the stream mapped; a 5 s trace of both), and of the driver (``ru_maxrss``);
* the object store's peak bytes in use and bytes spilled (Ray's raylet memory RPC; a private API, so
  failures are recorded, not raised), and the peak Σ private RSS of every Ray process of the run;
* shard bytes on disk and the bytes of the columns a run reads (Parquet column-chunk sizes);
* head parameters, trainable parameters, and the bytes of one per-worker batch's response tensor (B × P × V).
With ``--blocks-at-largest`` the largest point is run again with ``stream.shuffle='blocks'`` (no all-to-all);
``--object-store-mb`` caps Ray's object store, to see which stream spills when an epoch does not fit in it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")     # Ray on loopback only
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6, 1)   # Linux: KiB


# --------------------------------------------------------------------------- child stages
def stage_sim(a) -> dict:
    from braintune_dist.data.simulate import SimConfig, simulate
    t0 = time.perf_counter()
    simulate(SimConfig(participants=a.n_sim, stories=a.stories, trs_per_story=a.trs_per_story, n_vertices=a.n_vertices, n_repeats=2, seed=0), a.sim)   # 2 repeats: the test story is not used
    return dict(sim_s=round(time.perf_counter() - t0, 1), sim_peak_rss_mb=_rss_mb(),
                sim_mb=round(sum(f.stat().st_size for f in Path(a.sim).rglob("*") if f.is_file()) / 1e6, 1))


def stage_shards(a) -> dict:
    from braintune_dist.data.lebel import DataConfig
    from braintune_dist.data.shards import ShardConfig, write_shards
    from braintune_dist.data.manifest import load_manifest
    t0 = time.perf_counter()
    write_shards(ShardConfig(splits=["train"], audio_dtype="float16", rows_per_shard=a.rows_per_shard), DataConfig(root=a.sim), a.shards)
    m = load_manifest(a.shards)
    return dict(write_s=round(time.perf_counter() - t0, 1), write_peak_rss_mb=_rss_mb(), shards=len(m["shards"]),
                rows=m["rows"]["train"], shard_mb=round(sum(sh["bytes"] for sh in m["shards"]) / 1e6, 1))


class Sampler(threading.Thread):
    """Polls this driver's Ray processes (psutil) and the object store every ``period`` s."""

    def __init__(self, period: float = 0.5):
        super().__init__(daemon=True)
        self.period, self.done = period, threading.Event()
        self.procs: dict[int, dict] = {}          # pid → titles seen, peak rss, peak rss - shared
        self.private_sum_peak = 0
        self.store_peak = self.spilled = 0
        self.store_error = ""
        self.trace: list = []                     # every 5 s: (s since start, pid, rss MB, private MB) of train workers

    def run(self) -> None:
        import psutil
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address
        me = psutil.Process()
        try:
            state = get_state_from_address(ray.get_runtime_context().gcs_address)
        except Exception as exc:                  # private API: keep the RSS samples if it moved
            state, self.store_error = None, repr(exc)[:300]
        t0, tick = time.perf_counter(), 0
        while not self.done.wait(self.period):
            private, tick = 0, tick + 1
            for c in me.children(recursive=True):        # ray.init started gcs/raylet; workers descend from them
                try:
                    title, mi = " ".join(c.cmdline())[:120], c.memory_info()
                except psutil.Error:
                    continue
                r = self.procs.setdefault(c.pid, dict(titles=set(), rss=0, private=0))
                r["titles"].add(title.split(" ")[0])
                r["rss"], r["private"] = max(r["rss"], mi.rss), max(r["private"], mi.rss - mi.shared)
                private += mi.rss - mi.shared
                if tick % 10 == 0 and "ray::RayTrainWorker" in title:     # does private memory grow over epochs?
                    self.trace.append((round(time.perf_counter() - t0), c.pid, round(mi.rss / 1e6),
                                       round((mi.rss - mi.shared) / 1e6)))
            self.private_sum_peak = max(self.private_sum_peak, private)
            if state is not None:
                try:
                    st = get_memory_info_reply(state, timeout_seconds=5).store_stats
                    self.store_peak = max(self.store_peak, st.object_store_bytes_used)
                    self.spilled = max(self.spilled, st.spilled_bytes_total)
                except Exception as exc:
                    self.store_error = repr(exc)[:300]

    def summary(self) -> dict:
        def kind(titles: set) -> str:
            t = " ".join(titles)
            return ("train_worker" if "RayTrainWorker" in t else "split_coordinator" if "SplitCoordinator" in t
                    else "data_task" if any(k in t.lower() for k in ("parquet", "map", "shuffle", "split"))
                    else "other")
        out: dict = {}
        titles: dict = {}
        for r in self.procs.values():
            out.setdefault(kind(r["titles"]), []).append((round(r["rss"] / 1e6, 1), round(r["private"] / 1e6, 1)))
            titles.setdefault(kind(r["titles"]), set()).update(r["titles"])
        mb = 1e6
        return dict(train_workers_rss_mb=[x[0] for x in sorted(out.get("train_worker", []))],
                    train_workers_private_mb=[x[1] for x in sorted(out.get("train_worker", []))],
                    data_task_max_rss_mb=max((x[0] for x in out.get("data_task", [])), default=None),
                    data_task_max_private_mb=max((x[1] for x in out.get("data_task", [])), default=None),
                    split_coordinator_rss_mb=max((x[0] for x in out.get("split_coordinator", [])), default=None),
                    ray_private_sum_peak_mb=round(self.private_sum_peak / mb, 1),
                    object_store_peak_mb=round(self.store_peak / mb, 1), spilled_mb=round(self.spilled / mb, 1),
                    object_store_error=self.store_error or None,
                    process_titles={k: sorted(v) for k, v in titles.items() if k != "other"},
                    train_worker_trace=[(t, sorted({x[1] for x in self.trace}).index(pid), rss, priv)
                                        for t, pid, rss, priv in self.trace])


def tune_cfg(a, storage: str):
    from braintune_dist.config import from_dict
    from braintune_dist.train.config import FitConfig
    stream = {"batch_size": a.batch, "n_participants": a.n_participants, "shuffle": a.shuffle,
              "local_shuffle_buffer": 16 if a.shuffle == "blocks" else 0}
    return from_dict(FitConfig, {
        "data": {"val_stories": []}, "shards": a.shards, "model": {"size": "tiny"}, "lora": {"rank": 8},
        "stream": stream, "engine": {"kind": a.engine, "zero_stage": 2},
        "train": {"epochs": a.epochs, "loss": "mse", "patience": 0},
        "ray": {"num_workers": a.workers, "cpus_per_worker": 0.5, "storage_path": storage,
                "run_name": f"load-p{a.n_participants}", "keep_checkpoints": a.epochs},
        "tracking": {"enabled": False}})


def stage_fit(a) -> dict:
    import ray
    import ray.data
    from braintune_dist.train.trainer import build_trainer
    from braintune_dist.train.plan import plan
    os.environ.pop("OMP_NUM_THREADS", None)       # would override Ray's 1 thread per 0.5-CPU worker
    load0 = os.getloadavg()[0]
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=int(a.object_store_mb * 1e6) or None)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    sampler = Sampler()
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="load_ray_", dir=a.tmp) as storage:
            cfg = tune_cfg(a, storage)
            p = plan(cfg)
            t0 = time.perf_counter()
            result = build_trainer(cfg, run_plan=p).fit()
            fit_s = time.perf_counter() - t0
    finally:
        sampler.done.set()
        sampler.join()
        ray.shutdown()
    hist = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
    steady = [m for m in hist if m["epoch"] >= 1]
    secs = sum(m["epoch_seconds"] for m in steady)
    return dict(train_rows=p.train_rows, steps_per_epoch=p.steps_per_epoch, fit_s=round(fit_s, 1),
                epoch_s=[round(m["epoch_seconds"], 2) for m in hist],
                samples_s=round(sum(m["samples"] for m in steady) * a.workers / secs, 2),
                train_loss=[round(m["train_loss"], 4) for m in hist],
                worker_peak_rss_mb_rank0=[round(m["peak_rss_mb"], 1) for m in hist],       # per epoch
                worker_peak_rss_mb_max=[round(m["peak_rss_mb_max"], 1) for m in hist],
                worker_anon_rss_mb_rank0=[round(m["rss_anon_mb"], 1) for m in hist],
                driver_peak_rss_mb=_rss_mb(), loadavg_1min=[round(load0, 1), round(os.getloadavg()[0], 1)],
                **sampler.summary())


STAGES = {"sim": stage_sim, "shards": stage_shards, "fit": stage_fit}


# --------------------------------------------------------------------------- parent
def child(a, stage: str, **kw) -> dict:
    """Run one stage in a fresh interpreter (its own peak RSS); its last stdout line is the JSON result."""
    args = [sys.executable, __file__, "--stage", stage, "--tmp", a.tmp]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} {kw} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    brief = {k: v for k, v in out.items() if k not in ("process_titles", "train_worker_trace")}
    print(f"[{stage}] {kw} {time.time() - t0:.0f} s: {brief}", flush=True)
    return out


def read_bytes(shards: str, participants: list[str]) -> int:
    """Bytes of the column chunks a stream of ``participants`` reads (the reader projects columns)."""
    import pyarrow.parquet as pq
    from braintune_dist.data.manifest import load_manifest
    cols = {"story", "row", "tr", "audio", "present"} | {f"common_{p}" for p in participants}
    total = 0
    for sh in load_manifest(shards)["shards"]:
        md = pq.ParquetFile(Path(shards) / sh["file"]).metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                total += col.total_compressed_size if col.path_in_schema.split(".")[0] in cols else 0
    return total


def model_size(n_vertices: int) -> dict:
    import torch
    from braintune_dist.model.config import ModelConfig
    from braintune_dist.model.tuner import BrainTuner
    from braintune_dist.model.config import HeadSettings, LoraSettings
    torch.set_num_threads(1)
    m = BrainTuner(ModelConfig(size="tiny"), LoraSettings(rank=8), HeadSettings(), n_vertices)
    return dict(head_params=sum(p.numel() for p in m.head.parameters()),
                trainable_params=sum(p.numel() for p in m.parameters() if p.requires_grad),
                hidden=m.backbone.hidden_size)


def run_grid(a) -> dict:
    from braintune_dist.config import from_dict
    from braintune_dist.data.manifest import load_manifest
    from braintune_dist.data.stream import StreamConfig, select
    n_sim = max(a.participants)
    work = Path(tempfile.mkdtemp(prefix="braintune_load_", dir=a.tmp))
    points, data = [], {}
    try:
        for V in a.vertices:
            sim, shards = str(work / f"sim{V}"), str(work / f"shards{V}")
            print(f"[disk] {shutil.disk_usage(work).free / 1e9:.1f} GB free", flush=True)
            d = dict(child(a, "sim", sim=sim, n_sim=n_sim, n_vertices=V, stories=a.stories,
                           trs_per_story=a.trs_per_story),
                     **child(a, "shards", sim=sim, shards=shards, rows_per_shard=a.rows_per_shard))
            shutil.rmtree(sim)                                 # only the shards are needed from here on
            data[V] = dict(d, **model_size(V))
            m = load_manifest(shards)
            runs = [(P, "global") for P in a.participants]
            if a.blocks_at_largest and V == max(a.vertices):
                runs.append((max(a.participants), "blocks"))
            for P, shuffle in runs:
                chosen = select(m, "train", from_dict(StreamConfig, {"n_participants": P})).participants
                fit = child(a, "fit", shards=shards, n_participants=P, engine=a.engine, epochs=a.epochs,
                            batch=a.batch, workers=a.workers, shuffle=shuffle, object_store_mb=a.object_store_mb)
                points.append(dict(participants=P, vertices=V, shuffle=shuffle,
                                   read_mb=round(read_bytes(shards, chosen) / 1e6, 1),
                                   batch_response_mb=round(a.batch * P * V * 4 / 1e6, 2),
                                   row_response_mb=round(P * V * 4 / 1e6, 3), **fit))
            shutil.rmtree(shards)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return dict(data={str(k): v for k, v in data.items()}, points=points)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--participants", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--vertices", type=int, nargs="+", default=[3000, 10000, 30000])
    ap.add_argument("--stories", type=int, default=4, help="training stories of the simulated dataset")
    ap.add_argument("--trs-per-story", type=int, default=60, help="respdict TRs per story (rows = n - 20)")
    ap.add_argument("--rows-per-shard", type=int, default=64, help="windows per Parquet file")
    ap.add_argument("--engine", default="deepspeed", choices=["deepspeed", "ddp"])
    ap.add_argument("--epochs", type=int, default=3, help="Ray Train epochs (the first is excluded from rates)")
    ap.add_argument("--batch", type=int, default=4, help="micro-batch per worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--object-store-mb", type=int, default=0, help="Ray object store size (0 = Ray's default)")
    ap.add_argument("--blocks-at-largest", action=argparse.BooleanOptionalAction, default=True,
                    help="run the largest point again with stream.shuffle='blocks'")
    ap.add_argument("--tmp", default=tempfile.gettempdir(), help="scratch parent (datasets, shards, checkpoints)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    # internal: one stage in a child process
    ap.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    for k in ("sim", "shards"):
        ap.add_argument(f"--{k}", help=argparse.SUPPRESS)
    for k in ("n-sim", "n-vertices", "n-participants"):
        ap.add_argument(f"--{k}", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--shuffle", default="global", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.stage:
        print(json.dumps(STAGES[a.stage](a)), flush=True)
        return
    import ray
    import torch
    res: dict = dict(
        date=dt.datetime.now().isoformat(timespec="seconds"),
        command="python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
                     loadavg_start=[round(x, 2) for x in os.getloadavg()]),
        versions=dict(torch=torch.__version__, ray=ray.__version__),
        config={k: v for k, v in vars(a).items() if k in ("participants", "vertices", "stories", "trs_per_story",
                                                          "rows_per_shard", "engine", "epochs", "batch", "workers",
                                                          "object_store_mb")})
    res.update(run_grid(a))
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
