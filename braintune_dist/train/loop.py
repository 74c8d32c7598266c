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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt
from braintune_dist.model.backbone import ModelConfig
from braintune_dist.config import ConfigError, from_dict, to_dict
from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.stream import StreamConfig, iter_kwargs
from braintune_dist.seeding import derive
from braintune_dist.targets import TargetSettings
from braintune_dist.tracking import Tracker, TrackingConfig
from braintune_dist.train.checkpoint import mark_complete, read_model_file, restore_weights, save_model
from braintune_dist.train.engine import Engine, EngineSettings, OptimSettings
from braintune_dist.train.losses import brain_loss, moments_r, pearson_moments
from braintune_dist.model.tuner import BrainTuner, HeadSettings, LoraSettings


@dataclass
class TrainSettings:
    """Epochs, batches, loss, early stopping."""

    epochs: PositiveInt = 30
    """Maximum epochs over the training windows."""
    loss: Literal["mse", "spatial_corr", "cos_huber", "temporal_corr"] = "mse"
    """Brain loss (see braintune_dist/train/losses.py for the combination rule)."""
    patience: NonNegativeInt = 5
    """Stop after this many epochs without a lower validation loss (0 = never)."""
    max_steps_per_epoch: NonNegativeInt = 0
    """Cap on micro-batches per epoch and worker (0 = the whole shard); for smoke tests."""
    log_every: PositiveInt = 10
    """Log train metrics to MLflow every this many optimizer steps."""
    seed: int = 122
    """The fit's replicate seed: the training stream's order (its shuffle and per-epoch reseeding), the LoRA and
    head initialisation, dropout, and a control target's permutation, each from its own stream derived from it.
    Fits that differ only here are replicates. The backbone's random init (model.seed) and the data-size draws
    (stream.selection_seed, nested across sizes) keep their own seeds."""


@dataclass
class RaySettings:
    """Ray Train resources and fault tolerance."""

    address: str = ""
    """Ray cluster address; empty = the job's cluster (ray job submit) or a new local one."""
    num_workers: PositiveInt = 2
    """Training workers (one per GPU on a GPU cluster)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: PositiveFloat = 0.5
    """CPUs per worker; 0.5 on a 2-core laptop leaves Ray Data a CPU (else fit() hangs)."""
    max_failures: int = 2
    """Restarts from the latest checkpoint after a worker dies (FailureConfig)."""
    keep_checkpoints: PositiveInt = 2
    """Best-k checkpoints kept (by validation loss)."""
    storage_path: str = "runs/ray"
    """Where Ray Train writes checkpoints (a shared path or s3:// on a cluster)."""
    run_name: str = ""
    """Ray Train run name; empty = brain-<timestamp>."""


@dataclass
class FitConfig:
    """Multi-participant brain-tuning of a speech model on Ray Train."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset (for shards and the alignment report)."""
    shards: str = "runs/shards"
    """Shard directory written by braintune-shards / jobs/prepare_data.py."""
    stream: StreamConfig = field(default_factory=StreamConfig)
    """How training windows are streamed (bind mode, shuffle, data-size selection, batch size)."""
    target: TargetSettings = field(default_factory=TargetSettings)
    """What the fit predicts: the participants' responses, or a control target that tells the gains of brain data
    from those of tuning itself (block-permuted responses of the same stimuli, drawn from train.seed; or a text
    teacher model's representations of the same stimuli's transcript)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Speech backbone."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapters (or full fine-tuning)."""
    head: HeadSettings = field(default_factory=HeadSettings)
    """Shared or per-participant head."""
    optim: OptimSettings = field(default_factory=OptimSettings)
    """Optimizer and LR schedule."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """DeepSpeed or DDP."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Epochs, loss, early stopping."""
    ray: RaySettings = field(default_factory=RaySettings)
    """Ray resources and fault tolerance."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow."""

    def __post_init__(self):
        cap, accum = self.train.max_steps_per_epoch, self.optim.grad_accum
        if cap and cap < accum:
            raise ConfigError(f"fit.train.max_steps_per_epoch: {cap} micro-batches per epoch is fewer than "
                              f"fit.optim.grad_accum {accum}: no optimizer step would be taken")


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
    """Ray Train entry point. ``config``: cfg (FitConfig dict), total_steps, coverage (P, V) bool,
    participants, n_vertices, feature_stats ((hidden,) mean, SD) or None, mlflow_run_id."""
    import ray.train

    cfg = from_dict(FitConfig, config["cfg"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    # the shards first: with several workers, asking for them starts the split's coordinator actors, which then
    # come up while this worker builds the model (~5 s on a CPU) instead of after it
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    participants = config["participants"]
    # the same initial weights on every rank; dropout differs per rank (each rank sees other windows)
    model = BrainTuner(cfg.model, cfg.lora, cfg.head, config["n_vertices"], len(participants), seed=cfg.train.seed)
    torch.manual_seed(derive(cfg.train.seed, "dropout", rank))
    if config.get("feature_stats") is not None:        # measured once by the driver (trainer.feature_stats)
        model.set_feature_stats(*config["feature_stats"])

    # -- resume: weights from model.pt, optimizer/scheduler/step from the engine's own state
    start_epoch, best_val, bad_epochs = 0, math.inf, 0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            payload = read_model_file(d)
            restore_weights(model, payload, d)
            start_epoch, best_val, bad_epochs = payload["epoch"] + 1, payload["best_val"], payload["bad_epochs"]
    engine = Engine(model, cfg.optim, cfg.engine, config["total_steps"], cfg.stream.batch_size)
    if ckpt is not None:
        with ckpt.as_directory() as d:
            engine.load(Path(d))
    vmask = torch.as_tensor(config["coverage"].copy(), dtype=torch.bool, device=engine.device)   # (P, V)
    # where this (possibly restarted) run began: lets tests and users check a resume picked up the right state
    start = dict(start_epoch=start_epoch, start_step=engine.step, start_checksum=weights_checksum(engine.module))

    tracker = Tracker(cfg.tracking if rank == 0 else TrackingConfig(enabled=False))
    with tracker.start("train", run_id=config.get("mlflow_run_id")):
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
                    save_model(tmp, engine.module, dict(config=to_dict(cfg), n_vertices=config["n_vertices"],
                                                        participants=participants, epoch=epoch, step=engine.step,
                                                        val_loss=val_loss, best_val=best_val, bad_epochs=bad_epochs,
                                                        total_steps=config["total_steps"]))
                    mark_complete(tmp)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
            if cfg.train.patience and bad_epochs >= cfg.train.patience:
                break
