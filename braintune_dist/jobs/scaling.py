"""Scaling curves of brain-tuning: a grid of tuning-data sizes × {single-participant, multi-participant}.

For each grid point the usual Ray Train fit runs (``build_trainer``) on the first ``size`` stories (or hours)
of each tuning participant, then the tuned model's alignment on held-out participants is measured with
``alignment_report`` (the untuned model is measured once: it does not depend on the grid). Two figures
summarise the grid: alignment vs tuning-data size per region (one line per mode, the untuned model as a
dashed line), and the fMRI a *new* participant needs for the tuned model to match the untuned model's
full-data alignment (from the data-efficiency curves). Every point is a nested MLflow run under one parent.
Each point (fit + evaluation) is one Ray Tune trial of a fixed grid (``experiment.trials``): ``grid.max_concurrent``
points run at once, and ``grid.resume`` picks an interrupted grid up where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from braintune_dist.config import ConfigError, to_dict
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.evaluate.summary import at_best_layer, at_layers
from braintune_dist.experiment.preflight import Checks, Restore
from braintune_dist.experiment.stages import TrainingStages, held_out, setup
from braintune_dist.experiment.trials import (best_checkpoint, experiment_dir, open_child, open_parent, original_cwd,
                                              run_trials, save_parent)
from braintune_dist.io import write_text
from braintune_dist.tracking import Tracker, save_figure


@dataclass
class GridSettings:
    """The scaling grid."""

    unit: Literal["stories", "hours"] = "stories"
    """Tuning-data size unit: stories or hours of fMRI per tuning participant."""
    sizes: list[float] = field(default_factory=lambda: [1, 2, 4])
    """Tuning-data sizes per participant (in `unit`); 0 = all of it. Sizes nest (stream.selection_seed)."""
    modes: list[Literal["single", "multi"]] = field(default_factory=lambda: ["single", "multi"])
    """'single': tune on one participant; 'multi': on every tuning participant (stream.participants or all)."""
    single_participant: str = ""
    """The participant of the 'single' mode; '' = a different tuning participant for each repeat (repeat k
    tunes on the k-th, cycling), so the single-participant curve is not one participant's (their SNRs differ)."""
    name: str = "scaling"
    """MLflow parent run name and prefix of the Ray Train run names."""
    repeats: int = 1
    """Fits per grid point with different replicate seeds (train.seed + k: data order, LoRA and head init,
    dropout; the same data subset, which stream.selection_seed draws); the table
    reports their mean and range and the figures draw the range as error bars."""
    max_concurrent: int = 1
    """Grid points (fit + evaluation, each a Ray Tune trial) at once. Each holds point_cpus, its
    fit.ray.num_workers Train workers and, while it evaluates, its feature actors and ridge tasks."""
    point_cpus: float = 0.25
    """CPUs held by a point's own (trial driver) process; its Train and evaluation workers ask for their own."""
    storage_path: str = "runs/tune"
    """Where Tune keeps the grid's experiment state (restore point); a shared path or s3:// on a cluster."""
    resume: bool = False
    """Restore the grid <storage_path>/<name>: finished points are kept, unfinished/errored ones run again."""

    def __post_init__(self):
        if any(x < 0 for x in self.sizes):
            raise ConfigError(f"grid.sizes: {self.sizes} must all be >= 0")
        if self.repeats < 1:
            raise ConfigError(f"grid.repeats: {self.repeats} must be >= 1 (fits per grid point)")
        if self.max_concurrent < 1:
            raise ConfigError(f"grid.max_concurrent: {self.max_concurrent} must be >= 1")


@dataclass
class ScalingJobConfig(TrainingStages):
    """Scaling curves: brain-tune at several data sizes, single vs multi participant, then held-out alignment."""

    eval: EvalSettings = field(default_factory=EvalSettings)
    """Alignment report of every grid point's model (and the untuned one) on held-out participants."""
    grid: GridSettings = field(default_factory=GridSettings)
    """Data sizes and tuning modes."""

    def __post_init__(self):
        who, listed = self.grid.single_participant, self.fit.stream.participants
        if who and listed and who not in listed:
            raise ConfigError(f"grid.single_participant: {who!r} not in fit.stream.participants {listed}")

    def checks(self) -> Checks:
        g = self.grid
        return Checks(stages=self, eval=self.eval, concurrent=g.max_concurrent, trial_cpus=g.point_cpus,
                      concurrent_field="grid.max_concurrent",
                      restore=Restore("grid.resume", g.storage_path, g.name) if g.resume else None)


