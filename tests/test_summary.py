"""The papers' headline metric on hand-made voxel scores: layer averages, the SE's unit, the test against the
untuned model, and the secondary best-layer lines (both layers named, ties flagged)."""
import numpy as np
import pytest

from braintune_dist.errors import UserError
from braintune_dist.evaluate.encoding import VoxelScores
from braintune_dist.evaluate.summary import (at_layers, best_layer_notes, control_contrast, format_contrast,
                                             format_summary, group_of, layer_mean_rows,
                                             mean_layers, summary_table)

REGIONS = np.array(["semantic"] * 40 + ["auditory"] * 40)
CEILING = np.full(80, 0.8)


def scores_of(r_by_layer: dict, participant="s1", cv=None, noise=0.0, seed=0) -> VoxelScores:
    """VoxelScores whose r at each layer is the given value (+ noise), on 40 semantic and 40 auditory voxels."""
    rng = np.random.default_rng(seed)
    vs = VoxelScores(participant, REGIONS, CEILING)
    for lay, (sem, aud) in r_by_layer.items():
        vs.r[lay] = np.r_[np.full(40, sem), np.full(40, aud)] + noise * rng.standard_normal(80)
        vs.p[lay] = np.full(80, np.nan)
        vs.cv_mse[lay] = np.full(80, (cv or {}).get(lay, 1.0)) + 1e-3 * rng.standard_normal(80)
    return vs


def test_layers_default_to_the_transformer_layers_and_refuse_missing_ones():
    assert mean_layers([0, 1, 2, 3], []) == [1, 2, 3]
    assert mean_layers(["spectral", "categories"], []) == ["spectral", "categories"]
    assert mean_layers([0, 1, 2, 3], [2, 3]) == [2, 3]
    with pytest.raises(UserError, match=r"eval.layers: \[7\] not among the evaluated layers \[0, 1, 2\]"):
        mean_layers([0, 1, 2], [2, 7])
    assert group_of("brain-tuned-s12") == "brain-tuned" and group_of("other-seed") == "other-seed"


def test_seeds_are_the_replicate_unit_and_the_test_is_over_them():
    """3 seeds whose layer-averaged semantic alignment is +0.04, +0.05, +0.06 above untuned (r / 0.8); auditory
    unchanged. The headline averages layers 1-2 (layer 0, the CNN output, would shift it if included)."""
    untuned = scores_of({0: (0.0, 0.0), 1: (0.40, 0.60), 2: (0.48, 0.52)}, noise=0.01)
    scores = {"untuned": {"s1": untuned}}
    for k, gain in enumerate((0.032, 0.040, 0.048)):               # r gain; / ceiling 0.8 → 0.04, 0.05, 0.06
        scores[f"tuned-s{k}"] = {"s1": scores_of({0: (0.9, 0.9), 1: (0.40 + gain, 0.60), 2: (0.48 + gain, 0.52)},
                                                 noise=0.01, seed=k + 1)}
    table = summary_table(scores, [1, 2], threshold=0.4)
    row = {(r["model"], r["region"]): r for r in table}
    t = row[("tuned", "semantic")]
    assert t["n_seeds"] == 3 and t["se_over"] == "seeds" and t["layers"] == "mean(1,2)"
    assert t["mean"] == pytest.approx(0.55 + 0.05, abs=0.005)          # (0.40 + 0.48) / 2 / 0.8 = 0.55 untuned
    assert t["diff"] == pytest.approx(0.05, abs=0.005) and t["diff_over"] == "seeds"
    assert t["diff_se"] == pytest.approx(0.01 / np.sqrt(3), rel=0.2)     # SD of 0.04, 0.05, 0.06 over √3
    assert t["test"] == "t-test over seeds" and t["p"] < 0.05
    assert abs(row[("tuned", "auditory")]["diff"]) < 0.005 and row[("tuned", "auditory")]["p"] > 0.05
    u = row[("untuned", "semantic")]
    assert u["se_over"] == "voxels" and np.isnan(u["diff"]) and u["mean"] == pytest.approx(0.55, abs=0.005)
    text = "\n".join(format_summary(table, ["s1"]))
    assert "layers 1,2 " in text and "tuned (3 seeds): 0.600" in text and "Δ +0.050" in text, text


def test_one_model_several_participants_uses_participants():
    scores = {m: {s: scores_of({1: (v + d, v)}, participant=s, noise=0.01, seed=i)
                  for i, (s, d) in enumerate((("a", 0.0), ("b", 0.02), ("c", 0.04)))}
              for m, v in (("untuned", 0.4), ("tuned", 0.5))}
    row = {(r["model"], r["region"]): r for r in summary_table(scores, [1], 0.4)}[("tuned", "semantic")]
    assert row["se_over"] == "participants" and row["diff_over"] == "participants"
    assert row["diff"] == pytest.approx(0.1 / 0.8, abs=0.005) and row["test"] == "paired t-test over participants"


