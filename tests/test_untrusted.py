"""Folders handed over by someone else are read as data only. A checkpoint whose pickle would run code when
unpickled (``__reduce__`` → ``os.system``) is refused with one error naming the file, and its code never runs:
in the loaders, in the training engine's resume, and through the real drivers (evaluate, analyze, a fit
resuming a run)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from braintune_dist.config import from_dict, to_dict
from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.train import checkpoint
from braintune_dist.train.checkpoint import (CheckpointError, base_fingerprint, check_resumable, load_tuner,
                                             mark_complete, read_meta, read_model_file, save_model)

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "tests" / "data" / "ray_train_run"          # Ray Train's record of a run (test_compat.py)
LATEST = "checkpoint_2026-12-07_20-56-12.441817"
SAFELY = r"cannot be loaded safely: it holds posix.system"


class Payload:
    """Unpickled by ``torch.load(weights_only=False)``, it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_tuner(n_vertices: int = 20) -> tuple[BrainTuner, dict]:
    m, lora, head = ModelConfig(), LoraSettings(rank=2), HeadSettings()
    meta = dict(config=dict(model=to_dict(m), lora=to_dict(lora), head=to_dict(head)), n_vertices=n_vertices,
                participants=["sub-01"], epoch=0, step=1, best_val=1.0, bad_epochs=0)
    return BrainTuner(m, lora, head, n_vertices=n_vertices, n_participants=1), meta


def first_format(d: Path, model: BrainTuner, meta: dict, summed: bool = True, **extra) -> Path:
    """A checkpoint as the first format wrote it: weights and metadata pickled together in ``model.pt``;
    ``summed``: as written once COMPLETE held its sha256 (the payload then has ``base_fingerprint``), else as
    before (no fingerprint, and the caller writes the marker)."""
    d.mkdir(parents=True, exist_ok=True)
    head = {n: p.detach() for n, p in model.named_parameters() if not n.startswith("backbone.")}
    fingerprint = dict(base_fingerprint=base_fingerprint(model)) if summed else {}
    torch.save(dict(meta, backbone=model.backbone_state(), head=head, **fingerprint, **extra), d / "model.pt")
    if summed:
        mark_complete(d)
    return d


def drop_lines(marker: Path, prefix: str, name: str) -> None:
    """Remove the lines of ``marker`` that start with ``prefix`` and name ``name``."""
    lines = marker.read_text().splitlines()
    kept = [line for line in lines if not (line.startswith(prefix) and line.endswith(" " + name))]
    assert len(kept) < len(lines), (prefix, name, lines)
    marker.write_text("".join(line + "\n" for line in kept))


def evil_checkpoint(d: Path, marker: Path) -> Path:
    model, meta = tiny_tuner()
    return first_format(d, model, meta, hook=Payload(marker))


def test_the_payload_is_refused_by_every_loader_and_never_runs(tmp_path):
    marker = tmp_path / "ran"
    ck = evil_checkpoint(tmp_path / "ck", marker)
    for load in (read_meta, read_model_file, load_tuner, check_resumable):
        with pytest.raises(CheckpointError, match=rf"{ck / 'model.pt'}: {SAFELY}, a Python object"):
            load(ck)
    assert not marker.exists()
    torch.load(ck / "model.pt", weights_only=False)          # the payload is live: an unsafe load runs it
    assert marker.exists()


def test_a_first_format_checkpoint_still_loads(tmp_path):
    model, meta = tiny_tuner()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    ck = first_format(tmp_path / "old", model, meta)
    loaded, payload = load_tuner(ck)
    assert payload["participants"] == ["sub-01"] and read_meta(ck)["epoch"] == 0 and "backbone" not in read_meta(ck)
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(wav), model.eval()(wav))


def test_the_current_format_holds_no_pickle_and_checks_its_metadata(tmp_path):
    model, meta = tiny_tuner()
    save_model(tmp_path, model, meta)
    mark_complete(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["COMPLETE", "model.json", "model.safetensors"]
    assert load_tuner(tmp_path)[1]["participants"] == ["sub-01"]
    text = (tmp_path / "model.json").read_text()
    (tmp_path / "model.json").write_text(text.replace('"epoch": 0', '"epoch": 9'))    # same size, other value
    with pytest.raises(CheckpointError, match=r"damaged checkpoint .*: model.json does not match its sha256"):
        read_meta(tmp_path)
    (tmp_path / "model.json").write_text(text)
    complete = (tmp_path / "COMPLETE").read_text()
    # a marker that lost a model file's sha256 line proves nothing about that file: refused, the file named
    for name in ("model.json", "model.safetensors"):
        drop_lines(tmp_path / "COMPLETE", "sha256 ", name)
        for check in (checkpoint.check_complete, read_meta, load_tuner):
            with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path}: COMPLETE has no sha256 of {name}$"):
                check(tmp_path)
        (tmp_path / "COMPLETE").write_text(complete)
    (tmp_path / "COMPLETE").write_text(complete + "ok\n")                # only the first format's whole marker
    with pytest.raises(CheckpointError, match=r"COMPLETE holds 'ok', neither a size nor a sha256 line"):
        checkpoint.check_complete(tmp_path)
    (tmp_path / "COMPLETE").write_text(complete)
    assert checkpoint.check_complete(tmp_path) == tmp_path


