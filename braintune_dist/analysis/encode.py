"""Voxel-wise encoding with predictions kept: per layer, ridge fit on the training stories, Pearson r on
the test story and a block-permutation p-value for every voxel (the analyses' common core).

``encoding.alignment.evaluate_alignment`` returns only r; the permutation test needs the prediction
itself, so this module fits the same model (same RidgeConfig, same leave-one-story-out CV, same
``load_subject`` responses) and keeps the prediction long enough to test it. Any feature source with
``layers`` and ``story_features(ds, story)`` works: a ``FeatureExtractor``, ``StimulusFeatures`` or
``ResidualFeatures``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.voxels import CommonSpace, normalised_alignment
from braintune_dist.evaluate.alignment import RidgeConfig, load_subject, story_splits, summarise
from braintune_dist.ridge.backend import backend_of
from braintune_dist.ridge.correlation import correlation_score
from braintune_dist.ridge.ridge import RidgeCV
from braintune_dist.analysis.stats import block_permutation_test, fdr_bh


@dataclass
class PermutationSettings:
    """Block-permutation test of every voxel's r on the test story."""

    enabled: bool = True
    """Run the test (else p-values are NaN and no voxel counts as significant)."""
    block: int = 10
    """TRs per shuffled block (10 TRs = 20 s, longer than the haemodynamic response)."""
    n_perm: int = 1000
    """Permutations (the smallest reachable p is 1 / (n_perm + 1))."""
    q: float = 0.05
    """FDR level (Benjamini-Hochberg over a participant's voxels) for the fraction of significant voxels."""
    seed: int = 0
    """Seed of the block orders (the same permutations for every voxel, layer and model)."""


@dataclass
class VoxelScores:
    """One participant's per-voxel results for every layer of one feature source."""

    subject: str
    regions: np.ndarray
    """(n_voxels,) region name per voxel ('' = unmapped)."""
    cc_max: np.ndarray
    """(n_voxels,) noise ceiling on the test story."""
    r: dict
    """layer → (n_voxels,) Pearson r on the test story."""
    p: dict
    """layer → (n_voxels,) block-permutation p (NaN when the test is off)."""

    def r_norm(self, layer, threshold: float) -> np.ndarray:
        """(n_voxels,) r / noise ceiling, NaN where the ceiling is ≤ ``threshold``."""
        return normalised_alignment(self.r[layer], self.cc_max, threshold)

    def region_mask(self, region: str) -> np.ndarray:
        """(n_voxels,) bool; ``'all'`` selects every voxel."""
        return np.ones(self.regions.shape, bool) if region == "all" else self.regions == region

    def region_names(self) -> list[str]:
        """``'all'`` then the labelled regions, sorted."""
        return ["all"] + sorted(set(self.regions.tolist()) - {"", "all"})


def fit_predict(X_stories: list[np.ndarray], Y_stories: list[np.ndarray], X_test: np.ndarray,
                cfg: RidgeConfig) -> np.ndarray:
    """Ridge (per-voxel alpha by leave-one-story-out CV, or K folds) on the stacked stories → test prediction.

    X_stories : per story (n_rows_s, n_features); Y_stories : per story (n_rows_s, n_voxels);
    X_test : (n_test, n_features) → prediction (n_test, n_voxels), NumPy float.
    """
    X, Y = np.concatenate(X_stories), np.concatenate(Y_stories)
    cv = story_splits([len(x) for x in X_stories]) if cfg.cv == 0 and len(X_stories) > 1 else max(cfg.cv, 2)
    pred = RidgeCV(alphas=cfg.alphas, cv=cv, backend=cfg.backend, host_pool=cfg.host_pool).fit(X, Y).predict(X_test)
    return backend_of(pred).to_numpy(pred)


def score_layers(ds: LebelDataset, source, subjects: list[str], train_stories: list[str], ridge: RidgeConfig,
                 space: CommonSpace | None, perm: PermutationSettings, label: str = "model", kind: str = "full",
                 progress: bool = False) -> tuple[list[dict], dict[str, VoxelScores]]:
    """Per layer, participant and region: mean r, mean r/ceiling and the fraction of significant voxels.

    Parameters
    ----------
    source : feature source with ``layers`` and ``story_features(ds, story) -> {layer: (n_rows, D)}``
    kind : label of the feature variant in the rows ('full', 'residual', ...)

    Returns
    -------
    rows : list of dict
        ``{model, kind, layer, subject, region, n_voxels, mean_r, mean_r_norm, frac_significant}``;
        ``frac_significant`` = share of the region's voxels with FDR-adjusted permutation p < ``perm.q``.
    scores : dict subject → VoxelScores
    """
    test = ds.cfg.test_story
    X_tr = {s: source.story_features(ds, s) for s in train_stories}   # story → layer → (n_rows, D)
    X_te = source.story_features(ds, test)
    n_test = len(next(iter(X_te.values())))
    if perm.enabled and n_test // max(perm.block, 1) < 2:
        raise ValueError(f"PermutationSettings.block={perm.block}: the test story {test!r} has {n_test} rows, "
                         f"fewer than 2 blocks; use a block of at most {n_test // 2} TRs")
    rows: list[dict] = []
    scores: dict[str, VoxelScores] = {}
    bar = tqdm(total=len(subjects) * len(source.layers), desc=f"encode [{label}/{kind}]", disable=not progress)
    for sub_name in subjects:
        sub = load_subject(ds, sub_name, train_stories, space)
        vs = VoxelScores(sub_name, sub.regions, sub.cc_max, {}, {})
        for lay in source.layers:
            pred = fit_predict([X_tr[s][lay] for s in train_stories], sub.train, X_te[lay], ridge)
            if perm.enabled:
                res = block_permutation_test(sub.test, pred, perm.block, perm.n_perm, perm.seed)
                vs.r[lay], vs.p[lay] = res.r, res.p
            else:
                vs.r[lay] = np.asarray(correlation_score(sub.test, pred), np.float64)
                vs.p[lay] = np.full(vs.r[lay].shape, np.nan)
            sig = fdr_bh(vs.p[lay]) < perm.q                                # NaN p → never significant
            for row in summarise(vs.r[lay], sub, ridge, model=label, kind=kind, layer=lay):
                row["region"] = str(row["region"])                          # np.str_ → str for tables
                m = vs.region_mask(row["region"])
                row["frac_significant"] = float(sig[m].mean()) if m.any() else np.nan
                rows.append(row)
            bar.update()
        scores[sub_name] = vs
    bar.close()
    return rows, scores
