"""The offline espeak-ng downstream suite (determinism, speaker- and word-disjoint splits, completeness) and the
probe metrics and levels, against formulas written out here."""
import csv
import dataclasses
import itertools
import json
import shutil

import numpy as np
import pytest

from braintune_dist.data.simulate.vocabulary import word_category
from braintune_dist.downstream import synthetic
from braintune_dist.downstream.metrics import chance, levels, scores
from braintune_dist.downstream.synthetic import SuiteSettings, make_suite, phonemes, read_suite
from braintune_dist.downstream.synthetic_plan import (SENTENCE_TYPES, TASKS, classes, meaning_words, plan,
                                                       speaker_splits)
from braintune_dist.downstream.tasks import SPLITS, Task, load_clip
from braintune_dist.errors import DatasetError, OutputExistsError, UserError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (./run installs it)")

# 3 speakers (one per split), 16 clips each: every task, small enough to generate three times in seconds
SMALL = dict(voices=["en-us", "en-gb+f2", "en-us+m3"], validation_speakers=1, test_speakers=1, speeds=[150, 190],
             pitches=[40, 60], command_words=["yes", "no"], command_takes=1, phoneme_sentences=3,
             meaning_sentences=8, sentence_type_items=1)


def small(out, **kw) -> SuiteSettings:
    return SuiteSettings(out=str(out), **{**SMALL, **kw})


@pytest.fixture(scope="module")
def suites(tmp_path_factory):
    """Two suites made from the same seed in different folders."""
    root = tmp_path_factory.mktemp("suites")
    return {name: (root / name, make_suite(small(root / name))) for name in ("a", "b")}


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())


@needs_espeak
def test_same_seed_gives_the_same_suite_byte_for_byte(suites):
    (a, ta), (b, tb) = suites["a"], suites["b"]
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    for name in TASKS:
        assert ta[name].texts == tb[name].texts and ta[name].splits == tb[name].splits
        assert np.array_equal(ta[name].targets, tb[name].targets)


def test_another_seed_gives_other_texts_and_splits():
    p0, p1 = plan(small("x")), plan(small("x", seed=1))
    for name in ("phonemes", "meaning", "sentence_type"):
        assert [c.text for c in p0[name]] != [c.text for c in p1[name]]
    assert len({tuple(speaker_splits(small("x", seed=s)).items()) for s in range(8)}) > 1
    default = SuiteSettings()
    assert speaker_splits(default) != speaker_splits(dataclasses.replace(default, seed=1))


@needs_espeak
def test_splits_are_speaker_disjoint_and_shared_by_every_task(suites):
    _, tasks = suites["a"]
    expected = speaker_splits(small("x"))
    for t in tasks.values():
        by_split = {s: {sp for sp, s2 in zip(t.speakers, t.splits) if s2 == s} for s in SPLITS}
        for s1, s2 in itertools.combinations(SPLITS, 2):
            assert not by_split[s1] & by_split[s2], (t.name, s1, s2)
        assert all(expected[sp] == s for sp, s in zip(t.speakers, t.splits))


def _content_words(text):
    cat = word_category()
    return [w for w in text.rstrip(".?").split() if w in cat]


@pytest.mark.parametrize("settings", [small("x"), SuiteSettings()], ids=["small", "default"])
def test_meaning_words_differ_between_splits_and_give_the_label(settings):
    clips = plan(settings)["meaning"]
    cat, names = word_category(), list(classes(settings)["meaning"])
    heard = {s: set() for s in SPLITS}
    for c in clips:
        (word,) = _content_words(c.text)          # the carrier holds no other content word
        assert names[cat[word]] == c.label
        heard[c.split].add(word)
    for s1, s2 in itertools.combinations(SPLITS, 2):
        assert not heard[s1] & heard[s2]
    words = meaning_words(settings)
    assert all(heard[s] <= {w for ws in words[s].values() for w in ws} for s in SPLITS)
    counts = np.bincount([names.index(c.label) for c in clips if c.voice == settings.voices[0]], minlength=8)
    assert counts.max() - counts.min() <= 1      # balanced per speaker


