"""Ray Data reader of the Parquet shards written by ``data/shards.py``.

``make_dataset(shard_dir, split, cfg)`` reads ``manifest.json`` (a local folder or an ``s3://`` / ``gs://``
URI), picks the participants and stories a run may use (``select``: data-size options for scaling sweeps),
verifies the shards and story audio it needs, and builds ``read_parquet → [materialize] → [random_shuffle]
→ map_batches``. With the 'story' audio store the rows carry no audio: each story's samples are read once
into Ray's object store, the small rows are kept there after the first read (``materialize_mb``; read by
this process when they are a few MB, ``driver_read_mb``), the
shuffle moves only them, and the map cuts each window where it ends, so an epoch re-runs neither the
Parquet read nor a shuffle of audio. Every output column is numeric and rectangular, so
``ds.iter_torch_batches(**iter_kwargs(cfg))`` (or ``train.get_dataset_shard(...)``) yields tensors:

bind mode (default; one row = one audio window, the backbone runs once per window)::

    audio      (batch, window_samples)            float32 (int16 stores decoded) | float16 (as stored)
    responses  (batch, n_participants, n_vertices) float32, 0 where mask is False     [space='common']
    voxel_<P>  (batch, n_voxels(P))               float32, one per participant         [space='voxel']
    mask       (batch, n_participants)            bool: participant heard this window and is selected for it
    story, row, tr  (batch,)                      int32: index into selection.story_names, response row, TR

pair mode (one row = one (window, participant))::

    audio (batch, window_samples), responses (batch, n_vertices) [voxel: (batch, max n_voxels), zero padded,
    + n_voxels (batch,)], participant (batch,) int64 slot index into selection.participants, story, row, tr

Participant slot ``i`` is ``selection.participants[i]`` in both modes, so pair rows regrouped by
(story, row) equal the bind rows.

With the teacher control target (``targets/teacher.py``; bind mode) the windows are the same, and ``responses``
are the teacher's targets of each window's row, ``(batch, 1, d)`` with ``mask`` (batch, 1) all True: one
pseudo-participant.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt
from braintune_dist.data.audio_store import cut_windows, decode, from_npy
from braintune_dist.data.lebel import DatasetError
from braintune_dist.data.manifest import load_manifest, locate, read_bytes, verify_shards, where
from braintune_dist.data.shards import MANIFEST
from braintune_dist.targets import TargetSettings, shuffled, teacher as teacher_target


@dataclass
class StreamConfig:
    """How a training/evaluation process streams shards through Ray Data."""

    mode: Literal["bind", "pair"] = "bind"
    """'bind': one row per audio window with every participant's response; 'pair': one row per (window, participant)."""
    space: Literal["common", "voxel"] = "common"
    """Response space to read: 'common' (n_vertices for everyone) or 'voxel' (per-participant voxels)."""
    shuffle: Literal["global", "blocks", "none"] = "global"
    """'global': Dataset.random_shuffle (all-to-all); 'blocks': shuffled file order + the local buffer
    of iter_kwargs (cheap, streaming); 'none': file order."""
    seed: int | None = 0
    """Shuffle seed of a stream read on its own (None = unseeded); a fit's training stream takes its seed from
    fit.train.seed instead, so that replicates differ in data order."""
    reseed_each_epoch: bool = True
    """With a seed: a different (reproducible) order every epoch/execution; False = the same order each time."""
    local_shuffle_buffer: NonNegativeInt = 0
    """Rows in iter_torch_batches' local shuffle buffer (0 = off; used with shuffle='blocks')."""
    batch_size: PositiveInt = 8
    """Rows per batch for iter_kwargs()."""
    drop_last: bool = False
    """Drop the last incomplete batch (iter_kwargs)."""
    participants: list[str] = field(default_factory=list)
    """Explicit participants to use (manifest names); empty = all, or n_participants of them."""
    n_participants: NonNegativeInt = 0
    """Use this many participants, drawn with selection_seed (0 = all); nested across sizes."""
    stories_per_participant: NonNegativeInt = 0
    """Stories kept per participant, drawn with selection_seed per participant (0 = all); nested."""
    hours_per_participant: NonNegativeFloat = 0.0
    """Keep whole stories per participant until their fMRI reaches this many hours (0 = all); nested."""
    selection_seed: int = 0
    """Seed of the participant and story draws (fixed across a scaling sweep so sizes nest)."""
    budget_splits: list[str] = field(default_factory=lambda: ["train"])
    """Splits the story/hour budget applies to; other splits keep all stories (participants apply to all)."""
    verify: Literal["checksum", "size", "none"] = "checksum"
    """Up-front check of the shards read: sha256 + size, size only, or presence only."""
    map_batch_rows: PositiveInt = 16
    """Windows per map_batches call (bounds memory: pair mode copies the audio once per participant)."""
    materialize_mb: NonNegativeFloat = 1024.0
    """With the 'story' audio store: keep the split's rows (ids and responses, no audio) in Ray's object store
    after the first read when the shards read take at most this many MB (0 = never). Later epochs then re-run
    only the shuffle and the window cutting, not the Parquet read."""
    driver_read_mb: NonNegativeFloat = 64.0
    """With the 'story' audio store and rows kept (``materialize_mb``): shards of at most this many MB in all are
    read by this process with pyarrow and handed to Ray Data as in-memory blocks, one per shard (0 = never).
    Ray Data's read tasks cost seconds per dataset even for a few MB; a laptop run or a sweep trial skips them."""


