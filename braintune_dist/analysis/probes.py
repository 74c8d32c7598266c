"""Layer-wise linear probes (the "processing stages" picture): which layers of a speech model
carry acoustic, phonetic, lexical and semantic information, before and after brain-tuning.

A probe sample is one causal window of the evaluation feature extractor (``FeatureExtractor``: the last
output frame of the window that ends at time t, cached on disk) and its label is what is heard just
before t, read from the story's audio and TextGrid:

* ``acoustic``: log power in ``n_bands`` bands of the last 100 ms (``lowlevel.spectral``); ridge
  regression, scored by R² on the held-out stories;
* ``phone`` / ``word``: the phone (stress digits dropped) / word being heard; ``category``: the semantic
  category of that word (simulated data: ``ground_truth/meta.json``; real data: a category → words map,
  optional). Ridge on one-hot classes ("ridge classifier"), scored by accuracy against chance (always
  answering the commonest training class).

Every probe is ``RidgeCV`` with leave-one-training-story-out alphas on features z-scored with training
statistics, scored on held-out stories (default: the test story). Each result keeps its per-sample
scores so two models (tuned vs untuned: two calls of :func:`probe_layers`) compare sample by sample.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.config import ConfigError
from braintune_dist.data.lebel import DatasetError, LebelDataset
from braintune_dist.evaluate.encoding import check_alphas_field, cv_splits
from braintune_dist.ridge.backend import backend_of
from braintune_dist.ridge.ridge import RidgeCV
from braintune_dist.features.lowlevel import HZ, category_map, spectral, stimulus_bins
from braintune_dist.analysis.stats import bootstrap_ci, compare_paired

TARGETS = ("acoustic", "phone", "word", "category")


@dataclass
class ProbeSettings:
    """Layer-wise linear probes."""

    enabled: bool = True
    """Run the probes."""
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    """Probe targets: acoustic, phone, word, category (category needs a category map; skipped without one)."""
    test_stories: list[str] = field(default_factory=list)
    """Held-out stories the probes are scored on; empty = the dataset's test story."""
    sample_every: float = 0.5
    """Seconds between probe samples (windows are subsampled to this spacing; ≤ the feature stride = all)."""
    alphas: list[float] = field(default_factory=lambda: np.logspace(-1, 5, 7).tolist())
    """Ridge penalties of the probes (chosen per output by leave-one-training-story-out CV)."""
    n_bands: int = 16
    """Bands of the acoustic target."""
    max_words: int = 50
    """Word-identity classes: the commonest words of the training stories (others are not probed)."""
    min_count: int = 5
    """Classes with fewer training samples are dropped (phone, word, category)."""
    block_seconds: float = 20.0
    """Test samples this close together are one unit of the block bootstrap and of the paired tests."""
    categories_file: str = ""
    """JSON {category: [words]} for the category target; '' = <root>/ground_truth/meta.json (simulated data)."""

    def __post_init__(self):
        check_alphas_field("probes.alphas", self.alphas)


