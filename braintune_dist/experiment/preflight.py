"""Preflight: what a job checks before it spends any data-writing, training or GPU time.

A typo in a participant or story name, a shard that was truncated or garbled on its way to shared storage,
a checkpoint whose copy was interrupted, a model path that does not exist or a cluster too small for the
requested workers would otherwise surface minutes into the job, inside a Ray worker, as a traceback (or
as a ``fit()`` that waits forever for CPUs). ``preflight(cfg)`` looks at all of them first, cheaply
(directory listings, the shard manifest, file sizes and checksums, ``ray.cluster_resources()``), and
raises one ``PreflightError`` listing every problem, each naming the config field and the file.

A training job describes what it will do as one typed :class:`Checks` (its stages, its evaluation if any, the
targets it trains, how many fits run at once, the Tune experiment it restores) and ``experiment.stages.setup`` calls
``preflight(checks)`` first thing; the evaluate job calls ``preflight_evaluate``. Checks whose input does not exist
yet are left to the stage that makes it: a dataset that ``prepare.simulate`` will generate, shards that ``prepare``
will write (the writer checksums what it writes), a Ray cluster the driver has not joined.
"""
from __future__ import annotations

import sys
import time
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from braintune_dist.data.fingerprint import stale_inputs
from braintune_dist.data.lebel import DatasetError, LebelDataset
from braintune_dist.data.shards import MANIFEST
from braintune_dist.data.manifest import display, exists, load_manifest, verify_shards
from braintune_dist.data.manifest import where as manifest_file
from braintune_dist.data.stream import shards_for
from braintune_dist.targets import teacher
from braintune_dist.config import ConfigError
from braintune_dist.errors import UserError
from braintune_dist.experiment import compat
from braintune_dist.experiment.checks import (aliasing_note, cache_problems, import_problems, job_window_problems,
                                              names_problems, checkpoint_problems, layer_problems, model_problems,
                                              output_problems, target_problems, tracking_problems, window_problems)
from braintune_dist.io import is_uri



class PreflightError(UserError):
    """A job's inputs cannot work; the message lists every problem found, each naming its field or file."""


@dataclass
class PreflightSettings:
    """Checks run before any training or GPU time."""

    enabled: bool = True
    """Run the checks (turn off only to work around a check that is wrong for your setup)."""
    resources: Literal["require", "warn", "off"] = "require"
    """Cluster CPUs/GPUs vs ray.num_workers × resources: 'require' stops a job the joined cluster cannot
    hold; 'warn' only warns (autoscaling clusters, whose GPU nodes start when Ray Train asks); 'off'."""


@dataclass(frozen=True)
class Restore:
    """A Tune experiment a job restores: ``<storage_path>/<name>`` must hold one."""

    field: str
    """The job's resume field, as errors name it (grid.resume, compare.resume, search.resume)."""
    storage_path: str
    """The experiment's storage path (a local folder or a URI)."""
    name: str
    """The experiment's name."""


@dataclass(frozen=True)
class Checks:
    """What a training job will do, for its preflight: built by the job (its ``checks()``), checked before any work."""

    stages: typing.Any
    """The job's config (an ``experiment.stages.TrainingStages``): fit, prepare, import_model, pretrain, preflight."""
    eval: typing.Any = None
    """The evaluation stage (an ``EvalSettings``) when the job evaluates, else None."""
    targets: tuple[str, ...] = ()
    """The fit targets the job trains (brain, shuffled, teacher); () = fit.target.kind."""
    concurrent: int = 1
    """Fits that run at once (Tune trials), each with fit.ray.num_workers workers."""
    trial_cpus: float = 0.0
    """CPUs each trial's own process holds besides its workers."""
    concurrent_field: str = ""
    """The field that sets ``concurrent``, as errors name it."""
    restore: Restore | None = None
    """The Tune experiment to restore (a resumed grid, comparison or sweep), else None."""
    n_participants: tuple[int, ...] = field(default_factory=tuple)
    """Participant counts a sweep draws (search.space.n_participants), checked against those available."""


