"""Config of the evaluation stage (no torch imported here: job configs and ``--help`` read it)."""
from __future__ import annotations

from dataclasses import dataclass, field

from braintune_dist.config import ConfigError
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig
from braintune_dist.evaluate.maps import MapSettings
from braintune_dist.features.config import FeatureConfig


@dataclass
class EvalSettings:
    """Which participants, stories, features and ridge settings the alignment report uses."""

    enabled: bool = True
    """Run the alignment report."""
    participants: list[str] = field(default_factory=list)
    """Participants to evaluate; empty = those not used for tuning (held out), else all."""
    train_stories: list[str] = field(default_factory=list)
    """Stories the encoding models are fit on; empty = the dataset's training split (in order)."""
    efficiency_stories: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    """Training-story counts of the new-participant data-efficiency curve ([] = skip)."""
    common_space: str = ""
    """Directory with the region labels (common_space.npz + maps); '' = <root>/ground_truth if present."""
    layers: list[int] = field(default_factory=list)
    """Hidden states the headline averages over (0 = the convolutional/embedding output); [] = every transformer
    layer. The papers' 12-layer models: [2, 5, 7, 8, 10, 11, 12]. Per-layer curves show every extracted layer."""
    features: FeatureConfig = field(default_factory=FeatureConfig)
    """Feature extraction (window, stride, layers, delays, cache)."""
    ridge: RidgeConfig = field(default_factory=RidgeConfig)
    """Voxel-wise ridge settings."""
    compute: ComputeSettings = field(default_factory=ComputeSettings)
    """Where features and ridge fits run (Ray feature actors and ridge tasks, or this process) and their resources."""
    maps: MapSettings = field(default_factory=MapSettings)
    """Per-vertex GIfTI maps on the common space's surface, their figures, per-voxel NIfTI maps."""
    out_dir: str = "runs/reports"
    """Where figures and tables are written (and logged to MLflow); the feature cache defaults to
    <out_dir>/feature_cache."""

    def __post_init__(self):
        if any(n < 1 for n in self.efficiency_stories):
            raise ConfigError(f"eval.efficiency_stories: {list(self.efficiency_stories)}; each refit needs at least "
                              "one training story")
        extracted = self.features.layers
        if self.layers and extracted and not set(self.layers) <= set(extracted):
            raise ConfigError(f"eval.layers: {sorted(set(self.layers) - set(extracted))} are not extracted "
                              f"(eval.features.layers {list(extracted)})")
