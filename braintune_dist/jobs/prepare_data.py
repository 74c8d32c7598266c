"""The data layer as a job: (simulate) → validate → noise ceilings → Parquet shards → one Ray Data epoch.

Every tuning job runs the same stages first (``experiment.prepare.prepare``); this job runs them alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.stream import StreamConfig
from braintune_dist.experiment.prepare import PrepareSettings, prepare


@dataclass
class PrepareConfig:
    """Generate or read a dataset, validate it, compute noise ceilings, write shards and stream them."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset root and story split."""
    shards: str = "data/shards"
    """Shard directory to write (manifest.json, coverage.npy, <split>/part-*.parquet)."""
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    """Simulation, shard and noise-ceiling settings."""
    stream: StreamConfig = field(default_factory=StreamConfig)
    """Ray Data stream used for the summary epoch."""
    stream_check: bool = True
    """Stream one epoch of the training shards through Ray Data and report its rate (Ray must be connected)."""


def run(cfg: PrepareConfig, log=print) -> dict:
    """The data layer's summary: dataset, ceilings, shards (and the stream epoch when ``stream_check``)."""
    return prepare(cfg.data, cfg.shards, cfg.prepare, cfg.stream if cfg.stream_check else None, log=log)
