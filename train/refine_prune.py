"""Narrowing a trained ``refine`` network for speed: keep each layer's most used channels.

A narrower net costs less per face (a 3x3 convolution's cost grows with its input times its output
width), but trained from scratch it would need the whole history of the wide one again. Pruning
keeps what the wide net learned in the channels it relies on most; distilling the wide net
(``--teacher``) then teaches the narrow one what the dropped channels did.

A channel's importance is the norm of the weights that write it times how much the outputs read it
(through every layer between, weighted by what that layer's channels are worth): a channel nobody
reads, or that carries nothing, goes first. Data-free, and the same ranking for every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rtanim.models.refine import RefineNet
from train.refine_grow import Part, blocks, channel_groups, group_width, resized


def _index(parts: Sequence[Part], keep: dict[str, torch.Tensor], old: Sequence[int]) -> torch.Tensor:
    """Indices into the old concatenation of ``parts`` of the channels the narrow net keeps."""
    return torch.cat([at + (torch.arange(n) if isinstance(part, int) else keep[part]) for part, at, n in blocks(parts, old)])


def importance(net: RefineNet) -> dict[str, torch.Tensor]:
    """Per channel group, each channel's (norm written) x (how much the output reads it).

    What a channel feeds counts by the importance of what it feeds, from the heads back (the
    bottleneck stream first through the decoder, then through the residual blocks), so a channel that
    reaches the output only through zero weights scores 0 however large its own weights are."""
    state = {k: v.detach().float() for k, v in net.state_dict().items()}
    old = net.spec.widths
    layers = channel_groups(net)

    def norms(layer: str) -> torch.Tensor:  # [out, in]: each 3x3 (or linear) weight's L2 norm
        w = state[f"{layer}.weight"]
        return w.reshape(w.shape[0], w.shape[1], -1).pow(2).sum(-1).sqrt()

    def span(parts: Sequence[Part], group: str) -> slice:  # where ``group`` sits in the concatenation
        return next(slice(at, at + n) for part, at, n in blocks(parts, old) if part == group)

    written: dict[str, torch.Tensor] = {}
    for layer, (outs, _) in layers.items():
        for g in {p for p in outs if isinstance(p, str)}:
            rows = norms(layer)[span(outs, g)].pow(2).sum(1)
            written[g] = written.get(g, torch.zeros_like(rows)) + rows
    read: dict[str, torch.Tensor] = {}

    def add_reads(group: str, readers: Sequence[str]) -> None:
        for layer in readers:
            outs, ins = layers[layer]
            weight = torch.cat([torch.ones(p) if isinstance(p, int) else read[p] for p in outs])
            r = weight @ norms(layer)[:, span(ins, group)]
            read[group] = read.get(group, torch.zeros_like(r)) + r / r.sum().clamp_min(1e-12)

    n_res = net.spec.n_res
    add_reads("d1", ["head"])
    add_reads("d2", ["d1.0"])
    add_reads("x3", ["d2.0"])
    for i in range(n_res):
        add_reads(f"h{i}", [f"res.{i}.b"])
    add_reads("x3", [f"res.{i}.a" for i in range(n_res)])
    add_reads("e2", ["e3.0", "d2.0"])
    add_reads("e1", ["e2.0", "d1.0"])
    return {g: written[g].sqrt() * read[g] for g in written}


def narrowed(net: RefineNet, widths: Sequence[int]) -> RefineNet:
    """``net`` with ``widths`` channels at S/2, S/4, S/8 (each at most the old one), keeping the most
    important channels of each group in their old order, with their weights and biases. The result
    computes only approximately what ``net`` does: distil ``net`` into it."""
    new_w = tuple(int(w) for w in widths)
    old_w = tuple(net.spec.widths)
    if len(new_w) != 3 or any(n > o or n < 1 for n, o in zip(new_w, old_w, strict=True)):
        raise ValueError(f"widths can only shrink: {old_w} -> {new_w}")
    if new_w == old_w:
        return net
    score = importance(net)
    keep = {g: torch.sort(torch.topk(s, group_width(g, new_w)).indices).values for g, s in score.items()}
    layers = channel_groups(net)
    old, out, state = resized(net, new_w, layers, "narrowed")
    for layer, (outs, ins) in layers.items():
        rows, cols = _index(outs, keep, old_w), _index(ins, keep, old_w)
        state[f"{layer}.weight"].copy_(old[f"{layer}.weight"][rows][:, cols])
        state[f"{layer}.bias"].copy_(old[f"{layer}.bias"][rows])
    out.load_state_dict(state)
    return out
