"""Readers of the downstream probe datasets in the layouts they ship in: Speech Commands v2, CREMA-D and SLURP
here, TIMIT in ``timit.py``; :func:`read_task` picks one by name. Each returns a checked :class:`Task` or raises
one DatasetError naming the file (and line) at fault; every audio file's header is checked at read time.
"""
from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path

import numpy as np

from braintune_dist.downstream.common import HeldOut, check_clips, dataset_dir, held_out
from braintune_dist.downstream.tasks import Task
from braintune_dist.downstream.timit import read_timit
from braintune_dist.errors import DatasetError

# ------------------------------------------------------------------ Speech Commands v2

COMMANDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
            "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
            "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")
"""The 35 words of Speech Commands v0.02 (v0.01 had 30: no backward, follow, forward, learn, visual)."""
NOISE_DIR = "_background_noise_"
SPLIT_LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def _read_list(base: Path, fname: str) -> dict[str, int]:
    """Entries of one split list (``word/<speaker>_nohash_<n>.wav``) → line number, each checked to exist."""
    path = base / fname
    if not path.is_file():
        raise DatasetError(f"missing {path} (Speech Commands v2 ships it beside the word folders; it defines "
                           f"the {fname.split('_')[0]} split)")
    entries: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        entry = line.strip().replace("\\", "/")
        if not entry:
            continue
        if entry.split("/")[0] not in COMMANDS or not (base / entry).is_file():
            why = "no such file" if entry.split("/")[0] in COMMANDS else "not in one of the 35 word folders"
            raise DatasetError(f"{path}, line {lineno}: {entry!r}: {why} under {base}")
        entries[entry] = lineno
    return entries


