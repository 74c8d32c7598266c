"""MLflow in one place: tracking URI, experiments, run context, params from configs, figures and tables.

Default store: ``sqlite:///<cwd>/runs/mlflow.db`` (MLflow 3.17 refuses the plain file store), artifacts
under ``runs/mlartifacts``; a tracking server is used when ``uri`` (or ``MLFLOW_TRACKING_URI``) says so.
Logging failures (an unreachable server, a store that went away mid-run) never stop training or
evaluation: they are reported once per ``Tracker`` as a warning and the run goes on.

Failures must also be *cheap*: MLflow's HTTP client retries a failed request 7 times with exponential
backoff (≈ 4 min per call, measured with a dead server) and waits up to 120 s for an answer, so an
unguarded ``log_metrics`` after the server died stalls a training step for minutes. For http(s)
stores a Tracker therefore bounds each request (``http_timeout``, ``http_retries``: set as
``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, which MLflow reads per request),
and after a failure skips logging calls for ``pause_after_failure`` seconds, so a dead server costs at
most one bounded failed call per pause. What was logged before the failure stays in the store.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from braintune_dist.io import atomic_path, is_uri, refusing_folder, write_refusal, write_text

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag through which MLflow 3 records an experiment's type (its UI's experiment-type selector)."""
MODEL_TRAINING = "custom_model_development"
"""The tag's value for model training ("Machine learning" in MLflow's UI), as opposed to GenAI apps' traces."""


@dataclass
class TrackingConfig:
    """Where runs are recorded."""

    uri: str = ""
    """MLflow tracking URI (sqlite:///path.db or http://host:5000); empty = $MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db."""
    experiment: str = "braintune"
    """MLflow experiment name."""
    enabled: bool = True
    """Log to MLflow at all."""
    http_timeout: int = 20
    """Seconds one request to an http(s) tracking server may take (MLflow's default: 120)."""
    http_retries: int = 2
    """Retries of a failed request to an http(s) tracking server (MLflow's default 7 retries take ≈ 4 min)."""
    pause_after_failure: float = 60.0
    """After a failed logging call, skip logging for this many seconds (a dead server must not slow training)."""


def uri_source(cfg: TrackingConfig) -> tuple[str, str]:
    """(the tracking URI in force, where it comes from: 'uri', 'MLFLOW_TRACKING_URI' or 'default'), creating
    nothing: config, then environment, then the project's sqlite store."""
    if cfg.uri:
        return cfg.uri, "uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return f"sqlite:///{Path('runs').resolve() / 'mlflow.db'}", "default"


def resolve_uri(cfg: TrackingConfig) -> str:
    """The tracking URI in force (:func:`uri_source`); the default store's folder is made."""
    uri, source = uri_source(cfg)
    if source == "default":
        Path("runs").mkdir(exist_ok=True)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless absolute), None for
    any other store or an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def store_problem(cfg: TrackingConfig, field: str = "tracking") -> str:
    """Why the local sqlite store ``cfg`` names cannot be written, '' when it can (or is a server, which answers
    for itself). Checked before any work: on a store it cannot write, MLflow prints SQLAlchemy tracebacks (or
    retries opening it for ~100 s), logs nothing and leaves the run RUNNING, while the job goes on as if it did.
    ``field``: the job's tracking field (``tracking``, ``fit.tracking``), as the message names it."""
    if not cfg.enabled:
        return ""
    uri, source = uri_source(cfg)
    path = sqlite_path(uri)
    if path is None:
        return ""
    named = {"uri": f"{field}.uri", "MLFLOW_TRACKING_URI": f"MLFLOW_TRACKING_URI (with {field}.uri unset)",
             "default": f"{field}.uri (unset: the default store)"}[source]
    fix = (f"make it writable, or set {field}.uri to a writable sqlite:///<folder>/mlflow.db, or {field}.enabled "
           "false to run without MLflow")
    if path.is_dir():
        return f"{named}: {path} is a folder, not an MLflow sqlite database file (name a file: {path / 'mlflow.db'})"
    folder = refusing_folder(path.parent)      # SQLite writes its journal beside the database: the folder too
    if folder is not None:
        why = "is a file" if not folder.is_dir() else "refuses writing"
        return f"{named}: the MLflow store {path} cannot be written: {folder} {why}; {fix}"
    why = write_refusal(path) if path.exists() else ""
    return f"{named}: the MLflow store {path} cannot be written ({why}); {fix}" if why else ""


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dict → ``{'train.lr': '0.0001', ...}`` (MLflow params are flat strings)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = str(v)[:6000]
    return out


