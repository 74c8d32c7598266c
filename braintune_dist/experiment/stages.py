"""The stages every training job runs before its fits, configured once for all of them.

A training job's config derives from :class:`TrainingStages` (its fields come first on the command line and in the
presets) and adds its own stages (``eval``, ``compare``, ``grid``, ``search``). :func:`setup` runs the shared part:
preflight, the dataset and its shards, an optional Whisper import or phone pretraining, and the plan of the fit.
The :class:`Prepared` it returns is what the job hands down: the dataset opened once, the fit to train, its plan.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.manifest import load_manifest
from braintune_dist.experiment.imports import ImportSettings, with_imported
from braintune_dist.experiment.preflight import Checks, PreflightSettings, preflight
from braintune_dist.experiment.prepare import PrepareSettings, prepare
from braintune_dist.model.config import PretrainConfig
from braintune_dist.train.config import FitConfig
from braintune_dist.train.plan import Plan, plan


@dataclass
class TrainingStages:
    """The stages shared by every training job (multi_brain, compare, scaling, sweep)."""

    fit: FitConfig = field(default_factory=FitConfig)
    """The Ray Train fit: data, shards, target, model, LoRA, head, optimizer, engine, epochs, resources, MLflow.
    Grid, comparison and sweep jobs start every fit from it and set what they vary."""
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    """Dataset generation (when fit.data.root is missing), noise ceilings and shard writing (to fit.shards), once."""
    import_model: ImportSettings = field(default_factory=ImportSettings)
    """Import a CTranslate2 Whisper model (e.g. the bundled tiny.en) as an HF checkpoint, once, before any fit;
    when enabled, its output becomes fit.model.pretrained."""
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(enabled=False))
    """Phone-recognition pretraining of a random-init backbone on fit.data, once, before any fit; when enabled,
    its output becomes fit.model.pretrained (the demo's tiny model needs it)."""
    preflight: PreflightSettings = field(default_factory=PreflightSettings)
    """Checks of data, model, checkpoints, restore points and cluster resources before any data writing or fit."""


@dataclass(frozen=True, eq=False)
class Prepared:
    """What :func:`setup` hands to the rest of a job."""

    fit: FitConfig
    """The fit to train (model.pretrained set when an import or pretraining ran)."""
    dataset: LebelDataset
    """The dataset, opened once: the evaluation and the held-out participants read it."""
    plan: Plan
    """The base fit's plan: its participants and schedule."""


def setup(job: TrainingStages, checks: Checks, log=print) -> Prepared:
    """Preflight (``checks``: the job's typed view of what the outside world must hold), data and shards, the
    optional import or pretraining, the plan."""
    preflight(checks, log)
    dataset = prepare(job.fit.data, job.fit.shards, job.prepare, log=log).dataset
    fit = with_imported(job.fit, job.import_model, log)
    from braintune_dist.model.pretrain import with_pretrained   # torch: only when a job runs
    fit = with_pretrained(fit, job.pretrain, log, dataset)
    return Prepared(fit=fit, dataset=dataset, plan=plan(fit))


def held_out(shards: str, configured: list[str], trained: tuple[str, ...] | list[str]) -> list[str]:
    """Evaluated participants: ``configured`` (eval.participants), else those of the shard set ``shards`` the tuning did
    not read (``trained``: the plan's ``selected`` participants, whose windows a control target reads too), else (all
    tuned on) every participant."""
    if configured:
        return list(configured)
    everyone = load_manifest(shards)["subjects"]
    return [s for s in everyone if s not in trained] or everyone


def with_seed(fit: FitConfig, seed: int, run_name: str) -> FitConfig:
    """``fit`` as one replicate: its seed (data order, LoRA and head init, dropout, permutation) and run name."""
    return dataclasses.replace(fit, train=dataclasses.replace(fit.train, seed=seed),
                               ray=dataclasses.replace(fit.ray, run_name=run_name))
