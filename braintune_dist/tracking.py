"""MLflow in one place: tracking URI, experiments, run context, params from configs, figures and tables.

Default store: ``sqlite:///<cwd>/runs/mlflow.db`` (MLflow 3.17 refuses the plain file store), artifacts
under ``runs/mlartifacts``; a tracking server is used when ``uri`` (or ``MLFLOW_TRACKING_URI``) says so.
Logging failures (an unreachable server, a store that went away mid-run) never stop training or
evaluation: they are reported once as a warning and the run goes on.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    uri: str = ""
    """MLflow tracking URI (sqlite:///path.db or http://host:5000); empty = $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db."""
    experiment: str = "braintune"
    """MLflow experiment name."""
    enabled: bool = True
    """Log to MLflow at all."""


def resolve_uri(cfg: TrackingConfig) -> str:
    """The tracking URI in force: config, then environment, then the project's sqlite store."""
    uri = cfg.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        Path("runs").mkdir(exist_ok=True)
        uri = f"sqlite:///{Path('runs').resolve() / 'mlflow.db'}"
    return uri


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict → ``{'train.lr': '0.0001', ...}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = str(v)[:6000]
    return out


class Tracker:
    """A thin, failure-tolerant wrapper over one active MLflow run (or a no-op when disabled)."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg, self.run_id, self._warned = cfg, None, False
        self.uri = resolve_uri(cfg) if cfg.enabled else ""

    def _guard(self, what: str, fn, *args, **kwargs):
        if not self.run_id:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (any store/network failure must not stop the job)
            if not self._warned:
                warnings.warn(f"MLflow logging failed ({what}) at {self.uri}: {exc}. The run goes on; "
                              "later logging calls are tried again but not reported.", stacklevel=3)
                self._warned = True
            return None

    @contextlib.contextmanager
    def start(self, run_name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              nested: bool = False, run_id: str | None = None) -> Iterator["Tracker"]:
        """Open a run (or attach to an existing ``run_id``, e.g. the driver's run from a Ray worker); yields
        self. A run opened here is ended on exit; an attached run is left to its owner."""
        if not self.cfg.enabled:
            yield self
            return
        import mlflow
        try:
            mlflow.set_tracking_uri(self.uri)
            if mlflow.get_experiment_by_name(self.cfg.experiment) is None:
                loc = None
                if self.uri.startswith("sqlite:///"):   # keep artifacts beside the db, not in the cwd
                    loc = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
                mlflow.create_experiment(self.cfg.experiment, artifact_location=loc)
            mlflow.set_experiment(self.cfg.experiment)
            run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested, tags=tags)
            self.run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"MLflow unavailable at {self.uri}: {exc}. Continuing without tracking.", stacklevel=3)
            self.run_id = None
        if params:
            self.log_params(params)
        try:
            yield self
        finally:
            if self.run_id and not run_id:
                self._guard("end_run", mlflow.end_run)
            self.run_id = None

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow
        flat = flatten(params)
        items = list(flat.items())
        for i in range(0, len(items), 90):      # MLflow caps a batch at 100 params
            self._guard("log_params", mlflow.log_params, dict(items[i:i + 90]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow
        # MLflow names allow [A-Za-z0-9_-. :/]; '/' is shown as a folder in the UI, keep keys flat with '.'
        clean = {re.sub(r"[^\w\-. :]", "_", k.replace("/", ".")): float(v) for k, v in metrics.items() if v == v}
        self._guard("log_metrics", mlflow.log_metrics, clean, step=step)

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow
        self._guard("set_tags", mlflow.set_tags, {k: str(v) for k, v in tags.items()})

    def log_figure(self, fig, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact ``name``."""
        import mlflow
        self._guard("log_figure", mlflow.log_figure, fig, name)

    def log_text(self, text: str, name: str) -> None:
        import mlflow
        self._guard("log_text", mlflow.log_text, text, name)

    def log_table(self, rows: list[dict[str, Any]], name: str) -> None:
        """Log a list of row dicts as a CSV artifact ``name``."""
        import csv
        if not rows:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        self.log_text(buf.getvalue(), name)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        import mlflow
        self._guard("log_artifact", mlflow.log_artifact, str(path), artifact_path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``path`` atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=120, bbox_inches="tight")
    os.replace(tmp.name, path)
    return path


def run_manifest(config: dict, shard_dir: str | os.PathLike | None = None) -> dict:
    """What a run needs to be reproduced: config, data manifest checksum, git commit, package versions."""
    import hashlib
    import platform
    import subprocess
    from importlib import metadata
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for pkg in ("braintune_dist", "torch", "transformers", "peft", "ray", "deepspeed", "mlflow", "numpy", "pyarrow"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "absent"
    data = {}
    if shard_dir is not None and (Path(shard_dir) / "manifest.json").is_file():
        data = {"shard_manifest": str(Path(shard_dir).resolve() / "manifest.json"),
                "shard_manifest_sha256": hashlib.sha256((Path(shard_dir) / "manifest.json").read_bytes()).hexdigest()}
    return dict(config=config, git_commit=commit, python=platform.python_version(), packages=versions, **data)
