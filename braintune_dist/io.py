"""Atomic file writes: readers (and a resumed job) never see a half-written file under the final name.

Every writer of an output file goes through :func:`atomic_path`: write to a temporary name in the same
directory, then ``os.replace`` it onto the final name (atomic on POSIX), or remove it on error.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the suffix (``np.save`` and ``savefig`` choose the format from it) and the
    caller creates the file with ``open()``, so the umask applies (``mkstemp`` files are always 0600).
    ``fsync`` flushes the data to disk before the rename (shards, checkpoints on a crash-prone node).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path.write_text`` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
