"""Bad input through the real job drivers (each driver's ``main`` under ``run_main``, what ``python
jobs/<job>.py`` runs): exit status 2 and one ``error:`` message naming the file or field, within seconds,
before any Ray, training or MLflow run starts. Plus the reader's own refusals and warnings behind them."""
from __future__ import annotations

import json
import runpy
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.data.textgrid import read_textgrid, write_textgrid
from braintune_dist.data.validate import check_tiers, lacking, validate
from braintune_dist.experiment.launch import run_main
from braintune_dist.experiment.prepare import PrepareSettings, prepare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "sim"
    simulate(SimConfig(participants=2, stories=3, trs_per_story=36, n_vertices=40, seed=5), str(root))
    return root


@pytest.fixture
def sim_copy(sim_root, tmp_path):
    return Path(shutil.copytree(sim_root, tmp_path / "sim"))


@pytest.fixture(scope="module")
def tiny_shards(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_shards") / "shards"
    write_shards(ShardConfig(window=2.0, rows_per_shard=8), DataConfig(root=str(tiny_root), val_stories=["bravo"]),
                 str(out))
    return out


def refused(job: str, argv: list, capsys, tmp_path) -> str:
    """The driver's stderr after it refused ``argv``: rc 2, an ``error:`` message, no traceback, in seconds."""
    main = runpy.run_path(str(REPO / "jobs" / f"{job}.py"), run_name="driver")["main"]
    t = time.time()
    rc = run_main(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error: ") == 1 and "Traceback" not in err, err[-3000:]
    assert time.time() - t < 30
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()
    return err[err.index("error: "):]            # after Ray's own start-up lines, where the driver joined Ray


def fit_args(root, shards, tmp_path) -> list:
    return ["--fit.data.root", root, "--fit.shards", shards, "--prepare.simulate", "false",
            "--fit.ray.storage_path", tmp_path / "ray", "--fit.tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--eval.enabled", "false", "--fit.engine.kind", "ddp", "--fit.ray.num_workers", "1"]


def test_every_story_in_validation_leaves_no_training_list(ray_local, tiny_root, tmp_path, capsys):
    everything = "[alpha,bravo,charlie,delta]"
    err = refused("multi_brain", fit_args(tiny_root, tmp_path / "shards", tmp_path) +
                  ["--fit.data.val_stories", everything], capsys, tmp_path)
    assert "fit.data.val_stories: ['alpha', 'bravo', 'charlie', 'delta'] and fit.data.test_story " \
           "'wheretheressmoke' take every story" in err and "no training stories left" in err, err
    ds = LebelDataset(tiny_root, DataConfig(val_stories=["alpha", "bravo", "charlie", "delta"]))
    for mode in ("shared", "union"):                   # every reader of the split says the same
        with pytest.raises(DatasetError, match="no training stories: data.val_stories"):
            ds.split(mode)


@pytest.mark.parametrize("field, value, match", [
    ("n_vertices", 21, r"manifest.json: 3 subjects × n_vertices 21, but .*coverage.npy is 3 × 20"),
    ("window_samples", 16000, r"manifest.json: window_samples 16000, but train/part-00000.parquet was written "
                              r"with 32000"),
    ("subjects", ["UTS01", "UTS02", "UTS09"], r"manifest.json: subjects \['UTS01', 'UTS02', 'UTS09'\] must be "
                                              r"non-empty and each in subject_info"),
    ("rows", {"train": 1, "val": 3, "test": 2}, r"manifest.json: rows\['train'\] = 1 is not the sum"),
    ("n_vertices", "20", r"manifest.json: field 'n_vertices' is '20', expected int"),
], ids=["n_vertices", "window_samples", "subjects", "rows", "n_vertices-type"])
def test_an_edited_manifest_is_named(ray_local, tiny_root, tiny_shards, tmp_path, capsys, field, value, match):
    copy = Path(shutil.copytree(tiny_shards, tmp_path / "shards"))
    m = json.loads((copy / "manifest.json").read_text())
    m[field] = value
    (copy / "manifest.json").write_text(json.dumps(m))
    err = refused("multi_brain", fit_args(tiny_root, copy, tmp_path) + ["--fit.data.val_stories", "[bravo]"],
                  capsys, tmp_path)
    assert __import__("re").search(match, err) and "rewrite the shards" in err, err


def test_nothing_to_evaluate(tiny_root, tmp_path, capsys):
    err = refused("evaluate", ["--data.root", tiny_root, "--include_untuned", "false", "--tracking.uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys, tmp_path)
    assert err.strip().splitlines() == [
        "error: command line: nothing to evaluate: checkpoints is empty and include_untuned is false (name "
        "checkpoint folders in checkpoints, or set include_untuned true)"], err


def test_config_against_data_is_one_error_naming_the_fields(ray_local, tiny_root, tiny_shards, tmp_path, capsys):
    """A batch the training rows cannot fill, and a control's permutation block longer than a story: preflight's
    one error, each naming its fields, before any training."""
    err = refused("multi_brain", fit_args(tiny_root, tiny_shards, tmp_path) + [
        "--fit.stream.batch_size", "64", "--fit.optim.grad_accum", "2", "--fit.target.kind", "shuffled",
        "--fit.target.chunk_trs", "6"], capsys, tmp_path)
    assert err.startswith("error: preflight: 2 problem(s) before any training"), err
    assert "fit.stream.batch_size=64 × fit.optim.grad_accum=2 × fit.ray.num_workers=1 exceeds the 25 training " \
           "rows" in err, err
    assert "fit.target.chunk_trs: the 'chunks' control permutes blocks of 6 rows" in err
    assert "training story 'delta' (7 rows)" in err and "validation story 'bravo' (6 rows)" in err


def test_a_permutation_block_longer_than_the_test_story(sim_root, tmp_path, capsys):
    err = refused("analyze", ["--data.root", sim_root, "--out_dir", tmp_path / "analysis", "--compute.runner", "local",
                              "--permutation.block", "1000", "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                  capsys, tmp_path)
    assert err.startswith("error: permutation.block: 1000 TRs per block, but the test story 'wheretheressmoke' has "), err
    assert "respdict.json), fewer than two blocks" in err and not (tmp_path / "analysis").exists()


def test_zero_voxels_are_named_before_any_ceiling(sim_copy, tmp_path, capsys):
    hf5 = sim_copy / "derivative" / "preprocessed_data" / "sim02" / "story01.hf5"
    with h5py.File(hf5, "r+") as f:
        rows = f["data"].shape[0]
        del f["data"]
        f["data"] = np.zeros((rows, 0), np.float32)
    err = refused("prepare_data", ["--data.root", sim_copy, "--shards", tmp_path / "shards", "--stream_check", "false"],
                  capsys, tmp_path)
    assert err.strip() == f"error: {hf5}: 'data' has shape ({rows}, 0): no voxels", err
    assert not (tmp_path / "shards").exists()


def test_a_textgrid_without_the_tier_a_job_reads(sim_copy, tmp_path, capsys):
    path = sim_copy / "derivative" / "TextGrids" / "story02.TextGrid"
    grid = read_textgrid(path)
    grid.tiers = [t for t in grid.tiers if t.name == "phones"]          # the words tier is gone
    write_textgrid(grid, path)
    err = refused("analyze", ["--data.root", sim_copy, "--out_dir", tmp_path / "analysis", "--compute.runner", "local",
                              "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys, tmp_path)
    assert err.startswith(f"error: {path}: no 'words' tier (tiers: ['phones']); analyze's residual.spaces "), err
    assert "probes.targets word" in err and not (tmp_path / "analysis").exists()
    # a job that reads only the phones takes it; one named 'words' never stands in for the phones
    ds = LebelDataset(sim_copy)
    check_tiers(ds, ["story02"], ["phones"], "phone pretraining")
    grid.tiers = [t for t in read_textgrid(sim_copy / "derivative" / "TextGrids" / "story01.TextGrid").tiers
                  if t.name == "words"]
    write_textgrid(grid, path)
    with pytest.raises(DatasetError, match=r"story02.TextGrid: no 'phones' tier \(tiers: \['words'\]\); phone pre"):
        check_tiers(ds, ["story02"], ["phones"], "phone pretraining")


def test_split_summary_agrees_with_the_shards_and_names_who_missed_what(sim_copy, tmp_path):
    (sim_copy / "derivative" / "preprocessed_data" / "sim02" / "story02.hf5").unlink()
    lines = []
    prepare(DataConfig(root=str(sim_copy)), str(tmp_path / "shards"), PrepareSettings(simulate=False), log=lines.append)
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["splits"]["train"] == ["story01", "story02", "story03"]       # union: sim01 heard story02
    summary = next(line for line in lines if line.startswith("[validate]"))
    assert "split: 3 train, 0 val, test 'wheretheressmoke'" in summary, summary
    assert any(line.strip().startswith("sim02:") and "3 stories" in line and "did not hear story02 (masked in training)"
               in line for line in lines), lines
    assert any(line.strip().startswith("sim01:") and "4 stories" in line and "did not hear" not in line for line in lines)
    # the shared split leaves story02 out for everyone, and says so the same way
    ds = LebelDataset(sim_copy)
    assert ds.split("shared")["train"] == ["story01", "story03"]
    assert lacking(ds, ds.split("union")) == {"sim02": ["story02"]}
    assert validate(ds, mode="shared", check_audio=False)["subjects"]["sim02"]["n_stories"] == 3


def test_stereo_in_opposite_phase_warns(sim_copy):
    import soundfile as sf
    path = sim_copy / "stimuli" / "story01.wav"
    mono, sr = sf.read(path, dtype="float32")
    sf.write(path, np.stack([mono, -mono], axis=1), sr)
    with pytest.warns(UserWarning, match=r"story01.wav: its 2 channels cancel when averaged to mono \(the downmix "
                                         r"keeps 0.0% of their RMS"):
        LebelDataset(sim_copy).load_audio("story01")
    sf.write(path, np.stack([mono, 0.5 * mono], axis=1), sr)           # ordinary stereo: no warning
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")
        out = LebelDataset(sim_copy).load_audio("story01")
    assert np.allclose(out, 0.75 * mono, atol=1e-4)


def test_a_float_voxel_map_is_named_by_the_evaluate_preflight(sim_copy, tmp_path, capsys):
    """Cast to int64 it would move unmapped voxels (−0.3) to vertex 0 and into a region, silently."""
    path = sim_copy / "ground_truth" / "sim02" / "voxel_to_vertex.npy"
    m = np.load(path).astype(np.float64)
    m[3] = -0.3
    np.save(path, m)
    err = refused("evaluate", ["--data.root", sim_copy, "--eval.out_dir", tmp_path / "out", "--tracking.uri",
                               f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys, tmp_path)
    assert f"eval.common_space: {path}: the map must hold integer indices (int64, -1 = none), not float64, e.g. " \
           "-0.3 at index 3" in err, err
    assert not (tmp_path / "out").exists()


def test_a_vertex_off_the_template_is_named_before_any_feature(sim_copy, tmp_path, capsys):
    path = sim_copy / "ground_truth" / "common_space.npz"
    with np.load(path) as z:
        arrays = dict(z)
    arrays["vertex_index"][0] = 20484                                   # fsaverage5 has vertices 0 .. 20483
    np.savez(path, **arrays)
    err = refused("analyze", ["--data.root", sim_copy, "--out_dir", tmp_path / "analysis", "--compute.runner", "local",
                              "--permutation.block", "5", "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                  capsys, tmp_path)
    assert err.startswith(f"error: {path}: vertex_index holds ") and \
        err.strip().endswith(" .. 20484, but fsaverage5 has vertices 0 .. 20483"), err
    assert not (tmp_path / "analysis").exists()


def test_a_fractional_tr_count_is_named(sim_copy, tmp_path, capsys):
    path = sim_copy / "derivative" / "respdict.json"
    counts = json.loads(path.read_text())
    path.write_text(json.dumps(dict(counts, story02=counts["story02"] + 0.9)))
    err = refused("prepare_data", ["--data.root", sim_copy, "--shards", tmp_path / "shards", "--stream_check", "false"],
                  capsys, tmp_path)
    assert err.strip() == f"error: {path}: story 'story02' has {counts['story02'] + 0.9} TRs; the count must be a " \
                          "whole number above 0", err
    assert not (tmp_path / "shards").exists()


def test_unsorted_textgrid_intervals_are_named_before_any_feature(sim_copy, tmp_path, capsys):
    """Unsorted word intervals made every probe label vanish 31 s later ("too few labelled samples")."""
    path = sim_copy / "derivative" / "TextGrids" / "story02.TextGrid"
    grid = read_textgrid(path)
    words = grid.tier("words").intervals
    words[3], words[4] = words[4], words[3]
    write_textgrid(grid, path)
    err = refused("analyze", ["--data.root", sim_copy, "--out_dir", tmp_path / "analysis", "--compute.runner", "local",
                              "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys, tmp_path)
    assert err.startswith(f"error: {path}: tier 'words' interval [5] ("), err
    assert "out of time order (interval [4] starts later, at " in err and not (tmp_path / "analysis").exists()


def test_a_boolean_tr_count_is_named(sim_copy, tmp_path, capsys):
    """JSON true is an int to Python (bool subclasses int): it must not pass as 1 TR."""
    path = sim_copy / "derivative" / "respdict.json"
    path.write_text(json.dumps(dict(json.loads(path.read_text()), story02=True)))
    err = refused("prepare_data", ["--data.root", sim_copy, "--shards", tmp_path / "shards", "--stream_check", "false"],
                  capsys, tmp_path)
    assert err.strip() == f"error: {path}: story 'story02': true is not a TR count (an integer)", err


@pytest.mark.parametrize("file, target", [
    ("derivative/preprocessed_data/sim02/story01.hf5", "loop"), ("stimuli/story02.wav", "loop"),
    ("stimuli/story02.wav", "gone.wav")], ids=["hf5-loop", "wav-loop", "wav-dangling"])
def test_a_broken_symlink_is_named_as_one(sim_copy, tmp_path, capsys, file, target):
    """A link that loops or leads nowhere lists like a file but opens like a missing one: it is named as the
    broken link it is, not as missing audio or a story the subject did not hear."""
    path = sim_copy / file
    path.unlink()
    path.symlink_to(path.name if target == "loop" else target)       # a loop: the link points at itself
    err = refused("prepare_data", ["--data.root", sim_copy, "--shards", tmp_path / "shards", "--stream_check", "false"],
                  capsys, tmp_path)
    what = "the subject's response file" if file.endswith(".hf5") else "the story's audio file"
    expected = (f"a symlink loop (it points to {path.name}, which leads back to it)" if target == "loop" else
                f"a broken symlink (its target {target} does not exist)")
    assert err.strip() == f"error: {path}: {expected}: point it at {what}", err
    assert not (tmp_path / "shards").exists()


def test_a_hugging_face_folder_named_as_a_checkpoint(tiny_root, tmp_path, capsys):
    """config.json and weights, but none of a checkpoint's files: not "an interrupted write"."""
    from braintune_dist.model.backbone import build_backbone
    from braintune_dist.model.config import ModelConfig
    folder = tmp_path / "hf-model"
    build_backbone(ModelConfig(seed=3)).model.save_pretrained(folder)
    err = refused("evaluate", ["--data.root", tiny_root, "--checkpoints", f"[{folder}]", "--eval.out_dir",
                               tmp_path / "out", "--tracking.uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                  capsys, tmp_path)
    assert f"checkpoints[0]: {folder} is a Hugging Face model folder, not a brain-tuning checkpoint (it has " \
           "config.json and weights but no model.json or COMPLETE): set model.pretrained to it" in err, err
    assert "interrupted" not in err


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A real MLflow sqlite store, one run in it."""
    from braintune_dist.tracking import Tracker, TrackingConfig
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    with Tracker(TrackingConfig(uri=f"sqlite:///{db}", experiment="made")).start("made"):
        pass
    return db


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_a_read_only_mlflow_store_is_refused_before_any_work(mlflow_store, tiny_root, tmp_path, capsys, locked):
    """Else MLflow prints SQLAlchemy tracebacks, records nothing and leaves the run RUNNING, and the job ends on a
    line that reads as if it had logged. The file alone, or its folder (SQLite writes its journal there)."""
    from readonly import read_only
    with read_only(mlflow_store if locked == "file" else mlflow_store.parent):
        err = refused("evaluate", ["--data.root", tiny_root, "--eval.out_dir", tmp_path / "out", "--tracking.uri",
                                   f"sqlite:///{mlflow_store}"], capsys, tmp_path)
    assert f"tracking.uri: the MLflow store {mlflow_store} cannot be written" in err, err
    assert "or tracking.enabled false to run without MLflow" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["a folder", "under /proc"])
def test_an_mlflow_store_that_cannot_be_a_database_is_named(where, tiny_root, tmp_path, capsys, monkeypatch):
    """Two stores no one can write, root included; the second comes from MLFLOW_TRACKING_URI, as the message says."""
    args = ["--data.root", tiny_root, "--eval.out_dir", tmp_path / "out"]
    if where == "a folder":
        (tmp_path / "store").mkdir()
        args += ["--tracking.uri", f"sqlite:///{tmp_path / 'store'}"]
        expected = f"tracking.uri: {tmp_path / 'store'} is a folder, not an MLflow sqlite database file"
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/braintune/mlflow.db")
        expected = ("MLFLOW_TRACKING_URI (with tracking.uri unset): the MLflow store /proc/braintune/mlflow.db cannot "
                    "be written: /proc refuses writing")
    err = refused("evaluate", args, capsys, tmp_path)
    assert expected in err, err


def test_a_read_only_feature_cache_serves_a_rerun_that_needs_nothing_written(tiny_root, tmp_path, capsys):
    """Every unit cached: read-only is fine. One unit missing: one error naming the cache, before any model runs."""
    from readonly import read_only
    main = runpy.run_path(str(REPO / "jobs" / "evaluate.py"), run_name="driver")["main"]
    cache = tmp_path / "cache"
    features = dict(window=1.0, stride=2.0, pool="stride", device="cpu", cache_dir=cache)    # 72 windows in all
    args = [str(a) for a in ["--data.root", tiny_root, "--eval.train_stories", "[alpha]", "--eval.efficiency_stories",
                             "[1]", "--eval.compute.runner", "local", "--eval.out_dir", tmp_path / "out",
                             "--tracking.enabled", "false", *(x for k, v in features.items()
                                                               for x in (f"--eval.features.{k}", v))]]
    assert run_main(main, args) == 0, capsys.readouterr().err[-3000:]
    capsys.readouterr()
    with read_only(cache):
        assert run_main(main, args) == 0, capsys.readouterr().err[-3000:]
    assert "[features] all 2 (model, story) units cached" in capsys.readouterr().out
    gone = next(cache.glob("*/alpha.*"))
    shutil.rmtree(gone)
    with read_only(cache):
        err = refused("evaluate", args, capsys, tmp_path)
    assert err.strip() == (
        f"error: eval.features.cache_dir: {cache} cannot be written ({gone.parent} refuses writing), but 1 (model, "
        "story) unit(s) are not cached there yet, e.g. model 'untuned' on story 'alpha': make it writable, or set "
        "eval.features.cache_dir to a writable folder (a read-only cache works once it holds every unit)"), err
