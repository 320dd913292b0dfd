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
            tensors[f"opt.{i}.exp_avg"] = st["exp_avg"].cpu().contiguous()
            tensors[f"opt.{i}.exp_avg_sq"] = st["exp_avg_sq"].cpu().contiguous()
            steps[i] = float(st["step"])
    return tensors, json.dumps(steps)


def restore_adam(module: nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], steps: str) -> None:
    """Put :func:`adam_tensors`' moments back into ``opt`` for ``module``'s parameters."""
    by_index = {int(k): v for k, v in json.loads(steps).items()}
    for i, p in enumerate(module.parameters()):
        if i in by_index:
            opt.state[p] = {"step": torch.tensor(by_index[i]), "exp_avg": tensors[f"opt.{i}.exp_avg"],
                            "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"]}


def carry_adam(old: nn.Module, opt: torch.optim.Optimizer, new: nn.Module, lr: float) -> torch.optim.Optimizer:
    """A fresh Adam for ``new`` (the same net rebuilt: a widened head, a gated attention) that keeps
    ``opt``'s moments for every parameter of ``new`` with the same name and shape in ``old``; a
    widened layer starts afresh."""
    moments = {n: opt.state.get(p) for n, p in old.named_parameters()}
    out = torch.optim.Adam(new.parameters(), lr=lr, betas=opt.defaults["betas"])
    for n, p in new.named_parameters():
        st = moments.get(n)
        if st and st["exp_avg"].shape == p.shape:
            out.state[p] = st
    return out


def move_optimizer_state(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """The optimiser's moments onto ``device`` beside their parameters (a resumed state is read onto
    the CPU); step counts stay CPU scalars, as torch's non-fused Adam keeps them."""
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v) and k != "step":
                st[k] = v.to(device)
