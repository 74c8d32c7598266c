"""Evaluation features as a Ray Data job: (model, story) units through a pool of backbone actors.

The driver plans and reports; it never loads audio into a model. Plan:

1. each model's cache key: a hash of what determines its weights (backbone config, the files it loads,
   library versions) and of the window settings, computed here without building the model;
2. the (model, story) units whose windows are not in the cache yet (a re-run computes only those);
3. ``ray.data.from_items(units).map_batches(FeatureWorker, compute=ActorPoolStrategy(...), num_gpus=...)``:
   each actor loads a model once (units arrive grouped by model), runs every causal window of one story
   through it and writes the windows to the cache atomically; only a small summary row comes back.

Without Ray (``compute.runner: local``) the same ``FeatureWorker`` runs in this process.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.config import from_dict, to_dict
from braintune_dist.evaluate.compute import ComputeSettings, actor_pool, node_id
from braintune_dist.features.extract import (CachedFeatures, FeatureCache, FeatureExtractor, cache_key, check_layers, window_ends)
from braintune_dist.features.config import FeatureConfig
from braintune_dist.errors import UserError
from braintune_dist.io import nearest_existing, refusing_folder, write_text
from braintune_dist.model.backbone import SAMPLE_RATE, n_layers_of
from braintune_dist.model.config import ModelConfig


@dataclass
class ModelSpec:
    """A model to evaluate, as a recipe a worker can follow (no weights travel through the driver)."""

    label: str
    """Name in tables and figures ('untuned', 'brain-tuned', a checkpoint's folder name, ...)."""
    model: ModelConfig
    """Backbone architecture / pretrained path."""
    checkpoint: str = ""
    """Brain-tuning checkpoint directory (LoRA merged in); '' = the untuned backbone. Must be readable
    where the workers run (shared storage on a cluster)."""

    def load(self):
        from braintune_dist.train.checkpoint import load_backbone
        return load_backbone(self.model, self.checkpoint)


def recipe_fingerprint(spec: ModelSpec) -> tuple[str, ModelConfig]:
    """(hash of what determines the weights, the backbone config) of a model, without building it.

    The weights are a function of the backbone config, the files it loads (pretrained folder, the
    checkpoint's model files) and, for a random init, the library versions: all of them are hashed.
    """
    from importlib.metadata import version
    model = spec.model
    files: list[Path] = []
    if spec.checkpoint:
        from braintune_dist.train.checkpoint import model_files, read_meta
        model = from_dict(ModelConfig, read_meta(spec.checkpoint)["config"]["model"])
        files += model_files(spec.checkpoint)
    if model.pretrained and Path(model.pretrained).is_dir():
        files += sorted(p for p in Path(model.pretrained).rglob("*") if p.is_file())
    h = hashlib.sha1(json.dumps(to_dict(model), sort_keys=True).encode())
    h.update(f"torch {version('torch')} transformers {version('transformers')}".encode())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()[:16], model


def check_weights(folder: Path, weights: str, label: str) -> None:
    """The first worker records the weights' fingerprint in ``folder/WEIGHTS``; any other must match it (a model
    whose build is not reproducible would otherwise mix two models' features under one cache key)."""
    path = folder / "WEIGHTS"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, weights)
    elif path.read_text().strip() != weights:
        raise RuntimeError(f"model {label!r}: weights built here ({weights}) differ from those cached under "
                           f"{path.parent} ({path.read_text().strip()}); its build is not reproducible "
                           "(random init without a fixed seed, or a different library version)")


class FeatureWorker:
    """Ray Data actor: computes and caches the windows of (model, story) units.

    Parameters
    ----------
    ds : LebelDataset
    specs : list of ModelSpec  (a unit names one by index)
    keys : list of str  (their cache keys)
    layers : list of list of int  (each model's cached layers)
    cfg : FeatureConfig  (``cache_dir`` set)
    """

    def __init__(self, ds: LebelDataset, specs: list[ModelSpec], keys: list[str], layers: list, cfg: FeatureConfig,
                 threads: int = 0):
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.ds, self.specs, self.keys, self.layers, self.cfg = ds, specs, keys, layers, cfg
        self.cache = FeatureCache(cfg.cache_dir)
        self._loaded: tuple[int, FeatureExtractor] | None = None

    def _extractor(self, i: int) -> FeatureExtractor:
        if self._loaded is None or self._loaded[0] != i:
            fx = FeatureExtractor(self.specs[i].load(), self.cfg)
            check_weights(self.cache.root / self.keys[i], fx.fingerprint, self.specs[i].label)
            self._loaded = (i, fx)
        return self._loaded[1]

    def __call__(self, batch: dict) -> dict:
        """batch: {'model': (n,) int, 'story': (n,) str} → {'model', 'story', 'windows', 'seconds', 'node'}."""
        out = {"model": [], "story": [], "windows": [], "seconds": [], "node": []}
        for i, story in zip(batch["model"], batch["story"]):
            t, i, story = time.time(), int(i), str(story)
            if self.cache.has(self.keys[i], self.ds, story, self.layers[i]):
                # a unit run again (its task was lost with a node after the unit finished): the cache has it
                times, _ = self.cache.read(self.keys[i], self.ds, story, [])
            else:
                times, feats = self._extractor(i).story_windows(self.ds.load_audio(story))
                self.cache.write(self.keys[i], self.ds, story, times, feats)
            for k, v in (("model", i), ("story", story), ("windows", len(times)),
                         ("seconds", time.time() - t), ("node", node_id())):
                out[k].append(v)
        return {k: np.asarray(v) for k, v in out.items()}


