"""Helpers of the small Ray Train fits on the ``sim_shards`` fixture (test_train_ray.py, test_deepspeed_driver.py):
a fit's config, and a watcher thread that acts once, as soon as a condition holds (to inject a fault mid-run)."""
from __future__ import annotations

import dataclasses
import threading
import time

from braintune_dist.config import from_dict
from braintune_dist.train.loop import FitConfig


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
