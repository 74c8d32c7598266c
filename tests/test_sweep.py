"""Sweeps on a real local Ray (CPU): Optuna + ASHA trials of Ray Train fits, nested MLflow runs, and a sweep driver
(jobs/sweep.py) SIGKILLed after its first trial then resumed with --resume; the runs are read back over HTTP from a
real ``mlflow server``."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from braintune_dist.config import ConfigError, from_dict, save_yaml
from braintune_dist.jobs.sweep import SweepConfig, first_points, param_space, trial_config

from servers import MlflowServer, wait_for

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def tiny_sweep(tmp: Path, **search) -> SweepConfig:
    """3 simulated participants × 3 stories, 1 Train worker, ≤ 2 steps per epoch, 2 epochs; ASHA can stop a trial
    after its first epoch."""
    return from_dict(SweepConfig, {
        "fit": {"data": {"root": str(tmp / "sim"), "val_stories": ["story03"]}, "shards": str(tmp / "shards"),
                "stream": {"batch_size": 4}, "engine": {"kind": "ddp"},
                "train": {"epochs": 2, "patience": 0, "max_steps_per_epoch": 2},
                "ray": {"num_workers": 1, "cpus_per_worker": 0.5},
                "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "experiment": "sweep-test"}},
        "prepare": {"simulate": True, "sim": {"participants": 3, "stories": 3, "trs_per_story": 36,
                                              "n_vertices": 60, "seed": 3},
                    "shard": {"window": 4.0, "audio_dtype": "float16"}},
        "search": {"space": {"lora_rank": [2, 4], "loss": ["mse", "spatial_corr"], "backbone_lr": [1e-4, 1e-2],
                             "head_lr": [1e-3, 1e-2], "stories_per_participant": [1, 2]},
                   "max_t": 2, "grace_period": 1, "reduction_factor": 2, "trial_cpus": 0.25,
                   "storage_path": str(tmp / "tune"), "name": "s", **search}})


def test_trial_config_applies_point():
    base = from_dict(SweepConfig, {"fit": {"stream": {"participants": ["a", "b", "c"]}}})
    cfg = trial_config(base.fit, {"lora.rank": 16, "optim.backbone_lr": 3e-4,
                           "stream.n_participants": 2, "train.loss": "spatial_corr"})
    assert cfg.lora.rank == 16 and cfg.lora.alpha == base.fit.lora.alpha * 16 / base.fit.lora.rank
    assert cfg.stream.participants == ["a", "b"] and cfg.optim.backbone_lr == 3e-4 and cfg.train.loss == "spatial_corr"
    space = param_space(base.search.space)
    assert {"lora.rank", "train.loss", "optim.backbone_lr", "optim.head_lr"} <= set(space)
    with pytest.raises(ConfigError, match=r"search.space.backbone_lr: needs \[low, high\]"):
        type(base.search.space)(backbone_lr=[1e-2, 1e-4])
    with pytest.raises(ConfigError, match=r"x.yaml: search.space.loss: \['l1'\] not among"):
        from_dict(SweepConfig, {"search": {"space": {"loss": ["l1"]}}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: search.points_to_evaluate\[0\]: \['lr'\] not among"):
        from_dict(SweepConfig, {"search": {"points_to_evaluate": [{"lr": 1e-3}]}}, "x.yaml")
    given = from_dict(SweepConfig, {"search": {"points_to_evaluate": [{"loss": "spatial_corr"}]}})
    (point,) = first_points(given.search, given.fit)        # what a point leaves out: the base fit's values
    assert point == {"lora.rank": given.fit.lora.rank, "train.loss": "spatial_corr",
                     "optim.backbone_lr": given.fit.optim.backbone_lr, "optim.head_lr": given.fit.optim.head_lr}


def finished_trials(exp: Path) -> set[str]:
    """Trials that Tune's saved experiment state (what ``Tuner.restore`` reads) records as TERMINATED."""
    states = sorted(exp.glob("experiment_state-*.json"))
    try:
        trial_data = json.loads(states[-1].read_text())["trial_data"] if states else []
    except (OSError, ValueError, KeyError):                 # caught mid-write: look again later
        return set()
    return {t["trial_id"] for t in (json.loads(state) for state, _ in trial_data) if t["status"] == "TERMINATED"}