def bound_http_requests(cfg: TrackingConfig) -> None:
    """Bound MLflow's HTTP timeout and retries for this process (MLflow reads these per request)."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(cfg.http_timeout))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(cfg.http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")     # 0, 2 s between the retries


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Row dicts as CSV text: columns are every row's keys in first-seen order, missing cells empty."""
    import csv
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class Stopped(BaseException):
    """The job was told to stop from outside (a scheduler's early stop of a trial): its run ends KILLED, like
    on SIGINT, not FAILED on whatever the teardown then raises."""


class _ReportedByTracker(logging.Filter):
    """Drops the traceback MLflow's database layer logs for each failed store call (a page each, one per call):
    the Tracker reports the failure itself, once, as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def _quiet_store_tracebacks() -> None:
    db_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _ReportedByTracker) for f in db_log.filters):
        db_log.addFilter(_ReportedByTracker())


class Tracker:
    """A thin, failure-tolerant wrapper over one active MLflow run (or a no-op when disabled)."""

    def __init__(self, cfg: TrackingConfig):
        self.cfg, self.run_id, self._warned = cfg, None, False
        self.failures, self.skipped, self._paused_until = 0, 0, 0.0
        self.uri = resolve_uri(cfg) if cfg.enabled else ""
        if self.uri.startswith(("http://", "https://")):
            bound_http_requests(cfg)
        if self.uri.startswith("sqlite:"):
            _quiet_store_tracebacks()

    def logged(self, run_id: str | None) -> bool:
        """Whether run ``run_id`` holds everything this Tracker logged: a run opened and no call failed."""
        return bool(self.cfg.enabled and run_id and not self.failures)

    def outcome(self, run_id: str | None) -> str:
        """A job's last word on its logging: where its run is, or that logging FAILED (a failed store must not
        end the job on a line that reads as success)."""
        if not self.cfg.enabled:
            return "tracking off (tracking.enabled false): nothing was logged"
        if not self.logged(run_id):
            return (f"logging FAILED at {self.uri}: {self.failures} call(s) failed, {self.skipped} skipped (the "
                    f"warning above says why); run {run_id or '(none opened)'} is incomplete")
        return f"run {run_id} in {self.uri}"

    def _warn_once(self, what: str, exc: Exception, consequence: str) -> None:
        self.failures += 1
        self._paused_until = time.monotonic() + self.cfg.pause_after_failure
        if not self._warned:
            self._warned = True
            warnings.warn(f"MLflow {what} failed at {self.uri}: {exc.__class__.__name__}: {exc}. {consequence}",
                          stacklevel=4)

    def _guard(self, what: str, fn, *args, force: bool = False, **kwargs):
        """Call ``fn``; a failure warns (once) and pauses logging. ``force``: call even while paused."""
        if not self.run_id:
            return None
        if not force and time.monotonic() < self._paused_until:
            self.skipped += 1
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001  (any store/network failure must not stop the job)
            self._warn_once(f"logging ({what})", exc,
                            f"The run goes on; logging is retried after {self.cfg.pause_after_failure:g} s "
                            "and further failures are not reported.")
            return None

    @contextlib.contextmanager
    def start(self, run_name: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              nested: bool = False, run_id: str | None = None, end: bool | None = None) -> Iterator["Tracker"]:
        """Open a run (or attach to an existing ``run_id``, e.g. the driver's run from a Ray worker); yields
        self. ``end``: end the run on exit (default: only a run opened here; an attached run is left to
        its owner, unless ``end=True``, as when a resumed job reopens its own run)."""
        if not self.cfg.enabled:
            yield self
            return
        import mlflow
        end = run_id is None if end is None else end
        try:
            mlflow.set_tracking_uri(self.uri)
            if mlflow.get_experiment_by_name(self.cfg.experiment) is None:
                loc = None
                if self.uri.startswith("sqlite:///"):   # keep artifacts beside the db, not in the cwd
                    loc = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
                # typed as model training (an MLflow UI that reads the type opens the runs rather than guess or ask);
                # the 3.17 UI follows its own GenAI / Model training toggle instead, which ui.py's links set
                mlflow.create_experiment(self.cfg.experiment, artifact_location=loc,
                                         tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
            mlflow.set_experiment(self.cfg.experiment)
            run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, nested=nested, tags=tags)
            self.run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001
            self._warn_once("start_run", exc, "Continuing without tracking for this run.")
            self.run_id = None
        if params:
            self.log_params(params)
        status = "FINISHED"
        try:
            yield self
        except (KeyboardInterrupt, Stopped):   # SIGINT or a scheduler's stop: the run was stopped, not completed
            status = "KILLED"
            raise
        except SystemExit as exc:
            status = "FINISHED" if exc.code in (0, None) else "FAILED"
            raise
        except BaseException:             # a traceback is a failed run
            status = "FAILED"
            raise
        finally:
            if self.run_id and end:       # even while paused: the run must leave MLflow's active-run stack
                self._guard("end_run", mlflow.end_run, status, force=True)
            self.run_id = None

    def end_children(self, parent_run_id: str, status: str = "KILLED", now: str = "RUNNING",
                     trial_ids: set[str] | None = None) -> int:
        """Set the child runs of ``parent_run_id`` whose status is ``now`` to ``status`` (a trial stopped by ASHA:
        its process was killed before it ended its run, or ended it on the stop's exception); ``trial_ids``:
        only runs tagged with one of these. Returns how many. Failures warn once, like every logging call."""
        def end() -> int:
            from mlflow.tracking import MlflowClient
            client = MlflowClient(self.uri)
            exp = client.get_experiment_by_name(self.cfg.experiment)
            runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and "
                                      f"attributes.status = '{now}'") if exp else []
            runs = [r for r in runs if trial_ids is None or r.data.tags.get("trial_id") in trial_ids]
            for r in runs:
                client.set_tag(r.info.run_id, "ended_by", "parent run: its process was stopped before it ended it")
                client.set_terminated(r.info.run_id, status)
            return len(runs)
        return self._guard("end_children", end) or 0

    def find_run(self, **tags: str) -> str | None:
        """Id of the newest run of the experiment carrying all ``tags`` (None if none or unreachable)."""
        if not self.cfg.enabled:
            return None
        try:
            from mlflow.tracking import MlflowClient
            client = MlflowClient(self.uri)
            exp = client.get_experiment_by_name(self.cfg.experiment)
            query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            runs = client.search_runs([exp.experiment_id], query, max_results=1,
                                      order_by=["attributes.start_time DESC"]) if exp else []
            return runs[0].info.run_id if runs else None
        except Exception as exc:  # noqa: BLE001
            self._warn_once("search_runs", exc, "A new run is opened instead of reopening the earlier one.")
            return None

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
        if rows:
            self.log_text(csv_text(rows), name)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        import mlflow
        self._guard("log_artifact", mlflow.log_artifact, str(path), artifact_path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to ``path`` atomically (temp name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def publish(out: str | os.PathLike, tracker: "Tracker | None", artifact_dir: str, tables: dict | None = None,
            figures: dict | None = None, tag: str = "") -> None:
    """Write each table (name → rows; an empty one is skipped) as CSV and each figure (name → Figure, closed after)
    to ``out/<tag><name>`` atomically, and log both to MLflow under ``artifact_dir/<name>``."""
    import matplotlib.pyplot as plt
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in (figures or {}).items():
        save_figure(fig, out / f"{tag}{name}")
        if tracker:
            tracker.log_figure(fig, f"{artifact_dir}/{name}")
        plt.close(fig)
    for name, rows in (tables or {}).items():
        if rows:
            write_text(out / f"{tag}{name}", csv_text(rows))
            if tracker:
                tracker.log_table(rows, f"{artifact_dir}/{name}")


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
    if shard_dir is not None:                   # a local folder or an object-storage URI (shown without keys)
        from braintune_dist.data.manifest import MANIFEST, display, exists, read_bytes
        if exists(shard_dir, MANIFEST):
            local = not is_uri(shard_dir)
            data = {"shard_manifest": str(Path(shard_dir).resolve() / MANIFEST) if local else
                    f"{display(shard_dir)}/{MANIFEST}",
                    "shard_manifest_sha256": hashlib.sha256(read_bytes(shard_dir, MANIFEST)).hexdigest()}
    return dict(config=config, git_commit=commit, python=platform.python_version(), packages=versions, **data)
