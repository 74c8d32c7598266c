"""Multi-participant brain-tuning, end to end: data → shards → Ray Train fit → alignment before/after → MLflow.

``jobs/multi_brain.py`` parses a ``MultiBrainConfig`` and calls ``run``. The Ray Train workers get the fit and its
plan as one typed ``WorkerSpec``.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.config import to_dict
from braintune_dist.errors import note_saved
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.experiment.preflight import Checks
from braintune_dist.experiment.stages import Prepared, TrainingStages, held_out, setup, with_seed
from braintune_dist.experiment.trials import PARENT_FILE, best_checkpoint, experiment_dir, open_parent, save_parent
from braintune_dist.io import is_uri
from braintune_dist.tracking import Tracker, run_manifest
from braintune_dist.train.config import FitConfig


@dataclass
class MultiBrainConfig(TrainingStages):
    """Brain-tune a speech model on several participants (Ray Train + DeepSpeed), then report alignment."""

    eval: EvalSettings = field(default_factory=EvalSettings)
    """Alignment report of the tuned model against the untuned one on held-out participants."""
    seeds: list[int] = field(default_factory=list)
    """Replicate seeds (fit.train.seed: data order, LoRA and head init, dropout): one fit per seed, each a nested
    MLflow run; the report gives every tuned model and the mean ± SE over seeds. [] = one fit."""

    def checks(self) -> Checks:
        return Checks(stages=self, eval=self.eval)


def _fit_one(fit: FitConfig, prepared: Prepared, tracker: Tracker, log):
    """One Ray Train fit, its metrics in the run ``tracker`` has open; returns (result, best checkpoint)."""
    from braintune_dist.train.trainer import build_trainer, fit_summary, fit_with_progress
    t = time.time()
    result = fit_with_progress(build_trainer(fit, mlflow_run_id=tracker.run_id, run_plan=prepared.plan), log)
    best = best_checkpoint(result)
    log(f"[train] {fit.ray.run_name} done in {time.time() - t:.0f} s: {fit_summary(result, best)}")
    tracker.set_tags({"checkpoint": best.path})
    tracker.log_metrics({"train.seconds": time.time() - t})
    return result, best


def run(cfg: MultiBrainConfig, log=print) -> dict:
    """Run the whole job; returns ``{'result', 'checkpoint', 'rows', 'run_id', 'plan', 'seeds'}`` (result and
    checkpoint of the first seed)."""
    prepared = setup(cfg, cfg.checks(), log)
    fit, p = prepared.fit, prepared.plan
    log(f"[train] participants {list(p.participants)}, {p.train_rows} training windows, {p.n_vertices} vertices; "
        f"{fit.ray.num_workers} workers × batch {fit.stream.batch_size} → {p.steps_per_epoch} steps/epoch, "
        f"{p.total_steps} steps max; engine {fit.engine.kind}, loss {fit.train.loss}")
    tracker = Tracker(fit.tracking)
    name = fit.ray.run_name or time.strftime("brain-%Y%m%d-%H%M%S")
    seeds = list(cfg.seeds)
    note_saved(f"checkpoints of every epoch under {Path(fit.ray.storage_path) / name}"
               f"{'-s<seed>' if seeds else ''}: rerun with --fit.ray.run_name {name} to resume from them")
    # a rerun under the same run_name resumes Ray Train's checkpoints and reopens the same MLflow run
    _, exp_dir = experiment_dir(fit.ray.storage_path, name)
    local = not is_uri(fit.ray.storage_path)
    resumed = bool(fit.ray.run_name) and local and (exp_dir / PARENT_FILE).is_file()
    with open_parent(tracker, name, exp_dir, resumed, to_dict(cfg), {"job": "multi_brain"}, log) as tr:
        if local:
            save_parent(exp_dir, tr.run_id)
        tr.log_text(json.dumps(run_manifest(to_dict(cfg), fit.shards), indent=1), "run_manifest.json")
        if not resumed:                             # MLflow refuses a param logged again with another value
            tr.log_params({"plan.participants": ",".join(p.participants), "plan.n_participants": len(p.participants),
                           "plan.train_rows": p.train_rows, "plan.total_steps": p.total_steps})
        fits = []                                   # (label, result, best checkpoint)
        tuned = "brain-tuned" if fit.target.kind == "brain" else f"{fit.target.kind}-tuned"   # a control says so
        if not seeds:
            fits.append((tuned, *_fit_one(with_seed(fit, fit.train.seed, name), prepared, tr, log)))
        for seed in seeds:
            log(f"[train] seed {seed} ({len(fits) + 1}/{len(seeds)})")
            child = Tracker(fit.tracking)
            earlier = tr.run_id and child.find_run(seed=str(seed), **{"mlflow.parentRunId": tr.run_id})
            with child.start(f"{name}-s{seed}", nested=True, tags={"job": "multi_brain", "seed": str(seed)},
                             params={"fit.train.seed": seed}, run_id=earlier or None, end=True):
                fits.append((f"{tuned}-s{seed}", *_fit_one(with_seed(fit, seed, f"{name}-s{seed}"), prepared,
                                                           child, log)))
        rows = []
        if cfg.eval.enabled:
            from braintune_dist.evaluate.featurize import ModelSpec
            from braintune_dist.evaluate.report import alignment_report
            held = held_out(fit.shards, cfg.eval.participants, p.selected)
            # the workers read the checkpoints from Ray Train's storage: shared storage on a cluster
            with contextlib.ExitStack() as stack:
                models = [ModelSpec("untuned", fit.model)] + [
                    ModelSpec(label, fit.model, stack.enter_context(best.as_directory())) for label, _, best in fits]
                rows = alignment_report(prepared.dataset, models, cfg.eval, held, tr, log, tag=f"{name}_")
        run_id = tr.run_id
    log(f"[mlflow] {tracker.outcome(run_id)}{' (open the UI with: ./run ui)' if tracker.logged(run_id) else ''}")
    _, result, best = fits[0]
    return dict(result=result, checkpoint=best.path, rows=rows, run_id=run_id, plan=p, seeds=seeds)
