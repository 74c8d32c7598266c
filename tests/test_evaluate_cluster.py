"""The evaluation on a simulated multi-node Ray cluster (``ray.cluster_utils.Cluster`` on loopback): feature
actors and ridge tasks spread over the nodes give the numbers of the in-process evaluation, and a node lost
mid-evaluation (while it runs a feature unit, or a ridge fit) changes none of them."""
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
from servers import wait_for

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
    local Ray is restored afterwards for the other tests. A removed node is declared dead after about 2 s of
    failed health checks (15 s by default): its lost work is retried that much sooner."""
    import ray
    from ray.cluster_utils import Cluster
    had_local = ray.is_initialized()
    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, include_dashboard=False, _system_config=dict(
        health_check_period_ms=500, health_check_failure_threshold=4)))
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


def _evaluate(sim, cache, runner: str, log) -> tuple[list[dict], dict, dict]:
    fc = FeatureConfig(window=2.0, stride=0.5, device="cpu", cache_dir=str(cache))
    train = sim.split()["train"]
    sources, stats = featurize(sim, MODELS, train + [sim.cfg.test_story], fc, ComputeSettings(runner=runner), log)
    space = find_common_space(sim.root, "", sim.participants())
    rows, _ = encode(sim, sources, sim.participants(), train, RIDGE, space, ComputeSettings(runner=runner),
                     efficiency=[1, 2], log=log)
    return rows, stats, sources


def running(node, *parts: str) -> list[str]:
    """Titles of the processes of a ``Cluster`` node that hold every one of ``parts``: Ray titles a worker
    ``ray::<function>`` or ``ray::<actor class>.<method>`` while it executes that task."""
    import psutil
    titles = []
    for p in psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True):
        try:
            title = " ".join(p.cmdline()).strip()
        except psutil.Error:                       # exited while we looked
            continue
        if all(x in title for x in parts):
            titles.append(title)
    return titles


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
    c, (node_a, node_b, node_c) = cluster
    reference, _, _ = _evaluate(sim, tmp_path / "serial", "local", lambda *a: None)

    # 1. node b is removed while its feature actor computes a unit: the evaluation finishes with the same numbers,
    # its feature units and ridge fits spread over the two nodes left
    cache, result, errors, lines = tmp_path / "lossy", {}, [], []

    def run():
        try:
            result["rows"], result["stats"], _ = _evaluate(sim, cache, "ray", lines.append)
        except Exception as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    # a unit finished somewhere (the cached ones must not be redone) and one in node b's actor right now
    assert wait_for(lambda: list(cache.glob("*/*/times.npy")) and running(node_b, "FeatureWorker", ".submit"),
                    timeout=120, poll=0.02), \
        ("no feature unit finished, or none running on node b, within 120 s", lines)
    # units whose times.npy (written last) is there; a unit still writing its layer files may be redone
    done_before = {p: p.stat().st_mtime_ns for unit in {t.parent for t in cache.glob("*/*/times.npy")}
                   for p in unit.glob("*.npy")}
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
    # every unit reported once, the one lost with node b too
    assert sum(stats["nodes"].values()) == 10 and set(stats["nodes"]) <= left | {node_b.node_id}, stats
    assert any(x.startswith("[ridge]") and "on 2 node(s)" in x for x in lines), lines

    # 2. a re-run computes nothing: every (model, story) unit is in the cache
    lines = []
    rows, stats, sources = _evaluate(sim, cache, "ray", lines.append)
    assert stats["computed"] == 0 and any("all 10 (model, story) units cached" in x for x in lines), lines
    _assert_same(rows, reference)

    # 3. a ridge fit whose node dies while it runs is retried on the node left, with the same result. A fit takes
    # ~0.1 s here, too short to catch: its first attempt holds its node (the retry finds the marker and fits)
    from braintune_dist.evaluate.compute import Runner
    from braintune_dist.evaluate.encoding import fit_layer, load_participant
    train, test = sim.split()["train"], sim.cfg.test_story
    X = {s: sources["untuned"].story_features(sim, s, [1])[1] for s in train + [test]}
    sub = load_participant(sim, sim.participants()[0], train, find_common_space(sim.root, "", sim.participants()))
    expected = fit_layer(X, sub, train, test, RIDGE)
    marker = tmp_path / "first_attempt"

    def held_then_fit(*args):
        import os
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return fit_layer(*args)
        os.write(fd, ray.get_runtime_context().get_node_id().encode())
        os.close(fd)
        time.sleep(300)                            # the node's removal ends this process

    runner = Runner(True, num_cpus=1.0)
    handle = runner.submit(held_then_fit, runner.put(X), runner.put(sub), train, test, RIDGE)
    assert wait_for(lambda: marker.is_file() and marker.read_text(), timeout=60, poll=0.02)
    (held,) = [n for n in (node_a, node_c) if n.node_id == marker.read_text()]
    assert running(held, "held_then_fit")          # the fit's node holds it when it is removed
    c.remove_node(held, allow_graceful=False)
    ready, _ = ray.wait([handle], timeout=120)
    assert ready, "the fit lost with its node was not run again within 120 s"
    (fit,) = runner.gather([handle])
    assert fit.node in {node_a.node_id, node_c.node_id} - {held.node_id}
    for got, want in ((fit.r, expected.r), (fit.cv_mse, expected.cv_mse), (fit.alphas, expected.alphas)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
