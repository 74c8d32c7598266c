"""Alignment figures: per-layer alignment by region, and data-efficiency curves (matplotlib, Agg)."""
from __future__ import annotations

from collections import defaultdict

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# processing stages of the simulated brain (acoustic → meaning), drawn in this order before other regions
STAGE_REGIONS = ("auditory", "phonetic", "lexical", "semantic")


def _region_order(region: str) -> tuple:
    order = ("all",) + STAGE_REGIONS
    return (order.index(region) if region in order else len(order), region)


def _mean_over_participants(rows: list[dict], kind: str, x_key: str) -> dict[tuple[str, str], tuple[list, list, list]]:
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


def _curves_by_region(rows: list[dict], kind: str, x_key: str, title: str, xlabel: str, x_scale: float = 1.0,
                      integer_x: bool = False) -> plt.Figure:
    """One panel per region (``all`` first), one errorbar line per model of mean_r_norm against ``x_key``."""
    curves = _mean_over_participants(rows, kind, x_key)
    regions = sorted({reg for _, reg in curves}, key=_region_order)
    fig, axes = plt.subplots(1, len(regions), figsize=(4.2 * len(regions), 3.6), sharey=True, squeeze=False)
    fig.suptitle(title)
    axes = dict(zip(regions, axes[0]))
    for (model, region), (xs, ys, es) in sorted(curves.items()):
        axes[region].errorbar(np.asarray(xs) * x_scale, ys, yerr=es, marker="o", capsize=3, label=model)
    for region, ax in axes.items():
        ax.set_title(f"region: {region}")
        ax.set_xlabel(xlabel)
        if integer_x:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    first = axes[regions[0]]
    first.set_ylabel("mean r / noise ceiling (test story)")
    first.legend(title="model", fontsize=8)
    fig.tight_layout()
    return fig


def plot_layers(rows: list[dict], title: str = "Brain alignment per layer") -> plt.Figure:
    """Mean normalised alignment (r / noise ceiling) per layer, one panel per region, one line per model."""
    return _curves_by_region(rows, "layer", "layer", title, "layer (hidden_states index)", integer_x=True)


def grouped_bars(rows: list[dict], key: str, categories: list, reference: str, height: float = 3.8):
    """One group of bars per category (``row[key]``), one bar per model group, the reference first: height =
    ``mean``, error bar = ``se`` (its unit, ``se_over``, and the seed count in the legend).

    Returns
    -------
    fig, ax, placed : ``placed[model] = (x positions (n_categories,), rows (None where missing))``
    """
    models = list(dict.fromkeys(r["model"] for r in rows))
    models.sort(key=lambda m: m != reference)
    get = {(r["model"], r[key]): r for r in rows}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(categories) * max(1, len(models) / 2), height))
    placed = {}
    for i, model in enumerate(models):
        rs = [get.get((model, c)) for c in categories]
        xs = np.arange(len(categories)) + (i - (len(models) - 1) / 2) * width
        first = next(r for r in rs if r)
        seeds = f", {first['n_seeds']} seeds" if first["n_seeds"] > 1 else ""
        ax.bar(xs, [r["mean"] if r else np.nan for r in rs], width,
               yerr=[np.nan_to_num(r["se"]) if r else 0 for r in rs], capsize=2,
               label=f"{model}{seeds} (± SE over {first['se_over']})")
        placed[model] = (xs, rs)
    ax.set_xticks(np.arange(len(categories)), categories)
    return fig, ax, placed


