"""Evaluation features: Lanczos and delays against direct references; batched windows; cache; alignment."""
import numpy as np
import pytest
import torch

from braintune_dist.model.backbone import build_backbone
from braintune_dist.model.config import ModelConfig
from braintune_dist.data.lebel import DatasetError, LebelDataset, TEST_STORY
from braintune_dist.features.extract import FeatureExtractor
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.interp import lanczos_interp, make_delayed
from layouts import build_real_layout


def lanczos_reference(data, old, new, window=3):
    """ridge_utils.interpdata.lanczosinterp2D written out point by point."""
    cutoff = 1.0 / np.mean(np.diff(new))
    out = np.zeros((len(new), data.shape[1]))
    for i, tn in enumerate(new):
        for j, to in enumerate(old):
            t = (tn - to) * cutoff
            if t == 0:
                w = 1.0
            elif abs(t) > window:
                w = 0.0
            else:
                w = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi ** 2 * t ** 2)
            out[i] += w * data[j]
    return out


def test_lanczos_matches_reference():
    rng = np.random.default_rng(0)
    old = np.sort(rng.uniform(0, 60, 300))
    new = np.arange(30) * 2.0 + 1.0
    data = rng.standard_normal((300, 4))
    np.testing.assert_allclose(lanczos_interp(data, old, new), lanczos_reference(data, old, new), rtol=1e-5, atol=1e-5)
    # a slow sinusoid sampled at 10 Hz survives downsampling to TRs up to the kernel's gain
    old = np.arange(0, 120, 0.1)
    sig = np.sin(2 * np.pi * old / 40.0)[:, None]
    got = lanczos_interp(sig, old, new + 20)[:, 0]
    assert np.corrcoef(got, np.sin(2 * np.pi * (new + 20) / 40.0))[0, 1] > 0.99


def test_make_delayed():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    D = make_delayed(X, [1, 3])
    assert D.shape == (6, 4)
    assert np.array_equal(D[:, :2], np.r_[np.zeros((1, 2)), X[:5]])
    assert np.array_equal(D[:, 2:], np.r_[np.zeros((3, 2)), X[:3]])
    assert np.array_equal(make_delayed(X, [0, -1])[:, 2:], np.r_[X[1:], np.zeros((1, 2))])


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_batched_windows_equal_one_by_one(family):
    torch.manual_seed(0)
    bb = build_backbone(ModelConfig(family=family, overrides={"max_source_positions": 200} if family == "whisper" else {}))
    cfg = FeatureConfig(window=1.0, stride=0.25, batch_size=3, device="cpu")
    fx = FeatureExtractor(bb, cfg)
    wav = np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32) * 0.1
    times, feats = fx.story_windows(wav)
    assert np.allclose(times, np.arange(1, 13) * 0.25)          # ends every 0.25 s, growing windows kept
    assert set(feats) == {0, 1, 2} and feats[2].shape == (12, bb.hidden_size)
    with torch.no_grad():                                        # direct: one forward per window
        for j, end in enumerate((times * 16000).astype(int)):
            win = torch.from_numpy(wav[max(0, end - 16000):end])[None]
            hs, n_valid = bb(win)
            for lay in (0, 2):
                np.testing.assert_allclose(feats[lay][j], hs[lay][0, n_valid - 1].numpy(), rtol=1e-4, atol=1e-5)
    # causality: changing audio after a window's end leaves that window's features unchanged
    wav2 = wav.copy()
    wav2[16000 * 2:] = 0
    _, feats2 = fx.story_windows(wav2)
    np.testing.assert_allclose(feats2[2][:8], feats[2][:8], rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats2[2][8:], feats[2][8:])


