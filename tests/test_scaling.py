"""Scaling grid on a real local Ray (CPU): 1 data size × {single, multi} participant tuning → held-out
alignment, scaling table and figures in MLflow; plus the hours-to-match arithmetic."""
import math

import numpy as np
import pytest

from braintune_dist.config import from_dict
from braintune_dist.scaling import ScalingJobConfig, hours_to_match, point_config, run


def test_hours_to_match_interpolates():
    h, v = np.array([0.1, 0.2, 0.4]), np.array([0.2, 0.4, 0.6])
    assert hours_to_match(h, v, 0.5) == pytest.approx(0.3)
    assert hours_to_match(h, v, 0.1) == pytest.approx(0.1)             # already there at the first point
    assert math.isnan(hours_to_match(h, v, 0.7))                       # never reached


def tiny_scaling(tmp) -> ScalingJobConfig:
    return from_dict(ScalingJobConfig, {
        "data": {"root": str(tmp / "sim"), "val_stories": ["story03"]}, "shards": str(tmp / "shards"),
        "prepare": {"simulate": True, "sim": {"participants": 3, "stories": 3, "trs_per_story": 36,
                                              "n_vertices": 60, "seed": 3},
                    "shard": {"window": 4.0, "audio_dtype": "float16"}},
        "stream": {"batch_size": 4, "participants": ["sim01", "sim02"]},     # sim03 is held out
        "engine": {"kind": "ddp"}, "optim": {"backbone_lr": 1e-2, "head_lr": 1e-2, "warmup_frac": 0.0},
        "train": {"epochs": 1, "patience": 0, "max_steps_per_epoch": 2},
        "ray": {"num_workers": 1, "cpus_per_worker": 0.5, "storage_path": str(tmp / "ray")},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "scaling-test"},
        "eval": {"features": {"window": 2.0, "stride": 1.0}, "ridge": {"alphas": [1.0, 100.0, 10000.0]},
                 "efficiency_stories": [1, 2], "out_dir": str(tmp / "reports")},
        "grid": {"unit": "stories", "sizes": [1], "modes": ["single", "multi"], "name": "grid"}})


def test_point_config_selects_data(tmp_path):
    cfg = tiny_scaling(tmp_path)
    single = point_config(cfg, "single", 2, ["sim01", "sim02"])
    multi = point_config(cfg, "multi", 2, ["sim01", "sim02"])
    assert single.stream.participants == ["sim01"] and multi.stream.participants == ["sim01", "sim02"]
    assert single.stream.stories_per_participant == 2 and single.ray.run_name != multi.ray.run_name


@pytest.mark.slow
def test_two_point_grid_makes_figures(ray_local, tmp_path):
    out = run(tiny_scaling(tmp_path))
    assert {p["label"] for p in out["points"]} == {"single@1", "multi@1"}
    single, multi = out["points"]
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
