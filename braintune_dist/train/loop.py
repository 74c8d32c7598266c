"""The Ray Train worker loop of multi-participant brain-tuning.

Each worker streams its shard of the training windows (bind by stimulus: one backbone pass per window,
scored against every participant who heard it), steps the engine, validates on held-out stories every
epoch (loss all-reduced across workers), and reports metrics plus a checkpoint through
``ray.train.report``. Rank 0 logs to MLflow. On restart after a failure the loop resumes from the
latest reported checkpoint: same weights, optimizer, scheduler and step; finished epochs are not redone.
"""
from __future__ import annotations

import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from braintune_dist.config import to_dict
from braintune_dist.data.stream import iter_kwargs
from braintune_dist.seeding import derive
from braintune_dist.tracking import Tracker, TrackingConfig
from braintune_dist.train.checkpoint import mark_complete, read_model_file, restore_weights, save_model
from braintune_dist.train.config import FitConfig
from braintune_dist.train.plan import WorkerSpec
from braintune_dist.train.engine import Engine
from braintune_dist.train.losses import brain_loss, moments_r, pearson_moments
from braintune_dist.model.tuner import BrainTuner


def _allreduce_mean(total: float, count: int, device) -> float:
    t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return float(t[0] / max(t[1], 1.0))


def memory_mb() -> tuple[float, float]:
    """(peak RSS, current anonymous RSS) of this process, MB (1e6 bytes). The peak (ru_maxrss) also counts
    the object-store pages the stream has mapped (shared memory), which grows over epochs as new blocks land
    elsewhere in the store; anonymous RSS (Linux RssAnon; NaN elsewhere) is the worker's own memory."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e6
    try:
        status = Path("/proc/self/status").read_text()
        anon = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("RssAnon:")) * 1024 / 1e6
    except (OSError, StopIteration, ValueError):
        anon = math.nan
    return peak, anon


def _allreduce_max(x: float, device) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t[0])


def _batch_loss(engine: Engine, name: str, batch: dict, vmask: torch.Tensor) -> torch.Tensor:
    pred = engine.forward(batch["audio"])                                  # (B, V) or (B, P, V)
    dev = engine.device
    return brain_loss(name, pred, batch["responses"].to(dev), batch["mask"].to(dev), vmask)


@torch.no_grad()
def validate(engine: Engine, shard, cfg: FitConfig, vmask: torch.Tensor) -> tuple[float, float]:
    """Validation of one epoch, over every worker's windows: (loss, r).

    loss: the training loss, mean over batches. r: Pearson r over the validation windows of prediction and
    response, per (participant, covered vertex), averaged: the scale of the evaluation, the same for every loss
    (a sweep over loss types compares trials on it; losses such as mse and 1 − spatial r are not comparable).
    """
    engine.module.eval()
    total, n = 0.0, 0
    moments = torch.zeros((6, *vmask.shape), dtype=torch.float64, device=engine.device)   # n Σp Σt Σpp Σtt Σpt
    for batch in shard.iter_torch_batches(**dict(iter_kwargs(cfg.stream), local_shuffle_buffer_size=None)):
        pred = engine.forward(batch["audio"])                                  # (B, V) or (B, P, V)
        target, mask = batch["responses"].to(engine.device), batch["mask"].to(engine.device)
        total += float(brain_loss(cfg.train.loss, pred, target, mask, vmask))
        n += 1
        moments += pearson_moments(pred, target, mask)
    engine.module.train()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(moments)
    return _allreduce_mean(total, n, engine.device), moments_r(moments, vmask)


def weights_checksum(model: BrainTuner) -> float:
    """Sum of |w| over the trainable weights (float64): equal before and after a faithful restore."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters() if p.requires_grad))


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point. ``config``: ``{"spec": WorkerSpec}``, the driver's typed fit and plan."""
    import ray.train

    spec: WorkerSpec = config["spec"]
    cfg, p = spec.fit, spec.plan
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    # the shards first: with several workers, asking for them starts the split's coordinator actors, which then
    # come up while this worker builds the model (~5 s on a CPU) instead of after it
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    participants = list(p.participants)
    # the same initial weights on every rank; dropout differs per rank (each rank sees other windows)
    model = BrainTuner(cfg.model, cfg.lora, cfg.head, p.n_vertices, len(participants), seed=cfg.train.seed)
    torch.manual_seed(derive(cfg.train.seed, "dropout", rank))
    if spec.feature_stats is not None:             # measured once by the driver (trainer.feature_stats)
        model.set_feature_stats(*spec.feature_stats)

    # -- resume: weights from the model files, optimizer/scheduler/step from the engine's own state
    start_epoch, best_val, bad_epochs = 0, math.inf, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            payload = read_model_file(d)
            restore_weights(model, payload, d)
            start_epoch, best_val, bad_epochs = payload["epoch"] + 1, payload["best_val"], payload["bad_epochs"]
    engine = Engine(model, cfg.optim, cfg.engine, p.total_steps, cfg.stream.batch_size)
    if ckpt is not None:
        with ckpt.as_directory() as d:
            engine.load(Path(d))
    vmask = torch.as_tensor(p.coverage.copy(), dtype=torch.bool, device=engine.device)   # (P, V)
    # where this (possibly restarted) run began: lets tests and users check a resume picked up the right state
    start = dict(start_epoch=start_epoch, start_step=engine.step, start_checksum=weights_checksum(engine.module))

    tracker = Tracker(cfg.tracking if rank == 0 else TrackingConfig(enabled=False))
    with tracker.start("train", run_id=spec.mlflow_run_id):
        for epoch in range(start_epoch, cfg.train.epochs):
            engine.module.train()
            t0, total, n, samples, first_loss = time.time(), 0.0, 0, 0, math.nan
            for i, batch in enumerate(train_shard.iter_torch_batches(**iter_kwargs(cfg.stream))):
                if cfg.train.max_steps_per_epoch and i >= cfg.train.max_steps_per_epoch:
                    break
                loss = _batch_loss(engine, cfg.train.loss, batch, vmask)
                if i == 0:                          # this rank's first batch: tells replicates apart at once
                    first_loss = float(loss.detach())
                stepped = engine.backward_step(loss)
                total, n, samples = total + float(loss.detach()), n + 1, samples + len(batch["audio"])
                if stepped and engine.step % cfg.train.log_every == 0:
                    tracker.log_metrics({"train/loss": float(loss), **engine.lrs()}, step=engine.step)
            train_seconds = time.time() - t0                                  # training only (no validation)
            train_loss = _allreduce_mean(total, n, engine.device)
            val_loss, val_r = validate(engine, val_shard, cfg, vmask) if cfg.data.val_stories else (train_loss, math.nan)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                # every rank sees the same all-reduced loss: all stop here; the driver turns this into an error
                # (raising instead would make Ray Train restart the workers into the same loss max_failures times)
                ray.train.report(dict(start, epoch=epoch, step=engine.step, train_loss=train_loss, val_loss=val_loss,
                                      non_finite=1))
                break
            if val_loss < best_val:
                best_val, bad_epochs = val_loss, 0
            else:
                bad_epochs += 1
            rss, anon = memory_mb()                 # only rank 0's metrics reach the driver: also the max
            metrics = dict(start, epoch=epoch, step=engine.step, first_loss=first_loss, train_loss=train_loss,
                           val_loss=val_loss, val_r=val_r, best_val=best_val, epoch_seconds=time.time() - t0,
                           train_seconds=train_seconds,
                           samples=samples, peak_rss_mb=rss, peak_rss_mb_max=_allreduce_max(rss, engine.device),
                           rss_anon_mb=anon)
            tracker.log_metrics({f"epoch/{k}": v for k, v in metrics.items() if k != "epoch"}, step=epoch)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                engine.save(tmp)
                if rank == 0:
                    save_model(tmp, engine.module, dict(config=to_dict(cfg), n_vertices=p.n_vertices,
                                                        participants=participants, epoch=epoch, step=engine.step,
                                                        val_loss=val_loss, best_val=best_val, bad_epochs=bad_epochs,
                                                        total_steps=p.total_steps))
                    mark_complete(tmp)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
            if cfg.train.patience and bad_epochs >= cfg.train.patience:
                break