@needs_espeak
def test_clips_are_16k_mono_and_tasks_are_complete(suites):
    import soundfile as sf
    a, tasks = suites["a"]
    specs = plan(small(a))
    assert list(tasks) == list(TASKS)
    for name, t in tasks.items():
        t.check()
        assert t.n_clips == len(specs[name]) and len(t.texts) == t.n_clips and all(t.texts)
        assert t.texts == tuple(c.text for c in specs[name])
        for f in t.files:
            info = sf.info(f)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16") and info.frames > 0
    assert load_clip(tasks["commands"].files[0]).dtype == np.float32
    st = tasks["sentence_type"]
    assert np.bincount(st.targets).tolist() == [len(SMALL["voices"])] * len(SENTENCE_TYPES)
    assert all(t.endswith("?") == (SENTENCE_TYPES[y] == "question") for t, y in zip(st.texts, st.targets))
    # phoneme classes: exactly those heard in training clips
    ph = tasks["phonemes"]
    with open(a / "phonemes" / "labels.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    heard_in_training = {p for r in rows if r["split"] == "train" for p in phonemes(r["ipa"])}
    assert ph.classes == tuple(sorted(heard_in_training))
    assert ph.targets.sum(axis=1).min() > 0


def test_phonemes_of_espeak_ipa():
    assert phonemes("ð_ə d_ˈɒ_ɡ ˈeɪ_t ð_ə b_ɹ_ˈɛ_d__\n") == ["ð", "ə", "d", "ɒ", "ɡ", "eɪ", "t", "b", "ɹ", "ɛ"]


@needs_espeak
def test_a_complete_suite_is_read_back_not_regenerated(suites, monkeypatch):
    a, tasks = suites["a"]
    mtimes = {p: p.stat().st_mtime_ns for p in a.rglob("*")}

    def no_speaking(*args, **kwargs):
        raise AssertionError("regenerated a complete suite")
    monkeypatch.setattr(synthetic, "speak", no_speaking)
    again = make_suite(small(a))
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == mtimes
    assert again["phonemes"].fingerprint() == tasks["phonemes"].fingerprint()


@needs_espeak
def test_an_incomplete_suite_is_refused_by_the_reader_and_regenerated(suites, tmp_path):
    a, _ = suites["a"]
    d = tmp_path / "suite"
    shutil.copytree(a, d)
    (d / "meaning" / "00003.wav").unlink()
    with pytest.raises(DatasetError, match=r"meaning/00003\.wav: missing"):
        read_suite(d)
    make_suite(small(d))
    for rel in _files(a):
        assert (a / rel).read_bytes() == (d / rel).read_bytes(), rel
    (d / "commands" / "labels.csv").unlink()
    with pytest.raises(DatasetError, match=r"commands/labels\.csv: missing"):
        read_suite(d)
    lines = (d / "phonemes" / "labels.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (d / "phonemes" / "labels.csv").write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(DatasetError, match=r"phonemes/labels\.csv: \d+ rows"):
        synthetic._read_task(d / "phonemes", "phonemes", {"n_clips": len(lines) - 1, "classes": [],
                                                          "multi_label": True})
    with pytest.raises(DatasetError, match="suite.json: missing"):
        read_suite(tmp_path)


@needs_espeak
def test_other_settings_or_a_foreign_folder_are_not_replaced_without_overwrite(suites, tmp_path):
    a, _ = suites["a"]
    with pytest.raises(OutputExistsError, match="other settings.*overwrite"):
        make_suite(small(a, seed=1))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not a synthetic suite"):
        make_suite(small(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", [dict(seed=-1), dict(voices=["en-us", "en-us", "en-gb"]),
                                 dict(test_speakers=2), dict(speeds=[20]), dict(pitches=[120]),
                                 dict(command_words=["yes"]), dict(command_takes=5), dict(meaning_sentences=0),
                                 dict(meaning_validation_words=4, meaning_test_words=4)])
def test_settings_that_cannot_make_a_suite_are_refused(bad):
    with pytest.raises(UserError, match=next(iter(bad)).split("_")[0]):
        small("x", **bad)


@needs_espeak
def test_a_voice_espeak_does_not_have_is_named():
    with pytest.raises(UserError, match="en-us\\+nosuchvariant"):
        synthetic.check_voices(["en-us", "en-us+nosuchvariant"])
    with pytest.raises(UserError, match="xx-nowhere"):
        synthetic.check_voices(["xx-nowhere"])
    synthetic.check_voices(SMALL["voices"])


@needs_espeak
def test_cli_prints_sizes_classes_splits_and_levels(suites, capsys):
    a, _ = suites["a"]
    # a list as JSON: the command line reads a bare yes,no as YAML booleans
    argv = ["--out", str(a)] + [a for k, v in SMALL.items() for a in (f"--{k}", json.dumps(v))]
    assert synthetic.main(argv) == 0
    out = capsys.readouterr().out
    assert "commands: 6 clips, 2 classes (single-label)" in out and "majority accuracy" in out
    assert synthetic.main(["--out", str(a), "--seed", "1"]) == 2


def _task(targets, splits, classes, multi=False):
    n = len(splits)
    return Task("hand", tuple(classes), multi, tuple(f"{i}.wav" for i in range(n)), np.asarray(targets),
                tuple(splits), tuple(f"s{i}" for i in range(n)))


def test_levels_of_a_hand_built_single_label_task():
    # train majority: class 1; test truth [0, 1, 1, 2]
    t = _task([1, 1, 0, 2, 1, 0, 1, 1, 2], ["train"] * 4 + ["validation"] + ["test"] * 4, "abc")
    lv = levels(t.check())
    assert lv["n_classes"] == 3
    assert lv["majority"] == pytest.approx({"accuracy": 0.5, "f1_macro": (2 * 2 / (4 + 2)) / 3, "f1_micro": 0.5})
    # uniform guess, class with n_c of n = 4 test clips: F1 = 2 n_c / (n + 3 n_c)
    assert lv["chance"] == pytest.approx({"accuracy": 1 / 3, "f1_micro": 1 / 3,
                                          "f1_macro": (2 / 7 + 4 / 10 + 2 / 7) / 3})


def test_levels_of_a_hand_built_multi_label_task():
    y = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0],     # train: rates 3/4, 3/4, 1/4
                  [1, 0, 0],                                       # validation
                  [1, 0, 1], [0, 1, 0]], dtype=np.uint8)           # test
    t = _task(y, ["train"] * 4 + ["validation"] + ["test"] * 2, "xyz", multi=True).check()
    lv = levels(t)
    # majority predicts [1, 1, 0]: clip 5 tp x, fp y, fn z; clip 6 fp x, tp y
    assert lv["majority"] == pytest.approx({"accuracy": 0.0, "f1_micro": 2 * 2 / (4 + 2 + 1),
                                            "f1_macro": (2 / 3 + 2 / 3 + 0) / 3})
    p, q = np.array([.75, .75, .25]), np.array([.5, .5, .5])
    assert lv["chance"]["f1_macro"] == pytest.approx(np.mean(2 * p * q / (p + q)))
    assert lv["chance"]["f1_micro"] == pytest.approx(2 * (p * q).sum() / (p + q).sum())
    assert lv["chance"]["accuracy"] == pytest.approx((.75 * .25 * .25 + .25 * .75 * .75) / 2)
    assert chance(t) == lv["chance"]


