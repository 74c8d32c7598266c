"""Alignment reports: several models (e.g. untuned vs brain-tuned) on the same participants → table,
figures and MLflow metrics."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.model.backbone import Backbone
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.voxels import find_common_space
from braintune_dist.features.extract import FeatureConfig, FeatureExtractor
from braintune_dist.tracking import Tracker, save_figure
from braintune_dist.evaluate.alignment import RidgeConfig, evaluate_alignment
from braintune_dist.evaluate.figures import plot_efficiency, plot_layers


@dataclass
class EvalSettings:
    """Which participants, stories, features and ridge settings the alignment report uses."""

    enabled: bool = True
    """Run the alignment report."""
    subjects: list[str] = field(default_factory=list)
    """Participants to evaluate; empty = those not used for tuning (held out), else all."""
    train_stories: list[str] = field(default_factory=list)
    """Stories the encoding models are fit on; empty = the dataset's training split (in order)."""
    efficiency_stories: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """Training-story counts of the new-participant data-efficiency curve ([] = skip)."""
    common_space: str = ""
    """Directory with the region labels (common_space.npz + maps); '' = <root>/ground_truth if present."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Feature extraction (window, stride, layers, delays, cache)."""
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    """Voxel-wise ridge settings."""
    out_dir: str = "runs/reports"
    """Where figures and tables are written (and logged to MLflow)."""


def headline(rows: list[dict]) -> dict[str, float]:
    """``{'<model>/<region>': mean over subjects of r/ceiling at the model's best layer}``."""
    by: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["kind"] == "layer":
            by[(r["model"], r["region"])][r["layer"]].append(r["mean_r_norm"])
    best_layer = {m: max((np.nanmean(v), lay) for lay, v in by[(m, "all")].items())[1]
                  for m, _ in by if (m, "all") in by}
    return {f"{m}/{reg}": float(np.nanmean(by[(m, reg)][best_layer[m]])) for m, reg in by if m in best_layer}


def alignment_report(ds: LebelDataset, models: dict[str, Backbone], ev: EvalSettings, subjects: list[str],
                     tracker: Tracker | None = None, log=print, tag: str = "") -> list[dict]:
    """Evaluate every model on ``subjects``; write/log the table, the figures and headline metrics."""
    train_stories = list(ev.train_stories) or ds.split()["train"]
    space = find_common_space(ds.root, ev.common_space, subjects)
    rows: list[dict] = []
    for label, backbone in models.items():
        fx = FeatureExtractor(backbone, ev.features)
        r, _ = evaluate_alignment(ds, fx, subjects, train_stories, ev.ridge, space,
                                  ev.efficiency_stories, label=label)
        rows += r
    out = Path(ev.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"alignment_per_layer.png": plot_layers(rows, f"Brain alignment per layer (held-out: {', '.join(subjects)})")}
    if ev.efficiency_stories:
        figs["data_efficiency.png"] = plot_efficiency(rows)
    import matplotlib.pyplot as plt
    for name, fig in figs.items():
        save_figure(fig, out / f"{tag}{name}")
        if tracker:
            tracker.log_figure(fig, f"report/{name}")
        plt.close(fig)
    if tracker:
        tracker.log_table(rows, "report/alignment.csv")
    head = headline(rows)
    if tracker:
        tracker.log_metrics({f"align.{k}": v for k, v in head.items()})
    log("[alignment] mean r / noise ceiling at each model's best layer (held-out participants):")
    for k, v in sorted(head.items()):
        log(f"  {k:>28}: {v:.3f}")
    log(f"[alignment] figures in {out}")
    return rows
