"""Brain-tuning checkpoints: loadable without Ray, and read as data only (no file in one can run code).

A checkpoint directory holds::

    model.safetensors  the trainable backbone weights (LoRA or full) under ``backbone.<name>`` and the
                       head/bottleneck weights under their own names
    model.json         {'config': FitConfig dict, 'n_vertices', 'participants', 'epoch', 'step', 'val_loss',
                        'base_fingerprint', ...}
    deepspeed/ | optimizer.pt    optimizer + scheduler state, for resuming (engine-specific)
    COMPLETE           written last (atomically): the size of every file written before it, one
                       "<bytes> <relative path>" line each, and a "sha256 <hex> <name>" line for each of the two
                       model files. A directory without it is an interrupted write, one whose files differ from
                       the list an interrupted copy or damage; all are refused. ``base_fingerprint`` is the hash
                       of the frozen weights rebuilt on load: a base that changed since is refused too.

Checkpoints are handed between people, so nothing here unpickles arbitrary objects: the weights are
safetensors, the metadata JSON, and every pickle still read (``optimizer.pt``, DeepSpeed's files, a
``model.pt`` of the first format, which held weights and metadata together) goes through
``torch.load(weights_only=True)`` first. The ``COMPLETE`` checksums only catch damage: whoever builds a
folder can write matching ones.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from braintune_dist.io import atomic_path, sha256_file, write_text
from braintune_dist.model.backbone import Backbone
from braintune_dist.model.config import HF_WEIGHT_FILES, HeadSettings, LoraSettings, ModelConfig
from braintune_dist.config import from_dict
from braintune_dist.model.tuner import BrainTuner
from braintune_dist.errors import UserError

WEIGHTS_FILE, META_FILE, MARKER = "model.safetensors", "model.json", "COMPLETE"
MODEL_FILES = (WEIGHTS_FILE, META_FILE)
LEGACY_FILE = "model.pt"
"""The first format: weights and metadata in one pickle, read only through ``torch.load(weights_only=True)``."""
BACKBONE = "backbone."
"""Prefix of the backbone's weights in ``model.safetensors`` (the head's names never start with it)."""
DEEPSPEED_TYPES = ("deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.zero.config.ZeroStageEnum",
                   "deepspeed.utils.tensor_fragment.fragment_address")
"""The classes DeepSpeed's ZeRO optimizer files pickle besides tensors and containers (records and an enum,
rebuilt from their fields without running any other code): the only ones allowed in ``deepspeed/``."""
NUMBER_TYPES = tuple(f"jsonargparse.typing.{name}" for name in (
    "PositiveInt", "PositiveFloat", "NonNegativeInt", "NonNegativeFloat", "ClosedUnitInterval", "OpenUnitInterval"))
"""The config's range-checked int and float subclasses (rebuilt from the number alone), which optimizer state
written before the engine passed plain numbers holds (learning rates, DeepSpeed's copy of its config)."""


class CheckpointError(UserError):
    """A checkpoint directory is missing, incomplete, unsafe to load or does not match the model; names the path."""


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
    """Write ``model.safetensors`` and ``model.json`` atomically (temp name, rename). Call ``mark_complete``
    after all files. ``meta`` must be JSON-serialisable (plain numbers, strings, lists and dicts)."""
    from safetensors.torch import save_file
    directory.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    named = [(BACKBONE + n, t) for n, t in model.backbone_state().items()]
    named += [(n, p.detach().cpu()) for n, p in model.named_parameters() if not n.startswith(BACKBONE)]
    for name, t in named:
        t = t.contiguous()
        # safetensors refuses tensors sharing memory (tied weights): each is stored as its own copy
        tensors[name] = t.clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    text = json.dumps(dict(meta, base_fingerprint=base_fingerprint(model)), indent=1)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp))
    write_text(directory / META_FILE, text + "\n")


def mark_complete(directory: Path) -> None:
    """Write ``COMPLETE`` listing every file's size, and the sha256 of the model files: the checkpoint is whole
    only if they all still match (Ray Train copies the directory to storage file by file, in no set order; a
    same-size damage of the weights shows only in the checksum)."""
    sizes = sorted((p.relative_to(directory).as_posix(), p.stat().st_size)
                   for p in directory.rglob("*") if p.is_file() and p.name != MARKER)
    sums = "".join(f"sha256 {sha256_file(directory / name)} {name}\n" for name in _model_files(directory))
    write_text(directory / MARKER, "".join(f"{size} {name}\n" for name, size in sizes) + sums)


