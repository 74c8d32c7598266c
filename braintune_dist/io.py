"""Atomic writes: readers (and a resumed job) never see a half-written file or folder under the final name.

Every writer of an output file goes through :func:`atomic_path`: write to a temporary name in the same
directory, then ``os.replace`` it onto the final name (atomic on POSIX), or remove it on error. A folder
written as a whole (a simulated dataset, a pretrained checkpoint) goes through :func:`atomic_dir`.
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import tempfile
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
    # a compressed file keeps both suffixes (x.nii.gz → .x.<pid>.tmp.nii.gz): nibabel reads the format from them
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    tmp = path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.{os.getpid()}{TMP_MARK}{suffix}")
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


TMP_MARK = ".tmp"
"""Every temporary name made here contains it (a writer that was killed leaves such names behind)."""


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        return ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    fn = _renameat2()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; when the block succeeds it becomes ``path``.

    An existing ``path`` is swapped with the new folder in one step where the OS can (Linux), so a reader
    always finds a complete folder, old or new; elsewhere the old one is moved aside just before the new
    one moves in. The old folder is then removed. On error the temporary folder is removed and ``path``
    is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARK}-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())                 # mkdtemp makes it 0700
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            if not _exchange(tmp, path):                # tmp now holds the old folder
                old = path.with_name(f".{path.name}{TMP_MARK}-old-{os.getpid()}")
                os.rename(path, old)
                try:
                    os.rename(tmp, path)
                except OSError:
                    os.rename(old, path)                # put the previous folder back
                    raise
                tmp = old
        else:
            os.rename(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.is_file():
            tmp.unlink()
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike, n_hex: int = 16) -> str:
    """sha256 of a file's bytes (first ``n_hex`` hex digits), remembered per (path, size, mtime) in this process:
    the content key of caches built from the file."""
    st = os.stat(path)
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = sha256_file(path)
    return _DIGESTS[memo][:n_hex]


def quick_digest(path: str | os.PathLike, probe: int = 1 << 20) -> str:
    """sha256 (16 hex digits) of a file's size and of three ``probe``-byte blocks (start, middle, end).

    For inputs too large to hash on every run (fMRI responses, GB each): a different or re-written file is
    told apart in milliseconds; a change confined to the unread bytes is not."""
    import hashlib
    size = os.stat(path).st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for start in sorted({0, max(0, size // 2 - probe // 2), max(0, size - probe)}):
            f.seek(start)
            h.update(f.read(probe))
    return h.hexdigest()[:16]


def is_uri(path: str | os.PathLike) -> bool:
    """A storage location given as a URI (``s3://bucket/runs``, ``gs://...``) rather than a local path; a
    ``file://`` URI counts as local."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def storage_location(path: str | os.PathLike) -> str:
    """A storage path as Ray Train and Tune need it: a URI as given, a local path made absolute (they run code
    in other working directories)."""
    return str(path) if is_uri(path) else str(Path(str(path).removeprefix("file://")).resolve())


def local_path(path: str | os.PathLike) -> Path | None:
    """The local folder a storage path names, ``None`` for a URI (object storage: nothing to check or cache
    on this machine's disk)."""
    return None if is_uri(path) else Path(str(path).removeprefix("file://"))


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` made absolute, or its nearest ancestor that exists."""
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return probe


def refusing_folder(path: str | os.PathLike) -> Path | None:
    """The folder that refuses making ``path`` (or a file inside it), None when it can be made or written.

    That folder is ``path``'s nearest existing ancestor, ``path`` itself when it exists. The probe makes and
    removes a folder there: the access bits do not tell for root, /proc, a read-only mount or an immutable
    folder, where even root is refused. A file where a folder is needed is returned too (the caller says so).
    """
    probe = nearest_existing(path)
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return probe
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bt-probe-", dir=probe))
    except OSError:
        return probe
    return None


def write_refusal(path: str | os.PathLike) -> str:
    """Why the existing file ``path`` cannot be written ('' when it can): it is opened for writing, not changed.
    A real open for the same reason as :func:`refusing_folder`: root passes every access-bit check."""
    try:
        with open(path, "r+b"):
            return ""
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
