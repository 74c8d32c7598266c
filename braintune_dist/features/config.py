"""Config of the feature stage: how a model's layers are read on the stimulus (no torch imported here)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import PositiveFloat, PositiveInt


@dataclass
class FeatureConfig:
    """How evaluation features are extracted from a backbone."""

    window: PositiveFloat = 16.1
    """Window length in seconds (context + chunk) ending at each sample time."""
    stride: PositiveFloat = 0.1
    """Seconds between window ends (10 Hz in the original brain-tuning code)."""
    min_input_samples: PositiveInt = 400
    """Windows shorter than this many samples are dropped (the model's receptive field)."""
    pool: Literal["last", "stride"] = "last"
    """Feature of a window: the last output frame (the reference), or the mean of the frames of its last
    ``stride`` seconds (an anti-alias filter for strides near the TR; part of the cache key)."""
    require_full_context: bool = False
    """Drop the growing windows at the story start instead of running them at their true length."""
    layers: list[int] = field(default_factory=list)
    """hidden_states indices to keep (0 = CNN/embedding output); empty = every layer."""
    delays: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    """FIR delays in TRs (the original brain-tuning code: 1-4 TRs = 2-8 s, no zero lag)."""
    lanczos_window: PositiveInt = 3
    """Lanczos lobes for the downsampling to TRs."""
    batch_size: PositiveInt = 16
    """Windows per forward pass."""
    device: str = "auto"
    """torch device: auto = cuda when available, else cpu."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Inference precision of the backbone (bfloat16/float16 on GPU; part of the cache key)."""
    cache_dir: str = ""
    """Directory of the feature cache (shared storage on a cluster); empty = the evaluation's
    ``<out_dir>/feature_cache``."""
