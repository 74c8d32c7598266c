"""Alignment reports: several models (e.g. untuned vs brain-tuned) on the same participants → table,
figures and MLflow metrics."""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.surface import load_surface
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig
from braintune_dist.evaluate.featurize import ModelSpec, featurize
from braintune_dist.evaluate.figures import plot_efficiency, plot_layers, plot_stages, plot_surface_map
from braintune_dist.evaluate.maps import MapSettings, brain_maps
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.features.extract import FeatureConfig
from braintune_dist.io import write_text
from braintune_dist.tracking import Tracker, csv_text, save_figure


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
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    """Where features and ridge fits run (Ray feature actors and ridge tasks, or this process) and their resources."""
    maps: MapSettings = field(default_factory=MapSettings)
    """Per-vertex GIfTI maps on the common space's surface, their figures, per-voxel NIfTI maps."""
    out_dir: str = "runs/reports"
    """Where figures and tables are written (and logged to MLflow); the feature cache defaults to
    <out_dir>/feature_cache."""


def with_cache(features: FeatureConfig, out_dir: str) -> FeatureConfig:
    """``features`` with its cache directory set (default ``<out_dir>/feature_cache``)."""
    return features if features.cache_dir else dataclasses.replace(features, cache_dir=str(Path(out_dir) / "feature_cache"))


def best_layers(rows: list[dict], kind: str = "layer") -> dict[str, object]:
    """Each model's best layer: lowest CV error on the training stories (all voxels, mean over participants).
    The test story plays no part, so the score reported at that layer is not selected on itself."""
    cv: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["kind"] == kind and r["region"] == "all":
            cv[r["model"]][r["layer"]].append(r["cv_mse"])
    return {m: min(layers.items(), key=lambda kv: float(np.mean(kv[1])))[0] for m, layers in cv.items()}


def headline(rows: list[dict], kind: str = "layer") -> dict[str, float]:
    """``{'<model>/<region>': mean over participants of r/ceiling on the test story at the model's best
    layer}`` (best by CV error, :func:`best_layers`)."""
    best = best_layers(rows, kind)
    by: dict = defaultdict(list)
    for r in rows:
        if r["kind"] == kind and r["layer"] == best.get(r["model"], object()):
            by[(r["model"], r["region"])].append(r["mean_r_norm"])
    return {f"{m}/{reg}": float(np.nanmean(v)) for (m, reg), v in by.items()}


