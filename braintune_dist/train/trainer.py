"""Driver side of brain-tuning: build the Ray Train ``TorchTrainer`` from a ``FitConfig`` and its ``Plan``.

The plan (``train/plan.py``) gives the schedule's total step count from the exact epoch size in the shard manifest
(rows per worker after Ray Data's equal split), so the warm-up/decay spans the steps actually taken. The workers get
the fit, the plan and the feature statistics as one typed ``WorkerSpec``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import time
import zipfile
from pathlib import Path

import numpy as np

from braintune_dist.config import to_dict
from braintune_dist.errors import UserError
from braintune_dist.experiment import compat
from braintune_dist.io import atomic_path, is_uri, quick_digest, storage_location
from braintune_dist.seeding import derive
from braintune_dist.data.audio_store import from_npy
from braintune_dist.data.manifest import load_manifest, locate, read_bytes
from braintune_dist.data.stream import make_dataset, select, shards_for, windows
from braintune_dist.train.loop import train_loop_per_worker
from braintune_dist.train.plan import Plan, WorkerSpec, plan
from braintune_dist.train.config import FitConfig


_STATS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def feature_stats(cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD, each (hidden,), of the untuned backbone's pooled features over
    ``cfg.head.standardize_windows`` training windows spread evenly over the selected shards.

    Runs once on the driver (deterministic: same windows, same seeded init) so every worker, every
    restart and every sweep trial with this model and data z-scores the head's input identically.
    Fits that differ only in what the statistics do not depend on (training seed, learning rates) reuse
    them: within the process, and across processes (sweep trials, scaling points, a rerun) from
    ``<ray.storage_path>/feature_stats/<key hash>.npz`` when the storage is a local folder.
    """
    # the manifest changes when the shards are rewritten; the weight files' digests when a pretrained
    # checkpoint is rewritten in place
    weights = sorted(Path(cfg.model.pretrained).glob("*.safetensors")) if cfg.model.pretrained else []
    key = json.dumps([to_dict(cfg.model), load_manifest(cfg.shards), to_dict(cfg.stream), to_dict(cfg.data),
                      cfg.head.standardize_windows, [quick_digest(w) for w in weights]], sort_keys=True, default=str)
    if key not in _STATS:
        _STATS[key] = _stats_file(cfg, key)
    return _STATS[key]


