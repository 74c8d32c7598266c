"""Per-layer evaluation features of a speech model, aligned with the fMRI responses.

Pipeline per story:

1. causal sliding windows over the waveform: a window of ``window`` s ending every ``stride`` s
   (Huth: 16.1 s = 16 s context + 0.1 s chunk, stride 0.1 s); the first windows grow from ``stride``
   up to full length (``require_full_context=False``); windows shorter than 400 samples are dropped;
2. the hidden state of the **last output frame** of each window, for each requested layer
   (so the feature at time t only sees audio ≤ t), stamped at the window end;
3. Lanczos interpolation to the TR mid-points (3 lobes, cutoff 1/TR, unnormalised kernel as in
   ``ridge_utils.interpdata``);
4. z-score per story (statistics over the rows that line up with responses), FIR delays (default 1-4 TRs,
   no zero lag) taken on the full TR grid, so a row's delayed copies come from real earlier TRs of
   the same story instead of zeros or the previous story (the Huth code delays the stacked matrix);
5. the rows ``LebelDataset.row_tr_index(story)`` (features [10:-5]; test story [50:-5]).

Windows of equal length run as one batch (a strided view, no per-window Python loop on the hot path).
Raw window features are cached on disk per (model fingerprint, window settings, story, layer).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from braintune_dist.io import atomic_path
from braintune_dist.model.backbone import SAMPLE_RATE, Backbone
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.features.interp import align_to_trs


@dataclass
class FeatureConfig:
    """How evaluation features are extracted from a backbone."""

    window: float = 16.1
    """Window length in seconds (context + chunk) ending at each sample time."""
    stride: float = 0.1
    """Seconds between window ends (10 Hz in the original brain-tuning code)."""
    min_input_samples: int = 400
    """Windows shorter than this many samples are dropped (the model's receptive field)."""
    require_full_context: bool = False
    """Drop the growing windows at the story start instead of running them at their true length."""
    layers: list[int] = field(default_factory=list)
    """hidden_states indices to keep (0 = CNN/embedding output); empty = every layer."""
    delays: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    """FIR delays in TRs (the original brain-tuning code: 1-4 TRs = 2-8 s, no zero lag)."""
    lanczos_window: int = 3
    """Lanczos lobes for the downsampling to TRs."""
    batch_size: int = 16
    """Windows per forward pass."""
    device: str = "auto"
    """torch device: auto = cuda when available, else cpu."""
    cache_dir: str = ""
    """Directory for cached raw window features; empty = no cache."""


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the architecture name and every weight: a checkpoint's cache key."""
    h = hashlib.sha1(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureExtractor:
    """Per-layer, TR-aligned features of one backbone (optionally LoRA-tuned) on a dataset.

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
        self.backbone = backbone.to(self.device).eval()
        n = backbone.n_layers + 1
        self.layers = list(self.cfg.layers) or list(range(n))
        bad = [lay for lay in self.layers if not -n <= lay < n]
        if bad:
            raise ValueError(f"FeatureConfig.layers: {bad} out of range for a model with {n} hidden states")
        self._fp = None

    @property
    def fingerprint(self) -> str:
        if self._fp is None:
            c = self.cfg
            key = f"{model_fingerprint(self.backbone)}|{c.window}|{c.stride}|{c.min_input_samples}|{c.require_full_context}"
            self._fp = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self._fp

    # ------------------------------------------------------------------ windows
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
        feats : dict layer → array of shape (n_windows, hidden)
        """
        c = self.cfg
        step, full = int(round(c.stride * SAMPLE_RATE)), int(round(c.window * SAMPLE_RATE))
        ends = np.arange(step, len(wav) + 1, step)                            # (n_windows,) sample index
        lengths = np.minimum(ends, full)
        keep = lengths >= (full if c.require_full_context else c.min_input_samples)
        ends, lengths = ends[keep], lengths[keep]
        wav_t = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        out = {lay: np.zeros((len(ends), self.backbone.hidden_size), np.float32) for lay in self.layers}
        # group windows by length: all full windows form one group, batched through a strided view
        for length in np.unique(lengths):
            idx = np.flatnonzero(lengths == length)
            starts = torch.from_numpy(ends[idx] - length)
            for b in range(0, len(idx), c.batch_size):
                s = starts[b:b + c.batch_size]
                batch = wav_t.unfold(0, int(length), 1)[s] if len(s) > 1 else wav_t[int(s[0]):int(s[0]) + int(length)][None]
                hs, n_valid = self.backbone(batch.to(self.device))
                for lay in self.layers:                                       # (batch, hidden) last real frame
                    out[lay][idx[b:b + c.batch_size]] = hs[lay][:, n_valid - 1].float().cpu().numpy()
        return ends / SAMPLE_RATE, out

    def window_features(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """``story_windows`` of one story, read from / written to ``cfg.cache_dir`` when set:
        (window end times (n,), {layer: (n, hidden)}), before any TR alignment (probes use them raw)."""
        if not self.cfg.cache_dir:
            return self.story_windows(ds.load_audio(story))
        d = Path(self.cfg.cache_dir) / self.fingerprint / story
        paths = {lay: d / f"layer{lay}.npy" for lay in self.layers}
        if (d / "times.npy").is_file() and all(p.is_file() for p in paths.values()):
            return np.load(d / "times.npy"), {lay: np.load(p) for lay, p in paths.items()}
        times, feats = self.story_windows(ds.load_audio(story))
        d.mkdir(parents=True, exist_ok=True)
        for name, arr in [("times", times)] + [(f"layer{lay}", f) for lay, f in feats.items()]:
            with atomic_path(d / f"{name}.npy") as tmp:
                np.save(tmp, arr)
        return times, feats

    # ------------------------------------------------------------------ TR alignment
    def story_features(self, ds: LebelDataset, story: str) -> dict[int, np.ndarray]:
        """TR-aligned features of one story: layer → array of shape (n_rows, hidden * n_delays)."""
        times, feats = self.window_features(ds, story)
        return align_to_trs(times, feats, ds, story, self.cfg)
