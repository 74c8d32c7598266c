"""Reader for the LeBel et al. 2023 "Moth Radio Hour" layout (OpenNeuro ds003020), real or simulated.

Layout read (paths relative to the dataset root)::

    derivative/preprocessed_data/<subject>/<story>.hf5   'data' (n_rows, n_voxels); the test story
                                                         also 'individual_repeats' (n_rep, n_rows, n_vox)
    derivative/respdict.json                             {story: n_trs}  (TR count of the TR grid)
    derivative/TextGrids/<story>.TextGrid                tier 0 phones, tier 1 words
    stimuli/<story>.wav                                  story audio (resampled to 16 kHz if needed)

TR conventions (the Huth-lab ``load_simulated_trfiles(respdict, tr=2.0, start_time=10,
pad=5)``): the TR grid of a story has ``n_trs - 5`` triggers at ``k * TR``, audio starts 10 s after the
first trigger, so TR ``k`` covers audio time ``[k*TR - 10, (k+1)*TR - 10)`` and its mid-point is
``tr_times[k] = k*TR - 10 + TR/2``. Where the dataset has the scanner's TR reports (``DataConfig.tr_source``;
format in ``data/trfiles.py``), the triggers are read from them instead. Stimulus features are trimmed
``[10:-5]`` and then line up row for row with the hf5 ``data`` (``n_trs - 20`` rows). For the test story the
original brain-tuning code drops 40 more TRs: features ``[50:-5]`` against ``data[40:]`` and
``individual_repeats[:, 40:]``.
"""
from __future__ import annotations

import errno
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from jsonargparse.typing import NonNegativeFloat, PositiveFloat
from braintune_dist.data.trfiles import read_respdict, read_tr_report
from braintune_dist.data.textgrid import NON_WORDS, Interval, TextGrid, TextGridError, read_textgrid
from braintune_dist.data.voxels import noise_ceiling, repeats_with_data
from braintune_dist.errors import DatasetError
from braintune_dist.io import file_digest

SAMPLE_RATE = 16_000
TR = 2.0
SOUND_ONSET = 10.0          # seconds from the first trigger to audio onset
TRFILE_PAD = 5              # load_simulated_trfiles(pad=5): TR grid has n_trs - 5 triggers
TRIM_START, TRIM_END = 10, 5
TEST_STORY = "wheretheressmoke"
TEST_EXTRA_TRIM = 40        # test story: data[40:] against features [50:-5]


def broken_link(path: Path, what: str) -> str:
    """Why ``path`` is a symlink that leads to no file ('' when it is none): one that loops, or one whose target
    is gone. ``what`` it should point to, for the fix. Such a link lists like a file but opens like a missing one,
    so without this it reads as "missing audio" or a story the subject did not hear."""
    if not path.is_symlink():
        return ""
    try:
        os.stat(path)
    except OSError as exc:
        target = os.readlink(path)
        if exc.errno == errno.ELOOP:
            return f"{path}: a symlink loop (it points to {target}, which leads back to it): point it at {what}"
        return f"{path}: a broken symlink (its target {target} does not exist): point it at {what}"
    return ""


