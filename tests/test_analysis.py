"""The analyses on simulated data whose answer is known: permutation tests, low-level residual alignment,
layer-wise probes, semantic–auditory region contrast; and ``jobs/analyze.py`` end to end (tables, figures, MLflow)."""
import json
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from braintune_dist.analysis.compare import StatsSettings
from braintune_dist.analysis.region_contrast import plot_region_contrast, region_contrast_table
from braintune_dist.analysis.probes import ProbeSettings, StimulusWindows, compare_probes, probe_layers
from braintune_dist.analysis.residual import ResidualFeatures, ResidualSettings, survival_table
from braintune_dist.jobs.analyze import AnalyzeConfig, run
from braintune_dist.analysis.probes import category_map, load_categories
from braintune_dist.model.config import ModelConfig
from braintune_dist.config import ConfigError, to_dict
from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset
from braintune_dist.data.simulate import SimConfig, simulate, vocabulary
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import PermutationSettings, RidgeConfig
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.lowlevel import StimulusFeatures
from braintune_dist.tracking import TrackingConfig
from braintune_dist.train.checkpoint import mark_complete, save_model
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.model.config import HeadSettings, LoraSettings

REPO = Path(__file__).resolve().parents[1]
STATS = StatsSettings(n_boot=500)
THR = RidgeConfig().nc_threshold


def score_layers(ds, source, participants, train, ridge, space, perm, label, kind="full"):
    """The encoding pipeline in this process on one feature source: (rows, subject → VoxelScores)."""
    rows, scores = encode(ds, {label: source}, participants, train, ridge, space, ComputeSettings(runner="local"),
                          perm, kind=kind, log=lambda *a: None)
    return rows, scores[label]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis") / "ds"
    simulate(SimConfig(participants=2, stories=4, trs_per_story=70, n_vertices=150, seed=11, snr_auditory=1.0, snr_semantic=1.0), str(root))
    return LebelDataset(root, DataConfig(root=str(root)))


@pytest.fixture(scope="module")
def oracle(sim):
    """Encoding from the planted drivers (spectral, categories) with permutation p-values: the 'full' scores."""
    participants = sim.participants()
    space = find_common_space(sim.root, "", participants)
    src = StimulusFeatures(FeatureConfig(), spaces=("spectral", "categories"))
    rows, scores = score_layers(sim, src, participants, sim.split()["train"], RidgeConfig(), space,
                                PermutationSettings(block=5, n_perm=500), "oracle")
    return src, space, rows, scores


def get(rows, **keys):
    (row,) = [r for r in rows if all(r[k] == v for k, v in keys.items())]
    return row


def test_permutation_null_voxels_not_significant_planted_are(sim, oracle):
    _, space, rows, scores = oracle
    for sub, vs in scores.items():
        aud, null = vs.region_mask("auditory"), vs.region_mask("null")
        snr = np.load(sim.root / "ground_truth" / sub / "snr.npy")
        best = np.flatnonzero(aud)[np.argmax(snr[aud])]                  # the most strongly planted voxel
        assert vs.p["spectral"][best] < 0.01 and vs.r["spectral"][best] > 0.5
        p_null = vs.p["spectral"][null]
        assert np.mean(p_null < 0.05) < 0.15 and np.median(p_null) > 0.3
        assert get(rows, subject=sub, layer="spectral", region="auditory")["frac_significant"] > 0.8
        assert get(rows, subject=sub, layer="spectral", region="null")["frac_significant"] < 0.1
        assert get(rows, subject=sub, layer="categories", region="semantic")["frac_significant"] > 0.8


class Spy:
    """Feature source that records the stories it is asked for."""

    def __init__(self, inner):
        self.inner, self.layers, self.asked = inner, inner.layers, []

    def story_features(self, ds, story):
        self.asked.append(story)
        return self.inner.story_features(ds, story)


def test_residual_alignment_drops_when_acoustics_removed(sim, oracle):
    src, space, _, full = oracle
    train = sim.split()["train"]
    spy = Spy(src)
    rs = ResidualFeatures(spy, StimulusFeatures(FeatureConfig(), spaces=("spectral",)), train)
    rs.fit(sim)
    assert sorted(spy.asked) == sorted(train)                          # the residualiser never sees the test story
    rows, resid = score_layers(sim, rs, sim.participants(), train, RidgeConfig(), space,
                               PermutationSettings(enabled=False), "oracle", "residual")
    assert {r["kind"] for r in rows} == {"residual"} and np.isnan(resid["sim01"].p["spectral"]).all()
    table = survival_table({"oracle": full}, {"oracle": resid}, THR, STATS)
    aud = get(table, layer="spectral", region="auditory", subject="pooled")
    assert aud["mean_a"] > 0.6 and aud["mean_b"] < 0.15 and aud["surviving"] < 0.2
    assert aud["ci_low"] > 0.4 and aud["p_holm"] < 1e-3                 # the drop carries a CI and a p-value
    sem = get(table, layer="categories", region="semantic", subject="pooled")
    assert sem["mean_b"] > 0.6 and sem["surviving"] > 0.6                # semantic alignment survives
    explained = rs.explained(sim, sim.cfg.test_story)
    assert explained["spectral"] > 0.95 and explained["categories"] < 0.5


