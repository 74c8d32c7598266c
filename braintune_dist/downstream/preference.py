"""The semantic–phonetic preference of a speech model's word representations, per layer (after Choi et al.
2024): is a spoken word closer to words of the same meaning class or to words that sound like it?

Per layer and target word, d_t = mean distance to its semantic neighbours − mean distance to its phonetic
neighbours (``wordpairs.build_pairs``); the layer's d is the mean over targets, with a percentile bootstrap
CI over targets. d < 0: semantic neighbours are closer (a semantic representation); d > 0: phonetic. A
property of the representation alone, from single-word audio (``wordpairs.synthesize_words``); not the
region contrast of the brain data (``analysis.region_contrast``). numpy only; the figure imports matplotlib.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from braintune_dist.downstream.wordpairs import WordPairs
from braintune_dist.errors import UserError

METRICS = ("cosine", "euclidean")
Y_LABEL = "semantic − phonetic distance (lower = more semantic)"


@dataclass(frozen=True)
class PreferenceCurve:
    """d per layer of one model, with everything a paired comparison needs."""

    layers: tuple
    """(n_layers,) layer labels (hidden_states indices)."""
    d: np.ndarray
    """(n_layers,) mean over targets of semantic − phonetic distance."""
    ci_low: np.ndarray
    """(n_layers,) bootstrap CI of d over targets."""
    ci_high: np.ndarray
    semantic: np.ndarray
    """(n_layers,) mean semantic distance (the first term of d)."""
    phonetic: np.ndarray
    """(n_layers,) mean phonetic distance."""
    per_target: np.ndarray
    """(n_targets, n_layers) d_t of every target."""
    targets: tuple[str, ...]
    """(n_targets,) target words, the rows of ``per_target``."""
    metric: str = "cosine"
    ci: float = 0.95

    @property
    def n_targets(self) -> int:
        return len(self.targets)

    def rows(self, model: str) -> list[dict]:
        """One table row per layer: model, layer, d, ci_low, ci_high, semantic, phonetic, n_targets, metric."""
        return [dict(model=model, layer=lay, d=float(self.d[i]), ci_low=float(self.ci_low[i]),
                     ci_high=float(self.ci_high[i]), semantic=float(self.semantic[i]),
                     phonetic=float(self.phonetic[i]), n_targets=self.n_targets, metric=self.metric)
                for i, lay in enumerate(self.layers)]


def _boot_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) resampling counts over n targets / n: ``weights @ values`` is each resample's mean."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1.0)
    return w / n


def _ci(values: np.ndarray, weights: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the mean over the rows of ``values`` (n, ...) from resampling ``weights``."""
    boots = np.tensordot(weights, values, axes=1)
    q = 100 * (1 - ci) / 2
    return np.percentile(boots, q, axis=0), np.percentile(boots, 100 - q, axis=0)