def _model_files(d: Path) -> tuple[str, ...]:
    """The model files of the format ``d`` holds (the current pair, or the first format's ``model.pt``)."""
    legacy = (d / LEGACY_FILE).is_file() and not any((d / name).exists() for name in MODEL_FILES)
    return (LEGACY_FILE,) if legacy else MODEL_FILES


def model_files(directory: str | os.PathLike) -> list[Path]:
    """The files that hold a checkpoint's weights and metadata (what determines the model it loads)."""
    return [Path(directory) / name for name in _model_files(Path(directory))]


def is_hf_model_folder(d: Path) -> bool:
    """Whether ``d`` is a Hugging Face model folder (config.json and weights, none of a checkpoint's own files):
    named as a checkpoint, it would otherwise read as an interrupted write (no model.json)."""
    return ((d / "config.json").is_file() and any((d / w).is_file() for w in HF_WEIGHT_FILES)
            and not (d / META_FILE).exists() and not (d / MARKER).exists())


def check_complete(directory: str | os.PathLike) -> Path:
    """Raise ``CheckpointError`` naming the path unless ``directory`` is a complete checkpoint (no loading).

    Every line of ``COMPLETE`` must be a size or a sha256 line, and every model file needs its sha256 line,
    except in a ``model.pt`` checkpoint written before the sums: its marker has none (the first format's
    ``ok``, or sizes only), and ``_legacy_payload`` refuses such a one whose payload shows the sums' era."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint not found: {d}")
    if is_hf_model_folder(d):
        raise CheckpointError(f"{d} is a Hugging Face model folder, not a brain-tuning checkpoint (it has config.json "
                              f"and weights but no {META_FILE} or {MARKER}): set model.pretrained to it")
    files = _model_files(d)
    for name in files + (MARKER,):
        if not (d / name).is_file():
            raise CheckpointError(f"incomplete checkpoint {d}: missing {name} (the write was interrupted; "
                                  "use an earlier checkpoint)")
    lines = (d / MARKER).read_text().splitlines()
    summed = set()
    for line in lines:
        size, _, name = line.partition(" ")
        if size == "sha256":
            digest, _, name = name.partition(" ")
            if not (d / name).is_file():
                raise CheckpointError(f"incomplete checkpoint {d}: {name} is missing, {MARKER} has its sha256")
            if sha256_file(d / name) != digest:
                raise CheckpointError(f"damaged checkpoint {d}: {name} does not match its sha256 in {MARKER}")
            summed.add(name)
        elif size.isdigit() and name:
            f = d / name
            if not f.is_file() or f.stat().st_size != int(size):
                have = f"{f.stat().st_size} bytes" if f.is_file() else "missing"
                raise CheckpointError(f"incomplete checkpoint {d}: {name} is {have}, {MARKER} says {size} bytes "
                                      "(an interrupted copy?)")
        elif lines != ["ok"]:                      # "ok" alone: the first format's marker
            raise CheckpointError(f"damaged checkpoint {d}: {MARKER} holds {line!r}, neither a size nor a sha256 line")
    unsummed = [n for n in files if n not in summed]
    if unsummed and (files != (LEGACY_FILE,) or summed):
        raise CheckpointError(f"damaged checkpoint {d}: {MARKER} has no sha256 of {', '.join(unsummed)}")
    return d


def _summed(d: Path, name: str) -> bool:
    """Whether ``COMPLETE`` of ``d`` (already checked) holds the sha256 of ``name``."""
    return any(line.startswith("sha256 ") and line.split(" ", 2)[2:] == [name]
               for line in (d / MARKER).read_text().splitlines())


def load_pickle(path: Path, map_location: Any = "cpu", allowed: tuple[str, ...] = ()) -> Any:
    """``torch.load(weights_only=True)`` of ``path``: tensors, numbers, strings and containers, plus the classes
    named in ``allowed`` (``module.Name``); anything else raises ``CheckpointError`` naming the file."""
    import importlib
    types = [getattr(importlib.import_module(mod), name)
             for mod, _, name in (t.rpartition(".") for t in NUMBER_TYPES + tuple(allowed))]
    try:
        with torch.serialization.safe_globals(types):
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=map_location == "cpu" and zipfile.is_zipfile(path))
    except Exception as exc:  # noqa: BLE001  (unpickling refusals, zip errors of a damaged file)
        text = str(exc)
        found = re.search(r"GLOBAL (\S+)", text)
        if found:
            raise CheckpointError(
                f"{path}: cannot be loaded safely: it holds {found.group(1)}, a Python object that only running "
                "code could restore, and checkpoints are read as data only (torch.load with weights_only=True); "
                "this project never writes such objects, so the file was made or changed elsewhere: use a "
                "checkpoint from a source you trust") from None
        reason = re.search(r"(Unsupported operand \S+)", text)
        detail = reason.group(1) if reason else text.strip().splitlines()[0] if text.strip() else ""
        raise CheckpointError(f"{path}: unreadable ({exc.__class__.__name__}: {detail})") from None


def _legacy_payload(d: Path) -> dict[str, Any]:
    payload = load_pickle(d / LEGACY_FILE)
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise CheckpointError(f"{d / LEGACY_FILE}: not a brain-tuning checkpoint (no config in it)")
    # the sha256 line and base_fingerprint came in together: a model.pt with the fingerprint was written with
    # its sum, and a marker without it lost the line (check_complete lets a marker without sums through)
    if "base_fingerprint" in payload and not _summed(d, LEGACY_FILE):
        raise CheckpointError(f"damaged checkpoint {d}: {MARKER} has no sha256 of {LEGACY_FILE}")
    return payload


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a complete checkpoint directory (config, participants, epoch, ...), without its weights."""
    return _meta(check_complete(directory))