def plot_summary(table: list[dict], title: str = "Brain alignment") -> plt.Figure:
    """The headline as the papers draw it (ICLR 2025 Fig. 2): one group of bars per region, one bar per model
    group, height = r / noise ceiling averaged over voxels, the layers named and participants (and seeds), error
    bars = its SE (unit in the legend), ``*`` above a bar whose difference to the reference has p < 0.05."""
    regions = sorted(dict.fromkeys(r["region"] for r in table), key=_region_order)
    fig, ax, placed = grouped_bars(table, "region", regions, table[0]["reference"])
    for xs, rs in placed.values():
        for x, r in zip(xs, rs):
            if r and np.isfinite(r["p"]) and r["p"] < 0.05:
                ax.text(x, r["mean"] + np.nan_to_num(r["se"]) + 0.01, "*", ha="center", fontsize=12)
    ax.set_ylabel(f"r / noise ceiling, {table[0]['layers']}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title(f"{title}\n* p < 0.05 against {table[0]['reference'] or '—'} (test per bar in summary.csv)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_efficiency(rows: list[dict], title: str = "Data efficiency for new participants") -> plt.Figure:
    """Mean normalised alignment vs minutes of the participant's training data, per region and model."""
    return _curves_by_region(rows, "efficiency", "hours", title, "encoding-model training data (minutes of fMRI)",
                             x_scale=60.0)


def plot_stages(rows: list[dict], title: str = "Alignment per layer, by processing stage") -> plt.Figure | None:
    """One panel per model, one line per stage region (acoustic → semantic) of mean r / noise ceiling per
    layer, its peak marked: where each stage is best predicted, before and after tuning. None when the
    rows hold fewer than two stage regions."""
    curves = _mean_over_participants(rows, "layer", "layer")
    stages = [s for s in STAGE_REGIONS if any(reg == s for _, reg in curves)]
    if len(stages) < 2:
        return None
    models = sorted({m for m, _ in curves}, key=lambda m: (m != "untuned", m))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    fig.suptitle(title)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, len(stages)))
    for ax, model in zip(axes[0], models):
        for colour, stage in zip(colours, stages):
            if (model, stage) not in curves:
                continue
            xs, ys, es = curves[(model, stage)]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colour, label=stage)
            k = int(np.argmax(ys))
            ax.plot([xs[k]], [ys[k]], marker="*", ms=14, color=colour, mec="black", ls="none")
        ax.set_title(f"model: {model}")
        ax.set_xlabel("layer (hidden_states index)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean r / noise ceiling (test story)")
    axes[0][0].legend(title="stage (★ = peak layer)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_surface_map(surface, per_hemi: dict, title: str, diverging: bool, threshold: float, vmax: float | None = None):
    """One map on the inflated (lateral view) and flat meshes of both hemispheres, sulcal depth as shading.

    per_hemi : {'left', 'right'} → (n_per_hemi,) values, NaN = no data (drawn as background)
    diverging : symmetric colour scale around 0 (differences) instead of a sequential one
    threshold : |value| below it is not coloured (stated in the title)
    """
    from nilearn import plotting
    finite = np.concatenate([v[np.isfinite(v)] for v in per_hemi.values()])
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
    vmax = max(vmax, threshold * 1.5, 1e-6)
    cmap = "RdBu_r" if diverging else "hot"
    fig, axes = plt.subplots(2, 2, subplot_kw={"projection": "3d"}, figsize=(9, 7.5))
    for j, hemi in enumerate(("left", "right")):
        vals = np.nan_to_num(per_hemi[hemi], nan=0.0)     # 0 is below the threshold: not coloured
        for i, (kind, view) in enumerate((("inflated", "lateral"), ("flat", "dorsal"))):
            plotting.plot_surf_stat_map(
                surface.meshes[kind][hemi], vals, bg_map=surface.sulc[hemi], hemi=hemi, view=view,
                cmap=cmap, threshold=threshold, vmax=vmax, vmin=-vmax if diverging else 0.0,
                symmetric_cbar=diverging, colorbar=False, axes=axes[i, j], figure=fig)
            axes[i, j].set_title(f"{hemi}, {kind}", fontsize=9)
    rule = f"|value| < {threshold:g}" if diverging else f"value < {threshold:g}"
    fig.suptitle(f"{title}\n({surface.name}; {rule} and vertices without data not coloured)", fontsize=10)
    fig.subplots_adjust(left=0, right=0.9, bottom=0, top=0.88, wspace=0, hspace=0.05)
    norm = matplotlib.colors.Normalize(-vmax if diverging else 0.0, vmax)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), cax=fig.add_axes([0.92, 0.3, 0.015, 0.4]))
    return fig
