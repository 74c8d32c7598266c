"""The data layer end to end: (simulate) → validate → noise ceilings → Parquet shards → Ray Data stream.

``prepare(data, shards, settings)`` is what the prepare_data job runs and the first stage of every tuning job.
Each stage is skipped when its output already exists and is complete (a dataset root with
``derivative/``, a shard directory with ``manifest.json``), so re-running a job is cheap.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintune_dist.data.fingerprint import stale_inputs
from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset
from braintune_dist.data.shards import MANIFEST, ShardConfig, write_shards
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.data.validate import validate
from braintune_dist.data.manifest import display, exists, load_manifest
from braintune_dist.data.stream import StreamConfig, format_summary, iter_kwargs, make_dataset, summarize
from braintune_dist.data.voxels import find_common_space
from braintune_dist.io import is_uri


@dataclass
class PrepareSettings:
    """How a job prepares its data: generate a simulated dataset when the root is missing, noise ceilings, shards."""

    simulate: bool = True
    """Generate a simulated dataset at data.root when that folder does not exist yet."""
    sim: SimConfig = field(default_factory=SimConfig)
    """Simulator settings (used only when a dataset is generated)."""
    shard: ShardConfig = field(default_factory=ShardConfig)
    """Shard writer settings."""
    nc_threshold: float = 0.4
    """Noise-ceiling threshold reported (voxels with cc_max > 0.4 are the ones the field usually keeps)."""


def ensure_dataset(data: DataConfig, settings: PrepareSettings, log=print) -> LebelDataset:
    root = Path(data.root)
    if not root.exists():
        if not settings.simulate:
            raise DatasetError(f"dataset root not found: {root} (set prepare.simulate: true to generate one)")
        t = time.time()
        simulate(settings.sim, root)
        log(f"[simulate] wrote a simulated dataset to {root} in {time.time() - t:.1f} s")
    return LebelDataset(root, data)


def ceiling_report(ds: LebelDataset, threshold: float, common_space_dir: str = "") -> list[dict]:
    """Per participant (and region, when a common-space map exists): voxels, median cc_max, share above threshold."""
    participants = ds.participants()
    space = find_common_space(ds.root, common_space_dir, participants)
    rows = []
    for sub in participants:
        cc = ds.noise_ceiling(sub)                          # (n_voxels,)
        if space is not None:
            space.check_voxels(sub, cc.shape[0])            # the map must describe these voxels
        regions = space.voxel_regions(sub) if space else np.full(cc.shape, "all")
        for region in ["all"] + sorted(set(regions) - {"", "all"}):
            m = np.ones(cc.shape, bool) if region == "all" else regions == region
            rows.append(dict(subject=sub, region=region, n_voxels=int(m.sum()), median_cc_max=float(np.median(cc[m])),
                             frac_above=float(np.mean(cc[m] > threshold))))
    return rows


def ensure_shards(ds: LebelDataset, shards: str, shard: ShardConfig, log=print) -> str | Path:
    """The shard set at ``shards``: reused when it was written from the files of dataset ``ds``, else written
    (locally; object storage is read, not written: write locally, then upload the folder)."""
    if exists(shards, MANIFEST) and not shard.overwrite:
        stale = stale_inputs(load_manifest(shards).get("inputs"), ds, display(shards))
        if stale:
            raise DatasetError(stale[0])
        log(f"[shards] using existing shards in {display(shards)}, written from this dataset's files "
            "(delete it or set shard.overwrite to rewrite)")
        return shards
    if is_uri(shards):
        raise DatasetError(f"fit.shards: no complete shard set at {display(shards)} (no {MANIFEST}); shards are written to a "
                           "local folder (braintune-shards --out DIR) and then copied to object storage")
    out_p = Path(shards)
    t = time.time()
    write_shards(shard, ds.cfg, out_p, ds)
    mb = sum(p.stat().st_size for p in out_p.rglob("*.parquet")) / 1e6
    log(f"[shards] wrote {mb:.1f} MB of Parquet shards to {out_p} in {time.time() - t:.1f} s")
    return out_p


def stream_epoch(shard_dir: Path, stream: StreamConfig) -> dict:
    """One epoch of the training split through Ray Data ``iter_torch_batches``: rows, seconds, shapes."""
    ds = make_dataset(shard_dir, "train", stream)
    t, rows, nbytes, shapes = time.time(), 0, 0, {}
    for batch in ds.iter_torch_batches(**iter_kwargs(stream)):
        rows += len(batch["audio"])
        nbytes += sum(v.numel() * v.element_size() for v in batch.values())
        shapes = {k: tuple(v.shape) for k, v in batch.items()}
    dt = time.time() - t
    return dict(rows=rows, seconds=dt, rows_per_s=rows / dt, mb_per_s=nbytes / 1e6 / dt, batch_shapes=shapes)


@dataclass(frozen=True, eq=False)
class DataReport:
    """What the data layer found and wrote."""

    dataset: LebelDataset
    """The dataset, opened (the job's later stages read it, instead of opening it again)."""
    summary: dict
    """``data.validate.validate``'s summary: participants, stories, split, TR sources."""
    ceiling: list[dict]
    """Per participant and region: voxels, median noise ceiling, share above the threshold."""
    shards: str
    """The shard set."""
    stream: dict | None = None
    """One Ray Data epoch: rows, seconds, rates, batch shapes (when a stream config was given)."""


def prepare(data: DataConfig, shards: str, settings: PrepareSettings, stream: StreamConfig | None = None,
            log=print) -> DataReport:
    """Run the data layer, printing what it finds through ``log``. With a ``stream`` config, one epoch of the
    training shards also goes through Ray Data (Ray must be connected)."""
    ds = ensure_dataset(data, settings, log)
    t = time.time()
    summary = validate(ds, mode=settings.shard.stories)       # the split the shards are written with
    split = summary["split"]
    log(f"[validate] {len(summary['subjects'])} participants, {len(summary['stories'])} stories "
        f"({summary['audio_seconds'] / 60:.1f} min of audio) in {time.time() - t:.1f} s; split: "
        f"{len(split['train'])} train, {len(split['val'])} val, test '{split['test'][0]}'; TR times from "
        + (f"reports for {len(summary['tr_reports'])} of {len(summary['stories'])} stories" if summary["tr_reports"]
           else f"the {data.tr} s grid"))
    for sub, info in summary["subjects"].items():
        missed = summary["lacking"].get(sub)
        log(f"  {sub}: {info['n_voxels']} voxels, {info['n_rows']} TRs of {info['n_stories']} stories, "
            f"{info['n_repeats']} test repeats" + (f"; did not hear {', '.join(missed)} (masked in training)"
                                                   if missed else ""))
    ceil = ceiling_report(ds, settings.nc_threshold, settings.shard.common_space)
    log(f"[noise ceiling] median cc_max and share of voxels above {settings.nc_threshold}:")
    for r in ceil:
        log(f"  {r['subject']:>8} {r['region']:>9}: {r['n_voxels']:5d} voxels, median {r['median_cc_max']:.2f}, "
            f"{100 * r['frac_above']:.0f}% above")
    out = ensure_shards(ds, shards, settings.shard, log)
    epoch = None
    if stream is not None:
        for s in ("train", "val", "test"):
            if s in settings.shard.splits and (s != "val" or split["val"]):
                log("[stream] " + format_summary(summarize(out, s, stream)))
        ep = stream_epoch(out, stream)
        log(f"[stream] one epoch through Ray Data: {ep['rows']} rows in {ep['seconds']:.1f} s "
            f"({ep['rows_per_s']:.0f} rows/s, {ep['mb_per_s']:.0f} MB/s); batch: {ep['batch_shapes']}")
        epoch = ep
    return DataReport(dataset=ds, summary=summary, ceiling=ceil, shards=str(out), stream=epoch)