@dataclass
class Selection:
    """Participants and (participant, story) pairs one stream uses."""

    split: str
    participants: list[str]
    """Selected participants in manifest order; slot i of responses/mask/participant."""
    story_names: list[str]
    """Stories of the split in manifest order; the ``story`` column indexes this list."""
    stories: dict[str, list[str]]
    """participant → stories of the split kept for it (split order)."""
    hours: dict[str, float]
    """participant → hours of fMRI kept (response rows × TR / 3600)."""

    def keep(self) -> np.ndarray:
        """(n_story_names, n_participants) bool: participant j is used on story i."""
        return np.array([[s in self.stories[p] for p in self.participants] for s in self.story_names],
                        dtype=bool).reshape(len(self.story_names), len(self.participants))

    def kept_stories(self) -> list[str]:
        return [s for s in self.story_names if any(s in self.stories[p] for p in self.participants)]


# --------------------------------------------------------------------------- data-size selection
def _budget(stories: list[str], n_rows: dict[str, int], tr: float, cfg: StreamConfig) -> list[str]:
    """Prefix of ``stories`` (already in draw order) allowed by the story or hour budget."""
    if cfg.stories_per_participant and cfg.hours_per_participant:
        raise DatasetError("StreamConfig: set stories_per_participant or hours_per_participant, not both")
    if cfg.stories_per_participant:
        return stories[:cfg.stories_per_participant]
    if cfg.hours_per_participant:
        hours = np.cumsum([n_rows[s] * tr / 3600 for s in stories])
        # whole stories until the budget is reached: the story that crosses it is kept
        return stories[:int(np.searchsorted(hours, cfg.hours_per_participant - 1e-9)) + 1]
    return stories


