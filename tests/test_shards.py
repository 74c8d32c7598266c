"""Shard writer: schema, manifest, window alignment, atomic writes, re-runs and bad input."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from braintune_dist.data import shards as shards_mod
from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset
from braintune_dist.data.shards import MANIFEST, ShardConfig, main, write_shards
from braintune_dist.data.manifest import load_manifest, verify_shards
from braintune_dist.data.stream import summarize, windows
from braintune_dist.experiment.prepare import ensure_shards
from braintune_dist.data.voxels import CommonSpace

from conftest import SR, TINY_MISSING, TINY_SHORT_AUDIO, TINY_STORIES, TINY_PARTICIPANTS, N_VERTICES, make_tiny_dataset


def _write(root, out, **kw):
    """write_shards of ``root`` (bravo = validation story) into ``out`` with 4 rows per shard unless given."""
    data = DataConfig(root=str(root), val_stories=["bravo"])
    return write_shards(ShardConfig(**{"rows_per_shard": 4, **kw}), data, str(out))


def _read_all(out) -> pa.Table:
    m = json.loads((out / "manifest.json").read_text())
    return pa.concat_tables([pq.read_table(out / sh["file"]) for sh in m["shards"]])


def _windows(out, t: pa.Table) -> np.ndarray:
    """(n_rows, window_samples) windows of shard rows ``t`` as the reader cuts them, either audio store."""
    m = load_manifest(out)
    store = {s: np.load(out / f["file"]) for s, f in m["audio_files"].items()} if m["audio_store"] == "story" else None
    return windows(t, m["window_samples"], store)


@pytest.fixture(scope="module")
def written(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "out"
    _write(tiny_root, out, spaces=["common", "voxel"])
    return out


# --------------------------------------------------------------------------- schema + manifest
def test_schema_and_manifest(written, tiny_root):
    m = json.loads((written / "manifest.json").read_text())
    subs = list(TINY_PARTICIPANTS)
    assert m["schema_version"] == shards_mod.SCHEMA_VERSION and m["subjects"] == subs
    assert m["splits"] == {"train": ["alpha", "charlie", "delta"], "val": ["bravo"], "test": ["wheretheressmoke"]}
    assert (m["sample_rate"], m["window_samples"], m["n_vertices"]) == (SR, 10 * SR, N_VERTICES)
    assert m["dataset_root"] == str(tiny_root.resolve()) and m["config"]["rows_per_shard"] == 4
    # union split: charlie lacks UTS02, delta lacks UTS03; rows = n_trs - 20 (test story: minus 40 more)
    assert m["stories"]["charlie"]["participants"] == ["UTS01", "UTS03"]
    assert m["stories"]["delta"]["participants"] == ["UTS01", "UTS02"]
    assert {s: i["n_rows"] for s, i in m["stories"].items()} == {
        s: n - 20 - (40 if s == "wheretheressmoke" else 0) for s, n in TINY_STORIES.items()}
    assert m["rows"] == {"train": 10 + 8 + 7, "val": 6, "test": 2}
    space = CommonSpace.load(tiny_root / "ground_truth", subs)
    for s in subs:
        assert m["subject_info"][s]["n_voxels"] == TINY_PARTICIPANTS[s]
        assert m["subject_info"][s]["coverage"] == int(space.coverage(s).sum())
    cov = np.load(written / "coverage.npy")
    assert cov.shape == (3, N_VERTICES) and (cov == np.stack([space.coverage(s) for s in subs])).all()
    assert m["coverage"]["sha256"] == hashlib.sha256((written / "coverage.npy").read_bytes()).hexdigest()
    # every shard: ≤ rows_per_shard rows, one split, size and checksum as recorded, stories as recorded
    for split, n in m["rows"].items():
        assert sum(sh["rows"] for sh in m["shards"] if sh["split"] == split) == n
    for sh in m["shards"]:
        path = written / sh["file"]
        assert sh["file"].startswith(sh["split"] + "/") and 1 <= sh["rows"] <= 4
        assert path.stat().st_size == sh["bytes"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sh["sha256"]
        t = pq.read_table(path, columns=["story", "split"])
        assert t.num_rows == sh["rows"] and set(t["split"].to_pylist()) == {sh["split"]}
        assert list(dict.fromkeys(t["story"].to_pylist())) == sh["stories"]
    assert not list(written.rglob("*.tmp"))

    # the story audio store: each story once (float32: the tiny dataset's audio is float, not 16-bit PCM)
    assert (m["audio_store"], m["audio_dtype"]) == ("story", "float32") and sorted(m["audio_files"]) == sorted(TINY_STORIES)
    for story, f in m["audio_files"].items():
        assert f["file"] == f"audio/{story}.npy" and (written / f["file"]).stat().st_size == f["bytes"]
        assert hashlib.sha256((written / f["file"]).read_bytes()).hexdigest() == f["sha256"]
        np.testing.assert_array_equal(np.load(written / f["file"]), LebelDataset(tiny_root).load_audio(story))
    schema = pq.read_schema(written / m["shards"][0]["file"])
    assert "audio" not in schema.names and schema.field("end_sample").type == pa.int64()
    assert schema.field("present").type == pa.list_(pa.bool_(), 3)
    assert schema.field("row").type == pa.int32() and schema.field("tr").type == pa.int32()
    for s in subs:
        assert schema.field(f"common_{s}").type == pa.list_(pa.float32())
        assert schema.field(f"voxel_{s}").type == pa.list_(pa.float32())
    assert m["columns"] == {f.name: str(f.type) for f in schema}
    meta = json.loads(schema.metadata[b"braintune.shards"])
    assert meta["subjects"] == subs and meta["window_samples"] == 10 * SR


def test_responses_are_every_listener_in_both_spaces(written, tiny_root):
    t = _read_all(written)
    ds = LebelDataset(tiny_root, DataConfig(root=str(tiny_root), val_stories=["bravo"]))
    space = CommonSpace.load(tiny_root / "ground_truth", list(TINY_PARTICIPANTS))
    stories, rows = t["story"].to_pylist(), t["row"].to_numpy()
    present = np.array(t["present"].to_pylist())                         # (n_rows, n_subjects)
    for j, sub in enumerate(TINY_PARTICIPANTS):
        common, voxel = t[f"common_{sub}"].to_pylist(), t[f"voxel_{sub}"].to_pylist()
        for i, (story, r) in enumerate(zip(stories, rows)):
            heard = (sub, story) not in TINY_MISSING
            assert present[i, j] == heard
            if not heard:
                assert common[i] is None and voxel[i] is None
                continue
            Y = ds.load_responses(sub, story)
            np.testing.assert_array_equal(voxel[i], Y[r])
            np.testing.assert_allclose(common[i], space.to_common(sub, Y)[r], rtol=1e-6)


# --------------------------------------------------------------------------- window alignment
def _expected_window(story: str, row: int, window: float, lag: float) -> np.ndarray:
    """Independent of the writer: response row r ↔ TR index r + 10 (test story + 50); TR k ends at
    (k + 1)·2 − 10 s after audio onset; audio sample i holds i + 1 (0 = zero padding)."""
    k = row + (50 if story == "wheretheressmoke" else 10)
    end = int(round(((k + 1) * 2.0 - 10.0 - lag) * SR))
    n_audio = int(((TINY_STORIES[story] - 5) * 2.0 - 10.0 - TINY_SHORT_AUDIO.get(story, 0.0)) * SR)
    idx = np.arange(end - int(window * SR), end)
    return np.where((idx >= 0) & (idx < n_audio), idx + 1, 0).astype(np.float32)


@pytest.mark.parametrize("store", ["story", "windows"])
@pytest.mark.parametrize("window,lag", [(10.0, 0.0), (6.0, 4.0)])
def test_window_alignment_marker_padding_lag(tiny_root, tmp_path, window, lag, store):
    out = tmp_path / "w"
    _write(tiny_root, out, window=window, lag=lag, rows_per_shard=64, audio_store=store)
    t = _read_all(out)
    n = int(window * SR)
    audio = _windows(out, t)                                             # (n_rows, n)
    assert audio.shape == (t.num_rows, n)
    for i, (story, r) in enumerate(zip(t["story"].to_pylist(), t["row"].to_numpy())):
        np.testing.assert_array_equal(audio[i], _expected_window(story, int(r), window, lag))
        assert t["window_start"][i].as_py() == pytest.approx(((r + 11) * 2.0 - 10.0 - lag) - window
                                                             if story != "wheretheressmoke" else
                                                             ((r + 51) * 2.0 - 10.0 - lag) - window)
    alpha = np.flatnonzero(np.array(t["story"].to_pylist()) == "alpha")
    # a click at 7.0 s after onset (sample value 7·SR + 1) sits in exactly the windows covering 7.0 s,
    # at offset (7.0 − window_start)·SR
    click = 7 * SR + 1
    starts = t["window_start"].to_numpy()[alpha]
    hit = [i for i in alpha if (audio[i] == click).any()]
    assert hit == [i for i, s in zip(alpha, starts) if s <= 7.0 < s + window] and hit
    for i in hit:
        assert np.flatnonzero(audio[i] == click)[0] == round((7.0 - t["window_start"][i].as_py()) * SR)
    # zero padding: with lag 4 the first alpha window starts at 12 − 4 − 6 = 2 s, the first test window
    # is fine; lag 0 / 10 s: first alpha window [2, 12) s, no padding. delta's audio is 14 s short:
    # its last window ends at 24 s but the audio at 20 s → trailing zeros either way
    first = audio[alpha[0]]
    assert (first != 0).all()
    delta = np.flatnonzero(np.array(t["story"].to_pylist()) == "delta")
    last = audio[delta[-1]]
    assert (last[-int((4.0 - lag) * SR):] == 0).all() if lag < 4 else (last != 0).all()


def test_zero_padding_at_story_start(tiny_root, tmp_path):
    # a window reaching before audio onset: lag 8 s moves the first alpha window to [-6, 4) s
    out = tmp_path / "pad"
    _write(tiny_root, out, lag=8.0, splits=["train"])
    t = pq.read_table(out / "train" / "part-00000.parquet")
    a0 = _windows(out, t)[0]
    assert t["story"][0].as_py() == "alpha" and t["window_start"][0].as_py() == -6.0
    assert (a0[:6 * SR] == 0).all() and a0[6 * SR] == 1.0 and a0[-1] == 4 * SR


def test_float16_audio(tmp_path):
    root = tmp_path / "scaled"
    root.mkdir()
    make_tiny_dataset(root, audio_scale=2.0 ** -21)                      # ramp in (0, 0.8): float16 range
    _write(root, tmp_path / "f32", splits=["val"], audio_store="windows")
    _write(root, tmp_path / "f16", splits=["val"], audio_dtype="float16", audio_store="windows")
    t32, t16 = _read_all(tmp_path / "f32"), _read_all(tmp_path / "f16")
    assert t16.schema.field("audio").type == pa.list_(pa.float16(), 10 * SR)
    a32 = np.stack(t32["audio"].to_numpy(zero_copy_only=False))
    a16 = np.stack(t16["audio"].to_numpy(zero_copy_only=False))
    assert a16.dtype == np.float16
    np.testing.assert_array_equal(a16, a32.astype(np.float16))
    b32, b16 = (sum(sh["bytes"] for sh in json.loads((tmp_path / d / "manifest.json").read_text())["shards"])
                for d in ("f32", "f16"))
    assert 0.45 * b32 < b16 < 0.55 * b32                                 # audio dominates: about half
    _write(root, tmp_path / "s16", splits=["val"], audio_dtype="float16")          # the story store alike
    assert _windows(tmp_path / "s16", _read_all(tmp_path / "s16")).dtype == np.float16
    np.testing.assert_array_equal(_windows(tmp_path / "s16", _read_all(tmp_path / "s16")), a16)
    # loud audio would overflow float16: refused with the file named
    with pytest.raises(DatasetError, match=r"bravo\.wav.*float16"):
        _write(_loud_root(tmp_path), tmp_path / "loud", splits=["val"], audio_dtype="float16")


def test_audio_dictionary_roundtrips(tiny_root, written, tmp_path):
    out, plain = tmp_path / "dict", tmp_path / "plain"
    _write(tiny_root, out, splits=["val"], audio_dictionary=True, audio_store="windows")
    _write(tiny_root, plain, splits=["val"], audio_store="windows")
    f = pq.ParquetFile(out / "val" / "part-00000.parquet")
    col = [f.metadata.row_group(0).column(i) for i in range(f.metadata.num_columns)]
    assert "RLE_DICTIONARY" in next(c for c in col if c.path_in_schema == "audio.list.element").encodings
    assert pq.read_table(out / "val" / "part-00000.parquet").equals(
        pq.read_table(plain / "val" / "part-00000.parquet"))


def _loud_root(tmp_path):
    root = tmp_path / "loud_root"
    root.mkdir()
    make_tiny_dataset(root)                                              # ramp up to 5e5 > float16 max
    return root


# --------------------------------------------------------------------------- atomicity + re-runs
def test_interrupted_write_leaves_no_partial_shard_and_no_manifest(tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "crash"
    real_write = pq.write_table
    calls = {"n": 0}

    def crashing_write(table, where, **kw):
        calls["n"] += 1
        if calls["n"] == 3:          # third shard: half-written bytes, then the process "dies"
            with open(where, "wb") as f:
                f.write(b"PAR1" + b"\0" * 1000)
            raise KeyboardInterrupt("simulated kill mid-write")
        return real_write(table, where, **kw)

    monkeypatch.setattr(shards_mod.pq, "write_table", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        _write(tiny_root, out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert files == ["train/part-00000.parquet", "train/part-00001.parquet"]   # complete ones only
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix not in (".parquet", ".npy")]
    for f in files:
        assert pq.read_table(out / f).num_rows == 4
    assert not (out / "manifest.json").exists()

    # no manifest = incomplete: a plain re-run cleans up and completes
    monkeypatch.setattr(shards_mod.pq, "write_table", real_write)
    _write(tiny_root, out)
    assert json.loads((out / "manifest.json").read_text())["rows"]["train"] == 25


def test_writer_process_killed_mid_write_is_redone_not_trusted(tiny_root, tmp_path):
    """A real writer process SIGKILLed once its first shard file appears: the output reads as unfinished, the
    pipeline's re-run rewrites it, and the result equals an uninterrupted write byte for byte."""
    opts = dict(rows_per_shard=1, window=30.0)          # 33 files of ~2 MB, each fsynced: a write to interrupt
    cli = [sys.executable, "-m", "braintune_dist.data.shards", "--root", str(tiny_root), "--data.val_stories",
           "bravo", *(f"--shard.{k}={v}" for k, v in opts.items())]
    out, ref = tmp_path / "killed", tmp_path / "reference"
    proc = subprocess.Popen([*cli, "--out", str(out)])
    deadline = time.time() + 120
    while proc.poll() is None and not list(out.glob("*/part-*")) and time.time() < deadline:
        time.sleep(0.001)
    proc.kill()
    assert proc.wait() == -9, "the writer finished before it could be killed"
    assert list(out.glob("*/part-*")) and not (out / MANIFEST).exists()       # partial output, no manifest
    with pytest.raises(DatasetError, match="did not finish"):
        load_manifest(out)

    data = DataConfig(root=str(tiny_root), val_stories=["bravo"])
    ensure_shards(LebelDataset(tiny_root, data), str(out), ShardConfig(**opts), log=lambda *_: None)
    subprocess.run([*cli, "--out", str(ref)], check=True, capture_output=True)
    m, m_ref = load_manifest(out), load_manifest(ref)
    verify_shards(out, m["shards"], "checksum")
    assert [(s["file"], s["rows"], s["sha256"]) for s in m["shards"]] == \
        [(s["file"], s["rows"], s["sha256"]) for s in m_ref["shards"]]
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted([MANIFEST, "coverage.npy"] + [s["file"] for s in m["shards"]] +
                             [f["file"] for f in m["audio_files"].values()])          # no .tmp, no stale part


