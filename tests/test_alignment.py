"""Alignment on the simulated dataset: the encoding pipeline recovers the planted ground truth; reports."""
import mlflow
import numpy as np
import pytest

from braintune_dist.model.config import ModelConfig
from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig, story_splits
from braintune_dist.evaluate.featurize import ModelSpec
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.evaluate.report import alignment_report
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.evaluate.summary import at_best_layer, best_layers
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.lowlevel import StimulusFeatures
from braintune_dist.tracking import Tracker, TrackingConfig


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("align") / "ds"
    simulate(SimConfig(participants=2, stories=5, trs_per_story=70, n_vertices=240, seed=11, snr_auditory=1.0, snr_semantic=1.0), str(root))
    return LebelDataset(root, DataConfig(root=str(root)))


def test_story_splits():
    splits = story_splits([3, 2, 4])
    assert [t.tolist() for _, t in splits] == [[0, 1, 2], [3, 4], [5, 6, 7, 8]]
    assert all(len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == 9 for a, b in splits)


def test_story_folds_and_chunk_bootstrap():
    from braintune_dist.evaluate.encoding import cv_splits
    lengths = [10, 20, 5, 30, 15, 20]                              # 100 rows
    folds = cv_splits(lengths, cv=3)
    bounds = set(np.cumsum([0] + lengths).tolist())
    assert len(folds) == 3 and sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(100))
    for tr, val in folds:                                          # whole stories, the rest trains
        assert val[0] in bounds and val[-1] + 1 in bounds and len(tr) + len(val) == 100
        assert np.all(np.diff(val) == 1)
    assert [len(v) for _, v in folds] == [35, 30, 35]              # near-equal rows
    assert cv_splits([40], cv=5) == 5                              # one story: row folds
    boots = cv_splits(lengths, bootstraps=3, chunk_trs=10, held_out=0.25)
    assert len(boots) == 3 and all(len(v) == 20 and len(tr) == 80 for tr, v in boots)   # 2 of the 10 chunks
    assert all(set(v.tolist()) - set(tr.tolist()) == set(v.tolist()) for tr, v in boots)
    assert len({tuple(v) for _, v in boots}) == 3                  # different resamples
    assert [v.tolist() for _, v in boots] == [v.tolist() for _, v in cv_splits(lengths, bootstraps=3, chunk_trs=10)]


def test_recovers_planted_signal(sim):
    participants = sim.participants()
    space = find_common_space(sim.root, "", participants)
    fx = StimulusFeatures(FeatureConfig(), spaces=("spectral", "categories"))
    rows, scores = encode(sim, {"stim": fx}, participants, sim.split()["train"], RidgeConfig(), space,
                          ComputeSettings(runner="local"), log=lambda *a: None)
    get = {(r["subject"], r["layer"], r["region"]): r for r in rows}
    for sub in participants:
        # the acoustic space explains auditory voxels, the category space semantic voxels; null stays at chance
        assert get[(sub, "spectral", "auditory")]["mean_r"] > 0.3
        assert get[(sub, "categories", "semantic")]["mean_r"] > 0.3
        assert get[(sub, "spectral", "auditory")]["mean_r"] > 3 * abs(get[(sub, "spectral", "null")]["mean_r"])
        assert get[(sub, "categories", "semantic")]["mean_r"] > get[(sub, "categories", "auditory")]["mean_r"] + 0.2
        for space_name in ("spectral", "categories"):
            assert abs(get[(sub, space_name, "null")]["mean_r"]) < 0.1
        # r / noise ceiling stays ≤ 1 up to noise on voxels with a usable ceiling
        r, cc = scores["stim"][sub].r["categories"], scores["stim"][sub].cc_max
        ok = cc > 0.4
        assert np.mean(r[ok] / cc[ok] <= 1.1) > 0.95
        # per-voxel r tracks the planted SNR (rank correlation over driven voxels)
        snr = np.load(sim.root / "ground_truth" / sub / "snr.npy")
        sem = space.region_mask(sub, "semantic")
        rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
        assert np.corrcoef(rank(r[sem]), rank(snr[sem]))[0, 1] > 0.3


def test_best_layer_is_chosen_by_cv_not_by_the_test_story():
    rows = [dict(model="m", kind="layer", layer=lay, subject=s, region="all", cv_mse=cv, mean_r_norm=rn)
            for s in ("a", "b") for lay, cv, rn in ((0, 0.9, 0.5), (1, 0.7, 0.2), (2, 0.8, 0.3))]
    assert best_layers(rows) == {"m": 1}                 # lowest CV error, although layer 0 tests best
    assert at_best_layer(rows) == {"m/all": 0.2}


