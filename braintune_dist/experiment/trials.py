"""A job's fits as Ray Tune trials under one MLflow parent run, written once for every job that runs trials.

:func:`run_trials` runs trials ``0 … n-1`` of a fixed grid (``max_concurrent`` at once, bounded by the cluster's
resources) as the Tune experiment ``<storage_path>/<name>``; with ``resume`` the trials that finished are kept and
the unfinished and errored ones run again. The MLflow parent run's id is saved beside the experiment
(:func:`save_parent`) so that a resumed job reopens it (:func:`open_parent`); each trial reopens its own nested run
(:func:`open_child`). A trial writes what it produced to a file (atomically) and reports the path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from braintune_dist.errors import UserError
from braintune_dist.io import is_uri, storage_location, write_text
from braintune_dist.experiment.launch import tune_console
from braintune_dist.tracking import Tracker

PARENT_FILE = "mlflow_parent_run_id"
DONE_FILE = "braintune_trials.json"
"""The trials of a fixed grid that finished, by index, with their last metrics (written by :func:`run_trials`)."""
MANIFEST_FILE = "braintune_experiment.json"
"""This project's record of a Tune experiment it created (``{"job": "grid", "name": ...}``), beside Tune's files.
Tune's restore unpickles the folder's ``tuner.pkl`` (which can run code): only a folder with a matching record
is restored. It tells a folder of this job from any other, not a trusted one from a forged one."""


def original_cwd() -> None:
    """Back to the driver's working directory: Tune starts a trial in its trial folder, and the job's
    relative paths (data, shards, runs/...) are relative to the driver's."""
    os.chdir(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))


def experiment_dir(storage_path: str, name: str) -> tuple[str, Path]:
    """(Tune storage path, the experiment's folder) of a sweep or grid: a local path made absolute (Tune
    needs one), a URI (``s3://``) as given."""
    storage = storage_location(storage_path)
    return storage, Path(storage) / name


def open_parent(tracker: Tracker, name: str, exp_dir: Path, resume: bool, params: dict, tags: dict, log):
    """Open (or, on resume, reopen) the MLflow parent run of a Tune experiment at ``exp_dir``."""
    saved = exp_dir / PARENT_FILE
    run_id = saved.read_text().strip() if resume and saved.is_file() else None
    if run_id:
        log(f"[{tags.get('job', name)}] resuming MLflow parent run {run_id}")
    # params are logged once: MLflow refuses changed values (resume differs on the resumed session)
    return tracker.start(name, params=None if run_id else params, tags=tags, run_id=run_id, end=True)


def save_parent(exp_dir: Path, run_id: str | None) -> None:
    if run_id:                          # temp name, then rename: a torn id would break a resume
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_text(exp_dir / PARENT_FILE, run_id)


def _manifest(storage_path: str, name: str, filename: str = MANIFEST_FILE):
    """(pyarrow filesystem, path in it, the experiment folder as messages show it) of a record beside an experiment."""
    from braintune_dist.data.manifest import display, locate
    fs, base = locate(storage_location(storage_path))
    return fs, f"{base.rstrip('/')}/{name}/{filename}", f"{display(storage_location(storage_path))}/{name}"


def _put(storage_path: str, name: str, filename: str, text: str) -> None:
    """Write ``<storage_path>/<name>/<filename>`` whole: temp name then rename locally; an object store replaces
    the object whole, never in part."""
    if not is_uri(storage_path):
        _, exp_dir = experiment_dir(storage_path, name)
        exp_dir.mkdir(parents=True, exist_ok=True)
        write_text(exp_dir / filename, text)
        return
    fs, path, _ = _manifest(storage_path, name, filename)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _get(storage_path: str, name: str, filename: str) -> str | None:
    """The text of ``<storage_path>/<name>/<filename>``, None when there is no such file."""
    fs, path, _ = _manifest(storage_path, name, filename)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


def write_manifest(storage_path: str, name: str, job: str) -> None:
    """Record that this project's ``job`` (grid, compare, search) created the experiment ``<storage_path>/<name>``."""
    _put(storage_path, name, MANIFEST_FILE, json.dumps({"job": job, "name": name}) + "\n")


def restore_problem(field: str, storage_path: str, name: str) -> str:
    """Why the experiment ``<storage_path>/<name>`` may not be restored by ``field`` (``grid.resume``, ...): it lacks
    this project's record, or the record names another job or experiment; '' when it may."""
    job = field.partition(".")[0]
    _, _, shown = _manifest(storage_path, name)
    fix = f"point {job}.name / {job}.storage_path at this job's earlier run, or run without {field}"
    try:
        text = _get(storage_path, name, MANIFEST_FILE)
        if text is None:
            raise FileNotFoundError(MANIFEST_FILE)
        record = json.loads(text)
    except FileNotFoundError:
        return (f"{field}: {shown} holds no {MANIFEST_FILE}, the record this project writes beside every experiment "
                "it creates; Ray Tune's restore unpickles the folder's tuner.pkl, which can run code, so no other "
                f"folder is restored: {fix}. If you trust the folder (an experiment of an earlier version), write "
                f"{json.dumps({'job': job, 'name': name})} to {shown}/{MANIFEST_FILE}")
    except (OSError, ValueError) as exc:
        return f"{field}: {shown}/{MANIFEST_FILE} is unreadable ({exc.__class__.__name__}: {exc}): {fix}"
    if not isinstance(record, dict) or record.get("job") != job:
        other = record.get("job") if isinstance(record, dict) else record
        return f"{field}: {shown} holds an experiment of {other!r}, not of {job!r} ({MANIFEST_FILE}): {fix}"
    if record.get("name") != name:
        return (f"{field}: {shown}/{MANIFEST_FILE} names the experiment {record.get('name')!r}, not {name!r} (a "
                f"copied or renamed folder?): {fix}")
    return ""


