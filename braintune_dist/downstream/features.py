"""Clip features for probes and word distances: each clip → one vector per layer, the mean over the output
frames of its real audio, computed by the evaluation's actor pool and kept in its feature cache.

One clip is one forward pass (no batch of clips padded to a common length), so nothing but the clip's own
audio enters its mean: padding zeros in a batch would shift the mean (and, for wav2vec2's group norm, every
frame). For Whisper with ``whisper_input: padded`` the encoder sees the 30 s input it was trained on and the
mean is over the frames of the real audio only (``Backbone`` returns how many).

Cache: ``<cache_dir>/<key>/clips/<task fingerprint>/<chunk>.npy``, each ``(n_chunk_clips, n_hidden_states,
hidden)`` float32 written atomically; ``key`` hashes the model recipe (``recipe_fingerprint``), the dtype and
the pooling, so the same model's alignment windows and clip vectors sit under different keys.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.downstream.config import ClipFeatureSettings
from braintune_dist.downstream.tasks import Task, load_clip
from braintune_dist.errors import DatasetError
from braintune_dist.evaluate.compute import ComputeSettings, actor_pool, node_id
from braintune_dist.evaluate.featurize import ModelSpec, check_weights, recipe_fingerprint
from braintune_dist.features.extract import check_layers
from braintune_dist.io import atomic_path
from braintune_dist.model.backbone import n_layers_of

POOLING = "clip-mean-v1"
"""Version of the pooling rule (part of the key: a change of rule must not read old vectors)."""


def clip_key(recipe: str, settings: ClipFeatureSettings) -> str:
    # '|f32in': half-precision vectors made from a float32 waveform (the backbone casts after normalising)
    half = "|f32in" if settings.dtype != "float32" else ""
    return hashlib.sha1(f"{recipe}|{settings.dtype}|{POOLING}{half}".encode()).hexdigest()[:16]


def _chunk_path(root: Path, key: str, task_fp: str, chunk: int) -> Path:
    return root / key / "clips" / task_fp / f"{chunk:05d}.npy"


@dataclass(frozen=True)
class ClipUnits:
    """The clip files of one task, as the actors see them (a task travels once, as its files)."""

    fingerprint: str
    files: tuple[str, ...]


class ClipWorker:
    """Ray Data actor: mean-pooled per-layer vectors of a chunk of one task's clips, written to the cache.

    Parameters
    ----------
    specs : list of ModelSpec  (a unit names one by index)
    keys : list of str  (their cache keys)
    tasks : list of ClipUnits  (a unit names one by index)
    settings : ClipFeatureSettings  (``cache_dir`` set)
    """

    def __init__(self, specs: list[ModelSpec], keys: list[str], tasks: list[ClipUnits],
                 settings: ClipFeatureSettings, threads: int = 0):
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.specs, self.keys, self.tasks, self.s = specs, keys, tasks, settings
        self.root = Path(settings.cache_dir)
        self._loaded = None
        dev = settings.device
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else
                                   ("cpu" if dev == "auto" else dev))
        self.dtype = getattr(torch, settings.dtype)

    def _backbone(self, i: int):
        from braintune_dist.features.extract import model_fingerprint
        if self._loaded is None or self._loaded[0] != i:
            backbone = self.specs[i].load()
            check_weights(self.root / self.keys[i], model_fingerprint(backbone), self.specs[i].label)
            self._loaded = (i, backbone.to(self.device, self.dtype).eval())
        return self._loaded[1]

    def vectors(self, backbone, files) -> np.ndarray:
        """(n_files, n_hidden_states, hidden) float32: per layer, the mean over the clip's real output frames."""
        import torch
        out = []
        for f in files:
            # float32 in: the backbone normalises, then casts to its own dtype (a half-precision waveform would
            # lose the samples' precision before normalisation)
            wav = torch.from_numpy(load_clip(f))[None].to(self.device)               # (1, n_samples)
            try:
                with torch.no_grad():
                    hs, n_valid = backbone(wav)
            except ValueError as exc:                 # e.g. longer than a Whisper encoder takes
                raise DatasetError(f"{f}: {exc}") from None
            out.append(torch.stack([h[0, :n_valid].float().mean(dim=0) for h in hs]).cpu().numpy())
        return np.stack(out)

    def __call__(self, batch: dict) -> dict:
        """batch: {'model', 'task', 'chunk'} (1,) int → {'model', 'task', 'chunk', 'clips', 'seconds', 'node'}."""
        out = {k: [] for k in ("model", "task", "chunk", "clips", "seconds", "node")}
        for i, t, c in zip(batch["model"], batch["task"], batch["chunk"]):
            t0, i, t, c = time.time(), int(i), int(t), int(c)
            task = self.tasks[t]
            files = task.files[c * self.s.chunk:(c + 1) * self.s.chunk]
            path = _chunk_path(self.root, self.keys[i], task.fingerprint, c)
            if not path.is_file():                   # a unit re-run after its node was lost may find it done
                vec = self.vectors(self._backbone(i), files)
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    np.save(tmp, vec)
            for k, v in (("model", i), ("task", t), ("chunk", c), ("clips", len(files)),
                         ("seconds", time.time() - t0), ("node", node_id())):
                out[k].append(v)
        return {k: np.asarray(v) for k, v in out.items()}


