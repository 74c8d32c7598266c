"""The analysis job: for the untuned model and each brain-tuning checkpoint, per-layer alignment with
permutation p-values, low-level residual alignment, layer-wise probes and the semantic–auditory region contrast, every
"tuned vs untuned" difference with a CI and a corrected p-value → CSV tables and figures in ``out_dir``
(written atomically) and in MLflow. ``jobs/analyze.py`` is its thin driver.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.io import write_text
from braintune_dist.experiment.launch import connect_ray
from braintune_dist.experiment.checks import checkpoint_problems, layer_problems, tracking_problems, window_problems
from braintune_dist.model.config import ModelConfig
from braintune_dist.config import ConfigError, to_dict
from braintune_dist.data.validate import check_tiers
from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import PermutationSettings, RidgeConfig
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.lowlevel import SPACES
from braintune_dist.tracking import Tracker, TrackingConfig, csv_text, save_figure
from braintune_dist.analysis.compare import StatsSettings, compare_models
from braintune_dist.analysis.figures import plot_probes, plot_residual
from braintune_dist.analysis.region_contrast import RegionContrastSettings, plot_region_contrast, region_contrast_table
from braintune_dist.analysis.probes import (TARGETS, ProbeSettings, category_map, check_probe_stories, compare_probes,
                                            load_categories, probe_layers)
from braintune_dist.analysis.residual import ResidualSettings, residual_source, survival_table

REFERENCE = "untuned"


@dataclass
class AnalyzeConfig:
    """The original brain-tuning code's analyses (residual alignment, probes, region contrast, statistics) of brain-tuned models."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset and story split (training stories fit every ridge; the test story scores them)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone of the untuned reference model (checkpoints carry their own architecture)."""
    checkpoints: list[str] = field(default_factory=list)
    """Brain-tuning checkpoint directories, each compared with the untuned model (LoRA merged, head dropped)."""
    participants: list[str] = field(default_factory=list)
    """Participants analysed; empty = those no checkpoint was tuned on (held out), else all."""
    train_stories: list[str] = field(default_factory=list)
    """Stories the encoding models, residualisers and probes are fit on; empty = the dataset's training split."""
    common_space: str = ""
    """Directory with the region labels (common_space.npz + maps); '' = <root>/ground_truth if present."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Feature extraction (window, stride, layers, delays, cache; default cache <out_dir>/feature_cache)."""
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    """Voxel-wise encoding ridge (alphas, CV, backend, noise-ceiling threshold)."""
    permutation: PermutationSettings = field(default_factory=PermutationSettings)
    """Block-permutation test of every voxel's r."""
    residual: ResidualSettings = field(default_factory=ResidualSettings)
    """Low-level residual alignment."""
    probes: ProbeSettings = field(default_factory=ProbeSettings)
    """Layer-wise linear probes."""
    region_contrast: RegionContrastSettings = field(default_factory=RegionContrastSettings)
    """Regions of the semantic–auditory region contrast."""
    stats: StatsSettings = field(default_factory=StatsSettings)
    """Paired tests, bootstrap CIs."""
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    """Where features and encoding fits run (Ray feature actors and ridge tasks, or this process)."""
    out_dir: str = "runs/analysis"
    """Where the CSV tables and PNG figures are written (and logged to MLflow under analysis/)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow."""
    run_name: str = "analyze"
    """MLflow run name."""

    def __post_init__(self):
        check_config(self)


def load_models(cfg: AnalyzeConfig) -> tuple[list, set[str]]:
    """[untuned, one ``ModelSpec`` per checkpoint (labelled by its folder name)] and the participants tuned on."""
    from braintune_dist.evaluate.featurize import ModelSpec
    from braintune_dist.train.checkpoint import read_meta
    models, tuned_on = [ModelSpec(REFERENCE, cfg.model)], set()
    for ck in cfg.checkpoints:
        payload = read_meta(ck)                    # checks the checkpoint is whole and safe before any worker starts
        labels = {m.label for m in models}
        label = Path(ck).name if Path(ck).name not in labels else f"{Path(ck).parent.name}-{Path(ck).name}"
        models.append(ModelSpec(label, cfg.model, ck))
        tuned_on |= set(payload.get("participants", []))
    return models, tuned_on


def write_csv(rows: list[dict], path: Path) -> Path:
    """Write row dicts (columns: union of keys, in first-seen order) to ``path`` atomically."""
    return write_text(path, csv_text(rows))


def _probe_settings(cfg: AnalyzeConfig, ds: LebelDataset, log) -> ProbeSettings:
    """The probe settings, without the category target when no category map exists (real data)."""
    p = cfg.probes
    if "category" in p.targets and not p.categories_file:
        try:
            category_map(ds, load_categories(p.categories_file))
        except DatasetError as exc:
            log(f"[analyze] probes: no 'category' target ({exc})")
            return dataclasses.replace(p, targets=[t for t in p.targets if t != "category"])
    return p


