"""Shards on object storage: a real S3-compatible server (moto) on loopback holds a copy of a shard set; the
manifest checks, the checksum verification, the Ray Data stream and preflight read it through pyarrow's S3
filesystem exactly as they read the local folder."""
from __future__ import annotations

import signal

import numpy as np
import pytest

from braintune_dist.data.lebel import DataConfig, DatasetError
from braintune_dist.data.manifest import load_manifest, verify_shards
from braintune_dist.data.shards import ShardConfig, write_shards
from braintune_dist.data.stream import StreamConfig, make_dataset, summarize

from servers import S3Server, own_processes, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tiny_root, tmp_path_factory):
    """(local shard folder, the same set at s3://shards/tiny, the server)."""
    import pyarrow.fs as pafs
    local = tmp_path_factory.mktemp("s3src") / "shards"
    write_shards(ShardConfig(window=2.0, rows_per_shard=8), DataConfig(root=str(tiny_root), val_stories=["bravo"]),
                 str(local))
    server = S3Server().start()
    fs = server.filesystem()
    fs.create_dir("shards")
    pafs.copy_files(str(local), "shards/tiny", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    yield local, server.uri("shards/tiny"), server
    server.kill()


def rows(ds) -> dict[tuple, np.ndarray]:
    out = {}
    for b in ds.iter_batches(batch_size=64, batch_format="numpy"):
        for i in range(len(b["row"])):
            out[(int(b["story"][i]), int(b["row"][i]))] = (b["audio"][i], b["responses"][i])
    return out


def test_manifest_checks_and_stream_read_s3_like_the_local_folder(ray_local, s3):
    local, uri, _ = s3
    m = load_manifest(uri)
    assert m == load_manifest(local)
    verify_shards(uri, m["shards"] + list(m["audio_files"].values()), "checksum")
    assert summarize(uri, "train") == summarize(local, "train")
    cfg = StreamConfig(shuffle="none")
    there, here = rows(make_dataset(uri, "train", cfg)), rows(make_dataset(local, "train", cfg))
    assert sorted(there) == sorted(here) and len(here) == summarize(local, "train")["rows"]
    for key in here:
        np.testing.assert_array_equal(there[key][0], here[key][0])          # windows cut from the story audio
        np.testing.assert_array_equal(there[key][1], here[key][1])


def test_damage_on_s3_is_named_by_preflight(s3, tiny_root, tmp_path):
    """Same-size garbage in one shard object, then a story audio object gone: preflight names the s3 file."""
    from braintune_dist.config import from_dict
    from braintune_dist.jobs.multi_brain import MultiBrainConfig
    from braintune_dist.experiment.preflight import PreflightError, preflight
    import pyarrow.fs as pafs
    local, _, server = s3
    fs = server.filesystem()
    pafs.copy_files(str(local), "shards/damaged", source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    uri = server.uri("shards/damaged")
    cfg = from_dict(MultiBrainConfig, {
        "fit": {"data": {"root": str(tiny_root), "val_stories": ["bravo"]}, "shards": uri, "engine": {"kind": "ddp"},
                "stream": {"batch_size": 2}, "ray": {"num_workers": 1, "storage_path": str(tmp_path / "ray")}},
        "prepare": {"simulate": False}, "eval": {"enabled": False}})
    preflight(cfg.checks(), log=lambda *_: None)                                   # whole: passes
    part = "shards/damaged/train/part-00000.parquet"
    with fs.open_input_stream(part) as f:
        data = f.read()
    with fs.open_output_stream(part) as f:
        f.write(data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    with pytest.raises(PreflightError, match=r"s3://shards/damaged/train/part-00000.parquet: sha256 mismatch"):
        preflight(cfg.checks(), log=lambda *_: None)
    fs.delete_file("shards/damaged/audio/alpha.npy")
    with pytest.raises(DatasetError, match=r"s3://shards/damaged/audio/alpha.npy listed in manifest.json is missing"):
        verify_shards(uri, [load_manifest(uri)["audio_files"]["alpha"]])
    # object storage is read, not written: a missing set there is one clear error, not a local folder named 's3:'
    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.experiment.prepare import ensure_shards
    with pytest.raises(DatasetError, match=r"no complete shard set at s3://shards/none"):
        ensure_shards(LebelDataset(cfg.fit.data.root, cfg.fit.data), server.uri("shards/none"), ShardConfig(),
                      log=lambda *_: None)


def test_ray_train_fits_from_shards_on_s3(ray_local, s3, tiny_root, tmp_path):
    """A Ray Train fit whose shards are only on S3: the plan, the head's feature statistics, the workers' stream
    (pickled S3 filesystem, story audio read by Ray tasks) all read the bucket. The fit is also the one of a single
    participant with its own head, on the spatial-correlation loss."""
    import numpy as np

    from braintune_dist.config import from_dict
    from braintune_dist.train.checkpoint import read_model_file
    from braintune_dist.train.config import FitConfig
    from braintune_dist.train.trainer import build_trainer
    from braintune_dist.train.plan import plan
    _, uri, _ = s3
    cfg = from_dict(FitConfig, {
        "data": {"root": str(tiny_root), "val_stories": ["bravo"]}, "shards": uri,
        "stream": {"batch_size": 2, "participants": ["UTS02"]},
        "head": {"kind": "per_participant", "standardize": True, "standardize_windows": 8}, "engine": {"kind": "ddp"},
        "train": {"epochs": 1, "loss": "spatial_corr", "patience": 0, "max_steps_per_epoch": 2},
        "ray": {"num_workers": 1, "cpus_per_worker": 0.5, "storage_path": str(tmp_path / "ray"), "run_name": "s3"},
        "tracking": {"enabled": False}})
    assert plan(cfg).participants == ("UTS02",)
    handler = signal.getsignal(signal.SIGINT)
    result = build_trainer(cfg).fit()
    assert result.error is None and result.metrics["epoch"] == 0 and result.metrics["samples"] > 0
    # the fit's Ctrl-C handler (it holds the Train controller) is gone, and with it the controller and the
    # actors of its data pipeline (one worker: the dataset manager; no split, so no coordinators): a driver's next
    # fit finds the cluster free
    assert signal.getsignal(signal.SIGINT) is handler
    pipeline = ("ray::TrainController", "ray::DatasetManager", "ray::SplitCoordinator")
    wait_for(lambda: not any(own_processes(title) for title in pipeline), timeout=20)
    assert not any(own_processes(title) for title in pipeline)
    payload = read_model_file(result.checkpoint.path)
    assert payload["participants"] == ["UTS02"] and payload["head"]["head_weight"].shape[0] == 1
    assert np.isfinite(result.metrics["val_loss"])