def _n_windows(ds: LebelDataset, story: str, cfg: FeatureConfig) -> int:
    import soundfile as sf
    info = sf.info(str(ds.audio_path(story)))
    return len(window_ends(int(info.frames * SAMPLE_RATE / info.samplerate), cfg)[0])


def check_writable(cache: FeatureCache, ds: LebelDataset, units: list[dict], specs: list[ModelSpec],
                   keys: list[str], field: str) -> None:
    """Raise a ``UserError`` naming the cache folder (``field``) when one of the ``units`` still to compute cannot
    be written into it: its story's folder, and its model's folder where that model's ``WEIGHTS`` is not there
    yet. Only here, where something is left to write: a read-only cache that holds every unit is just read."""
    probed: dict[Path, Path | None] = {}          # one probe per existing folder, however many units go there
    for u in units:
        story_dir = cache.story_dir(keys[u["model"]], ds, u["story"])
        places = [story_dir] + ([] if (story_dir.parent / "WEIGHTS").is_file() else [story_dir.parent])
        for near in map(nearest_existing, places):
            if near not in probed:
                probed[near] = refusing_folder(near)
            if probed[near] is None:
                continue
            raise UserError(
                f"{field}: {cache.root} cannot be written ({near} refuses writing), but {len(units)} (model, story) "
                f"unit(s) are not cached there yet, e.g. model {specs[u['model']].label!r} on story {u['story']!r}: "
                f"make it writable, or set {field} to a writable folder (a read-only cache works once it holds "
                "every unit)")


def featurize(ds: LebelDataset, specs: list[ModelSpec], stories: list[str], cfg: FeatureConfig,
              compute: ComputeSettings, log=print, field: str = "features.cache_dir"
              ) -> tuple[dict[str, CachedFeatures], dict]:
    """Make sure every (model, story) window is in the cache; return a cache-reading source per model.

    ``field`` names ``cfg.cache_dir`` in the job's config, for the error when units are missing and the cache
    cannot be written.

    Returns
    -------
    sources : dict label → CachedFeatures
    stats : dict  ``{'units', 'computed', 'windows', 'seconds' (wall), 'unit_seconds' (summed over units,
        in the workers), 'nodes': {node id: units}, 'per_model': {label: [worker seconds, audio seconds]}}``
    """
    if not cfg.cache_dir:                         # every job sets it (report.with_cache)
        raise ValueError("featurize needs features.cache_dir")
    cache = FeatureCache(cfg.cache_dir)
    for s in stories:                # the audio must fit the TR grid even where its windows come from the cache
        ds.check_audio(s)
    sources, units, keys, model_layers = {}, [], [], []
    for i, spec in enumerate(specs):
        recipe, model = recipe_fingerprint(spec)
        key = cache_key(recipe, cfg)
        layers = check_layers(cfg.layers, n_layers_of(model))
        sources[spec.label] = CachedFeatures(cache, key, layers, cfg)
        keys.append(key)
        model_layers.append(layers)
        units += [{"model": i, "story": s} for s in stories if not cache.has(key, ds, s, layers)]
    stats = dict(units=len(specs) * len(stories), computed=len(units), windows=0, seconds=0.0, unit_seconds=0.0,
                 nodes={}, per_model={})
    if not units:
        log(f"[features] all {stats['units']} (model, story) units cached in {cfg.cache_dir}")
        return sources, stats
    check_writable(cache, ds, units, specs, keys, field)
    total = sum(_n_windows(ds, u["story"], cfg) for u in units)
    t0, last = time.time(), 0.0

    def report(row: dict, done: int):
        nonlocal last
        stats["windows"] += int(row["windows"])
        stats["unit_seconds"] += float(row["seconds"])
        stats["nodes"][str(row["node"])] = stats["nodes"].get(str(row["node"]), 0) + 1
        per = stats["per_model"].setdefault(specs[int(row["model"])].label, [0.0, 0.0])
        per[0] += float(row["seconds"])
        per[1] += int(row["windows"]) * cfg.stride                 # seconds of story audio covered
        now = time.time() - t0
        if now - last > 10 or done == len(units):
            last = now
            log(f"[features] {done}/{len(units)} units, {stats['windows']}/{total} windows, "
                f"{stats['windows'] / max(now, 1e-9):.0f} windows/s")

    log(f"[features] {len(units)} (model, story) units ({total} windows); cache {cfg.cache_dir}")
    actor_pool(units, FeatureWorker, dict(ds=ds, specs=specs, keys=keys, layers=model_layers, cfg=cfg), compute,
               report, log)
    stats["seconds"] = time.time() - t0
    cost = ", ".join(f"{m} {sec / max(audio, 1e-9):.3f}" for m, (sec, audio) in stats["per_model"].items())
    log(f"[features] {stats['seconds']:.0f} s; worker seconds per second of audio: {cost}")
    return sources, stats