@dataclass(frozen=True)
class GridPoint:
    """One fit of the grid: a data size, a tuning mode, a repeat."""

    size: float
    mode: str
    repeat: int
    unit: str
    label: str


def point_config(cfg: ScalingJobConfig, mode: str, size: float, participants: list[str], repeat: int = 0):
    """The FitConfig of one grid point (and repeat): its participants, per-participant data budget, seed."""
    tune = cfg.fit
    who = ([cfg.grid.single_participant or participants[repeat % len(participants)]] if mode == "single"
           else list(participants))
    budget = {"stories_per_participant": int(size)} if cfg.grid.unit == "stories" else {"hours_per_participant": float(size)}
    stream = dataclasses.replace(tune.stream, participants=who, n_participants=0, **budget)
    suffix = f"-r{repeat}" if cfg.grid.repeats > 1 else ""
    ray = dataclasses.replace(tune.ray, run_name=f"{cfg.grid.name}-{mode}-{size:g}{suffix}")
    train = dataclasses.replace(tune.train, seed=tune.train.seed + repeat)
    return dataclasses.replace(tune, stream=stream, ray=ray, train=train)


def point_label(mode: str, size: float, repeat: int, repeats: int) -> str:
    return f"{mode}@{size:g}" + (f"#{repeat}" if repeats > 1 else "")


def point_dir(out, label: str) -> Path:
    """Output folder of one grid point (figures, rows.json)."""
    return Path(out) / label.replace("@", "_").replace("#", "_r")


def _curve(rows: list[dict], models: set[str], region: str) -> tuple[np.ndarray, np.ndarray]:
    """Data-efficiency curve of ``models`` (a grid point's repeats, averaged) in ``region``: hours of the new
    participant's fMRI → mean r/ceiling."""
    by = defaultdict(list)
    for r in rows:
        if r["kind"] == "efficiency" and r["model"] in models and r["region"] == region and np.isfinite(r["mean_r_norm"]):
            by[r["hours"]].append(r["mean_r_norm"])
    hours = sorted(by)
    return np.asarray(hours, float), np.asarray([np.mean(by[h]) for h in hours], float)


def hours_to_match(hours: np.ndarray, values: np.ndarray, target: float) -> float:
    """First hours (linear interpolation between curve points) where the curve reaches ``target``; NaN if never.
    A curve already at target at its first point returns that point (an upper bound)."""
    for i, (h, v) in enumerate(zip(hours, values)):
        if v >= target:
            if i == 0:
                return float(h)
            h0, v0 = hours[i - 1], values[i - 1]
            return float(h0 + (target - v0) * (h - h0) / (v - v0))
    return math.nan


def scaling_table(untuned: list[dict], points: list[dict]) -> list[dict]:
    """One row per (grid point, region): tuned alignment (the headline: mean over every transformer layer,
    voxels and participants; mean, min and max over the point's repeats), untuned alignment, hours a new
    participant needs (mean curve, at each participant's CV-best layer, to reach the untuned model's full-data
    alignment at its own CV-best layer: the curve and its target are the same kind of number), ratio."""
    base, base_best = at_layers(untuned), at_best_layer(untuned)
    full_hours = max(r["hours"] for r in untuned if r["kind"] == "layer")
    groups: dict = defaultdict(list)                      # (mode, size) → its repeats, in grid order
    for pt in points:
        groups[(pt["mode"], pt["size"])].append(pt)
    table = []
    for (mode, size), pts in groups.items():
        heads = [{k.split("/", 1)[1]: v for k, v in at_layers(pt["rows"]).items()} for pt in pts]
        rows = [r for pt in pts for r in pt["rows"]]
        for region in sorted(heads[0]):
            values = np.array([h[region] for h in heads])
            target = base_best.get(f"untuned/{region}", math.nan)
            needed = hours_to_match(*_curve(rows, {pt["label"] for pt in pts}, region), target)
            table.append(dict(mode=mode, size=size, unit=pts[0]["unit"], train_rows=pts[0]["train_rows"],
                              region=region, tuned=float(values.mean()), tuned_min=float(values.min()),
                              tuned_max=float(values.max()), repeats=len(pts),
                              untuned=base.get(f"untuned/{region}", math.nan),
                              new_participant_hours=needed, untuned_hours=full_hours,
                              efficiency_ratio=full_hours / needed if needed > 0 else math.nan))
    return table


