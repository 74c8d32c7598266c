"""What a job prints besides its progress: a finished fit in one readable line (not Ray Train's result dict), and
Ray's restart warning for the feature actor pool explained by a line of ours, once, before it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from braintune_dist.evaluate.compute import RESTART_NOTE
from braintune_dist.experiment.trials import best_checkpoint
from braintune_dist.train.trainer import fit_summary

REPO = Path(__file__).resolve().parents[1]


def test_a_fit_ends_on_one_readable_line(tmp_path):
    from ray.train import Checkpoint, Result
    checkpoints = []
    for epoch in (0, 1):
        folder = tmp_path / "run" / f"checkpoint_{epoch}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0")
        checkpoints.append(Checkpoint.from_directory(str(folder)))
    # a loop's reports carry a dozen more keys (memory, seconds, start checksum): none of them belongs in the line
    reports = [dict(epoch=0, step=20, val_loss=0.912, val_r=0.1862, train_loss=1.1, peak_rss_mb=900.5, start_epoch=0),
               dict(epoch=1, step=40, val_loss=0.95, val_r=0.171, train_loss=0.9, peak_rss_mb=910.0, start_epoch=0)]
    result = Result(metrics=reports[-1], checkpoint=checkpoints[-1], error=None, path=str(tmp_path / "run"),
                    best_checkpoints=list(zip(checkpoints, reports)))
    line = fit_summary(result, best_checkpoint(result))           # the checkpoint of lowest val_loss: epoch 0's
    assert line == f"epoch 1 (step 40); best checkpoint epoch 0, val_loss 0.912, val_r 0.186: {checkpoints[0].path}"


DRIVER = """
import sys
import ray
from braintune_dist.evaluate.compute import ComputeSettings, actor_pool


class Echo:                       # a worker with no arguments of its own: nothing of ours in the object store
    def __init__(self, threads=0):
        pass

    def __call__(self, batch):
        return batch


ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False)
ray.data.DataContext.get_current().enable_progress_bars = False
for _ in range(2):
    actor_pool([{"x": 1}], Echo, {}, ComputeSettings(runner="ray", feature_workers=1), lambda row, done: None)
"""


def test_rays_restart_warning_comes_once_after_our_note(ray_address):
    """A fresh driver (Ray says its line once per process) runs two tiny actor pools on the session's Ray."""
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run([sys.executable, "-c", DRIVER, ray_address], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout[-3000:]
    ours = [i for i, x in enumerate(lines) if x == f"[features] note: {RESTART_NOTE}"]
    rays = [i for i, x in enumerate(lines) if re.search(r" E \d+ \d+\] core_worker\.cc:\d+: Actor .* has constructor "
                                                     r"arguments in the object store and max_restarts > 0", x)]
    assert len(rays) == 1, ("Ray no longer prints its restart warning once for a Ray Data actor pool: check "
                            "evaluate/compute.py's RESTART_NOTE", proc.stdout[-3000:])
    assert len(ours) == 1 and ours[0] < rays[0], proc.stdout[-3000:]
