"""TIMIT reader: phoneme presence (multi-hot over the folded phone set) and sentence type (SA / SI / SX).

Layout read (the LDC release; names upper- or lower-case)::

    TRAIN/DR<k>/<speaker>/<utt>.WAV     NIST SPHERE, 16 kHz (a converted RIFF copy <utt>.WAV.wav may sit beside
    TEST/DR<k>/<speaker>/<utt>.WAV      it: the SPHERE original is preferred, the copy used where it is alone)
    .../<utt>.PHN                       'start end phone' per line, samples at 16 kHz, TIMIT's 61 phones
    .../<utt>.TXT                       'start end transcript' (one line)

TIMIT has no validation set: whole TRAIN speakers are held out for it (``val_speakers``), so all three splits
are speaker-disjoint. The test split is the full TEST set (168 speakers), not the 24-speaker core test set.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from braintune_dist.downstream.common import HeldOut, check_clips, dataset_dir, held_out
from braintune_dist.downstream.tasks import Task
from braintune_dist.errors import DatasetError

# The 61 TIMIT phones folded to the 39 of Lee & Hon (1989), in full; None = dropped (the glottal stop q).
# Closures, pauses, epenthetic silence and the utterance-boundary h# all fold to 'sil'.
FOLD_61_TO_39: dict[str, str | None] = {
    "aa": "aa", "ao": "aa", "ae": "ae", "ah": "ah", "ax": "ah", "ax-h": "ah", "aw": "aw", "ay": "ay",
    "b": "b", "ch": "ch", "d": "d", "dh": "dh", "dx": "dx", "eh": "eh", "er": "er", "axr": "er", "ey": "ey",
    "f": "f", "g": "g", "hh": "hh", "hv": "hh", "ih": "ih", "ix": "ih", "iy": "iy", "jh": "jh", "k": "k",
    "l": "l", "el": "l", "m": "m", "em": "m", "n": "n", "en": "n", "nx": "n", "ng": "ng", "eng": "ng",
    "ow": "ow", "oy": "oy", "p": "p", "r": "r", "s": "s", "sh": "sh", "zh": "sh", "t": "t", "th": "th",
    "uh": "uh", "uw": "uw", "ux": "uw", "v": "v", "w": "w", "y": "y", "z": "z",
    "pcl": "sil", "tcl": "sil", "kcl": "sil", "bcl": "sil", "dcl": "sil", "gcl": "sil",
    "h#": "sil", "pau": "sil", "epi": "sil",
    "q": None,
}
PHONES_61 = tuple(sorted(FOLD_61_TO_39))
PHONES_39 = tuple(sorted({p for p in FOLD_61_TO_39.values() if p is not None}))
"""Lee & Hon's 39 phones, 'sil' included."""
PHONE_CLASSES = tuple(p for p in PHONES_39 if p != "sil")
"""The 38 classes of the phoneme task: 'sil' is no class, because every TIMIT utterance starts and ends with h#
(so 'sil' is present in every clip: a constant label that only inflates a per-label average)."""
SENTENCE_TYPES = ("SA", "SI", "SX")
"""SA: the two dialect sentences every speaker read; SI: phonetically diverse, one speaker each; SX: phonetically
compact, seven speakers each."""

_UTT = re.compile(r"^S[AIX]\d+$")
_DR = re.compile(r"^DR\d+$")
_LAYOUT = "TRAIN/DR<k>/<speaker>/<utt>.WAV (.PHN, .TXT) and TEST/..."


def _sub(folder: Path, name: str) -> Path | None:
    """The sub-folder called ``name`` in any case (TRAIN, train), or None."""
    for d in folder.iterdir():
        if d.is_dir() and d.name.upper() == name:
            return d
    return None


def _utterances(speaker_dir: Path) -> dict[str, dict[str, Path]]:
    """Files of one speaker by utterance id (upper-case) and kind: 'WAV' (SPHERE), 'WAV.WAV' (converted copy),
    'PHN', 'TXT'."""
    out: dict[str, dict[str, Path]] = {}
    for f in sorted(speaker_dir.iterdir()):
        stem, _, ext = f.name.partition(".")
        if f.is_file() and ext.upper() in ("WAV", "WAV.WAV", "PHN", "TXT"):
            out.setdefault(stem.upper(), {})[ext.upper()] = f
    return out


def read_phn(path: Path) -> np.ndarray:
    """Phone presence of one ``.PHN`` file: (38,) uint8 over PHONE_CLASSES (after the 61 → 39 folding).

    Raises DatasetError naming the file and line of a malformed line or of a phone outside TIMIT's 61.
    """
    index = {p: i for i, p in enumerate(PHONE_CLASSES)}
    row = np.zeros(len(PHONE_CLASSES), np.uint8)
    with open(path, encoding="ascii", errors="replace") as fh:
        lines = fh.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise DatasetError(f"{path}, line {lineno}: expected 'start end phone' (samples), got {line.strip()!r}")
        phone = parts[2].lower()
        if phone not in FOLD_61_TO_39:
            raise DatasetError(f"{path}, line {lineno}: unknown phone {parts[2]!r} (not one of TIMIT's 61)")
        folded = FOLD_61_TO_39[phone]
        if folded in index:
            row[index[folded]] = 1
    return row


