"""Clip features: each clip's vector is the mean over its own output frames (checked against the backbone run by
hand), cached once per (model, task) chunk, the same on the Ray actor pool as here, and a bad clip names its file."""
import numpy as np
import pytest
import soundfile as sf

from braintune_dist.downstream.config import ClipFeatureSettings
from braintune_dist.downstream.features import clip_features
from braintune_dist.downstream.tasks import Task
from braintune_dist.errors import DatasetError
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.model.config import ModelConfig

LOCAL = ComputeSettings(runner="local")
QUIET = dict(log=lambda *a: None)
MODELS = [ModelSpec("w2v", ModelConfig()), ModelSpec("whisper", ModelConfig(family="whisper", whisper_input="padded"))]


def _task(folder, n=5, name="t", rate=16_000):
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):                              # clips of different lengths: no batch padding can hide
        x = 0.1 * rng.standard_normal(int(rate * (0.3 + 0.17 * i))).astype(np.float32)
        files.append(str(folder / f"c{i}.wav"))
        sf.write(files[-1], x, rate)
    splits = ("train", "train", "validation", "test", "test")[:n]
    return Task(name, ("a", "b"), False, tuple(files), np.array([0, 1, 0, 1, 0][:n]), splits,
                tuple(f"s{i}" for i in range(n)), str(folder))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return _task(tmp_path_factory.mktemp("clips"))


def test_vectors_are_the_mean_over_each_clips_own_frames(task, tmp_path):
    import torch

    from braintune_dist.downstream.tasks import load_clip
    s = ClipFeatureSettings(layers=[0, 2], chunk=2, cache_dir=str(tmp_path / "cache"))
    feats, layers = clip_features([task], MODELS, s, LOCAL, **QUIET)
    assert layers == {"w2v": [0, 2], "whisper": [0, 2]}
    for spec in MODELS:
        got = feats[spec.label]["t"]
        assert got.shape[:2] == (5, 2) and got.dtype == np.float32
        backbone = spec.load().eval()
        for i in (0, 4):
            with torch.no_grad():
                hs, n_valid = backbone(torch.from_numpy(load_clip(task.files[i]))[None])
            want = np.stack([hs[lay][0, :n_valid].mean(0).numpy() for lay in (0, 2)])
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    # whisper, padded: 30 s of input, yet only the frames of the real audio enter the mean
    assert not np.allclose(feats["whisper"]["t"][0], feats["whisper"]["t"][4])


def test_cached_once_and_layers_chosen_at_read(task, tmp_path):
    s = ClipFeatureSettings(layers=[1], chunk=2, cache_dir=str(tmp_path / "cache"))
    lines = []
    first, _ = clip_features([task], MODELS[:1], s, LOCAL, log=lines.append)
    assert any("3 units" in line for line in lines)             # 5 clips in chunks of 2
    chunks = sorted((tmp_path / "cache").rglob("*.npy"))
    assert len(chunks) == 3
    stamp = [c.stat().st_mtime_ns for c in chunks]
    lines.clear()
    again, _ = clip_features([task], MODELS[:1], ClipFeatureSettings(layers=[2, 1], chunk=2, cache_dir=s.cache_dir),
                          LOCAL, log=lines.append)
    assert not lines and [c.stat().st_mtime_ns for c in chunks] == stamp
    np.testing.assert_array_equal(again["w2v"]["t"][:, 1], first["w2v"]["t"][:, 0])


def test_default_layers_are_the_transformer_layers(task, tmp_path):
    s = ClipFeatureSettings(chunk=8, cache_dir=str(tmp_path / "cache"))
    feats, layers = clip_features([task], MODELS[:1], s, LOCAL, **QUIET)
    assert feats["w2v"]["t"].shape[1] == 2 and layers["w2v"] == [1, 2]          # the tiny wav2vec2: 2 transformer layers (not the CNN output)


def test_actor_pool_gives_the_local_vectors(task, tmp_path, ray_local):
    s = ClipFeatureSettings(layers=[1], chunk=2, cache_dir=str(tmp_path / "local"))
    local, _ = clip_features([task], MODELS[:1], s, LOCAL, **QUIET)
    s_ray = ClipFeatureSettings(layers=[1], chunk=2, cache_dir=str(tmp_path / "ray"))
    on_ray, _ = clip_features([task], MODELS[:1], s_ray, ComputeSettings(runner="ray", feature_workers=2), **QUIET)
    np.testing.assert_allclose(on_ray["w2v"]["t"], local["w2v"]["t"], rtol=1e-5, atol=1e-6)


def test_a_clip_longer_than_whisper_takes_is_named(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(16_000 * 31, np.float32), 16_000)
    t = Task("long", ("a", "b"), False, (str(path),), np.array([0]), ("test",), ("s",), str(tmp_path))
    with pytest.raises(DatasetError, match="long.wav"):
        clip_features([t], MODELS[1:], ClipFeatureSettings(cache_dir=str(tmp_path / "c")), LOCAL, **QUIET)
