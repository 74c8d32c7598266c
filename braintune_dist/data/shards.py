"""Parquet shards of brain-tuning training pairs: one row = one audio window + every listener's response.

For every (story, response row k) the fine-tuning input is a contiguous ``window``-s
waveform ending at the end of TR ``row_tr_index[k]`` (``tr_times + TR/2``), moved ``lag`` s earlier,
zero-padded where it falls before audio onset or after the audio ends. The row also holds the responses
of every participant who heard the story, so the backbone runs once per window ("bind by stimulus").

Output layout (``<out>/``)::

    manifest.json                      written last (atomic): config, subjects, stories, splits, shards + sha256
    coverage.npy                       (n_subjects, n_vertices) bool: common-space vertices each subject has
    audio/<story>.npy                  each story's samples once (the default 'story' audio store)
    <split>/part-00000.parquet         rows of one split, stories in split order, TRs in order

Row schema (``SCHEMA_VERSION`` 2; subject order = ``manifest["subjects"]``)::

    story           string                          story name
    split           string                          'train' | 'val' | 'test'
    row             int32                           response row (after the [10:-5] trim, test story [40:])
    tr              int32                           index into tr_times(story) of that row
    window_start    float64                         window start in s relative to audio onset (< 0: zero padded)
    end_sample      int64                           window end in samples from audio onset (exclusive)
    audio           fixed_size_list<float32|float16|int16>[window_samples]   only in the 'windows' audio store;
                    the 'story' store keeps each story once in audio/<story>.npy (data/audio_store.py)
    present         fixed_size_list<bool>[n_subjects]       who heard this story
    common_<SUB>    list<float32>  n_vertices values; null where SUB did not hear the story
    voxel_<SUB>     list<float32>  n_voxels(SUB) values (manifest subject_info); null where SUB did not hear

Per-participant nullable columns (not one padded block) keep absent participants free on disk (UTS01–03
heard 84 stories, the others 27) and let the reader fetch only the participants a scaling run selects.
They are ``list`` rather than ``fixed_size_list`` because pyarrow ≤ 25 cannot read null fixed-size
lists back from Parquet ("Expected all lists to be of size=N but index i had size=0", apache/arrow#35692).

Re-runs: an output directory holding ``manifest.json`` is complete and is refused unless
``overwrite=True``; then the manifest is deleted first (the old set is visibly incomplete from that
moment) and the shards are rewritten. A directory without a manifest is an interrupted run: its leftover
``<split>/part-*`` files are removed and it is rewritten.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt
from braintune_dist.config import parse_cli, to_dict
from braintune_dist.data.audio_store import AUDIO_DIR, cut_windows, encode, resolve_dtype, story_file, to_npy
from braintune_dist.data.fingerprint import input_fingerprint
from braintune_dist.data.lebel import SAMPLE_RATE, DataConfig, DatasetError, LebelDataset
from braintune_dist.errors import OutputExistsError, UserError
from braintune_dist.io import TMP_MARK, atomic_path, sha256_file

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
COVERAGE = "coverage.npy"
SPLITS = ("train", "val", "test")


@dataclass
class ShardConfig:
    """Write Parquet shards of (audio window, responses of every listener) for Ray Data."""

    common_space: str = ""
    """Directory with common_space.npz and <subject>/voxel_to_vertex.npy; '' = <root>/ground_truth (simulated)."""
    spaces: list[str] = field(default_factory=lambda: ["common"])
    """Response spaces to write: 'common' (n_vertices, via the common-space map) and/or 'voxel' (per participant)."""
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    """Splits to write (subset of train, val, test)."""
    stories: Literal["union", "shared"] = "union"
    """Default training stories: 'union' = every story any participant heard (absent listeners masked);
    'shared' = only stories every participant heard (LebelDataset.split())."""
    window: PositiveFloat = 10.0
    """Audio window length in seconds (10 s = 5 TRs)."""
    lag: NonNegativeFloat = 0.0
    """Seconds the window is moved earlier: 0 = it ends at the end of the TR; > 0 = ends lag s before."""
    rows_per_shard: PositiveInt = 256
    """Windows per Parquet file (256 × 10 s float32 ≈ 165 MB of audio)."""
    row_group_rows: PositiveInt = 32
    """Rows per Parquet row group (the unit Ray Data and pyarrow read at once)."""
    audio_store: Literal["story", "windows"] = "story"
    """'story': each story's audio once (``audio/<story>.npy``), rows hold where their window ends and the reader
    cuts it (window / TR times fewer audio bytes); 'windows': every row holds its window's samples."""
    audio_dtype: Literal["auto", "int16", "float32", "float16"] = "auto"
    """Stored audio samples. auto: int16 when every story is 16-bit PCM mono at 16 kHz (exact), else float32;
    int16 halves float32 (16-bit quantisation); float16 halves it too (≈3 significant digits)."""
    compression: Literal["none", "snappy", "zstd", "lz4"] = "none"
    """Parquet codec (float audio and responses barely compress)."""
    audio_dictionary: bool = False
    """Dictionary-encode the audio samples: ~2× smaller files when the source is 16-bit PCM (≤ 65,536
    distinct values), at ~2× the write and ~1.4× the read time (BENCHMARKS.md)."""
    overwrite: bool = False
    """Rewrite an existing complete output (else it is refused)."""


