"""run_trials on a real local Ray: a resumed grid keeps its finished trials, runs only the others, and still runs
them ``max_concurrent`` at a time (Tune's own restore starts every unfinished trial at once)."""
import json
import time
from pathlib import Path

import pytest

from braintune_dist.experiment.trials import DONE_FILE, run_trials


def _trial(config: dict, log_dir: str, fail: list[int]) -> None:
    """Sleeps a little, records when it ran; fails where its index is in ``fail`` and no FIXED file exists."""
    from ray import tune
    i, d = config["i"], Path(log_dir)
    start = time.time()
    time.sleep(0.4)
    if i in fail and not (d / "FIXED").exists():
        raise RuntimeError(f"trial {i} fails")
    with open(d / f"ran{i}", "a") as f:
        f.write(json.dumps([start, time.time()]) + "\n")
    tune.report({"done": 1, "value": 10 * i})


def _spans(d: Path, i: int) -> list:
    p = d / f"ran{i}"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.is_file() else []


def test_resume_runs_only_the_unfinished_trials_max_concurrent_at_a_time(ray_local, tmp_path):
    import sys

    import ray.cloudpickle
    from ray import tune
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # the workers cannot import tests/
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    trainable = tune.with_resources(tune.with_parameters(_trial, log_dir=str(log_dir), fail=[1, 2, 3]), {"CPU": 0.25})
    args = dict(n=4, key="i", name="exp", storage_path=str(tmp_path / "tune"), max_concurrent=1, job="grid",
                log=lambda *a: None)
    with pytest.raises(RuntimeError, match="3 trial"):
        run_trials(trainable, resume=False, **args)
    assert len(_spans(log_dir, 0)) == 1 and not any(_spans(log_dir, i) for i in (1, 2, 3))
    record = json.loads((tmp_path / "tune" / "exp" / DONE_FILE).read_text())
    assert list(record) == ["0"] and record["0"]["value"] == 0
    (log_dir / "FIXED").touch()
    done = run_trials(trainable, resume=True, **args)
    assert [done[i]["value"] for i in range(4)] == [0, 10, 20, 30]
    assert len(_spans(log_dir, 0)) == 1                          # kept, not run again
    spans = sorted(_spans(log_dir, i)[0] for i in (1, 2, 3))
    assert all(b[0] >= a[1] - 0.05 for a, b in zip(spans, spans[1:])), spans    # one at a time
    # everything finished: a second resume runs nothing
    again = run_trials(trainable, resume=True, **args)
    assert again == done and all(len(_spans(log_dir, i)) == 1 for i in range(4))
