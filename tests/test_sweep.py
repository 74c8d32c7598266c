"""Sweeps on a real local Ray (CPU): Optuna + ASHA trials of Ray Train fits, nested MLflow runs, Tuner.restore,
and the same runs read back over HTTP from a real ``mlflow server``."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from braintune_dist.config import from_dict
from braintune_dist.sweep import SweepConfig, param_space, run, trial_config

pytestmark = pytest.mark.slow


def tiny_sweep(tmp: Path, **search) -> SweepConfig:
    """3 simulated participants × 3 stories, 1 Train worker, ≤ 2 steps per epoch, 2 epochs. ASHA is wired in but
    its grace period is the whole run: a trial it kills mid-fit was seen to starve the next trial on 2 cores."""
    return from_dict(SweepConfig, {
        "data": {"root": str(tmp / "sim"), "val_stories": ["story03"]}, "shards": str(tmp / "shards"),
        "prepare": {"simulate": True, "sim": {"participants": 3, "stories": 3, "trs_per_story": 36,
                                              "n_vertices": 60, "seed": 3},
                    "shard": {"window": 4.0, "audio_dtype": "float16"}},
        "stream": {"batch_size": 4}, "engine": {"kind": "ddp"},
        "train": {"epochs": 2, "patience": 0, "max_steps_per_epoch": 2},
        "ray": {"num_workers": 1, "cpus_per_worker": 0.5},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "sweep-test"},
        "eval": {"enabled": False},
        "search": {"space": {"lora_rank": [2, 4], "loss": ["mse", "spatial_corr"], "backbone_lr": [1e-4, 1e-2],
                             "head_lr": [1e-3, 1e-2], "stories_per_participant": [1, 2]},
                   "max_t": 2, "grace_period": 2, "reduction_factor": 2, "trial_cpus": 0.25,
                   "storage_path": str(tmp / "tune"), "name": "s", **search}})


def test_trial_config_applies_point():
    base = from_dict(SweepConfig, {"stream": {"participants": ["a", "b", "c"]}})
    from braintune_dist.multibrain import tune_part
    from braintune_dist.config import to_dict
    cfg = trial_config(to_dict(tune_part(base)), {"lora.rank": 16, "optim.backbone_lr": 3e-4,
                                                  "stream.n_participants": 2, "train.loss": "spatial_corr"})
    assert cfg.lora.rank == 16 and cfg.lora.alpha == base.lora.alpha * 16 / base.lora.rank
    assert cfg.stream.participants == ["a", "b"] and cfg.optim.backbone_lr == 3e-4 and cfg.train.loss == "spatial_corr"
    space = param_space(base.search.space)
    assert {"lora.rank", "train.loss", "optim.backbone_lr", "optim.head_lr"} <= set(space)
    with pytest.raises(ValueError):
        param_space(type(base.search.space)(backbone_lr=[1e-2, 1e-4]))


@pytest.fixture(scope="module")
def sweep(ray_local, tmp_path_factory):
    """A 2-trial sweep (resume after an interrupted driver is not tested yet: see the issue notes)."""
    tmp = tmp_path_factory.mktemp("sweep")
    second = run(tiny_sweep(tmp, num_samples=2))
    return dict(tmp=tmp, second=second)


def test_sweep_completes(sweep):
    rows = sweep["second"]["rows"]
    assert len(rows) == 2 and all(r["epochs"] >= 1 and not r["error"] for r in rows)
    for r in rows:                      # Optuna sampled within the space; ASHA's time attribute is the epoch count
        assert r["lora.rank"] in (2, 4) and 1e-4 <= r["optim.backbone_lr"] <= 1e-2 and 1 <= r["epochs"] <= 2


def test_sweep_runs_in_mlflow(sweep):
    import mlflow
    client = mlflow.tracking.MlflowClient(f"sqlite:///{sweep['tmp'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-test")
    parent = client.get_run(sweep["second"]["parent_run_id"])
    assert parent.data.tags["job"] == "sweep" and "best_val_loss" in parent.data.metrics
    assert parent.info.status == "FINISHED"
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(kids) == 2                                       # one per trial
    for k in kids:
        assert {"trial.lora_rank", "trial.loss", "trial.backbone_lr", "trial.head_lr", "trial.participants",
                "trial.stories_per_participant"} <= set(k.data.params)
        assert "epoch.val_loss" in k.data.metrics               # per-epoch, from the Train worker
    assert sum("val_loss" in k.data.metrics for k in kids) >= 1 # final, from trials that were not ASHA-stopped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_runs_over_mlflow_server(sweep):
    """A real ``mlflow server`` on the sweep's store answers runs/search with the parent and its trials."""
    port, db = _free_port(), sweep["tmp"] / "mlflow.db"
    mlflow_bin = str(Path(sys.executable).parent / "mlflow")
    # own session → own process group: the server's workers are killed with it, none is left behind
    proc = subprocess.Popen([mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "mlflow server exited"
                time.sleep(0.5)
        exps = json.load(urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=sweep-test"))
        body = json.dumps({"experiment_ids": [exps["experiment"]["experiment_id"]], "max_results": 100,
                           "filter": f"tags.mlflow.parentRunId = '{sweep['second']['parent_run_id']}'"}).encode()
        req = urllib.request.Request(url + "/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req, timeout=30))["runs"]
        assert len(runs) == 2
        params = {p["key"]: p["value"] for p in runs[0]["data"]["params"]}
        assert params["trial.lora_rank"] in ("2", "4")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
