"""The one encoding pipeline: feature sources × participants × layers → ridge fits → rows and voxel scores.

Units and where they run (``compute.runner``: Ray tasks, or this process with the same functions):

* per (model, layer): the TR-aligned features of every story, ``{story: (n_rows_s, D · n_delays)}``; for
  cached window features a task reads and aligns them, other sources are aligned here and put once;
* per participant: responses, repeats, ceiling and regions (``SubjectData``), loaded by a task;
* per (model, participant, layer): one :func:`~braintune_dist.evaluate.encoding.fit_layer`, which gets
  the two object-store references above (nothing is pickled again per fit);
* per (model, participant, n stories): the data-efficiency refits, at the participant's best layer
  chosen by CV error on the training stories (never by the test story).
"""
from __future__ import annotations

import time

import numpy as np

from braintune_dist.config import ConfigError
from braintune_dist.data.lebel import LebelDataset
from braintune_dist.data.voxels import CommonSpace
from braintune_dist.evaluate.compute import ComputeSettings, Runner, ridge_gpus, use_ray
from braintune_dist.evaluate.encoding import (PermutationSettings, RidgeConfig, ParticipantData, VoxelScores,
                                              fit_layer, load_participant, summarise)
from braintune_dist.features.extract import CachedFeatures


def _aligned(source: CachedFeatures, ds: LebelDataset, stories: list[str], layer) -> dict[str, np.ndarray]:
    """One layer's TR-aligned features of ``stories``: story → (n_rows_s, D · n_delays) float32."""
    return {s: source.story_features(ds, s, [layer])[layer] for s in stories}


def _meta(sub: ParticipantData) -> tuple[np.ndarray, np.ndarray]:
    """(cc_max, regions) of a participant: the small part the driver needs for the tables."""
    return sub.cc_max, sub.regions


def check_inputs(ds: LebelDataset, train_stories: list[str], ridge: RidgeConfig,
                 perm: PermutationSettings | None = None, efficiency=(), prefix: str = "") -> None:
    """Raise ``ConfigError`` when a setting cannot work on these stories (before any feature or ridge work).

    The block-permutation test needs two blocks of the test story's rows; ``ridge.cv`` folds need as many rows
    in the smallest training set (the data-efficiency refit on the fewest stories). ``prefix``: where the job
    keeps these settings ('eval.' for an alignment report).
    """
    test, where = ds.cfg.test_story, ds.deriv / "respdict.json"
    n_test = len(ds.row_tr_index(test))
    if perm is not None and perm.enabled and n_test // max(perm.block, 1) < 2:
        raise ConfigError(f"{prefix}permutation.block: {perm.block} TRs per block, but the test story {test!r} has "
                          f"{n_test} rows ({where}), fewer than two blocks; use a block of at most {n_test // 2} TRs")
    fewest = min([min(n, len(train_stories)) for n in efficiency] or [len(train_stories)])
    rows = sum(len(ds.row_tr_index(s)) for s in train_stories[:fewest])
    if ridge.cv > rows:
        raise ConfigError(f"{prefix}ridge.cv: {ridge.cv} folds, but the training stories {train_stories[:fewest]} hold "
                          f"{rows} rows ({where}); use fewer folds, or 0 (leave one story out)")


class _Progress:
    """'[ridge] done/total fits' every 10 s and at the end."""

    def __init__(self, log, what: str):
        self.log, self.what, self.last = log, what, -1e9

    def __call__(self, done: int, total: int, seconds: float):
        if done == total or seconds - self.last > 10:
            self.last = seconds
            self.log(f"[ridge] {self.what}: {done}/{total} fits, {seconds:.0f} s")


