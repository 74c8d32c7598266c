"""Configs of a brain-tuning fit (``FitConfig`` and its stages), in a module without torch: the job configs,
``--help`` and the driver's planning import it without the training stack."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from braintune_dist.config import ConfigError
from braintune_dist.data.lebel import DataConfig
from braintune_dist.data.stream import StreamConfig
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig
from braintune_dist.targets import TargetSettings
from braintune_dist.tracking import TrackingConfig


@dataclass
class OptimSettings:
    """Optimizer and schedule."""

    backbone_lr: PositiveFloat = 1e-4
    """Peak learning rate of the backbone's trainable weights (LoRA: 1e-4; full fine-tuning: 5e-5)."""
    head_lr: PositiveFloat = 1e-4
    """Peak learning rate of the head."""
    weight_decay: NonNegativeFloat = 0.01
    """AdamW weight decay."""
    warmup_frac: ClosedUnitInterval = 0.1
    """Fraction of the optimizer steps spent in linear warm-up."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warm-up."""
    grad_clip: NonNegativeFloat = 1.0
    """Clip the global gradient norm to this (0 = off)."""
    grad_accum: PositiveInt = 1
    """Micro-batches per optimizer step."""


@dataclass
class EngineSettings:
    """How the model is distributed."""

    kind: Literal["deepspeed", "ddp"] = "deepspeed"
    """DeepSpeed (ZeRO) or PyTorch DDP via ray.train.torch.prepare_model."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage (0-3)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto = bf16 on GPU, fp32 on CPU."""
    skip_cpu_shm_build: bool = True
    """On CPU, skip DeepSpeed's JIT-built shared-memory comm op (25-60 s of g++) and use plain gloo."""


@dataclass
class TrainSettings:
    """Epochs, batches, loss, early stopping."""

    epochs: PositiveInt = 30
    """Maximum epochs over the training windows."""
    loss: Literal["mse", "spatial_corr", "cos_huber", "temporal_corr"] = "mse"
    """Brain loss (see braintune_dist/train/losses.py for the combination rule)."""
    patience: NonNegativeInt = 5
    """Stop after this many epochs without a lower validation loss (0 = never)."""
    max_steps_per_epoch: NonNegativeInt = 0
    """Cap on micro-batches per epoch and worker (0 = the whole shard); for smoke tests."""
    log_every: PositiveInt = 10
    """Log train metrics to MLflow every this many optimizer steps."""
    seed: int = 122
    """The fit's replicate seed: the training stream's order (its shuffle and per-epoch reseeding), the LoRA and
    head initialisation, dropout, and a control target's permutation, each from its own stream derived from it.
    Fits that differ only here are replicates. The backbone's random init (model.seed) and the data-size draws
    (stream.selection_seed, nested across sizes) keep their own seeds."""


@dataclass
class RaySettings:
    """Ray Train resources and fault tolerance."""

    address: str = ""
    """Ray cluster address; empty = the job's cluster (ray job submit) or a new local one."""
    num_workers: PositiveInt = 2
    """Training workers (one per GPU on a GPU cluster)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: PositiveFloat = 0.5
    """CPUs per worker; 0.5 on a 2-core laptop leaves Ray Data a CPU (else fit() hangs)."""
    max_failures: int = 2
    """Restarts from the latest checkpoint after a worker dies (FailureConfig)."""
    keep_checkpoints: PositiveInt = 2
    """Best-k checkpoints kept (by validation loss)."""
    storage_path: str = "runs/ray"
    """Where Ray Train writes checkpoints (a shared path or s3:// on a cluster)."""
    run_name: str = ""
    """Ray Train run name; empty = brain-<timestamp>."""


@dataclass
class FitConfig:
    """Multi-participant brain-tuning of a speech model on Ray Train."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset (for shards and the alignment report)."""
    shards: str = "runs/shards"
    """Shard directory written by braintune-shards / jobs/prepare_data.py."""
    stream: StreamConfig = field(default_factory=StreamConfig)
    """How training windows are streamed (bind mode, shuffle, data-size selection, batch size)."""
    target: TargetSettings = field(default_factory=TargetSettings)
    """What the fit predicts: the participants' responses, or a control target that tells the gains of brain data
    from those of tuning itself (block-permuted responses of the same stimuli, drawn from train.seed; or a text
    teacher model's representations of the same stimuli's transcript)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Speech backbone."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA adapters (or full fine-tuning)."""
    head: HeadSettings = field(default_factory=HeadSettings)
    """Shared or per-participant head."""
    optim: OptimSettings = field(default_factory=OptimSettings)
    """Optimizer and LR schedule."""
    engine: EngineSettings = field(default_factory=EngineSettings)
    """DeepSpeed or DDP."""
    train: TrainSettings = field(default_factory=TrainSettings)
    """Epochs, loss, early stopping."""
    ray: RaySettings = field(default_factory=RaySettings)
    """Ray resources and fault tolerance."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow."""

    def __post_init__(self):
        cap, accum = self.train.max_steps_per_epoch, self.optim.grad_accum
        if cap and cap < accum:
            raise ConfigError(f"fit.train.max_steps_per_epoch: {cap} micro-batches per epoch is fewer than "
                              f"fit.optim.grad_accum {accum}: no optimizer step would be taken")