def dataset_problems(cfg, ev=None, ds: LebelDataset | None = None) -> list[str]:
    """Participants and stories named in the config (and its evaluation ``ev``) exist in the dataset (``ds``, when
    the caller has it open; skipped until it exists)."""
    fit = cfg.fit
    root = Path(fit.data.root)
    if not root.exists():
        return [] if cfg.prepare.simulate else [
            f"fit.data.root: dataset root not found: {root} (set prepare.simulate true to generate one)"]
    try:
        ds = ds or LebelDataset(root, fit.data)
        participants = ds.participants()
        heard = set().union(*(ds.stories(s) for s in participants)) if participants else set()
    except DatasetError as exc:
        return [f"fit.data: {exc}"]
    where = ds.resp_dir
    out = names_problems("fit.stream.participants", fit.stream.participants, participants, where)
    if ev is not None:
        out += names_problems("eval.participants", ev.participants, participants, where)
    for name, stories in (("fit.data.train_stories", fit.data.train_stories), ("fit.data.val_stories", fit.data.val_stories),
                          ("fit.data.test_story", [fit.data.test_story])):
        bad = [s for s in stories if s not in heard]
        if bad:
            out.append(f"{name}: {bad} has no <story>.hf5 for any participant in {where}")
    if not fit.data.train_stories and heard and not heard - set(fit.data.val_stories) - {fit.data.test_story}:
        out.append(f"fit.data.val_stories: {fit.data.val_stories} and fit.data.test_story {fit.data.test_story!r} "
                   f"take every story in {where}: no training stories left (name fewer validation stories, or "
                   "set fit.data.train_stories)")
    return out


def shard_problems(cfg, ds: LebelDataset | None = None) -> list[str]:
    """The shard set agrees with the config (and the dataset ``ds`` it was written from) and every shard the run
    reads is whole (skipped until written)."""
    from braintune_dist.train.plan import plan
    fit = cfg.fit
    shard_dir = fit.shards                      # a local folder or an object-storage URI
    try:
        if not exists(shard_dir, MANIFEST) or cfg.prepare.shard.overwrite:
            return []                           # none yet, interrupted, or to be rewritten: prepare writes them
        m = load_manifest(shard_dir)
    except DatasetError as exc:
        return [f"fit.shards: {exc}"]
    where = manifest_file(shard_dir, MANIFEST)
    out = names_problems("fit.stream.participants", fit.stream.participants, m["subjects"], where)
    if (Path(fit.data.root) / "derivative").is_dir():      # else prepare simulates it, then checks in ensure_shards
        out += [f"fit.shards: {p}" for p in stale_inputs(m.get("inputs"), ds or LebelDataset(fit.data.root, fit.data),
                                                          display(shard_dir))]
    for name, configured, split in (("fit.data.val_stories", fit.data.val_stories, "val"),
                                    ("fit.data.train_stories", fit.data.train_stories, "train"),
                                    ("fit.data.test_story", [fit.data.test_story], "test")):
        written = m["splits"].get(split)
        if configured and written is not None and sorted(configured) != sorted(written):
            out.append(f"{name}: {list(configured)}, but the shards in {display(shard_dir)} were written with {split} "
                       f"stories {written} (rewrite them: --prepare.shard.overwrite true)")
    if out:
        return out
    try:
        plan(fit)                               # selection, data-size options, batch size vs rows
        for split in ("train", "val") if m["rows"].get("val") else ("train",):
            sel, shards = shards_for(m, split, fit.stream, shard_dir)
            audio = [m["audio_files"][s] for s in sel.kept_stories()] if m["audio_store"] == "story" else []
            verify_shards(shard_dir, shards + audio, fit.stream.verify)
    except teacher.TeacherError:
        pass                                    # target_problems names it
    except ConfigError as exc:                  # names its fields
        out.append(str(exc))
    except UserError as exc:
        out.append(f"fit.shards: {exc}")
    return out


