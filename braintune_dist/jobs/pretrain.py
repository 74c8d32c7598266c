"""Pretraining job: phone recognition of a random-init backbone on the dataset's speech; the checkpoint it
writes is what ``model.pretrained`` of the other jobs loads."""
from __future__ import annotations

from dataclasses import dataclass, field

from braintune_dist.data.lebel import DataConfig
from braintune_dist.model.config import PretrainConfig


@dataclass
class PretrainJobConfig:
    """Pretrain a small speech backbone on frame-level phone recognition (the stage real checkpoints have)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Dataset whose training stories (audio + TextGrid phones) are used; validation stories score accuracy."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Architecture, steps, learning rate and output checkpoint folder."""


def run(cfg: PretrainJobConfig, log=print) -> None:
    from braintune_dist.model.pretrain import pretrain
    pretrain(cfg.pretrain, cfg.data, log)
