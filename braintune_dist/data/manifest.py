"""The shard set's ``manifest.json`` and the files it lists, on a local disk or on object storage.

A shard directory is a local path or a URI that pyarrow's filesystems read (``s3://bucket/shards``,
``gs://...``). Credentials come from each node's usual environment (``AWS_ACCESS_KEY_ID``, an instance role,
...); options such as ``?endpoint_override=host:port&scheme=http`` may ride in the URI's query, and keys in
its user part (``s3://KEY:SECRET@bucket/...``, for tests: the URI is logged with the config), which messages
never show. Every reader goes through ``locate`` so the same checks (schema version, the
manifest against its own files, sizes and sha256 of what a run reads) hold wherever the shards are.
"""
from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from braintune_dist.data.lebel import DatasetError
from braintune_dist.io import is_uri
from braintune_dist.data.shards import COVERAGE, MANIFEST, SCHEMA_VERSION


@lru_cache(maxsize=32)
def locate(shard_dir: str):
    """(pyarrow FileSystem, base path in it) of a local folder or a filesystem URI."""
    import pyarrow.fs as pafs
    if is_uri(shard_dir):
        try:
            return pafs.FileSystem.from_uri(shard_dir)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DatasetError(f"{shard_dir}: not a readable filesystem URI ({exc})") from None
    return pafs.LocalFileSystem(), str(Path(shard_dir.removeprefix("file://")).resolve())


def display(shard_dir) -> str:
    """The shard set as messages name it: the local path, or the URI without keys (``s3://KEY:SECRET@...``) or
    query options."""
    text = str(shard_dir)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        text = f"{scheme}://{rest.partition('?')[0].rpartition('@')[2]}"
    return text.rstrip("/")


def where(shard_dir, rel: str) -> str:
    """How a file of the shard set is named in messages."""
    return f"{display(shard_dir)}/{rel}"


def info(shard_dir, rel: str):
    """pyarrow FileInfo of ``rel`` (``.type`` is NotFound when it is missing)."""
    fs, base = locate(str(shard_dir))
    return fs.get_file_info(f"{base}/{rel}")


def read_bytes(shard_dir, rel: str) -> bytes:
    fs, base = locate(str(shard_dir))
    with fs.open_input_stream(f"{base}/{rel}") as f:
        return f.read()


def file_sha256(shard_dir, rel: str) -> str:
    fs, base = locate(str(shard_dir))
    h = hashlib.sha256()
    with fs.open_input_stream(f"{base}/{rel}") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def exists(shard_dir, rel: str) -> bool:
    import pyarrow.fs as pafs
    try:
        return info(shard_dir, rel).type == pafs.FileType.File
    except (OSError, DatasetError):
        return False


def load_manifest(shard_dir) -> dict:
    """Parsed ``manifest.json``, checked against its schema version and its own files; a missing one means the
    writer never finished."""
    path = where(shard_dir, MANIFEST)
    if not exists(shard_dir, MANIFEST):
        raise DatasetError(f"{path} not found: not a shard directory, or braintune-shards did not finish "
                           "(re-run it)")
    try:
        raw = read_bytes(shard_dir, MANIFEST)
        m = json.loads(raw)
    except ValueError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from None
    if m.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{path}: schema_version {m.get('schema_version')!r}, this reader needs "
                           f"{SCHEMA_VERSION}: rewrite the shards (braintune-shards --shard.overwrite true, or "
                           "--prepare.shard.overwrite true in a job)")
    # the cross-checks read coverage.npy and a Parquet footer: once per (manifest, coverage file) in a process
    cov = info(shard_dir, "coverage.npy")
    key = (str(shard_dir), hashlib.sha256(raw).hexdigest(), cov.size, cov.mtime_ns)
    if key not in _CHECKED:
        problem = manifest_problem(m, shard_dir)
        if problem:
            raise DatasetError(f"{path}: {problem} (edited or damaged; rewrite the shards)")
        _CHECKED.add(key)
    return m


_CHECKED: set[tuple] = set()


# manifest field → the type every reader relies on
_FIELDS = dict(subjects=list, subject_info=dict, n_vertices=int, window_samples=int, sample_rate=int, tr=(int, float),
               splits=dict, stories=dict, rows=dict, shards=list, spaces=list, coverage=dict, audio_store=str,
               audio_files=dict)


