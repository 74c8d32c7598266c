"""Reader for the Narratives layout (Nastase et al. 2021, OpenNeuro ds002345): surface responses, real or simulated.

Layout read (paths relative to the dataset root)::

    participants.tsv                       participant_id, task, condition (comma-joined, one entry per task)
    code/scan_exclude.json                 {task: {sub: [BIDS filename roots]}} (optional; substring match)
    task-<task>_bold.json                  RepetitionTime (BIDS inheritance: the participant's own sidecar wins)
    sub-XXX/func/sub-XXX_task-<task>[_run-N]_bold.json     RepetitionTime
    sub-XXX/func/sub-XXX_task-<task>[_run-N]_events.tsv    onset duration trial_type stim_file (seconds)
    derivatives/<derivative>/sub-XXX/func/sub-XXX_task-<task>[_run-N]_space-<fsaverage6|fsaverage5>_hemi-{L,R}_desc-clean.func.gii
    stimuli/<stimulus>_audio.wav
    stimuli/gentle/<stimulus>/align.json   Gentle word/phone alignment (seconds from audio onset)

The TR is read from the JSON sidecar, never the NIfTI header. The story's TRs are computed from the
participant's own ``events.tsv`` (two participants' onsets are shifted, so a per-task table would misplace
them): the story row's onset and duration are rounded to TRs, the scan sliced ``[onset : onset + duration]``
and ``INITIAL_TRIM`` more TRs dropped, which reproduces the Narratives code's ``event_meta.json`` values
(pieman 15/422 s → 10/281 TRs). ``code/event_meta.json`` is not read: its format was not seen here.

A *stimulus* is what one audio file and one alignment hold: the task name, or ``<task><condition>`` where
``stimuli/gentle/<task><condition>/`` exists (milkyway's conditions are different recordings; prettymouth's
differ only in the prompt heard before, so they share the task's stimulus).
"""
from __future__ import annotations

import csv
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from braintune_dist.data.surface import TEMPLATE_SIZES
from braintune_dist.data.textgrid import Interval
from braintune_dist.data.voxels import isc_ceiling
from braintune_dist.errors import DatasetError

SAMPLE_RATE = 16_000
INITIAL_TRIM = 6            # TRs dropped after the story onset (the Narratives code's initial_trim)
HEMIS = ("L", "R")
GENTLE_TOLERANCE = 0.05     # seconds a Gentle word may end past the audio (rounding of its times)


@dataclass
class NarrativesConfig:
    """Where a Narratives-layout dataset lives and which scans to read."""

    root: str = "data/narratives"
    """Dataset root holding participants.tsv, sub-*/, derivatives/ and stimuli/ (ds002345 layout)."""
    tasks: list[str] = field(default_factory=list)
    """Tasks (stories) to use, e.g. ['pieman', 'tunnel']; empty = every task in participants.tsv."""
    space: Literal["", "fsaverage6", "fsaverage5"] = ""
    """Surface template in the file names; empty = the one found (two found is an error)."""
    derivative: Literal["afni-nosmooth", "afni-smooth"] = "afni-nosmooth"
    """Folder under derivatives/ of the cleaned surface data (afni-smooth: the spatially smoothed copy)."""
    participants: list[str] = field(default_factory=list)
    """Participants (sub-001 ...); empty = every one listed for the task whose scan is not excluded. Naming
    one whose scan is in code/scan_exclude.json is an error."""
    run: int = 0
    """Run of tasks heard in several runs (pieman run-1/run-2): 0 = the lowest-numbered one present (the first
    hearing; a later run is a repeat shaped by memory of the first), N = run-N (missing is an error)."""
    max_abs_response: float = 1e5
    """Largest |value| accepted in a surface file; the data are cleaned BOLD, anything near this is an error."""


def _read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"missing {path}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


