"""Alignment on the simulated dataset: the encoding pipeline recovers the planted ground truth; reports."""
import mlflow
import numpy as np
import pytest

from braintune_dist.model.backbone import ModelConfig, build_backbone
from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.evaluate.alignment import RidgeConfig, evaluate_alignment, story_splits
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.report import EvalSettings, alignment_report
from braintune_dist.features.extract import FeatureConfig
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


def test_recovers_planted_signal(sim):
    subjects = sim.subjects()
    space = find_common_space(sim.root, "", subjects)
    fx = StimulusFeatures(FeatureConfig(), spaces=("spectral", "categories"))
    rows, voxels = evaluate_alignment(sim, fx, subjects, sim.split()["train"], RidgeConfig(), space, [], progress=False)
    get = {(r["subject"], r["layer"], r["region"]): r for r in rows}
    for sub in subjects:
        # the acoustic space explains auditory voxels, the category space semantic voxels; null stays at chance
        assert get[(sub, "spectral", "auditory")]["mean_r"] > 0.3
        assert get[(sub, "categories", "semantic")]["mean_r"] > 0.3
        assert get[(sub, "spectral", "auditory")]["mean_r"] > 3 * abs(get[(sub, "spectral", "null")]["mean_r"])
        assert get[(sub, "categories", "semantic")]["mean_r"] > get[(sub, "categories", "auditory")]["mean_r"] + 0.2
        for space_name in ("spectral", "categories"):
            assert abs(get[(sub, space_name, "null")]["mean_r"]) < 0.1
        # r / noise ceiling stays ≤ 1 up to noise on voxels with a usable ceiling
        r, cc = voxels[f"{sub}/layercategories/r"], voxels[f"{sub}/cc_max"]
        ok = cc > 0.4
        assert np.mean(r[ok] / cc[ok] <= 1.1) > 0.95
        # per-voxel r tracks the planted SNR (rank correlation over driven voxels)
        snr = np.load(sim.root / "ground_truth" / sub / "snr.npy")
        sem = space.region_mask(sub, "semantic")
        rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
        assert np.corrcoef(rank(r[sem]), rank(snr[sem]))[0, 1] > 0.3


def test_report_figures_and_mlflow(sim, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ev = EvalSettings(features=FeatureConfig(window=2.0, stride=1.0, device="cpu"), efficiency_stories=[1, 3],
                      ridge=RidgeConfig(alphas=[1.0, 100.0, 1e4]), out_dir=str(tmp_path / "reports"))
    models = {"untuned": build_backbone(ModelConfig()), "other-seed": build_backbone(ModelConfig(seed=1))}
    with Tracker(TrackingConfig(uri=uri, experiment="t")).start("report") as tr:
        rows = alignment_report(sim, models, ev, ["sim02"], tr, log=lambda *a: None)
        run_id = tr.run_id
    assert {r["model"] for r in rows} == set(models) and {r["kind"] for r in rows} == {"layer", "efficiency"}
    eff = [r for r in rows if r["kind"] == "efficiency" and r["region"] == "all" and r["model"] == "untuned"]
    assert [r["n_stories"] for r in eff] == [1, 3] and eff[0]["hours"] < eff[1]["hours"]
    pngs = sorted(p.name for p in (tmp_path / "reports").glob("*.png"))
    assert pngs == ["alignment_per_layer.png", "data_efficiency.png"]
    client = mlflow.tracking.MlflowClient(uri)
    run = client.get_run(run_id)
    assert "align.untuned.all" in run.data.metrics and "align.other-seed.semantic" in run.data.metrics
    arts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/alignment_per_layer.png", "report/data_efficiency.png", "report/alignment.csv"} <= arts