def _pair_distances(means: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """(n_pairs, n_layers) distance between words a[k] and b[k] of ``means`` (n_words, n_layers, hidden)."""
    out = np.empty((len(a), means.shape[1]))
    for lay in range(means.shape[1]):
        x, y = means[a, lay].astype(np.float64), means[b, lay].astype(np.float64)
        if metric == "cosine":
            norm = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
            out[:, lay] = 1 - (x * y).sum(axis=1) / np.maximum(norm, 1e-12)
        else:
            out[:, lay] = np.linalg.norm(x - y, axis=1)
    return out


def preference_curve(feats: np.ndarray, clip_word: np.ndarray, pairs: WordPairs, metric: str = "cosine",
                     n_boot: int = 1000, seed: int = 0, clip_voice=None, layers=None,
                     ci: float = 0.95) -> PreferenceCurve:
    """d per layer from the representations of single-word clips.

    Distances are computed within each voice and then averaged over voices: a target and both its
    neighbours are spoken by the same voice, so the speaker's share of a distance is the same for the
    semantic and the phonetic term and cancels in their difference. (Averaging a word's clips over voices
    first would also remove it, but only where every word has every voice.)

    Parameters
    ----------
    feats : (n_clips, n_layers, hidden) one mean-pooled representation per clip and layer.
    clip_word : (n_clips,) int index into ``pairs.words`` of each clip's word (``WordClips.word_index`` of
        ``synthesize_words(pairs.words, ...)``).
    pairs : the targets and their neighbours.
    metric : 'cosine' (1 − cosine similarity) or 'euclidean'.
    n_boot, seed, ci : percentile bootstrap over targets.
    clip_voice : (n_clips,) voice of each clip (``WordClips.voices``); None = one voice.
    layers : (n_layers,) labels; None = 0 … n_layers − 1.

    Raises
    ------
    UserError
        Shapes that disagree, an unknown metric, or a pair of words spoken by no common voice.
    """
    feats, clip_word = np.asarray(feats), np.asarray(clip_word)
    if metric not in METRICS:
        raise UserError(f"preference_curve: metric={metric!r} must be one of {list(METRICS)}")
    if feats.ndim != 3 or clip_word.shape != (feats.shape[0],):
        raise UserError(f"preference_curve: feats {feats.shape} must be (n_clips, n_layers, hidden) and clip_word "
                        f"{clip_word.shape} (n_clips,)")
    if clip_word.size and (clip_word.min() < 0 or clip_word.max() >= len(pairs.words)):
        raise UserError(f"preference_curve: clip_word must index pairs.words (0 … {len(pairs.words) - 1})")
    voice = np.zeros(len(clip_word), int) if clip_voice is None else np.unique(clip_voice, return_inverse=True)[1]
    if voice.shape != clip_word.shape:
        raise UserError(f"preference_curve: clip_voice {voice.shape} must be (n_clips,) = {clip_word.shape}")
    layers = tuple(range(feats.shape[1])) if layers is None else tuple(layers)
    if len(layers) != feats.shape[1]:
        raise UserError(f"preference_curve: {len(layers)} layer labels for {feats.shape[1]} layers")
    if not pairs.targets:
        raise UserError("preference_curve: pairs has no targets")
    index = pairs.index()
    kinds = []                                   # (target row, word a, word b, semantic?) per pair
    for t, (target, sem, pho) in enumerate(zip(pairs.targets, pairs.semantic, pairs.phonetic)):
        kinds += [(t, index[target], index[w], True) for w in sem]
        kinds += [(t, index[target], index[n.word], False) for n in pho]
    row, a, b, is_sem = (np.array(k) for k in zip(*kinds))
    total, count = np.zeros((len(a), feats.shape[1])), np.zeros(len(a))
    for v in range(voice.max() + 1):
        sel = voice == v
        n = np.bincount(clip_word[sel], minlength=len(pairs.words))
        onehot = np.zeros((len(pairs.words), int(sel.sum())))
        onehot[clip_word[sel], np.arange(onehot.shape[1])] = 1 / np.maximum(n[clip_word[sel]], 1)
        means = (onehot @ feats[sel].reshape(onehot.shape[1], -1)).reshape((len(pairs.words),) + feats.shape[1:])
        both = (n[a] > 0) & (n[b] > 0)
        total[both] += _pair_distances(means, a[both], b[both], metric)
        count += both
    if (count == 0).any():
        k = int(np.flatnonzero(count == 0)[0])
        raise UserError(f"preference_curve: words {pairs.words[a[k]]!r} and {pairs.words[b[k]]!r} share no voice "
                        "(synthesise every word of pairs.words in every voice)")
    dist = total / count[:, None]
    n_t = len(pairs.targets)

    def per_target(mask):
        s = np.zeros((n_t, dist.shape[1]))
        np.add.at(s, row[mask], dist[mask])
        return s / np.bincount(row[mask], minlength=n_t)[:, None]

    sem_t, pho_t = per_target(is_sem), per_target(~is_sem)
    diff = sem_t - pho_t
    lo, hi = _ci(diff, _boot_weights(n_t, n_boot, seed), ci)
    return PreferenceCurve(layers, diff.mean(axis=0), lo, hi, sem_t.mean(axis=0), pho_t.mean(axis=0), diff,
                           tuple(pairs.targets), metric, ci)


def group_curve(members: list[PreferenceCurve], n_boot: int = 1000, seed: int = 0) -> PreferenceCurve:
    """The curve of a model group (replicate seeds): each target's d averaged over the members, its CI over
    targets as for one model (the spread over seeds is reported apart, as SE over seeds)."""
    first = members[0]
    if any(m.targets != first.targets or m.layers != first.layers or m.metric != first.metric for m in members):
        raise UserError("group_curve: the members differ in targets, layers or metric")
    stack = lambda name: np.mean([getattr(m, name) for m in members], axis=0)   # noqa: E731
    diff = stack("per_target")
    lo, hi = _ci(diff, _boot_weights(len(first.targets), n_boot, seed), first.ci)
    return PreferenceCurve(first.layers, diff.mean(axis=0), lo, hi, stack("semantic"), stack("phonetic"), diff,
                           first.targets, first.metric, first.ci)


@dataclass(frozen=True)
class CurveComparison:
    """Every model against the reference, with paired bootstrap CIs over targets."""

    reference: str
    layers: tuple
    delta: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    """model → (Δd, ci_low, ci_high), each (n_layers,): d(model) − d(reference), the reference excluded."""
    layer_mean: dict[str, tuple[float, float, float]]
    """model (the reference included) → (d averaged over layers, ci_low, ci_high)."""
    delta_mean: dict[str, tuple[float, float, float]]
    """model → (Δ of the layer-averaged d, ci_low, ci_high)."""

    def rows(self) -> list[dict]:
        """One row per model and layer (layer 'mean' for the layer average): model, layer, delta, ci_low, ci_high."""
        out = []
        for m, (dd, lo, hi) in self.delta.items():
            out += [dict(model=m, reference=self.reference, layer=lay, delta=float(dd[i]), ci_low=float(lo[i]),
                         ci_high=float(hi[i])) for i, lay in enumerate(self.layers)]
            dm = self.delta_mean[m]
            out.append(dict(model=m, reference=self.reference, layer="mean", delta=dm[0], ci_low=dm[1], ci_high=dm[2]))
        return out


def compare_curves(curves: dict[str, PreferenceCurve], reference: str = "untuned", n_boot: int = 1000,
                   seed: int = 0, ci: float = 0.95) -> CurveComparison:
    """Δd per layer of every model against ``reference``, and each model's layer-averaged d.

    Paired bootstrap: every resample draws the same targets for both models (one resampling matrix for
    all), so the CI of Δd reflects how consistently the targets moved, not the spread of d over words.

    Raises
    ------
    UserError
        ``reference`` missing, or curves over different targets, layers or metrics.
    """
    if reference not in curves:
        raise UserError(f"compare_curves: reference {reference!r} not among the curves {list(curves)}")
    ref = curves[reference]
    for label, c in curves.items():
        if c.targets != ref.targets or c.layers != ref.layers or c.metric != ref.metric:
            raise UserError(f"compare_curves: curve {label!r} differs from {reference!r} in its targets, layers "
                            "or metric (compute every curve from the same pairs and layers)")
    w = _boot_weights(ref.n_targets, n_boot, seed)
    delta, layer_mean, delta_mean = {}, {}, {}
    for label, c in curves.items():
        avg = c.per_target.mean(axis=1)
        lo, hi = _ci(avg, w, ci)
        layer_mean[label] = (float(avg.mean()), float(lo), float(hi))
        if label == reference:
            continue
        diff = c.per_target - ref.per_target
        lo, hi = _ci(diff, w, ci)
        delta[label] = (diff.mean(axis=0), lo, hi)
        dm, (lo, hi) = diff.mean(axis=1), _ci(diff.mean(axis=1), w, ci)
        delta_mean[label] = (float(dm.mean()), float(lo), float(hi))
    return CurveComparison(reference, ref.layers, delta, layer_mean, delta_mean)


def plot_preference(curves: dict[str, PreferenceCurve], title: str = "Semantic–phonetic preference per layer"):
    """d per layer, one line per model with its bootstrap CI band, and the zero line; returns the Figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, c in curves.items():
        x = np.arange(len(c.layers))
        (line,) = ax.plot(x, c.d, marker="o", label=f"{label} (n = {c.n_targets} words)")
        ax.fill_between(x, c.ci_low, c.ci_high, color=line.get_color(), alpha=0.2, lw=0)
    first = next(iter(curves.values()))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(first.layers)), [str(lay) for lay in first.layers])
    ax.set_xlabel("layer (hidden_states index)")
    ax.set_ylabel(Y_LABEL)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title=f"{first.metric} distance, {first.ci:.0%} bootstrap CI over words", fontsize=8)
    fig.tight_layout()
    return fig
