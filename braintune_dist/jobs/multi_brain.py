"""Multi-participant brain-tuning, end to end: data → shards → Ray Train fit → alignment before/after → MLflow.

``jobs/multi_brain.py`` parses a ``MultiBrainConfig`` and calls ``run``. The Ray Train worker loop only
sees the ``TuneConfig`` part of the config.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field

from braintune_dist.config import from_dict, to_dict
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.stream import load_manifest
from braintune_dist.evaluate.report import EvalSettings, alignment_report
from braintune_dist.jobs.prepare_data import PrepareConfig, prepare
from braintune_dist.jobs.preflight import PreflightSettings, preflight
from braintune_dist.model.pretrain import PretrainConfig, with_pretrained
from braintune_dist.tracking import Tracker, run_manifest
from braintune_dist.train.checkpoint import load_backbone
from braintune_dist.train.loop import TuneConfig
from braintune_dist.train.trainer import build_trainer, plan


@dataclass
class MultiBrainConfig(TuneConfig):
    """Brain-tune a speech model on several participants (Ray Train + DeepSpeed), then report alignment."""

    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    """Dataset generation/validation and shard writing (its data block and shard.out are taken from
    the top-level `data` and `shards` fields)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    """Alignment report of the tuned model against the untuned one on held-out participants."""
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(enabled=False))
    """Phone-recognition pretraining of a random-init backbone before tuning (its `data` is the top-level
    one); when enabled, its output becomes model.pretrained (the demo's tiny model needs it)."""
    preflight: PreflightSettings = field(default_factory=PreflightSettings)
    """Checks of data, model, checkpoints and cluster resources before any data writing or training."""


def tune_part(cfg: MultiBrainConfig) -> TuneConfig:
    """The ``TuneConfig`` fields of a job config (what the workers receive)."""
    d = to_dict(cfg)
    return from_dict(TuneConfig, {f.name: d[f.name] for f in dataclasses.fields(TuneConfig)})


def held_out(cfg: MultiBrainConfig, trained: list[str]) -> list[str]:
    """Evaluated participants: configured, else those not tuned on, else (all tuned on) every participant."""
    if cfg.eval.subjects:
        return list(cfg.eval.subjects)
    everyone = load_manifest(cfg.shards)["subjects"]
    return [s for s in everyone if s not in trained] or everyone


def run(cfg: MultiBrainConfig, log=print) -> dict:
    """Run the whole job; returns ``{'result', 'checkpoint', 'rows', 'run_id', 'plan'}``."""
    preflight(cfg, log)
    prep = dataclasses.replace(cfg.prepare, data=cfg.data, stream_check=False)
    prepare(prep, cfg.shards, log)
    cfg = with_pretrained(cfg, log)
    tune = tune_part(cfg)
    p = plan(tune)
    log(f"[train] participants {p['participants']}, {p['train_rows']} training windows, {p['n_vertices']} vertices; "
        f"{cfg.ray.num_workers} workers × batch {cfg.stream.batch_size} → {p['steps_per_epoch']} steps/epoch, "
        f"{p['total_steps']} steps max; engine {cfg.engine.kind}, loss {cfg.train.loss}")
    tracker = Tracker(cfg.tracking)
    name = cfg.ray.run_name or time.strftime("brain-%Y%m%d-%H%M%S")
    with tracker.start(name, params=to_dict(cfg), tags={"job": "multi_brain"}) as tr:
        tr.log_text(json.dumps(run_manifest(to_dict(cfg), cfg.shards), indent=1), "run_manifest.json")
        tr.log_params({"plan.participants": ",".join(p["participants"]), "plan.n_participants": len(p["participants"]),
                       "plan.train_rows": p["train_rows"], "plan.total_steps": p["total_steps"]})
        t = time.time()
        trainer = build_trainer(dataclasses.replace(tune, ray=dataclasses.replace(tune.ray, run_name=name)),
                                mlflow_run_id=tr.run_id, run_plan=p)
        result = trainer.fit()
        best = result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
        log(f"[train] finished in {time.time() - t:.0f} s: {result.metrics}")
        log(f"[train] best checkpoint: {best.path}")
        tr.set_tags({"checkpoint": best.path})
        tr.log_metrics({"train.seconds": time.time() - t})
        rows = []
        if cfg.eval.enabled:
            ds = LebelDataset(cfg.data.root, cfg.data)
            subjects = held_out(cfg, p["participants"])
            with best.as_directory() as ckpt_dir:                         # local copy if storage is remote
                models = {"untuned": load_backbone(cfg.model), "brain-tuned": load_backbone(cfg.model, ckpt_dir)}
            rows = alignment_report(ds, models, cfg.eval, subjects, tr, log, tag=f"{name}_")
        run_id = tr.run_id
    log(f"[mlflow] run {run_id} in {tracker.uri} (open the UI with: ./run ui)")
    return dict(result=result, checkpoint=best.path, rows=rows, run_id=run_id, plan=p)
