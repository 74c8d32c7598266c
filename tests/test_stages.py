"""The simulated brain's processing stages (acoustic → phonetic → lexical → semantic) and the analyses that
must recover their order from oracle features planted one stage per layer."""
import json

import numpy as np
import pytest

from braintune_dist.analysis.probes import ProbeSettings, probe_layers
from braintune_dist.analysis.residual import ResidualFeatures
from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.data.simulate import SimConfig, brain, simulate, vocabulary
from braintune_dist.data.simulate.oracle import OracleFeatures
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig
from braintune_dist.evaluate.figures import plot_stages
from braintune_dist.evaluate.maps import MapSettings, brain_maps, read_gifti
from braintune_dist.tracking import save_figure
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.lowlevel import StimulusFeatures

STAGES = list(brain.STAGES)                     # region of each oracle layer, in processing order


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages") / "ds"
    simulate(SimConfig(participants=2, stories=5, trs_per_story=70, n_vertices=200, seed=5), root)
    ds = LebelDataset(root, DataConfig(root=str(root)))
    return ds, find_common_space(root, "", ds.participants())


def _region_by_layer(rows, model="oracle"):
    """(4 regions × 4 layers) mean r over participants, regions and layers in stage order."""
    return np.array([[np.mean([r["mean_r"] for r in rows if r["kind"] == "layer" and r["model"] == model
                               and r["region"] == reg and r["layer"] == k]) for k in range(4)] for reg in STAGES])


def test_vocabulary_separates_word_identity_from_category(sim):
    ds, _ = sim
    meta = json.loads((ds.root / "ground_truth" / "meta.json").read_text())
    assert meta["vocabulary_size"] > 250 and meta["n_distinct_sentences"] > 150
    assert meta["stages"] == STAGES and meta["region_stage"]["lexical"] == "word form"
    heard = {w.text for s in meta["stories"]["train"] for w in ds.words(s)}
    assert len(heard & set(vocabulary.word_category())) > 150                # most content words are heard
    # the semantic space has sub-structure: same subcategory > same category > other categories
    emb = brain.semantic_embedding(meta["seed"], vocabulary.word_category(), vocabulary.word_subcategory())
    cat, sub = vocabulary.word_category(), vocabulary.word_subcategory()
    words = sorted(emb)
    E = np.stack([emb[w] / np.linalg.norm(emb[w]) for w in words])
    C = E @ E.T
    same_sub = np.array([[sub[a] == sub[b] and a != b for b in words] for a in words])
    same_cat = np.array([[cat[a] == cat[b] and sub[a] != sub[b] for b in words] for a in words])
    other = np.array([[cat[a] != cat[b] for b in words] for a in words])
    assert C[same_sub].mean() > C[same_cat].mean() + 0.1 > C[other].mean() + 0.2
    assert C[same_sub].mean() < 0.95                                          # words of one subcategory differ


@pytest.fixture(scope="module")
def oracle_fit(sim):
    """Encoding fits of the oracle features: (rows, scores) of ``encode``."""
    ds, space = sim
    return encode(ds, {"oracle": OracleFeatures(ds)}, ds.participants(), ds.split()["train"], RidgeConfig(), space,
                  ComputeSettings(runner="local"), log=lambda *a: None)


def test_alignment_puts_each_region_at_its_stage(oracle_fit, tmp_path):
    rows, _ = oracle_fit
    M = _region_by_layer(rows)
    assert list(M.argmax(axis=1)) == [0, 1, 2, 3], M.round(3)                # each region best at its stage
    off = M[~np.eye(4, dtype=bool)].reshape(4, 3).max(axis=1)
    assert (np.diag(M) > off + 0.15).all(), M.round(3)
    null = [r["mean_r"] for r in rows if r["kind"] == "layer" and r["region"] == "null"]
    assert np.abs(null).max() < 0.1
    # the stage figure: one panel for the model, a line per stage in stage order, its peak at its own layer
    fig = plot_stages(rows)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == STAGES
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert [int(ln.get_xdata()[0]) for ln in stars] == [0, 1, 2, 3]
    save_figure(fig, tmp_path / "stages.png")
    assert (tmp_path / "stages.png").stat().st_size > 10_000


