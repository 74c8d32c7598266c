"""Alignment figures: per-layer alignment by region, and data-efficiency curves (matplotlib, Agg)."""
from __future__ import annotations

from collections import defaultdict

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _mean_over_subjects(rows: list[dict], kind: str, x_key: str) -> dict[tuple[str, str], tuple[list, list, list]]:
    """(model, region) → (x values, mean over subjects, sem over subjects) of mean_r_norm."""
    acc: dict[tuple[str, str], dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["kind"] == kind and np.isfinite(r["mean_r_norm"]):
            acc[(r["model"], r["region"])][r[x_key]].append(r["mean_r_norm"])
    out = {}
    for key, by_x in acc.items():
        xs = sorted(by_x)
        vals = [np.asarray(by_x[x]) for x in xs]
        out[key] = (xs, [v.mean() for v in vals], [v.std() / np.sqrt(len(v)) if len(v) > 1 else 0 for v in vals])
    return out


def _region_axes(regions: list[str], title: str):
    fig, axes = plt.subplots(1, len(regions), figsize=(4.2 * len(regions), 3.6), sharey=True, squeeze=False)
    fig.suptitle(title)
    return fig, dict(zip(regions, axes[0]))


def plot_layers(rows: list[dict], title: str = "Brain alignment per layer") -> plt.Figure:
    """Mean normalised alignment (r / noise ceiling) per layer, one panel per region, one line per model."""
    curves = _mean_over_subjects(rows, "layer", "layer")
    regions = sorted({reg for _, reg in curves}, key=lambda s: (s != "all", s))
    fig, axes = _region_axes(regions, title)
    for (model, region), (xs, ys, es) in sorted(curves.items()):
        axes[region].errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=model)
    for region, ax in axes.items():
        ax.set_title(f"region: {region}")
        ax.set_xlabel("layer (hidden_states index)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    first = axes[regions[0]]
    first.set_ylabel("mean r / noise ceiling (test story)")
    first.legend(title="model", fontsize=8)
    fig.tight_layout()
    return fig


def plot_efficiency(rows: list[dict], title: str = "Data efficiency for new participants") -> plt.Figure:
    """Mean normalised alignment vs hours of the participant's training data, per region and model."""
    curves = _mean_over_subjects(rows, "efficiency", "hours")
    regions = sorted({reg for _, reg in curves}, key=lambda s: (s != "all", s))
    fig, axes = _region_axes(regions, title)
    for (model, region), (xs, ys, es) in sorted(curves.items()):
        axes[region].errorbar(np.asarray(xs) * 60, ys, yerr=es, marker="o", capsize=3, label=model)
    for region, ax in axes.items():
        ax.set_title(f"region: {region}")
        ax.set_xlabel("encoding-model training data (minutes of fMRI)")
        ax.grid(alpha=0.3)
    first = axes[regions[0]]
    first.set_ylabel("mean r / noise ceiling (test story)")
    first.legend(title="model", fontsize=8)
    fig.tight_layout()
    return fig
