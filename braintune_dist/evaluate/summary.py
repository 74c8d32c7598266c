"""The papers' headline metric and what may be said beside it.

**Headline** (Moussa, Klakow & Toneva, ICLR 2025, §4.1): normalised alignment — Pearson r on the test story
divided by the voxel's noise ceiling, voxels with a ceiling ≤ the threshold dropped — averaged over the voxels of
a region, over the evaluated layers and over the held-out participants. Models that differ only in their
replicate seed (labels ``<group>-s<seed>``) form one group, averaged over seeds.

Spread and test, with the unit always named (``se_over``):

* a group of several seeds: standard error across seeds; against the reference, a one-sample t-test of the
  per-seed differences (each seed's value minus the reference's, both averaged over participants);
* one model, several participants: standard error across participants; paired t-test across participants;
* one model, one participant: standard error across voxels; Wilcoxon signed-rank test of the paired per-voxel
  differences (voxels are not independent: this p is optimistic, and the output says which test ran).

Best-layer numbers are secondary: each model's layer is chosen by CV error on the training stories, a choice
that flips between nearly tied layers; :func:`best_layer_notes` names both layers of every comparison, gives the
change at one common layer, and warns when the top layers' CV errors are within their noise.
"""
from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from braintune_dist.errors import UserError

_SEED = re.compile(r"^(?P<group>.+)-s(?P<seed>\d+)$")


def best_layers(rows: list[dict], kind: str = "layer") -> dict[str, object]:
    """Each model's best layer: lowest CV error on the training stories (all voxels, mean over participants).
    The test story plays no part, so the score reported at that layer is not selected on itself."""
    cv: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["kind"] == kind and r["region"] == "all":
            cv[r["model"]][r["layer"]].append(r["cv_mse"])
    return {m: min(layers.items(), key=lambda kv: float(np.mean(kv[1])))[0] for m, layers in cv.items()}


def at_best_layer(rows: list[dict], kind: str = "layer") -> dict[str, float]:
    """``{'<model>/<region>': mean over participants of r/ceiling on the test story at the model's best layer}``
    (:func:`best_layers`): a secondary number; two models' best layers may differ."""
    best = best_layers(rows, kind)
    by: dict = defaultdict(list)
    for r in rows:
        if r["kind"] == kind and r["layer"] == best.get(r["model"], object()):
            by[(r["model"], r["region"])].append(r["mean_r_norm"])
    return {f"{m}/{reg}": float(np.nanmean(v)) for (m, reg), v in by.items()}


def group_of(label: str) -> str:
    """The model group of a label: ``'brain-tuned-s3'`` → ``'brain-tuned'``; a label without a seed is its own."""
    m = _SEED.match(label)
    return m["group"] if m else label


def mean_layers(available, wanted) -> list:
    """The layers the headline averages over.

    ``wanted`` empty: every transformer layer, i.e. every integer layer but 0 (the convolutional or embedding
    output, which no transformer layer has processed); non-integer layers (stimulus feature spaces) all count.
    Otherwise ``wanted`` itself, which must be among ``available``.
    """
    available = list(available)
    if not wanted:
        picked = [lay for lay in available if not (isinstance(lay, (int, np.integer)) and lay == 0)]
        return picked or available
    missing = [lay for lay in wanted if lay not in available]
    if missing:
        raise UserError(f"eval.layers: {missing} not among the evaluated layers {available} "
                        "(eval.features.layers sets which layers are extracted)")
    return list(wanted)


def layers_label(layers) -> str:
    """``'mean(1,2,3,4)'``: the name of a layer average, in tables and figure labels."""
    return "mean(" + ",".join(str(lay) for lay in layers) + ")"


def voxel_layer_mean(vs, layers, threshold: float, region: str) -> np.ndarray:
    """(n_region_voxels,) r / noise ceiling of each voxel of ``region`` averaged over ``layers`` (NaN where the
    ceiling is too low: the same voxels at every layer). ``vs``: a ``VoxelScores``."""
    per_layer = np.stack([vs.r_norm(lay, threshold) for lay in layers])          # (n_layers, n_voxels)
    return per_layer.mean(axis=0)[vs.region_mask(region)]


