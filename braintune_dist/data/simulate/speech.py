"""Story text and real speech for the simulated dataset: espeak-ng, word by word, with exact alignments.

Stories are random sentences from ``vocabulary.py`` (256 content words in 8 categories of 4
subcategories, and function words). Each distinct word
is synthesised once by espeak-ng (cached), trimmed of its leading/trailing silence, resampled to
16 kHz and concatenated with short pauses, so word onsets and offsets are known to the sample.

Phone alignment is an approximation: espeak-ng gives the phonemes of each word (``--ipa``) but not
their timing, so a word's duration is split equally among its phonemes. Word boundaries are exact;
phone boundaries inside a word are not.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np

from braintune_dist.data.lebel import SAMPLE_RATE
from braintune_dist.data.simulate.vocabulary import CATEGORIES, TEMPLATES
from braintune_dist.data.textgrid import Interval, TextGrid, Tier, fill_gaps

SPEECH_START = 0.5   # seconds of silence before the first word of a story


@dataclass
class WordClip:
    audio: np.ndarray
    """Trimmed speech of one word, float32 (n_samples,) at 16 kHz."""
    phones: list[str]
    """IPA phonemes from espeak-ng, stress marks removed."""


def speak(text: str, voice: str = "en-us", speed: int = 170, tmpdir: Path | None = None,
          pitch: int | None = None) -> tuple[np.ndarray, str]:
    """espeak-ng speech of ``text`` as float32 (n_samples,) at 16 kHz, and the IPA phonemes it printed.

    ``pitch`` is espeak-ng's ``-p`` (0-99, its default 50); None leaves the voice's own pitch."""
    import soundfile as sf
    from scipy.signal import resample_poly
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        wav_path = Path(d) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(speed)] + ([] if pitch is None else ["-p", str(pitch)])
        cmd += ["--ipa", "--sep=_", "-w", str(wav_path), text]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not wav_path.is_file():
            raise RuntimeError(f"espeak-ng failed on {text!r} (voice {voice!r}): {res.stderr.strip()}")
        x, sr = sf.read(wav_path, dtype="float32")
    if x.ndim > 1:
        x = x.mean(axis=1)
    g = gcd(int(sr), SAMPLE_RATE)   # espeak-ng writes 22050 Hz: 22050 → 16000 is up 320, down 441
    return resample_poly(x, SAMPLE_RATE // g, int(sr) // g).astype(np.float32), res.stdout


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono 16-bit PCM; samples outside [-1, 1) are clipped (audio already on the 16-bit grid is exact)."""
    import soundfile as sf
    pcm = np.round(np.clip(audio.astype(np.float64), -1.0, 32767 / 32768) * 32768).astype(np.int16)
    sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")


def _espeak_word(word: str, voice: str, speed: int, tmpdir: Path) -> WordClip:
    """Synthesise one word with espeak-ng, trimmed of silence, with its IPA phonemes."""
    x, ipa = speak(word, voice, speed, tmpdir)
    # trim leading/trailing silence so the word interval starts and ends on speech (5 ms margin)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for word {word!r}")
    margin = SAMPLE_RATE // 200
    x = x[max(loud[0] - margin, 0): loud[-1] + margin + 1]
    phones = [p.replace("ˈ", "").replace("ˌ", "") for p in ipa.replace(" ", "_").strip().split("_")]
    phones = [p for p in phones if p]
    return WordClip(x, phones or [word])


def synthesize_vocabulary(words: list[str], voice: str = "en-us", speed: int = 170) -> dict[str, WordClip]:
    """Speech and phonemes of each distinct word, synthesised once (2 espeak-ng processes at a time).

    Returns
    -------
    clips : dict word → WordClip
    """
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found on PATH (apt-get install espeak-ng); the simulator needs it")
    todo = [w for w in words if (w, voice, speed) not in _CLIPS]
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        for w, clip in zip(todo, pool.map(lambda w: _espeak_word(w, voice, speed, Path(tmp)), todo)):
            _CLIPS[(w, voice, speed)] = clip
    return {w: _CLIPS[(w, voice, speed)] for w in words}


