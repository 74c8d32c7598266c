"""Simulated brain with known ground truth, shared by every participant through a common vertex space.

Vertices are labelled by region (``REGION_NAMES``); each driven region is one stage of speech
processing (``STAGES``, acoustic → meaning) and responds to that stage's features only:

* **auditory** (acoustic): a random mix of log band envelopes and their onsets (spectro-temporal);
* **phonetic**: a random projection of phone identity (one fixed random vector per phone, from the TextGrid);
* **lexical** (word form): a random projection of word identity (one fixed random vector per word,
  function words included), unrelated to meaning;
* **semantic**: the word's position in a continuous semantic space (category centroid + subcategory
  offset + a word's own part, ``semantic_embedding``), read out towards one preferred category per vertex,
  so words of one category differ and function words add nothing;
* **null**: no signal.

Features live on a fine grid (``FINE_HZ``) starting at the first trigger (audio time ``-SOUND_ONSET``),
are convolved with a canonical double-gamma HRF, sampled at the TR mid-points and z-scored per vertex
per story, so the signal of each driven vertex has unit variance on the rows of the hf5 file.
A participant's voxel ``j`` maps to vertex ``v = voxel_to_vertex[j]`` and records
``sqrt(snr[j]) * signal[:, v] + noise`` with unit-variance AR(1) noise, i.e. ``snr`` is exactly the
planted signal-to-noise variance ratio.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from braintune_dist.data.lebel import SAMPLE_RATE
from braintune_dist.data.simulate.placement import smooth
from braintune_dist.data.textgrid import Interval
from braintune_dist.data.voxels import zscore

FINE_HZ = 10              # feature grid rate; TR mid-points (odd seconds) fall exactly on it
REGION_NAMES = ("null", "auditory", "semantic", "phonetic", "lexical")
NULL, AUDITORY, SEMANTIC, PHONETIC, LEXICAL = range(5)
STAGES = ("auditory", "phonetic", "lexical", "semantic")      # regions in processing order
STAGE_OF = {"auditory": "acoustic", "phonetic": "phonetic", "lexical": "word form", "semantic": "semantic"}
PHONE_DIM, WORD_DIM, SEMANTIC_DIM = 12, 16, 16


# --------------------------------------------------------------------------- stimulus features
def band_envelopes(audio: np.ndarray, n_bands: int, onset: float, n_fine: int) -> np.ndarray:
    """Log power in ``n_bands`` log-spaced bands (100 Hz to 7.6 kHz), on the fine grid.

    Power spectra of 25 ms Hann frames every 10 ms are averaged within each band and over the 10
    frames of a 100 ms bin; bins before audio onset hold silence. Each band is then z-scored over
    the story, so bands of different loudness weigh alike in the vertex mixes.

    Returns
    -------
    X : array (n_fine, n_bands), float64
    """
    win, hop = SAMPLE_RATE // 40, SAMPLE_RATE // 100               # 400, 160 samples
    per_bin = SAMPLE_RATE // FINE_HZ // hop                        # 10 frames per 100 ms bin
    n_frames = len(audio) // hop
    padded = np.concatenate([audio.astype(np.float64), np.zeros(win)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:n_frames]   # (n_frames, win)
    power = np.abs(np.fft.rfft(frames * np.hanning(win), axis=1)) ** 2                # (n_frames, win//2+1)
    freqs = np.fft.rfftfreq(win, 1 / SAMPLE_RATE)
    edges = np.geomspace(100.0, 7600.0, n_bands + 1)
    bands = np.zeros((n_frames, n_bands))
    for b in range(n_bands):
        sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
        bands[:, b] = power[:, sel].mean(axis=1)
    n_bins = n_frames // per_bin
    bands = bands[: n_bins * per_bin].reshape(n_bins, per_bin, n_bands).mean(axis=1)
    start = int(round(onset * FINE_HZ))
    X = np.zeros((n_fine, n_bands))                               # silence before onset / after the end
    n_copy = min(n_bins, n_fine - start)
    X[start: start + n_copy] = bands[:n_copy]
    X = np.log10(X + 1e-8)
    return zscore(X)


def band_features(audio: np.ndarray, n_bands: int, onset: float, n_fine: int) -> np.ndarray:
    """Spectro-temporal features: band envelopes and their onsets (positive part of the change per bin),
    each z-scored. Returns (n_fine, 2 * n_bands) float64."""
    env = band_envelopes(audio, n_bands, onset, n_fine)
    rise = np.maximum(np.diff(env, axis=0, prepend=env[:1]), 0.0)
    return np.concatenate([env, zscore(rise)], axis=1)


def label_vector(seed: int, purpose: str, label: str, dim: int) -> np.ndarray:
    """A fixed standard-normal vector (dim,) for one label (phone or word): the same for a seed in every
    story and dataset, independent of which other labels exist."""
    key = int.from_bytes(hashlib.sha1(f"{purpose}|{label}".encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, key])).standard_normal(dim)


def semantic_embedding(seed: int, word_category: dict[str, int], word_subcategory: dict[str, int],
                       dim: int = SEMANTIC_DIM) -> dict[str, np.ndarray]:
    """Content word → (dim,) position in the semantic space: its category's centroid + 0.7 × its
    subcategory's offset + 0.5 × its own part (variance shares ~0.64 / 0.31 / 0.16 of 1.0 / 0.49 / 0.25)."""
    return {w: (label_vector(seed, "category", str(c), dim) + 0.7 * label_vector(seed, "subcategory",
                str(word_subcategory[w]), dim) + 0.5 * label_vector(seed, "meaning", w, dim))
            for w, c in word_category.items()}