def _meta(d: Path) -> dict[str, Any]:
    """The metadata of checkpoint ``d``, already checked complete."""
    if _model_files(d) != MODEL_FILES:
        return {k: v for k, v in _legacy_payload(d).items() if k not in ("backbone", "head")}
    try:
        meta = json.loads((d / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{d / META_FILE}: unreadable ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{d / META_FILE}: not a brain-tuning checkpoint's metadata (no config in it)")
    return meta


def read_model_file(directory: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a complete checkpoint directory plus its weights: ``backbone`` and ``head``, name → tensor."""
    d = check_complete(directory)
    if _model_files(d) != MODEL_FILES:
        return _legacy_payload(d)
    from safetensors.torch import load_file
    meta = _meta(d)                                  # checked above: the model files are hashed once
    try:
        tensors = load_file(d / WEIGHTS_FILE, device="cpu")
    except Exception as exc:  # noqa: BLE001  (safetensors' header and size errors of a damaged file)
        raise CheckpointError(f"{d / WEIGHTS_FILE}: unreadable ({exc.__class__.__name__}: {exc})") from None
    backbone = {n[len(BACKBONE):]: t for n, t in tensors.items() if n.startswith(BACKBONE)}
    head = {n: t for n, t in tensors.items() if not n.startswith(BACKBONE)}
    return dict(meta, backbone=backbone, head=head)


def check_training_state(directory: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` naming the file unless every pickle of the training state a resume loads
    (``optimizer.pt``, DeepSpeed's ``deepspeed/*.pt``) holds data only.

    DeepSpeed's ``load_checkpoint`` unpickles its files with ``weights_only=False``: a file that passes here
    holds nothing but tensors, containers and ``DEEPSPEED_TYPES``, so that load runs no other code."""
    d = Path(directory)
    for f in sorted(d.glob("*.pt")):
        if f.name != LEGACY_FILE:               # read by read_model_file
            load_pickle(f)
    for f in sorted((d / "deepspeed").rglob("*.pt")):
        load_pickle(f, allowed=DEEPSPEED_TYPES)


def check_resumable(directory: str | os.PathLike) -> Path:
    """Raise ``CheckpointError`` naming the file unless a training run can resume from ``directory``: complete,
    and every file the resume loads readable as data only (without loading the weights of the current format)."""
    d = check_complete(directory)
    read_meta(d)
    check_training_state(d)
    return d


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
