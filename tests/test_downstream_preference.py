"""The semantic–phonetic preference: word pairs from espeak-ng phonemes, single-word audio, and d per layer
on constructed features whose answer is known (meaning only: d < 0; phonemes only: d > 0; shuffled: d ≈ 0)."""
import shutil

import numpy as np
import pytest

from braintune_dist.data.simulate.vocabulary import CATEGORIES, word_category, word_subcategory
from braintune_dist.downstream import wordpairs as wp
from braintune_dist.downstream.preference import (Y_LABEL, PreferenceCurve, compare_curves, plot_preference,
                                                  preference_curve)
from braintune_dist.errors import OutputExistsError, UserError

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (./run installs it)")


@pytest.fixture(scope="module")
def pairs():
    return wp.build_pairs()


def test_edit_distance_and_rhyme():
    assert wp.edit_distance(("k", "æ", "t"), ("k", "æ", "p")) == 1
    assert wp.edit_distance(("k", "æ", "t"), ("k", "æ", "t", "s")) == 1
    assert wp.edit_distance(("s", "k", "uː", "l"), ("k", "uː", "l")) == 1
    assert wp.edit_distance(("d", "ɑː", "ɡ"), ("k", "æ", "t")) == 3 and wp.edit_distance((), ("a",)) == 1
    tok = wp.ipa_tokens(["rabbit", "habit", "hammer", "pepper"])
    assert wp.rhyme_part(tok["rabbit"]) == wp.rhyme_part(tok["habit"]) == (("æ", "b", "ɪ", "t"), 2)
    assert wp.rhyme_part(tok["hammer"]) != wp.rhyme_part(tok["pepper"])     # not from the unstressed "-er"


def test_batch_phonemes_equal_one_word_calls():
    words = ["divine", "divide", "no", "read", "cat", "jellyfish", "screwdriver", "us"]
    batch = wp.ipa_tokens(words)
    assert all(batch[w] == wp._tokens(wp._espeak_ipa(w, wp.PHONEME_VOICE)) for w in words)
    assert wp.phonemes(["divine"])["divine"] == ("d", "ᵻ", "v", "aɪ", "n")      # stress removed


def test_pairs_follow_the_rules(pairs):
    cat, sub = word_category(), word_subcategory()
    tags = {w: c for c, ws in wp.COMMON.items() for w in ws.split()}
    assert not set(tags) & set(cat)                               # a COMMON word is never a vocabulary word
    assert len(pairs.targets) + len(pairs.dropped) == 256 and len(pairs.targets) >= 120
    assert list(pairs.targets) == sorted(pairs.targets)
    cands = wp._candidates()
    rhymes = {w: wp.rhyme_part(t) for w, t in wp.ipa_tokens(sorted(cands)).items()}
    for t, sem, pho in zip(pairs.targets, pairs.semantic, pairs.phonetic):
        own = list(CATEGORIES)[cat[t]]
        assert sem and all(sub[w] == sub[t] and wp.edit_distance(pairs.phonemes[t], pairs.phonemes[w]) >= 2
                           for w in sem)
        assert 1 <= len(pho) <= 3 and len({n.rule for n in pho}) == 1
        for n in pho:
            assert n.phonemes == pairs.phonemes[n.word] and n.rule in wp.RULES
            assert cands[n.word] != own and n.word not in sem      # never a semantic neighbour
            d = wp.edit_distance(pairs.phonemes[t], n.phonemes)
            assert d == 1 if n.rule == "minimal pair" else (d > 0 and rhymes[n.word] == rhymes[t])
        if pho[0].rule == "rhyme":                                 # rhymes only where no minimal pair exists
            assert not any(wp.edit_distance(pairs.phonemes[t], wp.phonemes([w])[w]) == 1
                           for w, c in cands.items() if c != own)
    assert {w for ph in pairs.phonemes.values() for w in ph} and not any(
        "ˈ" in p or "ˌ" in p for ph in pairs.phonemes.values() for p in ph)
    needed = set(pairs.targets) | {w for s in pairs.semantic for w in s} | {n.word for p in pairs.phonetic for n in p}
    assert set(pairs.words) == needed and list(pairs.words) == sorted(needed)
    by_target = dict(zip(pairs.targets, pairs.phonetic))
    assert "carrot" in {n.word for n in by_target["parrot"]} and "cap" in {n.word for n in by_target["cat"]}
    s = pairs.summary()
    assert s["n_targets"] == len(pairs.targets) and s["n_minimal_pair"] + s["n_rhyme"] == sum(map(len, pairs.phonetic))


