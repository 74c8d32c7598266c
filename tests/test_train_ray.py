"""Brain-tuning on a real local Ray (CPU, loopback): DDP and DeepSpeed ZeRO-2 on 2 workers, resume, and
surviving faults: a DeepSpeed worker SIGKILLed mid-epoch, the driver interrupted, the MLflow server dying mid-run, a
broken checkpoint to resume."""
import dataclasses
import json
import os
import threading
import time
import urllib.request
import warnings

import numpy as np
import pytest

from braintune_dist.config import from_dict
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.evaluate.report import EvalSettings
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run
from braintune_dist.jobs.prepare_data import PrepareSettings
from braintune_dist.jobs.preflight import RAY_SNAPSHOT, PreflightError
from braintune_dist.tracking import Tracker
from braintune_dist.train.checkpoint import load_tuner, read_model_file
from braintune_dist.train.loop import FitConfig, weights_checksum
from braintune_dist.train.trainer import build_trainer, fit_with_progress, plan

from servers import MlflowServer, own_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "ds"
    simulate(SimConfig(participants=3, stories=3, trs_per_story=36, n_vertices=60, seed=3), str(root))
    data = DataConfig(root=str(root), val_stories=["story03"])
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(ShardConfig(window=4.0, audio_dtype="float16"), data, str(out))
    return data, out


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


def history(result):
    """Reported metrics of every kept checkpoint, in epoch order."""
    return sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])


def test_feature_stats_are_computed_once_per_storage(sim_shards, tmp_path, monkeypatch):
    """The head's input statistics are saved under the run storage: another process (a sweep trial, a rerun) with
    the same model and data reads them back; other data, or a damaged file, makes them be computed again."""
    from braintune_dist.train import trainer
    cfg = tune_cfg(sim_shards, tmp_path)
    trainer._STATS.clear()
    mean, sd = trainer.feature_stats(cfg)
    (saved,) = (tmp_path / "ray" / "feature_stats").glob("*.npz")
    assert mean.ndim == 1 and mean.shape == sd.shape and np.all(sd > 0)

    computed = []
    monkeypatch.setattr(trainer, "_feature_stats", lambda c: computed.append(c) or (mean + 1, sd))
    trainer._STATS.clear()                                      # as in a new process
    again = trainer.feature_stats(cfg)
    assert not computed and np.array_equal(again[0], mean) and np.array_equal(again[1], sd)
    trainer.feature_stats(tune_cfg(sim_shards, tmp_path, stream={"n_participants": 2}))   # other data: other key
    assert len(computed) == 1 and len(list(saved.parent.glob("*.npz"))) == 2
    saved.write_bytes(saved.read_bytes()[:100])                 # cut short
    trainer._STATS.clear()
    assert np.array_equal(trainer.feature_stats(cfg)[0], mean + 1) and len(computed) == 2   # computed, rewritten
    with np.load(saved) as f:
        assert np.array_equal(f["mean"], mean + 1)
    trainer._STATS.clear()                                      # the fake values stay out of the other tests


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


