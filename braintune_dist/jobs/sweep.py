"""Hyper-parameter sweeps of brain-tuning: Ray Tune + Optuna (TPE) + ASHA over Ray Train runs, in MLflow.

The driver prepares the data once, opens one MLflow *parent* run per sweep and starts a ``tune.Tuner`` whose
trainable is a plain function (Ray Train V2 cannot be passed to a Tuner directly): each trial turns its
sampled point into a ``FitConfig``, builds the usual ``TorchTrainer`` (``build_trainer``) and fits it with a
``TuneReportCallback`` so every epoch's ``val_r`` reaches Tune (and ASHA). Each trial logs to its own MLflow
run, tagged ``mlflow.parentRunId`` = the sweep's run, so the UI nests trials under their sweep.
``search.resume`` (``jobs/sweep.py --resume``) restores the experiment from its storage path after the driver
was interrupted: finished trials are kept, unfinished and errored ones are run again (a re-run trial's Ray Train
run resumes from its own latest checkpoint and reopens its own MLflow run), and the search samples the trials
still missing. The restore point is the experiment state Tune saves every few seconds, so a trial that finished
just before the driver died may run again.
"""
from __future__ import annotations

import dataclasses
import math
import time
import typing
from dataclasses import dataclass, field

from braintune_dist.config import ConfigError, to_dict
from braintune_dist.experiment import compat
from braintune_dist.experiment.launch import tune_console
from braintune_dist.experiment.preflight import Checks, Restore
from braintune_dist.experiment.stages import TrainingStages, setup
from braintune_dist.experiment.trials import (experiment_dir, open_child, open_parent, original_cwd,
                                              restore_or_create, save_parent)
from braintune_dist.tracking import Stopped, Tracker
from braintune_dist.train.config import FitConfig, TrainSettings


SPACE_KEYS = {"lora_rank": "lora.rank", "loss": "train.loss", "backbone_lr": "optim.backbone_lr",
              "head_lr": "optim.head_lr", "stories_per_participant": "stream.stories_per_participant",
              "hours_per_participant": "stream.hours_per_participant", "n_participants": "stream.n_participants"}
"""search.space name → the dotted FitConfig field a trial sets."""
LOG_UNIFORM = ("backbone_lr", "head_lr")
"""Space names given as [low, high] of a log-uniform draw (the others are lists of choices)."""


@dataclass
class SearchSpace:
    """What is searched. An empty list leaves that setting at its value in the base config."""

    lora_rank: list[int] = field(default_factory=lambda: [4, 8, 16])
    """LoRA rank choices (alpha scales with it: alpha = 4 × rank, as the base config's 8/32)."""
    loss: list[str] = field(default_factory=lambda: ["mse", "spatial_corr"])
    """Brain-loss choices (names as train.loss)."""
    backbone_lr: list[float] = field(default_factory=lambda: [1.0e-4, 1.0e-2])
    """[low, high] of a log-uniform backbone learning rate."""
    head_lr: list[float] = field(default_factory=lambda: [1.0e-4, 1.0e-2])
    """[low, high] of a log-uniform head learning rate."""
    stories_per_participant: list[int] = field(default_factory=list)
    """Data-size choices: stories kept per participant (0 = all)."""
    hours_per_participant: list[float] = field(default_factory=list)
    """Data-size choices: hours of fMRI kept per participant (0 = all); use this or stories, not both."""
    n_participants: list[int] = field(default_factory=list)
    """Choices of the number of training participants (drawn from stream.participants or all, nested)."""

    def __post_init__(self):
        losses = typing.get_args(typing.get_type_hints(TrainSettings)["loss"])
        bad = [x for x in self.loss if x not in losses]
        if bad:
            raise ConfigError(f"search.space.loss: {bad} not among {list(losses)}")
        for name in ("backbone_lr", "head_lr"):
            bounds = getattr(self, name)
            if bounds and (len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]):
                raise ConfigError(f"search.space.{name}: needs [low, high] with 0 < low <= high, got {bounds}")
        if self.stories_per_participant and self.hours_per_participant:
            raise ConfigError("search.space: set stories_per_participant or hours_per_participant, not both")
        if any(r < 1 for r in self.lora_rank):
            raise ConfigError(f"search.space.lora_rank: ranks must be >= 1, got {self.lora_rank}")
        if any(n < 1 for n in self.n_participants):
            raise ConfigError(f"search.space.n_participants: must be >= 1, got {self.n_participants}")


