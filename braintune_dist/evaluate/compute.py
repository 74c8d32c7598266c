"""Where evaluation work runs: Ray workers (a feature actor pool, ridge tasks) or this process.

The same functions run either way; ``Runner`` only decides how they are called. On Ray, large inputs
go to the object store once (``put``) and every task that needs them gets the reference, and tasks
are retried when their node dies (Ray's default ``max_retries``), so an evaluation survives the loss
of a worker node.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Literal


@dataclass
class ComputeSettings:
    """Resources of the evaluation (feature actors and ridge tasks)."""

    runner: Literal["auto", "ray", "local"] = "auto"
    """ray: feature actor pool and ridge tasks on the Ray cluster; local: everything in this process (the
    serial reference); auto: ray when this process is connected to a Ray cluster."""
    address: str = ""
    """Ray cluster the evaluate and analyze jobs join ('' = RAY_ADDRESS, else a private local one)."""
    feature_workers: int = 0
    """Backbone actors of the feature pool; 0 = one per GPU of the cluster, else one per whole CPU (never
    more than the (model, story) units to compute)."""
    feature_cpus: float = 1.0
    """CPUs per feature actor (its torch threads: the whole part, at least 1)."""
    feature_gpus: float = -1.0
    """GPUs per feature actor; -1 = 1 when the cluster has GPUs, else 0."""
    ridge_cpus: float = 1.0
    """CPUs per ridge task (one (model, participant, layer) fit)."""
    ridge_gpus: float = -1.0
    """GPUs per ridge task; -1 = 1 when the cluster has GPUs and ridge.backend is not numpy, else 0."""


def cluster_gpus() -> float:
    import ray
    return float(ray.cluster_resources().get("GPU", 0.0))


def use_ray(compute: ComputeSettings) -> bool:
    """Whether the evaluation runs on Ray (``runner`` resolved against the process's Ray connection)."""
    if compute.runner == "local":
        return False
    import ray
    if compute.runner == "ray" and not ray.is_initialized():
        raise RuntimeError("compute.runner='ray' but this process is not connected to Ray (ray.init first)")
    return ray.is_initialized()


def feature_resources(compute: ComputeSettings, n_units: int) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) of the feature pool on the connected cluster."""
    import ray
    gpus = cluster_gpus()
    per_gpu = (1.0 if gpus else 0.0) if compute.feature_gpus < 0 else compute.feature_gpus
    n = compute.feature_workers
    if n <= 0:
        cpus = ray.cluster_resources().get("CPU", 1.0)
        n = int(gpus // per_gpu) if per_gpu else int(cpus // max(compute.feature_cpus, 1e-3))
    return max(1, min(n, n_units)), compute.feature_cpus, per_gpu


RESTART_NOTE = (
    "if Ray prints 'E ... core_worker.cc ... has constructor arguments in the object store and max_restarts > 0' "
    "(once), it is not an error here: Ray Data itself hands its pool actors objects in the object store "
    "(ray-project/ray#57733); they belong to this driver and live as long as the pool, so the restart of an actor "
    "whose node was lost, which carries the evaluation on, finds them")
"""Said once per process, before the actors start (Ray's line is once per process too). The line comes with any
Ray Data actor pool, however small the worker's own arguments; only ``max_restarts=0`` silences it, and then the
loss of one actor's node fails the whole pool (``tests/test_evaluate_cluster.py`` needs it to carry on)."""
_restart_note_said = False


def actor_pool(units: list[dict], worker_cls, worker_kwargs: dict, compute: ComputeSettings,
               on_row: Callable[[dict, int], None], log=print, what: str = "features") -> None:
    """Run ``units`` through ``worker_cls`` actors (a Ray Data actor pool on Ray, one worker here otherwise).

    A worker is a callable class built once per actor with ``worker_kwargs`` (it loads its model once); it is
    called with a batch ``{field: (1,) array}`` of one unit and returns ``{field: (1,) array}``: a small
    summary row (the heavy output goes to a cache on shared storage, never back through the driver).
    ``on_row(row, done)`` sees each row as it arrives, ``done`` counting from 1.
    """
    if not use_ray(compute):
        worker = worker_cls(**worker_kwargs)
        for done, u in enumerate(units, 1):
            res = worker({k: [v] for k, v in u.items()})
            on_row({k: v[0] for k, v in res.items()}, done)
        return
    import warnings
    import ray
    global _restart_note_said
    n, cpus, gpus = feature_resources(compute, len(units))
    log(f"[{what}] {len(units)} units on up to {n} actors ({cpus:g} CPU, {gpus:g} GPU each)")
    if not _restart_note_said:
        _restart_note_said = True
        log(f"[{what}] note: {RESTART_NOTE}")
    data = ray.data.from_items(units, override_num_blocks=len(units))
    # n actors asked for at once, but the pool runs with as few as 1 (another job may hold the rest)
    pool = ray.data.ActorPoolStrategy(min_size=1, max_size=n, initial_size=n)
    with warnings.catch_warnings():       # scheduling_strategy has no named map_batches argument yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*")
        out = data.map_batches(worker_cls, batch_size=1, compute=pool, num_cpus=cpus, num_gpus=gpus,
                               scheduling_strategy="DEFAULT",   # not in a calling Tune trial's group
                               fn_constructor_kwargs=dict(worker_kwargs, threads=max(1, int(cpus))))
    for done, row in enumerate(out.iter_rows(), 1):
        on_row(row, done)


def ridge_gpus(compute: ComputeSettings, backend: str) -> float:
    if compute.ridge_gpus >= 0:
        return compute.ridge_gpus
    return 1.0 if backend != "numpy" and cluster_gpus() > 0 else 0.0


class Runner:
    """Submit functions as Ray tasks or call them in this process; gather results in submission order.

    Parameters
    ----------
    ray : bool  run on Ray (else in this process)
    num_cpus, num_gpus : resources of each task
    """

    def __init__(self, ray: bool, num_cpus: float = 1.0, num_gpus: float = 0.0):
        self.ray, self.num_cpus, self.num_gpus = ray, num_cpus, num_gpus

    def put(self, obj):
        """Object-store reference of ``obj`` (on Ray), else ``obj`` itself."""
        if not self.ray:
            return obj
        import ray
        return ray.put(obj)

    def submit(self, fn: Callable, *args, num_cpus: float | None = None):
        """Run ``fn(*args)`` (arguments may be ``put`` references): a Ray task, or now in this process."""
        if not self.ray:
            return fn(*args)
        import ray
        cpus = self.num_cpus if num_cpus is None else num_cpus
        # "DEFAULT": outside any placement group the caller runs in (a Tune trial's would capture the task)
        return ray.remote(fn).options(num_cpus=cpus, num_gpus=self.num_gpus,
                                      scheduling_strategy="DEFAULT").remote(*args)

    def gather(self, handles: list, progress: Callable[[int, int, float], None] | None = None) -> list:
        """Results of ``submit`` handles, in order; ``progress(done, total, seconds)`` as they finish."""
        t0 = time.time()
        if not self.ray:
            if progress and handles:
                progress(len(handles), len(handles), time.time() - t0)
            return list(handles)
        import ray
        pending, done = list(handles), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=None)
            done += len(ready)
            if progress:
                progress(done, len(handles), time.time() - t0)
        return ray.get(list(handles))


def node_id() -> str:
    """Id of the Ray node this code runs on ('' outside Ray)."""
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
