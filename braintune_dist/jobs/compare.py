"""The papers' comparison: untuned, brain-tuned and control-tuned models, several replicate seeds each.

Every (target, seed) fit is one Ray Tune trial (``compare.max_concurrent`` at once), trained through the same
Ray Train path with the same steps; only the target differs (``fit.target``: the participants' responses, or
the block-permuted control). The trials only train. Their best checkpoints then meet in **one** alignment
report (one feature actor pool, one ridge stage), whose headline table averages over voxels, the evaluated
layers and held-out participants, with the SE over seeds and a t-test of each group against the untuned model
(``evaluate/summary.py``). With ``compare.lowlevel.enabled`` the low-level impact ``R = 100 (B_o − B_r) / B_o``
(ICLR 2025 Eq. 2) of every model follows: the share of its headline alignment that low-level speech features
explain. A trial writes ``<out>/<label>/fit.json`` (atomically); ``compare.resume`` keeps finished trials.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import PositiveFloat, PositiveInt

from braintune_dist.config import ConfigError, to_dict
from braintune_dist.downstream.config import DownstreamSettings
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.experiment.preflight import Checks, Restore
from braintune_dist.experiment.stages import TrainingStages, held_out, setup, with_seed
from braintune_dist.experiment.trials import (best_checkpoint, experiment_dir, open_child, open_parent, original_cwd,
                                              run_trials, save_parent)
from braintune_dist.io import write_text
from braintune_dist.tracking import Tracker
from braintune_dist.train.config import FitConfig


@dataclass
class LowLevelImpact:
    """Low-level impact of every model (ICLR 2025 Eq. 2) on the report's held-out participants."""

    enabled: bool = False
    """Compute R = 100 (B_o − B_r) / B_o per model and region, B_r with each low-level space removed in turn."""
    spaces: list[str] = field(default_factory=lambda: ["spectral", "phone_rate"])
    """Low-level spaces removed one at a time (features/lowlevel.py: spectral, word_rate, phone_rate, ...);
    R is averaged over them, as the paper averages over its low-level features."""


@dataclass
class CompareSettings:
    """Which models are compared, how many replicates, and how the trials run."""

    targets: list[Literal["brain", "shuffled", "teacher"]] = field(default_factory=lambda: ["brain", "shuffled"])
    """Training targets, one model group each ('<target>-tuned'); the untuned model is always evaluated.
    'shuffled' uses fit.target's permutation settings (shuffle, chunk_trs, min_distance)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Replicate seeds (fit.train.seed) of every target: data order, LoRA and head init, dropout, permutation."""
    name: str = "compare"
    """MLflow parent run name, Tune experiment name and prefix of the Ray Train run names."""
    max_concurrent: PositiveInt = 2
    """Fits (Tune trials) at once; each holds trial_cpus plus its fit.ray.num_workers Train workers."""
    trial_cpus: PositiveFloat = 0.25
    """CPUs held by a trial's own (driver) process; its Train workers ask for their own."""
    storage_path: str = "runs/tune"
    """Where Tune keeps the experiment's state (restore point); a shared path or s3:// on a cluster."""
    resume: bool = False
    """Restore <storage_path>/<name>: finished fits are kept, unfinished and failed ones run again."""
    lowlevel: LowLevelImpact = field(default_factory=LowLevelImpact)
    """Low-level impact of every model."""

    def __post_init__(self):
        if not self.targets or not self.seeds:
            raise ConfigError("compare.targets and compare.seeds must each name at least one")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"compare.seeds: {self.seeds} repeats a seed (replicates must differ)")


@dataclass
class CompareJobConfig(TrainingStages):
    """Compare untuned, brain-tuned and control-tuned models (N seeds each) on held-out participants."""

    eval: EvalSettings = field(default_factory=EvalSettings)
    """The one alignment report of every model (headline layers: eval.layers)."""
    compare: CompareSettings = field(default_factory=CompareSettings)
    """Models, seeds and trials."""
    downstream: DownstreamSettings = field(default_factory=lambda: DownstreamSettings(enabled=False))
    """Downstream probes, transcription and word-pair preference of every compared model (enabled: true), in
    <eval.out_dir>/<compare.name>/downstream."""

    def checks(self) -> Checks:
        c = self.compare
        return Checks(stages=self, eval=self.eval, targets=tuple(c.targets), concurrent=c.max_concurrent,
                      trial_cpus=c.trial_cpus, concurrent_field="compare.max_concurrent",
                      restore=Restore("compare.resume", c.storage_path, c.name) if c.resume else None)


def fit_of(cfg: CompareJobConfig, fit: FitConfig, target: str, seed: int) -> tuple[str, FitConfig]:
    """(label, FitConfig) of one model: ``fit`` with its target, replicate seed and Ray Train run name."""
    label = f"{target}-tuned-s{seed}"
    fit = dataclasses.replace(fit, target=dataclasses.replace(fit.target, kind=target))
    return label, with_seed(fit, seed, f"{cfg.compare.name}-{label}")