def test_probes_peak_in_stage_order(sim):
    ds, _ = sim
    res = probe_layers(ds, OracleFeatures(ds), ds.split()["train"], ProbeSettings(sample_every=0.2))
    peak = {t: max((r for r in res if r.target == t), key=lambda r: r.score) for t in ("acoustic", "phone", "word",
                                                                                          "category")}
    assert [peak[t].layer for t in ("acoustic", "phone", "word", "category")] == [0, 1, 2, 3]
    for t in ("phone", "word", "category"):                                   # well above chance at the peak
        assert peak[t].ci_low > peak[t].chance + 0.2, (t, peak[t])


def test_residual_alignment_survives_more_at_later_stages(sim):
    ds, space = sim
    train = ds.split()["train"]
    oracle = OracleFeatures(ds)
    low = StimulusFeatures(FeatureConfig(), spaces=("spectral", "word_rate", "phone_rate"))
    resid = ResidualFeatures(oracle, low, train).fit(ds)
    rows, _ = encode(ds, {"oracle": oracle, "residual": resid}, ds.participants(), train, RidgeConfig(), space,
                     ComputeSettings(runner="local"), log=lambda *a: None)
    survival = np.diag(_region_by_layer(rows, "residual")) / np.diag(_region_by_layer(rows))
    # removing low-level acoustics and rates leaves little of the acoustic stage and most of the semantic one
    assert survival[0] < 0.6 < survival[3] and survival[0] < survival[1] < survival[2] <= survival[3] + 0.05, \
        survival.round(3)


def test_maps_put_each_stage_in_its_patches(sim, oracle_fit, tmp_path):
    """The per-vertex maps (read back from the GIfTI files) are high inside every planted patch of a stage at
    that stage's oracle layer, and low outside the stage's region."""
    ds, space = sim
    _, scores = oracle_fit
    meta = json.loads((ds.root / "ground_truth" / "meta.json").read_text())
    with np.load(ds.root / "ground_truth" / "common_space.npz") as z:
        patch = z["vertex_patch"]
    import nibabel as nib
    for sub, vs in scores["oracle"].items():             # a brain mask per participant: voxels in C order
        mask = np.zeros(vs.cc_max.shape[0] + 7, np.uint8)
        mask[3:-4] = 1
        (tmp_path / "vol" / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(mask.reshape(1, 1, -1), np.eye(4)), tmp_path / "vol" / sub / "mask.nii.gz")
    for k, stage in enumerate(STAGES):
        settings = MapSettings(volumes=str(tmp_path / "vol") if k == 0 else "")
        maps = brain_maps(space, scores, {"oracle": k}, 0.0, settings, tmp_path / stage, log=lambda *a: None)
        if k == 0:                                         # per-voxel r / ceiling in each participant's volume
            for sub, vs in scores["oracle"].items():
                vol = np.asarray(nib.load(str(tmp_path / stage / "oracle" / f"{sub}_rnorm.nii.gz")).dataobj).ravel()
                np.testing.assert_allclose(vol[3:-4], vs.r_norm(0, 0.0), rtol=1e-6, equal_nan=True)
                assert np.isnan(vol[:3]).all()
        full = np.concatenate([read_gifti(f) for f in maps["oracle/r"]["files"]])          # left then right
        assert full.shape == (2 * 10242,) and np.isnan(full).sum() >= 2 * 10242 - space.n_vertices
        v = full[space.vertex_index]                                                       # back to the common space
        np.testing.assert_allclose(v, maps["oracle/r"]["values"], atol=1e-6, equal_nan=True)
        outside = np.nanmean(v[space.vertex_region != brain.REGION_NAMES.index(stage)])
        for j, info in enumerate(meta["patches"]):
            if info["region"] == stage:
                inside = np.nanmean(v[patch == j])
                assert inside > outside + 0.15, (stage, info["hemi"], info["name"], inside, outside)