class Noise:
    """Random features with the layer names of the oracle: the probes' floor."""

    layers = ["spectral", "categories"]

    def window_features(self, ds, story):
        n = len(ds.load_audio(story)) * 10 // 16000
        rng = np.random.default_rng(len(story))
        return (np.arange(n) + 1.0) / 10, {k: rng.normal(size=(n, 8)).astype(np.float32) for k in self.layers}


def test_probes_find_category_in_oracle_not_in_noise(sim):
    train, cfg = sim.split()["train"], ProbeSettings(sample_every=0.2, block_seconds=4.0)   # ~25 test blocks
    results = probe_layers(sim, StimulusWindows(("spectral", "categories")), train, cfg, "oracle")
    results += probe_layers(sim, Noise(), train, cfg, "noise")
    score = {(r.model, r.layer, r.target): r for r in results}
    cat, noise = score[("oracle", "categories", "category")], score[("noise", "categories", "category")]
    assert cat.score > 0.9 and cat.n_classes == len(vocabulary.CATEGORIES) and noise.score < noise.chance + 0.1
    assert score[("oracle", "spectral", "acoustic")].score > 0.9
    assert score[("noise", "spectral", "acoustic")].score < 0.1
    assert score[("oracle", "spectral", "phone")].score > 2 * score[("oracle", "spectral", "phone")].chance
    diff = get(compare_probes(results, "noise"), layer="categories", target="category")
    assert diff["ci_low"] > 0.5 and diff["p"] < 0.01
    assert all(r.ci_low <= r.score <= r.ci_high for r in results)
    with pytest.raises(ConfigError, match=rf"probes.test_stories: \['{train[0]}'\] are also training stories"):
        probe_layers(sim, Noise(), train, cfg, test_stories=[train[0]])
    with pytest.raises(ValueError, match="unknown"):
        probe_layers(sim, Noise(), train, ProbeSettings(targets=["syntax"]))

    class Broken(Noise):                                 # a model whose weights give NaN activations
        def window_features(self, ds, story):
            times, feats = super().window_features(ds, story)
            feats["categories"][3] = np.nan
            return times, feats
    with pytest.raises(DatasetError, match=rf"model 'broken': its features of story '{train[0]}' at layer\(s\) "
                                           r"\['categories'\] hold NaN"):
        probe_layers(sim, Broken(), train, cfg, "broken")


def test_bad_settings_name_the_field(sim, oracle, tiny_root, tmp_path):
    with pytest.raises(ConfigError, match=r"AnalyzeConfig.permutation.block=0"):
        run(AnalyzeConfig(permutation=PermutationSettings(block=0)))
    with pytest.raises(ConfigError, match=r"AnalyzeConfig.residual.spaces=\['mfcc'\]"):
        run(AnalyzeConfig(residual=ResidualSettings(spaces=["mfcc"])))
    src, space = oracle[0], oracle[1]
    with pytest.raises(ConfigError, match=r"^permutation.block: 40 TRs per block, but the test story 'wheretheressmoke' "
                                          r"has 50 rows \(.*respdict.json\), fewer than two blocks"):
        score_layers(sim, src, ["sim01"], sim.split()["train"], RidgeConfig(), space,
                     PermutationSettings(block=40), "oracle")
    with pytest.raises(DatasetError, match="ground_truth/meta.json"):
        category_map(LebelDataset(tiny_root))
    bad = tmp_path / "cats.json"
    bad.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="cats.json"):
        load_categories(str(bad))
    bad.write_text(json.dumps({"animals": ["dog"]}))
    assert load_categories(str(bad)) == {"animals": ["dog"]}


