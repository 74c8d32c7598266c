"""What the downstream readers share: finding a dataset's folder, the audio check of a task's files (one error
naming the file, one warning for resampling), and the deterministic choice of held-out speakers."""
from __future__ import annotations

import hashlib
import numbers
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Callable, Sequence, Union

from braintune_dist.downstream.tasks import SAMPLE_RATE, check_audio_header
from braintune_dist.errors import DatasetError

HeldOut = Union[float, int, Sequence[Union[str, int]]]
"""A held-out speaker choice: a fraction in (0, 1) of the speakers, a count (int >= 1), or the speaker ids."""


def dataset_dir(root: str | Path, name: str, ok: Callable[[Path], bool], layout: str) -> Path:
    """The folder under ``root`` (``root`` itself or one of its sub-folders) where ``ok`` holds.

    Archives unpack with or without a top folder (``TIMIT/``, ``data/``, ``speech_commands_v0.02/``), so one
    level down is searched too. Raises DatasetError naming ``root`` and the expected layout otherwise.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{name} folder not found: {root}")
    if ok(root):
        return root
    found = [d for d in sorted(root.iterdir()) if d.is_dir() and ok(d)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(f"{root}: {len(found)} {name} folders inside ({', '.join(d.name for d in found)}); "
                           f"pass one of them as the root")
    raise DatasetError(f"{root}: not a {name} folder (expected {layout})")


def _why_unreadable(path: str) -> str:
    """A likely cause of an unreadable file that libsndfile's message does not say, or ''."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return ""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not audio: run `git lfs pull` in the dataset's clone"
    if head.startswith(b"NIST_1A") and b"shorten" in head:
        return "it is shorten-compressed NIST SPHERE, which libsndfile cannot read: decompress it (sph2pipe -f wav)"
    return ""


def check_clips(task: str, files: Sequence[str], missing_hint: str = "") -> None:
    """Header-check every audio file of a task (existence, readable, at least one sample).

    Raises DatasetError naming the first bad file (``missing_hint`` is appended for a file that does not exist);
    warns once, for the whole task, when files are stored at a rate other than 16 kHz (``load_clip`` resamples).
    """
    rates: Counter[int] = Counter()
    for f in files:
        if not Path(f).is_file():
            raise DatasetError(f"{f}: missing audio file{missing_hint}")
        try:
            rates[check_audio_header(f)] += 1
        except DatasetError as exc:
            why = _why_unreadable(f)
            raise DatasetError(f"{exc}; {why}" if why else str(exc)) from None
    other = sorted(sr for sr in rates if sr != SAMPLE_RATE)
    if other:
        n = sum(rates[sr] for sr in other)
        warnings.warn(f"task {task!r}: {n} of {len(files)} audio files are stored at "
                      f"{', '.join(f'{sr} Hz' for sr in other)}; each is resampled to {SAMPLE_RATE} Hz when "
                      f"loaded (resample the dataset once to save the time)", stacklevel=3)


def _rank(salt: str, speaker: str) -> str:
    # a hash, not an RNG: the same speakers are held out whatever the file order, platform or numpy version,
    # and adding a speaker to the pool moves no other speaker across the split
    return hashlib.sha1(f"{salt}:{speaker}".encode()).hexdigest()


def held_out(pool: Iterable[str], spec: HeldOut, salt: str, field: str, n_total: int | None = None,
             taken: frozenset[str] = frozenset()) -> set[str]:
    """Speakers of ``pool`` held out for one split, deterministically.

    Parameters
    ----------
    pool : speaker ids that may be chosen.
    spec : a fraction in (0, 1) (of ``n_total``, default the pool size; at least one speaker), a count, or the
        ids themselves (compared as strings, so CREMA-D's actor 1001 may be given as int).
    salt : hashed with each id; a fraction or count takes the ids with the smallest ``sha1(salt:id)``.
    field : the option's name, for messages.
    taken : ids already held out for another split (not chosen again; naming one is an error).
    """
    pool = sorted(set(pool))
    free = [s for s in pool if s not in taken]
    if isinstance(spec, bool) or not isinstance(spec, (numbers.Real, Iterable)):
        raise DatasetError(f"{field}: expected a fraction, a count or speaker ids, not {spec!r}")
    if isinstance(spec, numbers.Real):
        if 0 < spec < 1:
            n = max(1, round(float(spec) * (n_total or len(pool))))
        elif isinstance(spec, numbers.Integral) and spec >= 1:
            n = int(spec)
        else:
            raise DatasetError(f"{field}: {spec!r} is neither a fraction in (0, 1) nor a count >= 1")
        if n >= len(free):
            raise DatasetError(f"{field}={spec!r} holds out {n} of the {len(free)} speakers left, leaving none to "
                               f"train on; hold out fewer")
        return set(sorted(free, key=lambda s: _rank(salt, s))[:n])
    if isinstance(spec, (str, bytes)):
        raise DatasetError(f"{field}: give speaker ids as a list ([{spec!r}]), not a bare string")
    chosen = {str(s) for s in spec}
    unknown = sorted(chosen - set(pool))
    if unknown:
        more = " ..." if len(pool) > 5 else ""
        raise DatasetError(f"{field}: unknown speaker(s) {unknown[:5]} (known: {pool[:5]}{more})")
    twice = sorted(chosen & taken)
    if twice:
        raise DatasetError(f"{field}: speaker(s) {twice[:5]} are already held out for another split")
    if not chosen or len(chosen) >= len(free):
        raise DatasetError(f"{field}: {len(chosen)} of the {len(free)} speakers left; a split needs at least one "
                           f"and training needs the rest")
    return chosen