def clip_features(tasks: list[Task], specs: list[ModelSpec], settings: ClipFeatureSettings,
                  compute: ComputeSettings, log=print) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[int]]]:
    """Per-layer clip vectors of every task under every model, computed where not cached.

    Returns
    -------
    feats : dict model label → dict task name → array (n_clips, n_layers, hidden) float32, the layers of
        ``settings.layers`` (every transformer layer when empty) in that order
    layers : dict model label → the hidden_states index of each position of axis 1 (:func:`probed_layers`)
    """
    if not settings.cache_dir:
        raise ValueError("clip_features needs features.cache_dir")
    root = Path(settings.cache_dir)
    units_of = [ClipUnits(t.fingerprint(), tuple(t.files)) for t in tasks]
    keys, units, layers = [], [], {}
    for i, spec in enumerate(specs):
        recipe, model = recipe_fingerprint(spec)
        keys.append(clip_key(recipe, settings))
        layers[spec.label] = probed_layers(settings.layers, n_layers_of(model))
        for t, u in enumerate(units_of):
            n_chunks = -(-len(u.files) // settings.chunk)
            units += [dict(model=i, task=t, chunk=c) for c in range(n_chunks)
                      if not _chunk_path(root, keys[i], u.fingerprint, c).is_file()]
    total = len(units)
    if units:
        t0 = time.time()
        n_clips = sum(min(settings.chunk, len(units_of[u["task"]].files) - u["chunk"] * settings.chunk) for u in units)
        log(f"[downstream] clip features: {total} units ({n_clips} clips × model) to compute; cache {root}")

        def report(row: dict, done: int):
            if done == total or done % max(1, total // 10) == 0:
                log(f"[downstream] clip features {done}/{total} units, {time.time() - t0:.0f} s")

        actor_pool(units, ClipWorker, dict(specs=specs, keys=keys, tasks=units_of, settings=settings), compute,
                   report, log, what="downstream")
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, spec in enumerate(specs):
        out[spec.label] = {}
        for task, u in zip(tasks, units_of):
            n_chunks = -(-len(u.files) // settings.chunk)
            full = np.concatenate([np.load(_chunk_path(root, keys[i], u.fingerprint, c)) for c in range(n_chunks)])
            out[spec.label][task.name] = np.ascontiguousarray(full[:, layers[spec.label]])
    return out, layers


def probed_layers(layers: list[int], n_layers: int) -> list[int]:
    """hidden_states indices probed: ``layers``, or every transformer layer (1..n_layers) when empty."""
    return check_layers(list(layers) or list(range(1, n_layers + 1)), n_layers)