def _main_unit(rows: list[dict]) -> str:
    """'pooled' when the rows pool several participants, else the only participant."""
    return "pooled" if any(r["subject"] == "pooled" for r in rows) else rows[0]["subject"]


def _metrics(tables: dict) -> list[tuple[int, dict]]:
    """(step = layer position, metrics) for MLflow: region contrast, probe scores, surviving fraction."""
    layers = list(dict.fromkeys(r["layer"] for r in tables["alignment"]))
    out: dict[int, dict] = {i: {} for i in range(len(layers))}
    for name, key, value, keep in (
            ("region_contrast", lambda r: f"region_contrast.{r['model']}", "diff",
             lambda r: r["comparison"] == "semantic - auditory"),
            ("residual", lambda r: f"surviving.{r['model']}.{r['region']}", "surviving",
             lambda r: r["unit"] == "voxels"),
            ("probes", lambda r: f"probe.{r['model']}.{r['target']}", "score", lambda r: True)):
        rows = tables.get(name, [])
        unit = _main_unit(rows) if rows and "subject" in rows[0] else None
        for r in rows:
            if keep(r) and (unit is None or r["subject"] == unit):
                out[layers.index(r["layer"])][key(r)] = r[value]
    return sorted(out.items())


def check_config(cfg: AnalyzeConfig) -> None:
    """Raise ``ConfigError`` naming the first field whose value cannot work (run when the config is built)."""
    checks = [
        ("permutation.block", cfg.permutation.block >= 1, "must be >= 1 TR"),
        ("permutation.n_perm", cfg.permutation.n_perm >= 1, "must be >= 1"),
        ("permutation.q", 0 < cfg.permutation.q < 1, "must be in (0, 1)"),
        ("stats.n_boot", cfg.stats.n_boot >= 1, "must be >= 1"),
        ("stats.ci", 0 < cfg.stats.ci < 1, "must be in (0, 1)"),
        ("residual.spaces", bool(cfg.residual.spaces) and set(cfg.residual.spaces) <= set(SPACES),
         f"must be a non-empty subset of {list(SPACES)}"),
        ("probes.targets", set(cfg.probes.targets) <= set(TARGETS), f"must be a subset of {list(TARGETS)}"),
        ("probes.sample_every", cfg.probes.sample_every > 0, "must be > 0 seconds"),
        ("probes.block_seconds", cfg.probes.block_seconds > 0, "must be > 0 seconds"),
    ]
    for name, ok, why in checks:
        if not ok:
            value = cfg
            for part in name.split("."):
                value = getattr(value, part)
            raise ConfigError(f"AnalyzeConfig.{name}={value!r}: {why}")


def tier_readers(cfg: AnalyzeConfig) -> dict[str, list[str]]:
    """TextGrid tier ('words', 'phones') → the settings of this analysis that read it."""
    tier_of = {"word_rate": "words", "word_rate_mid": "words", "categories": "words", "phone_rate": "phones"}
    readers: dict[str, list[str]] = {}
    for space in cfg.residual.spaces if cfg.residual.enabled else []:
        if space in tier_of:
            readers.setdefault(tier_of[space], []).append(f"residual.spaces {space}")
    for target in cfg.probes.targets if cfg.probes.enabled else []:
        if target != "acoustic":                     # every label probe aligns its samples to the words
            readers.setdefault("words", []).append(f"probes.targets {target}")
        if target == "phone":
            readers.setdefault("phones", []).append("probes.targets phone")
    return readers


def check_data(cfg: AnalyzeConfig, ds: LebelDataset, train: list[str]) -> None:
    """Raise a ``UserError`` naming the field whose value cannot work on this dataset (before any features)."""
    from braintune_dist.evaluate.pipeline import check_inputs
    check_inputs(ds, train, cfg.ridge, cfg.permutation)
    if cfg.probes.enabled:
        check_probe_stories(train, list(cfg.probes.test_stories) or [ds.cfg.test_story])
    rows = sum(len(ds.row_tr_index(s)) for s in train)
    if cfg.residual.enabled and cfg.residual.cv > rows:
        raise ConfigError(f"residual.cv: {cfg.residual.cv} folds, but the training stories hold {rows} rows; use "
                          "fewer folds, or 0 (leave one story out)")
    problems = (window_problems(cfg.model, {"features.window": cfg.features.window})
                + checkpoint_problems(cfg.checkpoints, cfg.model) + layer_problems(cfg.model, cfg.features.layers,
                                                                                  "features.layers")
                + tracking_problems(cfg.tracking, "tracking"))
    if problems:
        raise ConfigError("; ".join(problems))


