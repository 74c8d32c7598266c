"""Brain-tuning losses, computed per (window, participant) pair and combined by one explicit rule.

Shapes: ``pred`` and ``target`` are (batch, n_participants, n_vertices); ``pair_mask`` (batch,
n_participants) says which participant heard which window (binding by stimulus: one backbone pass per
window, scored against every participant present); ``vertex_mask`` (n_participants, n_vertices) says
which common-space vertices each participant covers (uncovered vertices hold 0 and are ignored).

Combination rule: every valid (window, participant) pair counts once — the loss is the mean over valid
pairs of the per-pair loss. (The original brain-tuning code instead took consecutive SGD steps on one participant at a time.)
``temporal_corr`` is the exception by nature: it correlates each vertex over the
windows of the batch, per participant, and averages over participants with ≥ 2 windows.
"""
from __future__ import annotations

import math

import torch

EPS = 1e-8


def _masked_mean(x: torch.Tensor, m: torch.Tensor, dim: int) -> torch.Tensor:
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1)


def mse(pred, target, vmask):
    """Mean squared error over covered vertices, per pair → (batch, P)."""
    return _masked_mean((pred - target) ** 2, vmask, -1)


def spatial_corr(pred, target, vmask):
    """1 − Pearson r across covered vertices, per pair → (batch, P) (the original brain-tuning code's SpatialCorrelationLoss)."""
    p = pred - _masked_mean(pred, vmask, -1).unsqueeze(-1)
    t = target - _masked_mean(target, vmask, -1).unsqueeze(-1)
    num = (p * t * vmask).sum(-1)
    den = torch.sqrt((p ** 2 * vmask).sum(-1) * (t ** 2 * vmask).sum(-1) + EPS)
    return 1.0 - num / den


def cos_huber(pred, target, vmask, delta: float = 0.6):
    """Huber(δ) mean over vertices + (1 − cosine similarity), per pair → (batch, P) (the original brain-tuning code's cosl2)."""
    err = (pred - target).abs()
    small = err.clamp(max=delta)
    huber = _masked_mean(0.5 * small ** 2 + delta * (err - small), vmask, -1)
    cos = (pred * target * vmask).sum(-1) / (
        torch.sqrt((pred ** 2 * vmask).sum(-1) * (target ** 2 * vmask).sum(-1)) + EPS)
    return huber + 1.0 - cos


PAIR_LOSSES = {"mse": mse, "spatial_corr": spatial_corr, "cos_huber": cos_huber}
LOSSES = (*PAIR_LOSSES, "temporal_corr")


def temporal_corr(pred, target, pair_mask, vmask):
    """1 − mean over covered vertices of the Pearson r over the batch's windows, per participant → (P,)."""
    w = pair_mask.unsqueeze(-1).float()                                    # (batch, P, 1)
    n = w.sum(0)                                                           # (P, 1)
    p = pred - (pred * w).sum(0) / n.clamp_min(1)
    t = target - (target * w).sum(0) / n.clamp_min(1)
    r = (p * t * w).sum(0) / torch.sqrt((p ** 2 * w).sum(0) * (t ** 2 * w).sum(0) + EPS)   # (P, V)
    return 1.0 - _masked_mean(r, vmask, -1), n.squeeze(-1) >= 2


def brain_loss(name: str, pred: torch.Tensor, target: torch.Tensor, pair_mask: torch.Tensor,
               vertex_mask: torch.Tensor) -> torch.Tensor:
    """Scalar loss ``name`` over a batch (see module docstring for shapes and the combination rule)."""
    pred, target = pred.float(), target.float()
    if pred.dim() == 2:                                                    # shared head: (batch, V) → every participant
        pred = pred.unsqueeze(1).expand_as(target)
    vmask = vertex_mask.to(pred.dtype).unsqueeze(0)                        # (1, P, V)
    pm = pair_mask.to(pred.dtype)
    if name == "temporal_corr":
        per_p, ok = temporal_corr(pred, target, pair_mask, vertex_mask.to(pred.dtype))
        ok = ok.to(pred.dtype)
        return (per_p * ok).sum() / ok.sum().clamp_min(1)
    if name not in PAIR_LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
    per_pair = PAIR_LOSSES[name](pred, target, vmask)                      # (batch, P)
    return (per_pair * pm).sum() / pm.sum().clamp_min(1)


def pearson_moments(pred: torch.Tensor, target: torch.Tensor, pair_mask: torch.Tensor) -> torch.Tensor:
    """(6, P, V) float64 sums over the batch's windows each participant heard: n, Σp, Σt, Σp², Σt², Σpt.

    Summed over batches (and workers) they give the Pearson r of every (participant, vertex) over a whole split.
    """
    p, t = pred.double(), target.double()                                  # (B, P, V); a shared head's (B, V) too
    p = p.unsqueeze(1).expand_as(t) if p.dim() == 2 else p
    w = pair_mask.double().unsqueeze(-1)                                   # (B, P, 1)
    return torch.stack([w.expand_as(t), p * w, t * w, p * p * w, t * t * w, p * t * w]).sum(1)


def moments_r(moments: torch.Tensor, vertex_mask: torch.Tensor) -> float:
    """Mean Pearson r over the covered (participant, vertex) pairs with two windows or more and some variance;
    NaN when there are none. ``moments``: summed :func:`pearson_moments`."""
    c, sp, st, spp, stt, spt = moments
    cov, vp, vt = c * spt - sp * st, c * spp - sp ** 2, c * stt - st ** 2
    ok = vertex_mask.bool() & (c >= 2) & (vp > 0) & (vt > 0)
    return float((cov[ok] / torch.sqrt(vp[ok] * vt[ok])).mean()) if ok.any() else math.nan