def encode(ds: LebelDataset, sources: dict, participants: list[str], train_stories: list[str], ridge: RidgeConfig,
           space: CommonSpace | None, compute: ComputeSettings, perm: PermutationSettings | None = None,
           efficiency: list[int] | tuple = (), kind: str = "layer", log=print
           ) -> tuple[list[dict], dict[str, dict[str, VoxelScores]]]:
    """Fit and score the encoding model of every (source, participant, layer).

    Parameters
    ----------
    sources : dict label → feature source
        ``CachedFeatures`` (aligned by tasks) or any object with ``layers`` and
        ``story_features(ds, story) -> {layer: (n_rows, D)}`` (aligned in this process).
    perm : PermutationSettings or None
        Block-permutation p-values (and the rows' ``frac_significant``).
    efficiency : training-story counts of the data-efficiency refits (at each participant's best layer)
    kind : the ``kind`` column of the per-layer rows ('layer', 'full', 'residual', ...)

    Returns
    -------
    rows : list of dict
        ``{model, kind, layer, n_stories, hours, subject, region, n_voxels, mean_r, mean_r_norm, cv_mse
        [, frac_significant]}``; efficiency rows have ``kind='efficiency'``.
    scores : dict label → subject → VoxelScores
    """
    check_inputs(ds, train_stories, ridge, perm, efficiency)
    on_ray = use_ray(compute)
    runner = Runner(on_ray, compute.ridge_cpus, ridge_gpus(compute, ridge.backend) if on_ray else 0.0)
    test = ds.cfg.test_story
    stories = list(train_stories) + [test]
    hours = [len(ds.row_tr_index(s)) * ds.tr_length(s) / 3600 for s in train_stories]
    X = {}                                                    # (label, layer) → ref of {story: array}
    for label, src in sources.items():
        if isinstance(src, CachedFeatures):
            X.update({(label, lay): runner.submit(_aligned, src, ds, stories, lay) for lay in src.layers})
        else:
            per_story = {s: src.story_features(ds, s) for s in stories}
            X.update({(label, lay): runner.put({s: per_story[s][lay] for s in stories}) for lay in src.layers})
    subs = {s: runner.submit(load_participant, ds, s, list(train_stories), space) for s in participants}
    meta = dict(zip(participants, runner.gather([runner.submit(_meta, subs[s], num_cpus=0.1) for s in participants])))
    work = [(label, s, lay) for label, src in sources.items() for s in participants for lay in src.layers]
    t0 = time.time()
    fits = runner.gather([runner.submit(fit_layer, X[(label, lay)], subs[s], list(train_stories), test, ridge, perm)
                          for label, s, lay in work], _Progress(log, f"{len(work)} (model, participant, layer)"))
    scores: dict[str, dict[str, VoxelScores]] = {label: {} for label in sources}
    rows: list[dict] = []
    q = perm.q if perm is not None else None
    for (label, s, lay), fit in zip(work, fits):
        vs = scores[label].setdefault(s, VoxelScores(s, meta[s][1], meta[s][0]))
        vs.r[lay], vs.p[lay], vs.cv_mse[lay] = fit.r, fit.p, fit.cv_mse
        rows += summarise(fit, vs, ridge, q, model=label, kind=kind, layer=lay, n_stories=len(train_stories),
                          hours=sum(hours))
    eff = [(label, s, vs.best_layer(), min(n, len(train_stories)))
           for label in sources for s, vs in scores[label].items() for n in efficiency]
    refits = runner.gather([runner.submit(fit_layer, X[(label, lay)], subs[s], list(train_stories[:n]), test, ridge)
                            for label, s, lay, n in eff], _Progress(log, f"{len(eff)} data-efficiency"))
    for (label, s, lay, n), fit in zip(eff, refits):
        rows += summarise(fit, scores[label][s], ridge, model=label, kind="efficiency", layer=lay, n_stories=n,
                          hours=sum(hours[:n]))
    nodes = sorted({f.node for f in fits + refits} - {""})
    if on_ray:
        log(f"[ridge] {len(fits) + len(refits)} fits in {time.time() - t0:.0f} s on {len(nodes)} node(s)")
    return rows, scores
