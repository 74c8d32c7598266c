"""The voxel-wise encoding model every evaluation and analysis fits: one rule for CV, responses and scores.

For one participant and one feature layer, a ridge model (one alpha per voxel, chosen by CV over the
training stories) maps the layer's delayed features to the voxel responses. Its score is Pearson r
between the prediction on the held-out test story and the **mean of the test story's repeats**,
normalised by the Schoppe noise ceiling ``cc_max`` of the same repeats. The CV error of the chosen
alpha is kept too: it picks the best layer without looking at the test story.

:func:`fit_layer` is a plain function of arrays; ``evaluate.pipeline`` runs it as a Ray task per
(model, participant, layer) or in-process.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt
from braintune_dist.analysis.stats import block_permutation_test, fdr_bh
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.evaluate.compute import node_id
from braintune_dist.data.voxels import CommonSpace, normalised_alignment, zscore
from braintune_dist.config import ConfigError
from braintune_dist.ridge.backend import BACKENDS, backend_of
from braintune_dist.ridge.checks import alphas_problem
from braintune_dist.ridge.correlation import correlation_score
from braintune_dist.ridge.ridge import RidgeCV


@dataclass
class RidgeConfig:
    """Voxel-wise ridge settings."""

    alphas: list[float] = field(default_factory=lambda: np.logspace(0, 8, 17).tolist())
    """Ridge penalties added to the eigenvalues of XᵀX (himalaya convention; Huth's α grid is √ of this)."""
    cv: NonNegativeInt = 0
    """0 = leave-one-story-out over the training stories; K > 1 = K folds of whole consecutive stories."""
    bootstraps: NonNegativeInt = 0
    """> 0: the papers' chunked bootstrap instead of cv, with this many resamples (their code: 3)."""
    chunk_trs: PositiveInt = 20
    """Bootstrap: rows (TRs) per held-out chunk (their code: 20)."""
    held_out: OpenUnitInterval = 0.25
    """Bootstrap: share of the training chunks each resample holds out (their code: 0.25)."""
    backend: str = "auto"
    """numpy, cupy, or auto (cupy when a GPU is usable where the fit runs)."""
    host_pool: bool = False
    """CPU: reuse glibc's heap for the fit's large temporaries (~15 % faster at 8000 voxels; changes malloc
    for the whole process, so only for processes that do nothing else)."""
    block_cv: bool = True
    """Leave-one-story-out (and K-fold) CV errors from one decomposition of all training rows where that is cheaper
    (the same numbers, 18x faster at 84 stories: BENCHMARKS.md); false = one decomposition per split."""
    nc_threshold: float = 0.4
    """Voxels with noise ceiling ≤ this get no normalised score (NaN), as the original brain-tuning code's `get_fil_acc` (0.4)."""

    def __post_init__(self):
        check_alphas_field("ridge.alphas", self.alphas)
        if self.backend not in BACKENDS:
            raise ConfigError(f"ridge.backend: {self.backend!r} is not one of {list(BACKENDS)}")


def check_alphas_field(name: str, alphas) -> None:
    """Raise ``ConfigError`` naming the config field ``name`` unless it holds positive, finite ridge penalties."""
    why = alphas_problem(alphas)
    if why:
        raise ConfigError(f"{name} {why}")


@dataclass
class PermutationSettings:
    """Block-permutation test of every voxel's r on the test story."""

    enabled: bool = True
    """Run the test (else p-values are NaN and no voxel counts as significant)."""
    block: PositiveInt = 10
    """TRs per shuffled block (10 TRs = 20 s, longer than the haemodynamic response)."""
    n_perm: PositiveInt = 1000
    """Permutations (the smallest reachable p is 1 / (n_perm + 1))."""
    q: OpenUnitInterval = 0.05
    """FDR level (Benjamini-Hochberg over a participant's voxels) for the fraction of significant voxels."""
    seed: int = 0
    """Seed of the block orders (the same permutations for every voxel, layer and model)."""


def story_splits(lengths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-story-out (train_idx, test_idx) pairs for stories stacked in order."""
    bounds = np.cumsum([0] + list(lengths))
    idx = np.arange(bounds[-1])
    return [(np.r_[idx[:a], idx[b:]], idx[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def story_folds(lengths: list[int], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` folds of whole stories, each a run of consecutive stories of about n / k rows: (train_idx, test_idx)."""
    bounds = np.cumsum([0] + list(lengths))
    # story s goes to the fold its middle row falls in, so folds hold whole stories and near-equal rows
    fold = np.minimum((bounds[:-1] + bounds[1:]) / 2 * k // bounds[-1], k - 1).astype(int)
    idx = np.arange(bounds[-1])
    rows = np.repeat(fold, lengths)
    return [(idx[rows != f], idx[rows == f]) for f in range(k) if (rows == f).any()]


def chunk_bootstrap(n: int, boots: int, chunk: int, held_out: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The chunked bootstrap of Huth et al.'s ``bootstrap_ridge``: ``boots`` resamples, each holding out a random
    ``held_out`` share of the rows' consecutive ``chunk``-row blocks (the rest train)."""
    starts = np.arange(0, n, chunk)
    n_out = max(1, int(round(held_out * len(starts))))
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    out = []
    for _ in range(boots):
        mask = np.zeros(n, bool)
        for s in rng.choice(starts, n_out, replace=False):
            mask[s:s + chunk] = True
        out.append((idx[~mask], idx[mask]))
    return out


def cv_splits(lengths: list[int], cv: int = 0, bootstraps: int = 0, chunk_trs: int = 20, held_out: float = 0.25,
              seed: int = 0):
    """The CV of every ridge in the package. ``lengths``: rows per stacked story.

    ``bootstraps`` > 0: the chunked bootstrap (:func:`chunk_bootstrap`); else leave one story out (``cv=0``), or
    ``cv`` folds of whole stories (:func:`story_folds`); with fewer stories than that, ``max(cv, 2)`` contiguous
    row folds.
    """
    if bootstraps:
        return chunk_bootstrap(int(sum(lengths)), bootstraps, chunk_trs, held_out, seed)
    if cv == 0 and len(lengths) > 1 and min(lengths) > 0:
        return story_splits(lengths)
    if cv > 1 and len(lengths) >= cv and min(lengths) > 0:
        return story_folds(lengths, cv)
    return max(cv, 2)


@dataclass
class ParticipantData:
    """One participant's responses, ceiling and voxel regions (built once, reused for every layer)."""

    name: str
    train: dict[str, np.ndarray]     # story → (n_rows_s, n_voxels) z-scored float32
    test: np.ndarray                 # (n_test_rows, n_voxels): mean of the test repeats, z-scored
    cc_max: np.ndarray               # (n_voxels,)
    regions: np.ndarray              # (n_voxels,) region name per voxel ('' = none)


def load_participant(ds: LebelDataset, participant: str, stories: list[str], space: CommonSpace | None) -> ParticipantData:
    """Responses of ``stories`` (z-scored per story), the test story's repeat mean and noise ceiling."""
    train = {s: zscore(ds.load_responses(participant, s)).astype(np.float32) for s in stories}
    reps = ds.load_repeats(participant)                                        # (n_rep, n_test_rows, n_voxels)
    regions = space.voxel_regions(participant) if space is not None else np.full(reps.shape[2], "all")
    return ParticipantData(participant, train, zscore(reps.mean(0)).astype(np.float32), ds.noise_ceiling(participant, reps),
                       np.asarray([str(r) for r in regions]))


@dataclass
class LayerFit:
    """Result of one encoding fit (one participant, one layer, one set of training stories)."""

    r: np.ndarray
    """(n_voxels,) Pearson r on the test story, float64."""
    p: np.ndarray
    """(n_voxels,) block-permutation p of r (NaN when the test is off)."""
    cv_mse: np.ndarray
    """(n_voxels,) validation MSE of the chosen alpha, mean over the CV splits (training stories only)."""
    alphas: np.ndarray
    """(n_voxels,) chosen alpha."""
    node: str = ""
    """Ray node the fit ran on ('' in-process)."""


def fit_layer(X: dict[str, np.ndarray], sub: ParticipantData, stories: list[str], test_story: str, cfg: RidgeConfig,
              perm: PermutationSettings | None = None) -> LayerFit:
    """Fit ridge on ``stories`` of one layer's features, score it on the test story.

    Parameters
    ----------
    X : dict story → array of shape (n_rows_s, n_features)
        One layer's TR-aligned features; holds ``stories`` and ``test_story``.
    sub : SubjectData  (its ``train`` holds ``stories``)
    perm : PermutationSettings or None
        When enabled, a block-permutation p per voxel (same permutations for every call with its seed).
    """
    Xs = [X[s] for s in stories]
    cv = cv_splits([len(x) for x in Xs], cfg.cv, cfg.bootstraps, cfg.chunk_trs, cfg.held_out)
    model = RidgeCV(alphas=cfg.alphas, cv=cv, backend=cfg.backend, host_pool=cfg.host_pool, block_cv="auto" if cfg.block_cv else False)
    model.fit(np.concatenate(Xs), np.concatenate([sub.train[s] for s in stories]))
    pred = model.predict(X[test_story])
    pred = backend_of(pred).to_numpy(pred)                               # (n_test_rows, n_voxels)
    if perm is not None and perm.enabled:
        res = block_permutation_test(sub.test, pred, perm.block, perm.n_perm, perm.seed)
        r, p = np.asarray(res.r, np.float64), np.asarray(res.p, np.float64)
    else:
        r = np.asarray(correlation_score(sub.test, pred), np.float64)
        p = np.full(r.shape, np.nan)
    return LayerFit(r, p, -model.cv_scores_.max(0), np.asarray(model.best_alphas_), node_id())


@dataclass
class VoxelScores:
    """One participant's per-voxel results for every layer of one feature source."""

    participant: str
    regions: np.ndarray
    """(n_voxels,) region name per voxel ('' = unmapped)."""
    cc_max: np.ndarray
    """(n_voxels,) noise ceiling on the test story."""
    r: dict = field(default_factory=dict)
    """layer → (n_voxels,) Pearson r on the test story."""
    p: dict = field(default_factory=dict)
    """layer → (n_voxels,) block-permutation p (NaN when the test is off)."""
    cv_mse: dict = field(default_factory=dict)
    """layer → (n_voxels,) CV error of the chosen alpha on the training stories."""

    def r_norm(self, layer, threshold: float) -> np.ndarray:
        """(n_voxels,) r / noise ceiling, NaN where the ceiling is ≤ ``threshold``."""
        return normalised_alignment(self.r[layer], self.cc_max, threshold)

    def region_mask(self, region: str) -> np.ndarray:
        """(n_voxels,) bool; ``'all'`` selects every voxel."""
        return np.ones(self.regions.shape, bool) if region == "all" else self.regions == region

    def region_names(self) -> list[str]:
        """``'all'`` then the labelled regions, sorted."""
        return ["all"] + sorted(set(self.regions.tolist()) - {"", "all"})

    def best_layer(self):
        """The layer of lowest mean CV error over voxels: chosen on the training stories only."""
        return min(self.cv_mse, key=lambda lay: float(np.mean(self.cv_mse[lay])))


def summarise(fit: LayerFit, vs: VoxelScores, cfg: RidgeConfig, q: float | None = None, **keys) -> list[dict]:
    """Rows of mean r, mean r/ceiling and CV error per region (plus 'all') of one fit; with ``q``, also
    ``frac_significant``: the share of voxels whose FDR-adjusted p is below ``q`` (NaN p never is)."""
    r_norm = normalised_alignment(fit.r, vs.cc_max, cfg.nc_threshold)
    sig = fdr_bh(fit.p) < q if q is not None else None
    rows = []
    for region in vs.region_names():
        m = vs.region_mask(region)
        rn = r_norm[m]
        row = dict(keys, subject=vs.participant, region=region, n_voxels=int(m.sum()),
                   mean_r=float(np.mean(fit.r[m])) if m.any() else np.nan,
                   mean_r_norm=float(np.nanmean(rn)) if np.isfinite(rn).any() else np.nan,
                   cv_mse=float(np.mean(fit.cv_mse[m])) if m.any() else np.nan)
        if sig is not None:
            row["frac_significant"] = float(sig[m].mean()) if m.any() else np.nan
        rows.append(row)
    return rows