def _read_txt(path: Path) -> str:
    """The transcript of a ``.TXT`` file (its two leading sample numbers dropped)."""
    parts = path.read_text(encoding="ascii", errors="replace").split(maxsplit=2)
    if len(parts) < 3 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise DatasetError(f"{path}: expected 'start end transcript' on its first line")
    return parts[2].strip()


def read_timit(root: str | Path, task: str = "phonemes", val_speakers: HeldOut = 0.1,
               include_sa: bool | None = None) -> Task:
    """Read TIMIT as a checked :class:`Task`.

    Parameters
    ----------
    root : the folder holding TRAIN/ and TEST/ (or one level above it, e.g. the archive's ``TIMIT/``).
    task : 'phonemes' — targets (n_clips, 38) uint8, the folded phones present in the utterance (PHONE_CLASSES;
        closures and silences fold to 'sil', which is no class) — or 'sentence_type' — targets (n_clips,) int64
        into SENTENCE_TYPES, from the utterance id's prefix.
    val_speakers : TRAIN speakers held out for validation: a fraction (default 10% of them, at least one), a
        count, or the speaker ids (e.g. ['FCJF0']). A fraction or count takes the speakers with the smallest
        ``sha1('timit:<speaker>')``: deterministic, speaker-disjoint.
    include_sa : keep the SA utterances. Default: not for 'phonemes' (both SA sentences are read by every
        speaker, so their phone sets repeat across all splits; phone recognition on TIMIT drops them too),
        and always for 'sentence_type' (SA is one of its classes).

    Speakers are the speaker folder names, upper-cased (unique across TIMIT's dialect regions); ``texts`` are
    the ``.TXT`` transcripts.
    """
    if task not in ("phonemes", "sentence_type"):
        raise DatasetError(f"TIMIT task {task!r}: expected 'phonemes' or 'sentence_type'")
    if include_sa is None:
        include_sa = task == "sentence_type"
    elif task == "sentence_type" and not include_sa:
        raise DatasetError("TIMIT sentence_type with include_sa=False would lose its SA class; keep the SA utterances")
    base = dataset_dir(root, "TIMIT", lambda d: _sub(d, "TRAIN") is not None and _sub(d, "TEST") is not None,
                       _LAYOUT)
    rows: list[tuple[str, str, str, str, np.ndarray | int]] = []       # part, speaker, audio, text, target
    part_of: dict[str, str] = {}
    for part in ("TRAIN", "TEST"):
        for dr in sorted(d for d in _sub(base, part).iterdir() if d.is_dir() and _DR.match(d.name.upper())):
            for spk_dir in sorted(d for d in dr.iterdir() if d.is_dir()):
                speaker = spk_dir.name.upper()
                if part_of.setdefault(speaker, part) != part:
                    raise DatasetError(f"{spk_dir}: speaker {speaker} is in both TRAIN and TEST; TIMIT's are "
                                       f"speaker-disjoint (a file was moved?)")
                for utt, kinds in _utterances(spk_dir).items():
                    if not _UTT.match(utt):
                        raise DatasetError(f"{next(iter(kinds.values()))}: utterance id {utt!r} is not "
                                           f"SA<n>, SI<n> or SX<n>")
                    if utt.startswith("SA") and not include_sa:
                        continue
                    audio = kinds.get("WAV") or kinds.get("WAV.WAV")
                    if audio is None:
                        raise DatasetError(f"{next(iter(kinds.values()))}: no audio {utt}.WAV beside it")
                    need = ("TXT", "PHN") if task == "phonemes" else ("TXT",)
                    for kind in need:
                        if kind not in kinds:
                            ext = kind if audio.name.split(".")[1].isupper() else kind.lower()
                            raise DatasetError(f"{spk_dir / (audio.name.split('.')[0] + '.' + ext)}: missing "
                                               f"(every TIMIT utterance has a .{kind} beside its .WAV)")
                    target = read_phn(kinds["PHN"]) if task == "phonemes" else SENTENCE_TYPES.index(utt[:2])
                    rows.append((part, speaker, str(audio), _read_txt(kinds["TXT"]), target))
    if not rows:
        raise DatasetError(f"{base}: no utterances found (expected {_LAYOUT})")
    val = held_out({r[1] for r in rows if r[0] == "TRAIN"}, val_speakers, "timit", "val_speakers")
    splits = tuple("test" if p == "TEST" else "validation" if s in val else "train" for p, s, *_ in rows)
    files = tuple(r[2] for r in rows)
    name = f"timit_{task}"
    check_clips(name, files)
    targets = (np.stack([r[4] for r in rows]) if task == "phonemes"
               else np.array([r[4] for r in rows], dtype=np.int64))
    return Task(name=name, classes=PHONE_CLASSES if task == "phonemes" else SENTENCE_TYPES,
                multi_label=task == "phonemes", files=files, targets=targets, splits=splits,
                speakers=tuple(r[1] for r in rows), source=str(base), texts=tuple(r[3] for r in rows)).check()
