"""Downstream job: what brain-tuning did to the model itself. Linear probes per layer on speech tasks (the
offline espeak-ng suite and any real dataset named), Whisper transcription with the original decoder, and the
semantic–phonetic preference of word representations, for the untuned model and any set of checkpoints.
``jobs/downstream.py`` is its thin driver."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.config import ConfigError, to_dict
from braintune_dist.downstream.config import DownstreamSettings
from braintune_dist.experiment.imports import ImportSettings
from braintune_dist.model.config import ModelConfig
from braintune_dist.tracking import Tracker, TrackingConfig


@dataclass
class DownstreamConfig:
    """Downstream tasks, transcription and word-pair preference of untuned and brain-tuned models."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone of the untuned model (and the architecture of the checkpoints)."""
    checkpoints: list[str] = field(default_factory=list)
    """Brain-tuning checkpoint directories (LoRA merged into the backbone; head dropped)."""
    labels: list[str] = field(default_factory=list)
    """Their names in tables, one per checkpoint; [] = '<target>-tuned-s<seed>' from each checkpoint's own
    config (replicates of one target then form one group, summarised over seeds)."""
    include_untuned: bool = True
    """Also measure the untuned backbone: the reference every difference is taken against."""
    import_model: ImportSettings = field(default_factory=ImportSettings)
    """Import a CTranslate2 Whisper first (enabled: sets model.pretrained to import_model.out)."""
    downstream: DownstreamSettings = field(default_factory=DownstreamSettings)
    """Tasks, features, probes, transcription, preference and where they run."""
    out_dir: str = "runs/reports/downstream"
    """Tables and figures (and, by default, the clip feature cache under feature_cache/)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow."""
    run_name: str = "downstream"
    """MLflow run name."""

    def __post_init__(self):
        if not self.checkpoints and not self.include_untuned:
            raise ConfigError("nothing to measure: checkpoints is empty and include_untuned is false")
        if self.labels and len(self.labels) != len(self.checkpoints):
            raise ConfigError(f"labels: {len(self.labels)} names for {len(self.checkpoints)} checkpoints")
        names = list(self.labels) + (["untuned"] if self.include_untuned else [])
        if len(set(names)) != len(names):
            raise ConfigError(f"labels: {list(self.labels)} repeat a name (or use 'untuned', the reference's)")


def label_of(checkpoint: str) -> str:
    """'<target>-tuned-s<seed>' from a checkpoint's own fit config."""
    from braintune_dist.train.checkpoint import read_meta
    fit = read_meta(checkpoint)["config"]
    return f"{fit['target']['kind']}-tuned-s{fit['train']['seed']}"


def preflight(cfg: DownstreamConfig, log=print) -> None:
    """Model, checkpoints, layers, output and dataset folders and the MLflow store, all at once, before any work."""
    import time

    from braintune_dist.experiment.checks import (checkpoint_problems, layer_problems, model_problems, output_problems,
                                                  tracking_problems)
    from braintune_dist.experiment.preflight import PreflightError
    t0 = time.time()
    d = cfg.downstream
    problems = [] if cfg.import_model.enabled else model_problems(cfg.model) + checkpoint_problems(cfg.checkpoints,
                                                                                                   cfg.model)
    problems += output_problems({"out_dir": cfg.out_dir, "downstream.features.cache_dir": d.features.cache_dir,
                                 "downstream.suite.out": d.suite.out if d.synthetic else "",
                                 "downstream.preference.out": d.preference.out if d.preference.enabled else ""})
    problems += tracking_problems(cfg.tracking, "tracking")
    if not problems and not cfg.import_model.enabled:
        problems += layer_problems(cfg.model, d.features.layers, "downstream.features.layers")
    problems += [f"downstream.datasets[{i}].root: {src.root} is not a folder" for i, src in enumerate(d.datasets)
                 if not Path(src.root).is_dir()]
    if problems:
        raise PreflightError("preflight: " + f"{len(problems)} problem(s) before any work:\n  - " + "\n  - ".join(problems))
    log(f"[preflight] model, checkpoints and downstream inputs ok in {time.time() - t0:.1f} s")


def run(cfg: DownstreamConfig, log=print):
    """Preflight, then the downstream report of every model; returns its ``DownstreamReport``."""
    from braintune_dist.downstream.pipeline import load_tasks, run_downstream
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.experiment.imports import ensure_imported
    from braintune_dist.experiment.launch import connect_ray
    from braintune_dist.train.checkpoint import check_complete
    if cfg.import_model.enabled:
        out = ensure_imported(cfg.import_model, log)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, family="whisper", pretrained=str(out)),
                                  import_model=dataclasses.replace(cfg.import_model, enabled=False))
    preflight(cfg, log)
    labels = list(cfg.labels) or [label_of(str(check_complete(ck))) for ck in cfg.checkpoints]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"checkpoints: two have the same target and seed ({labels}); name them in labels")
    specs = [ModelSpec("untuned", cfg.model)] if cfg.include_untuned else []
    specs += [ModelSpec(label, cfg.model, ck) for label, ck in zip(labels, cfg.checkpoints)]
    tasks = load_tasks(cfg.downstream, log)            # every reader's refusal before Ray or MLflow start
    if cfg.downstream.compute.runner != "local":
        connect_ray(cfg.downstream.compute.address)
    with Tracker(cfg.tracking).start(cfg.run_name, params=to_dict(cfg), tags={"job": "downstream"}) as tr:
        return run_downstream(specs, cfg.downstream, cfg.out_dir, tr, log, tasks)
