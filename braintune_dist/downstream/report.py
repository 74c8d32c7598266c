"""Probe results as the papers report them: per layer, and averaged over layers per task, models side by side
with the naive classifier's level; brain-tuned seeds are replicates (± SE over model seeds).

Units of spread: a model group with several tuning seeds is summarised over those seeds (each seed's value is
its mean over probe seeds); a single model (untuned) over its probe seeds, which bound only the probe's own noise.
"""
from __future__ import annotations

from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from braintune_dist.downstream.probe import ProbeResult  # noqa: E402
from braintune_dist.evaluate.figures import grouped_bars  # noqa: E402
from braintune_dist.evaluate.summary import group_of, layers_label  # noqa: E402

METRICS = ("f1_macro", "f1_micro", "accuracy")


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _by(results: list[ProbeResult]) -> dict:
    """(model, task) → layer → seed → ProbeResult."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in results:
        out[(r.model, r.task)][r.layer][r.seed] = r
    return out


def layer_table(results: list[ProbeResult]) -> list[dict]:
    """One row per (model, task, layer): each metric's mean and SD over probe seeds, and the chosen settings."""
    rows = []
    for (model, task), per_layer in _by(results).items():
        for layer, per_seed in sorted(per_layer.items()):
            rs = list(per_seed.values())
            row = dict(model=model, group=group_of(model), task=task, layer=layer, n_probe_seeds=len(rs))
            for m in METRICS:
                v = np.array([getattr(r, m) for r in rs])
                row[m], row[f"{m}_sd"] = float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else float("nan")
            row["epochs"] = " ".join(str(r.epoch) for r in rs)
            row["lrs"] = " ".join(f"{r.lr:g}" for r in rs)
            row["weight_decays"] = " ".join(f"{r.weight_decay:g}" for r in rs)
            rows.append(row)
    return rows


def _layer_means(results: list[ProbeResult], metric: str) -> dict:
    """(model, task) → (n_probe_seeds,) the metric averaged over layers, per probe seed."""
    out = {}
    for key, per_layer in _by(results).items():
        seeds = sorted(set.intersection(*(set(s) for s in per_layer.values())))
        out[key] = np.array([np.mean([getattr(per_layer[lay][s], metric) for lay in per_layer]) for s in seeds])
    return out


def summary_table(results: list[ProbeResult], naive: dict[str, dict], reference: str = "untuned") -> list[dict]:
    """The headline: one row per (model group, task, metric), averaged over the probed layers.

    Parameters
    ----------
    naive : task → the naive classifier's test scores (``metrics.levels(task)["majority"]``)

    Returns
    -------
    rows : ``{model, n_seeds, task, metric, layers, mean, se, se_over, naive, diff, diff_se, p, test}``;
        ``diff`` = group − reference (NaN for the reference itself).
    """
    from scipy import stats
    layers = sorted({r.layer for r in results})
    rows = []
    for metric in METRICS:
        per = _layer_means(results, metric)                  # (model, task) → (n_probe_seeds,)
        groups: dict = defaultdict(list)
        for model, task in per:
            groups[(group_of(model), task)].append(model)
        for (group, task), members in groups.items():
            vals = np.array([per[(m, task)].mean() for m in members])            # (n_model_seeds,)
            if len(members) > 1:
                se, over = _se(vals), "seeds"
            else:
                se, over = _se(per[(members[0], task)]), "probe seeds"
            row = dict(model=group, n_seeds=len(members), task=task, metric=metric, layers=layers_label(layers),
                       mean=float(vals.mean()), se=se, se_over=over, naive=naive[task][metric],
                       diff=float("nan"), diff_se=float("nan"), p=float("nan"), test="")
            ref = per.get((reference, task))
            if ref is not None and group != reference:
                if len(members) > 1:
                    d, test = vals - ref.mean(), "t-test over seeds"
                else:                                       # the same probe seeds on both: paired
                    d, test = per[(members[0], task)] - ref, "paired t-test over probe seeds"
                p = float(stats.ttest_1samp(d, 0.0).pvalue) if d.size > 1 and np.ptp(d) > 0 else float("nan")
                row.update(diff=float(d.mean()), diff_se=_se(d), p=p, test=test)
            rows.append(row)
    return rows


def format_summary(rows: list[dict], metric: str = "f1_macro") -> list[str]:
    """Printable headline lines of one metric, task by task."""
    rows = [r for r in rows if r["metric"] == metric]
    if not rows:
        return []
    out = [f"[downstream] headline: test {metric.replace('_', ' ')}, {rows[0]['layers']} over layers; "
           "± SE over the unit named; Δ against untuned:"]
    for task in dict.fromkeys(r["task"] for r in rows):
        out.append(f"  {task} (naive majority {rows[[r['task'] for r in rows].index(task)]['naive']:.3f}):")
        for r in (r for r in rows if r["task"] == task):
            name = f"{r['model']} ({r['n_seeds']} seeds)" if r["n_seeds"] > 1 else r["model"]
            line = f"    {name:>28}: {r['mean']:.3f} ± {r['se']:.3f} ({r['se_over']})"
            if np.isfinite(r["diff"]):
                line += f"   Δ {r['diff']:+.3f} ± {r['diff_se']:.3f}, p {r['p']:.2g} ({r['test']})"
            out.append(line)
    return out


def plot_summary(rows: list[dict], metric: str = "f1_macro", title: str = "Downstream probes") -> plt.Figure:
    """Bars per task, one per model group (± SE, unit in the legend), the naive classifier as a black dash."""
    rows = [r for r in rows if r["metric"] == metric]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, ax, _ = grouped_bars(rows, "task", tasks, "untuned")
    for j, t in enumerate(tasks):
        level = next(r["naive"] for r in rows if r["task"] == t)
        ax.hlines(level, j - 0.45, j + 0.45, colors="black", linestyles="--", lw=1,
                  label="naive majority" if j == 0 else None)
    ax.set_ylabel(f"test {metric.replace('_', ' ')}, {rows[0]['layers']} over layers")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_layers(layer_rows: list[dict], metric: str = "f1_macro", title: str = "Probe score per layer") -> plt.Figure:
    """One panel per task: the metric per layer, one line per model group (mean over its seeds)."""
    tasks = list(dict.fromkeys(r["task"] for r in layer_rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        per: dict = defaultdict(lambda: defaultdict(list))
        for r in (r for r in layer_rows if r["task"] == task):
            per[r["group"]][r["layer"]].append(r[metric])
        for group, by_layer in per.items():
            xs = sorted(by_layer)
            ax.plot(xs, [np.mean(by_layer[x]) for x in xs], marker="o", ms=3, label=group)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric.replace("_", " "))
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