def checkpoints_registered(run_dir) -> int:
    """Checkpoints Ray Train has registered (what a restart restores from), per its snapshot file."""
    try:
        return len(json.loads((run_dir / RAY_SNAPSHOT).read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):            # not written yet, or caught mid-write
        return 0


def test_ddp_two_workers_learn_while_the_mlflow_server_dies(ray_local, sim_shards, tmp_path):
    """DDP on 2 workers learns (loss falls, the schedule is the steps taken, one driver line per epoch) while the
    real `mlflow server` it logs to is killed after epoch 0 was logged: training finishes, the driver warns once,
    logging calls stay short, and after a restart on the same store everything logged before the outage is there."""
    server = MlflowServer(tmp_path / "mlflow.db").start()
    cfg = tune_cfg(sim_shards, tmp_path, tracking={"uri": server.url, "experiment": "outage", "pause_after_failure": 2.0})
    p = plan(cfg)
    assert p["participants"] == ["sim01", "sim02", "sim03"] and p["coverage"].shape == (3, 60)
    done, lines = threading.Event(), []
    try:
        tracker = Tracker(cfg.tracking)
        with tracker.start("outage", params={"phase": "before the outage"}) as tr:
            run_id = tr.run_id

            def epoch0_logged() -> bool:
                try:
                    with urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=5) as r:
                        return any(m["key"] == "epoch.val_loss" for m in json.load(r)["run"]["data"].get("metrics", []))
                except OSError:
                    return False

            when(epoch0_logged, server.kill, done)
            result = fit_with_progress(build_trainer(cfg, mlflow_run_id=run_id), lines.append)   # rank 0 logs to it
            assert server.proc.poll() is not None                               # it did die mid-run
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t = time.time()
                for i in range(5):
                    tr.log_metrics({"after_outage": i}, step=i)
                tr.set_tags({"outage": "yes"})
                calls = time.time() - t
            assert len([w for w in caught if "MLflow" in str(w.message)]) == 1, [str(w.message) for w in caught]
            assert calls < 15                               # MLflow's own retries would take ≈ 4 min per call
            server.start()                                  # same port, same sqlite store
            time.sleep(cfg.tracking.pause_after_failure)
            tr.log_metrics({"after_restart": 1.0})          # logging resumes once the pause is over
        from mlflow.tracking import MlflowClient
        client = MlflowClient(server.url)
        got = client.get_run(run_id)
        assert got.data.params["phase"] == "before the outage" and got.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run_id, "epoch.val_loss")] == [0]   # logged before: kept
        assert "after_restart" in got.data.metrics and "after_outage" not in got.data.metrics
        h = history(result)
        assert [m["epoch"] for m in h] == [0, 1]
        assert h[1]["epoch_seconds"] < 60                   # the worker's failed logging call was bounded too
        # the driver printed one line per epoch (the workers' own output stays in Ray's logs)
        assert [line.split(":")[0] for line in lines] == ["[train] epoch 0", "[train] epoch 1"], lines
        assert h[-1]["step"] == p["total_steps"] == 2 * p["steps_per_epoch"]      # schedule = steps taken
        assert h[1]["train_loss"] < h[0]["train_loss"]                            # loss decreases
        assert 0 < h[0]["peak_rss_mb"] <= h[1]["peak_rss_mb"] <= h[1]["peak_rss_mb_max"]   # a peak only grows
        assert 0 < h[1]["rss_anon_mb"] <= h[1]["peak_rss_mb"]
        payload = read_model_file(result.checkpoint.path)
        assert payload["participants"] == p["participants"] and payload["epoch"] == 1
    finally:
        done.set()
        server.kill()


def snapshot_history(run_dir) -> list[dict]:
    """Metrics of every checkpoint Ray Train registered for a run (its snapshot file), in epoch order."""
    results = json.loads((run_dir / RAY_SNAPSHOT).read_text())["checkpoint_results"]
    return sorted(({**r["metrics"], "path": run_dir / r["checkpoint_dir_name"]} for r in results),
                  key=lambda m: m["epoch"])


