"""Figures of the analyses over layers: probe scores per target, alignment surviving the removal of
low-level features per region (matplotlib, Agg). The region-contrast figure is in ``region_contrast.py``."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TARGET_TITLES = {"acoustic": "acoustic (band power of the last 100 ms)", "phone": "phone identity",
                 "word": "word identity", "category": "semantic category of the word"}


def offsets(n: int, width: float = 0.16) -> np.ndarray:
    """(n,) x shifts that keep n models' markers and error bars at one layer apart."""
    return np.linspace(-width / 2, width / 2, n) if n > 1 else np.zeros(1)


def _layer_axes(groups: list[str], title: str, layers: list) -> tuple[plt.Figure, dict, dict]:
    """One panel per group (a row of up to 3, else 2 columns), layers as evenly spaced categorical x ticks."""
    ncol = len(groups) if len(groups) <= 3 else 2
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, 3.7 * nrow + 0.4), squeeze=False)
    fig.suptitle(title)
    x = {lay: i for i, lay in enumerate(layers)}
    flat = axes.ravel()
    for ax in flat[len(groups):]:
        ax.set_visible(False)
    for ax in flat[:len(groups)]:
        ax.set_xticks(range(len(layers)), [str(lay) for lay in layers])
        ax.set_xlabel("layer (hidden_states index)")
        ax.grid(alpha=0.3)
    return fig, dict(zip(groups, flat)), x


def plot_probes(results, title: str = "Layer-wise linear probes (held-out stories)") -> plt.Figure:
    """Probe score per layer, one panel per target, one line per model, dashed grey line = chance.

    results : list of ``probes.ProbeResult`` (several models); error bars are their block-bootstrap CIs.
    """
    targets = list(dict.fromkeys(r.target for r in results))
    layers = list(dict.fromkeys(r.layer for r in results))
    fig, axes, x = _layer_axes(targets, title, layers)
    models = list(dict.fromkeys(r.model for r in results))
    for model, dx in zip(models, offsets(len(models))):
        for target, ax in axes.items():
            rs = sorted((r for r in results if r.model == model and r.target == target), key=lambda r: x[r.layer])
            y = np.array([r.score for r in rs])
            err = np.abs(np.array([[r.ci_low for r in rs], [r.ci_high for r in rs]]) - y)
            ax.errorbar([x[r.layer] + dx for r in rs], y, yerr=err, marker="o", capsize=3, label=model)
    for target, ax in axes.items():
        first = next(r for r in results if r.target == target)
        ax.axhline(first.chance, color="grey", ls="--", lw=1, label="chance")
        ax.set_title(TARGET_TITLES.get(target, target), fontsize=10)
        ax.set_ylabel("R² of the band powers (held out)" if first.metric == "r2" else
                      f"accuracy, {first.n_classes} classes (held out)")
    axes[targets[0]].legend(title="model", fontsize=8)
    fig.tight_layout()
    return fig


def plot_residual(rows: list[dict], title: str = "Alignment left after removing low-level speech features",
                  measure: str = "r_norm") -> plt.Figure:
    """Mean alignment per layer with full features (solid) and low-level residuals (dashed), one panel per
    region, one colour per model.

    rows : ``residual.survival_table`` rows; the pooled rows are drawn (the only subject's when there is one).
    """
    unit = "pooled" if any(r["subject"] == "pooled" for r in rows) else rows[0]["subject"]
    rows = [r for r in rows if r["subject"] == unit and r["unit"] == "voxels"]
    regions = sorted(dict.fromkeys(r["region"] for r in rows), key=lambda s: (s != "all", s))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, axes, x = _layer_axes(regions, f"{title} ({unit} voxels)", layers)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
        for region, ax in axes.items():
            rs = sorted((r for r in rows if r["model"] == model and r["region"] == region), key=lambda r: x[r["layer"]])
            xs = [x[r["layer"]] for r in rs]
            c = colours[i % len(colours)]
            ax.plot(xs, [r["mean_a"] for r in rs], color=c, marker="o", label=f"{model}: full features")
            ax.plot(xs, [r["mean_b"] for r in rs], color=c, marker="s", ls="--", label=f"{model}: low-level removed")
    label = "r / noise ceiling" if measure == "r_norm" else "Pearson r"
    for region, ax in axes.items():
        ax.set_title(f"region: {region}")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_ylabel(f"mean {label} (test story)")
    axes[regions[0]].legend(fontsize=8)
    fig.tight_layout()
    return fig