def resume_problem(field: str, storage_path: str, name: str) -> str:
    """Why ``field`` (``grid.resume``, ...) cannot restore ``<storage_path>/<name>``: nothing there to restore, or a
    folder this job did not create (:func:`restore_problem`); '' when it can. The preflight reports it; the job
    checks it again right before Tune unpickles the folder."""
    from ray import tune
    _, exp_dir = experiment_dir(storage_path, name)
    if not tune.Tuner.can_restore(str(exp_dir)):
        job = field.rpartition(".")[0]
        return (f"{field}: nothing to restore at {exp_dir} (run once without it, or set {job}.name / "
                f"{job}.storage_path to the earlier run's)")
    return restore_problem(field, storage_path, name)


def check_resume(job: str, name: str, storage_path: str, resume: bool) -> None:
    """``<job>.resume`` with nothing to restore, or a folder this job did not create: one error, before the job
    prepares or trains anything and before Tune unpickles the folder."""
    problem = resume_problem(f"{job}.resume", storage_path, name) if resume else ""
    if problem:
        raise UserError(problem)


def restore_or_create(trainable, storage_path: str, name: str, resume: bool, job: str, create):
    """The Tune experiment ``<storage_path>/<name>``: restored with ``resume`` (finished trials kept, unfinished and
    errored ones run again; only a folder whose record names ``job`` and ``name``), else ``create(storage)``, a new
    ``tune.Tuner`` stored under the absolute ``storage``, and the record written."""
    from ray import tune
    storage, exp_dir = experiment_dir(storage_path, name)
    check_resume(job, name, storage_path, resume)
    if resume:
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    tuner = create(storage)
    write_manifest(storage_path, name, job)
    return tuner


def finished_trials(trainable, storage_path: str, name: str, key: str) -> dict[int, dict]:
    """Trials of ``<storage_path>/<name>`` that finished (reported ``done``), by ``config[key]``: this project's record
    of earlier runs (:data:`DONE_FILE`) and the Tune experiment's own state, read without running anything."""
    from ray import tune
    text = _get(storage_path, name, DONE_FILE)
    done = {int(k): v for k, v in json.loads(text).items()} if text else {}
    _, exp_dir = experiment_dir(storage_path, name)
    for r in tune.Tuner.restore(str(exp_dir), trainable=trainable).get_results():
        if r.error is None and r.metrics and r.metrics.get("done") and key in (r.config or {}):
            done[int(r.config[key])] = _plain(r.metrics)
    return done


def _plain(metrics: dict) -> dict:
    """The JSON-ready part of a trial's reported metrics (numbers and strings)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}


def run_trials(trainable, n: int, key: str, name: str, storage_path: str, resume: bool, max_concurrent: int,
               job: str, log, metrics: tuple[str, ...] = ()) -> dict[int, dict]:
    """Run trials ``0 … n-1`` of ``trainable`` (each gets ``config[key]`` and reports ``done`` when it finishes),
    ``max_concurrent`` at once, as the Tune experiment ``<storage_path>/<name>``. Returns each trial's last
    reported metrics by index; a failed trial is one error.

    With ``resume`` the trials that finished earlier are kept and only the others run, as a new Tune run in the
    same folder. Tune's own restore would start every unfinished trial at once: its ``max_concurrent_trials``
    bounds the trials its search algorithm creates, not the ones it restores, and on a small machine fits that
    all hold their trial CPUs leave their Train workers and Ray Data none (the job hangs).
    """
    from ray import tune
    check_resume(job, name, storage_path, resume)
    storage, _ = experiment_dir(storage_path, name)
    done = finished_trials(trainable, storage_path, name, key) if resume else {}
    todo = [i for i in range(n) if i not in done]
    if resume:
        _put(storage_path, name, DONE_FILE, json.dumps({str(i): m for i, m in done.items()}))
        log(f"[{job}] resuming {name}: {n - len(todo)} of {n} trials finished earlier and are kept; "
            f"{len(todo)} to run")
    if todo:
        tuner = tune.Tuner(trainable, param_space={key: tune.grid_search(todo)},
                           tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(name=name, storage_path=storage,
                                                     **tune_console(log, job, len(todo), metrics)))
        write_manifest(storage_path, name, job)
        results = tuner.fit()
        done.update({r.config[key]: _plain(r.metrics) for r in results if r.error is None and r.metrics})
        _put(storage_path, name, DONE_FILE, json.dumps({str(i): m for i, m in done.items()}))
        failed = [r for r in results if r.error]
        if failed:
            raise RuntimeError(f"{len(failed)} trial(s) of {job} failed, e.g. {failed[0].error}; fix and rerun with "
                               f"--{job}.resume true to run only those")
    return {i: done[i] for i in range(n)}


def open_child(tracker: Tracker, name: str, parent_run_id: str | None, tags: dict, params: dict | None = None):
    """Open one trial's MLflow run, nested under the job's parent run; a trial run again (the job was resumed)
    reopens its own run, found by ``tags`` under the same parent, instead of leaving it RUNNING."""
    tags = dict(tags)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    key = {k: v for k, v in tags.items() if k != "job"}
    earlier = tracker.find_run(**key) if parent_run_id else None
    return tracker.start(name, tags=tags, run_id=earlier, end=True, params=None if earlier else params)


def best_checkpoint(result):
    """A Ray Train result's checkpoint of lowest validation loss (the last one when none was scored)."""
    return result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
