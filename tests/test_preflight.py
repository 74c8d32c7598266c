"""Preflight: bad input (names, shards, checkpoints, model, search space, resources) is refused with one error
naming every problem, by the job drivers themselves, in seconds and before any Ray Train start."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
import warnings

import pytest

from braintune_dist.model.config import ModelConfig
from braintune_dist.config import ConfigError, from_dict, to_dict
from braintune_dist.data.lebel import DataConfig, DatasetError
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.jobs.evaluate import EvaluateConfig, run as evaluate
from braintune_dist.jobs.multi_brain import MultiBrainConfig, run as multi_brain
from braintune_dist.jobs.scaling import ScalingJobConfig, run as scaling
from braintune_dist.experiment.checks import model_problems
from braintune_dist.experiment.preflight import PreflightError, preflight
from braintune_dist.jobs.sweep import SweepConfig, run as sweep
from braintune_dist.train.checkpoint import mark_complete, save_model
from braintune_dist.train.config import FitConfig
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.model.config import HeadSettings, LoraSettings

QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def shards(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "shards"
    write_shards(ShardConfig(window=2.0, rows_per_shard=8), DataConfig(root=str(tiny_root), val_stories=["bravo"]), str(out))
    return out


FIT_STAGES = {f.name for f in dataclasses.fields(FitConfig)}


def job(tiny_root, shards, tmp_path, cls=MultiBrainConfig, **over) -> MultiBrainConfig:
    """A job on the tiny dataset whose shards exist; Ray Train would write under tmp_path/ray."""
    fit = {"data": {"root": str(tiny_root), "val_stories": ["bravo"]}, "shards": str(shards),
           "stream": {"batch_size": 2}, "engine": {"kind": "ddp"},
           "ray": {"num_workers": 1, "storage_path": str(tmp_path / "ray"), "run_name": "pre"},
           "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    base = {"fit": fit, "prepare": {"simulate": False}, **({"eval": {"enabled": False}} if cls is MultiBrainConfig else {})}
    for k, v in over.items():                 # stage names of the fit go into fit, the rest at the top
        into = fit if k in fit or k in FIT_STAGES else base
        into[k] = {**into.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(cls, base)


def refused(fn, cfg, match: str, tmp_path) -> str:
    """``fn(cfg)`` raises PreflightError matching ``match`` within seconds, with nothing trained or tracked."""
    t = time.time()
    with pytest.raises(PreflightError, match=match) as err:
        fn(cfg, **QUIET)
    assert time.time() - t < 10
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlflow.db").exists()
    return str(err.value)


def test_a_good_config_passes(tiny_root, shards, tmp_path):
    lines = []
    preflight(job(tiny_root, shards, tmp_path).checks(), log=lines.append)
    assert lines and "[preflight]" in lines[0] and " ok " in lines[0]


def test_unknown_participants_and_stories_are_one_error(tiny_root, shards, tmp_path):
    cfg = job(tiny_root, shards, tmp_path, stream={"participants": ["UTS01", "UTS09"]},
              data={"val_stories": ["nosuchstory"]}, eval={"enabled": True, "participants": ["UTS77"]})
    msg = refused(multi_brain, cfg, r"preflight: \d problem", tmp_path)
    assert "fit.stream.participants: ['UTS09'] not in" in msg and "preprocessed_data" in msg
    assert "fit.data.val_stories: ['nosuchstory'] has no <story>.hf5" in msg
    assert "eval.participants: ['UTS77']" in msg
    # shards written with another validation story than the config now names
    cfg = job(tiny_root, shards, tmp_path, data={"val_stories": ["charlie"]})
    refused(multi_brain, cfg, r"fit.data.val_stories: \['charlie'\], but the shards in .* were written with val "
                              r"stories \['bravo'\]", tmp_path)


@pytest.mark.parametrize("damage, match", [
    ("garble", r"shard .*part-00000.parquet: sha256 mismatch"),
    ("truncate", r"shard .*part-00000.parquet: \d+ bytes, manifest says \d+ \(truncated\?\)"),
    ("delete", r"shard .*part-00000.parquet listed in manifest.json is missing"),
])
def test_damaged_shards_are_named(tiny_root, shards, tmp_path, damage, match):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    part = copy / "train" / "part-00000.parquet"
    data = part.read_bytes()
    if damage == "garble":                               # same size: only the checksum can tell
        part.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    elif damage == "truncate":
        part.write_bytes(data[:len(data) // 2])
    else:
        part.unlink()
    refused(multi_brain, job(tiny_root, copy, tmp_path), match, tmp_path)


def test_shards_of_other_data_are_refused(tiny_root, shards, tmp_path):
    """Same story and participant names, other content: the shards' input fingerprints tell them apart, in
    preflight and where prepare would reuse them; a moved copy of the same data still matches."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_root, moved)
    preflight(job(moved, shards, tmp_path).checks(), **QUIET)                     # same files elsewhere: accepted
    other = tmp_path / "other"
    shutil.copytree(tiny_root, other)
    hf5 = other / "derivative" / "preprocessed_data" / "UTS02" / "bravo.hf5"
    import h5py
    with h5py.File(hf5, "r+") as f:
        f["data"][0, 0] = f["data"][0, 0] + 1.0
    msg = refused(multi_brain, job(other, shards, tmp_path), r"fit.shards: .* was written from other data than",
                  tmp_path)
    assert "responses/UTS02/bravo differ" in msg
    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.experiment.prepare import ensure_shards
    with pytest.raises(DatasetError, match="responses/UTS02/bravo differ"):
        ensure_shards(LebelDataset(other, DataConfig(root=str(other), val_stories=["bravo"])), str(shards), ShardConfig(),
                      **QUIET)


