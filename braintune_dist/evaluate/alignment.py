"""Brain alignment of a speech model: features per layer → voxel-wise ridge → r and r / noise ceiling.

For each evaluated participant and layer, a ridge model (one alpha per voxel, chosen by CV over the
training stories) maps the layer's delayed features to the voxel responses; the score is Pearson r
between its prediction on the held-out test story and the **mean of the test story's repeats**
(the original brain-tuning code's ``corrs_unnorm``), normalised by the Schoppe noise ceiling ``cc_max`` of the same repeats.
Data-efficiency curves refit the same model with only the first 1, 2, 4, ... training stories.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.voxels import CommonSpace, noise_ceiling, normalised_alignment, zscore
from braintune_dist.features.extract import FeatureExtractor
from braintune_dist.ridge.ridge import RidgeCV


@dataclass
class RidgeConfig:
    """Voxel-wise ridge settings."""

    alphas: list[float] = field(default_factory=lambda: np.logspace(0, 8, 17).tolist())
    """Ridge penalties added to the eigenvalues of XᵀX (himalaya convention; Huth's α grid is √ of this)."""
    cv: int = 0
    """0 = leave-one-story-out over the training stories; K > 1 = K contiguous folds."""
    backend: str = "auto"
    """numpy, cupy, or auto (cupy when a GPU is usable)."""
    host_pool: bool = False
    """CPU: reuse glibc's heap for the fit's large temporaries (~15 % faster at 8000 voxels; changes malloc
    for the whole process, so only for processes that do nothing else)."""
    nc_threshold: float = 0.4
    """Voxels with noise ceiling ≤ this get no normalised score (NaN), as the original brain-tuning code's `get_fil_acc` (0.4)."""


def story_splits(lengths: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-story-out (train_idx, test_idx) pairs for stories stacked in order."""
    bounds = np.cumsum([0] + list(lengths))
    idx = np.arange(bounds[-1])
    return [(np.r_[idx[:a], idx[b:]], idx[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass
class SubjectData:
    """One participant's responses, ceiling and voxel regions (built once, reused for every layer)."""

    name: str
    train: list[np.ndarray]          # per training story, (n_rows_s, n_voxels) z-scored
    test: np.ndarray                 # (n_test_rows, n_voxels): mean of the test repeats, z-scored
    cc_max: np.ndarray               # (n_voxels,)
    regions: np.ndarray              # (n_voxels,) region name per voxel ('' = none)


def load_subject(ds: LebelDataset, subject: str, stories: list[str], space: CommonSpace | None) -> SubjectData:
    train = [zscore(ds.load_responses(subject, s)).astype(np.float32) for s in stories]
    reps = ds.load_repeats(subject)                                        # (n_rep, n_test_rows, n_voxels)
    regions = space.voxel_regions(subject) if space is not None else np.full(reps.shape[2], "all")
    return SubjectData(subject, train, zscore(reps.mean(0)).astype(np.float32), noise_ceiling(reps), regions)


def fit_score(X_stories: list[np.ndarray], Y_stories: list[np.ndarray], X_test: np.ndarray, Y_test: np.ndarray,
              cfg: RidgeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit ridge on the stacked stories, score on the test story.

    Returns
    -------
    r : array of shape (n_voxels,)  Pearson r on the test story.
    best_alphas : array of shape (n_voxels,)
    """
    X, Y = np.concatenate(X_stories), np.concatenate(Y_stories)
    cv = story_splits([len(x) for x in X_stories]) if cfg.cv == 0 and len(X_stories) > 1 else max(cfg.cv, 2)
    model = RidgeCV(alphas=cfg.alphas, cv=cv, backend=cfg.backend, host_pool=cfg.host_pool).fit(X, Y)
    return np.asarray(model.score(X_test, Y_test)), np.asarray(model.best_alphas_)


def summarise(r: np.ndarray, sub: SubjectData, cfg: RidgeConfig, **keys) -> list[dict]:
    """Rows of mean r and mean r/ceiling per region (plus 'all') for one fit."""
    r_norm = normalised_alignment(r, sub.cc_max, cfg.nc_threshold)
    rows = []
    for region in ["all"] + sorted(set(sub.regions) - {"", "all"}):
        m = np.ones_like(r, bool) if region == "all" else sub.regions == region
        rn = r_norm[m]
        rows.append(dict(keys, subject=sub.name, region=region, n_voxels=int(m.sum()),
                         mean_r=float(np.mean(r[m])) if m.any() else np.nan,
                         mean_r_norm=float(np.nanmean(rn)) if np.isfinite(rn).any() else np.nan))
    return rows


def evaluate_alignment(ds: LebelDataset, extractor: FeatureExtractor, subjects: list[str],
                       train_stories: list[str], cfg: RidgeConfig, space: CommonSpace | None = None,
                       efficiency_stories: list[int] | None = None, label: str = "model",
                       progress: bool = True) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Alignment per layer, participant and region, plus the data-efficiency curve.

    Parameters
    ----------
    ds : LebelDataset
    extractor : FeatureExtractor  (its layers are evaluated)
    subjects : participants to evaluate (typically held out from tuning)
    train_stories : stories the encoding models are fit on (order = order used for efficiency subsets)
    efficiency_stories : numbers of training stories for the data-efficiency curve (at the best layer)

    Returns
    -------
    rows : list of dict
        ``{model, kind ('layer' | 'efficiency'), layer, n_stories, hours, subject, region, n_voxels,
        mean_r, mean_r_norm}``.
    voxels : dict
        ``'<subject>/layer<k>/r'`` → (n_voxels,) r on the test story; ``'<subject>/cc_max'``.
    """
    test = ds.cfg.test_story
    X_tr = {s: extractor.story_features(ds, s) for s in train_stories}    # story → layer → (n_rows, D·delays)
    X_te = extractor.story_features(ds, test)
    rows: list[dict] = []
    voxels: dict[str, np.ndarray] = {}
    hours = [len(next(iter(X_tr[s].values()))) * ds.cfg.tr / 3600 for s in train_stories]
    work = [(sub, lay) for sub in subjects for lay in extractor.layers]
    bar = tqdm(total=len(work) + len(subjects) * len(efficiency_stories or []), desc=f"ridge [{label}]",
               disable=not progress, unit="fit")
    for sub_name in subjects:
        sub = load_subject(ds, sub_name, train_stories, space)
        voxels[f"{sub_name}/cc_max"] = sub.cc_max
        best_layer, best = extractor.layers[-1], -np.inf
        for lay in extractor.layers:
            r, alphas = fit_score([X_tr[s][lay] for s in train_stories], sub.train, X_te[lay], sub.test, cfg)
            voxels[f"{sub_name}/layer{lay}/r"] = r
            summary = summarise(r, sub, cfg, model=label, kind="layer", layer=lay,
                                n_stories=len(train_stories), hours=sum(hours))
            rows += summary
            if summary[0]["mean_r"] > best:
                best_layer, best = lay, summary[0]["mean_r"]
            bar.update()
        for n in efficiency_stories or []:
            n = min(n, len(train_stories))
            r, _ = fit_score([X_tr[s][best_layer] for s in train_stories[:n]], sub.train[:n], X_te[best_layer],
                             sub.test, cfg)
            rows += summarise(r, sub, cfg, model=label, kind="efficiency", layer=best_layer, n_stories=n,
                              hours=sum(hours[:n]))
            bar.update()
    bar.close()
    return rows, voxels