def test_stride_pool_is_the_mean_of_the_last_stride_frames():
    torch.manual_seed(0)
    bb = build_backbone(ModelConfig(family="wav2vec2"))
    wav = np.random.default_rng(2).standard_normal(16000 * 3).astype(np.float32) * 0.1
    last = FeatureExtractor(bb, FeatureConfig(window=1.0, stride=0.5, device="cpu"))
    pooled = FeatureExtractor(bb, FeatureConfig(window=1.0, stride=0.5, device="cpu", pool="stride"))
    assert pooled.fingerprint != last.fingerprint                 # cached apart
    times, feats = pooled.story_windows(wav)
    with torch.no_grad():
        for j, end in enumerate((times * 16000).astype(int)):
            win = torch.from_numpy(wav[max(0, end - 16000):end])[None]
            hs, n_valid = bb(win)
            k = round(n_valid * 8000 / win.shape[1])              # frames of the last 0.5 s (~25 at 50 Hz)
            assert 20 <= k <= 26
            np.testing.assert_allclose(feats[2][j], hs[2][0, n_valid - k:n_valid].mean(0).numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(feats[2], last.story_windows(wav)[1][2], atol=1e-3)


def test_story_features_align_and_cache(tmp_path):
    root = build_real_layout(tmp_path / "ds")
    ds = LebelDataset(root)
    bb = build_backbone(ModelConfig(family="hubert"))
    cfg = FeatureConfig(window=2.0, stride=0.5, layers=[1, 2], device="cpu", cache_dir=str(tmp_path / "cache"))
    fx = FeatureExtractor(bb, cfg)
    X = fx.story_features(ds, TEST_STORY)
    n_rows = ds.load_responses("UTS01", TEST_STORY).shape[0]
    assert set(X) == {1, 2} and X[1].shape == (n_rows, bb.hidden_size * 4)
    story = fx.story_features(ds, "alpha")[2]
    # the delay-2 block of row r is the delay-1 block of row r-1 (consecutive TRs of one story)
    h = bb.hidden_size
    assert np.allclose(story[1:, h:2 * h], story[:-1, :h], atol=1e-6)
    # row 0 (TR 10) takes its delayed copies from real earlier TRs of the story, not zero padding
    assert np.abs(story[0, 3 * h:]).sum() > 0
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.npy"))
    assert cached.count("times.npy") == 2 and "layer1.npy" in cached and not list((tmp_path / "cache").rglob("*.tmp*"))
    # a second extractor with the same weights reads the cache (no model call) and agrees
    fx2 = FeatureExtractor(bb, cfg)
    fx2.story_windows = None  # would raise if called
    np.testing.assert_array_equal(fx2.story_features(ds, TEST_STORY)[1], X[1])
    # the cache is keyed by the audio's content, not its path: a copy of the dataset elsewhere hits it
    import shutil
    moved = LebelDataset(shutil.copytree(root, tmp_path / "moved"))
    np.testing.assert_array_equal(fx2.story_features(moved, TEST_STORY)[1], X[1])
    np.testing.assert_array_equal(fx2.story_features(moved, "alpha")[2], story)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*.npy")) == cached
    # different weights -> different cache key
    bb2 = build_backbone(ModelConfig(family="hubert", seed=1))
    assert FeatureExtractor(bb2, cfg).fingerprint != fx.fingerprint
    # another dataset with the same story names (or a re-generated wav): its own features, not the cached ones
    import soundfile as sf
    other = build_real_layout(tmp_path / "ds2")
    wav, sr = sf.read(other / "stimuli" / "alpha.wav", dtype="float32")
    sf.write(other / "stimuli" / "alpha.wav", wav[::-1].copy(), sr, subtype="FLOAT")          # same length
    ds2 = LebelDataset(other)
    fx3 = FeatureExtractor(bb, cfg)
    fresh = fx3.story_features(ds2, "alpha")[2]
    assert not np.allclose(fresh, story, atol=1e-3)
    np.testing.assert_allclose(fresh, FeatureExtractor(bb, FeatureConfig(**{**cfg.__dict__, "cache_dir": ""}))
                               .story_features(ds2, "alpha")[2], rtol=1e-5, atol=1e-6)
    # a story's wav rewritten in place (same path, same size, other samples) misses the cache: recomputed
    path, units = root / "stimuli" / "alpha.wav", lambda: len(list((tmp_path / "cache").rglob("times.npy")))
    wav, sr = sf.read(path, dtype="float32")
    size, before = path.stat().st_size, units()
    sf.write(path, np.roll(wav, len(wav) // 2), sr, subtype=sf.info(str(path)).subtype)
    assert path.stat().st_size == size
    rewritten = FeatureExtractor(bb, cfg).story_features(ds, "alpha")[2]
    assert units() == before + 1 and not np.allclose(rewritten, story, atol=1e-3)
    np.testing.assert_allclose(rewritten, FeatureExtractor(bb, FeatureConfig(**{**cfg.__dict__, "cache_dir": ""}))
                               .story_features(LebelDataset(root), "alpha")[2], rtol=1e-5, atol=1e-6)
    # a cache hit still checks the audio against the TR grid (here: respdict edited after caching)
    import json
    rd = other / "derivative" / "respdict.json"
    counts = json.loads(rd.read_text())
    rd.write_text(json.dumps({**counts, "alpha": counts["alpha"] + 15}))             # 30 s more than the audio
    with pytest.raises(DatasetError, match="alpha.wav: audio lasts .* TR-count mismatch"):
        FeatureExtractor(bb, cfg).story_features(LebelDataset(other), "alpha")


def test_bad_layer():
    with pytest.raises(ValueError, match=r"features.layers: \[7\] out of range"):
        FeatureExtractor(build_backbone(ModelConfig()), FeatureConfig(layers=[7], device="cpu"))