def test_first_format_markers(tmp_path):
    """``model.pt`` checkpoints keep the marker they were written with: ``ok``, then sizes alone, then sizes and
    the sha256 (with ``base_fingerprint`` in the payload); one written with the sha256 that lost it is refused."""
    model, meta = tiny_tuner()
    old = first_format(tmp_path / "ok", model, meta, summed=False)
    (old / "COMPLETE").write_text("ok\n")
    sized = first_format(tmp_path / "sized", model, meta, summed=False)
    (sized / "COMPLETE").write_text(f"{(sized / 'model.pt').stat().st_size} model.pt\n")
    for ck in (old, sized):
        assert load_tuner(ck)[1]["participants"] == ["sub-01"] and read_meta(ck)["epoch"] == 0
    summed = first_format(tmp_path / "summed", model, meta)
    assert read_meta(summed)["epoch"] == 0
    drop_lines(summed / "COMPLETE", "sha256 ", "model.pt")
    for load in (read_meta, read_model_file, load_tuner):
        with pytest.raises(CheckpointError, match=rf"checkpoint {summed}: COMPLETE has no sha256 of model.pt$"):
            load(summed)


def test_training_state_is_loaded_as_data_only(tmp_path):
    """The DDP engine's ``optimizer.pt`` holds plain numbers (not the config's range-checked types, as parsed from
    the command line) and round-trips through ``weights_only=True``; one written with those types still loads; a
    payload in it, or in a DeepSpeed file, is refused (DeepSpeed's own loader would unpickle it unrestricted)."""
    from jsonargparse.typing import NonNegativeFloat, PositiveFloat
    from braintune_dist.train.config import EngineSettings, OptimSettings
    from braintune_dist.train.engine import Engine
    model, meta = tiny_tuner()
    optim = OptimSettings(backbone_lr=PositiveFloat(1e-3), head_lr=PositiveFloat(1e-3), weight_decay=NonNegativeFloat(0))
    eng = Engine(model, optim, EngineSettings(kind="ddp"), total_steps=4, micro_batch=2)
    eng.backward_step(eng.forward(torch.randn(2, 16000)).pow(2).mean())
    eng.save(tmp_path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "optimizer.pt") == []
    fresh = Engine(tiny_tuner()[0], optim, EngineSettings(kind="ddp"), total_steps=4, micro_batch=2)
    fresh.load(tmp_path)
    assert fresh.micro_steps == 1 and fresh.opt.state_dict()["state"].keys() == eng.opt.state_dict()["state"].keys()
    state = torch.load(tmp_path / "optimizer.pt", weights_only=True)
    state["opt"]["param_groups"][0]["lr"] = PositiveFloat(1e-3)          # as the first checkpoints hold it
    torch.save(state, tmp_path / "optimizer.pt")
    fresh.load(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"opt": Payload(marker)}, tmp_path / "optimizer.pt")
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'optimizer.pt'}: {SAFELY}"):
        fresh.load(tmp_path)
    os.remove(tmp_path / "optimizer.pt")
    ds = tmp_path / "deepspeed"
    ds.mkdir()
    from deepspeed.runtime.zero.config import ZeroStageEnum
    torch.save({"zero_stage": ZeroStageEnum.gradients, "state": [torch.ones(2)]}, ds / "optim_states.pt",
               _use_new_zipfile_serialization=False)         # DeepSpeed's classes, in its (legacy) format: accepted
    checkpoint.check_training_state(tmp_path)
    torch.save({"zero_stage": Payload(marker)}, ds / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
               _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=rf"zero_pp_rank_0_mp_rank_00_optim_states.pt: {SAFELY}"):
        checkpoint.check_training_state(tmp_path)
    assert not marker.exists()


