"""Alignment reports: several models (e.g. untuned vs brain-tuned) on the same participants → table,
figures and MLflow metrics."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.surface import load_surface
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.config import EvalSettings
from braintune_dist.evaluate.featurize import ModelSpec, featurize
from braintune_dist.evaluate.figures import plot_efficiency, plot_layers, plot_stages, plot_summary, plot_surface_map
from braintune_dist.evaluate.maps import brain_maps
from braintune_dist.evaluate.pipeline import check_inputs, encode
from braintune_dist.evaluate.summary import (at_best_layer, best_layer_notes, best_layers, control_contrast,
                                             format_contrast, format_summary, layer_mean_rows, layers_label,
                                             mean_layers, summary_table, voxel_layer_mean)
from braintune_dist.features.config import FeatureConfig
from braintune_dist.tracking import Tracker, publish


def with_cache(features: FeatureConfig, out_dir: str) -> FeatureConfig:
    """``features`` with its cache directory set (default ``<out_dir>/feature_cache``)."""
    return features if features.cache_dir else dataclasses.replace(features, cache_dir=str(Path(out_dir) / "feature_cache"))


@dataclass
class Report:
    """What one alignment report measured."""

    rows: list[dict]
    """Per (model, participant, layer or layer average, region) rows; the layer-average rows first."""
    summary: list[dict]
    """The headline table (``evaluate.summary.summary_table``): one row per (model group, region)."""
    contrast: list[dict]
    """Brain-tuned against each control group, per region (``evaluate.summary.control_contrast``)."""
    scores: dict
    """model → participant → VoxelScores."""
    layers: list
    """The layers the headline averages over."""


def alignment_report(ds: LebelDataset, models: list[ModelSpec], ev: EvalSettings, participants: list[str],
                     tracker: Tracker | None = None, log=print, tag: str = "") -> list[dict]:
    """Evaluate every model on ``participants``; write/log the tables, the figures and headline metrics; the rows."""
    return evaluate_models(ds, models, ev, participants, tracker, log, tag).rows


def evaluate_models(ds: LebelDataset, models: list[ModelSpec], ev: EvalSettings, participants: list[str],
                    tracker: Tracker | None = None, log=print, tag: str = "") -> Report:
    """:func:`alignment_report`, returning everything it measured."""
    train_stories = list(ev.train_stories) or ds.split()["train"]
    check_inputs(ds, train_stories, ev.ridge, efficiency=ev.efficiency_stories, prefix="eval.")
    space = find_common_space(ds.root, ev.common_space, participants)
    features = with_cache(ev.features, ev.out_dir)
    sources, _ = featurize(ds, models, train_stories + [ds.cfg.test_story], features, ev.compute, log,
                           field="eval.features.cache_dir")
    rows, scores = encode(ds, sources, participants, train_stories, ev.ridge, space, ev.compute,
                          efficiency=ev.efficiency_stories, log=log)
    layers = mean_layers(dict.fromkeys(r["layer"] for r in rows if r["kind"] == "layer"), ev.layers)
    table = summary_table(scores, layers, ev.ridge.nc_threshold)
    rows = layer_mean_rows(rows, layers) + rows                 # the table leads with the headline's rows
    out = Path(ev.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held = ", ".join(participants)
    figs = {"alignment_summary.png": plot_summary(table, f"Brain alignment (held-out: {held})"),
            "alignment_per_layer.png": plot_layers(rows, f"Brain alignment per layer (held-out: {held})")}
    if ev.efficiency_stories:
        figs["data_efficiency.png"] = plot_efficiency(rows)
    stages = plot_stages(rows, f"Alignment per layer by processing stage (held-out: {held})")
    if stages is not None:
        figs["alignment_by_stage.png"] = stages
    if ev.maps.enabled and space is not None and space.vertex_index is not None:
        figs.update(_maps(space, scores, best_layers(rows), ev, participants, out, tracker, tag, log))
    publish(out, tracker, "report", figures=figs, tag=tag)
    gains = gain_table(scores, layers, "untuned", ev.ridge.nc_threshold)
    contrast = control_contrast(scores, layers, ev.ridge.nc_threshold)
    publish(out, tracker, "report", tables={"summary.csv": table, "alignment.csv": rows, "gain.csv": gains,
                                             "control_contrast.csv": contrast}, tag=tag)
    if tracker:
        tracker.log_metrics({f"align.{r['model']}.{r['region']}": r["mean"] for r in table})
        tracker.log_metrics({f"align_se.{r['model']}.{r['region']}": r["se"] for r in table})
        tracker.log_metrics({f"align_best_layer.{k}": v for k, v in at_best_layer(rows).items()})
    for line in format_summary(table, participants) + format_contrast(contrast) + best_layer_notes(rows, scores):
        log(line)
    log(f"[alignment] tables (summary.csv, alignment.csv, per-voxel gain.csv) and figures in {out}")
    return Report(rows, table, contrast, scores, layers)


def gain_table(scores: dict, layers: list, reference: str, threshold: float, n_boot: int = 2000,
               ci: float = 0.95) -> list[dict]:
    """Each model against ``reference`` on the headline's layer average: paired per-voxel differences of
    r / noise ceiling averaged over ``layers``, pooled over the evaluated participants, with a bootstrap CI and a
    Wilcoxon p-value. Voxels are neither independent nor the replicate unit: across seeds and participants,
    :func:`~braintune_dist.evaluate.summary.summary_table` is the test to read.

    Parameters
    ----------
    scores : model → subject → VoxelScores
    layers : the layers averaged (both models at the same layers)

    Returns
    -------
    rows : list of dict
        ``{model, reference, layers, region, n, mean_a, mean_b, diff, ci_low, ci_high, p}``; ``diff`` =
        mean(model − reference) over the voxels above the ceiling threshold. [] without ``reference``.
    """
    from braintune_dist.analysis.stats import compare_paired
    if reference not in scores:
        return []
    rows = []
    for model in scores:
        if model == reference:
            continue
        participants = list(scores[model])
        for region in scores[model][participants[0]].region_names():
            a, b = (np.concatenate([voxel_layer_mean(scores[m][s], layers, threshold, region) for s in participants])
                    for m in (model, reference))
            rows.append(dict(model=model, reference=reference, layers=layers_label(layers), region=region,
                             **compare_paired(a, b, n_boot, ci)))
    return rows


def _maps(space, scores, best, ev: EvalSettings, participants, out: Path, tracker, tag: str, log) -> dict:
    """Write the GIfTI/NIfTI maps (logged to MLflow under report/maps); return their surface figures."""
    maps = brain_maps(space, scores, best, ev.ridge.nc_threshold, ev.maps, out / f"{tag}maps", log)
    surface = load_surface(space.surface) if ev.maps.figures else None
    figs = {}
    for name, m in maps.items():
        for f in m["files"] + m.get("volumes", []):
            if tracker:
                tracker.log_artifact(f, f"report/maps/{Path(f).parent.name}")
        if ev.maps.figures and m["kind"] != "r":
            diff = m["kind"] == "diff"
            label = name.replace("/rnorm", "")
            at = (f" (layer {m['layer'][0]} − layer {m['layer'][1]}: each model's best)" if diff
                  else f" at layer {m['layer']}")
            title = f"{label}: r / noise ceiling{at} (held-out: {', '.join(participants)})"
            figs[f"map_{label.replace('/', '_')}.png"] = plot_surface_map(
                surface, m["per_hemi"], title, diff,
                ev.maps.diff_threshold if diff else ev.maps.threshold)
    return figs
