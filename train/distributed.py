"""The processes of a training run: one, or one per device under ``torchrun``.

Gradients are averaged with one explicit all-reduce per update rather than by
DistributedDataParallel: the WGAN-GP critic is called three times per update and differentiated
twice (the gradient penalty), which DDP's reducer does not support (as in StyleGAN2-ADA).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from rtanim.errors import InputError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistEnv(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, env: DistEnv) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise InputError("--device", f"unsupported device {name!r} (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device", "CUDA requested but not available")
        if env.world > 1:  # one GPU per process
            dev = torch.device("cuda", env.local_rank)
        elif dev.index is None:  # set_device wants an index (torch 2.11 refuses a bare "cuda")
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise InputError("--device", f"unsupported device {name!r} (cpu, cuda, cuda:N)")
    return dev


def allreduce_mean(module: torch.nn.Module, world: int) -> None:
    """Average gradients over processes in one flat buffer (one collective per update)."""
    if world <= 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
        g.copy_(synced)


def broadcast_state(module: torch.nn.Module, world: int) -> None:
    if world > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def init_process_group(env: DistEnv, device: str) -> None:
    """Join torchrun's process group (nccl on GPUs, gloo on CPUs); a single process has none."""
    if env.world > 1 and not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)


def leave_process_group(env: DistEnv) -> None:
    """Wait for every process, then tear the group down."""
    if env.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