@pytest.fixture(scope="module")
def sweep(ray_address, tmp_path_factory):
    """A 3-trial sweep (one trial at a time) whose driver is SIGKILLed as soon as Tune's restore point records the
    first trial finished, then resumed with ``jobs/sweep.py --resume``. Both drivers join the session's Ray, as jobs
    do on a cluster: what a driver's trials hold is freed when its job ends, even a placement group that Ray Train's
    cleaner missed. The first points are given: the last one learns slowly (learning rates 100× and 10× smaller,
    half the stories), and training is seeded, so its val_r after one epoch is reproducibly far below the fast
    point's (about 0.005 against 0.03) and ASHA stops it there."""
    tmp = tmp_path_factory.mktemp("sweep")
    fast = {"lora_rank": 4, "loss": "mse", "backbone_lr": 1e-2, "head_lr": 1e-2, "stories_per_participant": 2}
    slow = {"lora_rank": 2, "backbone_lr": 1e-4, "head_lr": 1e-3, "stories_per_participant": 1}
    save_yaml(tiny_sweep(tmp, num_samples=3, points_to_evaluate=[fast, fast, slow]), tmp / "sweep.yaml")
    cmd = [sys.executable, str(REPO / "jobs" / "sweep.py"), "--config", str(tmp / "sweep.yaml")]
    env = dict(os.environ, RAY_ADDRESS=ray_address)
    exp = tmp / "tune" / "s"
    with open(tmp / "first.log", "w") as out:
        first = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while first.poll() is None and not finished_trials(exp) and time.time() < deadline:
            time.sleep(0.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
    killed_at, done_before = time.time(), finished_trials(exp)
    assert len(done_before) == 1, (tmp / "first.log").read_text()[-3000:]
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=800)
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-4000:]
    parent = (exp / "mlflow_parent_run_id").read_text().strip()
    return dict(tmp=tmp, exp=exp, killed_at=killed_at, done_before=done_before.pop(), log=log, parent=parent)


def trial_runs(sweep):
    import mlflow
    client = mlflow.tracking.MlflowClient(f"sqlite:///{sweep['tmp'] / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-test")
    return client, client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{sweep['parent']}'")


def test_resumed_sweep_runs_only_the_remaining_trials(sweep):
    assert f"[sweep] resuming MLflow parent run {sweep['parent']}" in sweep["log"]
    # one line per trial that ran after the resume, and none of Tune's 30-second status tables (--verbose shows them)
    assert len(re.findall(r"\[sweep\] trial \w+ finished after \d iteration\(s\): val_r", sweep["log"])) >= 2
    assert "Trial status" not in sweep["log"], sweep["log"][-3000:]
    _, kids = trial_runs(sweep)
    ids = sorted(k.data.tags["trial_id"] for k in kids)
    assert len(ids) == 3 and len(set(ids)) == 3          # 3 trials in all, one MLflow run each (a re-run reopens its own)
    killed_ms = sweep["killed_at"] * 1000
    for k in kids:
        results = [json.loads(line) for d in sweep["exp"].glob(f"*{k.data.tags['trial_id']}*")
                   for line in (d / "result.json").read_text().splitlines()]
        if k.data.tags["trial_id"] == sweep["done_before"]:        # finished before the kill: not run again
            assert k.info.end_time < killed_ms and [r["training_iteration"] for r in results] == [1, 2]
            assert all(r["timestamp"] < sweep["killed_at"] for r in results)
        else:                                                       # the remaining trials ran after the resume
            assert results and results[-1]["timestamp"] > sweep["killed_at"]


def trial_results(sweep) -> list[list[dict]]:
    """Each trial's reported results (one per epoch), trials in the order they started."""
    runs = [[json.loads(line) for line in (d / "result.json").read_text().splitlines()]
            for d in sweep["exp"].iterdir() if (d / "result.json").is_file()]
    return sorted((r for r in runs if r), key=lambda r: r[0]["timestamp"])


