"""Distributed engine switch: DeepSpeed (ZeRO, bf16 on GPU; gloo on CPU) or plain DDP.

Both expose the same three calls to the worker loop: ``forward(wav)``, ``backward_step(loss)`` (one
micro-batch; the optimizer steps every ``grad_accum`` micro-batches, with clipping and the LR schedule),
and ``save(dir)`` / ``load(dir)`` of the full training state (weights, optimizer, scheduler).

The LR schedule is linear warm-up then linear (or cosine) decay over ``total_steps`` = the optimizer
steps this run will actually take (epochs × steps per epoch), fixing the original brain-tuning code's schedule whose total
was ~9× the steps taken.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from braintune_dist.experiment import compat
from braintune_dist.train.config import EngineSettings, OptimSettings


def lr_lambda(total_steps: int, warmup_frac: float, schedule: str):
    """Multiplier of the peak LR at optimizer step ``s`` (0-based)."""
    warm = max(1, int(round(warmup_frac * total_steps))) if warmup_frac > 0 else 0

    def f(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (s - warm) / max(1, total_steps - warm))
        return 1.0 - frac if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return f


class Engine:
    """Wraps a model for distributed training (see module docstring)."""

    def __init__(self, model: nn.Module, optim: OptimSettings, eng: EngineSettings, total_steps: int,
                 micro_batch: int):
        self.optim_cfg, self.cfg, self.total_steps = optim, eng, total_steps
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        self.bf16 = eng.precision == "bf16" or (eng.precision == "auto" and self.device.type == "cuda")
        self.micro_steps = 0
        # plain numbers, not the config's range-checked subclasses: the optimizer state and DeepSpeed's files
        # pickle them, and a resume reads those files as data only (train.checkpoint.load_pickle)
        groups = model.param_groups(float(optim.backbone_lr), float(optim.head_lr))
        opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=float(optim.weight_decay))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total_steps, optim.warmup_frac, optim.schedule))
        if eng.kind == "deepspeed":
            self._init_deepspeed(model, opt, sched, micro_batch)
        else:
            self.model = model.to(self.device)
            if _world_size() > 1:                          # DDP only inside a Ray Train worker group
                import ray.train.torch
                self.model = ray.train.torch.prepare_model(self.model, parallel_strategy_kwargs={
                    "find_unused_parameters": False})
            self.opt, self.sched = opt, sched

    def _init_deepspeed(self, model, opt, sched, micro_batch):
        if self.device.type == "cpu" and self.cfg.skip_cpu_shm_build:
            compat.skip_cpu_shm_op()                    # plain gloo collectives instead of a JIT-built op
        import deepspeed
        for k, v in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1").items():
            os.environ.setdefault(k, v)                  # single process outside Ray: no MPI discovery
        if "MASTER_PORT" not in os.environ:              # a free port: two single-process runs must not collide
            import socket
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
        ds_cfg = {
            "train_micro_batch_size_per_gpu": int(micro_batch),
            "gradient_accumulation_steps": int(self.optim_cfg.grad_accum),
            "gradient_clipping": float(self.optim_cfg.grad_clip or 0.0),
            "zero_optimization": {"stage": int(self.cfg.zero_stage)},
            "bf16": {"enabled": self.bf16},
            "steps_per_print": 10 ** 9,
            "wall_clock_breakdown": False,
        }
        self.model, self.opt, _, self.sched = deepspeed.initialize(
            model=model, optimizer=opt, lr_scheduler=sched, config=ds_cfg,
            dist_init_required=not torch.distributed.is_initialized())

    # ------------------------------------------------------------------ steps
    @property
    def module(self) -> nn.Module:
        """The unwrapped model."""
        return getattr(self.model, "module", self.model)

    @property
    def step(self) -> int:
        """Optimizer steps taken."""
        return self.micro_steps // self.optim_cfg.grad_accum

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        wav = wav.to(self.device, non_blocking=True)
        if self.cfg.kind == "ddp" and self.bf16:
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(wav)
        return self.model(wav)          # the backbone normalises in fp32, then casts to its own (bf16) dtype

    def backward_step(self, loss: torch.Tensor) -> bool:
        """Backward one micro-batch; returns True when an optimizer step was taken."""
        self.micro_steps += 1
        boundary = self.micro_steps % self.optim_cfg.grad_accum == 0
        if self.cfg.kind == "deepspeed":
            self.model.backward(loss)
            self.model.step()                            # steps optimizer + scheduler at boundaries
            return boundary
        (loss / self.optim_cfg.grad_accum).backward()
        if boundary:
            if self.optim_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
        return boundary

    def lrs(self) -> dict[str, float]:
        return {f"lr_{g.get('name', i)}": g["lr"] for i, g in enumerate(self.opt.param_groups)}

    # ------------------------------------------------------------------ state
    def save(self, directory: Path) -> None:
        """Training state for resume (every rank calls this; DeepSpeed shards optimizer state by rank)."""
        if self.cfg.kind == "deepspeed":
            self.model.save_checkpoint(str(directory), tag="deepspeed", client_state={"micro_steps": self.micro_steps})
        elif _rank() == 0:
            torch.save({"opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                        "micro_steps": self.micro_steps}, directory / "optimizer.pt")

    def load(self, directory: Path) -> None:
        """Restore the state ``save`` wrote; ``CheckpointError`` naming the file if one holds more than data."""
        from braintune_dist.train.checkpoint import check_training_state, load_pickle
        if self.cfg.kind == "deepspeed":
            # DeepSpeed unpickles its files with weights_only=False: they are checked to hold data only first
            check_training_state(directory)
            _, client = self.model.load_checkpoint(str(directory), tag="deepspeed")
            self.micro_steps = int(client["micro_steps"])
            return
        state = load_pickle(directory / "optimizer.pt", map_location=self.device)
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.micro_steps = int(state["micro_steps"])


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