def alignment_report(ds: LebelDataset, models: list[ModelSpec], ev: EvalSettings, subjects: list[str],
                     tracker: Tracker | None = None, log=print, tag: str = "") -> list[dict]:
    """Evaluate every model on ``subjects``; write/log the table, the figures and headline metrics."""
    train_stories = list(ev.train_stories) or ds.split()["train"]
    space = find_common_space(ds.root, ev.common_space, subjects)
    features = with_cache(ev.features, ev.out_dir)
    sources, _ = featurize(ds, models, train_stories + [ds.cfg.test_story], features, ev.compute, log)
    rows, scores = encode(ds, sources, subjects, train_stories, ev.ridge, space, ev.compute,
                          efficiency=ev.efficiency_stories, log=log)
    out = Path(ev.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {"alignment_per_layer.png": plot_layers(rows, f"Brain alignment per layer (held-out: {', '.join(subjects)})")}
    if ev.efficiency_stories:
        figs["data_efficiency.png"] = plot_efficiency(rows)
    stages = plot_stages(rows, f"Alignment per layer by processing stage (held-out: {', '.join(subjects)})")
    if stages is not None:
        figs["alignment_by_stage.png"] = stages
    if ev.maps.enabled and space is not None and space.vertex_index is not None:
        figs.update(_maps(space, scores, best_layers(rows), ev, subjects, out, tracker, tag, log))
    import matplotlib.pyplot as plt
    for name, fig in figs.items():
        save_figure(fig, out / f"{tag}{name}")
        if tracker:
            tracker.log_figure(fig, f"report/{name}")
        plt.close(fig)
    if tracker:
        tracker.log_table(rows, "report/alignment.csv")
    gains = gain_table(scores, best_layers(rows), "untuned", ev.ridge.nc_threshold)
    if gains:
        write_text(out / f"{tag}gain.csv", csv_text(gains))
        if tracker:
            tracker.log_table(gains, "report/gain.csv")
    head = headline(rows)
    if tracker:
        tracker.log_metrics({f"align.{k}": v for k, v in head.items()})
    log("[alignment] mean r / noise ceiling at each model's best layer (by CV on the training stories; "
        "held-out participants):")
    for k, v in sorted(head.items()):
        log(f"  {k:>28}: {v:.3f}")
    for g in gains:
        log(f"[alignment] {g['model']} - {g['reference']}, {g['region']}: {g['diff']:+.3f} "
            f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] over {g['n']} voxels (p {g['p']:.2g})")
    log(f"[alignment] figures in {out}")
    return rows


def gain_table(scores: dict, best: dict, reference: str, threshold: float, n_boot: int = 2000,
               ci: float = 0.95) -> list[dict]:
    """Each model against ``reference``, each at its own best layer: paired per-voxel differences of
    r / noise ceiling, pooled over the evaluated participants, with a bootstrap CI and a Wilcoxon p-value.

    Parameters
    ----------
    scores : model → subject → VoxelScores
    best : model → its best layer (:func:`best_layers`)

    Returns
    -------
    rows : list of dict
        ``{model, reference, layer, reference_layer, region, n, mean_a, mean_b, diff, ci_low, ci_high, p}``;
        ``diff`` = mean(model − reference) over the voxels above the ceiling threshold. [] without ``reference``.
    """
    from braintune_dist.analysis.compare import voxel_values
    from braintune_dist.analysis.stats import compare_paired
    if reference not in scores:
        return []
    rows = []
    for model in scores:
        if model == reference:
            continue
        subjects = list(scores[model])
        for region in scores[model][subjects[0]].region_names():
            a, b = (np.concatenate([voxel_values(scores[m][s], best[m], region, threshold) for s in subjects])
                    for m in (model, reference))
            rows.append(dict(model=model, reference=reference, layer=best[model], reference_layer=best[reference],
                             region=region, **compare_paired(a, b, n_boot, ci)))
    return rows


def _maps(space, scores, best, ev: EvalSettings, subjects, out: Path, tracker, tag: str, log) -> dict:
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
            title = f"{label}: r / noise ceiling{at} (held-out: {', '.join(subjects)})"
            figs[f"map_{label.replace('/', '_')}.png"] = plot_surface_map(
                surface, m["per_hemi"], title, diff,
                ev.maps.diff_threshold if diff else ev.maps.threshold)
    return figs


def seed_report(rows: list[dict], tuned: list[str], tracker: Tracker | None = None, log=print,
                untuned: str = "untuned") -> dict[str, dict]:
    """Tuned-vs-untuned alignment over training seeds, per region.

    ``tuned``: the labels of the tuned models, one per seed. Returns ``{region: {'untuned', 'mean', 'min',
    'max', 'raised'}}``: r / noise ceiling at each model's CV-best layer, mean and range over training seeds,
    and how many seeds beat the untuned model. Prints one verdict line per region.
    """
    head = headline(rows)
    regions = sorted({k.split("/", 1)[1] for k in head})
    out: dict[str, dict] = {}
    log(f"[alignment] over {len(tuned)} training seeds (held-out participants, r / noise ceiling):")
    for reg in regions:
        vals = np.array([head[f"{m}/{reg}"] for m in tuned if f"{m}/{reg}" in head])
        base = head.get(f"{untuned}/{reg}", float("nan"))
        if vals.size == 0:
            continue
        s = dict(untuned=base, mean=float(vals.mean()), min=float(vals.min()), max=float(vals.max()),
                 raised=int((vals > base).sum()))
        out[reg] = s
        log(f"  {reg:>10}: untuned {base:.3f} → tuned {s['mean']:.3f} (range {s['min']:.3f}–{s['max']:.3f}); "
            f"tuning raised it in {s['raised']}/{len(vals)} seeds (mean Δ {s['mean'] - base:+.3f})")
        if tracker:
            tracker.log_metrics({f"align_seeds.{reg}.{k}": float(v) for k, v in s.items()})
    return out