def test_asha_stops_a_trial_worse_at_its_first_rung(sweep):
    """Tune does not save ASHA's rungs in its restore point, so the resumed sweep's rungs start empty: the second
    trial runs alone through them; the third (the slow point) is below it at epoch 1, where the cutoff is the
    second's val_r, and ASHA stops it after that epoch."""
    first, second, third = trial_results(sweep)
    assert [r["training_iteration"] for r in first] == [r["training_iteration"] for r in second] == [1, 2]
    assert third[0]["val_r"] < second[0]["val_r"], (second, third)             # the premise of the stop
    assert [r["training_iteration"] for r in third] == [1], third
    assert all(-1 <= r["val_r"] <= 1 for t in (first, second, third) for r in t)


def test_sweep_completes(sweep):
    client, _ = trial_runs(sweep)
    import csv
    rows = list(csv.DictReader(open(client.download_artifacts(sweep["parent"], "sweep/trials.csv",
                                                              str(sweep["tmp"])))))
    assert len(rows) == 3 and not any(r["error"] for r in rows)
    assert sorted(int(r["epochs"]) for r in rows) == [1, 2, 2]                 # the trial ASHA stopped: 1 epoch
    assert all(-1 <= float(r["val_r"]) <= 1 for r in rows)     # trials ranked on the validation r, whatever the loss
    for r in rows:                      # Optuna sampled within the space; ASHA's time attribute is the epoch count
        assert r["lora.rank"] in ("2", "4") and 1e-4 <= float(r["optim.backbone_lr"]) <= 1e-2 and 1 <= int(r["epochs"]) <= 2


def test_sweep_runs_in_mlflow(sweep):
    client, kids = trial_runs(sweep)
    parent = client.get_run(sweep["parent"])
    assert parent.data.tags["job"] == "sweep" and "best_val_r" in parent.data.metrics
    assert parent.info.status == "FINISHED"                     # the resumed driver ended the reopened run
    assert len(kids) == 3                                       # one per trial
    statuses = {k.data.tags["trial_id"]: k.info.status for k in kids}
    (stopped,) = {t[0]["trial_id"] for t in trial_results(sweep) if len(t) == 1}   # ASHA stopped it after epoch 1
    # the stopped trial's run ends KILLED (by the trial on the stop, or by the sweep's parent when the trial's
    # process was killed first), never left RUNNING nor marked FAILED; the others ran to the end
    assert statuses == {t: "KILLED" if t == stopped else "FINISHED" for t in statuses}, (statuses, stopped)
    for k in kids:
        assert {"trial.lora_rank", "trial.loss", "trial.backbone_lr", "trial.head_lr", "trial.participants",
                "trial.stories_per_participant"} <= set(k.data.params)
        assert "epoch.val_loss" in k.data.metrics               # per-epoch, from the Train worker
        # final metrics come from a fit that returned: never from the stopped trial
        assert ("val_loss" in k.data.metrics) == (k.data.tags["trial_id"] != stopped), k.data.tags["trial_id"]


def test_finished_sweep_jobs_leave_no_resources_behind(sweep, ray_local):
    """Both drivers' jobs have ended (one killed, one done): every trial's actors and placement groups are gone,
    so the session's 2 CPUs are free for the next fit (a group left behind held 0.5 CPU, and a 2-worker fit then
    waited forever for a whole CPU for its data pipeline)."""
    from ray.util import placement_group_table
    wait_for(lambda: ray_local.available_resources().get("CPU", 0) >= 2, timeout=30, poll=0.5)
    live = [pg for pg in placement_group_table().values() if pg["state"] != "REMOVED"]
    assert ray_local.available_resources().get("CPU", 0) == 2 and not live, live


def test_sweep_runs_over_mlflow_server(sweep):
    """A real ``mlflow server`` on the sweep's store answers runs/search with the parent and its trials."""
    with MlflowServer(sweep["tmp"] / "mlflow.db") as server:
        url = server.url
        exps = json.load(urllib.request.urlopen(url + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=sweep-test"))
        body = json.dumps({"experiment_ids": [exps["experiment"]["experiment_id"]], "max_results": 100,
                           "filter": f"tags.mlflow.parentRunId = '{sweep['parent']}'"}).encode()
        req = urllib.request.Request(url + "/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        runs = json.load(urllib.request.urlopen(req, timeout=30))["runs"]
        assert len(runs) == 3
        params = {p["key"]: p["value"] for p in runs[0]["data"]["params"]}
        assert params["trial.lora_rank"] in ("2", "4")