# --------------------------------------------------------------------------- small helpers
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path, fsync=True) as tmp:
        tmp.write_bytes(data)


def _write_file(out: Path, rel: str, data: bytes) -> dict:
    """Write ``out/rel`` atomically; its manifest entry (file, bytes, sha256)."""
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out / rel, data)
    return dict(file=rel, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())


def _fsl(flat: np.ndarray, size: int) -> pa.FixedSizeListArray:
    """(n * size,) values → fixed_size_list<…>[size] of n rows (zero-copy for numeric dtypes)."""
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), size)


def _responses(Y: np.ndarray | None, n_rows: int) -> pa.ListArray:
    """(n_rows, size) responses → list<float32> column; ``None`` (participant absent) → all null."""
    if Y is None:
        return pa.nulls(n_rows, pa.list_(pa.float32()))
    offsets = np.arange(n_rows + 1, dtype=np.int32) * Y.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(Y, np.float32).ravel()))


# --------------------------------------------------------------------------- writer
class _ShardSink:
    """Collects per-story tables of one split and writes ``rows_per_shard``-row files atomically."""

    def __init__(self, out: Path, split: str, cfg: ShardConfig, metadata: dict):
        self.dir, self.split, self.cfg, self.meta = out / split, split, cfg, metadata
        self.pending: list[pa.Table] = []
        self.n_pending = 0
        self.shards: list[dict] = []

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.n_pending += table.num_rows
        while self.n_pending >= self.cfg.rows_per_shard:
            self._flush(self.cfg.rows_per_shard)

    def close(self) -> list[dict]:
        if self.n_pending:
            self._flush(self.n_pending)
        return self.shards

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending)
        head, rest = table.slice(0, n), table.slice(n)
        self.pending, self.n_pending = ([rest] if rest.num_rows else []), rest.num_rows
        rel = f"{self.split}/part-{len(self.shards):05d}.parquet"
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir.parent / rel
        write_table_atomic(head.replace_schema_metadata(self.meta), path, self.cfg)
        self.shards.append(dict(file=rel, split=self.split, rows=head.num_rows, bytes=path.stat().st_size,
                                sha256=sha256_file(path),
                                stories=list(dict.fromkeys(head.column("story").to_pylist()))))


def write_table_atomic(table: pa.Table, path: Path, cfg: ShardConfig) -> None:
    """``pq.write_table`` to a temporary name, fsync, then rename: no partial file under ``path``."""
    # dictionaries only where they pay: strings, and the audio if asked (16-bit PCM sources)
    dictionary = ["story", "split"] + (["audio.list.element"] if cfg.audio_dictionary else [])
    with atomic_path(path, fsync=True) as tmp:
        pq.write_table(table, tmp, row_group_size=cfg.row_group_rows, compression=cfg.compression,
                       use_dictionary=dictionary, write_statistics=["story", "split", "row", "tr"])


def _prepare_out(out: Path, overwrite: bool) -> None:
    manifest = out / MANIFEST
    if manifest.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} already holds a complete shard set ({manifest}); "
                                    "set shard.overwrite true to rewrite it")
        manifest.unlink()                       # first: from now on the old set reads as incomplete
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:                        # only files this writer makes (and its killed temporaries)
        for p in [*(out / split).glob("part-*.parquet"), *(out / split).glob(f".part-*{TMP_MARK}*")]:
            p.unlink()
    for p in [out / COVERAGE, *out.glob(f".*{TMP_MARK}*"), *(out / AUDIO_DIR).glob("*.npy"),
              *(out / AUDIO_DIR).glob(f".*{TMP_MARK}*")]:
        p.unlink(missing_ok=True)