def read_speech_commands(root: str | Path) -> Task:
    """Read Speech Commands v0.02 as the 35-word task ('commands'): targets (n_clips,) int64 into COMMANDS.

    Layout: ``<word>/<speaker>_nohash_<n>.wav`` for the 35 words, ``_background_noise_/`` (not read),
    ``validation_list.txt`` and ``testing_list.txt`` (paths relative to the root); clips in neither list are
    train. The released lists are speaker-disjoint (split by a hash of the speaker); that is checked. The speaker
    is the name before ``_nohash_``; ``texts`` is the word. Any other folder, or a word folder missing or empty,
    is an error: the 35 classes are the benchmark's.
    """
    base = dataset_dir(root, "Speech Commands v2", lambda d: any((d / w).is_dir() for w in COMMANDS),
                       "<word>/<speaker>_nohash_<n>.wav, validation_list.txt, testing_list.txt")
    for d in sorted(base.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.name != NOISE_DIR and d.name not in COMMANDS:
            raise DatasetError(f"{d}: folder {d.name!r} is not one of the 35 Speech Commands v2 words "
                               f"({', '.join(COMMANDS)}); move it out of {base}")
    lists = {split: _read_list(base, fname) for split, fname in SPLIT_LISTS.items()}
    both = sorted(set(lists["validation"]) & set(lists["test"]))
    if both:
        raise DatasetError(f"{base / SPLIT_LISTS['test']}, line {lists['test'][both[0]]}: {both[0]!r} is in "
                           f"{SPLIT_LISTS['validation']} too")
    split_of = {e: split for split, entries in lists.items() for e in entries}
    files, targets, splits, speakers = [], [], [], []
    for k, word in enumerate(COMMANDS):
        clips = sorted((base / word).glob("*.wav")) if (base / word).is_dir() else []
        if not clips:
            raise DatasetError(f"{base / word}: no .wav clips of {word!r} (Speech Commands v2 has 35 word folders; "
                               f"v0.01 lacks five of them)")
        for f in clips:
            if "_nohash_" not in f.name:
                raise DatasetError(f"{f}: not named <speaker>_nohash_<n>.wav, so its speaker is unknown")
            files.append(str(f))
            targets.append(k)
            splits.append(split_of.pop(f"{word}/{f.name}", "train"))
            speakers.append(f.name.split("_nohash_")[0])
    if split_of:        # listed, existing, but not a .wav clip of a word folder
        entry, split = next(iter(split_of.items()))
        raise DatasetError(f"{base / SPLIT_LISTS[split]}, line {lists[split][entry]}: {entry!r} is not a .wav clip")
    seen: dict[str, str] = {}
    for spk, split in zip(speakers, splits):
        if seen.setdefault(spk, split) != split:
            raise DatasetError(f"{base}: speaker {spk!r} has clips in both the {seen[spk]} and the {split} split; "
                               f"the released {' and '.join(SPLIT_LISTS.values())} are speaker-disjoint "
                               f"(edited lists?)")
    check_clips("commands", files)
    return Task(name="commands", classes=COMMANDS, multi_label=False, files=tuple(files),
                targets=np.array(targets, dtype=np.int64), splits=tuple(splits), speakers=tuple(speakers),
                source=str(base), texts=tuple(COMMANDS[t] for t in targets)).check()


# ------------------------------------------------------------------ CREMA-D

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
"""anger, disgust, fear, happy, neutral, sad: the third field of a CREMA-D file name."""
CREMA_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold", "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment", "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before", "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
# XX: unspecified. 'X' is not a level: older copies misname one file 1040_ITH_SAD_X.wav, accepted as XX.
CREMA_LEVELS = ("LO", "MD", "HI", "XX", "X")
CREMA_BROKEN = ("1076_MTI_SAD_XX",)
"""Clips left out by default: this one holds no audio in the release."""
_CREMA_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")


def read_crema_d(root: str | Path, val_actors: HeldOut = 0.1, test_actors: HeldOut = 0.2,
                 exclude: tuple[str, ...] = CREMA_BROKEN) -> Task:
    """Read CREMA-D's audio as the 6-emotion task ('crema_d'): targets (n_clips,) int64 into EMOTIONS.

    Layout: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (e.g. ``1001_DFA_ANG_XX.wav``); ``root`` is
    the release folder or ``AudioWAV`` itself. CREMA-D has no official split: whole actors (91, ids 1001-1091)
    are held out, so the splits are speaker-disjoint. By default 10% of the actors (9) are validation and 20%
    (18) test, those with the smallest ``sha1('crema_d:<actor>')``, validation first; ``val_actors`` and
    ``test_actors`` take a fraction (of all actors), a count or the actor ids. ``exclude`` names clips (file
    stems) left out, default CREMA_BROKEN. ``texts`` are the 12 sentences the codes stand for.
    """
    base = dataset_dir(root, "CREMA-D", lambda d: (d / "AudioWAV").is_dir(), "AudioWAV/<actor>_<sentence>_"
                       "<emotion>_<level>.wav")
    audio = base / "AudioWAV"
    skip = {e[:-4] if e.lower().endswith(".wav") else e for e in exclude}
    rows: list[tuple[str, str, int, str]] = []
    for f in sorted(audio.iterdir()):
        if not f.name.lower().endswith(".wav") or f.name[:-4] in skip:
            continue
        m = _CREMA_NAME.match(f.name[:-4])
        if not m:
            raise DatasetError(f"{f}: not a CREMA-D name <actor>_<sentence>_<emotion>_<level>.wav "
                               f"(e.g. 1001_DFA_ANG_XX.wav)")
        actor, sentence, emotion, level = m.groups()
        if emotion not in EMOTIONS:
            raise DatasetError(f"{f}: unknown emotion code {emotion!r} (third field; one of {', '.join(EMOTIONS)})")
        if sentence not in CREMA_SENTENCES:
            raise DatasetError(f"{f}: unknown sentence code {sentence!r} (second field; one of "
                               f"{', '.join(CREMA_SENTENCES)})")
        if level not in CREMA_LEVELS:
            raise DatasetError(f"{f}: unknown intensity {level!r} (fourth field; one of LO, MD, HI, XX)")
        rows.append((str(f), actor, EMOTIONS.index(emotion), CREMA_SENTENCES[sentence]))
    if not rows:
        raise DatasetError(f"{audio}: no CREMA-D .wav clips")
    actors = {r[1] for r in rows}
    val = held_out(actors, val_actors, "crema_d", "val_actors")
    test = held_out(actors, test_actors, "crema_d", "test_actors", n_total=len(actors), taken=frozenset(val))
    files = tuple(r[0] for r in rows)
    check_clips("crema_d", files)
    return Task(name="crema_d", classes=EMOTIONS, multi_label=False, files=files,
                targets=np.array([r[2] for r in rows], dtype=np.int64),
                splits=tuple("validation" if r[1] in val else "test" if r[1] in test else "train" for r in rows),
                speakers=tuple(r[1] for r in rows), source=str(audio), texts=tuple(r[3] for r in rows)).check()


# ------------------------------------------------------------------ SLURP

SLURP_SPLITS = {"train": "train.jsonl", "validation": "devel.jsonl", "test": "test.jsonl"}
SLURP_LABELS = ("action", "intent", "scenario")


def _slurp_records(path: Path):
    """(line number, record) of one SLURP jsonl file, each with the fields a reader needs."""
    if not path.is_file():
        raise DatasetError(f"missing {path} (SLURP's dataset/slurp/ holds train.jsonl, devel.jsonl, test.jsonl)")
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
        for field, kind in (("scenario", str), ("action", str), ("sentence", str), ("recordings", list)):
            if not isinstance(rec, dict) or not isinstance(rec.get(field), kind):
                raise DatasetError(f"{path}, line {lineno}: no {field!r} field ({kind.__name__})")
        if not all(isinstance(r, dict) and isinstance(r.get("file"), str) for r in rec["recordings"]):
            raise DatasetError(f"{path}, line {lineno}: a recording without a 'file' name")
        yield lineno, rec


def _slurp_speakers(path: Path) -> dict[str, str]:
    """Recording file → speaker ('usrid', e.g. 'FE-488') from SLURP's metadata.json; {} if it is absent."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return {f: str(r["usrid"]) for item in meta.values() for f, r in item.get("recordings", {}).items()
                if isinstance(r, dict) and "usrid" in r}
    except (json.JSONDecodeError, AttributeError, TypeError) as exc:
        raise DatasetError(f"{path}: not SLURP metadata ({exc}); fix or remove it (speakers are then the "
                           f"recording takes)") from None


def read_slurp(root: str | Path, label: str = "action", audio_dir: str | Path | None = None,
               mics: str = "both") -> Task:
    """Read SLURP's real recordings as an intent-style task ('slurp_<label>'): targets (n_clips,) int64.

    Parameters
    ----------
    root : the SLURP repository (holding ``dataset/slurp/``) or the ``dataset/slurp`` folder itself.
    label : 'action' (46 in train), 'intent' or 'scenario'. The intent is ``<scenario>_<action>``, as SLURP's own
        evaluation scores it: the jsonl 'intent' field says only the action in about 1% of the records
        (e.g. 'query' for weather_query), which would make spurious classes.
    audio_dir : the folder of ``audio-*.flac`` (default ``<repo>/audio/slurp_real``, where SLURP's
        ``scripts/download_audio.sh`` unpacks it; the ``audio`` folder above it is accepted too).
    mics : 'both', 'headset' (close-talk, ``-headset`` files) or 'far' (distant microphone).

    train.jsonl / devel.jsonl / test.jsonl are the train / validation / test splits (train_synthetic.jsonl, TTS
    audio, is not read). The classes are the labels of train.jsonl; a devel or test label absent from train is an
    error naming its file and line. Every recording of an utterance is a clip; the headset and far-field files
    of one take (``audio-<t>-headset.flac``, ``audio-<t>.flac``) are the same speech. The speaker is the
    metadata.json 'usrid' where listed, else the take (file stem without '-headset'), which is not a person.
    SLURP's splits are not promised to be speaker-disjoint, and this reader does not check or enforce it.
    """
    if label not in SLURP_LABELS:
        raise DatasetError(f"SLURP label {label!r}: expected one of {', '.join(SLURP_LABELS)}")
    if mics not in ("both", "headset", "far"):
        raise DatasetError(f"SLURP mics {mics!r}: expected 'both', 'headset' or 'far'")
    base = dataset_dir(root, "SLURP", lambda d: (d / "dataset" / "slurp").is_dir() or (d / "devel.jsonl").is_file(),
                       "dataset/slurp/{train,devel,test}.jsonl")
    jsonl_dir = base / "dataset" / "slurp" if (base / "dataset" / "slurp").is_dir() else base
    audio = Path(audio_dir).expanduser() if audio_dir is not None else jsonl_dir.parent.parent / "audio" / "slurp_real"
    if (audio / "slurp_real").is_dir():
        audio = audio / "slurp_real"
    if not audio.is_dir():
        raise DatasetError(f"no SLURP audio folder {audio}: run SLURP's scripts/download_audio.sh, or pass "
                           f"audio_dir= the folder of audio-*.flac")
    speaker_of = _slurp_speakers(jsonl_dir / "metadata.json")
    classes: tuple[str, ...] = ()
    files, targets, splits, speakers, texts = [], [], [], [], []
    listed: dict[str, str] = {}            # recording file → where it was first listed
    no_speaker = 0
    for split, fname in SLURP_SPLITS.items():
        path = jsonl_dir / fname
        records = list(_slurp_records(path))
        values = [r["scenario"] + "_" + r["action"] if label == "intent" else r[label] for _, r in records]
        if split == "train":
            classes = tuple(sorted(set(values)))
        index = {c: i for i, c in enumerate(classes)}
        for (lineno, rec), value in zip(records, values):
            if value not in index:
                raise DatasetError(f"{path}, line {lineno}: {label} {value!r} never occurs in "
                                   f"{jsonl_dir / SLURP_SPLITS['train']}, so a probe trained there cannot predict it")
            for r in rec["recordings"]:
                name = r["file"]
                take = Path(name).stem.removesuffix("-headset")
                if mics != "both" and (take != Path(name).stem) != (mics == "headset"):
                    continue
                if name in listed:
                    raise DatasetError(f"{path}, line {lineno}: recording {name} is listed twice (also at "
                                       f"{listed[name]})")
                listed[name] = f"{fname}, line {lineno}"
                no_speaker += name not in speaker_of
                files.append(str(audio / name))
                targets.append(index[value])
                splits.append(split)
                speakers.append(speaker_of.get(name, take))
                texts.append(rec["sentence"])
    if speaker_of and no_speaker:
        warnings.warn(f"SLURP: {no_speaker} of {len(files)} recordings are not in {jsonl_dir / 'metadata.json'}; "
                      f"their speaker is the recording take", stacklevel=2)
    check_clips(f"slurp_{label}", files, missing_hint=" (the SLURP audio: run SLURP's scripts/download_audio.sh, "
                                                      "or pass audio_dir= the folder of audio-*.flac)")
    return Task(name=f"slurp_{label}", classes=classes, multi_label=False, files=tuple(files),
                targets=np.array(targets, dtype=np.int64), splits=tuple(splits), speakers=tuple(speakers),
                source=str(jsonl_dir), texts=tuple(texts)).check()


# ------------------------------------------------------------------ dispatch

READERS = {"timit": read_timit, "speech_commands": read_speech_commands, "crema_d": read_crema_d,
           "slurp": read_slurp}
ALIASES = {"commands": "speech_commands", "speechcommands": "speech_commands", "cremad": "crema_d"}


def read_task(kind: str, root: str | Path, **options) -> Task:
    """Read a downstream dataset by name ('timit', 'speech_commands' or 'commands', 'crema_d', 'slurp'; case,
    '-' and ' ' ignored) with its reader's options; an unknown name or option is a DatasetError naming it."""
    key = kind.lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in READERS:
        raise DatasetError(f"unknown downstream dataset {kind!r}; one of {', '.join(READERS)}")
    reader = READERS[key]
    allowed = [p for p in inspect.signature(reader).parameters if p != "root"]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise DatasetError(f"{key}: unknown option(s) {', '.join(bad)}; it takes {', '.join(allowed)}")
    return reader(root, **options)
