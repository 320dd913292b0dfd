"""Adam moments in safetensors: resumable training state without pickle (the refine trainer's
state and its critic's share it)."""

from __future__ import annotations

import json

import torch
from torch import nn


def adam_tensors(module: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors ``opt.{i}.exp_avg`` / ``exp_avg_sq`` by parameter index, the steps as JSON metadata)."""
    tensors: dict[str, torch.Tensor] = {}
    steps: dict[int, float] = {}
    for i, p in enumerate(module.parameters()):
        st = opt.state.get(p)
        if st:
            tensors[f"opt.{i}.exp_avg"] = st["exp_avg"].contiguous()
            tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            steps[i] = float(st["step"])
    return tensors, json.dumps(steps)


def restore_adam(module: nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], steps: str) -> None:
    """Put :func:`adam_tensors`' moments back into ``opt`` for ``module``'s parameters."""
    by_index = {int(k): v for k, v in json.loads(steps).items()}
    for i, p in enumerate(module.parameters()):
        if i in by_index:
            opt.state[p] = {"step": torch.tensor(by_index[i]), "exp_avg": tensors[f"opt.{i}.exp_avg"],
                            "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"]}