@dataclass
class DataConfig:
    """Where the dataset lives and how stories are split."""

    root: str = "data/sim"
    """Dataset root holding `derivative/` (or `derivatives/`) and `stimuli/` (ds003020 layout)."""
    participants: list[str] = field(default_factory=list)
    """Participants to use (e.g. UTS01 UTS02); empty = every folder under preprocessed_data/."""
    train_stories: list[str] = field(default_factory=list)
    """Training stories; empty = every story all chosen subjects have, minus validation and test."""
    val_stories: list[str] = field(default_factory=list)
    """Validation stories (early stopping); the original brain-tuning code uses ['itsabox'] (multi) or ['stagefright']."""
    test_story: str = TEST_STORY
    """Held-out story with `individual_repeats` (noise ceiling and alignment test)."""
    tr: PositiveFloat = TR
    """Repetition time in seconds of the simulated TR grid (ds003020: 2.0)."""
    sound_onset: float = SOUND_ONSET
    """Seconds from the first trigger to audio onset (ds003020: 10.0)."""
    tr_source: Literal["auto", "grid", "reports"] = "auto"
    """Where trigger times come from. grid: the simulated 2.0 s grid of the dataset's official loader
    (``tr``, ``sound_onset``). reports: the scanner's TR reports, ``<tr_report_dir>/<story>.report`` (real
    triggers, ~2.0045 s apart; a story without one is an error). auto: a story's report when it has one,
    else the grid."""
    tr_report_dir: str = ""
    """Folder of the TR reports; empty = ``<derivative>/trfiles``."""
    audio_tolerance: NonNegativeFloat = 20.0
    """Allowed mismatch in seconds between the audio length and the TR grid before it is an error."""
    max_abs_response: PositiveFloat = 1e5
    """Largest |value| accepted in a response file (after NaN → 0). They hold z-scores: anything near this is a
    preprocessing error, and one voxel at 1e30 would make every training loss infinite."""
    ceiling: Literal["zscored", "stored"] = "zscored"
    """Noise-ceiling convention. zscored: each repeat of the test story's evaluation rows
    (``individual_repeats[:, 40:]``) is z-scored over time before the Schoppe formula, whose total power of 1
    assumes z-scored repeats. stored: the formula on those rows as stored, as the papers' evaluation code
    calls ``spe_and_cc_norm``; use it to reproduce published ceilings (the repeats were z-scored over the
    whole run, so after the [40:] trim the two conventions differ by a few per cent of cc_max)."""
    non_words: list[str] = field(default_factory=lambda: list(NON_WORDS))
    """Word-tier labels that are not words (compared lower case, braces stripped: '{NS}' is 'ns'). The
    Huth-lab reference list (``dsutils.DEFAULT_BAD_WORDS``) is sentence_start sentence_end br lg ls ns sp;
    the default adds '', sil, sl, cg and ig. Word rate, categories and word probes count only the rest."""


