"""``./run ui``: MLflow's UI on the project's store, with links that open each experiment's runs table.

MLflow 3.17's UI shows every experiment through a global toggle, "GenAI" (traces dashboards, the default) or
"Model training" (runs, metrics, figures). The toggle is the page address's ``workflowType`` parameter, else the
browser's last choice; an experiment's type tag (``tracking.EXPERIMENT_KIND_TAG``) does not move it. So the
links printed here carry ``workflowType=machine_learning``: a browser opens straight on the runs, and the UI keeps
the parameter while one moves between the experiment's tabs.

The server runs without MLflow's job runner, which nothing here uses: it serves GenAI apps (scorers,
evaluations, prompt optimisation, periodic trace tasks) with a runner process and a task-queue consumer process
per job queue (seven in MLflow 3.17). ``python -m braintune_dist.ui --help``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from braintune_dist.tracking import TrackingConfig, sqlite_path, uri_source

RUNS_VIEW = "workflowType=machine_learning"
"""The address parameter that puts MLflow's UI on its "Model training" view (runs) rather than "GenAI"."""
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""The setting (an environment variable; ``mlflow server`` has no flag for it) that starts no job runner."""


def runs_url(base: str, experiment_id: str) -> str:
    """The address of an experiment's runs table in the UI served at ``base``, on the "Model training" view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


def experiments_with_runs(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the active experiments in store ``uri`` that hold a run, most recently updated first."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    exps = sorted(client.search_experiments(), key=lambda e: e.last_update_time or 0, reverse=True)
    return [(e.name, e.experiment_id) for e in exps if client.search_runs([e.experiment_id], max_results=1)]


def links(uri: str, base: str) -> list[str]:
    """One line per experiment with runs: its name and runs-table address (a note if the store has none, or
    cannot be read: the UI then says why)."""
    try:
        found = experiments_with_runs(uri)
    except Exception as exc:  # noqa: BLE001  (the server reports the store's problem itself)
        return [f"(could not list the experiments: {exc.__class__.__name__}: {exc})"]
    if not found:
        return ["(no runs yet: ./run demo records some)"]
    return [f"{name}: {runs_url(base, exp_id)}" for name, exp_id in found]


def main(argv: list[str] | None = None) -> int:
    """Print the links, then become ``mlflow server`` (Ctrl-C stops it); arguments after the known ones go to
    ``mlflow server``. A tracking server as the store (http(s) URI) already serves the UI: its links only."""
    p = argparse.ArgumentParser(prog="./run ui", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args, extra = p.parse_known_args(argv)
    uri, _ = uri_source(TrackingConfig())          # MLFLOW_TRACKING_URI, else the project's sqlite store
    if uri.startswith(("http://", "https://")):
        print(f"[ui] the store is the tracking server {uri}, which serves the UI; its runs tables:")
        for line in links(uri, uri):
            print(f"[ui]   {line}")
        return 0
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    base = f"http://{args.host}:{args.port}"
    print(f"[ui] MLflow UI on {uri} at {base} (Ctrl-C stops it); the runs tables:")
    for line in links(uri, base):
        print(f"[ui]   {line}")
    print(f"[ui] (an address without ?{RUNS_VIEW} opens MLflow's GenAI view: its toggle switches to Model "
          "training)", flush=True)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow") or "mlflow"
    cmd = [mlflow, "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port),
           "--workers", "1", *extra]                   # one user: one uvicorn worker (MLflow's default: 4)
    os.execvpe(mlflow, cmd, {**os.environ, **NO_JOB_RUNNER})
    return 0                                        # not reached: the process is mlflow server now


if __name__ == "__main__":
    sys.exit(main())