def select(manifest: dict, split: str, cfg: StreamConfig) -> Selection:
    """Participants and per-participant stories of ``split`` under ``cfg``'s data-size options.

    Deterministic for ``cfg.selection_seed``; nested: with the same seed a smaller ``n_participants``,
    ``stories_per_participant`` or ``hours_per_participant`` picks a subset of a larger one (each
    participant's story order is its own permutation, independent of which others are selected).
    """
    if split not in manifest["splits"]:
        raise DatasetError(f"split {split!r} not in {MANIFEST} (has {list(manifest['splits'])})")
    everyone = manifest["subjects"]
    if cfg.participants:
        unknown = [p for p in cfg.participants if p not in everyone]
        if unknown:
            raise DatasetError(f"StreamConfig.participants: {unknown} not in {MANIFEST} participants {everyone}")
        chosen = set(cfg.participants)
    elif cfg.n_participants:
        if not 0 < cfg.n_participants <= len(everyone):
            raise DatasetError(f"StreamConfig.n_participants={cfg.n_participants}: shards hold {len(everyone)}")
        chosen = set(np.random.default_rng(cfg.selection_seed).permutation(everyone)[:cfg.n_participants])
    else:
        chosen = set(everyone)
    participants = [p for p in everyone if p in chosen]                  # slot order = manifest order

    story_names = list(manifest["splits"][split])
    info = manifest["stories"]
    n_rows = {s: info[s]["n_rows"] for s in story_names}
    stories, hours = {}, {}
    for p in participants:
        heard = [s for s in story_names if p in info[s]["participants"]]
        if split in cfg.budget_splits:
            rng = np.random.default_rng([cfg.selection_seed, zlib.crc32(p.encode())])
            heard = _budget([heard[i] for i in rng.permutation(len(heard))], n_rows, manifest["tr"], cfg)
        stories[p] = [s for s in story_names if s in heard]
        hours[p] = sum(n_rows[s] for s in stories[p]) * manifest["tr"] / 3600
    return Selection(split, participants, story_names, stories, hours)


def shards_for(manifest: dict, split: str, cfg: StreamConfig,
               shard_dir: str | Path = "") -> tuple[Selection, list[dict]]:
    """The selection of ``split`` under ``cfg`` and the manifest entries of the shards it reads."""
    sel = select(manifest, split, cfg)
    kept = set(sel.kept_stories())
    shards = [sh for sh in manifest["shards"] if sh["split"] == split and kept.intersection(sh["stories"])]
    if not shards:
        raise DatasetError(f"no rows of split {split!r} in {shard_dir} under this selection "
                           f"(participants {sel.participants})")
    return sel, shards


