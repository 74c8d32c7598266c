"""A downstream task as every reader returns it: audio files, one label per clip (or a multi-hot vector),
a split and a speaker per clip. No torch here: the driver reads tasks, the feature actors read the audio.

Readers (``readers.py`` for TIMIT, Speech Commands v2, CREMA-D and SLURP; ``synthetic.py`` for the espeak-ng
suite) all return a :class:`Task`; ``Task.check()`` is the one place that refuses a task a probe cannot use.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError

SAMPLE_RATE = 16_000
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Task:
    """One labelled set of clips, split three ways.

    ``targets`` is ``(n_clips,)`` int class indices for a single-label task, or ``(n_clips, n_classes)`` 0/1
    uint8 for a multi-label one (phoneme presence).
    """

    name: str
    """Task name in tables ('commands', 'timit_phonemes', ...)."""
    classes: tuple[str, ...]
    """Class names; index i of a target is ``classes[i]``."""
    multi_label: bool
    """True: targets are multi-hot (n_clips, n_classes); False: one class index per clip."""
    files: tuple[str, ...]
    """Audio file of each clip (n_clips,), any format libsndfile reads (WAV, NIST SPHERE, FLAC)."""
    targets: np.ndarray
    """(n_clips,) int64 or (n_clips, n_classes) uint8."""
    splits: tuple[str, ...]
    """'train', 'validation' or 'test' per clip (n_clips,)."""
    speakers: tuple[str, ...]
    """Speaker (or voice) of each clip (n_clips,); splits are speaker-disjoint where the dataset's are."""
    source: str = ""
    """Where it was read from (a folder), for messages."""
    texts: tuple[str, ...] = ()
    """Transcript of each clip (n_clips,) where the dataset has one (empty otherwise): the ASR check's reference."""

    @property
    def n_clips(self) -> int:
        return len(self.files)

    def indices(self, split: str) -> np.ndarray:
        """Clip indices of one split, (n_split,) int."""
        return np.flatnonzero(np.asarray(self.splits) == split)

    def fingerprint(self) -> str:
        """Hash of the clips, labels and splits (part of the feature and result cache keys)."""
        h = hashlib.sha1(self.name.encode())
        for f, s in zip(self.files, self.splits):
            st = Path(f).stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{s}\n".encode())
        h.update(np.ascontiguousarray(self.targets).tobytes())
        return h.hexdigest()[:16]

    def majority(self) -> np.ndarray:
        """The naive classifier's prediction, fitted on the training split: (n_classes,) 0/1 for a multi-label
        task (each label predicted present where present in over half the training clips), else a one-element
        array holding the most frequent training class."""
        y = self.targets[self.indices("train")]
        if self.multi_label:
            return (y.mean(axis=0) > 0.5).astype(np.uint8)
        return np.array([np.bincount(y, minlength=len(self.classes)).argmax()])

    def check(self) -> "Task":
        """Refuse what a probe cannot use, naming the task and its source; returns self."""
        where = f"task {self.name!r} ({self.source or 'no source'})"
        n = self.n_clips
        if n == 0:
            raise DatasetError(f"{where}: no clips")
        if len(self.splits) != n or len(self.speakers) != n or len(self.targets) != n:
            raise DatasetError(f"{where}: files, targets, splits and speakers differ in length")
        bad = sorted(set(self.splits) - set(SPLITS))
        if bad:
            raise DatasetError(f"{where}: unknown split(s) {bad}; expected {list(SPLITS)}")
        for split in SPLITS:
            idx = self.indices(split)
            if idx.size == 0:
                raise DatasetError(f"{where}: the {split} split is empty")
            y = self.targets[idx]
            n_seen = int((y.sum(axis=0) > 0).sum()) if self.multi_label else len(np.unique(y))
            if split == "train" and n_seen < 2:
                raise DatasetError(f"{where}: the train split has one class only ({n_seen} seen); a probe needs two")
        if self.multi_label:
            if self.targets.ndim != 2 or self.targets.shape[1] != len(self.classes):
                raise DatasetError(f"{where}: multi-hot targets must be (n_clips, {len(self.classes)})")
        elif self.targets.ndim != 1 or self.targets.min() < 0 or self.targets.max() >= len(self.classes):
            raise DatasetError(f"{where}: targets must be class indices in [0, {len(self.classes)})")
        return self


def load_clip(path: str | Path) -> np.ndarray:
    """A clip as mono float32 (n_samples,) at 16 kHz (resampled, polyphase, when stored at another rate).

    Raises DatasetError naming the file when it cannot be read or holds no samples.
    """
    import soundfile as sf
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DatasetError(f"{path}: unreadable audio ({exc})") from None
    if wav.shape[0] == 0:
        raise DatasetError(f"{path}: empty audio (0 samples)")
    x = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly
        g = gcd(int(sr), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)
    if not np.isfinite(x).all():
        raise DatasetError(f"{path}: audio holds NaN or infinite samples")
    return x


def check_audio_header(path: str | Path) -> int:
    """Cheap check at read time (header only): the file exists, libsndfile reads it, it has samples.
    Returns its sample rate (a reader warns once when its files need resampling)."""
    import soundfile as sf
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DatasetError(f"{path}: unreadable audio ({exc})") from None
    if info.frames == 0:
        raise DatasetError(f"{path}: empty audio (0 samples)")
    return int(info.samplerate)