def test_rerun_refused_then_overwrite_rewrites_cleanly(tiny_root, tmp_path):
    out = tmp_path / "rerun"
    _write(tiny_root, out, rows_per_shard=2)
    n_old = len(list(out.rglob("*.parquet")))
    with pytest.raises(FileExistsError, match="overwrite"):
        _write(tiny_root, out)
    _write(tiny_root, out, rows_per_shard=8, overwrite=True)
    m = json.loads((out / "manifest.json").read_text())
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert on_disk == sorted(sh["file"] for sh in m["shards"]) and len(on_disk) < n_old   # no stale shards


# --------------------------------------------------------------------------- bad input + CLI
def test_bad_input_names_the_problem(tiny_root, tmp_path):
    with pytest.raises(DatasetError, match="UTS09"):
        write_shards(ShardConfig(), DataConfig(root=str(tiny_root), participants=["UTS01", "UTS09"]), str(tmp_path / "a"))
    with pytest.raises(DatasetError, match="nosuchstory.hf5"):
        write_shards(ShardConfig(), DataConfig(root=str(tiny_root), train_stories=["nosuchstory"]), str(tmp_path / "b"))
    with pytest.raises(DatasetError, match="common_space.npz"):
        _write(tiny_root, tmp_path / "c", common_space=str(tmp_path))
    with pytest.raises(DatasetError, match="two splits"):
        write_shards(ShardConfig(), DataConfig(root=str(tiny_root), train_stories=["alpha", "bravo"],
                                                 val_stories=["bravo"]), str(tmp_path / "f"))
    with pytest.raises(DatasetError, match="spaces"):
        _write(tiny_root, tmp_path / "d", spaces=["mni"])
    # one story of UTS02 with a different voxel count
    root = tmp_path / "bad"
    root.mkdir()
    make_tiny_dataset(root)
    path = root / "derivative" / "preprocessed_data" / "UTS02" / "delta.hf5"
    with h5py.File(path, "w") as f:
        f["data"] = np.zeros((TINY_STORIES["delta"] - 20, 41), np.float32)
    with pytest.raises(DatasetError, match=r"UTS02/delta\.hf5: 41 voxels"):
        _write(root, tmp_path / "e", spaces=["voxel"])
    assert not (tmp_path / "e" / "manifest.json").exists()


