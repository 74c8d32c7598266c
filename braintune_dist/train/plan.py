"""What a fit will do, computed on the driver from the shard manifest (no Ray, no torch): the heads' participants,
their coverage, the epoch size and the optimizer steps. The driver plans once and sends the plan, with the fit
config, to every Ray Train worker as one typed ``WorkerSpec``."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from braintune_dist.data.manifest import load_manifest, read_coverage
from braintune_dist.data.stream import select, summarize
from braintune_dist.config import ConfigError
from braintune_dist.train.config import FitConfig


@dataclass(frozen=True, eq=False)
class Plan:
    """A fit's participants, coverage and schedule length.

    With the teacher target (``targets/teacher.py``) the head predicts one pseudo-participant 'teacher' of the
    teacher's width d: participants ('teacher',), coverage (1, d) all True, n_vertices d; the windows stay those of
    ``selected``.
    """

    participants: tuple[str, ...]
    """The head's slots, in order."""
    coverage: np.ndarray
    """(n_participants, n_vertices) bool: the vertices each participant's responses cover."""
    n_vertices: int
    """Width of the head's output."""
    selected: tuple[str, ...]
    """The manifest participants whose windows the streams read (a control target reads them too)."""
    train_rows: int
    """Training windows per epoch (all workers)."""
    val_rows: int
    """Validation windows (0 = the shards hold no validation split)."""
    steps_per_epoch: int
    """Optimizer steps per epoch and worker."""
    total_steps: int
    """Steps of the learning-rate schedule: steps_per_epoch × train.epochs."""


@dataclass(frozen=True, eq=False)
class WorkerSpec:
    """Everything a Ray Train worker needs, pickled as is to each worker (``train_loop_per_worker``)."""

    fit: FitConfig
    """The fit, with the driver's resolved paths and the stream seed derived from train.seed."""
    plan: Plan
    """Participants, coverage and schedule length."""
    feature_stats: tuple[np.ndarray, np.ndarray] | None
    """(mean, sd), each (hidden,), of the untuned backbone's pooled features (head.standardize), else None."""
    mlflow_run_id: str | None
    """The MLflow run rank 0 logs to (opened by the driver); None = rank 0 opens its own."""


def plan(cfg: FitConfig) -> Plan:
    """The plan of fit ``cfg`` from its shard manifest; a batch larger than the data is a ``ConfigError`` naming the
    fields."""
    manifest = load_manifest(cfg.shards)
    sel = select(manifest, "train", cfg.stream)
    everyone = manifest["subjects"]
    if cfg.target.kind == "teacher":
        from braintune_dist.targets import teacher
        width = teacher.shape(cfg.target)[2]
        heads, coverage = ["teacher"], np.ones((1, width), bool)
    else:
        width, heads = int(manifest["n_vertices"]), sel.participants
        coverage = read_coverage(cfg.shards)[[everyone.index(p) for p in sel.participants]]
    train_rows = summarize(cfg.shards, "train", cfg.stream)["rows"]
    val_rows = summarize(cfg.shards, "val", cfg.stream)["rows"] if manifest["rows"].get("val") else 0
    per_worker = train_rows // cfg.ray.num_workers                 # streaming_split(equal=True) floors
    micro = per_worker // cfg.stream.batch_size if cfg.stream.drop_last else math.ceil(per_worker / cfg.stream.batch_size)
    if micro < cfg.optim.grad_accum:
        raise ConfigError(f"fit.stream.batch_size={cfg.stream.batch_size} × fit.optim.grad_accum="
                          f"{cfg.optim.grad_accum} × fit.ray.num_workers={cfg.ray.num_workers} exceeds the {train_rows} "
                          f"training rows of {cfg.shards}: no optimizer step per epoch; lower one of them")
    if cfg.train.max_steps_per_epoch:                # at least grad_accum (FitConfig checks it)
        micro = min(micro, cfg.train.max_steps_per_epoch)
    steps = micro // cfg.optim.grad_accum
    return Plan(participants=tuple(heads), coverage=coverage, n_vertices=width, selected=tuple(sel.participants),
                train_rows=train_rows, val_rows=val_rows, steps_per_epoch=steps, total_steps=steps * cfg.train.epochs)