def _mean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else np.nan


def participant_values(per_sub: dict, layers, threshold: float, region: str) -> list[np.ndarray]:
    """One model's :func:`voxel_layer_mean` of ``region`` for each participant (``per_sub``: participant →
    VoxelScores), in ``per_sub``'s order."""
    return [voxel_layer_mean(vs, layers, threshold, region) for vs in per_sub.values()]


def headline_value(per_sub: dict, layers, threshold: float, region: str) -> float:
    """One model's headline in ``region``: the mean over participants of each one's voxel mean of r / noise ceiling
    averaged over ``layers``."""
    return float(np.mean([_mean(v) for v in participant_values(per_sub, layers, threshold, region)]))


def _se(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else np.nan


def _vs_reference(per_model: np.ndarray, ref: np.ndarray, vox_a: np.ndarray, vox_b: np.ndarray) -> dict:
    """Difference to the reference and its test. per_model (n_seeds, n_subjects), ref (n_subjects,) region means;
    vox_a, vox_b (n_voxels,) seed-averaged and reference per-voxel values of all participants, paired."""
    from scipy import stats

    from braintune_dist.analysis.stats import wilcoxon
    n_seeds, n_participants = per_model.shape
    if n_seeds > 1:
        d = per_model.mean(axis=1) - ref.mean()                       # (n_seeds,)
        test, unit = "t-test over seeds", "seeds"
    elif n_participants > 1:
        d = per_model[0] - ref                                         # (n_subjects,)
        test, unit = "paired t-test over participants", "participants"
    else:
        ok = np.isfinite(vox_a) & np.isfinite(vox_b)
        d = vox_a[ok] - vox_b[ok]                                      # (n_voxels,)
        p = float(wilcoxon(d)[1]) if d.size > 1 else np.nan
        return dict(diff=_mean(d), diff_se=_se(d), p=p, test="Wilcoxon over voxels", diff_over="voxels")
    d = d[np.isfinite(d)]
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if d.size > 1 and np.ptp(d) > 0 else np.nan
    return dict(diff=_mean(d), diff_se=_se(d), p=p, test=test, diff_over=unit)


def summary_table(scores: dict, layers: list, threshold: float, reference: str = "untuned") -> list[dict]:
    """The headline table: one row per (model group, region).

    Parameters
    ----------
    scores : dict model label → subject → VoxelScores
    layers : the layers averaged over (:func:`mean_layers`)
    reference : the label compared against (untuned); absent → no difference columns

    Returns
    -------
    rows : list of dict
        ``{model, n_seeds, layers, region, n_subjects, n_voxels, mean, se, se_over, reference, diff, diff_se,
        diff_over, p, test}``; ``diff`` = group − reference of the headline (NaN for the reference itself).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for label in scores:
        groups[group_of(label)].append(label)
    first = next(iter(scores.values()))
    participants = list(first)
    regions = first[participants[0]].region_names()
    rows = []
    for group, members in groups.items():
        for region in regions:
            vox = {m: participant_values(scores[m], layers, threshold, region) for m in members}
            per_model = np.array([[_mean(v) for v in vox[m]] for m in members])            # (n_seeds, n_subjects)
            seed_means = per_model.mean(axis=1)                                            # (n_seeds,)
            # the ceiling (and so the NaN voxels) is the same for every seed
            flat = np.stack([np.concatenate(vox[m]) for m in members]).mean(axis=0)       # (n_voxels,)
            if len(members) > 1:
                se, over = _se(seed_means), "seeds"
            elif len(participants) > 1:
                se, over = _se(per_model[0]), "participants"
            else:
                se, over = _se(flat), "voxels"
            row = dict(model=group, n_seeds=len(members), layers=layers_label(layers), region=region,
                       n_subjects=len(participants), n_voxels=int(np.isfinite(flat).sum()), mean=float(seed_means.mean()),
                       se=se, se_over=over, reference=reference if reference in scores else "")
            if reference in scores and group != reference:
                ref_vox = participant_values(scores[reference], layers, threshold, region)
                row.update(_vs_reference(per_model, np.array([_mean(v) for v in ref_vox]), flat,
                                         np.concatenate(ref_vox)))
            else:
                row.update(diff=np.nan, diff_se=np.nan, diff_over="", p=np.nan, test="")
            rows.append(row)
    return rows


def control_contrast(scores: dict, layers: list, threshold: float, model: str = "brain-tuned") -> list[dict]:
    """``model``'s group against every control group (labels ``<target>-tuned[-s<seed>]`` other than it), per
    region: the difference of the headline and its test. Replicates are the unit: with several seeds on both
    sides, Welch's t-test over the replicates' values (each averaged over participants); with one seed each, the
    paired per-voxel Wilcoxon test (optimistic: voxels are not independent, and say so).

    Returns rows ``{model, control, region, diff, diff_se, p, test, n_a, n_b}``; [] without ``model`` or controls.
    """
    from scipy import stats

    from braintune_dist.analysis.stats import wilcoxon
    groups: dict[str, list[str]] = defaultdict(list)
    for label in scores:
        groups[group_of(label)].append(label)
    controls = [g for g in groups if g != model and g.endswith("-tuned")]
    if model not in groups or not controls:
        return []
    regions = next(iter(scores[groups[model][0]].values())).region_names()
    rows = []
    for control in controls:
        for region in regions:
            vox = {g: [np.concatenate(participant_values(scores[m], layers, threshold, region)) for m in groups[g]]
                   for g in (model, control)}                                               # per seed: (n_voxels,)
            a, b = (np.array([headline_value(scores[m], layers, threshold, region) for m in groups[g]])
                    for g in (model, control))                                              # (n_seeds,) each
            if a.size > 1 and b.size > 1:
                p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
                se, test = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)), "Welch t-test over seeds"
            else:
                d = np.stack(vox[model]).mean(0) - np.stack(vox[control]).mean(0)
                d = d[np.isfinite(d)]
                p, se, test = float(wilcoxon(d)[1]) if d.size > 1 else np.nan, _se(d), "Wilcoxon over voxels"
            rows.append(dict(model=model, control=control, region=region, diff=float(a.mean() - b.mean()),
                             diff_se=se, p=p, test=test, n_a=a.size, n_b=b.size))
    return rows


def format_contrast(rows: list[dict], alpha: float = 0.05) -> list[str]:
    """One line per (control, region), with a plain verdict at level ``alpha``."""
    lines = []
    for r in rows:
        verdict = ("higher than" if r["diff"] > 0 else "lower than") if r["p"] < alpha else "not told apart from"
        lines.append(f"[alignment] {r['model']} vs {r['control']} (control), {r['region']}: Δ {r['diff']:+.3f} ± "
                     f"{r['diff_se']:.3f}, p {r['p']:.2g} ({r['test']}, {r['n_a']} vs {r['n_b']} seeds): "
                     f"{r['model']} is {verdict} its control")
    return lines


def layer_mean_rows(rows: list[dict], layers: list, kind: str = "layer") -> list[dict]:
    """Per (model, subject, region): ``mean_r_norm`` and ``mean_r`` averaged over ``layers``, as rows of
    ``kind='layer_mean'`` with ``layer = layers_label(layers)`` (the per-layer table's first rows)."""
    acc: dict = defaultdict(list)
    for r in rows:
        if r["kind"] == kind and r["layer"] in layers:
            acc[(r["model"], r["subject"], r["region"])].append(r)
    out = []
    for (model, participant, region), rs in acc.items():
        out.append(dict(model=model, kind="layer_mean", layer=layers_label(layers), subject=participant, region=region,
                        n_voxels=rs[0]["n_voxels"], mean_r=float(np.mean([r["mean_r"] for r in rs])),
                        mean_r_norm=_mean(np.array([r["mean_r_norm"] for r in rs], float)),
                        cv_mse=float(np.mean([r["cv_mse"] for r in rs]))))
    return out


def at_layers(rows: list[dict], layers=(), kind: str = "layer") -> dict[str, float]:
    """``{'<model>/<region>': headline}`` from table rows: mean r / noise ceiling over ``layers`` (default: every
    transformer layer, :func:`mean_layers`) and over participants."""
    avail = list(dict.fromkeys(r["layer"] for r in rows if r["kind"] == kind))
    lm = layer_mean_rows(rows, mean_layers(avail, list(layers)), kind)
    by: dict = defaultdict(list)
    for r in lm:
        by[(r["model"], r["region"])].append(r["mean_r_norm"])
    return {f"{m}/{reg}": _mean(np.array(v, float)) for (m, reg), v in by.items()}


def format_summary(table: list[dict], participants: list[str]) -> list[str]:
    """Console lines of the headline table: one block per region, the reference first."""
    if not table:
        return []
    t0 = table[0]
    layers = t0["layers"].removeprefix("mean(").removesuffix(")")                # 'mean(1,2)' → '1,2'
    lines = [f"[alignment] headline: r / noise ceiling, mean over voxels, layers {layers} and "
             f"held-out participants ({', '.join(participants)}); ± SE over the unit named; Δ against "
             f"{t0['reference'] or 'no reference'}:"]
    by_region: dict = defaultdict(list)
    for r in table:
        by_region[r["region"]].append(r)
    for region, rs in by_region.items():
        lines.append(f"  {region}:")
        for r in sorted(rs, key=lambda r: r["model"] != r["reference"]):
            seeds = f" ({r['n_seeds']} seeds)" if r["n_seeds"] > 1 else ""
            s = f"    {r['model'] + seeds:>26}: {r['mean']:.3f} ± {r['se']:.3f} ({r['se_over']})"
            if np.isfinite(r["diff"]):
                s += (f"   Δ {r['diff']:+.3f} ± {r['diff_se']:.3f} ({r['diff_over']}), "
                      f"p {r['p']:.2g} ({r['test']})")
            lines.append(s)
    return lines


def best_layer_notes(rows: list[dict], scores: dict, reference: str = "untuned") -> list[str]:
    """Secondary lines: each model's CV-best layer, named; the change against ``reference`` at the reference's
    best layer (one common layer, per region, averaged over participants); and a warning for every model whose
    two best layers' CV errors differ by less than twice their standard error over voxels (a tie: which of them
    is "best" is noise)."""
    best = best_layers(rows)
    lines = ["[alignment] secondary: best layer by CV error on the training stories (never the test story): "
             + ", ".join(f"{m} {lay}" for m, lay in best.items())]
    mean_at: dict = defaultdict(list)
    for r in rows:
        if r["kind"] == "layer":
            mean_at[(r["model"], r["layer"], r["region"])].append(r["mean_r_norm"])
    if reference in best:
        common = best[reference]
        for model in best:
            if model == reference:
                continue
            parts = [f"{reg} {_mean(np.array(mean_at[(model, common, reg)], float)) - _mean(np.array(v, float)):+.3f}"
                     for (m, lay, reg), v in mean_at.items() if m == reference and lay == common]
            lines.append(f"  {model} − {reference}, both at layer {common} ({reference}'s best): " + ", ".join(parts))
    for model, per_sub in scores.items():
        cv = {lay: np.concatenate([vs.cv_mse[lay] for vs in per_sub.values()]) for lay in next(iter(per_sub.values())).cv_mse}
        if len(cv) < 2:
            continue
        a, b = sorted(cv, key=lambda lay: float(np.mean(cv[lay])))[:2]
        d = cv[b] - cv[a]                                                   # (n_voxels,) ≥ 0 on average
        if d.mean() < 2 * _se(d):
            lines.append(f"  warning: {model}'s layers {a} and {b} are tied on CV error ({np.mean(cv[a]):.4f} vs "
                         f"{np.mean(cv[b]):.4f}, Δ {d.mean():.4f} ± {_se(d):.4f} over voxels): its best-layer numbers "
                         "rest on noise; read the headline")
    return lines
