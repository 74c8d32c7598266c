"""Simulated ds003020 dataset: layout, TR alignment, determinism, ground truth, noise ceiling, safe writes."""
import dataclasses
import json

import h5py
import numpy as np
import pytest
import soundfile as sf

from braintune_dist.config import ConfigError
from braintune_dist.data.lebel import TEST_STORY, LebelDataset
from braintune_dist.data.validate import validate
from braintune_dist.data.simulate import SimConfig, main, simulate

TINY = dict(participants=2, stories=3, trs_per_story=40, n_vertices=120, n_repeats=3, seed=7)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return simulate(SimConfig(**TINY), str(tmp_path_factory.mktemp("sim") / "ds"))


def _meta(root):
    return json.loads((root / "ground_truth" / "meta.json").read_text())


def _raw(root, sub, story, key="data"):
    with h5py.File(root / "derivative" / "preprocessed_data" / sub / f"{story}.hf5", "r") as f:
        return f[key][()]


def test_reader_validates(root):
    summary = validate(LebelDataset(root))
    assert sorted(summary["subjects"]) == ["sim01", "sim02"]
    assert summary["stories"] == ["story01", "story02", "story03", TEST_STORY]
    for s in summary["subjects"].values():
        assert s["n_repeats"] == 3 and s["n_stories"] == 4


def test_layout_files(root):
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    assert respdict == {"story01": 40, "story02": 40, "story03": 40, TEST_STORY: 80}
    for story in respdict:
        assert (root / "stimuli" / f"{story}.wav").is_file()
        assert (root / "derivative" / "TextGrids" / f"{story}.TextGrid").is_file()
        for sub in ("sim01", "sim02"):
            assert (root / "derivative" / "preprocessed_data" / sub / f"{story}.hf5").is_file()
    for name in ("common_space.npz", "meta.json", "sim01/voxel_to_vertex.npy", "sim02/snr.npy"):
        assert (root / "ground_truth" / name).is_file()
    assert not list(root.parent.glob(".ds.*"))          # no temp folder left next to the dataset


def test_rows_trimmed_and_zscored(root):
    respdict = json.loads((root / "derivative" / "respdict.json").read_text())
    for sub in ("sim01", "sim02"):
        n_vox = len(np.load(root / "ground_truth" / sub / "voxel_to_vertex.npy"))
        for story, n in respdict.items():
            Y = _raw(root, sub, story)
            assert Y.dtype == np.float32 and Y.shape == (n - 20, n_vox)
            ok = ~np.isnan(Y).all(axis=0)
            np.testing.assert_allclose(Y[:, ok].mean(axis=0), 0, atol=1e-5)
            np.testing.assert_allclose(Y[:, ok].std(axis=0), 1, atol=1e-4)
        R = _raw(root, sub, TEST_STORY, "individual_repeats")
        assert R.dtype == np.float32 and R.shape == (3, 80 - 20, n_vox)
        m = R.astype(np.float64).mean(axis=0)
        z = (m - m.mean(axis=0)) / m.std(axis=0)
        np.testing.assert_allclose(_raw(root, sub, TEST_STORY), z, atol=1e-5)   # data = z(mean of repeats)
        assert not np.allclose(R[0], R[1], equal_nan=True)                      # independent noise per repeat


def test_nan_voxels(root):
    ds = LebelDataset(root)
    for sub in ("sim01", "sim02"):
        Y = _raw(root, sub, "story01")
        nan_cols = np.isnan(Y).all(axis=0)
        assert nan_cols.sum() == SimConfig.nan_voxels and not np.isnan(Y[:, ~nan_cols]).any()
        assert np.isnan(_raw(root, sub, TEST_STORY, "individual_repeats")[:, :, nan_cols]).all()
        assert (ds.load_responses(sub, "story01")[:, nan_cols] == 0).all()            # reader: NaN → 0
        assert (np.load(root / "ground_truth" / sub / "voxel_to_vertex.npy")[nan_cols] == -1).all()
        assert (np.load(root / "ground_truth" / sub / "snr.npy")[nan_cols] == 0).all()