def run(cfg: AnalyzeConfig, log=print) -> dict[str, list[dict]]:
    """Run every analysis; returns the tables (name → rows) also written to ``cfg.out_dir``."""
    from braintune_dist.evaluate.featurize import featurize
    from braintune_dist.evaluate.report import with_cache
    ds = LebelDataset(cfg.data.root, cfg.data)
    models, tuned_on = load_models(cfg)
    everyone = ds.participants()
    participants = list(cfg.participants) or [s for s in everyone if s not in tuned_on] or everyone
    train = list(cfg.train_stories) or ds.split()["train"]
    stories = list(dict.fromkeys(train + [ds.cfg.test_story] + list(cfg.probes.test_stories)))
    for tier, readers in tier_readers(cfg).items():
        check_tiers(ds, stories, [tier], f"analyze's {', '.join(readers)}")
    check_data(cfg, ds, train)
    space = find_common_space(ds.root, cfg.common_space, participants)
    if cfg.compute.runner != "local":                  # after the input checks: bad input fails fast
        connect_ray(cfg.compute.address)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features = with_cache(cfg.features, cfg.out_dir)     # every analysis reads the same cached windows
    sources, _ = featurize(ds, models, stories, features, cfg.compute, log)
    tables, figures = _analyse(cfg, ds, sources, participants, train, space, features, log)
    import matplotlib.pyplot as plt
    with Tracker(cfg.tracking).start(cfg.run_name, params=to_dict(cfg), tags={"job": "analyze"}) as tr:
        for name, rows in tables.items():
            tr.log_artifact(write_csv(rows, out / f"{name}.csv"), "analysis")
        for name, fig in figures.items():
            tr.log_artifact(save_figure(fig, out / name), "analysis")
            plt.close(fig)
        for step, metrics in _metrics(tables):
            tr.log_metrics(metrics, step=step)
    log(f"[analyze] {len(tables)} tables and {len(figures)} figures in {out} "
        f"(models: {', '.join(m.label for m in models)}; participants: {', '.join(participants)})")
    return tables


def _analyse(cfg: AnalyzeConfig, ds: LebelDataset, sources: dict, participants: list[str], train: list[str], space,
             features: FeatureConfig, log) -> tuple[dict[str, list[dict]], dict]:
    """Every analysis of every model → (tables name → rows, figures file name → Figure)."""
    from braintune_dist.evaluate.pipeline import encode
    thr = cfg.ridge.nc_threshold
    probes_cfg = _probe_settings(cfg, ds, log) if cfg.probes.enabled else None
    tables: dict[str, list[dict]] = {"alignment": []}
    full, resid, probe_results = {}, {}, []
    def encode_one(label, src, kind):
        rows, scores = encode(ds, {label: src}, participants, train, cfg.ridge, space, cfg.compute, cfg.permutation,
                              kind=kind, log=log)
        tables["alignment"].extend(rows)
        return scores[label]

    for label, fx in sources.items():
        full[label] = encode_one(label, fx, "full")
        if cfg.residual.enabled:
            rs = residual_source(fx, ds, train, cfg.residual, features, cfg.ridge.backend)
            resid[label] = encode_one(label, rs, "residual")
            tables.setdefault("lowlevel_explained", []).extend(
                dict(model=label, layer=lay, story=ds.cfg.test_story, r2=v)
                for lay, v in rs.explained(ds, ds.cfg.test_story).items())
        if probes_cfg is not None:
            probe_results += probe_layers(ds, fx, train, probes_cfg, label)
        log(f"[analyze] {label}: done")
    if len(sources) > 1:
        tables["comparisons"] = compare_models(full, REFERENCE, thr, cfg.stats, "full") + (
            compare_models(resid, REFERENCE, thr, cfg.stats, "residual") if resid else [])
    if resid:
        tables["residual"] = survival_table(full, resid, thr, cfg.stats)
    regions = set(space.region_names) if space is not None else set()
    rc = cfg.region_contrast
    if rc.enabled and {rc.semantic_region, rc.auditory_region} <= regions:
        tables["region_contrast"] = region_contrast_table(full, thr, cfg.stats, rc, REFERENCE)
    elif rc.enabled:
        log(f"[analyze] region contrast skipped: regions {rc.semantic_region!r} and "
            f"{rc.auditory_region!r} not both in the common space ({sorted(regions) or 'none found'})")
    if probe_results:
        tables["probes"] = [r.row() for r in probe_results]
        if len(sources) > 1:
            tables["probe_comparisons"] = compare_probes(probe_results, REFERENCE, cfg.stats.n_boot, cfg.stats.ci,
                                                         cfg.stats.seed)
    figures = {}
    if "region_contrast" in tables:
        figures["region_contrast.png"] = plot_region_contrast(
            tables["region_contrast"],
            f"Semantic–auditory region contrast per layer (participants: {', '.join(participants)})", rc,
            cfg.stats.measure, cfg.stats.ci)
    if "residual" in tables:
        figures["residual_alignment.png"] = plot_residual(tables["residual"], measure=cfg.stats.measure)
    if probe_results:
        figures["probes_per_layer.png"] = plot_probes(probe_results)
    return tables, figures
