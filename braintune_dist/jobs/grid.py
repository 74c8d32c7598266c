"""The scaling grid as Ray Tune trials: each point (one Ray Train fit + its held-out evaluation) is a trial
of a fixed grid, so Ray runs ``grid.max_concurrent`` points at once, bounded by the cluster's resources.

A trial writes its alignment rows to ``<out>/<point>/rows.json`` (atomically) and reports the path; the
driver gathers the rows of every point in grid order. ``grid.resume`` restores the Tune experiment: finished
points are kept (their rows file is read again), unfinished and errored ones run again, reopening their own
nested MLflow runs. The MLflow parent run is reopened from the id saved beside the experiment.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from braintune_dist.config import from_dict, to_dict
from braintune_dist.errors import UserError
from braintune_dist.io import write_text
from braintune_dist.jobs.launch import tune_console
from braintune_dist.tracking import Tracker

PARENT_FILE = "mlflow_parent_run_id"


def original_cwd() -> None:
    """Back to the driver's working directory: Tune starts a trial in its trial folder, and the job's
    relative paths (data, shards, runs/...) are relative to the driver's."""
    os.chdir(os.environ.get("TUNE_ORIG_WORKING_DIR", os.getcwd()))


def experiment_dir(storage_path: str, name: str) -> tuple[str, Path]:
    """(Tune storage path, the experiment's folder) of a sweep or grid: a local path made absolute (Tune
    needs one), a URI (``s3://``) as given."""
    storage = storage_path if "://" in storage_path else str(Path(storage_path).resolve())
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


def run_point(config: dict, job: dict, points: list[dict], participants: list[str], subjects: list[str],
              parent_run_id: str | None, out: str) -> None:
    """Tune trainable: one grid point. ``config['point']`` indexes ``points`` ({size, mode, repeat, label})."""
    from ray import tune
    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.evaluate.report import alignment_report
    from braintune_dist.jobs.scaling import ScalingJobConfig, point_config, point_dir
    from braintune_dist.train.trainer import build_trainer, plan

    original_cwd()
    cfg = from_dict(ScalingJobConfig, job)
    pt = points[config["point"]]
    pc = point_config(cfg, pt["mode"], pt["size"], participants, pt["repeat"])
    p = plan(pc)
    tags = {"job": "scaling_point", "point": pt["label"]}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    tracker = Tracker(pc.tracking)
    earlier = tracker.find_run(point=pt["label"], **{"mlflow.parentRunId": parent_run_id}) if parent_run_id else None
    t0 = time.time()
    with tracker.start(pc.ray.run_name, tags=tags, run_id=earlier, end=True) as tr:
        tr.log_params({"point.mode": pt["mode"], "point.size": pt["size"], "point.unit": cfg.grid.unit,
                       "point.repeat": pt["repeat"], "point.train_seed": pc.train.seed,
                       "point.participants": ",".join(p["participants"]), "point.train_rows": p["train_rows"]})
        result = build_trainer(pc, mlflow_run_id=tr.run_id, run_plan=p).fit()
        best = result.get_best_checkpoint(metric="val_loss", mode="min") or result.checkpoint
        t_fit = time.time()
        ds = LebelDataset(pc.data.root, pc.data)
        ev = dataclasses.replace(cfg.eval, out_dir=str(point_dir(out, pt["label"])))
        with best.as_directory() as ckpt:
            rows = alignment_report(ds, [ModelSpec(pt["label"], pc.model, ckpt)], ev, subjects, tr, print)
        tr.log_metrics({"train.seconds": t_fit - t0, "eval.seconds": time.time() - t_fit})
    path = point_dir(out, pt["label"]) / "rows.json"
    write_text(path, json.dumps(dict(pt, rows=rows, train_rows=p["train_rows"], checkpoint=best.path,
                                     started=t0, fitted=t_fit, finished=time.time())))
    tune.report({"done": 1, "rows_file": str(path)})


def check_resume(job: str, name: str, storage_path: str, resume: bool) -> None:
    """``<job>.resume`` with nothing to restore: one error, before the job prepares or trains anything."""
    from ray import tune
    _, exp_dir = experiment_dir(storage_path, name)
    if resume and not tune.Tuner.can_restore(str(exp_dir)):
        raise UserError(f"{job}.resume: nothing to restore at {exp_dir} (run once without it, or set "
                        f"{job}.name / {job}.storage_path to the earlier run's)")


def run_trials(trainable, n: int, key: str, name: str, storage_path: str, resume: bool, max_concurrent: int,
               job: str, log, metrics: tuple[str, ...] = ()) -> dict[int, dict]:
    """Run trials ``0 … n-1`` of ``trainable`` (each gets ``config[key]``), ``max_concurrent`` at once, as the Tune
    experiment ``<storage_path>/<name>``; with ``resume``, restore it: finished trials are kept, unfinished and
    errored ones run again. Returns each trial's last reported metrics by index; a failed trial is one error."""
    from ray import tune
    storage, exp_dir = experiment_dir(storage_path, name)
    check_resume(job, name, storage_path, resume)
    if resume:
        tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space={key: tune.grid_search(list(range(n)))},
                           tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                           run_config=tune.RunConfig(name=name, storage_path=storage,
                                                     **tune_console(log, job, n, metrics)))
    results = tuner.fit()
    failed = [r for r in results if r.error]
    if failed:
        raise RuntimeError(f"{len(failed)} trial(s) of {job} failed, e.g. {failed[0].error}; fix and rerun with "
                           f"--{job}.resume true to run only those")
    return {r.config[key]: r.metrics for r in results}


def run_grid(cfg, points: list[dict], participants: list[str], subjects: list[str], parent_run_id: str | None,
             out: Path, log) -> list[dict]:
    """Run every grid point as a Tune trial (``grid.max_concurrent`` at once); their results in grid order."""
    from ray import tune
    g = cfg.grid
    _, exp_dir = experiment_dir(g.storage_path, g.name)
    trainable = tune.with_resources(
        tune.with_parameters(run_point, job=to_dict(cfg), points=points, participants=participants,
                             subjects=subjects, parent_run_id=parent_run_id, out=str(out.resolve())),
        {"CPU": g.point_cpus})
    save_parent(exp_dir, parent_run_id)
    log(f"[scaling] {len(points)} grid points, up to {g.max_concurrent} at once (Tune experiment {exp_dir})")
    done = run_trials(trainable, len(points), "point", g.name, g.storage_path, g.resume, g.max_concurrent, "grid", log)
    return [json.loads(Path(done[i]["rows_file"]).read_text()) for i in range(len(points))]