def plot_scaling(table: list[dict]):
    """(alignment vs tuning-data size, new-participant hours needed vs tuning-data size), per region panel."""
    import matplotlib.pyplot as plt
    # 'null' vertices carry no stimulus signal: a panel of noise would only distract
    regions = sorted({r["region"] for r in table} - {"null"}, key=lambda s: (s != "all", s))
    unit = table[0]["unit"]
    figs = []
    for key, ylabel, title in (
            ("tuned", "mean r / noise ceiling (held-out participants)", "Brain alignment vs tuning data"),
            ("new_participant_hours", "new participant's fMRI needed (minutes)",
             "Data a new participant needs to match the untuned model (full data)")):
        fig, axes = plt.subplots(1, len(regions), figsize=(4.4 * len(regions), 3.8), sharey=True, sharex=True,
                                 squeeze=False)
        fig.suptitle(title)
        for ax, region in zip(axes[0], regions):
            rows = [r for r in table if r["region"] == region]
            modes = sorted({r["mode"] for r in rows})
            for i, mode in enumerate(modes):
                pts = sorted((r["size"], r[key], r.get(f"{key}_min"), r.get(f"{key}_max"))
                             for r in rows if r["mode"] == mode)
                xs, ys, lo, hi = (np.asarray(c, float) for c in zip(*pts))
                ys = ys * (60.0 if key == "new_participant_hours" else 1.0)
                n = rows[0].get("repeats", 1)
                if key == "tuned" and n > 1:       # error bars: the range over the point's repeats
                    nudge = 0.015 * (i - (len(modes) - 1) / 2) * (max(xs) - min(xs) or 1.0)   # bars side by side
                    ax.errorbar(xs + nudge, ys, yerr=[ys - lo, hi - ys], marker="o", capsize=3,
                                label=f"{mode}-participant tuning (mean, range of {n} fits)")
                else:
                    ax.plot(xs, ys, marker="o", label=f"{mode}-participant tuning")
            ref = rows[0]["untuned"] if key == "tuned" else rows[0]["untuned_hours"] * 60.0
            ax.axhline(ref, color="k", ls="--", lw=1, label="untuned (all data)")
            ax.set_title(f"region: {region}")
            ax.set_xlabel(f"tuning data per participant ({unit})")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        figs.append(fig)
    return figs


def run_point(config: dict, cfg: ScalingJobConfig, points: list[GridPoint], tuning: list[str],
              held: list[str], parent_run_id: str | None, out: str) -> None:
    """Tune trainable: one grid point, ``config['point']`` indexes ``points``; ``cfg.fit`` is the job's prepared fit."""
    from ray import tune

    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.evaluate.report import alignment_report
    from braintune_dist.train.plan import plan
    from braintune_dist.train.trainer import build_trainer

    original_cwd()
    pt = points[config["point"]]
    pc = point_config(cfg, pt.mode, pt.size, tuning, pt.repeat)
    p = plan(pc)
    t0 = time.time()
    with open_child(Tracker(pc.tracking), pc.ray.run_name, parent_run_id, {"job": "scaling_point", "point": pt.label},
                    {"point.mode": pt.mode, "point.size": pt.size, "point.unit": pt.unit, "point.repeat": pt.repeat,
                     "point.train_seed": pc.train.seed, "point.participants": ",".join(p.participants),
                     "point.train_rows": p.train_rows}) as tr:
        best = best_checkpoint(build_trainer(pc, mlflow_run_id=tr.run_id, run_plan=p).fit())
        t_fit = time.time()
        ev = dataclasses.replace(cfg.eval, out_dir=str(point_dir(out, pt.label)))
        with best.as_directory() as ckpt:          # the trial's own process: the dataset is opened here
            rows = alignment_report(LebelDataset(pc.data.root, pc.data), [ModelSpec(pt.label, pc.model, ckpt)], ev,
                                    held, tr, print)
        tr.log_metrics({"train.seconds": t_fit - t0, "eval.seconds": time.time() - t_fit})
    path = point_dir(out, pt.label) / "rows.json"
    write_text(path, json.dumps(dict(dataclasses.asdict(pt), rows=rows, train_rows=p.train_rows,
                                     checkpoint=best.path, started=t0, fitted=t_fit, finished=time.time())))
    tune.report({"done": 1, "rows_file": str(path)})