def test_cli_and_shared_split(tiny_root, tmp_path, capsys):
    out = tmp_path / "cli"
    main(["--root", str(tiny_root), "--out", str(out), "--data.val_stories", "bravo", "--shard.stories", "shared",
          "--shard.window", "2", "--shard.compression", "zstd", "--shard.splits", "train,val"])
    assert "wrote" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    # shared: only stories every participant heard (alpha, bravo, test) minus val/test
    assert m["splits"] == {"train": ["alpha"], "val": ["bravo"]} and m["window_samples"] == 2 * SR
    assert m["config"]["compression"] == "zstd" and not (out / "test").exists()
    assert main(["--root", str(tiny_root), "--out", str(out)]) == 2                 # complete set: refused
    assert "set shard.overwrite true" in capsys.readouterr().err
    assert main(["--root=" + str(tiny_root), "--out", str(tmp_path / "x"), "--participants", "UTS01,UTS09"]) == 2
    assert "UTS09" in capsys.readouterr().err
    shutil.rmtree(out)


def test_story_store_of_16_bit_pcm_is_exact_and_reads_5x_fewer_bytes(tmp_path):
    """16-bit PCM sources: 'auto' stores int16, and the reader's windows equal, bit for bit, the float32
    windows of the 'windows' store; each window costs ≥ 5× fewer bytes read (10 s windows at a 2 s TR)."""
    import soundfile as sf
    root = tmp_path / "pcm"
    root.mkdir()
    make_tiny_dataset(root, audio_scale=2.0 ** -21)
    for wav in (root / "stimuli").glob("*.wav"):
        x, sr = sf.read(wav, dtype="float32")
        sf.write(wav, x, sr, subtype="PCM_16")
    _write(root, tmp_path / "old", audio_store="windows", audio_dtype="float32", rows_per_shard=64)
    _write(root, tmp_path / "new", rows_per_shard=64)
    assert load_manifest(tmp_path / "new")["audio_dtype"] == "int16"
    old, new = _read_all(tmp_path / "old"), _read_all(tmp_path / "new")
    assert old["story"].equals(new["story"]) and old["row"].equals(new["row"])
    a_old, a_new = _windows(tmp_path / "old", old), _windows(tmp_path / "new", new)
    assert a_new.dtype == np.float32 and a_new.shape == a_old.shape
    assert np.array_equal(a_new.view(np.int32), a_old.view(np.int32))                # bit-identical
    per_window = [summarize(tmp_path / d, "train")["read_bytes_per_window"] for d in ("old", "new")]
    assert per_window[0] / per_window[1] >= 5, per_window
    # float sources are not silently quantised: auto keeps float32, and int16 refuses samples beyond ±1
    with pytest.raises(DatasetError, match=r"outside 16-bit PCM's \[-1, 1\); use shard.audio_dtype float32"):
        _write(_loud_root(tmp_path), tmp_path / "loud16", splits=["val"], audio_dtype="int16")
