"""Low-level residual alignment (brain_evaluate_residuals.py): how much of a layer's brain
alignment survives once what low-level speech features explain is removed from the layer.

Per layer, a cross-validated ridge (``RidgeCV``, one alpha per feature column) maps the low-level spaces
(``lowlevel.StimulusFeatures``: spectral band power, word and phone rate, ... on the same TR grid, z-scored
and FIR-delayed like the model features) to the layer's features. It is fit on the **training stories
only**; the residual ``features - prediction`` is then taken on every story, the test story included,
with those weights (no test-story information reaches the residualiser). The encoding model runs on the
residuals exactly as on the full features (``evaluate.pipeline.encode``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.evaluate.encoding import VoxelScores, check_alphas_field, cv_splits
from braintune_dist.ridge.backend import backend_of
from braintune_dist.ridge.ridge import RidgeCV
from braintune_dist.features.lowlevel import StimulusFeatures
from braintune_dist.analysis.compare import StatsSettings, paired_table


@dataclass
class ResidualSettings:
    """Low-level residual alignment."""

    enabled: bool = True
    """Run the residual analysis."""
    spaces: list[str] = field(default_factory=lambda: ["spectral", "word_rate", "phone_rate"])
    """Low-level spaces removed from the features (``lowlevel.SPACES``: spectral, word_rate, phone_rate,
    categories, word_rate_mid)."""
    n_bands: int = 16
    """Bands of the spectral space."""
    alphas: list[float] = field(default_factory=lambda: np.logspace(-2, 6, 9).tolist())
    """Ridge penalties of the low-level → feature regression (the original brain-tuning code: 1e-6 … 1e9, 10-fold)."""
    cv: int = 0
    """0 = leave-one-story-out over the training stories; K > 1 = K contiguous folds."""

    def __post_init__(self):
        check_alphas_field("residual.alphas", self.alphas)


class ResidualFeatures:
    """A feature source minus its low-level-predictable part; same interface as ``FeatureExtractor``.

    Parameters
    ----------
    source : feature source (``layers``, ``story_features(ds, story) -> {layer: (n_rows, D)}``)
    lowlevel : StimulusFeatures
        Its spaces are concatenated into one low-level design (n_rows, d_low).
    train_stories : stories the residualising ridge is fit on (never the test story)
    alphas, cv, backend : RidgeCV settings (``cv=0``: leave one training story out)

    Attributes
    ----------
    layers : list, those of ``source``
    models_ : dict layer → fitted RidgeCV (after the first ``story_features`` call)
    """

    def __init__(self, source, lowlevel: StimulusFeatures, train_stories: list[str],
                 alphas=np.logspace(-2, 6, 9), cv: int = 0, backend: str = "auto"):
        if not train_stories:
            raise ValueError("ResidualFeatures needs at least one training story")
        self.source, self.lowlevel, self.train_stories = source, lowlevel, list(train_stories)
        self.alphas, self.cv, self.backend = alphas, cv, backend
        self.layers = list(source.layers)
        self.models_: dict = {}
        self._cache: dict[str, tuple[np.ndarray, dict]] = {}

    def _inputs(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict]:
        """(low-level design (n_rows, d_low), source features {layer: (n_rows, D)}); training stories are
        kept, since the fit and the encoding both read them."""
        if story in self._cache:
            return self._cache[story]
        low = self.lowlevel.story_features(ds, story)
        L = np.concatenate([low[s] for s in self.lowlevel.layers], axis=1).astype(np.float32)
        out = (L, self.source.story_features(ds, story))
        if story in self.train_stories:
            self._cache[story] = out
        return out

    def fit(self, ds: LebelDataset) -> "ResidualFeatures":
        """Fit one low-level → features ridge per layer on the training stories."""
        per_story = [self._inputs(ds, s) for s in self.train_stories]
        L = np.concatenate([p[0] for p in per_story])
        n = [len(p[0]) for p in per_story]
        cv = cv_splits(n, self.cv)
        for lay in self.layers:
            X = np.concatenate([p[1][lay] for p in per_story])
            self.models_[lay] = RidgeCV(alphas=self.alphas, cv=cv, fit_intercept=True, backend=self.backend).fit(L, X)
        return self

    def _predict(self, lay, L: np.ndarray) -> np.ndarray:
        pred = self.models_[lay].predict(L)
        return backend_of(pred).to_numpy(pred)

    def story_features(self, ds: LebelDataset, story: str) -> dict:
        """Residual features of ``story``: layer → (n_rows, D) float32."""
        if not self.models_:
            self.fit(ds)
        L, feats = self._inputs(ds, story)
        return {lay: (feats[lay] - self._predict(lay, L)).astype(np.float32) for lay in self.layers}

    def explained(self, ds: LebelDataset, story: str) -> dict:
        """Share of each layer's feature variance the low-level spaces explain on ``story`` (R², pooled
        over feature columns; on the test story it is out of sample): layer → float."""
        if not self.models_:
            self.fit(ds)
        L, feats = self._inputs(ds, story)
        out = {}
        for lay in self.layers:
            X = feats[lay].astype(np.float64)
            res = X - self._predict(lay, L)
            out[lay] = float(1.0 - (res ** 2).sum() / max(((X - X.mean(0)) ** 2).sum(), 1e-12))
        return out


def residual_source(source, ds: LebelDataset, train_stories: list[str], settings: ResidualSettings,
                    features_cfg, backend: str = "auto") -> ResidualFeatures:
    """``ResidualFeatures`` of ``source`` against the low-level spaces of ``settings`` (same FIR delays and
    Lanczos settings as ``features_cfg``)."""
    low = StimulusFeatures(features_cfg, spaces=tuple(settings.spaces), n_bands=settings.n_bands)
    return ResidualFeatures(source, low, train_stories, settings.alphas, settings.cv, backend)


def survival_table(full: dict[str, dict[str, VoxelScores]], residual: dict[str, dict[str, VoxelScores]],
                   threshold: float, stats: StatsSettings) -> list[dict]:
    """Alignment that survives the removal of low-level features, per model, layer, region and participant.

    Parameters
    ----------
    full, residual : model → subject → VoxelScores (same models, subjects and layers)

    Returns
    -------
    rows : list of dict
        ``paired_table`` rows (``mean_a`` = full, ``mean_b`` = residual, ``diff`` = full − residual with
        CI and Wilcoxon p across voxels or participants) plus ``model`` and ``surviving`` = residual / full.
    """
    rows = []
    for model in full:
        for r in paired_table(full[model], residual[model], threshold, stats, model=model,
                              comparison="full - residual"):
            r["surviving"] = r["mean_b"] / r["mean_a"] if r["mean_a"] and np.isfinite(r["mean_a"]) else np.nan
            rows.append(r)
    return rows
