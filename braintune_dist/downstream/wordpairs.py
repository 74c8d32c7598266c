"""Word pairs for the semantic–phonetic preference (after Choi et al. 2024): target words, each with
semantic neighbours (same meaning class, different sound) and phonetic neighbours (similar sound, unrelated
meaning), and single-word espeak-ng audio of every word involved. No torch here.

Targets are the simulator's 256 content words (8 categories × 4 subcategories × 8 words,
``data/simulate/vocabulary.py``). Semantic neighbours of a target are the other words of its subcategory;
phonetic neighbours come from the vocabulary's other categories and from :data:`COMMON`, a short list of
common English words. Phonemes are espeak-ng's (``--ipa``, en-us), stress removed.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.errors import OutputExistsError, UserError

# Candidate phonetic neighbours: common 1–2 syllable English words. Words that belong to one of the
# vocabulary's categories are listed under it, so they are never the phonetic neighbour of a word of that
# category (a phonetic neighbour must not also be a semantic one: "cake"–"bake" would be both).
COMMON: dict[str, str] = {
    "animals": "bat bird bug frog moth mouse rat hen pet fur nest tail calf fin paw wild puffin guppy",
    "food": "bake bean berry corn fig meal meat plum pork snack steak tea ham jam nut sauce toast cook butter "
            "sugar honey salt fry wheat seed grain mutton",
    "places": "bed farm fort house room shop town hill pool yard fountain road gate wall sand field sea tree "
              "wood stone rock table lamp fridge chapel shampoo",
    "tools": "cup pot pen tape nail glue bowl mop",
    "emotions": "fear fearful hate love joy calm bored proud tense cry smile",
    "body": "chest hip lip toe hair back neck face head teeth bald",
    "vehicles": "sail wheel ride rider track lorry",
    "clothing": "dress skirt suit mitten wear gown",
    "other": """
        actor all ally art avoid bad bag ball band bank bar bay bead beat bell bend best bet better big bin
        bit bolt boss bought box bride brown bumpy buy call can cane care cash chain charm check cheap cheer
        cheers chill chip clap class clock clown coal cold cone cool core cork cot cotton count course crack
        crater crib crowd cut dad dam dare dark dart deal dear deck deep dig dip dirt disk dock doll dot down
        drain dream drip drop drum dug dust each fan far fast fat feel felt fill fire fit flag flat flipper
        fog fold fool force fun fuss game get girl give glass globe glow go goal gold good got grab grade
        grand great grin grip ground grow gum habit had hang harm heal hear heat held hint hit hold hole hot
        how hug hung hurt hurried ice iron jar jeep jolly jumpy keep key kick kid kit lad land lane lap late
        law leak leap lid lie life like line list lock log long loop lot luck mail make man map marry mark
        mat may me melt mile mine miss moon mud nap near neat net new nice night noise none noon note now
        pack paid pain pair paper part pat pay peak pear pick pile pit place plain plan play plenty pocket
        pole pop post pull push put race rack rain ram ran rate raw real red rent rest rich ring rise
        risk roll rope rose round rule run rush sack saint sat save say seat see sell set shade shake shape
        share shed shine shock shoot shot shout show shut sick side sign sing sink sip sit skip sky slam
        sleep slide slip slow small snap snow soap socket soft song soon sort sound speaker speed spell spin
        spring stack stage stand star start state stay step stick still stop store storm story stuck sum
        sun sweep sweeter swing tack take tale talk tall tan tap task teach team tell ten tent test thick
        thin thing think throne tick tight time tin tip top torch toss touch tough trade trap trick trip true
        try tub tuck turn two vast very vote wait wake walk warm wash watch wave way weak weather weird well
        wet what while whip wide wig will win wing wish word work world write wrote year yet young zone
        ballad ballet barber buried cared cartoon cradle dragon filled hassle killed label metal nation
        nimble only packet parade perch racket ridge search settle shared skilled symbol tattoo today urban wider
    """,
}

PHONEME_VOICE = "en-us"
"""espeak-ng voice whose phonemes define the pairs (the audio may use other voices of the same accent)."""
VOICES = ("en-us", "en-us+f3", "en-us+m3")
"""Default voices of the audio: one accent (the pairs' phonemes hold for all), three speakers."""
RULES = ("minimal pair", "rhyme")
_VOWELS = set("aeiouyæɑɒɔəɚɛɜɝɪʊʌᵻɐɵøœɨʉ")
_STRESS = "ˈˌ"


@dataclass(frozen=True)
class Neighbour:
    """A phonetic neighbour of a target word."""

    word: str
    phonemes: tuple[str, ...]
    """espeak-ng IPA phonemes, stress removed."""
    rule: str
    """'minimal pair' (phoneme edit distance 1) or 'rhyme' (same sounds from the stressed vowel on)."""


@dataclass(frozen=True)
class WordPairs:
    """Targets with their semantic and phonetic neighbours (index i of each tuple = ``targets[i]``)."""

    targets: tuple[str, ...]
    """(n_targets,) target words, sorted."""
    semantic: tuple[tuple[str, ...], ...]
    """(n_targets,) the other words of each target's subcategory, phoneme edit distance >= 2 from it."""
    phonetic: tuple[tuple[Neighbour, ...], ...]
    """(n_targets,) each target's phonetic neighbours, none of its category, minimal pairs else rhymes."""
    phonemes: dict[str, tuple[str, ...]]
    """Phonemes of every word in ``words``."""
    words: tuple[str, ...]
    """(n_words,) every word that needs audio (targets and all their neighbours), sorted."""
    dropped: tuple[str, ...]
    """Candidate targets left out: no phonetic neighbour (or no semantic one)."""

    def index(self) -> dict[str, int]:
        """word → its position in ``words`` (the word index of a clip)."""
        return {w: i for i, w in enumerate(self.words)}

    def summary(self) -> dict:
        """Counts and every pair, JSON-ready."""
        rules = [n.rule for ns in self.phonetic for n in ns]
        return dict(n_targets=len(self.targets), n_words=len(self.words), n_dropped=len(self.dropped),
                    dropped=list(self.dropped), **{f"n_{r.replace(' ', '_')}": rules.count(r) for r in RULES},
                    pairs=[dict(target=t, phonemes=" ".join(self.phonemes[t]), semantic=list(s),
                                phonetic=[dict(word=n.word, phonemes=" ".join(n.phonemes), rule=n.rule) for n in p])
                           for t, s, p in zip(self.targets, self.semantic, self.phonetic)])


def _check_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng not found on PATH (apt-get install espeak-ng); word pairs need its phonemes")


def _tokens(line: str) -> tuple[str, ...]:
    """One ``--sep=_`` IPA line → phoneme tokens, stress marks kept (the rhyme rule needs them)."""
    return tuple(t for t in line.strip().replace(" ", "_").split("_") if t)


def _strip(tokens: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.strip(_STRESS) for t in tokens if t.strip(_STRESS))


def _espeak_ipa(text: str, voice: str) -> str:
    res = subprocess.run(["espeak-ng", "-q", "--ipa", "--sep=_", "-v", voice], input=text, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed (voice {voice!r}): {res.stderr.strip()}")
    return res.stdout


def ipa_tokens(words: list[str], voice: str = PHONEME_VOICE) -> dict[str, tuple[str, ...]]:
    """espeak-ng phonemes of each word, stress marks kept, cached in memory.

    All uncached words go through one espeak-ng process, one word a line, each ended by a full stop
    (a clause break: one output line per word); if the line count does not match, one process per word.
    """
    _check_espeak()
    todo = sorted({w for w in words if (w, voice) not in _IPA})
    if todo:
        lines = [ln for ln in _espeak_ipa("".join(f"{w}.\n" for w in todo), voice).splitlines() if ln.strip()]
        if len(lines) != len(todo):
            lines = [_espeak_ipa(w, voice) for w in todo]
        for w, ln in zip(todo, lines):
            _IPA[(w, voice)] = _tokens(ln)
    return {w: _IPA[(w, voice)] for w in words}


_IPA: dict[tuple[str, str], tuple[str, ...]] = {}


def phonemes(words: list[str], voice: str = PHONEME_VOICE) -> dict[str, tuple[str, ...]]:
    """espeak-ng IPA phonemes of each word, stress removed: word → (n_phonemes,) tuple of str."""
    return {w: _strip(t) for w, t in ipa_tokens(words, voice).items()}


def edit_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Levenshtein distance between two phoneme sequences (substitution, insertion, deletion cost 1)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _is_vowel(p: str) -> bool:
    return p[0] in _VOWELS or "\u0329" in p          # U+0329: syllabic consonant (the n̩ of "button")


def rhyme_part(tokens: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """(phonemes from the primary-stressed vowel to the end, number of syllables) of stress-marked tokens.

    The stressed vowel, not the last one: a final unstressed syllable ("-er", "-et", "-le") is shared by
    too many unrelated words ("hammer", "pepper", "tiger") to make them sound alike.
    """
    vowels = [i for i, t in enumerate(tokens) if _is_vowel(t.strip(_STRESS))]
    stressed = [i for i in vowels if tokens[i].startswith("ˈ")]
    start = stressed[0] if stressed else (vowels[-1] if vowels else 0)
    return _strip(tokens[start:]), len(vowels)


def _candidates() -> dict[str, str]:
    """Every candidate phonetic neighbour → its category ('other' for none)."""
    from braintune_dist.data.simulate.vocabulary import CATEGORIES
    out = {w: c for c, words in COMMON.items() for w in words.split()}
    out.update({w: c for c, words in CATEGORIES.items() for w in words})
    return out


def build_pairs(max_phonetic: int = 3, voice: str = PHONEME_VOICE) -> WordPairs:
    """Semantic and phonetic neighbours of the simulator's 256 content words.

    A phonetic neighbour is a candidate (vocabulary word of another category, or a :data:`COMMON` word not
    in the target's category) at phoneme edit distance 1 from the target (a minimal pair: one substitution,
    insertion or deletion); a target with no minimal pair takes its rhymes instead (same phonemes from the
    stressed vowel on, same number of syllables). Homophones (distance 0) never count. Up to
    ``max_phonetic`` are kept, closest first, ties by spelling. Semantic neighbours are the other words of
    the target's subcategory at edit distance >= 2 (not also phonetic neighbours). Targets with no
    neighbour of either kind go to ``dropped``. Deterministic: espeak-ng's phonemes and sorted order only.
    """
    from braintune_dist.data.simulate.vocabulary import SUBCATEGORIES
    if max_phonetic < 1:
        raise UserError(f"build_pairs: max_phonetic={max_phonetic} must be >= 1")
    cands = _candidates()
    tokens = ipa_tokens(sorted(cands), voice)
    ph = {w: _strip(t) for w, t in tokens.items()}
    rhyme = {w: rhyme_part(t) for w, t in tokens.items()}
    found, dropped = [], []                        # (target, semantic, phonetic)
    for cat, subs in SUBCATEGORIES.items():
        for sub in subs.values():
            for t in sub:
                sem = sorted(w for w in sub if w != t and edit_distance(ph[t], ph[w]) >= 2)
                # edit distance >= length difference: only candidates within one phoneme can be minimal pairs
                dist = {w: edit_distance(ph[t], ph[w]) for w, c in cands.items()
                        if c != cat and (abs(len(ph[w]) - len(ph[t])) <= 1 or rhyme[w] == rhyme[t])}
                near = sorted(w for w, d in dist.items() if d == 1)
                rule = "minimal pair"
                if not near:
                    rule = "rhyme"
                    near = sorted((w for w, d in dist.items() if d > 0 and rhyme[w] == rhyme[t]),
                                  key=lambda w: (dist[w], w))
                if not sem or not near:
                    dropped.append(t)
                    continue
                found.append((t, tuple(sem), tuple(Neighbour(w, ph[w], rule) for w in near[:max_phonetic])))
    targets, semantic, phonetic = zip(*sorted(found)) if found else ((), (), ())
    words = sorted(set(targets) | {w for s in semantic for w in s} | {n.word for p in phonetic for n in p})
    return WordPairs(targets, semantic, phonetic, {w: ph[w] for w in words}, tuple(words), tuple(sorted(dropped)))


@dataclass(frozen=True)
class WordClips:
    """Single-word clips: every word spoken once by every voice."""

    words: tuple[str, ...]
    """(n_words,) the words, in the order asked for."""
    files: tuple[str, ...]
    """(n_clips,) WAV file of each clip (16 kHz mono, 16 bit)."""
    word_index: np.ndarray
    """(n_clips,) int64 index into ``words``."""
    voices: tuple[str, ...]
    """(n_clips,) espeak-ng voice of each clip."""
    source: str = ""
    """The folder holding the clips."""

    def task(self):
        """The clips as a :class:`~braintune_dist.downstream.tasks.Task` (classes = words, speakers = voices,
        every clip in 'test'), for the feature extraction that reads tasks. It has no train split, so
        ``Task.check()`` refuses it: it is for features, not probes."""
        from braintune_dist.downstream.tasks import Task
        return Task("word_pairs", self.words, False, self.files, self.word_index, ("test",) * len(self.files),
                    self.voices, self.source, tuple(self.words[i] for i in self.word_index))


MANIFEST = "words.json"
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")


def synthesize_words(words: list[str], voices: tuple[str, ...] = VOICES, out: str | Path = "runs/word_pairs",
                     speed: int = 170, overwrite: bool = False, workers: int = 2) -> WordClips:
    """One WAV per (word, voice) under ``out/<voice>/<word>.wav``, trimmed of silence (espeak-ng).

    The folder is written whole (``atomic_dir``), ``words.json`` last: a folder with a manifest is complete,
    and one whose manifest asks for the same words, voices and speed is reused as it is. espeak-ng is
    deterministic, so the same request writes the same samples.

    Raises
    ------
    OutputExistsError
        ``out`` holds something else and ``overwrite`` is False.
    """
    from braintune_dist.io import atomic_dir, write_text
    words = list(words)
    bad = [w for w in words if not _WORD.fullmatch(w)]
    if bad or len(set(words)) != len(words) or not words:
        raise UserError(f"synthesize_words: words must be distinct lowercase words, at least one "
                        f"(got {bad[:3] or words[:3]})")
    folders = [re.sub(r"[^A-Za-z0-9+_-]", "_", v) for v in voices]
    if not voices or len(set(folders)) != len(folders):
        raise UserError(f"synthesize_words: voices {list(voices)} must be one or more, distinct")
    out = Path(out)
    rel = [f"{f}/{w}.wav" for f in folders for w in words]
    want = dict(sample_rate=16_000, speed=speed, words=words, voices=list(voices), files=rel)
    clips = WordClips(tuple(words), tuple(str(out / r) for r in rel),
                      np.tile(np.arange(len(words), dtype=np.int64), len(voices)),
                      tuple(v for v in voices for _ in words), str(out))
    have = _read_manifest(out / MANIFEST)
    if have == want and all((out / r).is_file() for r in rel):
        return clips
    if out.exists() and any(out.iterdir()) and not overwrite:
        why = "other words, voices or speed" if have is not None else f"no {MANIFEST}"
        raise OutputExistsError(f"{out}: holds other files ({why}); set overwrite=True or choose another folder")
    _check_espeak()
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix="espeak-") as scratch:
        for f in folders:
            (tmp / f).mkdir()
        jobs = [(w, v, tmp / f / f"{w}.wav") for v, f in zip(voices, folders) for w in words]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda job: _write_clip(*job, speed, Path(scratch)), jobs))
        write_text(tmp / MANIFEST, json.dumps(want, indent=1) + "\n")
    return clips


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_clip(word: str, voice: str, path: Path, speed: int, scratch: Path) -> None:
    import soundfile as sf
    from braintune_dist.data.simulate.speech import _espeak_word
    x = _espeak_word(word, voice, speed, scratch).audio
    sf.write(path, np.clip(x, -1.0, 32767 / 32768), 16_000, subtype="PCM_16")
