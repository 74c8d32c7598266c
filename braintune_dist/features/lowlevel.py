"""Stimulus feature spaces computed without a model, on the same TR pipeline as model features.

Spaces (each sampled at 10 Hz from audio onset, then Lanczos → z-score → FIR delays → trims):

* ``spectral``: log power in ``n_bands`` log-spaced bands (100 Hz – 7.6 kHz), 25 ms frames averaged per
  100 ms — the low-level acoustics (the original brain-tuning code's ``powspec``);
* ``word_rate`` / ``phone_rate``: word and phone onsets per 100 ms bin, from the TextGrid;
* ``word_rate_mid``: the Huth-lab word rate (``get_wordrate_vectors``): one impulse per word at its mid-time,
  Lanczos-downsampled from those times straight to the TRs (no 10 Hz bins);
* ``categories``: which semantic category is being heard (one column per category), from the TextGrid
  words and a category → words map (simulated data: ``ground_truth/meta.json``; real data: a JSON file).

``StimulusFeatures`` has the interface of ``FeatureExtractor`` (``layers``, ``story_features``), so
``evaluate.pipeline.encode`` runs on it unchanged: an encoding model of known drivers, used as an
oracle in tests and as the low-level spaces of the residual analysis.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from braintune_dist.data.lebel import SAMPLE_RATE
from braintune_dist.data.lebel import DatasetError, LebelDataset
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.interp import align_to_trs

HZ = 10
SPACES = ("spectral", "word_rate", "phone_rate", "categories", "word_rate_mid")
BINNED = SPACES[:4]           # the spaces sampled in 10 Hz bins


def spectral(wav: np.ndarray, n_bands: int = 16) -> np.ndarray:
    """Log band power per 100 ms bin. wav (n_samples,) → (n_bins, n_bands)."""
    win, hop = SAMPLE_RATE // 40, SAMPLE_RATE // 100                      # 25 ms frames every 10 ms
    n_frames = len(wav) // hop
    padded = np.concatenate([wav.astype(np.float64), np.zeros(win)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:n_frames]
    power = np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2   # (n_frames, win // 2 + 1)
    freqs = np.fft.rfftfreq(win, 1 / SAMPLE_RATE)
    edges = np.geomspace(100.0, 7600.0, n_bands + 1)
    onehot = np.stack([(freqs >= a) & (freqs < b) for a, b in zip(edges[:-1], edges[1:])], 1).astype(float)
    bands = power @ (onehot / onehot.sum(0))                               # (n_frames, n_bands) mean power
    n_bins = n_frames // 10
    bands = bands[: n_bins * 10].reshape(n_bins, 10, n_bands).mean(1)
    return np.log(bands + 1e-10)


def onset_rate(starts: list[float], n_bins: int) -> np.ndarray:
    """Onsets per 100 ms bin → (n_bins, 1)."""
    idx = np.clip((np.asarray(starts) * HZ).astype(int), 0, n_bins - 1)
    return np.bincount(idx, minlength=n_bins)[:n_bins, None].astype(float)


def category_indicators(words, category_of: dict[str, int], n_cat: int, n_bins: int) -> np.ndarray:
    """Fraction of each 100 ms bin covered by a word of each category → (n_bins, n_cat)."""
    out = np.zeros((n_bins, n_cat))
    for iv in words:
        c = category_of.get(iv.text.strip().lower())
        if c is None:
            continue
        a, b = iv.xmin * HZ, iv.xmax * HZ
        for k in range(int(a), min(int(np.ceil(b)), n_bins)):
            out[k, c] += max(0.0, min(b, k + 1) - max(a, k))
    return out


def category_map(ds: LebelDataset, categories: dict[str, list[str]] | None = None) -> tuple[dict[str, int], int]:
    """({word (lower case): category index}, n_categories) from ``categories`` ({category: [words]}) or, when
    None, ``<root>/ground_truth/meta.json`` (simulated data); ``DatasetError`` naming the file if neither."""
    if categories is None:
        path = ds.root / "ground_truth" / "meta.json"
        if not path.is_file():
            raise DatasetError(f"the 'categories' space needs a category → words map: pass categories= "
                               f"or provide {path}")
        categories = json.loads(Path(path).read_text())["categories"]
    return {w.lower(): i for i, (_, ws) in enumerate(categories.items()) for w in ws}, len(categories)


def stimulus_bins(ds: LebelDataset, story: str, spaces, categories: dict | None = None,
                  n_bands: int = 16) -> dict[str, np.ndarray]:
    """Space (from ``BINNED``) → (n_bins, D) float32 at ``HZ`` (bin k = [k, k+1) / HZ from the audio onset)."""
    wav = ds.load_audio(story)
    n_bins = len(wav) * HZ // SAMPLE_RATE
    grid = ds.load_textgrid(story) if set(spaces) - {"spectral"} else None
    feats: dict[str, np.ndarray] = {}
    for space in spaces:
        if space == "spectral":
            feats[space] = spectral(wav, n_bands)[:n_bins]
        elif space == "word_rate":
            feats[space] = onset_rate([iv.xmin for iv in grid.tier("words").words(ds.cfg.non_words)], n_bins)
        elif space == "phone_rate":
            feats[space] = onset_rate([iv.xmin for iv in grid.tier("phones").labelled()], n_bins)
        elif space == "categories":
            feats[space] = category_indicators(grid.tier("words").words(ds.cfg.non_words),
                                               *category_map(ds, categories), n_bins)
        else:
            raise ValueError(f"{space!r} is not sampled in {HZ} Hz bins (binned spaces: {list(BINNED)})")
    return {k: v[:n_bins].astype(np.float32) for k, v in feats.items()}


class StimulusFeatures:
    """Model-free feature spaces with the ``FeatureExtractor`` interface.

    Parameters
    ----------
    cfg : FeatureConfig  (its delays and Lanczos window are used)
    spaces : names from ``SPACES``
    categories : {category: [words]} for the ``categories`` space; None = read
        ``<root>/ground_truth/meta.json`` (simulated data) when that space is asked for.
    """

    def __init__(self, cfg: FeatureConfig | None = None, spaces=("spectral", "categories"),
                 categories: dict[str, list[str]] | None = None, n_bands: int = 16):
        unknown = [s for s in spaces if s not in SPACES]
        if unknown:                   # a job's residual.spaces is checked when its config is built
            raise ValueError(f"unknown stimulus feature space(s) {unknown}; choose from {list(SPACES)}")
        self.cfg, self.layers, self.categories, self.n_bands = cfg or FeatureConfig(), list(spaces), categories, n_bands

    def story_features(self, ds: LebelDataset, story: str) -> dict[str, np.ndarray]:
        """Space → array of shape (n_rows, D * n_delays) aligned with the responses of ``story``."""
        out = {}
        binned = [s for s in self.layers if s in BINNED]
        if binned:
            feats = stimulus_bins(ds, story, binned, self.categories, self.n_bands)
            n_bins = len(next(iter(feats.values())))
            out = align_to_trs((np.arange(n_bins) + 0.5) / HZ, feats, ds, story, self.cfg)   # from bin centres
        if "word_rate_mid" in self.layers:
            mid = np.array([(w.xmin + w.xmax) / 2 for w in ds.words(story)])           # (n_words,)
            out |= align_to_trs(mid, {"word_rate_mid": np.ones((len(mid), 1))}, ds, story, self.cfg)
        return {s: out[s] for s in self.layers}
