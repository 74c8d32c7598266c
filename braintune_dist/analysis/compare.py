"""Paired comparisons of per-voxel alignment between two sets of scores (tuned vs untuned model, full vs
residual features), per layer and region, with a CI and a p-value on every row.

Units: the voxels of each participant (one row per participant), all participants' voxels pooled
(``subject = 'pooled'``) and, with two or more participants, the participants' region means
(``subject = 'all'``, ``unit = 'participants'``). The measure is r / noise ceiling (voxels whose ceiling
is ≤ the threshold drop out) or raw r.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from braintune_dist.evaluate.encoding import VoxelScores
from braintune_dist.analysis.stats import add_corrections, compare_paired


@dataclass
class StatsSettings:
    """Paired tests, bootstrap confidence intervals and multiple-comparison correction."""

    measure: Literal["r_norm", "r"] = "r_norm"
    """Per-voxel measure compared: r / noise ceiling (voxels above the ceiling threshold) or raw r."""
    n_boot: int = 2000
    """Bootstrap resamples of each confidence interval."""
    ci: float = 0.95
    """Confidence level of the intervals."""
    seed: int = 0
    """Seed of the bootstrap resamples."""


def voxel_values(vs: VoxelScores, layer, region: str, threshold: float, measure: str = "r_norm") -> np.ndarray:
    """(n_region_voxels,) the measure of ``region``'s voxels at ``layer`` (NaN where the ceiling is too low)."""
    vals = vs.r_norm(layer, threshold) if measure == "r_norm" else np.asarray(vs.r[layer], np.float64)
    return vals[vs.region_mask(region)]


def paired_table(a: dict[str, VoxelScores], b: dict[str, VoxelScores], threshold: float, stats: StatsSettings,
                 **keys) -> list[dict]:
    """Compare scores ``a`` with ``b`` (same subjects, voxels, layers) on every layer and region.

    Parameters
    ----------
    a, b : subject → VoxelScores
    keys : constant columns put first in every row (e.g. ``model=``, ``comparison=``)

    Returns
    -------
    rows : list of dict
        ``{**keys, layer, region, subject, unit, n, mean_a, mean_b, diff, ci_low, ci_high, p, p_holm,
        p_fdr}``; ``diff`` = mean(a − b); Holm / BH corrections run over the rows of this table.
    """
    participants = list(a)
    first = a[participants[0]]
    rows = []
    for layer in first.r:
        for region in first.region_names():
            per_sub = {s: (voxel_values(a[s], layer, region, threshold, stats.measure),
                           voxel_values(b[s], layer, region, threshold, stats.measure)) for s in participants}
            units = dict(per_sub)
            if len(participants) > 1:
                units["pooled"] = tuple(np.concatenate([v[i] for v in per_sub.values()]) for i in (0, 1))
            for sub, (va, vb) in units.items():
                res = compare_paired(va, vb, stats.n_boot, stats.ci, seed=stats.seed)
                rows.append(dict(keys, layer=layer, region=region, subject=sub, unit="voxels", **res))
            if len(participants) > 1:
                means = np.array([[np.nanmean(v) if np.isfinite(v).any() else np.nan for v in pair]
                                  for pair in per_sub.values()])                # (n_subjects, 2)
                res = compare_paired(means[:, 0], means[:, 1], stats.n_boot, stats.ci, seed=stats.seed)
                rows.append(dict(keys, layer=layer, region=region, subject="all", unit="participants", **res))
    return add_corrections(rows)


def compare_models(scores: dict[str, dict[str, VoxelScores]], reference: str, threshold: float,
                   stats: StatsSettings, kind: str = "full") -> list[dict]:
    """Every model against ``reference`` (e.g. each checkpoint vs 'untuned') on ``kind`` features.

    scores : model → subject → VoxelScores → rows of :func:`paired_table` with ``comparison =
    '<model> - <reference>'`` and ``kind``; one multiple-comparison family over all models.
    """
    if reference not in scores:
        raise ValueError(f"reference model {reference!r} not among {sorted(scores)}")
    rows = []
    for model in scores:
        if model != reference:
            rows += paired_table(scores[model], scores[reference], threshold, stats,
                                 comparison=f"{model} - {reference}", kind=kind)
    return add_corrections(rows)