def test_textgrid_matches_audio(root):
    ds = LebelDataset(root)
    vocab = {w for ws in _meta(root)["categories"].values() for w in ws} | set(_meta(root)["function_words"])
    for story in ("story01", TEST_STORY):
        audio = ds.load_audio(story)
        assert len(audio) == ((ds.n_trs(story) - 5) * 2 - 10) * 16000          # covers the TR grid exactly
        tg = ds.load_textgrid(story)
        assert [t.name for t in tg.tiers] == ["phones", "words"] and tg.xmax == len(audio) / 16000
        words = tg.tier("words").labelled()
        assert len(words) > 20 and {w.text for w in words} <= vocab
        assert words[-1].xmax <= tg.xmax and all(a.xmax <= b.xmin for a, b in zip(words, words[1:]))
        inside = np.zeros(len(audio), dtype=bool)
        for w in words:
            seg = audio[int(w.xmin * 16000): int(w.xmax * 16000)]
            inside[int(w.xmin * 16000): int(w.xmax * 16000)] = True
            assert np.sqrt(np.mean(seg ** 2)) > 0.01, w                       # every word holds speech
        rms_in, rms_out = np.sqrt(np.mean(audio[inside] ** 2)), np.sqrt(np.mean(audio[~inside] ** 2))
        assert rms_in > 20 * rms_out
        # every phone lies inside a word, and the phones of a word tile it
        for w in words:
            ph = [p for p in tg.tier("phones").labelled() if w.xmin - 1e-9 <= p.xmin and p.xmax <= w.xmax + 1e-9]
            assert ph and ph[0].xmin == pytest.approx(w.xmin) and ph[-1].xmax == pytest.approx(w.xmax)


def test_ground_truth_format(root):
    meta = _meta(root)
    cs = np.load(root / "ground_truth" / "common_space.npz")
    assert list(cs["region_names"]) == ["null", "auditory", "semantic", "phonetic", "lexical"]
    region = cs["vertex_region"]
    assert region.dtype == np.int8 and region.shape == (120,) and set(np.unique(region)) == {0, 1, 2, 3, 4}
    assert meta["stages"] == ["auditory", "phonetic", "lexical", "semantic"]
    assert meta["region_counts"] == {"null": 30, "auditory": 24, "semantic": 30, "phonetic": 18, "lexical": 18}
    pref = np.array(meta["vertex_preferred_category"])
    assert ((pref >= 0) == (region == 2)).all() and pref.max() == len(meta["categories"]) - 1
    assert meta["seed"] == 7 and meta["participants"] == ["sim01", "sim02"]
    assert meta["stories"] == {"train": ["story01", "story02", "story03"], "test": TEST_STORY}
    sizes = []
    for sub in meta["participants"]:
        v2v = np.load(root / "ground_truth" / sub / "voxel_to_vertex.npy")
        snr = np.load(root / "ground_truth" / sub / "snr.npy")
        assert v2v.dtype == np.int64 and snr.dtype == np.float32 and v2v.shape == snr.shape
        assert v2v.min() == -1 and v2v.max() < 120
        assert v2v.shape[0] == _raw(root, sub, "story01").shape[1]
        reg = np.where(v2v >= 0, region[np.maximum(v2v, 0)], 0)
        assert (snr[reg == 0] == 0).all() and (snr[reg > 0] > 0).all()
        sizes.append(len(v2v))
    assert len(set(sizes)) == len(sizes)                       # voxel sets of different sizes