def interval_features(intervals: list[Interval], vectors: dict[str, np.ndarray], dim: int, onset: float,
                      n_fine: int) -> np.ndarray:
    """Each fine bin: sum over labels heard in it of (fraction of the bin covered) × the label's vector.

    Returns
    -------
    X : array (n_fine, dim), float64; labels without a vector (silence, function words) add nothing.
    """
    X = np.zeros((n_fine, dim))
    for iv in intervals:
        vec = vectors.get(iv.text)
        if vec is None:
            continue
        a, b = (iv.xmin + onset) * FINE_HZ, (iv.xmax + onset) * FINE_HZ   # in bins
        for i in range(int(np.floor(a)), min(int(np.ceil(b)), n_fine)):
            X[i] += (min(b, i + 1) - max(a, i)) * vec
    return X


def stage_features(seed: int, audio: np.ndarray, words: list[Interval], phones: list[Interval], n_bands: int,
                   embedding: dict[str, np.ndarray], onset: float, n_fine: int) -> dict[str, np.ndarray]:
    """Region → (n_fine, d) feature time course of its stage, on the fine grid from the first trigger."""
    phone_vec = {p.text: label_vector(seed, "phone", p.text, PHONE_DIM) for p in phones}
    word_vec = {w.text: label_vector(seed, "word", w.text, WORD_DIM) for w in words}
    return {"auditory": band_features(audio, n_bands, onset, n_fine),
            "phonetic": interval_features(phones, phone_vec, PHONE_DIM, onset, n_fine),
            "lexical": interval_features(words, word_vec, WORD_DIM, onset, n_fine),
            "semantic": interval_features(words, embedding, SEMANTIC_DIM, onset, n_fine)}


def double_gamma_hrf(hz: float = FINE_HZ, length: float = 32.0) -> np.ndarray:
    """SPM canonical HRF (peak 6 s, undershoot 16 s, ratio 1/6) sampled at ``hz``, unit sum."""
    from scipy.stats import gamma
    t = np.arange(0, length, 1 / hz)
    h = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6
    return h / h.sum()


def convolve_hrf(X: np.ndarray, hrf: np.ndarray) -> np.ndarray:
    """Causal convolution of every column of ``X`` (n_fine, n_feat) with ``hrf``; same shape."""
    out = np.zeros_like(X)
    for j in range(X.shape[1]):
        out[:, j] = np.convolve(X[:, j], hrf)[: X.shape[0]]
    return out