class NarrativesDataset:
    """Validated access to one dataset root in the Narratives (ds002345) layout.

    Parameters
    ----------
    root : path, optional
        Dataset root; default ``cfg.root``.
    cfg : NarrativesConfig, optional
    """

    def __init__(self, root: str | os.PathLike | None = None, cfg: NarrativesConfig | None = None):
        self.cfg = cfg or NarrativesConfig()
        self.root = Path(root if root is not None else self.cfg.root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root not found: {self.root}")
        self.deriv = self.root / "derivatives" / self.cfg.derivative
        if not self.deriv.is_dir():
            raise DatasetError(f"{self.root}: no derivatives/{self.cfg.derivative}/ folder (Narratives layout expected)")

    # ------------------------------------------------------------------ participants and scans
    @cached_property
    def table(self) -> dict[str, dict[str, str]]:
        """participant → {task: condition ('' where n/a)} from participants.tsv."""
        path = self.root / "participants.tsv"
        out = {}
        for row in _read_tsv(path):
            if "participant_id" not in row or "task" not in row:
                raise DatasetError(f"{path}: needs columns participant_id and task (has {sorted(row)})")
            tasks = [t.strip() for t in (row["task"] or "").split(",") if t.strip()]
            conds = [c.strip() for c in (row.get("condition") or "").split(",")]
            conds = conds if len(conds) == len(tasks) else [""] * len(tasks)   # comma-joined like task, or absent
            out[row["participant_id"]] = {t: ("" if c.lower() in ("n/a", "na", "") else c)
                                          for t, c in zip(tasks, conds)}
        return out

    @cached_property
    def exclusions(self) -> dict[str, dict[str, list[str]]]:
        """task → participant → excluded BIDS filename roots, from code/scan_exclude.json ({} if absent)."""
        path = self.root / "code" / "scan_exclude.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise DatasetError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise DatasetError(f"{path}: expected {{task: {{participant: [filename roots]}}}}")
        return data

    def excluded(self, participant: str, task: str) -> str:
        """The scan_exclude.json entry that excludes ``participant``'s scan of ``task`` ('' when none)."""
        name = self.scan_stem(participant, task)
        for root in self.exclusions.get(task, {}).get(participant, []):
            if root in name:                    # listed roots are prefixes/substrings of the file names
                return root
        return ""

    def tasks(self) -> list[str]:
        """Configured tasks, or every task in participants.tsv, sorted."""
        return list(self.cfg.tasks) or sorted({t for tasks in self.table.values() for t in tasks})

    def stories(self, participant: str | None = None) -> list[str]:
        """Tasks heard by ``participant`` (all configured tasks when None)."""
        return [t for t in self.tasks() if participant is None or t in self.table.get(participant, {})]

    def participants(self, task: str | None = None) -> list[str]:
        """Participants of ``task`` (of every configured task when None) with a scan not excluded; or the
        configured ones, each checked: listed, scanned, and not excluded."""
        tasks = [task] if task else self.tasks()
        if self.cfg.participants:
            for sub in self.cfg.participants:
                for t in tasks:
                    if t not in self.table.get(sub, {}):
                        raise DatasetError(f"participant {sub!r} did not hear {t!r} per {self.root / 'participants.tsv'}")
                    root = self.excluded(sub, t)
                    if root:
                        raise DatasetError(f"scan {root} of {sub} is excluded in {self.root / 'code' / 'scan_exclude.json'}: "
                                           f"remove {sub} from the participants or the entry from that file")
            return list(self.cfg.participants)
        return sorted(s for s, heard in self.table.items()
                      if all(t in heard for t in tasks) and not any(self.excluded(s, t) for t in tasks))

    def split(self, test: str, val: list[str] | None = None) -> dict[str, list[str]]:
        """``{'train': [...], 'val': [...], 'test': [test]}`` over the configured tasks."""
        val = list(val or [])
        for t in [test, *val]:
            if t not in self.tasks():
                raise DatasetError(f"story {t!r} is not a task of {self.root / 'participants.tsv'} ({self.tasks()})")
        return {"train": [t for t in self.tasks() if t != test and t not in val], "val": val, "test": [test]}

    def runs(self, participant: str, task: str) -> list[int]:
        """Run numbers of the participant's scans of ``task`` in the derivative ([] when unnumbered)."""
        found = self.deriv.glob(f"{participant}/func/{participant}_task-{task}_run-*_hemi-L_desc-clean.func.gii")
        return sorted({int(m.group(1)) for p in found if (m := re.search(r"_run-(\d+)_", p.name))})

    def scan_stem(self, participant: str, task: str) -> str:
        """BIDS filename root of the scan read: ``sub-XXX_task-YYY[_run-N]``."""
        runs = self.runs(participant, task)
        if not runs:
            if self.cfg.run > 0:
                raise DatasetError(f"{participant} {task}: no run-{self.cfg.run} (the scan has no run entity) in "
                                   f"{self.deriv / participant / 'func'}")
            return f"{participant}_task-{task}"
        run = self.cfg.run or runs[0]
        if run not in runs:
            raise DatasetError(f"{participant} {task}: no run-{run} in {self.deriv / participant / 'func'} (runs {runs})")
        return f"{participant}_task-{task}_run-{run}"

    # ------------------------------------------------------------------ surface files
    @cached_property
    def space(self) -> str:
        """Template in the surface file names: ``cfg.space``, or the one found in the derivative."""
        if self.cfg.space:
            return self.cfg.space
        found = {m.group(1) for p in self.deriv.glob("sub-*/func/*_hemi-L_desc-clean.func.gii")
                 if (m := re.search(r"_space-(fsaverage\d?)_", p.name))}
        if len(found) != 1:
            raise DatasetError(f"{self.deriv}: surface files in {sorted(found) or 'no'} fsaverage space(s); "
                               "set space to the one to read")
        return found.pop()

    def surface_path(self, participant: str, task: str, hemi: str) -> Path:
        stem = self.scan_stem(participant, task)
        return self.deriv / participant / "func" / f"{stem}_space-{self.space}_hemi-{hemi}_desc-clean.func.gii"

    def _read_hemi(self, path: Path) -> tuple[np.ndarray, str]:
        """(n_trs, n_vertices) float32 of one hemisphere file and its template (from the vertex count)."""
        import nibabel as nib
        if not path.is_file():
            raise DatasetError(f"missing surface file {path}")
        try:
            arrays = [np.asarray(d.data, dtype=np.float32) for d in nib.load(path).darrays]
        except Exception as exc:                 # nibabel raises many types on a corrupt GIfTI
            raise DatasetError(f"{path}: not a readable GIfTI file ({exc})") from None
        if len(arrays) == 1 and arrays[0].ndim == 2:    # one (n_vertices, n_trs) array, or its transpose
            data = arrays[0] if arrays[0].shape[1] in TEMPLATE_SIZES else arrays[0].T
        elif arrays and all(a.ndim == 1 and a.shape == arrays[0].shape for a in arrays):
            data = np.stack(arrays)                     # one data array per TR, as the Narratives files hold them
        else:
            raise DatasetError(f"{path}: data arrays of shapes {[a.shape for a in arrays][:3]}...; expected one "
                               "(n_vertices,) array per TR")
        return data, TEMPLATE_SIZES.get(data.shape[1], f"no fsaverage template ({data.shape[1]} vertices)")

    def load_responses(self, participant: str, task: str, trimmed: bool = True) -> np.ndarray:
        """Surface responses of one scan, left hemisphere then right.

        Returns
        -------
        Y : array of shape (n_trs, 2 * n_per_hemi), float32, NaN → 0
            The story's TRs (``story_rows``) when ``trimmed``, else every TR of the scan.
        """
        paths = [self.surface_path(participant, task, h) for h in HEMIS]
        (left, t_left), (right, t_right) = (self._read_hemi(p) for p in paths)
        if t_left != t_right:
            raise DatasetError(f"hemispheres of different templates: {paths[0]} is {t_left}, {paths[1]} is {t_right}")
        if t_left != self.space:
            raise DatasetError(f"{paths[0]} and {paths[1]}: {t_left}, but their names say space-{self.space}")
        if left.shape[0] != right.shape[0]:
            raise DatasetError(f"{paths[1]}: {right.shape[0]} TRs, but {paths[0]} has {left.shape[0]}")
        parts = (left, right)
        Y = np.nan_to_num(np.concatenate(parts, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
        if Y.size and np.abs(Y).max() > self.cfg.max_abs_response:
            raise DatasetError(f"{self.surface_path(participant, task, 'L')} (or -R): values beyond "
                               f"max_abs_response = {self.cfg.max_abs_response:g}")
        if not trimmed:
            return Y
        a, b = self.story_rows(participant, task)
        if b > len(Y):
            raise DatasetError(f"{self.events_path(participant, task)}: the story ends at TR {b}, but "
                               f"{self.surface_path(participant, task, 'L')} has {len(Y)} TRs")
        return Y[a:b]

    # ------------------------------------------------------------------ timing
    def _func(self, participant: str, task: str, suffix: str) -> Path:
        return self.root / participant / "func" / f"{self.scan_stem(participant, task)}_{suffix}"

    def events_path(self, participant: str, task: str) -> Path:
        return self._func(participant, task, "events.tsv")

    def sidecar_path(self, participant: str, task: str) -> Path:
        """The participant's ``_bold.json``, else the root's ``task-<task>_bold.json`` (BIDS inheritance)."""
        own = self._func(participant, task, "bold.json")
        return own if own.is_file() else self.root / f"task-{task}_bold.json"

    def tr(self, participant: str, task: str) -> float:
        """RepetitionTime in seconds from the JSON sidecar."""
        path = self.sidecar_path(participant, task)
        if not path.is_file():
            raise DatasetError(f"missing sidecar for {participant} {task}: neither {self._func(participant, task, 'bold.json')} "
                               f"nor {path} (RepetitionTime; the NIfTI header's TR is not trusted)")
        try:
            tr = float(json.loads(path.read_text())["RepetitionTime"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: no numeric RepetitionTime ({exc!r})") from None
        if not 0 < tr < 10:
            raise DatasetError(f"{path}: RepetitionTime {tr} is not in seconds (0, 10)")
        return tr

    def story_event(self, participant: str, task: str) -> tuple[float, float]:
        """(onset, duration) in seconds of the story row of the scan's events.tsv (not the music row)."""
        path = self.events_path(participant, task)
        rows = [r for r in _read_tsv(path) if (r.get("trial_type") or "").strip().lower() != "music"]
        if len(rows) != 1:
            what = "no story row" if not rows else f"{len(rows)} story rows (several stories in one scan)"
            raise DatasetError(f"{path}: {what}; expected one row whose trial_type is not 'music'")
        try:
            return float(rows[0]["onset"]), float(rows[0]["duration"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: story row without numeric onset/duration ({exc!r})") from None

    def story_rows(self, participant: str, task: str) -> tuple[int, int]:
        """Scan TRs ``[start, stop)`` of the story: onset and duration rounded to TRs, ``INITIAL_TRIM`` dropped."""
        onset, duration = self.story_event(participant, task)
        tr = self.tr(participant, task)
        a, n = int(round(onset / tr)), int(round(duration / tr))
        if n <= INITIAL_TRIM:
            raise DatasetError(f"{self.events_path(participant, task)}: story lasts {n} TRs, not more than the "
                               f"{INITIAL_TRIM} trimmed")
        return a + INITIAL_TRIM, a + n

    def n_trs(self, participant: str, task: str) -> int:
        """Rows of ``load_responses(participant, task)``."""
        a, b = self.story_rows(participant, task)
        return b - a

    def tr_times(self, participant: str, task: str) -> np.ndarray:
        """(n_trs,) mid-points of the returned TRs in seconds from audio onset (the events' story onset)."""
        a, b = self.story_rows(participant, task)
        tr, onset = self.tr(participant, task), self.story_event(participant, task)[0]
        return (np.arange(a, b) + 0.5) * tr - onset

    # ------------------------------------------------------------------ stimuli
    def stimulus(self, participant: str, task: str) -> str:
        """Stimulus heard: ``<task><condition>`` where it has its own Gentle folder, else ``task``."""
        cond = self.table.get(participant, {}).get(task, "")
        own = f"{task}{cond}"
        return own if cond and (self.root / "stimuli" / "gentle" / own).is_dir() else task

    def audio_path(self, stimulus: str) -> Path:
        return self.root / "stimuli" / f"{stimulus}_audio.wav"

    def gentle_path(self, stimulus: str) -> Path:
        return self.root / "stimuli" / "gentle" / stimulus / "align.json"

    def audio_seconds(self, stimulus: str) -> float:
        import soundfile as sf
        path = self.audio_path(stimulus)
        if not path.is_file():
            raise DatasetError(f"missing audio for {stimulus!r}: {path}")
        try:
            info = sf.info(str(path))
        except (RuntimeError, sf.LibsndfileError) as exc:
            raise DatasetError(f"{path}: unreadable audio ({exc})") from None
        return info.frames / info.samplerate

    def load_audio(self, stimulus: str) -> np.ndarray:
        """Waveform, mono float32 at 16 kHz, shape (n_samples,) (other rates resampled with a warning)."""
        import soundfile as sf
        self.audio_seconds(stimulus)                       # missing / unreadable → DatasetError
        path = self.audio_path(stimulus)
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
        if sr != SAMPLE_RATE:
            from math import gcd
            from scipy.signal import resample_poly
            warnings.warn(f"{path}: sample rate {sr} Hz, resampling to {SAMPLE_RATE} Hz", stacklevel=2)
            g = gcd(int(sr), SAMPLE_RATE)
            wav = resample_poly(wav, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)
        return wav

    def _gentle(self, stimulus: str) -> list[dict]:
        """Aligned Gentle words (``case == 'success'``), checked to lie within the audio."""
        path = self.gentle_path(stimulus)
        if not path.is_file():
            raise DatasetError(f"missing Gentle alignment for {stimulus!r}: {path}")
        try:
            words = json.loads(path.read_text())["words"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: not a Gentle align.json with 'words' ({exc!r})") from None
        # not-found-in-audio words have no start/end: they cannot be placed on the TR grid, so they are dropped
        # (the transcript keeps them; a model hearing the audio never hears them either)
        ok = [w for w in words if w.get("case") == "success" and "start" in w and "end" in w]
        if ok:
            end, audio = max(float(w["end"]) for w in ok), self.audio_seconds(stimulus)
            if end > audio + GENTLE_TOLERANCE:
                raise DatasetError(f"{path}: words aligned up to {end:.2f} s, but {self.audio_path(stimulus)} lasts "
                                   f"{audio:.2f} s: the alignment is of another recording")
        return ok

    def words(self, stimulus: str) -> list[Interval]:
        """Aligned words (seconds from audio onset), in time order; not-found-in-audio words dropped."""
        return [Interval(float(w["start"]), float(w["end"]), str(w["word"])) for w in self._gentle(stimulus)]

    def phones(self, stimulus: str) -> list[Interval]:
        """Phones of the aligned words, laid end to end from each word's start by their Gentle durations."""
        out = []
        for w in self._gentle(stimulus):
            t = float(w["start"])
            for p in w.get("phones", []):
                out.append(Interval(t, t + float(p["duration"]), str(p["phone"])))
                t += float(p["duration"])
        return out

    # ------------------------------------------------------------------ ceiling
    def isc_ceiling(self, task: str, participants: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Leave-one-out ISC of each participant's story TRs against the mean of the others'.

        Returns
        -------
        participants : the participants, in row order
        isc : array of shape (n_participants, n_vertices), float64 (over the TRs all of them have)
        """
        subs = participants or self.participants(task)
        if len(subs) < 2:
            raise DatasetError(f"ISC ceiling of {task!r} needs 2 participants, have {subs}")
        Ys = [self.load_responses(s, task) for s in subs]
        n = min(len(Y) for Y in Ys)
        return subs, isc_ceiling(np.stack([Y[:n] for Y in Ys]))