def write_shards(cfg: ShardConfig, data: DataConfig, out: str | os.PathLike, ds: LebelDataset | None = None) -> Path:
    """Write the shards and manifest of dataset ``data`` (``ds``: that dataset, when the caller has it open) into
    ``out``; returns the output directory.

    Raises
    ------
    DatasetError
        Unknown subject/story, inconsistent voxel counts, missing/invalid common-space map, bad option.
    OutputExistsError
        ``out`` already holds a complete shard set and ``cfg.overwrite`` is false.
    """
    from braintune_dist.data.voxels import CommonSpace, common_space_dir   # numpy-only; imported here to keep the reader import light

    if not cfg.spaces or set(cfg.spaces) - {"common", "voxel"}:
        raise DatasetError(f"ShardConfig.spaces={cfg.spaces}: choose one or both of ['common', 'voxel']")
    bad = [s for s in cfg.splits if s not in SPLITS]
    if bad:
        raise DatasetError(f"ShardConfig.splits: {bad} not in {list(SPLITS)}")
    if cfg.window <= 0 or cfg.rows_per_shard < 1 or cfg.row_group_rows < 1:
        raise DatasetError("ShardConfig: window must be > 0, rows_per_shard and row_group_rows ≥ 1")

    ds = ds or LebelDataset(data.root, data)
    participants = ds.participants()
    if not participants:
        raise DatasetError(f"no participant folders in {ds.resp_dir}")
    for sub in participants:                        # subject names become column names
        if not re.fullmatch(r"[A-Za-z0-9_-]+", sub):
            raise DatasetError(f"{ds.resp_dir / sub}: participant name must match [A-Za-z0-9_-]+")
    split = ds.split(cfg.stories, participants)
    named = [s for name in cfg.splits for s in split[name]]
    if len(named) != len(set(named)):
        raise DatasetError(f"a story is in two splits or listed twice: {split} (DataConfig train/val/test)")
    heard = {sub: set(ds.stories(sub)) for sub in participants}
    # voxel count of each participant from its first story; every other story must agree
    n_vox = {sub: ds.n_voxels(sub, min(heard[sub])) if heard[sub] else 0 for sub in participants}

    cs_dir = common_space_dir(data.root, cfg.common_space)
    space = CommonSpace.load(cs_dir, participants) if "common" in cfg.spaces else None
    n_vert = space.n_vertices if space else 0
    coverage = (np.stack([space.coverage(s) for s in participants]) if space
                else np.zeros((len(participants), 0), dtype=bool))          # (n_subjects, n_vertices)

    out = Path(out)
    _prepare_out(out, cfg.overwrite)
    sr = SAMPLE_RATE
    n_win = int(round(cfg.window * sr))
    audio_dtype = resolve_dtype(cfg.audio_dtype, ds, sorted({s for name in cfg.splits for s in split[name]}))
    audio_files: dict[str, dict] = {}
    meta = {b"braintune.shards": json.dumps(dict(schema_version=SCHEMA_VERSION, subjects=participants,
                                                 n_vertices=n_vert, sample_rate=sr, window_samples=n_win))}
    story_info: dict[str, dict] = {}
    shards: list[dict] = []

    for split_name in cfg.splits:
        sink = _ShardSink(out, split_name, cfg, meta)
        for story in split[split_name]:
            listeners = [s for s in participants if story in heard[s]]
            wav = encode(ds.load_audio(story), audio_dtype, ds.audio_path(story))    # (n_samples,) stored dtype
            k = ds.row_tr_index(story)                                   # (n_rows,) index into tr_times
            # window end = end of TR k (mid-point + TR/2) minus the lag, in samples from audio onset
            ends = np.round((ds.tr_times(story)[k] + ds.tr_length(story) / 2 - cfg.lag) * sr).astype(np.int64)
            n_rows = len(k)
            cols = {
                "story": pa.array([story] * n_rows, pa.string()),
                "split": pa.array([split_name] * n_rows, pa.string()),
                "row": pa.array(np.arange(n_rows, dtype=np.int32)),
                "tr": pa.array(k.astype(np.int32)),
                "window_start": pa.array((ends - n_win) / sr),
                "end_sample": pa.array(ends),
                "present": _fsl(np.tile([s in listeners for s in participants], n_rows), len(participants)),
            }
            if cfg.audio_store == "windows":
                cols["audio"] = _fsl(cut_windows(wav, ends, n_win).ravel(), n_win)     # (n_rows × n_win)
            else:
                audio_files[story] = _write_file(out, story_file(story), to_npy(wav))
            for sub in participants:
                Y = None
                if sub in listeners:
                    Y = ds.load_responses(sub, story)                    # (n_rows, n_voxels)
                    path = ds.response_path(sub, story)
                    if Y.shape[0] != n_rows:
                        raise DatasetError(f"{path}: {Y.shape[0]} rows, the TR grid gives {n_rows}")
                    if Y.shape[1] != n_vox[sub]:
                        raise DatasetError(f"{path}: {Y.shape[1]} voxels, other stories of {sub} have {n_vox[sub]}")
                    if space is not None and len(space.maps[sub]) != Y.shape[1]:
                        raise DatasetError(f"{cs_dir / sub / 'voxel_to_vertex.npy'} maps {len(space.maps[sub])} "
                                           f"voxels but {path} has {Y.shape[1]}")
                if space is not None:                                    # (n_rows, n_vertices)
                    cols[f"common_{sub}"] = _responses(None if Y is None else space.to_common(sub, Y), n_rows)
                if "voxel" in cfg.spaces:
                    cols[f"voxel_{sub}"] = _responses(Y, n_rows)
            sink.add(pa.table(cols))
            story_info[story] = dict(split=split_name, n_rows=n_rows, participants=listeners,
                                     audio_s=round(len(wav) / sr, 3))
            del wav
        shards += sink.close()

    buf = _npy_bytes(coverage)
    _atomic_write_bytes(out / COVERAGE, buf)
    manifest = dict(
        schema_version=SCHEMA_VERSION,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        config=to_dict(cfg), data=to_dict(data),
        dataset_root=str(Path(data.root).resolve()),
        inputs=input_fingerprint(ds, participants, sorted(story_info)),
        common_space_dir=str(cs_dir.resolve()) if space else None,
        sample_rate=sr, tr=float(data.tr), window_s=cfg.window, lag_s=cfg.lag, window_samples=n_win,
        audio_store=cfg.audio_store, audio_dtype=audio_dtype, audio_files=audio_files, spaces=list(cfg.spaces),
        n_vertices=n_vert, region_names=space.region_names if space else [],
        subjects=participants,
        subject_info={s: dict(n_voxels=n_vox[s], coverage=int(coverage[i].sum()),
                              stories=sorted(heard[s])) for i, s in enumerate(participants)},
        coverage=dict(file=COVERAGE, shape=list(coverage.shape), sha256=hashlib.sha256(buf).hexdigest()),
        splits={s: list(split[s]) for s in cfg.splits},
        stories=story_info,
        columns={f.name: str(f.type) for f in pq.read_schema(out / shards[0]["file"])} if shards else {},
        rows={s: sum(sh["rows"] for sh in shards if sh["split"] == s) for s in cfg.splits},
        shards=shards,
    )
    _atomic_write_bytes(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return out


def _npy_bytes(arr: np.ndarray) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


@dataclass
class ShardsConfig:
    """Write Parquet shards of (audio window, responses of every listener) for Ray Data."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset root, participants and story split (``--root`` is short for ``--data.root``)."""
    out: str = "data/shards"
    """Output directory (manifest.json, coverage.npy, <split>/part-*.parquet)."""
    shard: ShardConfig = field(default_factory=ShardConfig)
    """Windows, response spaces, splits, storage format."""


def main(argv: list[str] | None = None) -> int:
    """``braintune-shards --root DATA --out SHARDS [--shard.spaces [common,voxel]] ...``; exit status."""
    alias = {"--root": "--data.root", "--participants": "--data.participants"}   # short forms of nested fields
    args = []
    for a in (sys.argv[1:] if argv is None else argv):
        flag, eq, value = a.partition("=")
        args.append(alias.get(flag, flag) + eq + value)
    try:
        cfg = parse_cli(ShardsConfig, args)
        out = write_shards(cfg.shard, cfg.data, cfg.out)
    except UserError as exc:                             # bad input: one line, not a traceback
        print(f"braintune-shards: error: {exc}", file=sys.stderr)
        return 2
    m = json.loads((out / MANIFEST).read_text())
    gb = sum(s["bytes"] for s in m["shards"]) / 1e9
    print(f"wrote {len(m['shards'])} shards ({gb:.2f} GB) to {out}: rows {m['rows']}, "
          f"{len(m['subjects'])} participants, {len(m['stories'])} stories, n_vertices {m['n_vertices']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