def resume_problems(ray_cfg) -> list[str]:
    """A fixed ``fit.ray.run_name`` that already has checkpoints resumes from the latest one: it must be whole."""
    if not ray_cfg.run_name or is_uri(ray_cfg.storage_path):
        return []                               # a fresh run, or object storage (checked by Ray on restore)
    run_dir = Path(ray_cfg.storage_path) / ray_cfg.run_name
    try:
        record = compat.train_checkpoints(run_dir)
    except ValueError as exc:
        return [f"fit.ray.run_name {ray_cfg.run_name!r}: {exc}; Ray Train cannot resume it"]
    name = record and record["latest"]
    if not name:
        return []                               # a fresh run, or no checkpoint yet
    from braintune_dist.train.checkpoint import CheckpointError, check_resumable
    try:
        check_resumable(run_dir / name)
    except CheckpointError as exc:
        return [f"fit.ray.run_name {ray_cfg.run_name!r} would resume from a broken checkpoint: {exc}. "
                f"Remove {run_dir} or choose another fit.ray.run_name"]
    return []


def resource_problems(ray_cfg, concurrent: int = 1, extra_cpus: float = 0.0, concurrent_field: str = "") -> list[str]:
    """CPUs/GPUs for ``concurrent`` fits (set by ``concurrent_field``) of ``ray.num_workers`` workers, plus one CPU
    left for Ray Data's read tasks (with none left, ``fit()`` waits forever). Only when Ray is connected."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return []
    have = ray.cluster_resources()
    cpus = concurrent * (ray_cfg.num_workers * ray_cfg.cpus_per_worker + extra_cpus)
    gpus = concurrent * ray_cfg.num_workers if ray_cfg.use_gpu else 0
    out = []
    lower = f"; {concurrent} fits at once: lower {concurrent_field}" if concurrent > 1 and concurrent_field else ""
    if gpus > have.get("GPU", 0):
        out.append(f"fit.ray: {concurrent} × {ray_cfg.num_workers} workers (fit.ray.num_workers) with a GPU each need {gpus} "
                   f"GPUs; the cluster has {have.get('GPU', 0):g}{lower}")
    if cpus + 1 > have.get("CPU", 0):
        per = f"{ray_cfg.num_workers} workers × fit.ray.cpus_per_worker {ray_cfg.cpus_per_worker:g}"
        out.append(f"fit.ray: {concurrent} × ({per}"
                   f"{f' + {extra_cpus:g} per trial' if extra_cpus else ''}) = {cpus:g} CPUs, plus 1 for Ray Data's "
                   f"readers, but the cluster has {have.get('CPU', 0):g} CPUs (lower fit.ray.cpus_per_worker or "
                   f"fit.ray.num_workers){lower}")
    return out


def search_problems(checks: Checks) -> list[str]:
    """Participant counts a sweep draws, against those the fit can draw from."""
    fit = checks.stages.fit
    pool = len(fit.stream.participants) or _participant_count(fit.shards)
    bad = [n for n in checks.n_participants if not 0 < n <= (pool or n)]
    return [f"search.space.n_participants: {bad} outside 1..{pool} (participants available)"] if bad else []


def restore_problems(restore: Restore | None) -> list[str]:
    """A resumed grid, comparison or sweep needs the Tune experiment it restores, created by the same job."""
    if restore is None:
        return []
    from braintune_dist.experiment.trials import resume_problem
    problem = resume_problem(restore.field, restore.storage_path, restore.name)
    return [problem] if problem else []


def _participant_count(shards: str) -> int:
    try:
        return len(load_manifest(shards)["subjects"])
    except DatasetError:
        return 0


def _open(data) -> LebelDataset | None:
    """The dataset ``data`` names, or None while it does not exist (or cannot be opened: dataset_problems says why)."""
    if not Path(data.root).exists():
        return None
    try:
        return LebelDataset(data.root, data)
    except DatasetError:
        return None


def _report(problems: list[str], t0: float, what: str, log) -> None:
    if problems:
        raise PreflightError(f"preflight: {len(problems)} problem(s) before any training:\n  - "
                             + "\n  - ".join(problems))
    log(f"[preflight] {what} ok in {time.time() - t0:.1f} s")


def preflight(checks: Checks, log=print) -> None:
    """Check a training job (its :class:`Checks`) before it writes data or trains: every problem, in one error."""
    cfg, ev = checks.stages, checks.eval
    if not cfg.preflight.enabled:
        return
    t0 = time.time()
    ev = ev if ev is not None and ev.enabled else None
    ds = _open(cfg.fit.data)                   # once, for every check that reads the dataset
    named = dataset_problems(cfg, ev, ds)
    # the shard checks assume the names are right: a typo would otherwise be reported twice
    problems = import_problems(cfg.import_model) if cfg.import_model.enabled else \
        model_problems(cfg.fit.model, "fit.model")
    problems += job_window_problems(cfg, ev)
    if ev is not None and not (cfg.import_model.enabled or cfg.pretrain.enabled):   # else the model comes later
        problems += layer_problems(cfg.fit.model, ev.features.layers, "eval.features.layers")
    problems += named + (shard_problems(cfg, ds) if not named else []) + resume_problems(cfg.fit.ray)
    problems += search_problems(checks) + restore_problems(checks.restore)
    problems += target_problems(cfg, list(checks.targets or [cfg.fit.target.kind]), ds)
    if cfg.preflight.resources != "off":
        short = resource_problems(cfg.fit.ray, checks.concurrent, checks.trial_cpus, checks.concurrent_field)
        if cfg.preflight.resources == "warn":
            for p in short:
                warnings.warn(f"preflight: {p} (preflight.resources=warn: going on, the cluster may scale up)",
                              stacklevel=2)
        else:
            problems += short
    outputs = {"fit.ray.storage_path": cfg.fit.ray.storage_path, "fit.shards": cfg.fit.shards}
    if ev is not None:
        outputs["eval.out_dir"] = ev.out_dir
        problems += cache_problems({"eval.features.cache_dir": ev.features.cache_dir})
    problems += output_problems(outputs) + tracking_problems(cfg.fit.tracking, "fit.tracking")
    if ev is not None and aliasing_note(ev.features, cfg.fit.data.tr):
        warnings.warn(f"preflight: {aliasing_note(ev.features, cfg.fit.data.tr)}", stacklevel=2)
    _report(problems, t0, "data, model, checkpoints and resources", log)


def preflight_evaluate(cfg, log=print) -> None:
    """Check an evaluate job config: model, checkpoints, dataset and the participants it names, the output and
    cache folders and the MLflow store."""
    t0 = time.time()
    problems = model_problems(cfg.model) + checkpoint_problems(cfg.checkpoints, cfg.model)
    problems += output_problems({"eval.out_dir": cfg.eval.out_dir}) + tracking_problems(cfg.tracking, "tracking")
    problems += cache_problems({"eval.features.cache_dir": cfg.eval.features.cache_dir})
    problems += [] if problems else (window_problems(cfg.model, {"eval.features.window": cfg.eval.features.window})
                                     + layer_problems(cfg.model, cfg.eval.features.layers, "eval.features.layers"))
    try:
        participants = LebelDataset(cfg.data.root, cfg.data).participants()
        named = names_problems("eval.participants", cfg.eval.participants, participants, Path(cfg.data.root))
        problems += named
    except DatasetError as exc:
        problems.append(f"data: {exc}")
        named = ["data"]
    if not named:                               # the maps of those participants, as the report reads them
        from braintune_dist.data.voxels import find_common_space
        try:
            find_common_space(cfg.data.root, cfg.eval.common_space, list(cfg.eval.participants) or participants)
        except DatasetError as exc:
            problems.append(f"eval.common_space: {exc}")
    if aliasing_note(cfg.eval.features, cfg.data.tr):
        warnings.warn(f"preflight: {aliasing_note(cfg.eval.features, cfg.data.tr)}", stacklevel=2)
    _report(problems, t0, "model, checkpoints and dataset", log)
