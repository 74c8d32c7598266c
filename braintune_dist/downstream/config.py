"""Config of the downstream stage: clip features, linear probes, transcription and word-pair preference
(no torch imported here: job configs and ``--help`` read it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import PositiveInt

from braintune_dist.config import ConfigError


@dataclass
class ClipFeatureSettings:
    """How one clip becomes one vector per layer."""

    layers: list[int] = field(default_factory=list)
    """hidden_states indices probed (0 = the convolutional/embedding output); [] = every transformer layer. The
    papers' 12-layer models: [2, 5, 7, 8, 10, 11, 12]."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Inference precision of the backbone (part of the cache key)."""
    device: str = "auto"
    """torch device of the feature actors: auto = cuda when available, else cpu."""
    chunk: PositiveInt = 64
    """Clips per unit of the actor pool (one cache file each)."""
    cache_dir: str = ""
    """Feature cache (shared storage on a cluster); '' = <out_dir>/feature_cache."""


@dataclass
class ProbeSettings:
    """The linear probe: one ``nn.Linear`` on a layer's mean-pooled, standardised representation."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Probe seeds (initialisation and mini-batch order); each is scored once on the test split."""
    lrs: list[float] = field(default_factory=lambda: [1.0e-3, 1.0e-2])
    """Adam learning rates tried; the one chosen is the best on the validation split."""
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1.0e-2])
    """L2 penalties (Adam weight_decay) tried, chosen on the validation split."""
    max_epochs: PositiveInt = 100
    """Epochs at most; the epoch kept is the best on the validation split."""
    patience: PositiveInt = 10
    """Stop a fit after this many epochs without a better validation score."""
    batch_size: int = 128
    """Clips per Adam step (0 = the whole training split, as the released probe code)."""
    select_on: Literal["f1_macro", "f1_micro", "accuracy"] = "f1_macro"
    """Validation score that picks the learning rate, the penalty and the epoch."""

    def __post_init__(self):
        if not self.seeds:
            raise ConfigError("probe.seeds: empty; give at least one probe seed (the papers' protocol: 3 or more)")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"probe.seeds: {list(self.seeds)} repeats a seed (a repeat is not a replicate)")
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError(f"probe.lrs: {list(self.lrs)}; give positive learning rates")
        if any(wd < 0 for wd in self.weight_decays) or not self.weight_decays:
            raise ConfigError(f"probe.weight_decays: {list(self.weight_decays)}; give non-negative penalties")
        if self.batch_size < 0:
            raise ConfigError(f"probe.batch_size: {self.batch_size}; 0 (full batch) or a positive size")
