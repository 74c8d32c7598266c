"""Linear probes: a label the features contain is read far above the naive level; shuffled labels are not; the
test split never chooses anything; metrics against scikit-learn; Ray tasks give the local results."""
import numpy as np
import pytest

from braintune_dist.downstream.config import ProbeSettings
from braintune_dist.downstream.metrics import scores
from braintune_dist.downstream.probe import TaskArrays, fit_probe, probe_layer, run_probes
from braintune_dist.evaluate.compute import ComputeSettings

FAST = ProbeSettings(seeds=[0, 1, 2], lrs=[1e-2], weight_decays=[0.0, 1e-2], max_epochs=40, patience=5, batch_size=32)


def _problem(n=300, d=16, k=4, signal=2.0, seed=0, multi=False):
    """Features with the label linearly in them (+ noise); splits of 60/20/20 %."""
    rng = np.random.default_rng(seed)
    if multi:
        y = (rng.random((n, k)) < 0.3).astype(np.uint8)
        x = rng.standard_normal((n, d)) + signal * y @ rng.standard_normal((k, d))
    else:
        y = rng.integers(0, k, n)
        x = rng.standard_normal((n, d)) + signal * rng.standard_normal((k, d))[y]
    idx = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    return x.astype(np.float32), TaskArrays("t", y, np.sort(idx[:a]), np.sort(idx[a:b]), np.sort(idx[b:]), multi, k)


def _naive(t: TaskArrays) -> dict:
    y = t.targets[t.train]
    guess = (y.mean(0) > 0.5).astype(np.uint8) if t.multi_label else np.bincount(y, minlength=t.n_classes).argmax()
    pred = np.repeat(np.atleast_1d(guess)[None], len(t.test), 0) if t.multi_label else np.full(len(t.test), guess)
    return scores(t.targets[t.test], pred, t.multi_label, t.n_classes)


@pytest.mark.parametrize("multi", [False, True])
def test_probe_reads_a_label_the_features_hold_and_not_a_shuffled_one(multi):
    x, t = _problem(multi=multi)
    naive = _naive(t)
    rows = probe_layer(x[:, None], 0, 3, "oracle", t, FAST)
    assert [r.seed for r in rows] == [0, 1, 2] and all(r.layer == 3 and r.model == "oracle" for r in rows)
    f1 = np.mean([r.f1_macro for r in rows])
    assert f1 > naive["f1_macro"] + 0.4, (f1, naive)
    rng = np.random.default_rng(1)
    shuffled = TaskArrays("t", t.targets[rng.permutation(len(t.targets))], t.train, t.validation, t.test, multi,
                          t.n_classes)
    f1_shuf = np.mean([r.f1_macro for r in probe_layer(x[:, None], 0, 3, "oracle", shuffled, FAST)])
    chance = 1 / t.n_classes if not multi else 0.45     # 0.3 label rate: random F1 ≈ 0.3, majority predicts none
    assert f1_shuf < chance + 0.15, (f1_shuf, chance)


def test_test_split_chooses_nothing():
    """Changing only the test labels leaves every choice (grid point, epoch, validation score) unchanged."""
    x, t = _problem(signal=0.7)
    chosen, sc = fit_probe(x, t, FAST, seed=0)
    y2 = t.targets.copy()
    y2[t.test] = (y2[t.test] + 1) % t.n_classes
    t2 = TaskArrays("t", y2, t.train, t.validation, t.test, False, t.n_classes)
    chosen2, sc2 = fit_probe(x, t2, FAST, seed=0)
    assert chosen == chosen2 and sc2["accuracy"] != sc["accuracy"]


def test_seeds_are_replicates_and_deterministic():
    x, t = _problem(signal=0.5)
    a = probe_layer(x[:, None], 0, 1, "m", t, FAST)
    b = probe_layer(x[:, None], 0, 1, "m", t, FAST)
    assert a == b                                    # same seed, same fit
    assert len({(r.validation, r.f1_macro, r.epoch) for r in a}) > 1     # seeds differ (init, batch order)


@pytest.mark.parametrize("multi", [False, True])
def test_metrics_against_sklearn(multi):
    import sklearn.metrics as sk                     # the dev extra installs it: never skipped
    rng = np.random.default_rng(2)
    if multi:
        yt, yp = (rng.random((50, 6)) < 0.4).astype(int), (rng.random((50, 6)) < 0.4).astype(int)
        yt[:, 5] = yp[:, 5] = 0                       # a label absent from both: left out of the macro mean
        labels = list(range(5))
    else:
        yt, yp = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
        yp[yp == 4] = 3                               # a class only true, never predicted
        labels = None
    got = scores(yt, yp, multi, 6 if multi else 7)
    t, p = (yt[:, :5], yp[:, :5]) if multi else (yt, yp)
    assert got["f1_macro"] == pytest.approx(sk.f1_score(t, p, average="macro", labels=labels, zero_division=0))
    assert got["f1_micro"] == pytest.approx(sk.f1_score(yt, yp, average="micro", zero_division=0))
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(yt, yp))


def test_metrics_written_out():
    got = scores(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2]), False, 5)
    # class 0: F1 1; class 1: 0 (missed); class 2: 2·2 / (2·2 + 1) = 0.8; classes 3, 4 absent from both
    assert got == pytest.approx(dict(accuracy=0.75, f1_macro=(1 + 0 + 0.8) / 3, f1_micro=0.75))


def test_ray_tasks_match_local(ray_local):
    x, t = _problem(n=120)
    feats = {"m": {"t": np.stack([x, x[::-1].copy()], axis=1)}}

    s = ProbeSettings(seeds=[0], lrs=[1e-2], weight_decays=[0.0], max_epochs=10, patience=3)
    local = run_probes(feats, [t], {"m": [1, 2]}, s, ComputeSettings(runner="local"), log=lambda *a: None)
    on_ray = run_probes(feats, [t], {"m": [1, 2]}, s, ComputeSettings(runner="ray"), log=lambda *a: None)
    assert local == on_ray and [r.layer for r in local] == [1, 2]