@dataclass
class SearchSettings:
    """Search space, search algorithm, scheduler, budget, resources and where the sweep is stored."""

    space: SearchSpace = field(default_factory=SearchSpace)
    """The search space."""
    num_samples: int = 8
    """Trials in the whole sweep."""
    max_t: int = 0
    """ASHA: most epochs a trial may run (0 = train.epochs)."""
    grace_period: int = 1
    """ASHA: epochs every trial runs before it can be stopped."""
    reduction_factor: int = 2
    """ASHA: 1/reduction_factor of the trials go on at each rung."""
    max_concurrent_trials: int = 1
    """Trials at once; each runs ray.num_workers Train workers (1 on a 2-core laptop)."""
    trial_cpus: float = 0.25
    """CPUs held by the trial's own (driver) process; its Train workers ask for their own."""
    seed: int = 0
    """Seed of the Optuna (TPE) sampler."""
    name: str = "sweep"
    """Sweep name: the Tune experiment folder and the MLflow parent run name."""
    storage_path: str = "runs/tune"
    """Where Tune keeps the experiment state (restore point); a shared path or s3:// on a cluster."""
    resume: bool = False
    """Restore the sweep <storage_path>/<name>: finished trials are kept, unfinished/errored ones are run."""
    points_to_evaluate: list[dict[str, typing.Union[int, float, str]]] = field(default_factory=list)
    """Points the first trials run, in order, before Optuna samples (a known-good setting, say). Keys are
    search.space names (lora_rank, loss, backbone_lr, ...); a searched name left out takes the base fit's value."""

    def __post_init__(self):
        for i, point in enumerate(self.points_to_evaluate):
            unknown = sorted(set(point) - set(SPACE_KEYS))
            if unknown:
                raise ConfigError(f"search.points_to_evaluate[{i}]: {unknown} not among {list(SPACE_KEYS)}")


@dataclass
class SweepConfig(TrainingStages):
    """Hyper-parameter and data-size sweep of multi-participant brain-tuning (Ray Tune + Optuna + ASHA)."""

    search: SearchSettings = field(default_factory=SearchSettings)
    """Search space, algorithm, scheduler and budget (every trial starts from fit and overrides what it samples)."""

    def checks(self) -> Checks:
        s = self.search
        return Checks(stages=self, concurrent=s.max_concurrent_trials, trial_cpus=s.trial_cpus,
                      concurrent_field="search.max_concurrent_trials", n_participants=tuple(s.space.n_participants),
                      restore=Restore("search.resume", s.storage_path, s.name) if s.resume else None)


def param_space(space: SearchSpace) -> dict:
    """Tune search space; keys are dotted FitConfig fields (``trial_config`` applies them)."""
    from ray import tune
    out = {}
    for name, key in SPACE_KEYS.items():
        values = getattr(space, name)
        if not values:
            continue
        if name in LOG_UNIFORM:                                   # [low, high], checked by SearchSpace
            out[key] = tune.loguniform(values[0], values[1]) if values[0] < values[1] else values[0]
        else:
            out[key] = tune.choice(list(values))
    return out