@pytest.mark.parametrize("over, match", [
    (dict(permutation=PermutationSettings(block=30)),
     r"^permutation.block: 30 TRs per block, but the test story 'wheretheressmoke' has 50 rows .* at most 25 TRs$"),
    (dict(ridge=RidgeConfig(cv=10_000)), r"^ridge.cv: 10000 folds, but the training stories \[.*\] hold \d+ rows"),
    (dict(residual=ResidualSettings(cv=10_000)), r"^residual.cv: 10000 folds, but the training stories hold \d+ rows"),
    (dict(probes=ProbeSettings(test_stories=["story01"])), r"^probes.test_stories: \['story01'\] are also training"),
    (dict(model=ModelConfig(family="whisper"), features=FeatureConfig(window=40.0)),
     r"^features.window: 40 s is longer than the Whisper model's maximum input of 30 s$"),
    (dict(features=FeatureConfig(layers=[7])), r"^features.layers: \[7\] out of range for a model with 3 hidden"),
], ids=["permutation-block", "ridge-cv", "residual-cv", "probe-test-story", "whisper-window", "layers"])
def test_settings_the_data_cannot_take_are_refused_before_features(sim, tmp_path, over, match):
    """Checked against the dataset's row counts in ``run`` before any feature is extracted or anything written."""
    from braintune_dist.errors import UserError
    assert "story01" in sim.split()["train"]
    cfg = AnalyzeConfig(data=DataConfig(root=str(sim.root)), out_dir=str(tmp_path / "out"),
                        tracking=TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"), **over)
    with pytest.raises(UserError, match=match) as err:
        run(cfg, log=lambda *a: None)
    assert isinstance(err.value, ConfigError)
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


def test_region_contrast_of_oracle_layers(oracle, tmp_path):
    _, _, _, scores = oracle
    rows = region_contrast_table({"oracle": scores}, THR, STATS)
    sem_layer = get(rows, layer="categories", subject="pooled", comparison="semantic - auditory")
    aud_layer = get(rows, layer="spectral", subject="pooled", comparison="semantic - auditory")
    assert sem_layer["diff"] > 0.5 and sem_layer["ci_low"] > 0.3 and sem_layer["p_holm"] < 1e-3
    assert aud_layer["diff"] < -0.2 and aud_layer["ci_high"] < 0
    fig = plot_region_contrast(rows, "t")
    ax1, ax2 = fig.axes
    assert "noise ceiling" in ax1.get_ylabel() and "layer" in ax2.get_xlabel() and ax2.get_legend() is not None


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A smaller dataset and a LoRA checkpoint with perturbed adapters (tuned on sim01) for the job."""
    base = tmp_path_factory.mktemp("analyze_job")
    root = simulate(SimConfig(participants=2, stories=2, trs_per_story=40, test_extra_trs=45, n_vertices=80, seed=5), str(base / "ds"))
    m, lora, head = ModelConfig(), LoraSettings(rank=4), HeadSettings()
    tuner = BrainTuner(m, lora, head, n_vertices=80)
    torch.manual_seed(0)
    for name, p in tuner.named_parameters():
        if "lora_B" in name:                       # zero at init: perturb so the tuned features differ
            torch.nn.init.normal_(p, std=0.5)
    ck = base / "checkpoint_a"
    save_model(ck, tuner, dict(config=dict(model=to_dict(m), lora=to_dict(lora), head=to_dict(head)),
                               n_vertices=80, participants=["sim01"], epoch=0, step=1))
    mark_complete(ck)
    return root, ck, base


def test_analyze_job_end_to_end(small, ray_local):
    root, ck, base = small
    sys.path.insert(0, str(REPO / "jobs"))
    import analyze                                 # the driver, through its CLI
    out, uri = base / "out", f"sqlite:///{base / 'mlflow.db'}"
    assert analyze.main(["--config", str(REPO / "jobs/configs/analyze/demo.yaml"), "--data.root", str(root),
                         "--data.val_stories", "[]", "--checkpoints", str(ck), "--features.window", "1.0",
                         "--features.stride", "1.0", "--features.cache_dir", "", "--features.device", "cpu",
                         "--ridge.alphas", "[1.0, 100.0, 10000.0]", "--permutation.block", "5",
                         "--permutation.n_perm", "200", "--stats.n_boot", "300", "--probes.sample_every", "1.0",
                         "--probes.min_count", "3", "--out_dir", str(out), "--tracking.uri", uri,
                         "--tracking.experiment", "analyze-test"]) == 0
    tables = {"alignment", "lowlevel_explained", "comparisons", "residual", "region_contrast", "probes",
              "probe_comparisons"}
    figures = {"region_contrast.png", "residual_alignment.png", "probes_per_layer.png"}
    assert {p.name for p in out.iterdir()} == {f"{t}.csv" for t in tables} | figures | {"feature_cache"}
    import csv
    with open(out / "comparisons.csv") as f:
        comp = list(csv.DictReader(f))
    assert {"diff", "ci_low", "ci_high", "p", "p_holm", "p_fdr"} <= set(comp[0])
    assert {r["subject"] for r in comp} == {"sim02"}                    # default: the held-out participant
    assert {r["comparison"] for r in comp} == {"checkpoint_a - untuned"} and {r["kind"] for r in comp} == {
        "full", "residual"}
    with open(out / "alignment.csv") as f:
        align = list(csv.DictReader(f))
    assert {r["model"] for r in align} == {"untuned", "checkpoint_a"}
    # every row's share of FDR-significant voxels is a count over its n_voxels (a region without voxels, NaN,
    # has no row here); whether they are right is checked on the planted drivers above
    for r in align:
        frac, n = float(r["frac_significant"]), int(r["n_voxels"])
        assert n > 0 and 0 <= frac <= 1 and abs(frac * n - round(frac * n)) < 1e-9, r
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("analyze-test").experiment_id])
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "analysis")}
    assert {f"analysis/{n}" for n in figures} | {f"analysis/{t}.csv" for t in tables} <= arts
    history = client.get_metric_history(run.info.run_id, "region_contrast.checkpoint_a")
    assert sorted(m.step for m in history) == [0, 1, 2]                # one point per layer