def _report_settings(tmp_path, runner: str) -> EvalSettings:
    return EvalSettings(features=FeatureConfig(window=2.0, stride=1.0, device="cpu"), efficiency_stories=[1, 3],
                        ridge=RidgeConfig(alphas=[1.0, 100.0, 1e4]), out_dir=str(tmp_path / "reports"),
                        compute=ComputeSettings(runner=runner))


MODELS = [ModelSpec("untuned", ModelConfig()), ModelSpec("other-seed", ModelConfig(seed=1))]


def test_report_figures_and_mlflow(sim, tmp_path):
    """The report in this process, logged to MLflow. (The Ray path, feature actors and ridge tasks, is checked
    against the in-process numbers on a multi-node cluster in test_evaluate_cluster.py.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ev = _report_settings(tmp_path, "local")
    lines = []
    with Tracker(TrackingConfig(uri=uri, experiment="t")).start("report") as tr:
        rows = alignment_report(sim, MODELS, ev, ["sim02"], tr, log=lines.append)
        run_id = tr.run_id
    assert {r["model"] for r in rows} == {m.label for m in MODELS}
    assert {r["kind"] for r in rows} == {"layer_mean", "layer", "efficiency"} and rows[0]["kind"] == "layer_mean"
    # the headline leads the console: r / ceiling averaged over every transformer layer (not layer 0), with its SE
    head = next(i for i, x in enumerate(lines) if x.startswith("[alignment] headline"))
    assert "layers 1,2 " in lines[head] and "other-seed" in lines[head + 3] and "(voxels)" in lines[head + 3], lines
    assert head < next(i for i, x in enumerate(lines) if "secondary: best layer" in x)
    # a second report finds every (model, story) window in the cache
    alignment_report(sim, MODELS, ev, ["sim02"], None, log=lines.append)
    assert any("[features] all 12 (model, story) units cached" in x for x in lines), lines
    eff = [r for r in rows if r["kind"] == "efficiency" and r["region"] == "all" and r["model"] == "untuned"]
    assert [r["n_stories"] for r in eff] == [1, 3] and eff[0]["hours"] < eff[1]["hours"]
    pngs = sorted(p.name for p in (tmp_path / "reports").glob("*.png"))
    assert pngs == ["alignment_by_stage.png", "alignment_per_layer.png", "alignment_summary.png", "data_efficiency.png",
                    "map_other-seed-minus-untuned.png", "map_other-seed.png", "map_untuned.png"]
    gii = sorted(str(p.relative_to(tmp_path / "reports" / "maps")) for p in (tmp_path / "reports" / "maps").rglob("*"))
    assert [g for g in gii if g.endswith("hemi-L.func.gii")] == [
        "other-seed-minus-untuned/rnorm_hemi-L.func.gii", "other-seed/r_hemi-L.func.gii",
        "other-seed/rnorm_hemi-L.func.gii", "untuned/r_hemi-L.func.gii", "untuned/rnorm_hemi-L.func.gii"]
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(run_id)
    assert "align.untuned.all" in run.data.metrics and "align.other-seed.semantic" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/alignment_per_layer.png", "report/data_efficiency.png", "report/alignment_by_stage.png",
            "report/alignment.csv", "report/summary.csv", "report/alignment_summary.png", "report/map_untuned.png",
            "report/maps"} <= arts
    logged = {a.path for a in client.list_artifacts(run_id, "report/maps/other-seed-minus-untuned")}
    assert logged == {f"report/maps/other-seed-minus-untuned/rnorm_hemi-{h}.func.gii" for h in "LR"}


def test_cache_key_follows_the_recipe_and_refuses_unreproducible_weights(sim, tmp_path):
    from braintune_dist.evaluate.featurize import featurize, recipe_fingerprint
    a, b = (recipe_fingerprint(m)[0] for m in MODELS)
    assert a != b and recipe_fingerprint(ModelSpec("again", ModelConfig()))[0] == a      # label plays no part
    fc = FeatureConfig(window=2.0, stride=1.0, device="cpu", cache_dir=str(tmp_path / "cache"))
    local = ComputeSettings(runner="local")
    sources, _ = featurize(sim, MODELS[:1], [sim.cfg.test_story], fc, local, log=lambda *a: None)
    weights = tmp_path / "cache" / sources["untuned"].key / "WEIGHTS"
    assert weights.is_file()
    weights.write_text("0123456789abcdef")         # as if another worker had built different weights
    with pytest.raises(RuntimeError, match="'untuned': weights built here .* differ"):
        featurize(sim, MODELS[:1], [sim.split()["train"][0]], fc, local, log=lambda *a: None)