def first_points(s: SearchSettings, fit: FitConfig) -> list[dict]:
    """``s.points_to_evaluate`` as full points of the searched dotted keys (Optuna takes only whole points):
    a searched key a point leaves out takes the base fit's value."""
    searched = {name: key for name, key in SPACE_KEYS.items() if key in param_space(s.space)}

    def value(dotted: str):
        node = fit
        for part in dotted.split("."):
            node = getattr(node, part)
        return node
    return [{key: point.get(name, value(key)) for name, key in searched.items()} for point in s.points_to_evaluate]


def _replace(cfg, dotted: str, value):
    """``cfg`` with the field at the dotted path set to ``value`` (nested dataclasses are copied, not changed)."""
    head, _, rest = dotted.partition(".")
    return dataclasses.replace(cfg, **{head: _replace(getattr(cfg, head), rest, value) if rest else value})


def trial_config(base: FitConfig, point: dict) -> FitConfig:
    """The base fit with a sampled point (dotted keys of ``SPACE_KEYS``) applied; the configs' ``__post_init__`` checks
    run on the result (``SearchSpace`` checked the ranges)."""
    cfg = base
    for dotted, value in point.items():
        cfg = _replace(cfg, dotted, value)
    if "lora.rank" in point:                      # keep the alpha/rank scale of the base config (alpha is an int)
        cfg = _replace(cfg, "lora.alpha", round(base.lora.alpha * point["lora.rank"] / base.lora.rank))
    if point.get("stream.n_participants") and base.stream.participants:
        # an explicit list would win over n_participants in select(): take a nested prefix of it instead
        cfg = _replace(cfg, "stream.participants", base.stream.participants[:point["stream.n_participants"]])
        cfg = _replace(cfg, "stream.n_participants", 0)
    return cfg


def trial_params(cfg: FitConfig, p) -> dict:
    """What MLflow records per trial: data size, participants, rank, loss, learning rates."""
    return {"trial.participants": ",".join(p.participants), "trial.n_participants": len(p.participants),
            "trial.stories_per_participant": cfg.stream.stories_per_participant,
            "trial.hours_per_participant": cfg.stream.hours_per_participant, "trial.train_rows": p.train_rows,
            "trial.lora_rank": cfg.lora.rank, "trial.lora_alpha": cfg.lora.alpha, "trial.loss": cfg.train.loss,
            "trial.backbone_lr": cfg.optim.backbone_lr, "trial.head_lr": cfg.optim.head_lr}


def tune_stop_event():
    """The event Tune sets when it stops this trial (ASHA). Taken at the trial's start: Tune sets it, then drops
    the trial's session, and only after that does the fit raise from the teardown (or exit where it reports),
    maybe after the driver has ended the trial's MLflow run KILLED; ending it FAILED then would overwrite that."""
    return compat.tune_stop_event()


