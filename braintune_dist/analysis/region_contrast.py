"""Semantic–auditory region contrast: per layer, the alignment of semantic-region voxels relative to
auditory-region voxels, and how brain-tuning changes it. A property of the brain data's regions, not of the
representation alone: the papers' semantic–phonetic preference (word pairs) is
``braintune_dist.downstream.preference``.

Per model, layer and participant (and all participants' voxels pooled): mean r / noise ceiling of the
semantic voxels and of the auditory voxels, contrast = semantic − auditory with a stratified bootstrap
CI and a Mann-Whitney p. Against the reference (untuned) model, the change of contrast is the same
statistic on per-voxel differences ``r_model − r_reference`` (a difference in differences).
"""
from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from braintune_dist.analysis.compare import StatsSettings, voxel_values  # noqa: E402
from braintune_dist.evaluate.encoding import VoxelScores  # noqa: E402
from braintune_dist.analysis.figures import offsets  # noqa: E402
from braintune_dist.analysis.stats import add_corrections, bootstrap_ci, compare_groups  # noqa: E402


@dataclass
class RegionContrastSettings:
    """Which regions the semantic–auditory region contrast compares."""

    enabled: bool = True
    """Compute the region contrast (needs both regions in the common space)."""
    semantic_region: str = "semantic"
    """Region of semantic / late-language voxels (simulated data: 'semantic')."""
    auditory_region: str = "auditory"
    """Region of auditory voxels (simulated data: 'auditory')."""


def _units(scores: dict[str, VoxelScores], layer, region: str, threshold: float, measure: str,
           reference: dict[str, VoxelScores] | None = None) -> dict[str, np.ndarray]:
    """subject (and 'pooled' with 2+ subjects) → (n_region_voxels,) values (minus the reference's, if given)."""
    out = {}
    for sub, vs in scores.items():
        v = voxel_values(vs, layer, region, threshold, measure)
        out[sub] = v if reference is None else v - voxel_values(reference[sub], layer, region, threshold, measure)
    if len(out) > 1:
        out["pooled"] = np.concatenate(list(out.values()))
    return out


def region_contrast_table(scores: dict[str, dict[str, VoxelScores]], threshold: float, stats: StatsSettings,
                          settings: RegionContrastSettings | None = None, reference: str = "untuned") -> list[dict]:
    """Semantic–auditory region contrast of every model and its change against ``reference``, per layer and
    participant.

    Parameters
    ----------
    scores : model → subject → VoxelScores
    threshold : noise-ceiling threshold of r / ceiling

    Returns
    -------
    rows : list of dict
        ``{model, comparison ('semantic - auditory' | 'change vs <reference>'), layer, subject, n_a, n_b,
        mean_a (semantic), mean_b (auditory), diff (contrast), ci_low, ci_high, p, semantic_ci_low,
        semantic_ci_high, auditory_ci_low, auditory_ci_high, p_holm, p_fdr}``.
    """
    st = settings or RegionContrastSettings()
    rows = []
    for model, by_sub in scores.items():
        changes = [(None, "semantic - auditory")]
        if reference in scores and model != reference:
            changes.append((scores[reference], f"change vs {reference}"))
        for ref, comparison in changes:
            for layer in next(iter(by_sub.values())).r:
                sem = _units(by_sub, layer, st.semantic_region, threshold, stats.measure, ref)
                aud = _units(by_sub, layer, st.auditory_region, threshold, stats.measure, ref)
                for sub in sem:
                    res = compare_groups(sem[sub], aud[sub], stats.n_boot, stats.ci, stats.seed)
                    extra = {}
                    for name, vals in (("semantic", sem[sub]), ("auditory", aud[sub])):
                        lo, hi = bootstrap_ci(vals, stats.n_boot, stats.ci, seed=stats.seed)
                        extra.update({f"{name}_ci_low": float(lo), f"{name}_ci_high": float(hi)})
                    rows.append(dict(model=model, comparison=comparison, layer=layer, subject=sub, **res, **extra))
    return add_corrections(rows)


def plot_region_contrast(rows: list[dict], title: str = "Semantic–auditory region contrast per layer",
                         settings: RegionContrastSettings | None = None, measure: str = "r_norm",
                         ci: float = 0.95) -> plt.Figure:
    """Two panels over layers, one colour per model: (left) mean r / ceiling of semantic (solid) and auditory
    (dashed) voxels with bootstrap CIs; (right) contrast = semantic − auditory with its CI.

    rows : ``region_contrast_table`` rows; the pooled rows are drawn (the only subject's rows when there is one).
    measure, ci : what the rows hold (StatsSettings.measure, .ci), for the labels.
    """
    st = settings or RegionContrastSettings()
    own = [r for r in rows if r["comparison"] == "semantic - auditory"]
    unit = "pooled" if any(r["subject"] == "pooled" for r in own) else own[0]["subject"]
    own = [r for r in own if r["subject"] == unit]
    models = list(dict.fromkeys(r["model"] for r in own))
    layers = list(dict.fromkeys(r["layer"] for r in own))
    x = {lay: i for i, lay in enumerate(layers)}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    fig.suptitle(title)
    off = offsets(len(models))
    for i, model in enumerate(models):
        mr = sorted((r for r in own if r["model"] == model), key=lambda r: x[r["layer"]])
        xs = np.array([x[r["layer"]] for r in mr]) + off[i]
        c = colours[i % len(colours)]
        for region, key, style, marker in ((st.semantic_region, "semantic", "-", "o"),
                                           (st.auditory_region, "auditory", "--", "s")):
            y = np.array([r["mean_a" if key == "semantic" else "mean_b"] for r in mr])
            err = np.abs(np.array([[r[f"{key}_ci_low"] for r in mr], [r[f"{key}_ci_high"] for r in mr]]) - y)
            ax1.errorbar(xs, y, yerr=err, color=c, ls=style, marker=marker, capsize=3,
                         label=f"{model}: {region} voxels")
        y = np.array([r["diff"] for r in mr])
        err = np.abs(np.array([[r["ci_low"] for r in mr], [r["ci_high"] for r in mr]]) - y)
        ax2.errorbar(xs, y, yerr=err, color=c, marker="o", capsize=3, label=model)
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(layers)), [str(lay) for lay in layers])
        ax.set_xlabel("layer (hidden_states index)")
        ax.axhline(0, color="grey", lw=0.6)
        ax.grid(alpha=0.3)
    measure = "r / noise ceiling" if measure == "r_norm" else "Pearson r"
    ax1.set_title(f"alignment by region ({unit} voxels)")
    ax1.set_ylabel(f"mean {measure} (test story, unitless)")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)   # below: 2 lines per model
    ax2.set_title(f"semantic–auditory region contrast ({unit} voxels)")
    ax2.set_ylabel(f"{st.semantic_region} − {st.auditory_region} ({measure})")
    ax2.legend(title="model", fontsize=8)
    fig.tight_layout()
    fig.text(0.99, 0.01, f"error bars: {ci:.0%} bootstrap CI over voxels", ha="right", fontsize=8, color="grey")
    return fig
