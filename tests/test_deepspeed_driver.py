"""The real driver (jobs/multi_brain.py) with DeepSpeed ZeRO-2 on 2 workers of the session's Ray: a worker
SIGKILLed mid-run, the driver interrupted, a broken checkpoint refused, and the rerun that resumes."""
import os
import threading
import time

import pytest

from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.experiment.compat import train_checkpoints
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run
from braintune_dist.experiment.prepare import PrepareSettings
from braintune_dist.experiment.preflight import PreflightError
from braintune_dist.train.checkpoint import load_tuner
from braintune_dist.train.loop import weights_checksum
from braintune_dist.train.plan import plan

from fits import tune_cfg, when
from servers import own_processes

pytestmark = pytest.mark.slow


def checkpoints_registered(run_dir) -> int:
    """Checkpoints Ray Train has registered (what a restart restores from), per its snapshot file."""
    try:
        return len((train_checkpoints(run_dir) or {"checkpoints": []})["checkpoints"])
    except ValueError:                                  # caught mid-write
        return 0


def snapshot_history(run_dir) -> list[dict]:
    """Metrics of every checkpoint Ray Train registered for a run (its snapshot file), in epoch order."""
    results = train_checkpoints(run_dir)["checkpoints"]
    return sorted(({**r["metrics"], "path": run_dir / r["dir"]} for r in results),
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
    assert h[1]["start_epoch"] == 1 and h[1]["start_step"] == p.steps_per_epoch   # restored, epoch 0 not redone
    files = {f.name for f in h[0]["path"].rglob("*")}
    assert {"model.safetensors", "model.json", "COMPLETE"} <= files and any("optim_states" in f for f in files)   # ZeRO shards saved
    assert h[1]["start_checksum"] == pytest.approx(weights_checksum(load_tuner(h[0]["path"])[0]), rel=1e-6)

    latest = run_dir / train_checkpoints(run_dir)["latest"]
    (latest / "model.json").rename(tmp_path / "model.json")                    # as an interrupted copy would leave it
    before, t = sorted(run_dir.iterdir()), time.time()
    with pytest.raises(PreflightError, match=f"would resume from a broken checkpoint.*{latest.name}.*missing model.json"):
        run(job, log=lambda *_: None)
    assert time.time() - t < 20 and sorted(run_dir.iterdir()) == before         # refused before Ray Train started
    (tmp_path / "model.json").rename(latest / "model.json")

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
    assert h[-1]["step"] == epochs * p.steps_per_epoch
