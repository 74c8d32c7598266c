"""Low-level impact (Moussa, Klakow & Toneva, ICLR 2025, Eq. 2): how much of a model's brain alignment low-level
speech features explain.

    R = 100 · (B_o − B_r) / B_o

``B_o`` is the headline alignment (r / noise ceiling averaged over a region's voxels, the headline's layers and
the held-out participants) of the model's features; ``B_r`` the same after a ridge prediction of the features
from one low-level space, fit on the training stories only, is subtracted (``analysis/residual.py``). R is
computed per model and low-level space, averaged over the spaces, then over a group's replicate seeds (mean ± SE
over seeds). R is undefined (NaN) where ``B_o`` ≤ 0: a model that does not predict a region has no alignment to
explain. Brain-tuning lowering R in late language regions is the paper's finding.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from braintune_dist.analysis.residual import ResidualSettings, residual_source
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.featurize import featurize
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.evaluate.summary import group_of, headline_value


def headline_of(scores: dict, layers: list, threshold: float) -> dict[tuple[str, str], float]:
    """(model, region) → mean over participants of the region's voxel mean of r / ceiling averaged over layers.
    ``scores``: model → participant → VoxelScores."""
    return {(model, region): headline_value(per_sub, layers, threshold, region)
            for model, per_sub in scores.items() for region in next(iter(per_sub.values())).region_names()}


def impact_rows(full: dict, residual: dict[str, dict], layers: list, threshold: float) -> list[dict]:
    """One row per (model, region, low-level space): ``B_o``, ``B_r`` and ``R``.

    full : model → participant → VoxelScores of the full features
    residual : low-level space → (model → participant → VoxelScores) of the residual features
    """
    b_o = headline_of(full, layers, threshold)
    rows = []
    for space, scores in residual.items():
        for (model, region), b_r in headline_of(scores, layers, threshold).items():
            bo = b_o[(model, region)]
            rows.append(dict(model=model, region=region, lowlevel=space, B_o=bo, B_r=b_r,
                             R=100.0 * (bo - b_r) / bo if bo > 0 else np.nan))
    return rows


def impact_summary(rows: list[dict]) -> list[dict]:
    """Per (model group, region): R averaged over the low-level spaces, then mean ± SE over the group's seeds."""
    per_model: dict = defaultdict(list)
    for r in rows:
        per_model[(r["model"], r["region"])].append(r["R"])
    per_group: dict = defaultdict(list)
    for (model, region), rs in per_model.items():
        per_group[(group_of(model), region)].append(float(np.mean(rs)))     # NaN where B_o ≤ 0 (every space)
    out = []
    for (group, region), vals in per_group.items():
        v = np.asarray(vals)
        se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else np.nan
        out.append(dict(model=group, region=region, n_seeds=v.size, R=float(v.mean()), R_se=se,
                        lowlevel=",".join(sorted({r["lowlevel"] for r in rows}))))
    return out


def impact_report(ds, specs, ev, participants: list[str], report, spaces: list[str], tracker=None, log=print) -> list[dict]:
    """Low-level impact of every model of an alignment ``report`` (``evaluate.report.Report``) on ``participants``:
    residual features per low-level space, encoded like the full ones; tables logged; the summary rows."""
    from braintune_dist.evaluate.report import with_cache
    train = list(ev.train_stories) or ds.split()["train"]
    features = with_cache(ev.features, ev.out_dir)
    sources, _ = featurize(ds, specs, train + [ds.cfg.test_story], features, ev.compute, log,   # cached already
                           field="eval.features.cache_dir")
    space = find_common_space(ds.root, ev.common_space, participants)
    residual = {}
    for low in spaces:
        settings = dataclasses.replace(ResidualSettings(), spaces=[low])
        resid = {label: residual_source(src, ds, train, settings, features, ev.ridge.backend)
                 for label, src in sources.items()}
        _, residual[low] = encode(ds, resid, participants, train, ev.ridge, space, ev.compute, log=log)
    rows = impact_rows(report.scores, residual, report.layers, ev.ridge.nc_threshold)
    summary = impact_summary(rows)
    if tracker:
        tracker.log_table(rows, "report/lowlevel_impact.csv")
        tracker.log_table(summary, "report/lowlevel_impact_summary.csv")
        tracker.log_metrics({f"impact.{r['model']}.{r['region']}": r["R"] for r in summary})
    log(f"[impact] low-level impact R = 100 (B_o − B_r) / B_o, removing {', '.join(spaces)} in turn "
        "(lower R: less of the alignment is low-level); mean ± SE over seeds:")
    for r in sorted(summary, key=lambda r: (r["region"], r["model"] != "untuned", r["model"])):
        se = f" ± {r['R_se']:.1f}" if np.isfinite(r["R_se"]) else ""
        log(f"  {r['region']:>10} {r['model']:>16}: R {r['R']:5.1f}{se} %")
    return summary
