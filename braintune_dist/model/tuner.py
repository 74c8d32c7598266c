"""The brain-tuning model: speech backbone (+ peft LoRA, or full fine-tuning) → mean-pool → linear head.

Heads predict common-space vertices. ``shared`` (default, the NeurIPS setup): one head for every
participant, ``(batch, hidden) → (batch, n_vertices)``. ``per_participant``: one head each,
``(batch, hidden) → (batch, n_participants, n_vertices)`` — an ablation. An optional bottleneck
(``hidden → bottleneck → n_vertices``, linear) shrinks the head when the vertex count is large.
"""
from __future__ import annotations

import torch
from torch import nn

from braintune_dist.model.backbone import Backbone, build_backbone
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig
from braintune_dist.seeding import derive


class BrainTuner(nn.Module):
    """Backbone + LoRA + head.

    Parameters
    ----------
    model : ModelConfig
    lora : LoraSettings
    head : HeadSettings
    n_vertices : int   width of the common space
    n_participants : int   number of heads when ``head.kind == 'per_participant'``
    seed : int   the fit's replicate seed: LoRA and head initialisation (each from its own derived stream);
        the backbone's random init, when it has one, follows ``model.seed``
    """

    def __init__(self, model: ModelConfig, lora: LoraSettings, head: HeadSettings, n_vertices: int,
                 n_participants: int = 1, seed: int = 0):
        super().__init__()
        self.backbone: Backbone = build_backbone(model)
        self.lora_enabled = lora.enabled
        if lora.enabled:
            from peft import LoraConfig, get_peft_model
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            torch.manual_seed(derive(seed, "lora"))      # peft draws the A matrices from the global generator
            self.backbone.model = get_peft_model(self.backbone.model, LoraConfig(
                r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias="none",
                target_modules=list(lora.target_modules), layers_to_transform=list(lora.layers) or None,
                layers_pattern="layers" if lora.layers else None))
        h = self.backbone.hidden_size
        # pooled-feature statistics (set by set_feature_stats); frozen parameters so checkpoints carry them
        self.feat_mean = nn.Parameter(torch.zeros(h), requires_grad=False)
        self.feat_std = nn.Parameter(torch.ones(h), requires_grad=False)
        torch.manual_seed(derive(seed, "head"))
        self.bottleneck = nn.Linear(h, head.bottleneck) if head.bottleneck else nn.Identity()
        h = head.bottleneck or h
        self.per_participant = head.kind == "per_participant"
        if self.per_participant:
            self.head_weight = nn.Parameter(torch.randn(n_participants, h, n_vertices) / h ** 0.5 * 0.1)
            self.head_bias = nn.Parameter(torch.zeros(n_participants, n_vertices))
        else:
            self.head = nn.Linear(h, n_vertices)
        if head.standardize:      # prediction starts at the bias (the mean), not at random noise
            for w in (self.head_weight if self.per_participant else self.head.weight,):
                nn.init.zeros_(w)

    def train(self, mode: bool = True) -> "BrainTuner":
        """Train mode for the head and LoRA dropout only: the backbone stays in eval mode (no dropout,
        attention dropout, layerdrop or time masking), as the original brain-tuning code's multi-brain code did."""
        super().train(mode)
        if mode:
            self.backbone.eval()
            for name, m in self.backbone.named_modules():
                if "lora_dropout" in name:
                    m.train()
        return self

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (batch, n_samples) → predictions (batch, n_vertices) or (batch, P, n_vertices)."""
        z = (self.backbone.pooled(wav) - self.feat_mean) / self.feat_std   # (batch, hidden)
        z = self.bottleneck(z)
        if self.per_participant:
            return torch.einsum("bh,phv->bpv", z, self.head_weight) + self.head_bias
        return self.head(z)

    def set_feature_stats(self, mean, std) -> None:
        """Pooled-feature mean and SD, each (hidden,), used to z-score the head's input."""
        self.feat_mean.data.copy_(torch.as_tensor(mean, dtype=self.feat_mean.dtype))
        self.feat_std.data.copy_(torch.as_tensor(std, dtype=self.feat_std.dtype).clamp_min(1e-6))

    def param_groups(self, backbone_lr: float, head_lr: float) -> list[dict]:
        """Optimizer groups: trainable backbone (LoRA or transformer) and head, each with its own LR."""
        head = [p for n, p in self.named_parameters() if not n.startswith("backbone.") and p.requires_grad]
        body = [p for n, p in self.named_parameters() if n.startswith("backbone.") and p.requires_grad]
        return [{"params": body, "lr": backbone_lr, "name": "backbone"},
                {"params": head, "lr": head_lr, "name": "head"}]

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """Trainable backbone weights only (LoRA adapters, or the tuned transformer)."""
        return {n: p.detach().cpu() for n, p in self.backbone.named_parameters() if p.requires_grad}

    def merged_backbone(self) -> Backbone:
        """A plain ``Backbone`` with LoRA merged in, for feature extraction (head dropped)."""
        import copy
        bb = copy.deepcopy(self.backbone)
        if self.lora_enabled:
            bb.model = bb.model.merge_and_unload()
        return bb.eval()