# --------------------------------------------------------------------------- batch conversion
def _dense(col, size: int) -> np.ndarray:
    """(fixed_size_)list column of n rows with ``size`` values each → (n, size) array; null rows → 0."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if arr.null_count == 0:
        return arr.flatten().to_numpy(zero_copy_only=False).reshape(n, size)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    out = np.zeros((n, size), dtype=arr.type.value_type.to_pandas_dtype())
    out[valid] = arr.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    return out


def windows(table: pa.Table, n_samples: int, audio: dict | None = None) -> np.ndarray:
    """(n_rows, n_samples) float32 (float16 when stored so) audio windows of shard rows: the rows' own 'audio'
    column, or cut at 'end_sample' from their stories' waveforms ``audio`` (story → stored samples, or an
    ObjectRef of them)."""
    if audio is None:
        out = _dense(table.column("audio"), n_samples)
    else:
        import ray
        names = np.array(table.column("story").to_pylist(), dtype=object)           # (n_rows,)
        ends = table.column("end_sample").to_numpy()                                   # (n_rows,) int64
        out = None
        for story in dict.fromkeys(names):
            wav = audio[story]
            wav = ray.get(wav) if isinstance(wav, ray.ObjectRef) else wav             # zero-copy from the store
            at = np.flatnonzero(names == story)
            if out is None:
                out = np.empty((len(names), n_samples), wav.dtype)
            out[at] = cut_windows(wav, ends[at], n_samples)
        out = np.zeros((0, n_samples), np.float32) if out is None else out
    return decode(out) if out.dtype == np.int16 else out


def story_audio(shard_dir, manifest: dict, stories: list[str]) -> dict:
    """Story → ObjectRef of its stored samples, each read once by a Ray task (no CPU reserved, so it runs inside
    a full cluster or a Tune trial's placement group) and shared by every map task on a node."""
    import ray
    read = ray.remote(num_cpus=0)(_read_story)
    return {s: read.remote(str(shard_dir), manifest["audio_files"][s]["file"]) for s in stories}


def _read_story(shard_dir: str, rel: str) -> np.ndarray:
    return from_npy(read_bytes(shard_dir, rel), where(shard_dir, rel))


def _to_tensors(table: pa.Table, *, mode: str, space: str, participants: list[str], slots: list[int],
                n_participants: int, story_index: dict[str, int], keep: np.ndarray, sizes: list[int],
                n_samples: int, audio: dict | None = None, pointers: dict | None = None,
                teacher: dict | None = None, teacher_width: int = 0) -> dict[str, np.ndarray]:
    """One pyarrow batch of shard rows → rectangular numpy columns (see the module docstring); with
    ``pointers`` (the control target, ``targets/shuffled.py``) each window is cut at its partner row; with
    ``teacher`` (story → (n_rows, teacher_width) targets or their ObjectRefs) the responses are the teacher's."""
    story = np.array([story_index[s] for s in table.column("story").to_pylist()], dtype=np.int32)   # (n,)
    present = _dense(table.column("present"), n_participants)[:, slots]          # (n, n_participants)
    mask = present & keep[story]                                             # heard and selected
    rows = np.flatnonzero(mask.any(axis=1))                                  # windows somebody still uses
    mask, story = mask[rows], story[rows]
    # (n_kept, n_samples): a zero-copy view of stored windows, or cut from the story waveforms
    src = table if len(rows) == table.num_rows else table.take(rows)
    if pointers is not None:        # only where the window is cut changes: responses, mask and ids stay the row's
        names, ends = shuffled.lookup(pointers, np.asarray(src.column("story").to_pylist(), dtype=object),
                                      src.column("row").to_numpy())
        src = pa.table({"story": pa.array(names.tolist(), pa.string()), "end_sample": ends})
    audio = windows(src, n_samples, audio)
    ids = {"story": story, "row": table.column("row").to_numpy()[rows].astype(np.int32),
           "tr": table.column("tr").to_numpy()[rows].astype(np.int32)}
    if teacher is not None:         # the same windows as the brain target; one pseudo-participant that hears all
        names = np.asarray(src.column("story").to_pylist(), dtype=object)                    # (n_kept,)
        target = teacher_target.lookup(teacher, names, ids["row"], teacher_width)           # (n_kept, d)
        return {"audio": audio, "mask": np.ones((len(rows), 1), bool), "responses": target[:, None], **ids}
    # responses of each slot, (n_kept, size_j), zeroed where the mask is off
    resp = [_dense(table.column(f"{space}_{p}"), n)[rows] * mask[:, j, None]
            for j, (p, n) in enumerate(zip(participants, sizes))]
    if mode == "bind":
        out = {"audio": audio, "mask": mask, **ids}
        if space == "common":
            out["responses"] = (np.stack(resp, axis=1) if resp else
                                np.zeros((len(rows), 0, 0), np.float32))     # (n_kept, n_participants, n_vertices)
        else:
            out.update({f"voxel_{p}": r for p, r in zip(participants, resp)})
        return out
    r, j = np.nonzero(mask)                                                  # one output row per (window, slot)
    Y = np.zeros((len(r), max(sizes, default=0)), np.float32)                # (n_pairs, max size), zero padded
    for slot in range(len(participants)):
        sel = j == slot
        Y[sel, :sizes[slot]] = resp[slot][r[sel]]
    out = {"audio": audio[r], "responses": Y, "participant": j.astype(np.int64),
           **{k: v[r] for k, v in ids.items()}}
    if space == "voxel":
        out["n_voxels"] = np.asarray(sizes, dtype=np.int64)[j]
    return out


# --------------------------------------------------------------------------- dataset
def make_dataset(shard_dir: str | Path, split: str, cfg: StreamConfig | None = None,
                 target: TargetSettings | None = None, seed: int = 0, teacher: dict | None = None):
    """Ray Dataset of ``split`` under ``cfg`` (see the module docstring for the columns).

    ``target.kind='shuffled'``: the control target, the same rows with each window cut at a partner row drawn
    from ``seed`` (``targets/shuffled.py``; needs the 'story' audio store).
    ``target.kind='teacher'``: the same rows with the teacher's targets as responses; ``teacher``: story →
    (n_rows, d) float32 targets (``targets/teacher.py::fit_targets``), or ObjectRefs of them.

    Raises ``DatasetError`` before any Ray work when the manifest is missing, a shard needed by the
    selection is missing/corrupt, or an option names an unknown participant, split or space.
    """
    import ray.data

    cfg = cfg or StreamConfig()
    m = load_manifest(shard_dir)
    if cfg.space not in m["spaces"]:
        raise DatasetError(f"StreamConfig.space={cfg.space!r} but the shards in {shard_dir} hold {m['spaces']}")
    sel, shards = shards_for(m, split, cfg, shard_dir)
    by_story = m["audio_store"] == "story"
    teacher_width = teacher_target.stream_width(teacher, target, cfg.mode, sel.kept_stories())
    audio_files = [m["audio_files"][s] for s in sel.kept_stories()] if by_story else []
    pairing = (shuffled.plan(m, shard_dir, split, sel.kept_stories(), target, seed)
               if target is not None and target.kind == "shuffled" else None)
    verify_shards(shard_dir, shards + audio_files + (pairing.files if pairing else []), cfg.verify)
    pointers = shuffled.audio_pointers(shard_dir, m, pairing) if pairing else None

    sizes = [m["n_vertices"] if cfg.space == "common" else m["subject_info"][p]["n_voxels"]
             for p in sel.participants]
    columns = ["story", "row", "tr", "end_sample" if by_story else "audio", "present"] + \
        ([] if teacher_width else [f"{cfg.space}_{p}" for p in sel.participants])
    fs, base = locate(str(shard_dir))
    paths = [f"{base}/{sh['file']}" for sh in shards]
    mb = sum(sh["bytes"] for sh in shards) / 1e6
    if by_story and mb <= min(cfg.materialize_mb, cfg.driver_read_mb):
        if cfg.shuffle == "blocks":             # the file order a one-time FileShuffleConfig read would give
            paths = [paths[i] for i in np.random.default_rng(cfg.seed).permutation(len(paths))]
        ds = ray.data.from_arrow([pq.read_table(p, columns=columns, filesystem=fs) for p in paths])
    else:
        file_shuffle = None
        if cfg.shuffle == "blocks":
            file_shuffle = ("files" if cfg.seed is None else
                            ray.data.FileShuffleConfig(seed=cfg.seed, reseed_after_execution=cfg.reseed_each_epoch))
        # select_columns after the read is pushed down into it (Ray ≥ 2.5x deprecates read_parquet(columns=))
        ds = ray.data.read_parquet(paths, filesystem=fs, shuffle=file_shuffle).select_columns(columns)
        if by_story and mb <= cfg.materialize_mb:
            ds = ds.materialize()               # read once; each epoch re-runs only what follows
    if cfg.shuffle == "global":                 # before the map: moves the rows' ids and responses, not windows
        seed = (None if cfg.seed is None else
                ray.data.RandomSeedConfig(seed=cfg.seed, reseed_after_execution=cfg.reseed_each_epoch))
        ds = ds.random_shuffle(seed=seed)
    return ds.map_batches(_to_tensors, batch_format="pyarrow", batch_size=cfg.map_batch_rows, fn_kwargs=dict(
        mode=cfg.mode, space=cfg.space, participants=sel.participants,
        slots=[m["subjects"].index(p) for p in sel.participants], n_participants=len(m["subjects"]),
        story_index={s: i for i, s in enumerate(sel.story_names)}, keep=sel.keep(), sizes=sizes,
        n_samples=m["window_samples"], pointers=pointers, teacher=teacher if teacher_width else None,
        teacher_width=teacher_width, audio=None if not by_story else
        story_audio(shard_dir, m, pairing.audio_stories if pairing else sel.kept_stories())))


def iter_kwargs(cfg: StreamConfig) -> dict:
    """Keyword arguments for ``iter_torch_batches``/``iter_batches`` that match ``cfg``."""
    buf = cfg.local_shuffle_buffer or None
    return dict(batch_size=cfg.batch_size, drop_last=cfg.drop_last, local_shuffle_buffer_size=buf,
                local_shuffle_seed=cfg.seed if buf else None)


# --------------------------------------------------------------------------- summary
def summarize(shard_dir: str | Path, split: str, cfg: StreamConfig | None = None) -> dict:
    """Exact size of one epoch of ``make_dataset(shard_dir, split, cfg)``, from the manifest (no Ray work).

    Returns
    -------
    summary : dict
        ``rows`` (rows emitted: windows in bind mode, pairs in pair mode), ``windows``, ``pairs``,
        ``participants``, ``stories``, ``hours_per_participant``, ``mb`` (tensor bytes per epoch, 1e6),
        ``shard_mb`` (on-disk bytes of the shards read).
    """
    cfg = cfg or StreamConfig()
    m = load_manifest(shard_dir)
    sel = select(m, split, cfg)
    n_rows = {s: m["stories"][s]["n_rows"] for s in sel.story_names}
    kept = sel.kept_stories()
    windows = sum(n_rows[s] for s in kept)
    pairs = sum(n_rows[s] for p in sel.participants for s in sel.stories[p])
    audio_b = m["window_samples"] * (2 if m["audio_dtype"] == "float16" else 4)     # int16 arrives as float32
    size = {p: m["n_vertices"] if cfg.space == "common" else m["subject_info"][p]["n_voxels"]
            for p in sel.participants}
    ids_b = 3 * 4                                                            # story, row, tr int32
    if cfg.mode == "bind":
        per_window = audio_b + ids_b + len(sel.participants) * (1 + (4 * m["n_vertices"] if cfg.space == "common"
                                                                      else 0))
        nbytes = windows * per_window + (0 if cfg.space == "common" else
                                         sum(4 * size[p] * windows for p in sel.participants))
    else:
        width = max(size.values(), default=0)
        nbytes = pairs * (audio_b + ids_b + 8 + 4 * width + (8 if cfg.space == "voxel" else 0))
    shard_b = sum(sh["bytes"] for sh in m["shards"] if sh["split"] == split and set(kept) & set(sh["stories"]))
    audio_store_b = sum(m["audio_files"][s]["bytes"] for s in kept) if m["audio_store"] == "story" else 0
    return dict(split=split, mode=cfg.mode, space=cfg.space, rows=windows if cfg.mode == "bind" else pairs,
                windows=windows, pairs=pairs, participants=sel.participants, stories=kept,
                hours_per_participant={p: round(h, 4) for p, h in sel.hours.items()},
                mb=nbytes / 1e6, shard_mb=shard_b / 1e6, audio_mb=audio_store_b / 1e6,
                read_bytes_per_window=(shard_b + audio_store_b) / max(windows, 1))


def format_summary(s: dict) -> str:
    """One line for the demo printout."""
    h = s["hours_per_participant"]
    mean_h = sum(h.values()) / max(len(h), 1)
    return (f"[{s['split']}/{s['mode']}/{s['space']}] {s['rows']} rows ({s['windows']} windows, {s['pairs']} pairs), "
            f"{s['mb']:.1f} MB/epoch from {s['shard_mb'] + s['audio_mb']:.1f} MB of shards and story audio "
            f"({s['read_bytes_per_window'] / 1e3:.0f} kB per window), {len(s['participants'])} participants, "
            f"{len(s['stories'])} stories, {mean_h:.3f} h/participant")