def _f1_by_hand(t, p, classes):
    """Per-class F1 2 tp / (2 tp + fp + fn), the mean over classes with a true or predicted positive, and
    the pooled micro F1, written out with loops (t, p: lists of label sets)."""
    f1s, TP, FP, FN = [], 0, 0, 0
    for c in classes:
        tp = sum(c in a and c in b for a, b in zip(t, p))
        fp = sum(c not in a and c in b for a, b in zip(t, p))
        fn = sum(c in a and c not in b for a, b in zip(t, p))
        TP, FP, FN = TP + tp, FP + fp, FN + fn
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s), 2 * TP / (2 * TP + FP + FN)


def test_scores_match_the_formulas_written_out():
    rng = np.random.default_rng(0)
    k = 6
    yt, yp = rng.integers(0, k - 1, 50), rng.integers(0, k - 2, 50)        # class 5 never seen: left out
    macro, micro = _f1_by_hand([{a} for a in yt], [{b} for b in yp], range(k))
    s = scores(yt, yp, False, k)
    assert s == pytest.approx({"accuracy": np.mean(yt == yp), "f1_macro": macro, "f1_micro": micro})
    assert s["f1_micro"] == pytest.approx(s["accuracy"])
    mt, mp = (rng.random((40, k)) < 0.3).astype(np.uint8), (rng.random((40, k)) < 0.4).astype(np.uint8)
    mt[:, 5] = mp[:, 5] = 0
    macro, micro = _f1_by_hand([set(np.flatnonzero(r)) for r in mt], [set(np.flatnonzero(r)) for r in mp], range(k))
    m = scores(mt, mp, True, k)
    subset = np.mean([list(a) == list(b) for a, b in zip(mt, mp)])
    assert m == pytest.approx({"accuracy": subset, "f1_macro": macro, "f1_micro": micro})
    assert scores(yt, yt, False, k) == {"accuracy": 1.0, "f1_macro": 1.0, "f1_micro": 1.0}
    try:
        from sklearn.metrics import accuracy_score, f1_score
    except ImportError:
        return
    assert s["f1_macro"] == pytest.approx(f1_score(yt, yp, average="macro", zero_division=0))
    assert s["f1_micro"] == pytest.approx(f1_score(yt, yp, average="micro", zero_division=0))
    present = np.flatnonzero((mt | mp).any(axis=0))       # sklearn scores an all-empty column 0: see metrics.py
    assert m["f1_macro"] == pytest.approx(f1_score(mt, mp, average="macro", labels=present, zero_division=0))
    assert m["f1_micro"] == pytest.approx(f1_score(mt, mp, average="micro", zero_division=0))
    assert m["accuracy"] == pytest.approx(accuracy_score(mt, mp))
