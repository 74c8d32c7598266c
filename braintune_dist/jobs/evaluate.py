"""Alignment evaluation job: per-layer features of one or more models → voxel-wise ridge → r, r/ceiling,
region summaries, data-efficiency curves → MLflow. ``jobs/evaluate.py`` is its thin driver."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.model.config import ModelConfig
from braintune_dist.config import ConfigError, to_dict
from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.experiment.launch import connect_ray
from braintune_dist.experiment.preflight import preflight_evaluate
from braintune_dist.tracking import Tracker, TrackingConfig


@dataclass
class EvaluateConfig:
    """Brain alignment of speech models (untuned and/or brain-tuned checkpoints) on a dataset."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset and story split (train stories fit the encoding models; the test story scores them)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone of the untuned model (and the architecture of the checkpoints)."""
    checkpoints: list[str] = field(default_factory=list)
    """Brain-tuning checkpoint directories to evaluate (LoRA merged into the backbone; head dropped)."""
    include_untuned: bool = True
    """Also evaluate the untuned backbone, as the reference."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    """Participants, features, ridge, data-efficiency curve, output directory."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow."""
    run_name: str = "evaluate"
    """MLflow run name."""

    def __post_init__(self):
        if not self.checkpoints and not self.include_untuned:
            raise ConfigError("nothing to evaluate: checkpoints is empty and include_untuned is false (name "
                              "checkpoint folders in checkpoints, or set include_untuned true)")


def run(cfg: EvaluateConfig, log=print) -> list[dict]:
    """Preflight, then the alignment report of every model; returns its rows."""
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.evaluate.report import alignment_report
    from braintune_dist.train.checkpoint import check_complete
    preflight_evaluate(cfg, log)
    ds = LebelDataset(cfg.data.root, cfg.data)
    models = [ModelSpec("untuned", cfg.model)] if cfg.include_untuned else []
    models += [ModelSpec(Path(check_complete(ck)).name, cfg.model, ck) for ck in cfg.checkpoints]
    participants = list(cfg.eval.participants) or ds.participants()
    if cfg.eval.compute.runner != "local":            # after every input check: bad input fails fast
        connect_ray(cfg.eval.compute.address)
    with Tracker(cfg.tracking).start(cfg.run_name, params=to_dict(cfg), tags={"job": "evaluate"}) as tr:
        return alignment_report(ds, models, cfg.eval, participants, tr, log)