# --------------------------------------------------------------------------- common space
@dataclass
class CommonSpace:
    region: np.ndarray
    """int8 (n_vertices,), index into REGION_NAMES."""
    preferred: np.ndarray
    """int64 (n_vertices,), preferred category of semantic vertices, -1 elsewhere."""
    weights: dict[str, np.ndarray]
    """Region → (n_vertices, d) read-out of its stage's features; zero rows for vertices of other regions."""
    snr: np.ndarray
    """(n_vertices,) planted SNR of the vertex before participant noise level and voxel jitter."""


def draw_regions(rng: np.random.Generator, n_vertices: int, fractions: dict[str, float]) -> np.ndarray:
    """(n_vertices,) int8 region label of each vertex: ``fractions[stage]`` of them per stage, the rest null,
    in shuffled order (nothing downstream may rely on vertices being sorted by region)."""
    region = np.zeros(n_vertices, dtype=np.int8)
    start = 0
    for name in STAGES:
        n = int(round(fractions[name] * n_vertices))
        region[start:start + n] = REGION_NAMES.index(name)
        start += n
    return region[rng.permutation(n_vertices)]


def make_common_space(rng: np.random.Generator, region: np.ndarray, dims: dict[str, int],
                      snrs: dict[str, float], snr_spread: float, centroids: np.ndarray,
                      patches: list | None = None, fwhm_mm: float = 0.0) -> CommonSpace:
    """Draw read-out weights, preferred categories and SNRs of the vertices.

    region : (n_vertices,) int, from :func:`draw_regions`
    dims, snrs : region → feature dimension, median SNR (the ``STAGES``)
    centroids : (n_categories, SEMANTIC_DIM) category centroids of the semantic space
    patches, fwhm_mm : surface patches (``placement.place``) within which weights, SNRs and preferred
        categories vary smoothly (Gaussian kernel of this FWHM); None = independent vertices
    """
    patches = patches or []
    n_vertices = len(region)
    n_cat = len(centroids)
    preferred = np.full(n_vertices, -1, dtype=np.int64)
    sem = np.flatnonzero(region == SEMANTIC)
    sem_patches = [p for p in patches if p.region == "semantic"]
    if sem_patches:
        # each category a band along a smooth random field of the patch, rotated per patch: every category
        # about equally often, in contiguous stretches of cortex
        field = smooth(rng.standard_normal(n_vertices), sem_patches, fwhm_mm)
        for k, p in enumerate(sem_patches):
            order = p.members[np.argsort(field[p.members], kind="stable")]
            preferred[order] = (np.arange(len(order)) * n_cat // len(order) + k) % n_cat
    else:
        preferred[sem] = rng.permutation(np.arange(len(sem)) % n_cat)   # every category ~equally often
    weights = {}
    for name in STAGES:
        Z = smooth(rng.standard_normal((n_vertices, dims[name])), patches, fwhm_mm)
        mine = region == REGION_NAMES.index(name)
        if name == "auditory":                 # mostly positive (louder → more response), some spectral contrast
            W = 0.5 + Z
        elif name == "semantic":               # towards the preferred category, graded within it
            W = centroids[np.maximum(preferred, 0)] + 0.25 * Z
        else:
            W = Z
        weights[name] = np.where(mine[:, None], W, 0.0)
    log_snr = smooth(rng.standard_normal(n_vertices), patches, fwhm_mm)
    median = np.array([snrs.get(REGION_NAMES[r], 0.0) for r in region])
    snr = np.where(region == NULL, 0.0, median * np.exp(snr_spread * log_snr))
    return CommonSpace(region, preferred, weights, snr)


def vertex_signals(space: CommonSpace, feats: dict[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Noise-free response of every vertex at the given fine-grid rows, z-scored per vertex.

    Parameters
    ----------
    feats : region → array (n_fine, d), from ``stage_features``
    rows : int array (n_rows,), fine-grid index of the TR mid-point of each hf5 row

    Returns
    -------
    S : array (n_rows, n_vertices); null vertices (and any constant signal) are 0.
    """
    hrf = double_gamma_hrf()
    S = np.zeros((len(rows), len(space.region)))
    for name, W in space.weights.items():
        S += convolve_hrf(feats[name], hrf)[rows] @ W.T          # (n_rows, d) @ (d, n_vertices)
    S -= S.mean(axis=0)
    sd = S.std(axis=0)
    ok = sd > 1e-9
    S[:, ok] /= sd[ok]
    S[:, ~ok] = 0.0
    return S


# --------------------------------------------------------------------------- participants
@dataclass
class Participant:
    voxel_to_vertex: np.ndarray
    """int64 (n_voxels,), vertex of each voxel, -1 = unmapped (pure noise) or NaN voxel."""
    snr: np.ndarray
    """float32 (n_voxels,), planted signal/noise variance ratio, 0 for null, unmapped and NaN voxels."""
    nan_voxels: np.ndarray
    """bool (n_voxels,), voxels written as all-NaN (outside the brain mask in real data)."""
    noise_level: float
    """Noise SD multiplier of this participant (its SNRs are divided by its square)."""


def make_participant(rng: np.random.Generator, space: CommonSpace, coverage: tuple[float, float],
                     duplicate_frac: float, unmapped_frac: float, n_nan: int, noise_spread: float,
                     snr_jitter: float = 0.25) -> Participant:
    """Voxel set of one participant: a random subset of vertices, some seen by two voxels, a few
    unmapped noise voxels and ``n_nan`` NaN voxels, in shuffled order."""
    n_vert = len(space.region)
    cov = rng.uniform(*coverage)
    covered = np.sort(rng.choice(n_vert, size=max(1, int(round(cov * n_vert))), replace=False))
    dup = rng.choice(covered, size=int(round(duplicate_frac * len(covered))))   # many-to-one resampling
    mapped = np.concatenate([covered, dup])
    n_unmapped = max(1, int(round(unmapped_frac * len(mapped))))
    v2v = np.concatenate([mapped, np.full(n_unmapped + n_nan, -1)]).astype(np.int64)
    nan = np.zeros(len(v2v), dtype=bool)
    nan[len(v2v) - n_nan:] = True
    perm = rng.permutation(len(v2v))
    v2v, nan = v2v[perm], nan[perm]
    noise_level = float(np.exp(rng.uniform(-noise_spread, noise_spread)))
    jitter = np.exp(snr_jitter * rng.standard_normal(len(v2v)))
    snr = np.where(v2v >= 0, space.snr[np.maximum(v2v, 0)], 0.0) * jitter / noise_level ** 2
    snr[nan] = 0.0
    return Participant(v2v, snr.astype(np.float32), nan, noise_level)


def ar1_noise(rng: np.random.Generator, n_rows: int, n_vox: int, rho: float) -> np.ndarray:
    """Unit-variance AR(1) noise (n_rows, n_vox), started from the stationary distribution."""
    e = rng.standard_normal((n_rows, n_vox))
    out = np.empty_like(e)
    out[0] = e[0]
    for t in range(1, n_rows):
        out[t] = rho * out[t - 1] + np.sqrt(1 - rho ** 2) * e[t]
    return out


def zscore_voxels(Y: np.ndarray, nan_voxels: np.ndarray) -> np.ndarray:
    """Z-score each column over time (ddof 0); NaN voxels become all-NaN. Returns float32 (n_rows, n_vox)."""
    Z = zscore(Y)
    Z[:, nan_voxels] = np.nan
    return Z.astype(np.float32)


def participant_responses(rng: np.random.Generator, S: np.ndarray, part: Participant,
                          noise_ar: float) -> np.ndarray:
    """One scan of one story: ``sqrt(snr) * S[:, vertex] + noise``, z-scored per voxel.

    Parameters
    ----------
    S : array (n_rows, n_vertices), unit-variance vertex signals (``vertex_signals``)

    Returns
    -------
    Y : float32 (n_rows, n_voxels), NaN voxels all-NaN
    """
    mapped = part.voxel_to_vertex >= 0
    signal = S[:, np.maximum(part.voxel_to_vertex, 0)] * mapped          # (n_rows, n_voxels)
    noise = ar1_noise(rng, S.shape[0], len(part.snr), noise_ar)
    Y = np.sqrt(part.snr.astype(np.float64)) * signal + noise
    return zscore_voxels(Y, part.nan_voxels)