def test_pairs_are_deterministic(pairs):
    wp._IPA.clear()                                                # phonemise again, in one fresh process
    assert wp.build_pairs() == pairs
    assert wp.build_pairs(max_phonetic=1).phonetic == tuple(p[:1] for p in pairs.phonetic)
    with pytest.raises(UserError, match="max_phonetic"):
        wp.build_pairs(max_phonetic=0)


def test_synthesize_words_writes_16k_mono_and_reuses(tmp_path, monkeypatch):
    import soundfile as sf
    words, voices = ["cat", "cap", "dog", "dig", "parrot", "carrot"], ("en-us", "en-us+f3")
    clips = wp.synthesize_words(words, voices, tmp_path / "a")
    assert len(clips.files) == 12 and clips.word_index.tolist() == list(range(6)) * 2
    assert clips.voices == ("en-us",) * 6 + ("en-us+f3",) * 6 and clips.words == tuple(words)
    for f in clips.files:
        info = sf.info(f)
        assert info.samplerate == 16_000 and info.channels == 1 and 0.1 < info.duration < 1.5
    task = clips.task()
    assert task.classes == tuple(words) and task.speakers == clips.voices and set(task.splits) == {"test"}
    again = wp.synthesize_words(words, voices, tmp_path / "b")    # deterministic: the same samples
    assert all(open(a, "rb").read() == open(b, "rb").read() for a, b in zip(clips.files, again.files))
    monkeypatch.setattr(wp, "_write_clip", lambda *a: pytest.fail("a complete folder is synthesised again"))
    assert wp.synthesize_words(words, voices, tmp_path / "a").files == clips.files
    with pytest.raises(OutputExistsError, match="words.json|overwrite"):
        wp.synthesize_words(words[:2], voices, tmp_path / "a")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="no words.json"):
        wp.synthesize_words(words, voices, tmp_path / "c")
    monkeypatch.undo()
    short = wp.synthesize_words(words[:2], voices[:1], tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "a").rglob("*.wav")) == ["cap.wav", "cat.wav"] and len(short.files) == 2
    with pytest.raises(UserError, match="distinct lowercase"):
        wp.synthesize_words(["Cat"], voices, tmp_path / "d")


def _features(pairs, kind, n_voices=2, seed=0, speaker=3.0):
    """(n_clips, 1, 64) clip features of every word in every voice, with a large per-voice offset (speaker)."""
    rng = np.random.default_rng(seed)
    sub, n = word_subcategory(), len(pairs.words)
    if kind == "phonemes":                                          # bag of phoneme one-hots
        inventory = sorted({p for ph in pairs.phonemes.values() for p in ph})
        base = np.zeros((n, 64))
        for i, w in enumerate(pairs.words):
            for p in pairs.phonemes[w]:
                base[i, inventory.index(p)] += 1
    else:                                                           # one vector per subcategory + word noise
        centre = rng.standard_normal((32, 64))
        base = np.array([centre[sub[w]] if w in sub else rng.standard_normal(64) for w in pairs.words])
        base = base + 0.5 * rng.standard_normal(base.shape)
        if kind == "shuffled":
            base = base[rng.permutation(n)]
    word = np.tile(np.arange(n), n_voices)
    voice = np.repeat(np.arange(n_voices), n)
    x = base[word] + speaker * rng.standard_normal((n_voices, 64))[voice] + 0.1 * rng.standard_normal((len(word), 64))
    return x[:, None, :], word, voice


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_preference_curve_on_constructed_features(pairs, metric):
    res = {}
    for kind in ("meaning", "phonemes", "shuffled"):
        x, word, voice = _features(pairs, kind)
        res[kind] = preference_curve(x, word, pairs, metric=metric, clip_voice=[f"v{v}" for v in voice], n_boot=500)
    assert res["meaning"].d[0] < 0 and res["meaning"].ci_high[0] < 0
    assert res["phonemes"].d[0] > 0 and res["phonemes"].ci_low[0] > 0
    assert res["shuffled"].ci_low[0] < 0 < res["shuffled"].ci_high[0]
    assert abs(res["shuffled"].d[0]) < 0.2 * abs(res["meaning"].d[0])
    c = res["meaning"]
    assert c.n_targets == len(pairs.targets) and c.per_target.shape == (c.n_targets, 1) and c.layers == (0,)
    assert np.allclose(c.d, c.semantic - c.phonetic) and c.rows("m")[0]["n_targets"] == c.n_targets


