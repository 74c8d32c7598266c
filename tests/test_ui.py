"""``./run ui`` (``python -m braintune_dist.ui``): what a browser gets from the server it starts, on a sqlite store
with one run made by the project's Tracker. No browser here: the page's address, the REST answers and the served
UI code stand in for it."""
from __future__ import annotations

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

from braintune_dist.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, Tracker, TrackingConfig
from servers import free_port

REPO = Path(__file__).resolve().parents[1]
MLFLOW = Path(sys.executable).parent / "mlflow"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.mark.skipif(not MLFLOW.exists(), reason=f"no mlflow CLI beside this Python ({MLFLOW})")
def test_ui_links_to_the_runs_table_and_starts_no_job_runner(tmp_path):
    import psutil
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingConfig(uri=uri, experiment="bt-ui"))
    with tracker.start("fit", params={"lr": 1e-4}) as tr:
        tr.log_metrics({"val_r": 0.186}, step=1)
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", None)     # the launcher's own setting must be what stops it
    proc = subprocess.Popen([sys.executable, "-m", "braintune_dist.ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        printed = []
        for line in proc.stdout:             # the links come before the server starts
            printed.append(line)
            if "GenAI view" in line:
                break
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                _get(base + "/health")
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, ("the server did not start", printed)
                time.sleep(0.2)

        # the experiment is typed as model training
        exp = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=bt-ui"))["experiment"]
        assert {"key": EXPERIMENT_KIND_TAG, "value": MODEL_TRAINING} in exp["tags"], exp
        # its printed link opens the runs table on the "Model training" view
        link = f"{base}/#/experiments/{exp['experiment_id']}/runs?workflowType=machine_learning"
        assert any(line.strip() == f"[ui]   bt-ui: {link}" for line in printed), printed
        # ... an address the served UI understands: its route and the view parameter are in the page's code
        page = _get(base + "/").decode()
        main_js = re.search(r'src="([^"]*static/js/main\.[0-9a-f]+\.js)"', page)
        assert main_js, page[:500]
        code = _get(base + "/" + main_js.group(1).lstrip("./")).decode()
        for needle in ('"/experiments/:experimentId/runs"', '"workflowType"', 'MACHINE_LEARNING="machine_learning"'):
            assert needle in code, f"{needle} is no longer in MLflow's UI: check braintune_dist/ui.py's links"

        # no job runner: the server's processes are the CLI and its one uvicorn worker
        tree = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
        assert not [c for c in tree if "mlflow.server.jobs" in c or "huey" in c], tree
        assert len(tree) == 1 and "uvicorn" in tree[0], tree
    finally:
        if proc.poll() is None:             # the whole session: the CLI, uvicorn (and a job runner, were there one)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