class LebelDataset:
    """Validated access to one dataset root in the ds003020 layout.

    Parameters
    ----------
    root : path
        Dataset root (contains ``derivative/`` or ``derivatives/`` and ``stimuli/``).
    cfg : DataConfig, optional
        TR conventions and story split; ``cfg.root`` is ignored when ``root`` is given.
    """

    def __init__(self, root: str | os.PathLike | None = None, cfg: DataConfig | None = None):
        self.cfg = cfg or DataConfig()
        self.root = Path(root if root is not None else self.cfg.root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root not found: {self.root}")
        for name in ("derivative", "derivatives"):
            if (self.root / name / "preprocessed_data").is_dir():
                self.deriv = self.root / name
                break
        else:
            raise DatasetError(f"{self.root}: no derivative/preprocessed_data/ folder (ds003020 layout expected)")
        self.resp_dir = self.deriv / "preprocessed_data"

    # ------------------------------------------------------------------ index
    @cached_property
    def respdict(self) -> dict[str, int]:
        """Story → TR count of its TR grid, from ``derivative/respdict.json``."""
        path = self.deriv / "respdict.json"
        if not path.is_file():
            raise DatasetError(f"missing {path} (story → number of TRs)")
        return read_respdict(path)

    def participants(self) -> list[str]:
        """Participant folders, or the configured subset (each checked to exist)."""
        found = sorted(p.name for p in self.resp_dir.iterdir() if p.is_dir())
        if not self.cfg.participants:
            return found
        missing = [s for s in self.cfg.participants if s not in found]
        if missing:
            raise DatasetError(f"unknown subject(s) {missing} in {self.resp_dir} (found {found})")
        return list(self.cfg.participants)

    def stories(self, participant: str) -> list[str]:
        """Stories with a response file for ``participant``, sorted."""
        d = self.resp_dir / participant
        if not d.is_dir():
            raise DatasetError(f"unknown subject {participant!r}: no folder {d}")
        found = sorted(d.glob("*.hf5"))
        for path in found:                       # a dangling link would pass for a story the subject heard
            self._refuse_broken_link(path, "the subject's response file")
        return [p.stem for p in found]

    def split(self, mode: str = "shared", participants: list[str] | None = None) -> dict[str, list[str]]:
        """``{'train': [...], 'val': [...], 'test': [story]}`` for ``participants`` (default: the configured ones).

        mode 'shared': the default training set is every story all subjects heard, minus validation and test
        stories, and a story named in the config must exist for every subject. mode 'union': every story any
        subject heard (absent listeners are masked in training); a named story needs one listener.
        """
        subs = participants or self.participants()
        heard = [set(self.stories(s)) for s in subs]
        pool = (set.intersection if mode == "shared" else set.union)(*heard) if heard else set()
        test, val = self.cfg.test_story, list(self.cfg.val_stories)
        train = list(self.cfg.train_stories) or sorted(pool - set(val) - {test})
        if not train:
            raise DatasetError(f"no training stories: data.val_stories {val} and data.test_story {test!r} take every "
                               f"story {'all' if mode == 'shared' else 'any'} of {subs} heard ({sorted(pool)}) in "
                               f"{self.resp_dir}; name fewer validation stories or set data.train_stories")
        split = {"train": train, "val": val, "test": [test]}
        for name, s in ((name, s) for name, stories in split.items() for s in stories):
            deaf = [sub for sub, h in zip(subs, heard) if s not in h]
            if mode == "shared" and deaf:
                raise DatasetError(f"{name} story {s!r} missing for subject {deaf[0]}: {self.response_path(deaf[0], s)}")
            if len(deaf) == len(subs):
                raise DatasetError(f"{name} story {s!r}: no participant has it (expected e.g. "
                                   f"{self.response_path(subs[0], s)})")
        return split

    # ------------------------------------------------------------------ paths
    def response_path(self, participant: str, story: str) -> Path:
        return self.resp_dir / participant / f"{story}.hf5"

    def audio_path(self, story: str) -> Path:
        return self.root / "stimuli" / f"{story}.wav"

    def _audio_file(self, story: str) -> Path:
        path = self.audio_path(story)
        if not path.is_file():
            self._refuse_broken_link(path, "the story's audio file")
            raise DatasetError(f"missing audio for story {story!r}: {path}")
        return path

    @staticmethod
    def _refuse_broken_link(path: Path, what: str) -> None:
        problem = broken_link(path, what)
        if problem:
            raise DatasetError(problem)

    def textgrid_path(self, story: str) -> Path:
        return self.deriv / "TextGrids" / f"{story}.TextGrid"

    # ------------------------------------------------------------------ TR grid
    def tr_report_path(self, story: str) -> Path:
        return (Path(self.cfg.tr_report_dir) if self.cfg.tr_report_dir else self.deriv / "trfiles") / f"{story}.report"

    def report(self, story: str) -> tuple[np.ndarray, float] | None:
        """(TR mid-points (n,), mean TR) of ``story`` from its TR report, or None where the grid applies."""
        if self.cfg.tr_source == "grid":
            return None
        cache = self.__dict__.setdefault("_reports", {})
        if story not in cache:
            path = self.tr_report_path(story)
            if not path.is_file():
                if self.cfg.tr_source == "reports":
                    raise DatasetError(f"missing TR report for story {story!r}: {path} (data.tr_source reports)")
                cache[story] = None
            else:
                triggers, start = read_tr_report(path)
                n = self.n_trs(story) - TRFILE_PAD
                if len(triggers) != n:
                    raise DatasetError(
                        f"{path}: {len(triggers)} triggers, but respdict.json's {self.n_trs(story)} TRs for {story!r} "
                        f"mean {n} (n_trs - {TRFILE_PAD}); the hf5 rows line up with triggers [10:-5]")
                avg = float(np.diff(triggers).mean())
                cache[story] = (triggers - start + avg / 2, avg)
        return cache[story]

    def tr_length(self, story: str) -> float:
        """Seconds per TR of ``story``: the mean trigger spacing of its report, else ``cfg.tr``."""
        rep = self.report(story)
        return self.cfg.tr if rep is None else rep[1]

    def n_trs(self, story: str) -> int:
        """TR count of ``story`` from respdict.json."""
        if story not in self.respdict:
            raise DatasetError(f"story {story!r} not in {self.deriv / 'respdict.json'}")
        return self.respdict[story]

    def tr_times(self, story: str) -> np.ndarray:
        """TR mid-points relative to audio onset, shape (n_trs - 5,), seconds (from the report or the grid)."""
        rep = self.report(story)
        if rep is not None:
            return rep[0]
        n = self.n_trs(story) - TRFILE_PAD
        return np.arange(n) * self.cfg.tr - self.cfg.sound_onset + self.cfg.tr / 2

    def row_tr_index(self, story: str) -> np.ndarray:
        """Index into ``tr_times`` of each response row returned by ``load_responses`` (trims applied).

        Shape (n_rows,): ``[10, n-5)`` for training stories, ``[50, n-5)`` for the test story.
        """
        n = self.n_trs(story) - TRFILE_PAD
        start = TRIM_START + (TEST_EXTRA_TRIM if story == self.cfg.test_story else 0)
        return np.arange(start, n - TRIM_END)

    # ------------------------------------------------------------------ responses
    def _open(self, participant: str, story: str):
        import h5py
        path = self.response_path(participant, story)
        if not (self.resp_dir / participant).is_dir():
            raise DatasetError(f"unknown subject {participant!r}: no folder {self.resp_dir / participant}")
        if not path.is_file():
            self._refuse_broken_link(path, "the subject's response file")
            raise DatasetError(f"missing story {story!r} for subject {participant}: {path}")
        try:
            return h5py.File(path, "r"), path
        except OSError as exc:
            raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from None

    def _read_key(self, participant: str, story: str, key: str, ndim: int) -> np.ndarray:
        arr, path = self._read_raw(participant, story, key, ndim)
        return self._finite(arr, path, key)

    def _read_raw(self, participant: str, story: str, key: str, ndim: int) -> tuple[np.ndarray, Path]:
        """``key`` of the hf5 file as stored (NaN kept), its shape and row count checked; and the file's path."""
        f, path = self._open(participant, story)
        with f:
            if key not in f:
                raise DatasetError(f"{path}: no key {key!r} (keys: {sorted(f.keys())})")
            arr = np.asarray(f[key], dtype=np.float32)
        if arr.ndim != ndim:
            raise DatasetError(f"{path}: '{key}' has shape {arr.shape}, expected {ndim} dimensions")
        if arr.shape[-1] == 0:
            raise DatasetError(f"{path}: '{key}' has shape {arr.shape}: no voxels")
        if arr.size and np.isnan(arr).all():
            raise DatasetError(f"{path}: '{key}' is all NaN")
        # the reference loaders' rule: n_trs - 5 simulated triggers, features trimmed [10:-5], the hf5 rows
        # used as stored; their ridge then needs rows == n_trs - 20 (it fails on a shape mismatch otherwise)
        n_expected = self.n_trs(story) - TRFILE_PAD - TRIM_START - TRIM_END
        if arr.shape[-2] != n_expected:
            raise DatasetError(
                f"{path}: '{key}' has {arr.shape[-2]} rows but respdict.json gives {story!r} {self.n_trs(story)} "
                f"TRs, and hf5 rows must number n_trs - 20 = {n_expected} (TR grid of n_trs - 5 triggers, trimmed "
                f"[10:-5]). If the hf5 file is right, set {story!r} to {arr.shape[-2] + 20} in "
                f"{self.deriv / 'respdict.json'}; otherwise the file comes from another preprocessing")
        return arr, path

    def _finite(self, arr: np.ndarray, path: Path, key: str) -> np.ndarray:
        """``arr`` with NaN and ±inf set to 0 (in place), refused beyond ``data.max_abs_response``."""
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0, copy=False)
        peak = max(float(arr.max()), -float(arr.min())) if arr.size else 0.0     # no |arr| copy of a GB array
        if peak > self.cfg.max_abs_response:
            j = int(np.flatnonzero((np.abs(arr) > self.cfg.max_abs_response).reshape(-1, arr.shape[-1]).any(axis=0))[0])
            raise DatasetError(f"{path}: '{key}' holds {peak:.3g} (voxel {j}); responses are z-scores, "
                               f"beyond data.max_abs_response = {self.cfg.max_abs_response:g} is a preprocessing error")
        return arr

    def load_responses(self, participant: str, story: str) -> np.ndarray:
        """Responses aligned with ``row_tr_index(story)``, NaN → 0.

        Returns
        -------
        Y : array of shape (n_rows, n_voxels), float32
            ``data`` for training stories; ``data[40:]`` for the test story.
        """
        Y = self._read_key(participant, story, "data", 2)
        return Y[TEST_EXTRA_TRIM:] if story == self.cfg.test_story else Y

    def load_repeats(self, participant: str, story: str | None = None) -> np.ndarray:
        """Individual repeats of the test story with data: a repeat NaN throughout is dropped, other NaN are set
        to 0, each with a warning naming the file (``voxels.repeats_with_data``).

        Returns
        -------
        R : array of shape (n_kept_repeats, n_rows, n_voxels), float32
            ``individual_repeats[:, 40:]`` (aligned with ``load_responses`` of the test story).
        """
        story = story or self.cfg.test_story
        R, path = self._read_raw(participant, story, "individual_repeats", 3)
        R = R[:, TEST_EXTRA_TRIM:] if story == self.cfg.test_story else R
        rows = " in rows [40:]" if story == self.cfg.test_story else ""
        R = repeats_with_data(R, f"{path}: 'individual_repeats'", rows)
        return self._finite(R, path, "individual_repeats")

    def noise_ceiling(self, participant: str, repeats: np.ndarray | None = None) -> np.ndarray:
        """(n_voxels,) Schoppe cc_max of ``participant``'s test-story repeats under ``cfg.ceiling``
        (``repeats``: the already loaded ``load_repeats(subject)``)."""
        reps = self.load_repeats(participant) if repeats is None else repeats
        return noise_ceiling(reps, zscore=self.cfg.ceiling == "zscored")

    def n_voxels(self, participant: str, story: str | None = None) -> int:
        f, _ = self._open(participant, story or self.cfg.test_story)
        with f:
            return int(f["data"].shape[1]) if "data" in f else 0

    # ------------------------------------------------------------------ stimuli
    def load_audio(self, story: str) -> np.ndarray:
        """Story waveform, mono float32 at 16 kHz, shape (n_samples,).

        Other sample rates are resampled (polyphase) with a warning; the length is checked against
        the TR grid (``audio_tolerance`` seconds).
        """
        import soundfile as sf
        path = self._audio_file(story)
        try:
            wav, sr = sf.read(path, dtype="float32", always_2d=True)
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise DatasetError(f"{path}: unreadable audio ({exc})") from None
        mono = wav.mean(axis=1)
        kept = float(np.sqrt(np.mean(mono ** 2))) / max(float(np.sqrt(np.mean(wav ** 2))), 1e-12)
        if wav.shape[1] > 1 and kept < 0.1:          # channels in opposite phase average to (near) silence
            warnings.warn(f"{path}: its {wav.shape[1]} channels cancel when averaged to mono (the downmix keeps "
                          f"{100 * kept:.1f}% of their RMS; opposite phase?): the models hear near silence. "
                          "Convert the file to mono from one channel (sox IN OUT remix 1)", stacklevel=2)
        wav = mono
        if sr != SAMPLE_RATE:
            from math import gcd
            from scipy.signal import resample_poly
            warnings.warn(f"{path}: sample rate {sr} Hz, resampling to {SAMPLE_RATE} Hz", stacklevel=2)
            g = gcd(int(sr), SAMPLE_RATE)
            wav = resample_poly(wav, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)
        self._check_audio_length(story, len(wav) / SAMPLE_RATE, path)
        return wav

    def audio_digest(self, story: str) -> str:
        """Content hash of the story's audio file (16 hex digits): what feature caches are keyed by."""
        return file_digest(self._audio_file(story))

    def check_audio(self, story: str) -> None:
        """The length check of ``load_audio`` from the file header alone (no decoding)."""
        import soundfile as sf
        path = self._audio_file(story)
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise DatasetError(f"{path}: unreadable audio ({exc})") from None
        self._check_audio_length(story, info.frames / info.samplerate, path)

    def _check_audio_length(self, story: str, seconds: float, path: Path) -> None:
        # the triggers cover audio time up to the end of the last TR
        grid_end = self.tr_times(story)[-1] + self.tr_length(story) / 2
        if abs(seconds - grid_end) > self.cfg.audio_tolerance:
            raise DatasetError(
                f"{path}: audio lasts {seconds:.1f} s but respdict.json's {self.n_trs(story)} TRs cover "
                f"{grid_end:.1f} s of audio (TR {self.tr_length(story):.4f} s, onset {self.cfg.sound_onset} s): "
                "TR-count mismatch")

    def words(self, story: str) -> list[Interval]:
        """Word intervals of ``story`` (times from audio onset), without ``cfg.non_words``."""
        return self.load_textgrid(story).tier("words").words(self.cfg.non_words)

    def load_textgrid(self, story: str) -> TextGrid:
        """Word/phone alignment of ``story`` (times relative to audio onset)."""
        path = self.textgrid_path(story)
        if not path.is_file():
            raise DatasetError(f"missing TextGrid for story {story!r}: {path}")
        try:
            return read_textgrid(path)
        except TextGridError as exc:
            raise DatasetError(str(exc)) from None

    # ------------------------------------------------------------------ validation
