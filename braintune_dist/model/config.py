"""Configs of the model stage: backbone, LoRA, head and phone-recognition pretraining (no torch imported here,
so a job's ``--help`` and the orchestration stay light)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt

HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
"""The weight files of a Hugging Face model folder (beside its config.json), one of which it holds."""


@dataclass
class ModelConfig:
    """Which speech backbone to use and how to build it."""

    family: Literal["wav2vec2", "hubert", "whisper"] = "wav2vec2"
    """Backbone family: HF Wav2Vec2Model, HubertModel or the WhisperEncoder of WhisperModel."""
    pretrained: str = ""
    """Local path or hub name of a checkpoint (e.g. facebook/hubert-base-ls960); empty = random init."""
    size: Literal["tiny", "base"] = "tiny"
    """Random-init architecture when `pretrained` is empty: tiny (tests, CPU demo) or base (HF defaults)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Extra HF config fields for random init (e.g. {num_hidden_layers: 4})."""
    seed: int = 0
    """Seed of the random initialisation."""
    whisper_input: Literal["padded", "native"] = "native"
    """Whisper only. 'padded': every input zero-padded to the model's fixed 30 s (1,500 positions), as
    Whisper was trained; 'native': the encoder runs on the input's own length, positional embeddings
    sliced to it (a 10 s window costs a third of the compute)."""
    freeze_frontend: bool = True
    """Freeze the convolutional front end (the original brain-tuning code do, with pretrained weights; a random-init model
    tuned from scratch may need it trainable)."""


@dataclass
class LoraSettings:
    """LoRA adapters on the backbone's attention projections (peft)."""

    enabled: bool = True
    """Train LoRA adapters; false = full fine-tuning of the transformer (CNN front end stays frozen)."""
    rank: PositiveInt = 8
    """LoRA rank r."""
    alpha: PositiveInt = 32
    """LoRA scaling alpha."""
    dropout: ClosedUnitInterval = 0.1
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "out_proj"])
    """Module name suffixes to adapt (attention projections of wav2vec2 / HuBERT / Whisper)."""
    layers: list[int] = field(default_factory=list)
    """Transformer layers (0-based) that get adapters; [] = all. Adapting only the upper layers also skips
    the backward pass through the lower ones."""


@dataclass
class HeadSettings:
    """The linear readout from pooled features to voxel responses."""

    kind: Literal["shared", "per_participant"] = "shared"
    """One common-space head for all participants, or one head per participant."""
    bottleneck: NonNegativeInt = 0
    """Width of a linear bottleneck before the head (0 = none; the original brain-tuning code defined 200, unused)."""
    standardize: bool = True
    """Z-score the pooled features with their mean/SD over `standardize_windows` training windows of the
    untuned backbone, and start the head at zero. Pooled features of a random-init backbone vary little
    around a large offset, so a plain linear head barely moves in a few hundred steps; pretrained
    backbones do not need it (false = the original brain-tuning code's plain linear head)."""
    standardize_windows: PositiveInt = 256
    """Training windows used to measure the pooled-feature statistics (read by the driver, once)."""


@dataclass
class PretrainConfig:
    """Pretrain a small speech backbone on frame-level phone recognition (the stage real checkpoints have)."""

    out: str = "runs/pretrained/tiny-phones"
    """Output HF checkpoint directory (config.json, model.safetensors, preprocessor_config.json, pretrain.json)."""
    enabled: bool = True
    """When nested in a tuning job: pretrain first and tune `out` (sets model.pretrained); false = skip."""
    model: ModelConfig = field(default_factory=lambda: ModelConfig(freeze_frontend=False))
    """Architecture (wav2vec2 or hubert, random init); the CNN front end is trained here."""
    steps: PositiveInt = 400
    """Optimizer steps."""
    window: PositiveFloat = 2.0
    """Seconds of audio per training window (random crops)."""
    batch_size: PositiveInt = 32
    """Windows per step."""
    lr: PositiveFloat = 2.0e-3
    """AdamW learning rate (constant)."""
    eval_every: PositiveInt = 100
    """Steps between accuracy checks on the validation stories."""
    seed: int = 0
    """Seed of the crops and the initialisation."""
    overwrite: bool = False
    """Retrain even when `out` holds a checkpoint made with this same config."""
