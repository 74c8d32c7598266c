"""Helpers of the small Ray Train fits: a fit's config on the ``sim_shards`` fixture (test_train_ray.py,
test_deepspeed_driver.py), the tiny simulate → fit → evaluate job of the grid tests (test_scaling.py,
test_compare.py), and a watcher thread that acts once, as soon as a condition holds (to inject a fault mid-run)."""
from __future__ import annotations

import dataclasses
import threading
import time

from braintune_dist.config import from_dict
from braintune_dist.train.config import FitConfig


def tune_cfg(sim_shards, tmp_path, **over) -> FitConfig:
    data, shards = sim_shards
    base = {"data": dataclasses.asdict(data), "shards": str(shards), "stream": {"batch_size": 4},
            "optim": {"backbone_lr": 1e-2, "head_lr": 1e-2, "warmup_frac": 0.0},
            "engine": {"kind": "ddp"}, "train": {"epochs": 2, "loss": "mse", "patience": 0},
            "ray": {"num_workers": 2, "cpus_per_worker": 0.5, "storage_path": str(tmp_path / "ray"),
                    "run_name": "t", "keep_checkpoints": 5},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(FitConfig, base)


def tiny_job(tmp, experiment: str) -> dict:
    """The fit, prepare and eval fields of a job that simulates 3 participants × 3 stories, tunes a tiny
    random-init model for 2 steps on sim01-02 and evaluates sim03 in its own process (the feature actors and ridge
    tasks are tested in test_evaluate_cluster.py, the surface maps in test_alignment.py and test_maps.py)."""
    return {
        "fit": {"data": {"root": str(tmp / "sim"), "val_stories": ["story03"]}, "shards": str(tmp / "shards"),
                "stream": {"batch_size": 4, "participants": ["sim01", "sim02"]},     # sim03 is held out
                "engine": {"kind": "ddp"}, "optim": {"backbone_lr": 1e-2, "head_lr": 1e-2, "warmup_frac": 0.0},
                "train": {"epochs": 1, "patience": 0, "max_steps_per_epoch": 2},
                "ray": {"num_workers": 1, "cpus_per_worker": 0.25, "storage_path": str(tmp / "ray")},
                "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": experiment}},
        "prepare": {"simulate": True, "sim": {"participants": 3, "stories": 3, "trs_per_story": 36,
                                              "n_vertices": 60, "seed": 3},
                    "shard": {"window": 4.0, "audio_dtype": "float16"}},
        "eval": {"features": {"window": 2.0, "stride": 1.0, "pool": "stride"}, "ridge": {"alphas": [1.0, 100.0, 1e4]},
                 "efficiency_stories": [], "out_dir": str(tmp / "reports"), "compute": {"runner": "local"},
                 "maps": {"enabled": False}}}


def when(condition, action, done: threading.Event, poll: float = 0.2) -> threading.Thread:
    """Run ``action()`` once, as soon as ``condition()`` holds (checked every ``poll`` s until ``done``)."""
    def watch():
        while not done.is_set():
            if condition():
                action()
                return
            time.sleep(poll)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t
