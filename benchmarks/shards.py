"""Benchmark: shard writing (vs plain pyarrow) and Ray Data streaming through iter_torch_batches.

    python benchmarks/shards.py [--root DATASET] [--rows-per-shard 64] [--epochs 2] [--out benchmarks/results/shards.json]

Without ``--root`` it simulates its own dataset (the simulator's defaults: 4 participants, 8+1 stories) into
``--work``. The shards are written in the 'windows' audio store (every row holds its window), the layout whose
writer and reader this benchmark times; ``benchmarks/data_path.py`` compares it with the 'story' store.

Writes ``benchmarks/results/shards.json``. All ratios come from the same run on the same machine.

Measured:
* ``write_shards`` end to end (read wav + hf5, cut windows, common space, Parquet, fsync, sha256), MB/s of
  shard bytes written;
* the write path alone on the same in-memory tables: ours (``write_table_atomic``: no compression, no
  float dictionaries, fsync, rename + sha256 of the file) against a plain ``pq.write_table(table, path)``
  (pyarrow defaults: snappy, dictionary on every column);
* the same with ``audio_dictionary=True`` (file size and write time);
* streaming one epoch of the train split through ``make_dataset(...).iter_torch_batches`` for bind/pair
  modes and the three shuffles, rows/s and MB/s of tensors delivered, against a plain single-process
  pyarrow ``read_table`` + numpy of the same shards.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")     # Ray on loopback only
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from braintune_dist.data.lebel import DataConfig                            # noqa: E402
from braintune_dist.data.shards import ShardConfig, write_shards, write_table_atomic, sha256_file  # noqa: E402
from braintune_dist.data.manifest import load_manifest  # noqa: E402
from braintune_dist.data.stream import StreamConfig, iter_kwargs, make_dataset, summarize  # noqa: E402


def bench_write(root: str, out: Path, rows_per_shard: int, **options) -> dict:
    cfg = ShardConfig(spaces=["common", "voxel"], rows_per_shard=rows_per_shard, overwrite=True,
                      **{"audio_store": "windows", "audio_dtype": "float32", **options})
    t0 = time.perf_counter()
    write_shards(cfg, DataConfig(root=root), out)
    t_total = time.perf_counter() - t0
    m = load_manifest(out)
    nbytes = sum(sh["bytes"] for sh in m["shards"])

    tables = [pq.read_table(out / sh["file"]) for sh in m["shards"]]         # same bytes, in memory
    scratch = Path(tempfile.mkdtemp(dir=out.parent))
    t_ours = t_plain = 0.0
    plain_bytes = 0
    for i, t in enumerate(tables):
        p = scratch / f"ours-{i}.parquet"
        t0 = time.perf_counter()
        write_table_atomic(t, p, cfg)
        sha256_file(p)
        t_ours += time.perf_counter() - t0
        q = scratch / f"plain-{i}.parquet"
        t0 = time.perf_counter()
        pq.write_table(t, q)
        t_plain += time.perf_counter() - t0
        plain_bytes += q.stat().st_size
        p.unlink()
        q.unlink()
    shutil.rmtree(scratch)
    mb = nbytes / 1e6
    return dict(shards=len(m["shards"]), rows=sum(m["rows"].values()), shard_mb=round(mb, 1),
                end_to_end_s=round(t_total, 3), end_to_end_mb_s=round(mb / t_total, 1),
                write_path_s=round(t_ours, 3), write_path_mb_s=round(mb / t_ours, 1),
                plain_write_table_s=round(t_plain, 3), plain_write_table_mb_s=round(mb / t_plain, 1),
                plain_write_table_file_mb=round(plain_bytes / 1e6, 1),
                ratio_write_path_vs_plain=round(t_plain / t_ours, 2),
                ratio_end_to_end_vs_plain=round(t_plain / t_total, 2))


def bench_plain_read(shard_dir: Path, epochs: int) -> dict:
    """Ceiling without Ray: one process reads the train shards and builds the bind-mode numpy arrays."""
    m = load_manifest(shard_dir)
    files = [shard_dir / sh["file"] for sh in m["shards"] if sh["split"] == "train"]
    res = []
    for _ in range(epochs):
        t0, rows, nbytes = time.perf_counter(), 0, 0
        for f in files:
            t = pq.read_table(f, columns=["audio"] + [f"common_{s}" for s in m["subjects"]])
            audio = t["audio"].combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
            resp = [t[f"common_{s}"].combine_chunks() for s in m["subjects"]]
            rows += t.num_rows
            nbytes += audio.nbytes + sum(r.nbytes for r in resp)
        res.append((time.perf_counter() - t0, rows, nbytes))
    dt_, rows, nbytes = res[-1]
    return dict(epoch_s=[round(r[0], 3) for r in res], rows_s=round(rows / dt_, 1), mb_s=round(nbytes / 1e6 / dt_, 1))


def bench_stream(shard_dir: Path, cfg: StreamConfig, epochs: int) -> dict:
    s = summarize(shard_dir, "train", cfg)
    ds = make_dataset(shard_dir, "train", cfg)
    res = []
    for _ in range(epochs):                                      # the same Dataset, one execution per epoch
        t0, rows, nbytes = time.perf_counter(), 0, 0
        for batch in ds.iter_torch_batches(**iter_kwargs(cfg)):
            rows += len(batch["audio"])
            nbytes += sum(v.element_size() * v.nelement() for v in batch.values())
        res.append((time.perf_counter() - t0, rows, nbytes))
    assert all(r[1] == s["rows"] for r in res), (res, s["rows"])   # every row once per epoch
    dt_, rows, nbytes = res[-1]
    return dict(mode=cfg.mode, shuffle=cfg.shuffle, local_buffer=cfg.local_shuffle_buffer, batch_size=cfg.batch_size,
                rows=rows, epoch_s=[round(r[0], 3) for r in res], rows_s=round(rows / dt_, 1),
                mb_s=round(nbytes / 1e6 / dt_, 1), tensor_mb=round(nbytes / 1e6, 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="", help="dataset root (default: simulate one into --work)")
    ap.add_argument("--work", default=None, help="scratch directory for the shards (default: a temp dir)")
    ap.add_argument("--rows-per-shard", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "shards.json"))
    a = ap.parse_args(argv)

    work = Path(a.work or tempfile.mkdtemp(prefix="bench_shards_"))
    if not a.root:
        from braintune_dist.data.simulate import SimConfig, simulate
        a.root = str(work / "sim")
        if not (work / "sim" / "derivative").is_dir():
            simulate(SimConfig(), a.root, overwrite=True)
    shard_dir = work / "shards"
    results: dict = dict(
        date=dt.datetime.now().isoformat(timespec="seconds"),
        command="python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), python=platform.python_version(),
                     loadavg_start=[round(x, 2) for x in os.getloadavg()]),
        versions=dict(pyarrow=pa.__version__, numpy=np.__version__), root=a.root,
        rows_per_shard=a.rows_per_shard)
    print("writing shards ...", flush=True)
    results["write"] = bench_write(a.root, shard_dir, a.rows_per_shard)
    print(json.dumps(results["write"], indent=1), flush=True)
    dict_dir = work / "shards_dict"                 # variant: dictionary-encoded audio (16-bit PCM sources)
    results["write_audio_dictionary"] = bench_write(a.root, dict_dir, a.rows_per_shard, audio_dictionary=True)
    print(json.dumps(results["write_audio_dictionary"], indent=1), flush=True)
    m = load_manifest(shard_dir)
    results["dataset"] = dict(subjects=m["subjects"], n_vertices=m["n_vertices"],
                              train_rows=m["rows"]["train"], window_samples=m["window_samples"],
                              train_shards=sum(sh["split"] == "train" for sh in m["shards"]))
    results["plain_pyarrow_read"] = bench_plain_read(shard_dir, a.epochs)
    print("plain pyarrow read", results["plain_pyarrow_read"], flush=True)

    import ray
    import ray.data
    import torch
    results["versions"].update(ray=ray.__version__, torch=torch.__version__)
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    results["ray_init_s"] = round(time.perf_counter() - t0, 2)
    bs = a.batch_size
    configs = [StreamConfig(mode="bind", shuffle="none", batch_size=bs),
               StreamConfig(mode="bind", shuffle="blocks", local_shuffle_buffer=64, batch_size=bs),
               StreamConfig(mode="bind", shuffle="global", batch_size=bs),
               StreamConfig(mode="pair", shuffle="none", batch_size=bs),
               StreamConfig(mode="pair", shuffle="global", batch_size=bs)]
    results["stream"] = []
    for cfg in configs:
        r = bench_stream(shard_dir, cfg, a.epochs)
        results["stream"].append(r)
        print(r, flush=True)
    cfg = StreamConfig(mode="bind", shuffle="none", batch_size=bs)
    results["stream_audio_dictionary"] = bench_stream(dict_dir, cfg, a.epochs)
    print("audio_dictionary shards", results["stream_audio_dictionary"], flush=True)
    ray.shutdown()
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    base = results["stream"][0]
    results["ratios"] = dict(
        bind_none_vs_plain_pyarrow_mb_s=round(base["mb_s"] / results["plain_pyarrow_read"]["mb_s"], 3),
        audio_dictionary_size=round(results["write_audio_dictionary"]["shard_mb"] / results["write"]["shard_mb"], 3),
        audio_dictionary_end_to_end_write_s=round(results["write_audio_dictionary"]["end_to_end_s"]
                                                  / results["write"]["end_to_end_s"], 3),
        audio_dictionary_bind_none_rows_s=round(results["stream_audio_dictionary"]["rows_s"] / base["rows_s"], 3),
        **{f"{r['mode']}_{r['shuffle']}_vs_bind_none_rows_s": round(r["rows_s"] / base["rows_s"], 3)
           for r in results["stream"][1:]})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    if a.work is None:
        shutil.rmtree(work)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