def _cc_max(R):
    """Schoppe et al. 2016 noise ceiling from z-scored repeats (N, T, V); nan → 0."""
    N = R.shape[0]
    y = R.mean(axis=0)
    SP = (N * y.var(axis=0, ddof=1) - 1) / (N - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(1 / np.sqrt(1 + (1 / N) * (1 / SP - 1)), nan=0.0)


def test_noise_ceiling_separates_planted_from_null(root):
    for sub in ("sim01", "sim02"):
        R = _raw(root, sub, TEST_STORY, "individual_repeats")
        ok = ~np.isnan(R).all(axis=(0, 1))
        cc = _cc_max(R[:, :, ok])
        snr = np.load(root / "ground_truth" / sub / "snr.npy")[ok]
        planted, null = cc[snr > 0], cc[snr == 0]
        assert np.median(planted) > 0.6 and np.median(null) < 0.3, (np.median(planted), np.median(null))
        assert planted.mean() - null.mean() > 0.4


def test_semantic_voxels_prefer_their_category(root):
    """Independent of brain.py: category word counts per TR, lagged 4-6 s, against the hf5 rows."""
    ds, meta = LebelDataset(root), _meta(root)
    cat_of = {w: c for c, ws in enumerate(meta["categories"].values()) for w in ws}
    region = np.load(root / "ground_truth" / "common_space.npz")["vertex_region"]
    pref = np.array(meta["vertex_preferred_category"])
    X, Y = [], {sub: [] for sub in meta["participants"]}
    for story in meta["stories"]["train"]:
        tr_mid = ds.tr_times(story)                                     # (n_trs - 5,)
        counts = np.zeros((len(tr_mid), len(meta["categories"])))
        for w in ds.load_textgrid(story).tier("words").labelled():
            k = np.searchsorted(tr_mid - 1.0, (w.xmin + w.xmax) / 2, side="right") - 1
            if w.text in cat_of and 0 <= k < len(tr_mid):
                counts[k, cat_of[w.text]] += 1
        lagged = np.zeros_like(counts)
        lagged[3:] = counts[1:-2] + counts[:-3]                         # words heard 4-6 s before the TR
        X.append(lagged[10:-5])
        for sub in Y:
            Y[sub].append(ds.load_responses(sub, story))
    X = np.concatenate(X)
    X = (X - X.mean(0)) / X.std(0)
    for sub, ys in Y.items():
        Yc = np.concatenate(ys)
        v2v = np.load(root / "ground_truth" / sub / "voxel_to_vertex.npy")
        sem = np.flatnonzero((v2v >= 0) & (region[np.maximum(v2v, 0)] == 2))
        corr = X.T @ Yc[:, sem] / len(X)                                # (n_cat, n_semantic_voxels)
        hit = (corr.argmax(axis=0) == pref[v2v[sem]]).mean()
        assert hit > 0.6, hit                                           # chance = 1 / 8


def test_deterministic_and_seed_dependent(root, tmp_path):
    other = simulate(SimConfig(**TINY), str(tmp_path / "again"))
    for rel in ("stimuli/story02.wav", "stimuli/wheretheressmoke.wav",
                "derivative/preprocessed_data/sim02/wheretheressmoke.hf5", "ground_truth/sim01/snr.npy",
                "derivative/TextGrids/story01.TextGrid", "ground_truth/meta.json"):
        assert (root / rel).read_bytes() == (other / rel).read_bytes(), rel
    np.testing.assert_array_equal(np.load(root / "ground_truth/common_space.npz")["vertex_region"],
                                  np.load(other / "ground_truth/common_space.npz")["vertex_region"])
    # a different seed, through the CLI, over the existing folder with --overwrite true
    args = [f"--sim.{k}={v}" for k, v in {**TINY, "seed": 8}.items()]
    assert main(["--out", str(other), "--overwrite", "true", *args]) == 0
    assert _meta(other)["seed"] == 8
    assert not np.array_equal(sf.read(root / "stimuli/story01.wav")[0][:16000 * 20],
                              sf.read(other / "stimuli/story01.wav")[0][:16000 * 20])
    assert not np.allclose(_raw(root, "sim01", "story01")[:, :50], _raw(other, "sim01", "story01")[:, :50],
                           equal_nan=True)
    assert not list(tmp_path.glob(".again.*"))                          # old copy and temp folder removed


def test_refuses_overwrite(root, capsys):
    before = (root / "ground_truth" / "meta.json").read_bytes()
    with pytest.raises(FileExistsError, match="set overwrite true"):
        simulate(SimConfig(**TINY), str(root))
    assert main(["--out", str(root), "--sim.seed", "3"]) == 2 and "not empty" in capsys.readouterr().err
    assert (root / "ground_truth" / "meta.json").read_bytes() == before


def test_crash_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)          # fails at the very end, after every hf5 is written
    with pytest.raises(OSError, match="disk full"):
        simulate(SimConfig(**TINY), str(tmp_path / "ds"))
    assert list(tmp_path.iterdir()) == []


def test_config_checks_and_docs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="trs_per_story"):
        simulate(SimConfig(trs_per_story=21), str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="n_repeats"):
        simulate(SimConfig(n_repeats=1), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(SimConfig):         # every field is on the CLI with its docstring
        assert f"--sim.{f.name}" in shown, f.name
    assert "Number of participants (sim01, sim02, ...)." in shown