def manifest_problem(m: dict, shard_dir) -> str:
    """What in a parsed manifest disagrees with its types or with the files it describes ('' = nothing): the
    Parquet schema of its first shard (window column, per-participant columns), ``coverage.npy``'s shape, and
    the story audio files of the 'story' store."""
    import pyarrow.parquet as pq
    for name, kind in _FIELDS.items():
        value = m.get(name)
        if isinstance(value, bool) or not isinstance(value, kind):
            return f"field {name!r} is {value!r}, expected {getattr(kind, '__name__', 'a number')}"
    participants = m["subjects"]
    if not participants or any(s not in m["subject_info"] for s in participants):
        return f"subjects {participants} must be non-empty and each in subject_info"
    for entry in m["shards"] + list(m["audio_files"].values()):
        if not isinstance(entry, dict) or {"file", "bytes", "sha256"} - set(entry):
            return f"file entry {entry!r} lacks file, bytes or sha256"
    for split, n in m["rows"].items():
        if n != sum(sh.get("rows") for sh in m["shards"] if sh.get("split") == split):
            return f"rows[{split!r}] = {n!r} is not the sum of its shards' rows"
    if m["audio_store"] == "story" and set(m["stories"]) - set(m["audio_files"]):
        return f"the story audio store lacks audio_files for {sorted(set(m['stories']) - set(m['audio_files']))}"
    if exists(shard_dir, COVERAGE):
        shape = np.load(io.BytesIO(read_bytes(shard_dir, COVERAGE)), allow_pickle=False).shape
        if shape != (len(participants), m["n_vertices"]):
            return (f"{len(participants)} subjects × n_vertices {m['n_vertices']}, but {where(shard_dir, COVERAGE)} is "
                    f"{shape[0]} × {shape[1]}")
    first = m["shards"][0] if m["shards"] else None
    if first is None or not exists(shard_dir, first["file"]) or info(shard_dir, first["file"]).size != first["bytes"]:
        return ""                                # a missing or damaged shard is verify_shards' to name
    fs, base = locate(str(shard_dir))
    try:
        schema = pq.read_schema(f"{base}/{first['file']}", filesystem=fs)
    except (pa.ArrowInvalid, OSError):
        return ""
    written = json.loads((schema.metadata or {}).get(b"braintune.shards", b"{}"))      # the writer's own record
    for key in ("window_samples", "n_vertices", "subjects", "sample_rate"):
        if key in written and written[key] != m[key]:
            return f"{key} {m[key]!r}, but {first['file']} was written with {written[key]!r}"
    if m["audio_store"] == "windows":
        audio = schema.field("audio").type if "audio" in schema.names else None
        if getattr(audio, "list_size", None) != m["window_samples"]:
            return f"window_samples {m['window_samples']}, but {first['file']} holds audio of type {audio}"
    elif "end_sample" not in schema.names:
        return f"audio_store 'story', but {first['file']} has no end_sample column"
    prefix = {"common": "common_", "voxel": "voxel_"}
    missing = [prefix[sp] + s for sp in m["spaces"] if sp in prefix for s in participants
               if prefix[sp] + s not in schema.names]
    if missing:
        return f"subjects and spaces name columns {missing} that {first['file']} does not have"
    return ""


_VERIFIED: dict[str, tuple[int, int, str]] = {}
"""local file → (size, mtime_ns, sha256) of files this process has hashed: the preflight check and the dataset
built right after it do not hash the same unchanged files twice (objects on object storage are hashed each time)."""


def verify_shards(shard_dir, entries: list[dict], level: str = "checksum") -> None:
    """Raise ``DatasetError`` naming the first listed file (shard or story audio) that is missing, truncated
    or corrupt. ``level``: 'checksum' (size and sha256), 'size', or anything else for presence only."""
    import pyarrow.fs as pafs
    for entry in entries:
        name = where(shard_dir, entry["file"])
        st = info(shard_dir, entry["file"])
        if st.type != pafs.FileType.File:
            raise DatasetError(f"shard {name} listed in {MANIFEST} is missing")
        if level in ("size", "checksum") and st.size != entry["bytes"]:
            raise DatasetError(f"shard {name}: {st.size} bytes, manifest says {entry['bytes']} (truncated?)")
        if level == "checksum":
            # object stores date objects to the second: a same-size rewrite within it would look unchanged
            seen = _VERIFIED.get(name) if isinstance(locate(str(shard_dir))[0], pafs.LocalFileSystem) else None
            if seen is None or seen[:2] != (st.size, st.mtime_ns):
                seen = _VERIFIED[name] = (st.size, st.mtime_ns, file_sha256(shard_dir, entry["file"]))
            if seen[2] != entry["sha256"]:
                raise DatasetError(f"shard {name}: sha256 mismatch with {MANIFEST} (corrupt; rewrite the shards)")


def read_coverage(shard_dir) -> np.ndarray:
    """(n_subjects, n_vertices) bool: the common-space vertices each subject has."""
    return np.load(io.BytesIO(read_bytes(shard_dir, COVERAGE)), allow_pickle=False)
