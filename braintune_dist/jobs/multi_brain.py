"""Multi-participant brain-tuning, end to end: data → shards → Ray Train fit → alignment before/after → MLflow.

``jobs/multi_brain.py`` parses a ``MultiBrainConfig`` and calls ``run``. The Ray Train worker loop only
sees its ``fit`` stage (a ``FitConfig``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.config import to_dict
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.manifest import load_manifest
from braintune_dist.errors import note_saved
from braintune_dist.evaluate.report import EvalSettings, alignment_report
from braintune_dist.jobs.grid import PARENT_FILE, experiment_dir, open_parent, save_parent
from braintune_dist.jobs.import_whisper import ImportSettings, with_imported
from braintune_dist.jobs.prepare_data import PrepareSettings, prepare
from braintune_dist.jobs.preflight import PreflightSettings, preflight
from braintune_dist.model.pretrain import PretrainConfig, with_pretrained
from braintune_dist.tracking import Tracker, run_manifest
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.train.loop import FitConfig
from braintune_dist.train.trainer import build_trainer, fit_with_progress, plan


@dataclass
class MultiBrainConfig:
    """Brain-tune a speech model on several participants (Ray Train + DeepSpeed), then report alignment."""

    fit: FitConfig = field(default_factory=FitConfig)
    """The Ray Train fit: data, shards, model, LoRA, head, optimizer, engine, epochs, resources, MLflow."""
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    """Dataset generation (when fit.data.root is missing), noise ceilings and shard writing (to fit.shards)."""
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(enabled=False))
    """Phone-recognition pretraining of a random-init backbone on fit.data before tuning; when enabled, its
    output becomes fit.model.pretrained (the demo's tiny model needs it)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    """Alignment report of the tuned model against the untuned one on held-out participants."""
    preflight: PreflightSettings = field(default_factory=PreflightSettings)
    """Checks of data, model, checkpoints and cluster resources before any data writing or training."""
    import_model: ImportSettings = field(default_factory=ImportSettings)
    """Import a CTranslate2 Whisper model (e.g. the bundled tiny.en) as an HF checkpoint before tuning; when
    enabled, its output becomes fit.model.pretrained."""
    seeds: list[int] = field(default_factory=list)
    """Replicate seeds (fit.train.seed: data order, LoRA and head init, dropout): one fit per seed, each a nested
    MLflow run; the report gives every tuned model and the mean ± SE over seeds. [] = one fit."""


def setup(cfg, log=print) -> FitConfig:
    """What every training job does first: preflight, data and shards, optional pretraining.

    ``cfg`` is a job config with ``fit``, ``prepare``, ``pretrain`` and ``preflight`` fields (multi_brain,
    sweep, scaling). Returns the fit config to train (``model.pretrained`` set when pretraining ran).
    """
    preflight(cfg, log)
    prepare(cfg.fit.data, cfg.fit.shards, cfg.prepare, log=log)
    fit = with_imported(cfg.fit, getattr(cfg, "import_model", None), log)
    return with_pretrained(fit, cfg.pretrain, log)


def held_out(fit: FitConfig, eval_subjects: list[str], trained: list[str]) -> list[str]:
    """Evaluated participants: configured, else those the tuning did not read (``trained``: the plan's
    ``selected`` participants, whose windows a control target reads too), else (all tuned on) every participant."""
    if eval_subjects:
        return list(eval_subjects)
    everyone = load_manifest(fit.shards)["subjects"]
    return [s for s in everyone if s not in trained] or everyone


def _fit_one(fit: FitConfig, name: str, p: dict, tracker: Tracker, log):
    """One Ray Train fit, its metrics in the run ``tracker`` has open; returns (result, best checkpoint)."""
    t = time.time()
    trainer = build_trainer(dataclasses.replace(fit, ray=dataclasses.replace(fit.ray, run_name=name)),
                            mlflow_run_id=tracker.run_id, run_plan=p)
    result = fit_with_progress(trainer, log)
    best = result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
    log(f"[train] {name} finished in {time.time() - t:.0f} s: {result.metrics}")
    log(f"[train] best checkpoint: {best.path}")
    tracker.set_tags({"checkpoint": best.path})
    tracker.log_metrics({"train.seconds": time.time() - t})
    return result, best


def run(cfg: MultiBrainConfig, log=print) -> dict:
    """Run the whole job; returns ``{'result', 'checkpoint', 'rows', 'run_id', 'plan', 'seeds'}`` (result and
    checkpoint of the first seed)."""
    fit = setup(cfg, log)
    p = plan(fit)
    log(f"[train] participants {p['participants']}, {p['train_rows']} training windows, {p['n_vertices']} vertices; "
        f"{fit.ray.num_workers} workers × batch {fit.stream.batch_size} → {p['steps_per_epoch']} steps/epoch, "
        f"{p['total_steps']} steps max; engine {fit.engine.kind}, loss {fit.train.loss}")
    tracker = Tracker(fit.tracking)
    name = fit.ray.run_name or time.strftime("brain-%Y%m%d-%H%M%S")
    seeds = list(cfg.seeds)
    note_saved(f"checkpoints of every epoch under {Path(fit.ray.storage_path) / name}"
               f"{'-s<seed>' if seeds else ''}: rerun with --fit.ray.run_name {name} to resume from them")
    # a rerun under the same run_name resumes Ray Train's checkpoints and reopens the same MLflow run
    storage, exp_dir = experiment_dir(fit.ray.storage_path, name)
    local = "://" not in storage
    resumed = bool(fit.ray.run_name) and local and (exp_dir / PARENT_FILE).is_file()
    with open_parent(tracker, name, exp_dir, resumed, to_dict(cfg), {"job": "multi_brain"}, log) as tr:
        if local:
            save_parent(exp_dir, tr.run_id)
        tr.log_text(json.dumps(run_manifest(to_dict(cfg), fit.shards), indent=1), "run_manifest.json")
        if not resumed:                             # MLflow refuses a param logged again with another value
            tr.log_params({"plan.participants": ",".join(p["participants"]),
                           "plan.n_participants": len(p["participants"]), "plan.train_rows": p["train_rows"],
                           "plan.total_steps": p["total_steps"]})
        fits = []                                   # (label, result, best checkpoint)
        tuned = "brain-tuned" if fit.target.kind == "brain" else f"{fit.target.kind}-tuned"   # a control says so
        if not seeds:
            fits.append((tuned, *_fit_one(fit, name, p, tr, log)))
        for seed in seeds:
            log(f"[train] seed {seed} ({len(fits) + 1}/{len(seeds)})")
            fs = dataclasses.replace(fit, train=dataclasses.replace(fit.train, seed=seed))
            child = Tracker(fit.tracking)
            earlier = tr.run_id and child.find_run(seed=str(seed), **{"mlflow.parentRunId": tr.run_id})
            with child.start(f"{name}-s{seed}", nested=True, tags={"job": "multi_brain", "seed": str(seed)},
                             params={"fit.train.seed": seed},
                             run_id=earlier or None, end=True):
                fits.append((f"{tuned}-s{seed}", *_fit_one(fs, f"{name}-s{seed}", p, child, log)))
        rows = []
        if cfg.eval.enabled:
            ds = LebelDataset(fit.data.root, fit.data)
            subjects = held_out(fit, cfg.eval.subjects, p["selected"])
            # the workers read the checkpoints from Ray Train's storage: shared storage on a cluster
            with contextlib.ExitStack() as stack:
                models = [ModelSpec("untuned", fit.model)] + [
                    ModelSpec(label, fit.model, stack.enter_context(best.as_directory())) for label, _, best in fits]
                rows = alignment_report(ds, models, cfg.eval, subjects, tr, log, tag=f"{name}_")
        run_id = tr.run_id
    log(f"[mlflow] run {run_id} in {tracker.uri} (open the UI with: ./run ui)")
    _, result, best = fits[0]
    return dict(result=result, checkpoint=best.path, rows=rows, run_id=run_id, plan=p, seeds=seeds)
