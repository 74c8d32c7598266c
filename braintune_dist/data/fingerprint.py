"""Content fingerprints of a dataset's input files, recorded by what is built from them (shards) and
compared before that is used again, so a run never trains on another dataset's data under the same names.

Audio files are hashed whole (MBs); response files by :func:`io.quick_digest` (size + three 1 MiB blocks),
since real hf5 files are GBs. Paths are not part of the fingerprint: a moved dataset still matches.
"""
from __future__ import annotations

from pathlib import Path

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.io import quick_digest


def input_fingerprint(ds: LebelDataset, participants: list[str], stories: list[str]) -> dict[str, str]:
    """``{'audio/<story>': digest, 'responses/<subject>/<story>': digest}`` of every file that exists."""
    out = {f"audio/{s}": ds.audio_digest(s) for s in stories}
    for sub in participants:
        for s in stories:
            p = ds.response_path(sub, s)
            if p.is_file():
                out[f"responses/{sub}/{s}"] = quick_digest(p)
    return out


def stale_inputs(recorded: dict | None, ds: LebelDataset, what: Path) -> list[str]:
    """Problems (empty = none) of using ``what`` (built from the inputs ``recorded``) with dataset ``ds``."""
    if recorded is None:
        return [f"{what} records no input fingerprints (written by an older version): rewrite it "
                "(prepare.shard.overwrite true)"]
    participants = sorted({k.split("/")[1] for k in recorded if k.startswith("responses/")})
    stories = sorted({k.split("/")[-1] for k in recorded})
    try:
        now = input_fingerprint(ds, participants, stories)
    except Exception as exc:                                 # DatasetError: a file it was built from is gone
        return [f"{what} was built from files that {ds.root} lacks ({exc})"]
    shown = differences(recorded, now, limit=4)
    if not shown:
        return []
    return [f"{what} was written from other data than {ds.root}: {shown} differ "
            "(delete it, or set prepare.shard.overwrite true to rewrite)"]


def differences(old: dict, new: dict, limit: int, show=lambda key, a, b: key) -> str:
    """The keys of two flat dicts whose values differ, sorted, as ``show(key, old value, new value)`` joined by
    commas, at most ``limit`` of them and then how many more; '' when they agree."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(show(k, old.get(k, "(none)"), new.get(k, "(none)")) for k in keys[:limit]) + \
        (f" and {len(keys) - limit} more" if len(keys) > limit else "")