def test_deepspeed_driver_survives_a_killed_worker_then_ctrl_c_and_resumes(ray_address, sim_shards, tmp_path, capsys):
    """The real driver (jobs/multi_brain.py, joining the session's Ray as a submitted job does), DeepSpeed ZeRO-2 on
    2 workers:

    - a worker SIGKILLed from outside during epoch 1: FailureConfig restarts the worker group from the epoch-0
      checkpoint (weights, and the engine's optimizer, scheduler and step from its ZeRO shards), epoch 0 not redone;
    - then the driver interrupted (SIGINT): exit status 130, a message naming what was kept and the rerun that
      resumes it, and its MLflow run KILLED rather than FINISHED;
    - that rerun with the latest checkpoint broken is refused by the preflight, before any Ray Train start;
    - with it whole, the rerun (the driver's ``main``, in this process) resumes the checkpoints and reopens the same
      MLflow run, which finishes."""
    import runpy
    import signal
    import subprocess
    import sys

    import mlflow
    import yaml

    from braintune_dist.config import to_dict
    fit = tune_cfg(sim_shards, tmp_path, stream={"batch_size": 2}, engine={"kind": "deepspeed", "zero_stage": 2},
                   ray={"run_name": "sigint", "max_failures": 1}, train={"epochs": 20})
    p = plan(fit)
    job = MultiBrainConfig(fit=fit, prepare=PrepareSettings(simulate=False), eval=EvalSettings(enabled=False))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(to_dict(job)))
    run_dir, killed, done = tmp_path / "ray" / "sigint", [], threading.Event()

    def kill_a_worker():
        for proc in own_processes("ray::RayTrainWorker"):       # the session's Ray is this process's child
            proc.kill()                                                         # SIGKILL: no clean-up in the worker
            killed.append(proc.pid)
            return

    proc = subprocess.Popen([sys.executable, "jobs/multi_brain.py", "--config", str(tmp_path / "job.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, RAY_ADDRESS=ray_address))
    when(lambda: checkpoints_registered(run_dir) >= 1, kill_a_worker, done)
    try:        # epoch 1 done after the restart: interrupt
        deadline = time.time() + 300
        while checkpoints_registered(run_dir) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        done.set()
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert killed and proc.returncode == 130, err[-4000:]
    assert "interrupted: stopped before the job finished (its MLflow run is marked KILLED)" in err, err[-3000:]
    assert f"kept: checkpoints of every epoch under {run_dir}: rerun with --fit.ray.run_name sigint" in err, err[-3000:]
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"], [(r.info.run_name, r.info.status) for r in runs]
    killed_run = runs[0].info.run_id

    h = snapshot_history(run_dir)
    kept = len(h)
    assert [m["epoch"] for m in h] == list(range(kept)) and 2 <= kept < 20
    assert h[0]["start_epoch"] == 0                                             # the first attempt
    assert h[1]["start_epoch"] == 1 and h[1]["start_step"] == p["steps_per_epoch"]   # restored, epoch 0 not redone
    files = {f.name for f in h[0]["path"].rglob("*")}
    assert {"model.pt", "COMPLETE"} <= files and any("optim_states" in f for f in files)   # ZeRO shards saved
    assert h[1]["start_checksum"] == pytest.approx(weights_checksum(load_tuner(h[0]["path"])[0]), rel=1e-6)

    latest = run_dir / json.loads((run_dir / RAY_SNAPSHOT).read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
    (latest / "model.pt").rename(tmp_path / "model.pt")                        # as an interrupted copy would leave it
    before, t = sorted(run_dir.iterdir()), time.time()
    with pytest.raises(PreflightError, match=f"would resume from a broken checkpoint.*{latest.name}.*missing model.pt"):
        run(job, log=lambda *_: None)
    assert time.time() - t < 20 and sorted(run_dir.iterdir()) == before         # refused before Ray Train started
    (tmp_path / "model.pt").rename(latest / "model.pt")

    # one more epoch than were kept (the remaining 20 would take minutes here)
    capsys.readouterr()
    main = runpy.run_path("jobs/multi_brain.py")["main"]
    epochs = kept + 1
    assert main(["--config", str(tmp_path / "job.yaml"), "--fit.train.epochs", str(epochs)]) == 0
    out = capsys.readouterr().out
    assert f"resuming MLflow parent run {killed_run}" in out, out[-3000:]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(killed_run, "FINISHED")]
    # one history holding every epoch (the killed driver may have logged epochs whose checkpoint it never registered)
    assert set(range(epochs)) <= {m.step for m in client.get_metric_history(killed_run, "epoch.train_loss")}
    h = snapshot_history(run_dir)
    assert [m["epoch"] for m in h] == list(range(epochs))
    assert all(m["start_epoch"] == kept for m in h[kept:])                      # not started over
    assert h[-1]["step"] == epochs * p["steps_per_epoch"]


def test_non_finite_loss_stops_the_run_with_an_error(ray_local, sim_shards, tmp_path):
    """One voxel at 1e30: the reader refuses it by default (naming file and voxel); let through on purpose
    (data.max_abs_response raised), the loss is inf and the fit stops after that epoch with one clear error
    instead of reporting success."""
    import h5py
    import shutil

    from braintune_dist.data.lebel import DatasetError, LebelDataset
    from braintune_dist.train.trainer import NonFiniteLossError
    data, _ = sim_shards
    root = tmp_path / "ds"
    shutil.copytree(data.root, root)
    j = int(np.flatnonzero(np.load(root / "ground_truth" / "sim02" / "voxel_to_vertex.npy") >= 0)[0])  # in the shards
    with h5py.File(root / "derivative" / "preprocessed_data" / "sim02" / "story01.hf5", "r+") as f:
        f["data"][3, j] = 1e30
    with pytest.raises(DatasetError, match=rf"sim02/story01.hf5: 'data' holds 1e\+30 \(voxel {j}\).*max_abs_response"):
        LebelDataset(root, dataclasses.replace(data, root=str(root))).load_responses("sim02", "story01")
    loose = dataclasses.replace(data, root=str(root), max_abs_response=1e31)
    write_shards(ShardConfig(window=4.0), loose, str(tmp_path / "shards"))
    cfg = tune_cfg((loose, tmp_path / "shards"), tmp_path, ray={"num_workers": 1, "run_name": "inf"},
                   train={"epochs": 3})
    with pytest.raises(NonFiniteLossError, match=r"stopped in epoch 0: train_loss inf.*max_abs_response"):
        fit_with_progress(build_trainer(cfg), log=lambda *_: None)