def run_trial(point: dict, base: FitConfig, parent_run_id: str | None, train_storage: str) -> None:
    """Tune function trainable: one Ray Train fit of the sampled point, metrics forwarded to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from braintune_dist.train.plan import plan
    from braintune_dist.train.trainer import build_trainer
    original_cwd()
    trial = tune.get_context().get_trial_id()
    cfg = trial_config(base, point)
    # the trial id as Train run name: a re-run (resume) of this trial picks up its own latest checkpoint
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, run_name=trial, storage_path=train_storage))
    p = plan(cfg)
    # a re-run of this trial (the sweep was resumed) reopens the trial's MLflow run instead of leaving it RUNNING
    with open_child(Tracker(cfg.tracking), f"trial_{trial}", parent_run_id, {"job": "sweep_trial", "trial_id": trial},
                    trial_params(cfg, p)) as tr:
        trainer = build_trainer(cfg, mlflow_run_id=tr.run_id, run_plan=p)
        trainer.run_config.callbacks = [*(trainer.run_config.callbacks or []), TuneReportCallback()]
        stop = tune_stop_event()
        try:
            result = trainer.fit()
        except BaseException as exc:
            if isinstance(exc, SystemExit) or stop.is_set():
                raise Stopped("Tune stopped this trial") from exc
            raise
        # an ASHA stop kills this process before here: such a run keeps its per-epoch epoch.val_loss only
        hist = sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])
        if hist:
            tr.log_metrics({"val_loss": hist[-1]["val_loss"], "val_r": hist[-1]["val_r"],
                            "best_val_r": max((m["val_r"] for m in hist if math.isfinite(m["val_r"])), default=math.nan),
                            "epochs": len(hist)})


def run(cfg: SweepConfig, log=print) -> dict:
    """Prepare the data, run (or resume) the sweep; returns ``{'results', 'best', 'parent_run_id', 'path'}``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    fit = setup(cfg, cfg.checks(), log).fit          # data, shards, import/pretraining once, here
    cfg = dataclasses.replace(cfg, fit=fit)
    s = cfg.search
    _, exp_dir = experiment_dir(s.storage_path, s.name)
    tracker = Tracker(cfg.fit.tracking)
    t = time.time()
    with open_parent(tracker, s.name, exp_dir, s.resume, to_dict(cfg), {"job": "sweep"}, log) as tr:
        parent = tr.run_id
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=fit, parent_run_id=parent, train_storage=str(exp_dir / "train")),
            {"CPU": s.trial_cpus})
        tuner = restore_or_create(trainable, s.storage_path, s.name, s.resume, "search", lambda storage: tune.Tuner(
            trainable, param_space=param_space(s.space),
            tune_config=tune.TuneConfig(
                # the validation r, not the loss: trials that train on different losses are compared
                metric="val_r", mode="max", num_samples=s.num_samples,
                search_alg=OptunaSearch(seed=s.seed, points_to_evaluate=first_points(s, cfg.fit) or None),
                max_concurrent_trials=s.max_concurrent_trials,
                # max_t + 1: ASHA kills a trial that reaches max_t, before its function returns; a killed
                # Train V2 fit was seen to leave the next trial unscheduled (and its MLflow run RUNNING)
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=(s.max_t or cfg.fit.train.epochs) + 1,
                                        grace_period=s.grace_period, reduction_factor=s.reduction_factor)),
            run_config=tune.RunConfig(name=s.name, storage_path=storage,
                                      **tune_console(log, "sweep", s.num_samples, ("val_r", "val_loss")))))
        save_parent(exp_dir, parent)
        results = tuner.fit()
        # a trial ASHA stopped either was killed before it could end its MLflow run or ended it on the stop's
        # exception: KILLED, not RUNNING forever nor FAILED (Tune records no error for it)
        tr.end_children(parent)
        tr.end_children(parent, now="FAILED", trial_ids={r.metrics["trial_id"] for r in results
                                                         if not r.error and r.metrics and "trial_id" in r.metrics})
        rows = [dict(trial=r.path.rsplit("/", 1)[-1], val_r=(r.metrics or {}).get("val_r", math.nan),
                     val_loss=(r.metrics or {}).get("val_loss", math.nan),
                     epochs=(r.metrics or {}).get("training_iteration", 0), error=str(r.error or ""),
                     **{k: v for k, v in (r.config or {}).items()}) for r in results]
        done = [r for r in rows if math.isfinite(r["val_r"]) and not r["error"]]
        best = max(done, key=lambda r: r["val_r"]) if done else None
        tr.log_table(rows, "sweep/trials.csv")
        if best:
            tr.log_metrics({"best_val_r": best["val_r"], "trials": len(rows), "errored": len(rows) - len(done)})
            tr.set_tags({"best_trial": best["trial"]})
    log(f"[sweep] {len(rows)} trials ({len(rows) - len(done)} errored/unfinished) in {time.time() - t:.0f} s; "
        f"best: {best}")
    log(f"[sweep] restore point: {exp_dir}; MLflow parent {tracker.outcome(parent)}")
    return dict(results=results, rows=rows, best=best, parent_run_id=parent, path=str(exp_dir))