def test_unwritable_outputs_are_refused_before_training(tiny_root, shards, tmp_path):
    """An output folder under a regular file: refused by preflight, naming the field, not after training."""
    (tmp_path / "afile").write_text("x")
    cfg = job(tiny_root, shards, tmp_path, eval={"enabled": True, "out_dir": str(tmp_path / "afile" / "reports")},
              ray={"storage_path": str(tmp_path / "afile" / "ray")})
    msg = refused(multi_brain, cfg, r"preflight: \d problem", tmp_path)
    assert "eval.out_dir: " in msg and "fit.ray.storage_path: " in msg and "afile is a file" in msg, msg


def test_model_family_and_pretrained_path(tiny_root, shards, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"fit.model.family: expected one of \['wav2vec2'"):
        job(tiny_root, shards, tmp_path, model={"family": "wav2vec3"})
    assert model_problems(ModelConfig(family="wav2vec3")) == [           # built in code, not parsed
        "model.family: 'wav2vec3' is not one of ['wav2vec2', 'hubert', 'whisper']"]
    refused(multi_brain, job(tiny_root, shards, tmp_path, model={"pretrained": str(tmp_path / "nowhere")}),
            r"fit.model.pretrained: .*nowhere is not a Hugging Face checkpoint folder", tmp_path)
    from transformers import HubertConfig, HubertModel
    HubertModel(HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             conv_dim=(8,) * 7, num_conv_pos_embeddings=4,
                             num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path / "hub")
    assert "is a 'hubert' checkpoint but model.family is 'wav2vec2'" in \
        model_problems(ModelConfig(family="wav2vec2", pretrained=str(tmp_path / "hub")))[0]
    assert model_problems(ModelConfig(family="hubert", pretrained=str(tmp_path / "hub"))) == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not in the Hugging Face cache" in model_problems(ModelConfig(pretrained="nobody/no-such-model"))[0]


