"""`ray job submit` of jobs/multi_brain.py to the head that cluster/local_head.sh starts on 127.0.0.1 (and stops)."""
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.simulate import SimConfig, simulate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


DPORT = 8297


def alive(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group: a stopped head leaves none."""
    ps = subprocess.run(["ps", "-eo", "pgid=,stat="], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if line.split()[:1] == [str(pgid)] and not line.split()[1].startswith("Z")]


@pytest.fixture
def head(tmp_path):
    """cluster/local_head.sh on loopback with non-default ports, token authentication on; its ``stop`` at the end
    must remove exactly its own processes."""
    sh = REPO / "cluster" / "local_head.sh"
    env = dict(os.environ, BT_RAY_PORT="6397", BT_DASHBOARD_PORT=str(DPORT), BT_AGENT_PORT="52397",
               BT_NUM_CPUS="2", BT_STATE_DIR=str(tmp_path / "head"), BT_TEMP_DIR=f"/tmp/rj{os.getpid()}")
    try:
        out = subprocess.run([str(sh)], env=env, capture_output=True, text=True, timeout=150)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"--address http://127.0.0.1:{DPORT}" in out.stdout and "jobs/multi_brain.py" in out.stdout
        with pytest.raises(urllib.error.HTTPError) as e:             # token auth on: 401 without a token
            urllib.request.urlopen(f"http://127.0.0.1:{DPORT}/api/version", timeout=5)
        assert e.value.code == 401
        pgid = int((tmp_path / "head" / "head.pgid").read_text())
        assert subprocess.run([str(sh), "status"], env=env).returncode == 0
        yield f"http://127.0.0.1:{DPORT}", env
    finally:
        stop = subprocess.run([str(sh), "stop"], env=env, capture_output=True, text=True, timeout=60)
        shutil.rmtree(env["BT_TEMP_DIR"], ignore_errors=True)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not alive(pgid)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{DPORT}/api/version", timeout=2)


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
        ckpts = list((tmp_path / "ray" / f"submitted-s{seed}").glob("checkpoint_*/model.safetensors"))
        assert len(ckpts) == 1, seed
    import mlflow
    runs = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()])
    parent = [r for r in runs if r.info.run_name == "submitted"]
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id)
    assert children == ["submitted-s1", "submitted-s2"]
    assert all(r.info.status == "FINISHED" for r in runs)