@dataclass
class ProbeResult:
    """Held-out score of one probe (model, layer, target)."""

    model: str
    layer: object
    target: str
    metric: str
    """'accuracy' (classes) or 'r2' (acoustic bands)."""
    score: float
    chance: float
    ci_low: float
    ci_high: float
    n_train: int
    n_test: int
    n_classes: int
    block: int
    """Test samples per bootstrap block."""
    per_sample: np.ndarray = field(repr=False, default=None)
    """(n_test,) per-sample score whose mean is ``score`` (0/1 correct, or 1 − error / test variance)."""

    def row(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_sample"}


class StimulusWindows:
    """Model-free probe features at 10 Hz (oracle and baseline): lowlevel spaces of the last 100 ms.

    ``spaces`` from ``lowlevel.BINNED``; ``window_features(ds, story)`` returns ``(times, {space: (n, D)})``
    like ``FeatureExtractor`` windows, with ``times`` the bin ends.
    """

    def __init__(self, spaces=("spectral", "categories"), categories: dict | None = None, n_bands: int = 16):
        self.layers, self.categories, self.n_bands = list(spaces), categories, n_bands

    def window_features(self, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict]:
        feats = stimulus_bins(ds, story, self.layers, self.categories, self.n_bands)
        n = len(next(iter(feats.values())))
        return (np.arange(n) + 1.0) / HZ, feats


def load_categories(path: str) -> dict[str, list[str]] | None:
    """{category: [words]} from a JSON file (None for ''); a bad file raises ``DatasetError`` naming it."""
    if not path:
        return None
    p = Path(path)
    try:
        cats = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{p}: cannot read the category map ({exc})") from None
    if not isinstance(cats, dict) or not all(isinstance(w, list) for w in cats.values()):
        raise DatasetError(f"{p}: the category map must be a JSON object {{category: [words]}}")
    return cats


def _windows(source, ds: LebelDataset, story: str) -> tuple[np.ndarray, dict]:
    """(times (n,), {layer: (n, D)}) of any source with ``window_features`` (FeatureExtractor, StimulusWindows)."""
    if not hasattr(source, "window_features"):
        raise TypeError(f"probe source {type(source).__name__} has no window_features(ds, story)")
    return source.window_features(ds, story)


def _interval_labels(intervals, t: np.ndarray, normalise=lambda s: s) -> np.ndarray:
    """(n,) object: label of the interval containing each time ('' in silence)."""
    if not intervals:
        return np.full(t.shape, "", dtype=object)
    starts = np.array([iv.xmin for iv in intervals])
    ends = np.array([iv.xmax for iv in intervals])
    texts = np.array([normalise(iv.text.strip()) for iv in intervals], dtype=object)
    i = np.searchsorted(starts, t, side="right") - 1
    inside = (i >= 0) & (t < ends[np.maximum(i, 0)])
    return np.where(inside, texts[np.maximum(i, 0)], "")


def story_targets(ds: LebelDataset, story: str, times: np.ndarray, targets, cfg: ProbeSettings,
                  categories: dict | None = None) -> dict[str, np.ndarray]:
    """Labels of the samples ending at ``times`` (n,): acoustic → (n, n_bands) float (NaN where no full
    100 ms bin precedes t), phone / word / category → (n,) object ('' = no label)."""
    out: dict[str, np.ndarray] = {}
    t = times - 0.005                                     # what is heard just before the window end
    if "acoustic" in targets:
        bands = spectral(ds.load_audio(story), cfg.n_bands)              # (n_bins, n_bands), bin k = [k, k+1)/HZ
        k = np.ceil(times * HZ - 1e-6).astype(int) - 1
        ok = (k >= 0) & (k < len(bands))
        out["acoustic"] = np.where(ok[:, None], bands[np.clip(k, 0, len(bands) - 1)], np.nan)
    if set(targets) & {"phone", "word", "category"}:
        grid = ds.load_textgrid(story)
        words = _interval_labels(grid.tier("words").words(ds.cfg.non_words), t, str.lower)
        if "phone" in targets:
            out["phone"] = _interval_labels(grid.tier("phones").labelled(), t,
                                            lambda s: re.sub(r"\d+$", "", s).lower())
        if "word" in targets:
            out["word"] = words
        if "category" in targets:
            cmap, _ = category_map(ds, categories)
            out["category"] = np.array([str(cmap[w]) if w in cmap else "" for w in words], dtype=object)
    return out


def _classes(labels: np.ndarray, target: str, cfg: ProbeSettings) -> list:
    """Classes probed: labelled values with ≥ min_count training samples (words: the max_words commonest)."""
    vals, counts = np.unique(labels[labels != ""].astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    keep = [v for v, c in zip(vals[order], counts[order]) if c >= cfg.min_count]
    return keep[: cfg.max_words] if target == "word" else keep


def _fit_probe(X_tr, Y_tr, lengths, X_te, alphas):
    """Ridge probe on z-scored features: (n_tr, D), (n_tr, k), per-story lengths, (n_te, D) → (n_te, k)."""
    mu, sd = X_tr.mean(0), X_tr.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    cv = cv_splits(lengths)
    model = RidgeCV(alphas=alphas, cv=cv, fit_intercept=True, backend="numpy")
    pred = model.fit((X_tr - mu) / sd, Y_tr).predict((X_te - mu) / sd)
    return backend_of(pred).to_numpy(pred)


def _score(target, classes, lab_tr, lab_te, X_tr, lengths, X_te, cfg):
    """(metric, per-sample scores (n_te,), chance, n_classes) of one probe.

    lab_tr, lab_te : (n, n_bands) float (acoustic) or (n,) class labels; classes : list (None for acoustic).
    """
    if target == "acoustic":
        mu, sd = lab_tr.mean(0), lab_tr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        pred = _fit_probe(X_tr, (lab_tr - mu) / sd, lengths, X_te, cfg.alphas)
        z = (lab_te - mu) / sd
        var = z.var(0).mean()                           # per-sample scores average to R² over bands
        return "r2", 1.0 - ((z - pred) ** 2).mean(1) / max(var, 1e-12), 0.0, lab_te.shape[1]
    classes = np.asarray(classes)
    onehot = (lab_tr[:, None] == classes[None, :]).astype(np.float32)    # (n_tr, n_classes)
    pred = _fit_probe(X_tr, onehot, lengths, X_te, cfg.alphas)
    correct = (classes[pred.argmax(1)] == lab_te).astype(np.float64)
    chance = float(np.mean(lab_te == classes[onehot.sum(0).argmax()]))
    return "accuracy", correct, chance, len(classes)


def check_probe_stories(train_stories: list[str], test_stories: list[str]) -> None:
    """Raise ``ConfigError`` when a probe would be scored on a story it was fit on."""
    leak = sorted(set(test_stories) & set(train_stories))
    if leak:
        raise ConfigError(f"probes.test_stories: {leak} are also training stories {list(train_stories)} "
                          "(train_stories, else the dataset's training split); probes score held-out stories (empty "
                          "probes.test_stories = data.test_story)")


def probe_layers(ds: LebelDataset, source, train_stories: list[str], cfg: ProbeSettings | None = None,
                 label: str = "model", test_stories: list[str] | None = None,
                 categories: dict | None = None) -> list[ProbeResult]:
    """Fit and score a probe per layer of ``source`` and per target.

    Parameters
    ----------
    source : ``FeatureExtractor`` (any backbone, tuned or not), ``StimulusWindows``, or an object with
        ``layers`` and ``window_features(ds, story) -> (times (n,), {layer: (n, D)})``
    train_stories : stories the probes are fit on (alphas by leaving one out)
    test_stories : held-out stories; None = ``cfg.test_stories`` or else the dataset's test story
    categories : {category: [words]} for the 'category' target; None = ``cfg.categories_file``, else
        ``<root>/ground_truth/meta.json``

    Returns
    -------
    list of ProbeResult, one per (layer, target), in layer order.
    """
    cfg = cfg or ProbeSettings()
    bad = [t for t in cfg.targets if t not in TARGETS]
    if bad:             # API misuse: a job's probes.targets is checked when its config is built
        raise ValueError(f"ProbeSettings.targets: unknown {bad}; choose from {list(TARGETS)}")
    test_stories = list(test_stories or cfg.test_stories or [ds.cfg.test_story])
    categories = categories or load_categories(cfg.categories_file)
    check_probe_stories(train_stories, test_stories)
    data = {}                                              # story → (features {layer: (n, D)}, targets)
    spacing = cfg.sample_every
    for story in list(train_stories) + test_stories:
        times, feats = _windows(source, ds, story)
        broken = [lay for lay, f in feats.items() if not np.isfinite(f).all()]
        if broken:
            raise DatasetError(f"model {label!r}: its features of story {story!r} at layer(s) {broken} hold NaN or "
                               "Inf (its weights give non-finite activations)")
        stride = float(np.median(np.diff(times))) if len(times) > 1 else cfg.sample_every
        step = max(1, int(round(cfg.sample_every / stride)))
        spacing = stride * step                            # seconds between the samples kept
        data[story] = ({k: v[::step] for k, v in feats.items()},
                       story_targets(ds, story, times[::step], cfg.targets, cfg, categories))
    block = max(1, int(round(cfg.block_seconds / spacing)))
    results = []
    for target in cfg.targets:
        lab = {s: data[s][1][target] for s in data}
        valid = {s: (np.isfinite(lab[s]).all(1) if target == "acoustic" else lab[s] != "") for s in data}
        classes = None
        if target != "acoustic":
            classes = _classes(np.concatenate([lab[s][valid[s]] for s in train_stories]), target, cfg)
            valid = {s: valid[s] & np.isin(lab[s].astype(str), classes) for s in data}
        lengths = [int(valid[s].sum()) for s in train_stories]
        lab_tr = np.concatenate([lab[s][valid[s]] for s in train_stories])
        lab_te = np.concatenate([lab[s][valid[s]] for s in test_stories])
        if sum(lengths) < 2 or len(lab_te) == 0 or (target != "acoustic" and len(classes) < 2):
            raise DatasetError(f"probe {target!r}: too few labelled samples (train {sum(lengths)}, test "
                               f"{len(lab_te)}) in stories {train_stories + test_stories} of {ds.root}")
        for layer in source.layers:
            X_tr = np.concatenate([data[s][0][layer][valid[s]] for s in train_stories]).astype(np.float64)
            X_te = np.concatenate([data[s][0][layer][valid[s]] for s in test_stories]).astype(np.float64)
            metric, per, chance, n_cls = _score(target, classes, lab_tr, lab_te, X_tr, lengths, X_te, cfg)
            lo, hi = bootstrap_ci(per, block=block)
            results.append(ProbeResult(label, layer, target, metric, float(per.mean()), chance, float(lo),
                                       float(hi), len(lab_tr), len(lab_te), n_cls, block, per))
    results.sort(key=lambda r: list(source.layers).index(r.layer))
    return results


def compare_probes(results: list[ProbeResult], reference: str, n_boot: int = 2000, ci: float = 0.95,
                   seed: int = 0) -> list[dict]:
    """Each model's probes against ``reference``'s on the same test samples (block bootstrap CI of the
    score difference, Wilcoxon p on block means): rows ``{comparison, layer, target, metric, n, mean_a,
    mean_b, diff, ci_low, ci_high, p}``."""
    ref = {(r.layer, r.target): r for r in results if r.model == reference}
    rows = []
    for r in results:
        base = ref.get((r.layer, r.target))
        if r.model == reference or base is None:
            continue
        res = compare_paired(r.per_sample, base.per_sample, n_boot, ci, block=r.block, seed=seed)
        rows.append(dict(comparison=f"{r.model} - {reference}", layer=r.layer, target=r.target, metric=r.metric,
                         **res))
    return rows