def test_layer_mean_rows_and_at_layers_average_the_table():
    rows = [dict(model="m", kind="layer", layer=lay, subject=s, region="all", n_voxels=5, mean_r=v, mean_r_norm=v,
                 cv_mse=1.0) for s in ("a", "b") for lay, v in ((0, 0.9), (1, 0.2), (2, 0.4))]
    lm = layer_mean_rows(rows, [1, 2])
    assert [(r["subject"], r["layer"], r["mean_r_norm"]) for r in lm] == [("a", "mean(1,2)", pytest.approx(0.3)),
                                                                         ("b", "mean(1,2)", pytest.approx(0.3))]
    assert at_layers(rows) == {"m/all": pytest.approx(0.3)}           # layer 0 left out by default


def test_best_layer_notes_name_both_layers_and_flag_ties():
    """untuned is best at layer 1 and tuned at layer 2 by a clear CV margin; 'tied' has two layers within noise."""
    rows, scores = [], {}
    for model, cv in (("untuned", {1: 0.90, 2: 0.95}), ("tuned", {1: 0.95, 2: 0.90}), ("tied", {1: 0.9000, 2: 0.9001})):
        vs = scores_of({1: (0.4, 0.4), 2: (0.6, 0.4)}, cv=cv, seed=3)
        scores[model] = {"s1": vs}
        for lay in (1, 2):
            for region in vs.region_names():
                rows.append(dict(model=model, kind="layer", layer=lay, subject="s1", region=region,
                                 cv_mse=float(np.mean(vs.cv_mse[lay])),
                                 mean_r_norm=float(np.nanmean(vs.r_norm(lay, 0.4)[vs.region_mask(region)]))))
    lines = best_layer_notes(rows, scores)
    assert "untuned 1, tuned 2, tied 1" in lines[0], lines
    # at the common layer (untuned's best, 1) the two models are equal: no layer-switch gain
    assert any("tuned − untuned, both at layer 1 (untuned's best): all +0.000" in x for x in lines), lines
    warned = [x for x in lines if "warning" in x]
    assert len(warned) == 1 and "tied's layers" in warned[0], lines


def test_brain_tuned_against_its_control_over_seeds():
    """brain-tuned seeds at +0.05 ± noise over shuffled-tuned ones on semantic voxels: Welch's test over seeds
    finds it; on auditory voxels (equal) it does not."""
    scores = {}
    for k in range(3):
        for group, gain in (("brain-tuned", 0.04 + 0.004 * k), ("shuffled-tuned", 0.004 * (k - 1))):
            scores[f"{group}-s{k}"] = {"s1": scores_of({1: (0.4 + gain, 0.5)}, noise=0.01, seed=10 * k + len(group))}
    rows = {r["region"]: r for r in control_contrast(scores, [1], 0.4)}
    sem, aud = rows["semantic"], rows["auditory"]
    assert sem["test"] == "Welch t-test over seeds" and sem["n_a"] == sem["n_b"] == 3
    assert sem["diff"] == pytest.approx(0.04 / 0.8, abs=0.01) and sem["p"] < 0.01
    assert abs(aud["diff"]) < 0.01 and aud["p"] > 0.05
    lines = format_contrast([sem, aud])
    assert "is higher than its control" in lines[0] and "is not told apart from its control" in lines[1], lines
    assert control_contrast({k: v for k, v in scores.items() if k.startswith("brain")}, [1], 0.4) == []


def test_headline_layers_must_be_extracted():
    from braintune_dist.config import ConfigError, from_dict
    from braintune_dist.evaluate.config import EvalSettings
    with pytest.raises(ConfigError, match=r"eval.layers: \[9\] are not extracted \(eval.features.layers \[2, 5\]\)"):
        from_dict(EvalSettings, {"layers": [2, 9], "features": {"layers": [2, 5]}})
    assert from_dict(EvalSettings, {"layers": [5], "features": {"layers": [2, 5]}}).layers == [5]


def test_control_contrast_is_the_difference_of_the_table_means():
    """With several participants of unequal voxel counts, brain − control equals the headline table's difference
    (both average each participant's voxel mean, then participants)."""
    def per_sub(gain, seed):
        return {s: scores_of({1: (0.4 + gain + 0.05 * i, 0.5)}, participant=s, noise=0.02, seed=seed + i)
                for i, s in enumerate(("a", "b"))}
    scores = {f"{g}-s{k}": per_sub(gain + 0.002 * k, 10 * k + j)
              for k in range(2) for j, (g, gain) in enumerate((("brain-tuned", 0.04), ("shuffled-tuned", 0.0)))}
    for per in scores.values():                       # participant b has 30 semantic voxels, a has 40
        per["b"].regions = np.r_[np.full(30, "semantic"), np.full(50, "auditory")]
    table = {(r["model"], r["region"]): r["mean"] for r in summary_table(scores, [1], 0.4)}
    row = {r["region"]: r for r in control_contrast(scores, [1], 0.4)}["semantic"]
    assert row["diff"] == pytest.approx(table[("brain-tuned", "semantic")] - table[("shuffled-tuned", "semantic")])
