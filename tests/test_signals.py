"""SIGTERM (``kill``, a scheduler's preemption) stops a job driver as Ctrl-C does: exit status 143, its MLflow run
KILLED rather than left RUNNING, and the message that says what was kept."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_sigterm_stops_the_evaluate_driver_like_ctrl_c(tiny_root, tmp_path):
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-u", "jobs/evaluate.py", "--data.root", str(tiny_root), "--eval.compute.runner", "local",
             "--eval.out_dir", str(tmp_path / "out"), "--eval.features.cache_dir", str(tmp_path / "cache"),
             "--tracking.uri", uri], cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        try:
            for line in proc.stdout:                     # the MLflow run is open once features are computed
                if line.startswith("[features]"):
                    os.kill(proc.pid, signal.SIGTERM)
                    break
            proc.stdout.read()
            assert proc.wait(timeout=120) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
    err = (tmp_path / "stderr").read_text()
    assert "terminated (SIGTERM): stopped before the job finished (its MLflow run is marked KILLED)." in err, err
    assert "Traceback" not in err, err
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"], [(r.info.run_name, r.info.status) for r in runs]
    assert not (tmp_path / "out" / "summary.csv").exists()