def test_preference_curve_compares_within_voice(pairs):
    """A word missing from one voice is compared in the voices that have it; no common voice is an error."""
    x, word, voice = _features(pairs, "meaning", n_voices=2)
    full = preference_curve(x, word, pairs, clip_voice=voice)
    drop = np.flatnonzero((word == pairs.words.index(pairs.targets[0])) & (voice == 1))
    keep = np.setdiff1d(np.arange(len(word)), drop)
    part = preference_curve(x[keep], word[keep], pairs, clip_voice=voice[keep])
    assert np.isclose(part.d[0], full.d[0], atol=0.02)
    only = np.flatnonzero(voice == 0)
    x2, w2, v2 = x[keep], word[keep].copy(), voice[keep]
    gone = (w2 == pairs.words.index(pairs.targets[0])) & (v2 == 0)
    with pytest.raises(UserError, match="share no voice"):
        preference_curve(x2[~gone], w2[~gone], pairs, clip_voice=v2[~gone])
    one = preference_curve(x[only], word[only], pairs)              # one voice: no clip_voice needed
    assert one.d[0] < 0
    with pytest.raises(UserError, match="metric"):
        preference_curve(x, word, pairs, metric="manhattan")
    with pytest.raises(UserError, match="n_clips"):
        preference_curve(x[:, 0], word, pairs)


def _curve(per_target, targets):
    d = per_target.mean(axis=0)
    return PreferenceCurve((0, 1), d, d, d, d, d * 0, per_target, targets)


def test_compare_curves_pairs_the_bootstrap():
    """A small shift shared by every target is detected although the two curves' own CIs overlap."""
    rng = np.random.default_rng(1)
    targets = tuple(f"w{i}" for i in range(80))
    base = rng.standard_normal((80, 2))
    tuned = base - np.array([0.0, 0.05]) + 0.01 * rng.standard_normal((80, 2))
    cmp = compare_curves({"untuned": _curve(base, targets), "tuned": _curve(tuned, targets)}, n_boot=1000)
    delta, lo, hi = cmp.delta["tuned"]
    assert hi[1] < 0 and np.isclose(delta[1], -0.05, atol=0.01) and abs(delta[0]) < 0.005
    (_, ulo, uhi), (_, tlo, thi) = cmp.layer_mean["untuned"], cmp.layer_mean["tuned"]
    assert ulo < thi and tlo < uhi and uhi - ulo > 0.2            # the models' own CIs overlap widely
    m, mlo, mhi = cmp.delta_mean["tuned"]
    assert np.isclose(m, -0.025, atol=0.005) and mhi < 0 and set(cmp.layer_mean) == {"untuned", "tuned"}
    rows = cmp.rows()
    assert [r["layer"] for r in rows] == [0, 1, "mean"] and rows[1]["delta"] == delta[1]
    with pytest.raises(UserError, match="reference"):
        compare_curves({"tuned": _curve(tuned, targets)})
    with pytest.raises(UserError, match="differs"):
        compare_curves({"untuned": _curve(base, targets), "x": _curve(base[1:], targets[1:])})


def test_plot_preference(pairs):
    x, word, voice = _features(pairs, "meaning")
    c = preference_curve(np.concatenate([x, x[:, :, ::-1]], axis=1), word, pairs, clip_voice=voice, n_boot=100)
    fig = plot_preference({"untuned": c, "tuned": c})
    (ax,) = fig.axes
    assert ax.get_ylabel() == Y_LABEL and len(ax.get_lines()) == 3 and len(ax.collections) == 2   # + zero line


def test_modules_import_no_torch():
    import subprocess
    import sys
    code = ("import sys, braintune_dist.downstream.wordpairs, braintune_dist.downstream.preference; "
            "print(sorted({'torch', 'ray', 'matplotlib'} & set(sys.modules)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
