"""Pretraining job: phone recognition of a random-init backbone on the dataset's speech; the checkpoint it
writes is what ``model.pretrained`` of the other jobs loads."""
from __future__ import annotations

from braintune_dist.model.pretrain import PretrainConfig, pretrain


def run(cfg: PretrainConfig, log=print) -> None:
    pretrain(cfg, log)