# (word, voice, speed) → clip: a process that simulates several datasets synthesises each word once
_CLIPS: dict[tuple[str, str, int], WordClip] = {}


@dataclass
class Story:
    audio: np.ndarray
    """Waveform float32 (n_samples,) at 16 kHz, exactly ``duration`` seconds, quantised to 16 bit."""
    words: list[Interval]
    """Spoken words in time order (seconds from audio onset)."""
    phones: list[Interval]
    """Phones in time order, each word's duration split equally among its phonemes."""
    sentences: list[str]
    """The sentences spoken, in order (the last one may be cut short)."""

    def textgrid(self) -> TextGrid:
        """Tier 0 "phones", tier 1 "words" (ds003020 order), gaps filled with empty intervals."""
        dur = len(self.audio) / SAMPLE_RATE
        return TextGrid(0.0, dur, [Tier("phones", fill_gaps(self.phones, 0.0, dur)),
                                   Tier("words", fill_gaps(self.words, 0.0, dur))])


def compose_story(rng: np.random.Generator, clips: dict[str, WordClip], duration: float,
                  word_gap: float = 0.08, sentence_gap: float = 0.5, noise_floor: float = 1e-3,
                  loudness_jitter: float = 0.4) -> Story:
    """Concatenate random sentences until ``duration`` seconds are full.

    Words are appended while they fit; the first word that would run past the end stops the story
    (the last sentence may be cut), and the rest is silence. Pauses are jittered ×U(0.5, 1.5), and each
    sentence gets a gain ×U(1 - loudness_jitter, 1 + loudness_jitter) so the acoustics vary slowly
    (at the TR scale) independently of the words. A faint white-noise floor (std ``noise_floor``) keeps
    pauses from being digital silence.
    """
    n_total = int(round(duration * SAMPLE_RATE))
    audio = np.zeros(n_total, dtype=np.float64)
    words: list[Interval] = []
    phones: list[Interval] = []
    pos = int(SPEECH_START * SAMPLE_RATE)   # sample index where the next word starts
    # scale so the loudest word at the largest gain peaks at 0.9: no clipping in the 16-bit wav
    peak = max(float(np.abs(c.audio).max()) for c in clips.values())
    scale = 0.9 / (peak * (1 + loudness_jitter))
    full = False
    sentences: list[str] = []
    while not full:
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        gain = scale * rng.uniform(1 - loudness_jitter, 1 + loudness_jitter)
        n_before = len(words)
        for tok in template.split():
            w = tok
            if tok.startswith("{"):
                cat = tok.strip("{}")
                w = CATEGORIES[cat][rng.integers(len(CATEGORIES[cat]))]
            clip = clips[w]
            if pos + len(clip.audio) > n_total:
                full = True
                break
            audio[pos: pos + len(clip.audio)] += gain * clip.audio
            t0, t1 = pos / SAMPLE_RATE, (pos + len(clip.audio)) / SAMPLE_RATE
            words.append(Interval(t0, t1, w))
            step = (t1 - t0) / len(clip.phones)   # equal split: see module docstring
            for i, p in enumerate(clip.phones):
                phones.append(Interval(t0 + i * step, t1 if i == len(clip.phones) - 1 else t0 + (i + 1) * step, p))
            pos += len(clip.audio) + int(word_gap * rng.uniform(0.5, 1.5) * SAMPLE_RATE)
        if len(words) > n_before:
            sentences.append(" ".join(iv.text for iv in words[n_before:]))
        pos += int(sentence_gap * rng.uniform(0.5, 1.5) * SAMPLE_RATE)
        full = full or pos >= n_total
    audio += noise_floor * rng.standard_normal(n_total)
    # quantise to 16 bit now so the features computed from it equal those of the written wav
    audio = np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768) / 32768
    return Story(audio.astype(np.float32), words, phones, sentences)
