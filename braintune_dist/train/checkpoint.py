"""Brain-tuning checkpoints: loadable without Ray.

A checkpoint directory holds::

    model.pt        {'config': FitConfig dict, 'backbone': trainable backbone weights (LoRA or full),
                     'head': head/bottleneck weights, 'n_vertices', 'participants', 'epoch', 'step',
                     'val_loss'}
    deepspeed/ | optimizer.pt    optimizer + scheduler state, for resuming (engine-specific)
    COMPLETE        written last (atomically): the size of every file written before it, one
                    "<bytes> <relative path>" line each, and "sha256 <hex> model.pt". A directory without it
                    is an interrupted write, one whose files differ from the list an interrupted copy or
                    damage; all are refused. model.pt also records ``base_fingerprint``, the hash of the
                    frozen weights rebuilt on load: a base that changed since is refused too.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from braintune_dist.io import atomic_path, sha256_file, write_text
from braintune_dist.model.backbone import Backbone
from braintune_dist.model.config import HeadSettings, LoraSettings, ModelConfig
from braintune_dist.config import from_dict
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.errors import UserError

MODEL_FILE, MARKER = "model.pt", "COMPLETE"


class CheckpointError(UserError):
    """A checkpoint directory is missing, incomplete or does not match the model; names the path."""


def base_fingerprint(model: BrainTuner) -> str:
    """sha256 (16 hex digits) of the backbone weights a checkpoint does not store (frozen: rebuilt from the
    config's seed or pretrained folder on load), so a load can tell that the base changed since training."""
    h = hashlib.sha256()
    for name, p in sorted(model.backbone.named_parameters()):
        if not p.requires_grad:
            h.update(name.encode())
            # hashed at bfloat16 precision: a bf16 engine (DeepSpeed on GPU) casts the frozen weights, a load
            # rebuilds them in float32, and both round to the same bf16 values
            h.update(p.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(directory: Path, model: BrainTuner, meta: dict[str, Any]) -> None:
    """Write ``model.pt`` atomically (temp name, rename). Call ``mark_complete`` after all files."""
    directory.mkdir(parents=True, exist_ok=True)
    head = {n: p.detach().cpu() for n, p in model.named_parameters() if not n.startswith("backbone.")}
    with atomic_path(directory / MODEL_FILE) as tmp:
        torch.save(dict(meta, backbone=model.backbone_state(), head=head, base_fingerprint=base_fingerprint(model)),
                   tmp)


def mark_complete(directory: Path) -> None:
    """Write ``COMPLETE`` listing every file's size, and the sha256 of ``model.pt``: the checkpoint is whole only
    if they all still match (Ray Train copies the directory to storage file by file, in no set order; a
    same-size damage of the weights shows only in the checksum)."""
    sizes = sorted((p.relative_to(directory).as_posix(), p.stat().st_size)
                   for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
    digest = sha256_file(directory / MODEL_FILE)
    write_text(directory / MARKER, "".join(f"{size} {name}\n" for name, size in sizes) + f"sha256 {digest} {MODEL_FILE}\n")


def check_complete(directory: str | os.PathLike) -> Path:
    """Raise ``CheckpointError`` naming the path unless ``directory`` is a complete checkpoint (no loading)."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint not found: {d}")
    if not (d / MODEL_FILE).is_file():
        raise CheckpointError(f"incomplete checkpoint {d}: missing {MODEL_FILE} (the write was interrupted; "
                              "use an earlier checkpoint)")
    if not (d / MARKER).is_file():
        raise CheckpointError(f"incomplete checkpoint {d}: missing {MARKER} (the write was interrupted; "
                              "use an earlier checkpoint)")
    for line in (d / MARKER).read_text().splitlines():
        size, _, name = line.partition(" ")
        if size == "sha256":
            digest, _, name = name.partition(" ")
            if sha256_file(d / name) != digest:
                raise CheckpointError(f"damaged checkpoint {d}: {name} does not match its sha256 in {MARKER}")
            continue
        if not size.isdigit():                     # "ok": a marker of the first format, without sizes
            continue
        f = d / name
        if not f.is_file() or f.stat().st_size != int(size):
            have = f"{f.stat().st_size} bytes" if f.is_file() else "missing"
            raise CheckpointError(f"incomplete checkpoint {d}: {name} is {have}, {MARKER} says {size} bytes "
                                  "(an interrupted copy?)")
    return d


def read_model_file(directory: str | os.PathLike, mmap: bool = False) -> dict[str, Any]:
    """The ``model.pt`` payload of a complete checkpoint directory (``mmap``: tensors not read until used)."""
    d = check_complete(directory)
    try:
        return torch.load(d / MODEL_FILE, map_location="cpu", weights_only=False, mmap=mmap)
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors of a damaged file)
        raise CheckpointError(f"{d / MODEL_FILE}: unreadable ({exc.__class__.__name__}: {exc})") from None


def check_base(payload: dict[str, Any], directory: str | os.PathLike) -> str:
    """The pretrained base folder a checkpoint was tuned from ('' = random init); raise if it is gone."""
    base = ((payload.get("config") or {}).get("model") or {}).get("pretrained", "")
    if base and not Path(base).is_dir():
        raise CheckpointError(f"{directory}: its base model {base} (fit.model.pretrained when it was trained) is "
                              "gone; the checkpoint stores only the tuned weights: restore that folder")
    return base


def load_tuner(directory: str | os.PathLike) -> tuple[BrainTuner, dict[str, Any]]:
    """Rebuild the full ``BrainTuner`` (backbone + LoRA + head) from a checkpoint, on CPU, in eval mode."""
    payload = read_model_file(directory)
    cfg = payload["config"]
    base = check_base(payload, directory)
    model = BrainTuner(from_dict(ModelConfig, cfg["model"]), from_dict(LoraSettings, cfg["lora"]),
                       from_dict(HeadSettings, cfg["head"]), n_vertices=payload["n_vertices"],
                       n_participants=len(payload["participants"]))
    restore_weights(model, payload, directory)
    if "base_fingerprint" in payload and base_fingerprint(model) != payload["base_fingerprint"]:
        raise CheckpointError(f"{directory}: the base model it was tuned from ({base or 'random init of the config'}) "
                              "has other weights now than when it was trained (replaced, e.g. by "
                              "pretrain.overwrite?); its results would silently differ: restore that base or retrain")
    return model.eval(), payload


def restore_weights(model: BrainTuner, payload: dict[str, Any], source: str | os.PathLike = "checkpoint") -> None:
    """Copy the checkpoint's trainable backbone and head weights into ``model`` (frozen weights are rebuilt
    from the same config/seed or pretrained path)."""
    result = model.backbone.load_state_dict(payload["backbone"], strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{source}: backbone weights do not match the model "
                              f"(unexpected {result.unexpected_keys[:3]}...)")
    head = {n: p for n, p in model.named_parameters() if not n.startswith("backbone.")}
    for n, t in payload["head"].items():
        if n not in head or head[n].shape != t.shape:
            raise CheckpointError(f"{source}: head weight {n} does not match the model")
        head[n].data.copy_(t)


def load_backbone(model_cfg: ModelConfig, checkpoint: str = "") -> Backbone:
    """Backbone for feature extraction: untuned (``checkpoint`` empty) or tuned with LoRA merged in."""
    if not checkpoint:
        from braintune_dist.model.backbone import build_backbone
        return build_backbone(model_cfg).eval()
    model, _ = load_tuner(checkpoint)
    return model.merged_backbone()
