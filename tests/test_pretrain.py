"""Phone-recognition pretraining: learns above chance, writes a loadable HF checkpoint atomically, reuses it."""
import json

import numpy as np
import pytest
import torch

from braintune_dist.model.backbone import build_backbone
from braintune_dist.model.config import ModelConfig
from braintune_dist.config import ConfigError
from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.model.pretrain import META_FILE, _phone, PretrainError, frame_labels, pretrain, with_pretrained
from braintune_dist.model.config import PretrainConfig


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return simulate(SimConfig(participants=1, stories=4, trs_per_story=40, n_vertices=30, seed=3), str(tmp_path_factory.mktemp("pre") / "ds"))


def _data(root) -> DataConfig:
    return DataConfig(root=str(root), val_stories=["story04"])


def _cfg(root, out, **kw) -> PretrainConfig:
    return PretrainConfig(out=str(out), steps=kw.pop("steps", 120), batch_size=8, window=1.0, eval_every=40, **kw)


def test_frame_labels_follow_the_textgrid(root):
    ds = LebelDataset(root)
    vocab = {"": 0}
    lab = frame_labels(ds, "story01", 500, 320, vocab, grow=True)      # 10 s at 50 frames/s
    phones = ds.load_textgrid("story01").tier("phones").labelled()
    first = phones[0]
    k = int((first.xmin + first.xmax) / 2 * 50)
    assert lab[k] == vocab[_phone(first.text)] > 0
    assert lab[: int(first.xmin * 50)].max() == 0                      # silence before the first phone
    unseen = frame_labels(ds, "story01", 500, 320, {"": 0}, grow=False)
    assert set(np.unique(unseen)) <= {0, -100}                         # unknown phones are ignored, not guessed


def test_pretrain_learns_phones_and_writes_a_loadable_checkpoint(root, tmp_path):
    logs = []
    out = pretrain(_cfg(root, tmp_path / "pt"), _data(root), logs.append)
    meta = json.loads((out / META_FILE).read_text())
    hist = meta["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert meta["val_accuracy"] > 3 * meta["chance"], meta             # held-out story, well above chance
    assert not list(tmp_path.glob(".pt.tmp-*"))                        # the temp directory was renamed
    # an ordinary HF checkpoint: Backbone loads it offline, normalising waveforms as during pretraining
    bb = build_backbone(ModelConfig(pretrained=str(out)))
    assert bb.do_normalize and bb.n_layers == 2
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        hs, _ = bb(wav)
    rand = build_backbone(ModelConfig())
    loaded = dict(bb.model.named_parameters())
    assert any(not torch.equal(p, loaded[n]) for n, p in rand.model.named_parameters())   # trained weights
    assert len(hs) == 3 and torch.isfinite(hs[-1]).all()

    # same config → reused without training; another config → a clear error naming the directory
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    logs.clear()
    assert pretrain(_cfg(root, tmp_path / "pt"), _data(root), logs.append) == out
    assert "reusing" in logs[0] and (out / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(PretrainError, match=r"another config or data \(steps: 120 → 7\)"):
        pretrain(_cfg(root, tmp_path / "pt", steps=7), _data(root), logs.append)
    # a moved dataset is the same data: reused; a changed TextGrid is not
    import shutil
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    logs.clear()
    assert pretrain(_cfg(root, tmp_path / "pt"), _data(moved), logs.append) == out and "reusing" in logs[0]
    tg = moved / "derivative" / "TextGrids" / "story02.TextGrid"
    tg.write_text(tg.read_text().replace('"', '"', 1) + "\n")
    with pytest.raises(PretrainError, match=r"inputs.textgrid/story02: [0-9a-f]+ → [0-9a-f]+"):
        pretrain(_cfg(root, tmp_path / "pt"), _data(moved), logs.append)


def test_pretrain_refuses_bad_input(root, tmp_path):
    with pytest.raises(PretrainError, match="whisper"):
        pretrain(_cfg(root, tmp_path / "w", model=ModelConfig(family="whisper")), _data(root))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(PretrainError, match="not a pretraining checkpoint"):
        pretrain(_cfg(root, tmp_path / "busy"), _data(root))


def test_with_pretrained_sets_model_pretrained_once(root, tmp_path):
    from braintune_dist.jobs.multi_brain import MultiBrainConfig
    from braintune_dist.train.config import FitConfig
    assert MultiBrainConfig().pretrain.enabled is False                # disabled by default in the job config
    fit = FitConfig(data=_data(root))
    pre = _cfg(root, tmp_path / "pt", steps=2, enabled=False)
    assert with_pretrained(fit, pre) is fit
    pre.enabled = True
    done = with_pretrained(fit, pre, lambda m: None)
    assert done.model.pretrained == str((tmp_path / "pt").resolve())
    assert with_pretrained(done, pre, lambda m: None) is done          # idempotent
    other = FitConfig(model=ModelConfig(pretrained=str(tmp_path)))
    with pytest.raises(ConfigError, match="both set"):
        with_pretrained(other, pre)
