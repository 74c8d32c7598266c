"""Per-layer evaluation features of a speech model, aligned with the fMRI responses.

Pipeline per story:

1. causal sliding windows over the waveform: a window of ``window`` s ending every ``stride`` s
   (Huth: 16.1 s = 16 s context + 0.1 s chunk, stride 0.1 s); the first windows grow from ``stride``
   up to full length (``require_full_context=False``); windows shorter than 400 samples are dropped;
2. the hidden state of the **last output frame** of each window, for each requested layer
   (so the feature at time t only sees audio ≤ t), stamped at the window end; or, with ``pool: stride``,
   the mean of the frames of the window's last ``stride`` seconds. At the reference's 0.1 s stride the two
   barely differ; at a stride near the TR, the last frame is a point sample of a signal that changes every
   ~20 ms, which the Lanczos step (cutoff 1/TR) can no longer low-pass: it aliases, and alignment drops
   (measured in BENCHMARKS.md). The stride mean is a box filter over the stride that removes most of it;
3. Lanczos interpolation to the TR mid-points (3 lobes, cutoff 1/TR, unnormalised kernel as in
   ``ridge_utils.interpdata``);
4. z-score per story (statistics over the rows that line up with responses), FIR delays (default 1-4 TRs,
   no zero lag) taken on the full TR grid, so a row's delayed copies come from real earlier TRs of
   the same story instead of zeros or the previous story (the Huth code delays the stacked matrix);
5. the rows ``LebelDataset.row_tr_index(story)`` (features [10:-5]; test story [50:-5]).

Windows of equal length run as one batch (a strided view, no per-window Python loop on the hot path).
Raw window features are cached on disk (:class:`FeatureCache`) under a key of the model and the window
settings (:func:`cache_key`) and of the story's audio content: ``<cache_dir>/<key>/<story>.<audio sha256>/
{times,layer<k>}.npy``.
:class:`CachedFeatures` reads that cache only (no model): what the evaluation's ridge stage uses, so
the backbone forward runs only in the feature workers.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from braintune_dist.config import ConfigError
from braintune_dist.features.config import FeatureConfig
from braintune_dist.io import atomic_path
from braintune_dist.model.backbone import SAMPLE_RATE, Backbone
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.features.interp import align_to_trs


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the architecture name and every weight: a checkpoint's cache key."""
    h = hashlib.sha1(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cache_key(weights_fingerprint: str, cfg: FeatureConfig) -> str:
    """Cache key of one model's windows: its weights and every setting that changes a window's features."""
    key = (f"{weights_fingerprint}|{cfg.window}|{cfg.stride}|{cfg.min_input_samples}|{cfg.require_full_context}"
           f"|{cfg.dtype}" + (f"|{cfg.pool}" if cfg.pool != "last" else ""))
    return hashlib.sha1(key.encode()).hexdigest()[:16]


def window_ends(n_samples: int, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    """(end sample index (n_windows,), length in samples (n_windows,)) of the causal windows of a waveform."""
    step, full = int(round(cfg.stride * SAMPLE_RATE)), int(round(cfg.window * SAMPLE_RATE))
    ends = np.arange(step, n_samples + 1, step)
    lengths = np.minimum(ends, full)
    keep = lengths >= (full if cfg.require_full_context else cfg.min_input_samples)
    return ends[keep], lengths[keep]


class FeatureCache:
    """Raw window features on disk: ``<root>/<key>/<story>.<audio digest>/times.npy`` and ``layer<k>.npy``, each written
    atomically (a reader never sees a partial file; a story counts as cached when all its files exist)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def story_dir(self, key: str, ds: LebelDataset, story: str) -> Path:
        """The folder of ``story``'s windows under the model and settings ``key``."""
        # the story's audio content is part of the address: another dataset's story of the same name, or
        # a re-generated wav, gets its own entry instead of the stale one
        return self.root / key / f"{story}.{ds.audio_digest(story)}"

    def has(self, key: str, ds: LebelDataset, story: str, layers) -> bool:
        d = self.story_dir(key, ds, story)
        return (d / "times.npy").is_file() and all((d / f"layer{lay}.npy").is_file() for lay in layers)

    def read(self, key: str, ds: LebelDataset, story: str, layers) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(times (n_windows,), {layer: (n_windows, hidden)}), memory-mapped."""
        d = self.story_dir(key, ds, story)
        if not self.has(key, ds, story, layers):
            raise FileNotFoundError(f"{d}: features of layers {list(layers)} not cached")
        return (np.load(d / "times.npy"),
                {lay: np.load(d / f"layer{lay}.npy", mmap_mode="r") for lay in layers})

    def write(self, key: str, ds: LebelDataset, story: str, times: np.ndarray, feats: dict[int, np.ndarray]) -> None:
        d = self.story_dir(key, ds, story)
        d.mkdir(parents=True, exist_ok=True)
        for name, arr in [(f"layer{lay}", f) for lay, f in feats.items()] + [("times", times)]:
            with atomic_path(d / f"{name}.npy") as tmp:
                np.save(tmp, arr)


class CachedFeatures:
    """Feature source of one model read from a :class:`FeatureCache` (filled by the feature workers).

    Parameters
    ----------
    cache : FeatureCache
    key : str  (``cache_key`` of the model and settings)
    layers : list of hidden_states indices
    cfg : FeatureConfig  (delays and Lanczos settings of the TR alignment)
    """

    def __init__(self, cache: FeatureCache, key: str, layers: list[int], cfg: FeatureConfig):
        self.cache, self.key, self.layers, self.cfg = cache, key, list(layers), cfg

    def window_features(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """(window end times (n,), {layer: (n, hidden)}) before any TR alignment (probes use them raw)."""
        return self.cache.read(self.key, ds, story, self.layers)

    def story_features(self, ds: LebelDataset, story: str, layers=None) -> dict[int, np.ndarray]:
        """TR-aligned features of one story: layer → array of shape (n_rows, hidden * n_delays)."""
        times, feats = self.cache.read(self.key, ds, story, self.layers if layers is None else layers)
        return align_to_trs(times, feats, ds, story, self.cfg)


class FeatureExtractor:
    """Per-layer window features of one backbone (optionally LoRA-tuned): the work of a feature worker.

    Parameters
    ----------
    backbone : Backbone
    cfg : FeatureConfig
    """

    def __init__(self, backbone: Backbone, cfg: FeatureConfig | None = None):
        self.cfg = cfg or FeatureConfig()
        dev = self.cfg.device
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else
                                   ("cpu" if dev == "auto" else dev))
        self.dtype = getattr(torch, self.cfg.dtype)
        self._fp = None
        if self.dtype != torch.float32:           # the key hashes the stored float32 weights, not the cast
            self._fp = cache_key(model_fingerprint(backbone), self.cfg)
        self.backbone = backbone.to(self.device, self.dtype).eval()
        self.layers = check_layers(self.cfg.layers, backbone.n_layers)

    @property
    def fingerprint(self) -> str:
        """Cache key of this model and window settings."""
        if self._fp is None:
            self._fp = cache_key(model_fingerprint(self.backbone), self.cfg)
        return self._fp

    @torch.no_grad()
    def story_windows(self, wav: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Last-frame features of every causal window of one waveform.

        Parameters
        ----------
        wav : array of shape (n_samples,), 16 kHz

        Returns
        -------
        times : array of shape (n_windows,)
            Window end times in seconds from audio onset.
        feats : dict layer → array of shape (n_windows, hidden), float32
        """
        c = self.cfg
        ends, lengths = window_ends(len(wav), c)
        step = int(round(c.stride * SAMPLE_RATE))
        wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        out = {lay: np.zeros((len(ends), self.backbone.hidden_size), np.float32) for lay in self.layers}
        # group windows by length: all full windows form one group, batched through a strided view
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            starts = torch.from_numpy(ends[idx] - length)
            for b in range(0, len(idx), c.batch_size):
                s = starts[b:b + c.batch_size]
                batch = wav_t.unfold(0, int(length), 1)[s] if len(s) > 1 else wav_t[int(s[0]):int(s[0]) + int(length)][None]
                hs, n_valid = self.backbone(batch.to(self.device, self.dtype))
                # frames of the last stride: the output frame rate is n_valid / length per sample
                k = 1 if c.pool == "last" else max(1, int(round(n_valid * step / int(length))))
                for lay in self.layers:                                       # (batch, hidden)
                    f = hs[lay][:, n_valid - k:n_valid].float().mean(dim=1)
                    out[lay][idx[b:b + c.batch_size]] = f.cpu().numpy()
        return ends / SAMPLE_RATE, out

    def window_features(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """``story_windows`` of one story, through ``cfg.cache_dir`` when set."""
        if not self.cfg.cache_dir:
            return self.story_windows(ds.load_audio(story))
        cache = FeatureCache(self.cfg.cache_dir)
        if not cache.has(self.fingerprint, ds, story, self.layers):
            cache.write(self.fingerprint, ds, story, *self.story_windows(ds.load_audio(story)))
        else:
            ds.check_audio(story)
        return cache.read(self.fingerprint, ds, story, self.layers)

    def story_features(self, ds: LebelDataset, story: str) -> dict[int, np.ndarray]:
        """TR-aligned features of one story: layer → array of shape (n_rows, hidden * n_delays)."""
        times, feats = self.window_features(ds, story)
        return align_to_trs(times, feats, ds, story, self.cfg)


def check_layers(layers: list[int], n_layers: int) -> list[int]:
    """The hidden_states indices to keep (all when ``layers`` is empty); ValueError for out-of-range ones."""
    n = n_layers + 1
    bad = [lay for lay in layers if not -n <= lay < n]
    if bad:
        raise ConfigError(f"features.layers: {bad} out of range for a model with {n} hidden states")
    return list(layers) or list(range(n))