def test_evaluation_of_a_mismatched_model_layer_or_output_refused_first(tiny_root, tmp_path):
    """A checkpoint tuned from another backbone family, a hidden state the model does not have, an output folder
    where nothing can be created: each one preflight line naming its field, before any Ray or MLflow work."""
    model = BrainTuner(ModelConfig(), LoraSettings(), HeadSettings(), n_vertices=20)     # a wav2vec2 checkpoint
    save_model(tmp_path / "ck", model, dict(epoch=0, config={"model": to_dict(ModelConfig())}))
    mark_complete(tmp_path / "ck")
    cfg = from_dict(EvaluateConfig, {
        "data": {"root": str(tiny_root)}, "model": {"family": "hubert"}, "checkpoints": [str(tmp_path / "ck")],
        "eval": {"features": {"layers": [1, 99]}, "out_dir": "/proc/bt-reports"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    msg = refused(evaluate, cfg, r"preflight: 2 problem", tmp_path)
    assert f"checkpoints[0]: {tmp_path / 'ck'} was tuned from a wav2vec2 backbone, but model.family is 'hubert'" in msg
    assert "eval.out_dir: /proc/bt-reports is not writable (/proc refuses writing)" in msg
    cfg = from_dict(EvaluateConfig, {"data": {"root": str(tiny_root)}, "eval": {"features": {"layers": [1, 99]}},
                                     "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    msg = refused(evaluate, cfg, r"preflight: 1 problem", tmp_path)
    assert "eval.features.layers: [99] out of range for a model with 3 hidden states (0..2)" in msg


def test_incomplete_checkpoints_refused_before_evaluation(tiny_root, tmp_path):
    model = BrainTuner(ModelConfig(), LoraSettings(), HeadSettings(), n_vertices=20)
    good, unmarked, cut = (tmp_path / n for n in ("good", "unmarked", "cut"))
    for d in (good, unmarked, cut):
        save_model(d, model, dict(epoch=0, config={"model": to_dict(ModelConfig())}))
    mark_complete(good)
    mark_complete(cut)
    (cut / "model.safetensors").write_bytes((cut / "model.safetensors").read_bytes()[:1000])     # an interrupted copy
    cfg = from_dict(EvaluateConfig, {"data": {"root": str(tiny_root)}, "checkpoints": [str(good), str(unmarked), str(cut)],
                                     "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    msg = refused(evaluate, cfg, r"preflight: 2 problem", tmp_path)
    assert f"checkpoints[1]: incomplete checkpoint {unmarked}: missing COMPLETE" in msg
    assert f"checkpoints[2]: incomplete checkpoint {cut}: model.safetensors is 1000 bytes, COMPLETE says" in msg
    assert "checkpoints[0]" not in msg
    # the job driver: the same message as one "error:" line and exit status 2, no traceback
    proc = subprocess.run([sys.executable, "jobs/evaluate.py", "--data.root", str(tiny_root), "--checkpoints",
                           f"[{unmarked}]", "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: preflight: 1 problem") and "Traceback" not in proc.stderr, proc.stderr
    assert f"incomplete checkpoint {unmarked}: missing COMPLETE" in proc.stderr


def test_sweep_search_space_checked_before_any_trial(tiny_root, shards, tmp_path):
    cfg = job(tiny_root, shards, tmp_path, cls=SweepConfig, search={
        "space": {"n_participants": [2, 5]}, "storage_path": str(tmp_path / "tune")})
    msg = refused(sweep, cfg, r"preflight: 1 problem", tmp_path)        # the data has 3 participants
    assert "search.space.n_participants: [5] outside 1..3" in msg and not (tmp_path / "tune").exists()
    cfg = job(tiny_root, shards, tmp_path, cls=SweepConfig, search={"resume": True, "storage_path": str(tmp_path / "tune")})
    refused(sweep, cfg, r"search.resume: nothing to restore at .*tune/sweep", tmp_path)


@pytest.mark.slow
def test_cluster_too_small(ray_local, tiny_root, shards, tmp_path):
    """On the 2-CPU test cluster: 2 workers × 1 CPU leave Ray Data nothing (fit() would wait forever), and GPUs
    are absent; 'warn' (autoscaling clusters) lets the job go on."""
    cfg = job(tiny_root, shards, tmp_path, ray={"num_workers": 2, "cpus_per_worker": 1.0, "use_gpu": True})
    msg = refused(multi_brain, cfg, r"preflight: 2 problem", tmp_path)
    assert "need 2 GPUs; the cluster has 0" in msg and "= 2 CPUs, plus 1 for Ray Data's readers" in msg
    cfg = job(tiny_root, shards, tmp_path, ray={"num_workers": 2, "cpus_per_worker": 1.0},
              preflight={"resources": "warn"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        preflight(cfg.checks(), **QUIET)
    assert any("preflight.resources=warn" in str(w.message) for w in caught)
    # one fit fits, three at once do not: the grid's concurrency is counted, with each point's own CPU share
    cfg = job(tiny_root, shards, tmp_path, cls=ScalingJobConfig, ray={"num_workers": 1, "cpus_per_worker": 0.25},
              grid={"max_concurrent": 3, "point_cpus": 0.25, "storage_path": str(tmp_path / "tune")})
    msg = refused(scaling, cfg, r"preflight: 1 problem", tmp_path)
    assert "3 × (1 workers × fit.ray.cpus_per_worker 0.25 + 0.25 per trial) = 1.5 CPUs" in msg
    assert msg.endswith("3 fits at once: lower grid.max_concurrent")


def test_batch_larger_than_the_training_rows_names_the_three_fields(tiny_root, shards, tmp_path):
    """Config against data: 64 × 2 × 1 windows per optimizer step, 25 training rows (alpha, charlie, delta)."""
    from braintune_dist.errors import UserError
    from braintune_dist.train.trainer import plan
    cfg = job(tiny_root, shards, tmp_path, stream={"batch_size": 64}, optim={"grad_accum": 2})
    with pytest.raises(UserError) as err:
        plan(cfg.fit)
    assert isinstance(err.value, ConfigError)
    assert ("fit.stream.batch_size=64 × fit.optim.grad_accum=2 × fit.ray.num_workers=1 exceeds the 25 training rows "
            f"of {shards}") in str(err.value)
    msg = refused(multi_brain, cfg, r"preflight: 1 problem", tmp_path)   # preflight names it, fields first
    assert "\n  - fit.stream.batch_size=64 × fit.optim.grad_accum=2" in msg
    with pytest.raises(ConfigError, match=r"^config: fit.train.max_steps_per_epoch: 1 micro-batches .* fit.optim.grad_accum 2"):
        job(tiny_root, shards, tmp_path, train={"max_steps_per_epoch": 1}, optim={"grad_accum": 2})


SHORT = "training story 'delta' (7 rows), validation story 'bravo' (6 rows)"   # of 4-row blocks


@pytest.mark.parametrize("written", [True, False])
def test_chunk_permutation_longer_than_a_story_is_named(tiny_root, shards, tmp_path, written):
    """The 'chunks' control needs two blocks of chunk_trs rows in every training and validation story it
    permutes: counted from the shards, or before they are written from the dataset."""
    from braintune_dist.experiment.checks import target_problems
    where = shards if written else tmp_path / "not-yet"
    cfg = job(tiny_root, where, tmp_path, target={"kind": "shuffled", "chunk_trs": 4})
    problems = target_problems(cfg, ["shuffled"])
    assert len(problems) == 1 and problems[0].startswith("fit.target.chunk_trs: ") and SHORT in problems[0]
    assert ("manifest.json" if written else "preprocessed_data") in problems[0]
    assert "set fit.target.chunk_trs to at most 3" in problems[0]
    msg = refused(multi_brain, cfg, r"preflight: \d problem", tmp_path)     # through the job, before any work
    assert "fit.target.chunk_trs: " in msg and "'delta' (7 rows)" in msg
    # a block longer than the shortest story is the same problem
    assert "story 'alpha' (10 rows)" in target_problems(job(tiny_root, where, tmp_path, target={
        "kind": "shuffled", "chunk_trs": 11}), ["shuffled"])[0]
    assert target_problems(job(tiny_root, where, tmp_path, target={"kind": "shuffled", "chunk_trs": 3}), ["shuffled"]) == []
    assert target_problems(cfg, ["brain"]) == []                       # no permutation, no check


def test_story_permutation_needs_two_training_stories(tiny_root, tmp_path):
    from braintune_dist.experiment.checks import target_problems
    cfg = job(tiny_root, tmp_path / "not-yet", tmp_path, target={"kind": "shuffled", "shuffle": "story"},
              data={"train_stories": ["alpha"]})
    problems = target_problems(cfg, ["shuffled"])
    assert len(problems) == 1 and "fit.target.shuffle 'story' pairs each training story" in problems[0]
    assert "['alpha']" in problems[0]


def test_windows_longer_than_an_imported_whisper_takes(tiny_root, shards, tmp_path):
    """The model is imported after preflight: its windows are checked against Whisper's 30 s all the same."""
    cfg = job(tiny_root, shards, tmp_path, model={"family": "whisper"}, import_model={"enabled": True},
              prepare={"shard": {"window": 40.0}})
    with pytest.raises(PreflightError) as err:
        preflight(cfg.checks(), **QUIET)
    assert "prepare.shard.window: 40 s is longer than the Whisper model's maximum input of 30 s" in str(err.value)


def test_aliasing_note_for_sparse_last_frame_features():
    from braintune_dist.features.config import FeatureConfig
    from braintune_dist.experiment.checks import aliasing_note
    assert "eval.features.pool stride" in aliasing_note(FeatureConfig(stride=2.0), 2.0)
    assert aliasing_note(FeatureConfig(stride=2.0, pool="stride"), 2.0) == ""
    assert aliasing_note(FeatureConfig(stride=0.1), 2.0) == ""
