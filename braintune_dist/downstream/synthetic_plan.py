"""What the espeak-ng suite says, by whom and with which label: settings, speaker splits and clip texts.

Pure and fast (no espeak-ng, no audio): ``plan(settings)`` lists every clip of every task, so tests can check
splits, texts and word-disjointness without synthesising anything. ``synthetic.py`` speaks the plan.

Every random draw comes from its own stream keyed by (seed, purpose, speaker position), so a seed fixes the
whole plan and changing one task's size leaves the other tasks' clips unchanged.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np

from braintune_dist.data.simulate.vocabulary import CATEGORIES, SUBCATEGORIES, TEMPLATES
from braintune_dist.errors import UserError

TASKS = ("commands", "phonemes", "meaning", "sentence_type")

# the 35 words of Speech Commands v2
COMMAND_WORDS = ("backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
                 "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
                 "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero")

# Carriers of the meaning task: one slot, the same for every category, and grammatical for a noun and an
# adjective alike (emotions are adjectives), so the carrier says nothing about the category.
MEANING_CARRIERS = ("the next word is {w}.", "i heard her say {w} twice.", "he wrote {w} on the board.",
                    "they kept saying {w}.", "my word for today is {w}.", "please repeat {w} after me.",
                    "she whispered {w} and smiled.", "we all agreed on {w}.")

SENTENCE_TYPES = ("statement", "question", "command")
# Parallel forms of one content (same slots): the label is carried by the syntax (a subject first; an
# inverted auxiliary; a bare verb, no subject) and, for questions, by espeak-ng's rising '?' intonation.
# Commands are a word or two shorter (no subject).
SENTENCE_FORMS = (
    ("the {animals} ate the {food}.", "did the {animals} eat the {food}?", "feed the {animals} the {food}."),
    ("you put the {tools} in the {places}.", "did you put the {tools} in the {places}?",
     "put the {tools} in the {places}."),
    ("she drove the {vehicles} to the {places}.", "did she drive the {vehicles} to the {places}?",
     "drive the {vehicles} to the {places}."),
    ("he wears the {clothing} at the {places}.", "does he wear the {clothing} at the {places}?",
     "wear the {clothing} at the {places}."),
    ("they can wash your {body} with the {tools}.", "can they wash your {body} with the {tools}?",
     "wash your {body} with the {tools}."),
    ("we will bring the {food} to the {animals}.", "will we bring the {food} to the {animals}?",
     "bring the {food} to the {animals}."),
    ("the {animals} is in the {vehicles}.", "is the {animals} in the {vehicles}?",
     "look at the {animals} in the {vehicles}."),
    ("you were {emotions} about the {clothing}.", "were you {emotions} about the {clothing}?",
     "be {emotions} about the {clothing}."),
)

# purposes of the random streams (the key after the seed)
_SPLIT, _COMMANDS, _PHONEMES, _MEANING_WORDS, _MEANING, _SENTENCE_TYPE = 1, 2, 3, 4, 5, 6
_SLOT = re.compile(r"\{(\w+)\}")


@dataclass
class SuiteSettings:
    """Generate the offline espeak-ng downstream suite (commands, phonemes, meaning, sentence_type)."""

    out: str = "data/downstream"
    """Suite folder: <out>/<task>/<clip>.wav, <out>/<task>/labels.csv, <out>/suite.json."""
    overwrite: bool = False
    """Replace a suite made with other settings (or another espeak-ng) at --out; the old one is removed only
    after the new one is complete. A suite with the same settings is always reused."""
    seed: int = 0
    """Random seed: fixes the speaker splits, the texts, the labels and (for one espeak-ng) the audio bytes."""
    voices: list[str] = field(default_factory=lambda: [
        "en-us", "en-us+f1", "en-us+m3", "en-us-nyc+f4", "en-us+klatt", "en-gb+f2", "en-gb+m2", "en-gb-x-rp+f5",
        "en-gb-x-rp+m4", "en-gb-scotland+m1", "en-gb-scotland+f3", "en-029+m5", "en-gb-x-gbclan+m6",
        "en-gb-x-gbcwmd+m7", "en-us+m8", "en-gb+klatt2"])
    """espeak-ng voices (language[+variant]); each is one speaker, with all its rates and pitches."""
    validation_speakers: int = 3
    """Speakers (voices) of the validation split, drawn by the seed; splits are speaker-disjoint."""
    test_speakers: int = 3
    """Speakers of the test split, drawn by the seed; the other voices are the training speakers."""
    speeds: list[int] = field(default_factory=lambda: [140, 170, 200])
    """espeak-ng speaking rates (-s, words per minute) a clip is spoken at."""
    pitches: list[int] = field(default_factory=lambda: [30, 50, 70])
    """espeak-ng pitches (-p, 0-99) a clip is spoken at; each clip draws one (speed, pitch)."""
    command_words: list[str] = field(default_factory=lambda: list(COMMAND_WORDS))
    """Words (classes) of the commands task; default the 35 of Speech Commands v2."""
    command_takes: int = 3
    """Clips of each command word per speaker, each at a different (speed, pitch)."""
    phoneme_sentences: int = 60
    """Sentences per speaker of the phonemes task (random story templates of the simulated dataset)."""
    meaning_sentences: int = 64
    """Sentences per speaker of the meaning task (categories as balanced as the count allows)."""
    meaning_validation_words: int = 2
    """Words of each subcategory (of 8) heard only in validation sentences."""
    meaning_test_words: int = 2
    """Words of each subcategory heard only in test sentences; the rest are the training words."""
    sentence_type_items: int = 20
    """Contents per speaker of the sentence_type task, each spoken as a statement, a question and a command."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> UserError:
            return UserError(f"{name}: {why} (got {getattr(self, name)!r})")
        if self.seed < 0:
            raise bad("seed", "must be >= 0")
        if len(set(self.voices)) != len(self.voices) or any(not v or " " in v for v in self.voices):
            raise bad("voices", "must be distinct non-empty espeak-ng voice names")
        if self.validation_speakers < 1 or self.test_speakers < 1:
            raise UserError("validation_speakers and test_speakers: each split needs at least 1 speaker")
        if len(self.voices) < self.validation_speakers + self.test_speakers + 1:
            raise bad("voices", f"{self.validation_speakers} validation + {self.test_speakers} test speakers "
                                f"leave no training speaker")
        if not self.speeds or any(not 80 <= s <= 450 for s in self.speeds) \
                or len(set(self.speeds)) != len(self.speeds):
            raise bad("speeds", "must be distinct espeak-ng rates in [80, 450]")
        if not self.pitches or any(not 0 <= p <= 99 for p in self.pitches) \
                or len(set(self.pitches)) != len(self.pitches):
            raise bad("pitches", "must be distinct espeak-ng pitches in [0, 99]")
        if len(set(self.command_words)) < 2 or len(set(self.command_words)) != len(self.command_words) \
                or any(not re.fullmatch(r"[a-z']+", w) for w in self.command_words):
            raise bad("command_words", "must be at least 2 distinct lower-case words")
        if not 1 <= self.command_takes <= len(self.speeds) * len(self.pitches):
            raise bad("command_takes", f"must be in [1, {len(self.speeds) * len(self.pitches)}] "
                                       f"(distinct speed x pitch pairs)")
        for name in ("phoneme_sentences", "meaning_sentences", "sentence_type_items"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.meaning_validation_words < 1 or self.meaning_test_words < 1 \
                or self.meaning_validation_words + self.meaning_test_words > 7:
            raise UserError("meaning_validation_words + meaning_test_words: each >= 1 and together <= 7 "
                            "(a subcategory has 8 words; training needs one)")

    def identity(self) -> dict:
        """The fields that decide the suite's content (not where it is, nor whether it may be replaced)."""
        from dataclasses import asdict
        d = asdict(self)
        del d["out"], d["overwrite"]
        return d


@dataclass(frozen=True)
class ClipSpec:
    """One clip to synthesise."""

    voice: str
    """espeak-ng voice, the clip's speaker."""
    split: str
    """'train', 'validation' or 'test' (the speaker's split)."""
    text: str
    """Exactly what espeak-ng is given (sentence tasks end in '.' or '?')."""
    label: str
    """Class name; empty for the phonemes task (its labels come from espeak-ng's transcription)."""
    speed: int
    """espeak-ng -s."""
    pitch: int
    """espeak-ng -p."""


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def speaker_splits(settings: SuiteSettings) -> dict[str, str]:
    """voice → split, shared by every task: test speakers first from a seeded permutation, then validation."""
    order = _rng(settings.seed, _SPLIT).permutation(len(settings.voices))
    n_test, n_val = settings.test_speakers, settings.validation_speakers
    split = {}
    for rank, i in enumerate(order):
        split[settings.voices[i]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return split


def meaning_words(settings: SuiteSettings) -> dict[str, dict[str, list[str]]]:
    """split → category → its words heard in that split (word-disjoint: each subcategory's 8 words are shuffled
    by the seed, the first ``meaning_test_words`` go to test, the next to validation, the rest to train)."""
    rng = _rng(settings.seed, _MEANING_WORDS)
    n_test, n_val = settings.meaning_test_words, settings.meaning_validation_words
    out: dict[str, dict[str, list[str]]] = {s: {c: [] for c in SUBCATEGORIES} for s in ("train", "validation", "test")}
    for cat, subs in SUBCATEGORIES.items():
        for words in subs.values():
            perm = [words[i] for i in rng.permutation(len(words))]
            out["test"][cat] += perm[:n_test]
            out["validation"][cat] += perm[n_test: n_test + n_val]
            out["train"][cat] += perm[n_test + n_val:]
    return out


def _voicing(rng: np.random.Generator, settings: SuiteSettings) -> tuple[int, int]:
    return int(rng.choice(settings.speeds)), int(rng.choice(settings.pitches))


def _commands(settings: SuiteSettings, k: int, voice: str, split: str) -> list[ClipSpec]:
    rng = _rng(settings.seed, _COMMANDS, k)
    pairs = list(itertools.product(settings.speeds, settings.pitches))
    clips = []
    for word in settings.command_words:
        for j in sorted(rng.choice(len(pairs), settings.command_takes, replace=False)):
            clips.append(ClipSpec(voice, split, word, word, *pairs[j]))
    return clips


def _phonemes(settings: SuiteSettings, k: int, voice: str, split: str) -> list[ClipSpec]:
    rng = _rng(settings.seed, _PHONEMES, k)
    clips = []
    for _ in range(settings.phoneme_sentences):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        text = _SLOT.sub(lambda m: CATEGORIES[m.group(1)][rng.integers(len(CATEGORIES[m.group(1)]))], template)
        clips.append(ClipSpec(voice, split, text + ".", "", *_voicing(rng, settings)))
    return clips


def _meaning(settings: SuiteSettings, k: int, voice: str, split: str,
             words: dict[str, list[str]]) -> list[ClipSpec]:
    rng = _rng(settings.seed, _MEANING, k)
    cats = list(SUBCATEGORIES)
    labels = rng.permutation(np.resize(np.arange(len(cats)), settings.meaning_sentences))
    queue: dict[str, list[str]] = {c: [] for c in cats}   # each category's split words, used evenly
    clips = []
    for c in labels:
        cat = cats[c]
        if not queue[cat]:
            queue[cat] = [words[cat][i] for i in rng.permutation(len(words[cat]))]
        text = MEANING_CARRIERS[rng.integers(len(MEANING_CARRIERS))].format(w=queue[cat].pop())
        clips.append(ClipSpec(voice, split, text, cat, *_voicing(rng, settings)))
    return clips


def _sentence_type(settings: SuiteSettings, k: int, voice: str, split: str) -> list[ClipSpec]:
    rng = _rng(settings.seed, _SENTENCE_TYPE, k)
    clips = []
    for _ in range(settings.sentence_type_items):
        forms = SENTENCE_FORMS[rng.integers(len(SENTENCE_FORMS))]
        fill = {c: CATEGORIES[c][rng.integers(len(CATEGORIES[c]))] for c in sorted(set(_SLOT.findall(forms[0])))}
        for label, form in zip(SENTENCE_TYPES, forms):   # one content in all three forms: words say nothing
            clips.append(ClipSpec(voice, split, _SLOT.sub(lambda m: fill[m.group(1)], form), label,
                                  *_voicing(rng, settings)))
    return clips


def plan(settings: SuiteSettings) -> dict[str, list[ClipSpec]]:
    """Every clip of every task, speaker by speaker in the order of ``settings.voices``.

    Returns
    -------
    dict task name → list of ClipSpec (clip i is written as ``<task>/<i:05d>.wav``)
    """
    split = speaker_splits(settings)
    words = meaning_words(settings)
    out: dict[str, list[ClipSpec]] = {t: [] for t in TASKS}
    for k, voice in enumerate(settings.voices):
        s = split[voice]
        out["commands"] += _commands(settings, k, voice, s)
        out["phonemes"] += _phonemes(settings, k, voice, s)
        out["meaning"] += _meaning(settings, k, voice, s, words[s])
        out["sentence_type"] += _sentence_type(settings, k, voice, s)
    return out


def classes(settings: SuiteSettings) -> dict[str, tuple[str, ...]]:
    """Class names of the single-label tasks (the phonemes task's come from the training transcriptions)."""
    return {"commands": tuple(settings.command_words), "meaning": tuple(SUBCATEGORIES),
            "sentence_type": SENTENCE_TYPES}