def _stats_file(cfg: FitConfig, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The statistics from the storage folder's cache file, else computed and saved there (atomically)."""
    if is_uri(cfg.ray.storage_path):                      # remote storage: computed again in each process
        return _feature_stats(cfg)
    path = Path(cfg.ray.storage_path) / "feature_stats" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    try:
        with np.load(path) as f:
            return f["mean"], f["sd"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):   # absent or damaged: computed again
        pass
    mean, sd = _feature_stats(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, mean=mean, sd=sd)
    return mean, sd


def _feature_stats(cfg: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq
    import torch

    from braintune_dist.model.backbone import build_backbone

    shard_dir = cfg.shards
    manifest = load_manifest(shard_dir)
    _, shards = shards_for(manifest, "train", cfg.stream, shard_dir)
    per_shard = math.ceil(cfg.head.standardize_windows / len(shards))
    fs, base = locate(str(shard_dir))
    store = {s: from_npy(read_bytes(shard_dir, f["file"]), f["file"]) for s, f in manifest["audio_files"].items()
             if any(s in sh["stories"] for sh in shards)}                  # story store: each story's samples once
    column = "end_sample" if manifest["audio_store"] == "story" else "audio"
    audio = []
    for sh in shards:                                   # evenly spaced rows of every shard: all stories seen
        pf = pq.ParquetFile(fs.open_input_file(f"{base}/{sh['file']}"))
        n = pf.metadata.num_rows
        rows = np.linspace(0, n - 1, min(per_shard, n)).round().astype(int)
        # read only the row groups holding those rows (a windows-store shard's audio column is ~100 MB)
        first = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        group_of = np.searchsorted(first, rows, side="right") - 1                  # (len(rows),)
        groups = sorted(set(group_of.tolist()))
        table = pf.read_row_groups(groups, columns=["story", column])
        start_in_a = dict(zip(groups, np.cumsum([0] + [first[g + 1] - first[g] for g in groups])))
        picked = table.take([int(start_in_a[g] + r - first[g]) for r, g in zip(rows, group_of)])
        audio.append(windows(picked, manifest["window_samples"], store or None))   # (len(rows), window_samples)
    audio = np.concatenate(audio)[: cfg.head.standardize_windows]
    backbone = build_backbone(cfg.model).eval()
    with torch.no_grad():
        pooled = torch.cat([backbone.pooled(torch.from_numpy(audio[i:i + 16].astype(np.float32)))
                            for i in range(0, len(audio), 16)]).double()   # (n_windows, hidden)
    return pooled.mean(0).numpy(), pooled.std(0).numpy()


class NonFiniteLossError(UserError):
    """The training loss became inf/NaN: bad data or an unstable optimiser, not a bug to retry."""


@functools.lru_cache(maxsize=1)
def _trainer_class():
    from ray.train.torch import TorchTrainer

    class Trainer(compat.with_sigint_handler(TorchTrainer)):
        """TorchTrainer whose Ctrl-C is told apart from success: Ray Train's own SIGINT handler aborts the run
        and then ``sys.exit(0)``s or lets ``fit()`` return, so a caller would record an interrupted run as
        finished. This one aborts the run the same way and sets ``interrupted``, and ``fit_with_progress``
        raises ``KeyboardInterrupt`` instead of what ``fit()`` returns or raises; a second Ctrl-C raises at once.

        The handler holds the run's controller actor. Left installed after ``fit()`` (as Ray Train leaves its
        own), it keeps that controller, its dataset manager and split coordinators alive in a driver that goes
        on working; a later fit on the same cluster then waited forever for the CPU their data pipeline held.
        ``fit()`` puts the driver's previous handler back."""

        interrupted = False

        def fit(self):
            import signal
            import threading

            main = threading.current_thread() is threading.main_thread()     # Tune trials: not the main thread
            previous = signal.getsignal(signal.SIGINT) if main else None
            try:
                return super().fit()
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)

        def sigint_handler(self, controller):
            """The SIGINT handler of a run whose controller actor is ``controller`` (installed by ``fit()``)."""
            import ray

            def handler(signum, frame):
                if self.interrupted:
                    raise KeyboardInterrupt("second Ctrl-C")
                self.interrupted = True
                try:
                    ray.get(controller.abort.remote())
                except ray.exceptions.RayActorError:
                    pass                                    # the controller is already gone
            return handler
    return Trainer


def build_trainer(cfg: FitConfig, mlflow_run_id: str | None = None, run_plan: Plan | None = None):
    """A ``TorchTrainer`` running ``train_loop_per_worker`` on the configured shards; ``run_plan``: the fit's plan
    when the caller has it (else planned here)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    p = run_plan or plan(cfg)
    if cfg.model.pretrained and Path(cfg.model.pretrained).is_dir():   # workers run in another directory
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                                 pretrained=str(Path(cfg.model.pretrained).resolve())))
    stats = feature_stats(cfg) if cfg.head.standardize else None
    # the training stream's order (shuffle, per-epoch reseeding, local buffer) follows the fit's replicate seed;
    # set after the statistics, which read the same windows whatever the order
    cfg = dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, seed=derive(cfg.train.seed, "order")))
    tables = None
    if cfg.target.kind == "teacher":                # computed (or read from their cache) here, once per fit
        import ray
        from braintune_dist.targets import teacher
        train = select(load_manifest(cfg.shards), "train", cfg.stream).kept_stories()
        tables = {s: ray.put(t) for s, t in teacher.fit_targets(cfg, train).tables.items()}
    datasets = {"train": make_dataset(cfg.shards, "train", cfg.stream, target=cfg.target, seed=cfg.train.seed,
                                      teacher=tables)}
    if p.val_rows:
        val_stream = dataclasses.replace(cfg.stream, shuffle="none", participants=list(p.selected),
                                         n_participants=0)
        # a control's validation loss selects its checkpoint and stops it early: on brain targets, brain data
        # would leak into the control, so validation pairs are shuffled too (and teacher-scored for the teacher)
        datasets["val"] = make_dataset(cfg.shards, "val", val_stream, target=cfg.target, seed=cfg.train.seed,
                                       teacher=tables)
    else:
        import ray.data
        datasets["val"] = ray.data.from_items([{"audio": np.zeros(1, np.float32)}]).limit(0)
    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1
    storage = storage_location(cfg.ray.storage_path)
    return _trainer_class()(
        train_loop_per_worker,
        train_loop_config={"spec": WorkerSpec(fit=cfg, plan=p, feature_stats=stats, mlflow_run_id=mlflow_run_id)},
        scaling_config=ScalingConfig(num_workers=cfg.ray.num_workers, use_gpu=cfg.ray.use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        datasets=datasets,
        # one worker reads each dataset whole, in its own process: a split would only add a coordinator actor per
        # dataset (~2 CPU-s each to start) between the reads and the only reader
        dataset_config=DataConfig(datasets_to_split="all" if cfg.ray.num_workers > 1 else []),
        run_config=RunConfig(
            name=cfg.ray.run_name or time.strftime("brain-%Y%m%d-%H%M%S"), storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.ray.keep_checkpoints,
                                               checkpoint_score_attribute="val_loss",
                                               checkpoint_score_order="min"),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures)),
    )


def _progress_callback(path: str):
    """A Ray Train callback that appends rank 0's report of every epoch to ``path``, one JSON line each, for
    the driver to print. It runs in the Train controller, which Ray Train places on the driver's node, so a
    local file reaches the driver without a queue actor (~1.2 CPU-s to start per fit). Under Ray Client the
    driver is elsewhere: the lines are then lost, not the training."""
    from ray.train import UserCallback

    class Progress(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics:
                line = json.dumps({k: v for k, v in metrics[0].items() if isinstance(v, (int, float))}) + "\n"
                try:
                    with open(path, "a") as f:              # one write of a whole line: the reader sees it whole
                        f.write(line)
                except OSError:
                    pass
    return Progress()


def fit_summary(result, best) -> str:
    """A finished fit in one line, e.g. ``epoch 1 (step 40); best checkpoint epoch 1, val_loss 0.912, val_r 0.186:
    runs/ray/<run>/checkpoint_...``: where it stopped and its best checkpoint (``best``) with that epoch's numbers.

    Parameters
    ----------
    result : ray.train.Result  what ``fit()`` returned: ``metrics`` is the last report, ``best_checkpoints`` the
        kept checkpoints with their reports
    best : ray.train.Checkpoint  the checkpoint the job goes on with (``experiment.trials.best_checkpoint``)
    """
    last = result.metrics or {}
    scored = next((m for c, m in (result.best_checkpoints or []) if c.path == best.path), {})

    def num(m: dict, key: str, fmt: str) -> str:
        v = m.get(key)
        if not isinstance(v, (int, float)):
            return "?"
        return format(int(v) if fmt == "d" and v == v else v, fmt)     # a count may arrive as a float
    where = f"epoch {num(last, 'epoch', 'd')} (step {num(last, 'step', 'd')})"
    if not scored:
        return f"{where}; checkpoint: {best.path}"
    return (f"{where}; best checkpoint epoch {num(scored, 'epoch', 'd')}, val_loss {num(scored, 'val_loss', '.4g')}, "
            f"val_r {num(scored, 'val_r', '.3f')}: {best.path}")


def fit_with_progress(trainer, log=print, what: str = "train"):
    """``trainer.fit()`` with one driver line per epoch: the workers' own output stays in Ray's log files
    (see ``experiment.launch.connect_ray``), so this is what the user sees of training."""
    import shutil
    import tempfile
    import threading

    folder = tempfile.mkdtemp(prefix="bt-progress-")
    path = Path(folder) / "epochs.jsonl"
    trainer.run_config.callbacks = [*(trainer.run_config.callbacks or []), _progress_callback(str(path))]
    done = threading.Event()
    seen: list[dict] = []
    offset = 0

    def show_new() -> None:
        """Print the whole lines appended since the last call."""
        nonlocal offset
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1
        offset += end
        for line in chunk[:end].splitlines():
            m = json.loads(line)
            seen.append(m)
            log(f"[{what}] epoch {m.get('epoch', '?')}: first batch {m.get('first_loss', math.nan):.4f}, "
                f"train_loss {m.get('train_loss', math.nan):.4f}, "
                f"val_loss {m.get('val_loss', math.nan):.4f}, val_r {m.get('val_r', math.nan):.3f}, "
                f"step {m.get('step', '?')} ({m.get('epoch_seconds', math.nan):.0f} s)")

    def pump():
        while not done.wait(1.0):
            show_new()
    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        try:
            result = trainer.fit()
        except Exception:          # the aborted controller exits: fit() raises ActorDiedError
            if getattr(trainer, "interrupted", False):
                raise KeyboardInterrupt("training aborted by Ctrl-C") from None
            raise
        if getattr(trainer, "interrupted", False):
            raise KeyboardInterrupt("training aborted by Ctrl-C")
    finally:
        done.set()
        thread.join(timeout=5)
        show_new()                                          # fit() returned: every report is in the file
        shutil.rmtree(folder, ignore_errors=True)
    # the loop's last report without a checkpoint is not in result.metrics: look at every report seen
    m = next((m for m in seen if m.get("non_finite")), None)
    if m is not None:
        raise NonFiniteLossError(
            f"training stopped in epoch {m.get('epoch')}: train_loss {m.get('train_loss')}, val_loss "
            f"{m.get('val_loss')} (not finite). Likely causes: extreme response values in the shards (rewrite them; "
            "data.max_abs_response bounds them) or learning rates too high (fit.optim.backbone_lr / head_lr)")
    return result
