"""Colour operations inside the refiner's graph: what the painted colour keeps of the warped crop.

Plain convolutions with constant weights, slices and sums, so ONNX Runtime and TensorRT run them
as part of the exported network (rtanim.models.refine.RefineNet applies them after its colour head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rtanim.face.align import CROP_SIZE


def gaussian_blur(x: torch.Tensor, sigma: float, channels: int = 3, size: int = CROP_SIZE) -> torch.Tensor:
    """``x`` [N,C,H,W] blurred by a Gaussian, renormalised at the edges (zero padding divided by the
    kernel's weight inside the image): two depthwise convolutions with constant weights and a
    constant divisor, plain ops for ONNX Runtime and TensorRT (hence the channels and the square
    size as plain ints, not read from the traced shape)."""
    r = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    kx, ky = k.view(1, 1, 1, -1), k.view(1, 1, -1, 1)

    def blur(v: torch.Tensor, ch: int) -> torch.Tensor:
        v = F.conv2d(v, kx.repeat(ch, 1, 1, 1), padding=(0, r), groups=ch)
        return F.conv2d(v, ky.repeat(ch, 1, 1, 1), padding=(r, 0), groups=ch)

    with torch.no_grad():
        inside = blur(torch.ones(1, 1, size, size, dtype=x.dtype, device=x.device), 1)
    return blur(x, channels) / inside


def keep_warp_detail(image: torch.Tensor, color: torch.Tensor, sigma: float, size: int = CROP_SIZE,
                     spare: torch.Tensor | None = None) -> torch.Tensor:
    """``color`` with its detail finer than ``sigma`` px replaced by the warped crop's: the coarse
    paint is the net's, the texture (lip lines, stubble, pores) is the person's, moved by the warp
    (the split of Yi et al., *Animating Through Warping*, 2020). Where the net keeps the crop the
    colour is unchanged; an L1-trained net paints its guesses smooth, and dlib reads smooth lips
    as another person (session 10: identity on the stills, by commanded AU). Where ``spare``
    [N,1,S,S] is 1 the colour keeps the net's own detail: inside a mouth the warp opened, the
    crop holds stretched lip, no detail worth keeping (RefineSpec.detail_spare_mouth)."""
    d = image - color
    fine = d - gaussian_blur(d, sigma, 3, size)
    if spare is not None:
        fine = fine * (1.0 - spare)
    return torch.clamp(color + fine, -1.0, 1.0)


#: Mean chroma of a crop ([-1, 1] units, |RGB - grey| averaged) from which painted colour passes
#: unchanged; below it the paint's chroma shrinks in proportion, to none on a greyscale photo.
#: Colour faces sit near 0.1 (skin), black-and-white photos and IR webcams at 0.
GREY_CHROMA = 0.02


def keep_greyscale(image: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """``color`` with its chroma scaled by how coloured ``image`` is (:data:`GREY_CHROMA`): a net
    trained mostly on colour faces paints pink lips and mouths into black-and-white photos (all of
    the still-image eval's faces are greyscale, session 9). Slices and sums only, for ONNX."""

    def grey(x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0:1] + x[:, 1:2] + x[:, 2:3]) / 3.0

    chroma = (image - grey(image)).abs().sum((1, 2, 3), keepdim=True) / float(image[0].numel())
    gain = torch.clamp(chroma / GREY_CHROMA, 0.0, 1.0)
    return color - (1.0 - gain) * (color - grey(color))  # exactly ``color`` where gain is 1
