"""An offline downstream suite spoken by espeak-ng: probes of speech models with no download.

Usage::

    python -m braintune_dist.downstream.synthetic --out data/downstream --seed 0

Tasks (texts, splits and the design of each in ``synthetic_plan.py``):

* ``commands``: the 35 Speech Commands v2 words, one class each (single label).
* ``phonemes``: which phonemes a sentence holds (multi-hot), from espeak-ng's own transcription of the clip
  (``--ipa``, stress marks removed), so it follows the voice's accent. Classes = phonemes seen in the training
  clips; a phoneme heard only in validation or test clips is dropped from their labels.
* ``meaning``: the semantic category (8) of the one content word of a neutral carrier sentence; the words of
  train, validation and test are disjoint, so only a representation of meaning carries over to test.
  (Emotion words are adjectives sharing suffixes such as -ed, -ful, -y: that category is partly guessable
  from word form.)
* ``sentence_type``: statement / question / command, the same content spoken in all three forms.

A speaker is one espeak-ng voice (all its rates and pitches); splits are speaker-disjoint and the same for
every task. Layout (relative to ``out``)::

    <task>/<i:05d>.wav     16 kHz mono PCM_16 (espeak-ng's 22.05 kHz, resampled)
    <task>/labels.csv      file, label, split, speaker, text, speed, pitch, ipa (label: a class name, or the
                           clip's phonemes separated by spaces)
    suite.json             settings, espeak-ng version, classes and clip count per task

The suite is built in a temporary sibling folder and renamed into place when complete; an existing complete
suite with the same settings and espeak-ng version is read back instead of generated again.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from braintune_dist.data.simulate.speech import speak, write_wav
from braintune_dist.downstream.metrics import levels
from braintune_dist.downstream.synthetic_plan import TASKS, ClipSpec, SuiteSettings, classes, plan
from braintune_dist.downstream.tasks import SAMPLE_RATE, Task
from braintune_dist.errors import DatasetError, OutputExistsError, UserError
from braintune_dist.io import atomic_dir, write_text

__all__ = ["SuiteSettings", "make_suite", "read_suite", "levels", "main"]

SUITE_FILE = "suite.json"
LABELS_FILE = "labels.csv"
COLUMNS = ("file", "label", "split", "speaker", "text", "speed", "pitch", "ipa")
FORMAT = 1


def espeak_version() -> str:
    """espeak-ng's version ('1.51'); UserError when it is not on PATH."""
    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng not found on PATH (apt-get install espeak-ng); the synthetic suite needs it")
    res = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    words = res.stdout.split()                  # "eSpeak NG text-to-speech: 1.51  Data at: /usr/..."
    return words[words.index("text-to-speech:") + 1] if "text-to-speech:" in words else res.stdout.strip()


