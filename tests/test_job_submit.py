"""`ray job submit` of jobs/multi_brain.py to a local head on 127.0.0.1 (started and stopped by the test)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.simulate import SimConfig, simulate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def head(tmp_path):
    """A Ray head with the job server (ray[default]) on loopback, token authentication on."""
    temp = Path(f"/tmp/rj{os.getpid()}")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_DISABLE_USAGE_STATS="1")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=6397",
         "--dashboard-host=127.0.0.1", "--dashboard-port=8297", "--dashboard-agent-listen-port=52397",
         "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = "http://127.0.0.1:8297"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url + "/api/version", timeout=2)
            break
        except urllib.error.HTTPError:          # 401: up, and asking for the token
            break
        except OSError:
            time.sleep(1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not come up:\n" + proc.stdout.read1().decode(errors="replace"))
    yield url, env
    os.killpg(proc.pid, signal.SIGTERM)         # --block: its process group holds every Ray process
    try:
        proc.wait(timeout=5)                    # `ray start --block` lingers ~30 s on SIGTERM; nothing to save here
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_multi_brain(head, tmp_path):
    url, env = head
    root, shards = tmp_path / "sim", tmp_path / "shards"
    simulate(SimConfig(participants=2, stories=2, trs_per_story=32, n_vertices=40, seed=5), str(root))
    write_shards(ShardConfig(window=2.0, audio_dtype="float16"), DataConfig(root=str(root), val_stories=["story02"]), str(shards))
    args = ["--fit.data.root", str(root), "--fit.data.val_stories", "[story02]", "--fit.shards", str(shards),
            "--fit.stream.batch_size", "4", "--fit.train.epochs", "1", "--fit.engine.kind", "ddp",
            "--fit.ray.num_workers", "1", "--fit.ray.storage_path", str(tmp_path / "ray"), "--fit.ray.run_name", "submitted",
            "--fit.tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--eval.enabled", "false", "--seeds", "[1,2]"]
    runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                   "excludes": ["data/", "runs/", ".venv/", "*.parquet"]}
    out = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps(runtime_env), "--", sys.executable, "jobs/multi_brain.py", *args],
        env=dict(env, RAY_AUTH_MODE="token"), capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower(), log[-4000:]
    for seed in (1, 2):                                        # one fit per training seed, one epoch each
        ckpts = list((tmp_path / "ray" / f"submitted-s{seed}").glob("checkpoint_*/model.pt"))
        assert len(ckpts) == 1, seed
    import mlflow
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()])
    parent = [r for r in runs if r.info.run_name == "submitted"]
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id)
    assert children == ["submitted-s1", "submitted-s2"]
    assert all(r.info.status == "FINISHED" for r in runs)