def fit_trial(config: dict, fits: list[FitConfig], labels: list[str], parent_run_id: str | None, out: str) -> None:
    """Tune trainable: one fit, ``config['i']`` of ``fits``; writes ``<out>/<label>/fit.json`` (best checkpoint,
    last metrics) and reports its path."""
    from ray import tune

    from braintune_dist.train.trainer import build_trainer
    original_cwd()
    fit, label = fits[config["i"]], labels[config["i"]]
    tags = {"job": "compare_fit", "model": label, "seed": str(fit.train.seed), "target": fit.target.kind}
    t0 = time.time()
    with open_child(Tracker(fit.tracking), fit.ray.run_name, parent_run_id, tags,
                    {"fit.train.seed": fit.train.seed, "fit.target": to_dict(fit.target)}) as tr:
        result = build_trainer(fit, mlflow_run_id=tr.run_id).fit()
        best = best_checkpoint(result)
        tr.set_tags({"checkpoint": best.path})
        tr.log_metrics({"train.seconds": time.time() - t0})
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    path = Path(out) / label / "fit.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(dict(label=label, checkpoint=best.path, metrics=metrics, started=t0,
                                     finished=time.time(), seconds=time.time() - t0)))
    tune.report({"done": 1, "fit_file": str(path), **{k: metrics[k] for k in ("first_loss", "val_r") if k in metrics}})


def run_fits(cfg: CompareJobConfig, fits: list[FitConfig], labels: list[str], parent_run_id: str | None,
             out: Path, log) -> list[dict]:
    """Every fit as a Tune trial; their ``fit.json`` contents in the order of ``labels``."""
    from ray import tune
    c = cfg.compare
    _, exp_dir = experiment_dir(c.storage_path, c.name)
    trainable = tune.with_resources(tune.with_parameters(fit_trial, fits=fits, labels=labels,
                                                         parent_run_id=parent_run_id, out=str(out.resolve())),
                                    {"CPU": c.trial_cpus})
    save_parent(exp_dir, parent_run_id)
    log(f"[compare] {len(fits)} fits ({', '.join(labels)}), up to {c.max_concurrent} at once (Tune experiment {exp_dir})")
    done = run_trials(trainable, len(fits), "i", c.name, c.storage_path, c.resume, c.max_concurrent, "compare", log,
                      ("first_loss", "val_r"))
    return [json.loads(Path(done[i]["fit_file"]).read_text()) for i in range(len(fits))]


def run(cfg: CompareJobConfig, log=print) -> dict:
    """Prepare once, fit every (target, seed), evaluate every model together; returns ``{'summary', 'rows',
    'fits', 'impact', 'downstream', 'run_id'}``."""
    from ray.train import Checkpoint

    from braintune_dist.analysis.impact import impact_report
    from braintune_dist.downstream.pipeline import run_downstream
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.evaluate.report import evaluate_models
    prepared = setup(cfg, cfg.checks(), log)             # data, shards, import/pretraining once, here
    fit, ds = prepared.fit, prepared.dataset
    held = held_out(fit.shards, cfg.eval.participants, prepared.plan.selected)
    models = [fit_of(cfg, fit, t, s) for t in cfg.compare.targets for s in cfg.compare.seeds]
    labels, fits = [m[0] for m in models], [m[1] for m in models]
    out = Path(cfg.eval.out_dir) / cfg.compare.name
    ev = dataclasses.replace(cfg.eval, out_dir=str(out))
    _, exp_dir = experiment_dir(cfg.compare.storage_path, cfg.compare.name)
    with open_parent(Tracker(fit.tracking), cfg.compare.name, exp_dir, cfg.compare.resume, to_dict(cfg),
                     {"job": "compare"}, log) as tr:
        done = run_fits(cfg, fits, labels, tr.run_id, out, log)
        for d in done:
            m = d["metrics"]
            log(f"[compare] {d['label']}: epoch {m.get('epoch', '?')}: loss of its first batch "
                f"{m.get('first_loss', float('nan')):.4f}, val_r {m.get('val_r', float('nan')):.3f}; {d['seconds']:.0f} s")
        specs = [ModelSpec("untuned", fit.model)]
        with_dirs = [(d["label"], Checkpoint(d["checkpoint"])) for d in done]
        with contextlib.ExitStack() as stack:
            specs += [ModelSpec(label, fit.model, stack.enter_context(ck.as_directory())) for label, ck in with_dirs]
            report = evaluate_models(ds, specs, ev, held, tr, log)
            impact = (impact_report(ds, specs, ev, held, report, cfg.compare.lowlevel.spaces, tr, log)
                      if cfg.compare.lowlevel.enabled else [])
            downstream = run_downstream(specs, cfg.downstream, out / "downstream", tr, log) \
                if cfg.downstream.enabled else None
        run_id = tr.run_id
    log(f"[compare] tables and figures in {out}; MLflow run {run_id}")
    return dict(summary=report.summary, rows=report.rows, fits=done, impact=impact, downstream=downstream,
                run_id=run_id)