def driver(job: str, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"jobs/{job}.py", *map(str, argv)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("job", ["evaluate", "analyze"])
def test_the_drivers_refuse_a_payload_checkpoint(job, tiny_root, tmp_path):
    marker = tmp_path / "ran"
    ck = evil_checkpoint(tmp_path / "checkpoint_evil", marker)
    out = ["--eval.out_dir", tmp_path / "out"] if job == "evaluate" else ["--out_dir", tmp_path / "out"]
    proc = driver(job, "--data.root", tiny_root, "--checkpoints", f"[{ck}]", "--tracking.uri",
                  f"sqlite:///{tmp_path / 'mlflow.db'}", *out)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("error: ") == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{ck / 'model.pt'}: cannot be loaded safely: it holds posix.system" in proc.stderr, proc.stderr[-3000:]
    assert not marker.exists() and not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def shards(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("untrusted") / "shards"
    write_shards(ShardConfig(window=2.0, rows_per_shard=8), DataConfig(root=str(tiny_root), val_stories=["bravo"]),
                 str(out))
    return out


@pytest.mark.parametrize("where", ["model.pt", "optimizer.pt", "deepspeed/zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_fit_refuses_to_resume_from_a_payload(where, tiny_root, shards, tmp_path):
    """The multi_brain job resuming its run (a fixed fit.ray.run_name whose latest checkpoint holds the payload):
    refused by the preflight, before Ray or any worker loads the checkpoint."""
    from braintune_dist.experiment.preflight import PreflightError
    from braintune_dist.jobs.multi_brain import MultiBrainConfig, run
    marker = tmp_path / "ran"
    run_dir = Path(shutil.copytree(RUN, tmp_path / "ray" / "resumed"))
    ck = run_dir / LATEST
    if where == "model.pt":
        evil_checkpoint(ck, marker)
    else:
        model, meta = tiny_tuner()
        (ck / where).parent.mkdir(parents=True)
        torch.save({"opt": Payload(marker)}, ck / where)
        save_model(ck, model, meta)
        mark_complete(ck)
    cfg = from_dict(MultiBrainConfig, {
        "fit": {"data": {"root": str(tiny_root), "val_stories": ["bravo"]}, "shards": str(shards),
                "stream": {"batch_size": 2}, "engine": {"kind": "ddp"},
                "ray": {"num_workers": 1, "storage_path": str(tmp_path / "ray"), "run_name": "resumed"},
                "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}},
        "prepare": {"simulate": False}, "eval": {"enabled": False}})
    with pytest.raises(PreflightError, match=r"preflight: 1 problem") as err:
        run(cfg, log=lambda *_: None)
    assert f"fit.ray.run_name 'resumed' would resume from a broken checkpoint: {ck / where}: cannot be loaded " \
        "safely: it holds posix.system" in str(err.value)
    assert not marker.exists() and not (tmp_path / "mlflow.db").exists()


def test_a_tune_folder_is_restored_only_with_this_jobs_record(tmp_path):
    """Tune's restore unpickles ``tuner.pkl``: a folder without this project's record of the same job and experiment
    name is refused (by the job and by its preflight) before Tune reads anything; a created experiment gets it."""
    import json
    import pickle
    from braintune_dist.errors import UserError
    from braintune_dist.experiment.preflight import Restore, restore_problems
    from braintune_dist.experiment.trials import MANIFEST_FILE, restore_or_create, restore_problem
    marker, storage, created = tmp_path / "ran", tmp_path / "tune", []
    exp = storage / "exp"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))         # what Tune's restore would unpickle

    def refused(match: str) -> None:
        with pytest.raises(UserError, match=match) as err:
            restore_or_create(object(), str(storage), "exp", True, "grid", created.append)
        assert restore_problems(Restore("grid.resume", str(storage), "exp")) == [str(err.value)]

    refused(rf"^grid.resume: {exp} holds no {MANIFEST_FILE}, .*unpickles the folder's tuner.pkl, which can run code.*"
            rf"write {{\"job\": \"grid\", \"name\": \"exp\"}} to {exp}/{MANIFEST_FILE}$")
    (exp / MANIFEST_FILE).write_text(json.dumps({"job": "search", "name": "exp"}))
    refused(rf"^grid.resume: {exp} holds an experiment of 'search', not of 'grid' \({MANIFEST_FILE}\): point "
            "grid.name / grid.storage_path at this job's earlier run, or run without grid.resume$")
    (exp / MANIFEST_FILE).write_text(json.dumps({"job": "grid", "name": "other"}))
    refused(rf"^grid.resume: {exp}/{MANIFEST_FILE} names the experiment 'other', not 'exp' \(a copied or renamed")
    (exp / MANIFEST_FILE).write_text("{")
    refused(rf"^grid.resume: {exp}/{MANIFEST_FILE} is unreadable \(JSONDecodeError")
    assert not marker.exists() and created == []
    restore_or_create(object(), str(storage), "fresh", False, "compare", created.append)
    assert created == [str(storage)] and restore_problem("compare.resume", str(storage), "fresh") == ""
    assert json.loads((storage / "fresh" / MANIFEST_FILE).read_text()) == {"job": "compare", "name": "fresh"}
