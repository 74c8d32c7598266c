"""Simulated brain with known ground truth, shared by every participant through a common vertex space.

Vertices are labelled by region (``REGION_NAMES``):

* **auditory**: a random mix of log band envelopes of the audio (low-level acoustics);
* **semantic**: a mix of category-indicator time courses (which semantic category is being heard),
  with one preferred category per vertex;
* **null**: no signal.

Features live on a fine grid (``FINE_HZ``) starting at the first trigger (audio time ``-SOUND_ONSET``),
are convolved with a canonical double-gamma HRF, sampled at the TR mid-points and z-scored per vertex
per story, so the signal of each driven vertex has unit variance on the rows of the hf5 file.
A participant's voxel ``j`` maps to vertex ``v = voxel_to_vertex[j]`` and records
``sqrt(snr[j]) * signal[:, v] + noise`` with unit-variance AR(1) noise, i.e. ``snr`` is exactly the
planted signal-to-noise variance ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braintune_dist.data.lebel import SAMPLE_RATE
from braintune_dist.data.textgrid import Interval
from braintune_dist.data.voxels import zscore

FINE_HZ = 10              # feature grid rate; TR mid-points (odd seconds) fall exactly on it
REGION_NAMES = ("null", "auditory", "semantic")
NULL, AUDITORY, SEMANTIC = 0, 1, 2


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


def category_timecourses(words: list[Interval], category: dict[str, int], n_cat: int, onset: float,
                         n_fine: int) -> np.ndarray:
    """Fraction of each fine bin during which a word of each category is heard.

    Returns
    -------
    X : array (n_fine, n_cat), float64 in [0, 1]; function words (no category) add nothing.
    """
    X = np.zeros((n_fine, n_cat))
    for iv in words:
        c = category.get(iv.text, -1)
        if c < 0:
            continue
        a, b = (iv.xmin + onset) * FINE_HZ, (iv.xmax + onset) * FINE_HZ   # in bins
        for i in range(int(np.floor(a)), min(int(np.ceil(b)), n_fine)):
            X[i, c] += min(b, i + 1) - max(a, i)
    return X


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
    w_audio: np.ndarray
    """(n_vertices, n_bands) band weights; zero rows for non-auditory vertices."""
    w_semantic: np.ndarray
    """(n_vertices, n_cat) category weights; zero rows for non-semantic vertices."""
    snr: np.ndarray
    """(n_vertices,) planted SNR of the vertex before participant noise level and voxel jitter."""


def make_common_space(rng: np.random.Generator, n_vertices: int, frac_auditory: float, frac_semantic: float,
                      n_bands: int, n_cat: int, snr_auditory: float, snr_semantic: float,
                      snr_spread: float) -> CommonSpace:
    """Draw region labels, feature weights and SNRs of the vertices (shuffled, not sorted by region)."""
    n_aud, n_sem = int(round(frac_auditory * n_vertices)), int(round(frac_semantic * n_vertices))
    region = np.zeros(n_vertices, dtype=np.int8)
    region[:n_aud], region[n_aud: n_aud + n_sem] = AUDITORY, SEMANTIC
    region = region[rng.permutation(n_vertices)]
    preferred = np.full(n_vertices, -1, dtype=np.int64)
    sem = np.flatnonzero(region == SEMANTIC)
    preferred[sem] = rng.permutation(np.arange(len(sem)) % n_cat)   # every category gets ~equal vertices
    w_audio = np.zeros((n_vertices, n_bands))
    w_semantic = np.zeros((n_vertices, n_cat))
    snr = np.zeros(n_vertices)
    for v in range(n_vertices):
        if region[v] == AUDITORY:
            # mostly positive weights (louder → more response) with some spectral contrast
            w_audio[v] = rng.normal(0.5, 1.0, n_bands)
            snr[v] = snr_auditory * np.exp(snr_spread * rng.standard_normal())
        elif region[v] == SEMANTIC:
            w_semantic[v] = 0.25 * rng.standard_normal(n_cat)
            w_semantic[v, preferred[v]] = 1.0
            snr[v] = snr_semantic * np.exp(snr_spread * rng.standard_normal())
    return CommonSpace(region, preferred, w_audio, w_semantic, snr)


def vertex_signals(space: CommonSpace, audio_feat: np.ndarray, sem_feat: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """Noise-free response of every vertex at the given fine-grid rows, z-scored per vertex.

    Parameters
    ----------
    audio_feat, sem_feat : arrays (n_fine, n_bands), (n_fine, n_cat)
    rows : int array (n_rows,), fine-grid index of the TR mid-point of each hf5 row

    Returns
    -------
    S : array (n_rows, n_vertices); null vertices (and any constant signal) are 0.
    """
    hrf = double_gamma_hrf()
    A = convolve_hrf(audio_feat, hrf)[rows]                  # (n_rows, n_bands)
    C = convolve_hrf(sem_feat, hrf)[rows]                    # (n_rows, n_cat)
    S = A @ space.w_audio.T + C @ space.w_semantic.T         # (n_rows, n_vertices)
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
