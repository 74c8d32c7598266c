"""The evaluation on a simulated multi-node Ray cluster (``ray.cluster_utils.Cluster`` on loopback): feature
actors and ridge tasks spread over the nodes give the numbers of the in-process evaluation, and a node lost
mid-evaluation changes none of them."""
import threading
import time

import numpy as np
import pytest

from braintune_dist.data.lebel import DataConfig, LebelDataset
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.data.voxels import find_common_space
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig
from braintune_dist.evaluate.featurize import ModelSpec, featurize
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.features.config import FeatureConfig
from braintune_dist.model.config import ModelConfig

MODELS = [ModelSpec("untuned", ModelConfig()), ModelSpec("other-seed", ModelConfig(seed=1))]
RIDGE = RidgeConfig(alphas=[1.0, 100.0, 1e4])


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "ds"
    simulate(SimConfig(participants=2, stories=4, trs_per_story=60, n_vertices=120, seed=3), str(root))
    return LebelDataset(root, DataConfig(root=str(root)))


@pytest.fixture
def cluster():
    """A driver-only head (0 CPUs) and three 1-CPU worker nodes told apart by a custom resource; the session's
    local Ray is restored afterwards for the other tests."""
    import ray
    from ray.cluster_utils import Cluster
    had_local = ray.is_initialized()
    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False))
    nodes = [c.add_node(num_cpus=1, resources={f"eval_node_{k}": 1}) for k in "abc"]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield c, nodes
    ray.shutdown()
    c.shutdown()
    if had_local:
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False


def _evaluate(sim, cache, runner: str, log) -> tuple[list[dict], dict]:
    fc = FeatureConfig(window=2.0, stride=0.5, device="cpu", cache_dir=str(cache))
    train = sim.split()["train"]
    sources, stats = featurize(sim, MODELS, train + [sim.cfg.test_story], fc, ComputeSettings(runner=runner), log)
    space = find_common_space(sim.root, "", sim.participants())
    rows, _ = encode(sim, sources, sim.participants(), train, RIDGE, space, ComputeSettings(runner=runner),
                     efficiency=[1, 2], log=log)
    return rows, stats


def _by_key(rows):
    return {(r["model"], r["kind"], r["layer"], r["n_stories"], r["subject"], r["region"]): r for r in rows}


def _assert_same(rows, reference):
    a, b = _by_key(rows), _by_key(reference)
    assert a.keys() == b.keys()
    for k in a:
        for col in ("mean_r", "mean_r_norm", "cv_mse"):
            np.testing.assert_allclose(a[k][col], b[k][col], rtol=0, atol=1e-6, err_msg=str((k, col)))


def test_units_spread_and_a_lost_node_changes_nothing(sim, cluster, tmp_path):
    import ray
    c, (_, node_b, _) = cluster
    reference, _ = _evaluate(sim, tmp_path / "serial", "local", lambda *a: None)

    # 1. node b is removed while the feature actors run: the evaluation finishes with the same numbers, its feature
    # units and ridge fits spread over the two nodes left
    cache, result, errors, lines = tmp_path / "lossy", {}, [], []

    def run():
        try:
            result["rows"], result["stats"] = _evaluate(sim, cache, "ray", lines.append)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.time() + 120
    while not list(cache.glob("*/*/times.npy")) and time.time() < deadline:
        time.sleep(0.05)
    # units whose times.npy (written last) is there; a unit still writing its layer files may be redone
    done_before = {p: p.stat().st_mtime_ns for unit in {t.parent for t in cache.glob("*/*/times.npy")}
                   for p in unit.glob("*.npy")}
    assert done_before, "no feature unit finished within 120 s"
    c.remove_node(node_b, allow_graceful=False)
    worker.join(timeout=300)
    assert not worker.is_alive() and not errors, errors
    _assert_same(result["rows"], reference)
    # windows cached before the loss were not computed again
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
    stats = result["stats"]
    left = {n["NodeID"] for n in ray.nodes()
            if n["Alive"] and any(k in n["Resources"] for k in ("eval_node_a", "eval_node_c"))}
    assert len(left) == 2 and left <= set(stats["nodes"]) and stats["computed"] == stats["units"] == 10, stats
    assert any(x.startswith("[ridge]") and "on 2 node(s)" in x for x in lines), lines

    # 2. a re-run computes nothing: every (model, story) unit is in the cache
    lines = []
    rows, stats = _evaluate(sim, cache, "ray", lines.append)
    assert stats["computed"] == 0 and any("all 10 (model, story) units cached" in x for x in lines), lines
    _assert_same(rows, reference)
