"""How a step is executed: plain PyTorch, or DeepSpeed ZeRO (one process or under a launcher).

The training loop talks to one small interface (loss, backward, step, save, load), so the same
loop runs plain on a laptop, under DeepSpeed in a single CPU process, and under the
`deepspeed`/`torchrun` launcher across GPUs and nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from training.config import TrainingConfig
from training.model import TrainingError, WeightedCausalLMLoss
from training.packing import Batch

_ZERO_PRESETS: dict[str, dict[str, Any]] = {
    "zero1": {"stage": 1},
    "zero2": {"stage": 2, "contiguous_gradients": True, "overlap_comm": False},
    "zero2_offload": {"stage": 2, "contiguous_gradients": True, "overlap_comm": False,
                      "offload_optimizer": {"device": "cpu", "pin_memory": False}},
    "zero3": {"stage": 3, "contiguous_gradients": True, "overlap_comm": False},
    "zero3_offload": {"stage": 3, "contiguous_gradients": True, "overlap_comm": False,
                      "offload_optimizer": {"device": "cpu", "pin_memory": False},
                      "offload_param": {"device": "cpu", "pin_memory": False}},
}


class PlainBackend:
    rank, world_size = 0, 1

    def __init__(self, module: WeightedCausalLMLoss, optimizer, scheduler, config: TrainingConfig, bf16: bool):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.module = module.to(self.device) if config.method != "qlora" else module
        self.optimizer, self.scheduler = optimizer, scheduler
        self._max_grad_norm = config.max_grad_norm
        self._bf16 = bf16

    def loss(self, batch: Batch) -> torch.Tensor:
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self._bf16
                    else contextlib.nullcontext())
        with autocast:
            return self.module(batch.input_ids.to(self.device), batch.position_ids.to(self.device),
                               batch.target_weights.to(self.device))

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        parameters = [p for p in self.module.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self._max_grad_norm or float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.module.named_parameters() if p.requires_grad}

    def save(self, folder: Path) -> None:
        save_file(self.trainable_state(), folder / "trainable.safetensors")
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   folder / "optimizer.pt")

    def load(self, folder: Path) -> None:
        state = load_file(folder / "trainable.safetensors")
        missing = set(self.trainable_state()) - set(state)
        if missing:
            raise TrainingError(f"checkpoint {folder} does not match the model (missing {sorted(missing)[:3]})")
        self.module.load_state_dict(state, strict=False)
        saved = torch.load(folder / "optimizer.pt", weights_only=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])

    @contextlib.contextmanager
    def full_parameters(self):
        yield

    def any_rank(self, flag: bool) -> bool:
        """Whether any rank says so: only the main rank hears a stop request, every rank must stop."""
        if self.world_size == 1:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        pass


class DeepSpeedBackend(PlainBackend):
    """ZeRO sharding through a DeepSpeed engine; gradients accumulate and clip inside the engine."""

    def __init__(self, module: WeightedCausalLMLoss, optimizer, scheduler, config: TrainingConfig, bf16: bool):
        try:
            import deepspeed
        except ImportError:
            raise TrainingError("DeepSpeed is not installed: DS_BUILD_OPS=0 pip install deepspeed") from None
        _init_distributed(deepspeed)
        self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.ds_config = deepspeed_config(config, bf16)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config,
            model_parameters=[p for p in module.parameters() if p.requires_grad])
        self.module = self.engine.module
        self.device = self.engine.device
        self._gas = config.gradient_accumulation_steps
        self._micro = 0

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.engine(batch.input_ids.to(self.device), batch.position_ids.to(self.device),
                           batch.target_weights.to(self.device))

    def backward(self, loss: torch.Tensor) -> None:
        # The loop already divides by the whole step's weight; DeepSpeed must not divide again.
        self.engine.backward(loss, scale_wrt_gas=False)
        self._micro += 1
        if self._micro % self._gas:
            self.engine.step()  # not a boundary: DeepSpeed only accumulates

    def step(self) -> float:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    @property
    def learning_rate(self) -> float:
        return self.engine.get_lr()[0]

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag="deepspeed", save_latest=False)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder), tag="deepspeed")
        if path is None:
            raise TrainingError(f"DeepSpeed could not load the checkpoint in {folder}")

    @contextlib.contextmanager
    def full_parameters(self):
        """ZeRO-3 keeps each parameter sharded; gather them to save the final weights."""
        if self.ds_config["zero_optimization"]["stage"] != 3:
            yield
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
            yield

    def trainable_state(self) -> dict[str, torch.Tensor]:
        with self.full_parameters():
            return super().trainable_state()

    def close(self) -> None:
        self.engine.destroy()


def deepspeed_config(config: TrainingConfig, bf16: bool) -> dict[str, Any]:
    if isinstance(config.deepspeed, dict):
        base = json.loads(json.dumps(config.deepspeed))
    else:
        base = {"zero_optimization": dict(_ZERO_PRESETS[config.deepspeed])}
    base.setdefault("zero_optimization", {"stage": 0})
    base.update(train_micro_batch_size_per_gpu=config.batch_size,
                gradient_accumulation_steps=config.gradient_accumulation_steps,
                gradient_clipping=config.max_grad_norm or 0.0,
                bf16={"enabled": bf16},
                # The client optimizer is torch's AdamW: DeepSpeed's fused/CPU Adam needs a
                # long C++/CUDA build, and torch's runs everywhere (offload included).
                zero_allow_untested_optimizer=True, zero_force_ds_cpu_optimizer=False,
                steps_per_print=10**9, wall_clock_breakdown=False)
    return base


def _init_distributed(deepspeed) -> None:
    """Under a launcher the environment names the ranks; alone, this process is the only one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(_free_port()))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_backend(module: WeightedCausalLMLoss, optimizer, scheduler, config: TrainingConfig, bf16: bool):
    kind = DeepSpeedBackend if config.deepspeed else PlainBackend
    return kind(module, optimizer, scheduler, config, bf16)
