"""Scaling grid on a real local Ray (CPU): 1 data size × {single, multi} participant tuning → held-out
alignment, scaling table and figures in MLflow; plus the hours-to-match arithmetic."""
import math

import numpy as np
import pytest

from braintune_dist.config import ConfigError, from_dict
from braintune_dist.errors import UserError
from braintune_dist.jobs.scaling import ScalingJobConfig, hours_to_match, plot_scaling, point_config, run, scaling_table

from fits import tiny_job


def test_hours_to_match_interpolates():
    h, v = np.array([0.1, 0.2, 0.4]), np.array([0.2, 0.4, 0.6])
    assert hours_to_match(h, v, 0.5) == pytest.approx(0.3)
    assert hours_to_match(h, v, 0.1) == pytest.approx(0.1)             # already there at the first point
    assert math.isnan(hours_to_match(h, v, 0.7))                       # never reached


def _rows(model, values, hours=0.2):
    """Alignment rows of one model: layer rows {layer: {region: r/ceiling}} and a 2-point efficiency curve."""
    rows = [dict(kind="layer", model=model, layer=lay, region=reg, mean_r_norm=v, hours=hours, cv_mse=1 - regs["all"],
                 subject="s", n_voxels=10, mean_r=v)
            for lay, regs in values.items() for reg, v in regs.items()]     # CV error tracks 'all': same best layer
    best = max(values.values(), key=lambda regs: regs["all"])
    return rows + [dict(kind="efficiency", model=model, region=reg, hours=h, mean_r_norm=v * f)
                   for reg, v in best.items() for h, f in ((0.05, 0.5), (0.2, 1.0))]


def test_repeats_are_averaged_with_their_range(tmp_path):
    untuned = _rows("untuned", {1: {"all": 0.2, "semantic": 0.3}})
    points = [dict(mode="single", size=1, unit="stories", train_rows=60, label=f"single@1#{k}", repeat=k,
                   rows=_rows(f"single@1#{k}", {1: {"all": a, "semantic": s}, 2: {"all": a - 0.1, "semantic": 0.9}}))
              for k, (a, s) in enumerate([(0.3, 0.4), (0.2, 0.6)])]
    table = {r["region"]: r for r in scaling_table(untuned, points)}
    sem = table["semantic"]                # the headline: mean over layers 1 and 2: 0.65 and 0.75 for the repeats
    assert sem["repeats"] == 2 and sem["tuned"] == pytest.approx(0.7)
    assert (sem["tuned_min"], sem["tuned_max"]) == (pytest.approx(0.65), pytest.approx(0.75))
    # mean efficiency curve 0.25 → 0.5 over 0.05 → 0.2 h reaches the untuned 0.3 at 0.08 h
    assert sem["new_participant_hours"] == pytest.approx(0.05 + 0.05 / 0.25 * 0.15)
    figs = plot_scaling(list(table.values()))
    labels = figs[0].axes[0].get_legend_handles_labels()[1]
    assert any("range of 2 fits" in lab for lab in labels), labels


def test_point_config_repeats_change_the_seed_and_single_participant(tmp_path):
    cfg = tiny_scaling(tmp_path)
    cfg.grid.repeats = 2
    a, b = (point_config(cfg, "multi", 1, ["sim01", "sim02"], k) for k in (0, 1))
    assert b.train.seed == a.train.seed + 1 and a.ray.run_name != b.ray.run_name
    # replicates of one point: the same data subset and model; the seed they differ in also sets the data order
    # (build_trainer derives the stream's shuffle seed from it; test_train_ray.py checks the fits differ)
    assert a.stream == b.stream and a.model == b.model
    # 'single' cycles through the tuning participants over repeats, unless one is named
    assert [point_config(cfg, "single", 1, ["sim01", "sim02"], k).stream.participants for k in range(3)] == \
        [["sim01"], ["sim02"], ["sim01"]]
    cfg.grid.single_participant = "sim02"
    assert point_config(cfg, "single", 1, ["sim01", "sim02"], 0).stream.participants == ["sim02"]
    with pytest.raises(ConfigError, match=r"^x.yaml: grid.repeats: 0 must be >= 1"):   # no fits at all: refused
        from_dict(ScalingJobConfig, {"grid": {"repeats": 0}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"grid.single_participant: 'sim09' not in fit.stream.participants"):
        from_dict(ScalingJobConfig, {"fit": {"stream": {"participants": ["sim01"]}},
                                     "grid": {"single_participant": "sim09"}})


def tiny_scaling(tmp) -> ScalingJobConfig:
    d = tiny_job(tmp, "scaling-test")
    d["eval"]["efficiency_stories"] = [1, 2]
    # 2 CPUs hold both points: 2 × (0.25 point + 0.25 Train worker) leave Ray Data's read tasks a whole
    # CPU (else both fits wait for it forever)
    d["grid"] = {"unit": "stories", "sizes": [1], "modes": ["single", "multi"], "name": "grid", "max_concurrent": 2,
                 "storage_path": str(tmp / "tune")}
    return from_dict(ScalingJobConfig, d)


def test_point_config_selects_data(tmp_path):
    cfg = tiny_scaling(tmp_path)
    single = point_config(cfg, "single", 2, ["sim01", "sim02"])
    multi = point_config(cfg, "multi", 2, ["sim01", "sim02"])
    assert single.stream.participants == ["sim01"] and multi.stream.participants == ["sim01", "sim02"]
    assert single.stream.stories_per_participant == 2 and single.ray.run_name != multi.ray.run_name


def test_resume_with_nothing_to_restore_is_refused_before_any_work(tmp_path):
    cfg = tiny_scaling(tmp_path)
    cfg.grid.resume = True
    with pytest.raises(UserError, match=r"preflight: .*\n  - grid.resume: nothing to restore at .*tune/grid \(run once without it"):
        run(cfg)
    assert not (tmp_path / "sim").exists() and not (tmp_path / "shards").exists()


@pytest.mark.slow
def test_two_point_grid_runs_concurrently_makes_figures_and_resumes(ray_local, tmp_path):
    cfg = tiny_scaling(tmp_path)
    out = run(cfg)
    assert {p["label"] for p in out["points"]} == {"single@1", "multi@1"}
    single, multi = out["points"]
    # the two points (fit + evaluation) ran at the same time: each started before the other finished
    assert max(single["started"], multi["started"]) < min(single["finished"], multi["finished"]), out["points"]
    assert multi["train_rows"] > single["train_rows"] > 0             # the multi point saw more data
    for path in out["figures"].values():
        assert path.is_file() and path.stat().st_size > 10_000        # a real PNG, not an empty canvas
    regions = {r["region"] for r in out["table"]}
    assert "all" in regions and len(out["table"]) == 2 * len(regions)
    assert all(np.isfinite(r["tuned"]) and np.isfinite(r["untuned"]) for r in out["table"])
    import mlflow
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    arts = {a.path for a in client.list_artifacts(out["run_id"], "scaling")}
    assert {"scaling/scaling.csv", "scaling/scaling_alignment.png", "scaling/scaling_new_participant_data.png"} <= arts
    exp = client.get_experiment_by_name("scaling-test")
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert len(kids) == 2 and all("point.mode" in k.data.params for k in kids)
    # a resumed finished grid runs no point again and gives the same table under the same parent run
    cfg.grid.resume = True
    again = run(cfg)
    assert again["run_id"] == out["run_id"] and [p["started"] for p in again["points"]] == [
        p["started"] for p in out["points"]]
    assert again["table"] == out["table"]
