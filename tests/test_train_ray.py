"""Brain-tuning on a real local Ray (CPU, loopback): DDP and DeepSpeed ZeRO-2 on 2 workers, resume, modes."""
import dataclasses

import numpy as np
import pytest

from braintune_dist.config import from_dict
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.train.checkpoint import read_model_file
from braintune_dist.train.loop import TuneConfig
from braintune_dist.train.trainer import build_trainer, plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim") / "ds"
    simulate(SimConfig(out=str(root), participants=3, stories=3, trs_per_story=36, n_vertices=60, seed=3))
    data = DataConfig(root=str(root), val_stories=["story03"])
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_shards(ShardConfig(data=data, out=str(out), window=4.0, audio_dtype="float16"))
    return data, out


def tune_cfg(sim_shards, tmp_path, **over):
    data, shards = sim_shards
    base = {"data": dataclasses.asdict(data), "shards": str(shards), "stream": {"batch_size": 4},
            "optim": {"backbone_lr": 1e-2, "head_lr": 1e-2, "warmup_frac": 0.0},
            "engine": {"kind": "ddp"}, "train": {"epochs": 2, "loss": "mse", "patience": 0},
            "ray": {"num_workers": 2, "cpus_per_worker": 0.5, "storage_path": str(tmp_path / "ray"),
                    "run_name": "t", "keep_checkpoints": 5},
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(TuneConfig, base)


def history(result):
    """Reported metrics of every kept checkpoint, in epoch order."""
    return sorted((m for _, m in result.best_checkpoints), key=lambda m: m["epoch"])


def test_ddp_two_workers_learns(ray_local, sim_shards, tmp_path):
    cfg = tune_cfg(sim_shards, tmp_path)
    p = plan(cfg)
    assert p["participants"] == ["sim01", "sim02", "sim03"] and p["coverage"].shape == (3, 60)
    result = build_trainer(cfg).fit()
    h = history(result)
    assert [m["epoch"] for m in h] == [0, 1]
    assert h[-1]["step"] == p["total_steps"] == 2 * p["steps_per_epoch"]      # schedule = steps taken
    assert h[1]["train_loss"] < h[0]["train_loss"]                            # loss decreases
    payload = read_model_file(result.checkpoint.path)
    assert payload["participants"] == p["participants"] and payload["epoch"] == 1


def test_deepspeed_zero2_two_workers_and_resume(ray_local, sim_shards, tmp_path):
    cfg = tune_cfg(sim_shards, tmp_path, engine={"kind": "deepspeed", "zero_stage": 2}, train={"epochs": 1})
    first = build_trainer(cfg).fit()
    m0 = history(first)[-1]
    assert m0["epoch"] == 0 and m0["start_step"] == 0 and np.isfinite(m0["train_loss"])
    files = {p.name for p in __import__("pathlib").Path(first.checkpoint.path).rglob("*")}
    assert {"model.pt", "COMPLETE"} <= files and any("optim_states" in f for f in files)   # ZeRO shards saved
    # same run name + storage → Ray Train restores the latest checkpoint; epoch 0 is not redone
    ck = read_model_file(first.checkpoint.path)
    from braintune_dist.train.loop import weights_checksum
    from braintune_dist.train.checkpoint import load_tuner
    model, _ = load_tuner(first.checkpoint.path)
    second = build_trainer(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))).fit()
    m1 = history(second)[-1]
    assert m1["epoch"] == 1 and m1["start_epoch"] == 1 and m1["start_step"] == ck["step"]
    assert m1["start_checksum"] == pytest.approx(weights_checksum(model), rel=1e-6)
    assert m1["step"] == 2 * ck["step"]


def test_single_participant_per_participant_heads(ray_local, sim_shards, tmp_path):
    cfg = tune_cfg(sim_shards, tmp_path, stream={"participants": ["sim02"]}, head={"kind": "per_participant"},
                   train={"epochs": 1, "loss": "spatial_corr"}, ray={"num_workers": 1})
    result = build_trainer(cfg).fit()
    payload = read_model_file(result.checkpoint.path)
    assert payload["participants"] == ["sim02"]
    assert payload["head"]["head_weight"].shape[0] == 1 and np.isfinite(history(result)[-1]["val_loss"])