def check_voices(voices: list[str]) -> None:
    """Refuse a voice espeak-ng does not have. An unknown '+variant' is silently ignored by espeak-ng (the
    base voice speaks), so variants are looked up in ``--voices=variant``; a base voice is tried."""
    listing = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=False)
    rows = [ln.split() for ln in listing.stdout.splitlines()[1:]]     # Pty Language Age/Gender Name File
    variants = {r[4].removeprefix("!v/").lower() for r in rows if len(r) > 4}
    for voice in voices:
        base, _, variant = voice.partition("+")
        if variant and variant.lower() not in variants:
            raise UserError(f"voices: {voice!r}: espeak-ng has no variant {variant!r} (espeak-ng --voices=variant)")
        res = subprocess.run(["espeak-ng", "-v", base, "-q", "x"], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise UserError(f"voices: {voice!r}: espeak-ng has no voice {base!r} (espeak-ng --voices=en)")


def phonemes(ipa: str) -> list[str]:
    """Distinct phonemes of espeak-ng's ``--ipa --sep=_`` output, stress marks removed, in order of first use."""
    out: dict[str, None] = {}
    for p in ipa.replace("ˈ", "").replace("ˌ", "").replace(" ", "_").replace("\n", "_").split("_"):
        if p:
            out[p] = None
    return list(out)


def _synthesise(clips: dict[str, list[ClipSpec]], root: Path) -> dict[str, list[str]]:
    """Speak every clip into ``root/<task>/<i:05d>.wav``, 2 espeak-ng processes at a time (the suite's
    default machine has 2 cores); returns task → espeak-ng's IPA of each clip. Prints progress."""
    jobs = [(task, i, spec) for task, specs in clips.items() for i, spec in enumerate(specs)]
    for task in clips:
        (root / task).mkdir()
    done, lock, t0 = [0], threading.Lock(), time.perf_counter()
    step = max(1, len(jobs) // 10)

    def one(job: tuple[str, int, ClipSpec], tmp: Path) -> str:
        task, i, spec = job
        x, ipa = speak(spec.text, spec.voice, spec.speed, tmp, pitch=spec.pitch)
        write_wav(root / task / f"{i:05d}.wav", x)
        with lock:
            done[0] += 1
            if done[0] % step == 0 or done[0] == len(jobs):
                print(f"  synthetic suite: {done[0]}/{len(jobs)} clips ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
        return " ".join(ipa.split())

    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        ipas = list(pool.map(lambda j: one(j, Path(tmp)), jobs))
    out: dict[str, list[str]] = {t: [] for t in clips}
    for (task, _, _), ipa in zip(jobs, ipas):
        out[task].append(ipa)
    return out


def _build(settings: SuiteSettings, identity: dict, root: Path) -> None:
    clips = plan(settings)
    ipas = _synthesise(clips, root)
    names = dict(classes(settings))
    train_phones = {p for spec, ipa in zip(clips["phonemes"], ipas["phonemes"]) if spec.split == "train"
                    for p in phonemes(ipa)}
    names["phonemes"] = tuple(sorted(train_phones))
    meta = {"format": FORMAT, "identity": identity, "tasks": {}}
    for task in TASKS:
        rows = []
        for i, (spec, ipa) in enumerate(zip(clips[task], ipas[task])):
            label = " ".join(phonemes(ipa)) if task == "phonemes" else spec.label
            rows.append((f"{i:05d}.wav", label, spec.split, spec.voice, spec.text, spec.speed, spec.pitch, ipa))
        with open(root / task / LABELS_FILE, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(COLUMNS)
            w.writerows(rows)
        meta["tasks"][task] = {"classes": list(names[task]), "multi_label": task == "phonemes",
                               "n_clips": len(rows)}
    write_text(root / SUITE_FILE, json.dumps(meta, indent=1, ensure_ascii=False) + "\n")


def _read_meta(out: Path) -> dict:
    path = out / SUITE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; not a synthetic suite (make one with "
                           f"python -m braintune_dist.downstream.synthetic --out {out})") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("tasks"), dict):
        raise DatasetError(f"{path}: not a synthetic suite of format {FORMAT}")
    return meta


def _read_task(folder: Path, name: str, info: dict) -> Task:
    import soundfile as sf
    path = folder / LABELS_FILE
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; the suite is incomplete") from None
    if rows and set(COLUMNS) - set(rows[0]):
        raise DatasetError(f"{path}: columns {sorted(set(COLUMNS) - set(rows[0]))} missing")
    if len(rows) != info["n_clips"]:
        raise DatasetError(f"{path}: {len(rows)} rows, {folder.parent / SUITE_FILE} says {info['n_clips']}")
    names = tuple(info["classes"])
    index = {c: i for i, c in enumerate(names)}
    files = []
    for r in rows:
        wav = folder / r["file"]
        try:
            si = sf.info(str(wav))
        except (RuntimeError, sf.LibsndfileError):
            raise DatasetError(f"{wav}: missing or unreadable; the suite is incomplete") from None
        if si.samplerate != SAMPLE_RATE or si.channels != 1 or si.frames == 0:
            raise DatasetError(f"{wav}: {si.channels} channel(s) at {si.samplerate} Hz, {si.frames} samples; "
                               f"expected mono {SAMPLE_RATE} Hz speech")
        files.append(str(wav))
    if info["multi_label"]:
        targets = np.zeros((len(rows), len(names)), dtype=np.uint8)
        for i, r in enumerate(rows):
            # a phoneme never heard in training is not a class (module docstring)
            targets[i, [index[p] for p in r["label"].split() if p in index]] = 1
    else:
        bad = sorted({r["label"] for r in rows} - set(index))
        if bad:
            raise DatasetError(f"{path}: label(s) {bad[:5]} not among the classes in {SUITE_FILE}")
        targets = np.array([index[r["label"]] for r in rows], dtype=np.int64)
    return Task(name, names, bool(info["multi_label"]), tuple(files), targets,
                tuple(r["split"] for r in rows), tuple(r["speaker"] for r in rows), str(folder),
                tuple(r["text"] for r in rows)).check()


def read_suite(out: str | Path) -> dict[str, Task]:
    """The tasks of a suite written by :func:`make_suite`, each checked (``Task.check``).

    Raises DatasetError naming the file when the suite is incomplete (suite.json, a labels.csv or a wav
    missing, a labels.csv of the wrong length) or a clip is not 16 kHz mono.
    """
    out = Path(out).absolute()
    meta = _read_meta(out)
    return {name: _read_task(out / name, name, info) for name, info in meta["tasks"].items()}


def make_suite(settings: SuiteSettings) -> dict[str, Task]:
    """Write the suite ``settings`` describes at ``settings.out`` (or reuse it) and return its tasks.

    A complete suite with the same settings and espeak-ng version is read back, not regenerated; an
    incomplete one (a file deleted or damaged) is generated again. A folder holding anything else is
    replaced only with ``settings.overwrite``.

    Raises
    ------
    OutputExistsError
        ``out`` holds other files or a suite made with other settings or espeak-ng, and not ``overwrite``.
    UserError
        espeak-ng is missing or lacks a voice.
    """
    out = Path(settings.out).absolute()
    identity = {"settings": settings.identity(), "espeak_ng": espeak_version()}
    if (out / SUITE_FILE).is_file():
        try:
            same = _read_meta(out).get("identity") == identity
        except DatasetError:
            same = False
        if same:
            try:
                return read_suite(out)
            except DatasetError as exc:
                print(f"{out}: incomplete suite ({exc}); generating it again", flush=True)
        elif not settings.overwrite:
            raise OutputExistsError(f"{out}: holds a suite made with other settings or another espeak-ng "
                                    f"(see its {SUITE_FILE}); set overwrite true to replace it")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())) and not settings.overwrite:
        raise OutputExistsError(f"{out}: exists and is not a synthetic suite; set overwrite true to replace it")
    check_voices(settings.voices)
    with atomic_dir(out) as tmp:                  # an interrupted run leaves no suite that looks complete
        _build(settings, identity, tmp)
    return read_suite(out)


def describe(tasks: dict[str, Task]) -> str:
    """One block per task: clips, classes, clips and speakers per split, chance and majority levels."""
    lines = []
    for name, t in tasks.items():
        lv = levels(t)
        split = ", ".join(f"{s} {len(t.indices(s))} clips / {len(set(np.asarray(t.speakers)[t.indices(s)]))} "
                          f"speakers" for s in ("train", "validation", "test"))
        shown = " ".join(t.classes[:12]) + (" ..." if len(t.classes) > 12 else "")
        lines.append(f"{name}: {t.n_clips} clips, {len(t.classes)} classes "
                     f"({'multi-label' if t.multi_label else 'single-label'}): {shown}")
        lines.append(f"  {split}")
        for level in ("chance", "majority"):
            v = lv[level]
            lines.append(f"  {level:8s} accuracy {v['accuracy']:.3f}  F1 macro {v['f1_macro']:.3f}  "
                         f"F1 micro {v['f1_micro']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m braintune_dist.downstream.synthetic --out DIR --seed N [...]``: make (or reuse) the suite
    and print each task's size, classes, splits and levels."""
    from braintune_dist.config import parse_cli
    t0 = time.perf_counter()
    try:
        settings = parse_cli(SuiteSettings, argv)
        tasks = make_suite(settings)
    except UserError as exc:
        print(f"synthetic suite: error: {exc}", file=sys.stderr)
        return 2
    print(f"{Path(settings.out).absolute()}: {sum(t.n_clips for t in tasks.values())} clips "
          f"({time.perf_counter() - t0:.1f} s)")
    print(describe(tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