def run_grid(cfg: ScalingJobConfig, points: list[GridPoint], tuning: list[str],
             held: list[str], parent_run_id: str | None, out: Path, log) -> list[dict]:
    """Run every grid point as a Tune trial (``grid.max_concurrent`` at once); their results in grid order."""
    from ray import tune
    g = cfg.grid
    _, exp_dir = experiment_dir(g.storage_path, g.name)
    trainable = tune.with_resources(
        tune.with_parameters(run_point, cfg=cfg, points=points, tuning=tuning,
                             held=held, parent_run_id=parent_run_id, out=str(out.resolve())),
        {"CPU": g.point_cpus})
    save_parent(exp_dir, parent_run_id)
    log(f"[scaling] {len(points)} grid points, up to {g.max_concurrent} at once (Tune experiment {exp_dir})")
    done = run_trials(trainable, len(points), "point", g.name, g.storage_path, g.resume, g.max_concurrent, "grid", log)
    return [json.loads(Path(done[i]["rows_file"]).read_text()) for i in range(len(points))]


def run(cfg: ScalingJobConfig, log=print) -> dict:
    """Prepare, train every grid point, evaluate; returns ``{'table', 'points', 'figures', 'run_id'}``."""
    import matplotlib.pyplot as plt
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.evaluate.report import alignment_report, with_cache
    prepared = setup(cfg, cfg.checks(), log)             # data, shards, import/pretraining once, here
    fit, ds = prepared.fit, prepared.dataset
    tuning = list(prepared.plan.selected)
    held = held_out(fit.shards, cfg.eval.participants, tuning)
    out = Path(cfg.eval.out_dir) / cfg.grid.name
    tracker = Tracker(fit.tracking)
    points: list[dict] = []
    _, exp_dir = experiment_dir(cfg.grid.storage_path, cfg.grid.name)
    with open_parent(tracker, cfg.grid.name, exp_dir, cfg.grid.resume, to_dict(cfg),
                     {"job": "scaling"}, log) as tr:
        log(f"[scaling] untuned model on held-out {held}")
        base = dataclasses.replace(cfg.eval, features=with_cache(cfg.eval.features, str(out)))   # one cache
        cfg = dataclasses.replace(cfg, eval=base)
        untuned = alignment_report(ds, [ModelSpec("untuned", fit.model)], dataclasses.replace(
            base, out_dir=str(out / "untuned")), held, None, log)
        grid = [GridPoint(size=size, mode=mode, repeat=k, unit=cfg.grid.unit,
                          label=point_label(mode, size, k, cfg.grid.repeats))
                for size in cfg.grid.sizes for mode in cfg.grid.modes for k in range(cfg.grid.repeats)]
        points = run_grid(dataclasses.replace(cfg, fit=fit), grid, tuning, held, tr.run_id, out, log)
        for pt in points:
            log(f"[scaling] {pt['label']}: fit {pt['fitted'] - pt['started']:.0f} s, "
                f"evaluation {pt['finished'] - pt['fitted']:.0f} s")
        table = scaling_table(untuned, points)
        figures = {}
        for name, fig in zip(("scaling_alignment.png", "scaling_new_participant_data.png"), plot_scaling(table)):
            figures[name] = save_figure(fig, out / name)
            tr.log_figure(fig, f"scaling/{name}")
            plt.close(fig)
        tr.log_table(table, "scaling/scaling.csv")
        tr.log_table(untuned + [r for pt in points for r in pt["rows"]], "scaling/alignment_rows.csv")
        for r in table:
            tr.log_metrics({f"scaling.{r['mode']}.{r['region']}.tuned": r["tuned"],
                            f"scaling.{r['mode']}.{r['region']}.efficiency_ratio": r["efficiency_ratio"]},
                           step=int(r["size"] * (1 if cfg.grid.unit == "stories" else 60)))
        run_id = tr.run_id
    log("[scaling] alignment: the headline (mean over layers, voxels and held-out participants; min and max over "
        "repeats). Efficiency ratio = untuned full-data hours / hours the tuned model needs to match it, each model "
        "at its own CV-best layer per participant (the layers may differ: alignment_rows.csv names them):")
    for r in table:
        spread = f" [{r['tuned_min']:.3f}, {r['tuned_max']:.3f}]" if r["repeats"] > 1 else ""
        log(f"  {r['mode']:>6} @ {r['size']:g} {r['unit']:<7} {r['region']:>9}: alignment {r['tuned']:.3f}{spread} "
            f"(untuned {r['untuned']:.3f}), new participant needs {60 * r['new_participant_hours']:.1f} of "
            f"{60 * r['untuned_hours']:.1f} min → ratio {r['efficiency_ratio']:.2f}")
    log(f"[scaling] figures in {out}; MLflow {tracker.outcome(run_id)}")
    return dict(table=table, points=points, untuned=untuned, figures=figures, run_id=run_id)
