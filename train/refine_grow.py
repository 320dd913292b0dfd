"""Growing a trained ``refine`` network without losing what it learned.

Each function returns a larger :class:`rtanim.models.refine.RefineNet` that computes exactly what the
given one does (the new weights that feed the old outputs start at zero), so a converged run can
continue with more room instead of starting over: a flow head, bottleneck blocks, reference
inputs, wider layers. What the extra room buys is then learned, not relearned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch

from rtanim.models.refine import RefineNet


def with_flow_head(net: RefineNet) -> RefineNet:
    """The same network with a residual flow head that starts at zero (so it starts as ``net``):
    depth-to-space reads output channel k from head channels 4k..4k+3, so the new ones are appended."""
    if net.spec.flow:
        return net
    out = RefineNet(replace(net.spec, flow=True))
    state = net.state_dict()
    for k in ("head.weight", "head.bias"):
        new = out.state_dict()[k].clone().zero_()
        new[: state[k].shape[0]] = state[k]
        state[k] = new
    out.load_state_dict(state)
    return out


def with_res_blocks(net: RefineNet, n_res: int) -> RefineNet:
    """The same network with ``n_res`` bottleneck blocks; the added ones start as the identity (their
    second convolution at zero), so the deeper net starts as ``net`` and only learns what the extra
    depth buys: more room for *what* to paint (teeth or a dark cavity for these AUs) at S/8, where a
    block costs a fifth of a decoder layer."""
    if n_res < net.spec.n_res:
        raise ValueError(f"cannot drop bottleneck blocks ({net.spec.n_res} -> {n_res})")
    if n_res == net.spec.n_res:
        return net
    out = RefineNet(replace(net.spec, n_res=n_res))
    state = out.state_dict()
    state.update(net.state_dict())
    for i in range(net.spec.n_res, n_res):
        state[f"res.{i}.b.weight"].zero_()
        state[f"res.{i}.b.bias"].zero_()
    out.load_state_dict(state)
    return out


def with_reference(net: RefineNet, channels: int) -> RefineNet:
    """The same network with ``channels`` reference input channels (rtanim.models.reference) whose first-layer
    weights start at zero, so it starts exactly as ``net`` and learns only what a remembered mouth adds.
    Space-to-depth puts input channel c at c*4..c*4+3, so the new ones are appended to e1's inputs."""
    if net.spec.n_reference == channels:
        return net
    if net.spec.n_reference:
        raise ValueError(f"the net already takes {net.spec.n_reference} reference channels")
    out = RefineNet(replace(net.spec, n_reference=channels))
    state = net.state_dict()
    old = state["e1.0.weight"]
    new = out.state_dict()["e1.0.weight"].clone().zero_()
    new[:, : old.shape[1]] = old
    state["e1.0.weight"] = new
    out.load_state_dict(state)
    return out


#: Which of the widths at S/2, S/4, S/8 each channel group has (a residual block's hidden layer, "h<i>",
#: has the bottleneck's): e and d are the encoder's and decoder's activations, x3 the bottleneck stream
#: that e3 writes, FiLM scales and every residual block adds to (a skip connection reads an e group again).
_LEVEL = {"e1": 0, "d1": 0, "e2": 1, "d2": 1, "x3": 2}

Part = str | int  # a channel group, or a fixed block of that many channels (inputs, AUs, head outputs)


def group_width(group: str, widths: Sequence[int]) -> int:
    return widths[_LEVEL.get(group, 2)]


def channel_groups(net: RefineNet) -> dict[str, tuple[list[Part], list[Part]]]:
    """Per layer of ``net``: (its output channels, its input channels) as channel groups in order, the
    one map of the net's topology that resizing it reads."""
    out: dict[str, tuple[list[Part], list[Part]]] = {
        "e1.0": (["e1"], [4 * net.spec.in_channels]),
        "e2.0": (["e2"], ["e1"]),
        "e3.0": (["x3"], ["e2"]),
        "film.0": ([net.film[0].out_features], [net.film[0].in_features]),
        "film.2": (["x3", "x3"], [net.film[2].in_features]),  # gamma | beta
        "d2.0": (["d2"], ["x3", "e2"]),  # [upsampled x3 | x2]
        "d1.0": (["d1"], ["d2", "e1"]),  # [upsampled y | x1]
        "head": ([net.head.out_channels], ["d1"]),
    }
    for i in range(net.spec.n_res):
        out[f"res.{i}.a"] = ([f"h{i}"], ["x3"])
        out[f"res.{i}.b"] = (["x3"], [f"h{i}"])
    return out


def blocks(parts: Sequence[Part], widths: Sequence[int]) -> list[tuple[Part, int, int]]:
    """(part, first channel, channel count) of each part of a concatenation at ``widths``."""
    out, at = [], 0
    for part in parts:
        n = part if isinstance(part, int) else group_width(part, widths)
        out.append((part, at, n))
        at += n
    return out


def resized(net: RefineNet, widths: tuple[int, int, int], layers: Iterable[str], who: str
            ) -> tuple[dict[str, torch.Tensor], RefineNet, dict[str, torch.Tensor]]:
    """(``net``'s state, a new net of ``widths``, its state to fill in place) for a function that maps
    every layer of ``layers``; a layer of ``net`` it does not name is an error, not a silent copy."""
    old = net.state_dict()
    unknown = set(old) - {f"{k}.{p}" for k in layers for p in ("weight", "bias")}
    if unknown:
        raise ValueError(f"{who} does not know the layers {sorted(unknown)}")
    out = RefineNet(replace(net.spec, widths=widths))
    return old, out, out.state_dict()


def with_widths(net: RefineNet, widths: Sequence[int]) -> RefineNet:
    """The same network with wider layers at S/2, S/4, S/8 (``widths``, each at least the old one).
    Every old channel keeps its weights and ignores the new ones (their weights into it start at
    zero, so the wider net starts exactly as ``net``); the new channels start at the default random
    init and reach the output only through weights that start at zero and learn from the first step
    (Net2Net's function-preserving widening, Chen et al. 2016, with zero instead of split weights)."""
    new_w = tuple(int(w) for w in widths)
    old_w = tuple(net.spec.widths)
    if len(new_w) != 3 or any(n < o for n, o in zip(new_w, old_w, strict=True)):
        raise ValueError(f"widths can only grow: {old_w} -> {new_w}")
    if new_w == old_w:
        return net

    def placed(parts: Sequence[Part]) -> torch.Tensor:  # the old channels' places in the widened concatenation
        return torch.cat([wide + torch.arange(n) for (_, _, n), (_, wide, _) in
                          zip(blocks(parts, old_w), blocks(parts, new_w), strict=True)])

    places = {layer: (placed(outs), placed(ins)) for layer, (outs, ins) in channel_groups(net).items()}
    old, out, state = resized(net, new_w, places, "with_widths")
    for layer, (rows, cols) in places.items():
        w, b = state[f"{layer}.weight"], state[f"{layer}.bias"]
        w[rows] = 0.0  # an old output reads no new input ...
        w[rows[:, None], cols] = old[f"{layer}.weight"]  # ... and its old inputs as before
        b[rows] = old[f"{layer}.bias"]
    out.load_state_dict(state)
    return out
