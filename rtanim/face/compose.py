"""Paste generator outputs back into the full-resolution frame (docs/ARCHITECTURE.md, "Data flow" step 6).

Per face, the generator gives attention A (1 = keep the input pixel), colour C and, for flow
models, a backward flow F, all at crop resolution. Rather than pasting a 128x128 image back,
A, C and F are warped to the frame with the inverse crop transform and applied to the frame's
own pixels at native resolution, so untouched skin keeps its full detail and F moves real
pixels. A feathered mask in crop coordinates confines the change to the face region and hides
the crop's edge; only the bounding box of that region is touched, so every pixel outside it is
byte-identical to the input.

A, C and F carry no more detail than the crop, so they are resampled on a frame-aligned grid of
about crop resolution (one sample per k x k frame pixels, :func:`grid_factor`) and upsampled
bilinearly to the box; only the remap of the frame's pixels and the blend run per frame pixel.
A face twice as wide in the frame then costs the same warps; only the remap and the blend grow,
with its area.
The result stays within a few grey levels of resampling at every frame pixel (``step=0``, the
reference), and the changed area grows by less than one crop pixel.

Conventions shared with the engines and training (docs/ARCHITECTURE.md, "Engines"):

- A: [1, S, S] in [0, 1]; C: [3, S, S] float in [-1, 1] (or uint8 in [0, 255]);
  F: [2, S, S] normalised backward offsets (x, y) in grid_sample's ``align_corners=False``
  convention, i.e. in units of the crop half-size: output crop pixel ``p`` samples the input
  crop at ``p + F(p) * S / 2`` (crop pixels).
- The crop transform maps frame pixels to crop pixels (2x3, OpenCV convention: integer
  coordinates are pixel centres). Only ``.matrix`` is read here, so compose does not depend
  on how align.py builds it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import cv2
import numpy as np

#: Width of the feathered band at the crop's edge, in crop pixels (at S = 128).
FEATHER_PX = 6.0
#: Corner radius of the rounded-rectangle face region, in crop pixels (at S = 128).
CORNER_PX = 24.0
#: Largest spacing, in crop pixels, of the grid compose resamples A, C and F on (see grid_factor).
GRID_STEP = 1.0
#: With a colour base: how far (mean grey levels over RGB) the colour may move from its base and
#: still carry the frame's detail; the share kept is exp(-|C - base| / DETAIL_TAU). Session 8:
#: detail everywhere cost 0.03 dB of mouth PSNR in self-reenactment (stretched-lip texture left
#: inside painted mouths); none cost identity on photos (blurred lips).
DETAIL_TAU = 12.0


class HasMatrix(Protocol):
    matrix: np.ndarray  # 2x3, frame px -> crop px


@dataclass(frozen=True)
class FaceOutput:
    """One face's generator output at crop resolution (numpy, channels first).

    ``attention`` [1,S,S] in [0,1] (1 keeps the input); ``color`` [3,S,S] float in [-1,1] or
    uint8; ``flow`` [2,S,S] normalised backward offsets, or None for models without flow.

    ``color_base`` ([3,S,S], the scale of ``color``) is the crop the colour was painted over (the
    refine model's warped crop). With it, where the colour only adjusts that crop (a lip or lid
    recoloured), compose adds ``color - color_base`` to the frame's own moved pixels instead of
    replacing them, so they keep the frame's full-resolution detail (Yi et al. 2020 carry high
    frequencies the same way); where it paints something new (a dark mouth over stretched lips)
    the colour replaces them, as the detail of what was there would be wrong (:data:`DETAIL_TAU`).
    At crop resolution both are the same composite. Without it, ``color`` replaces the pixels.
    """

    attention: np.ndarray
    color: np.ndarray
    flow: np.ndarray | None = None
    color_base: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.attention.shape[-1])


def unbatch(outputs: Any) -> list[FaceOutput]:
    """Split an engine's batched ``Outputs`` (attention [N,1,S,S], color, flow or None) per face."""

    def np_(x: Any) -> np.ndarray | None:
        if x is None:
            return None
        if hasattr(x, "detach"):
            x = x.detach().float().cpu().numpy()
        return np.asarray(x)

    att, col, flo = np_(outputs.attention), np_(outputs.color), np_(getattr(outputs, "flow", None))
    return [FaceOutput(att[i], col[i], None if flo is None else flo[i]) for i in range(att.shape[0])]


@lru_cache(maxsize=8)
def feather_mask(size: int = 128, feather: float = FEATHER_PX, corner: float = CORNER_PX) -> np.ndarray:
    """Soft region mask [S,S] float32 in crop coordinates: 1 inside, 0 at the crop edge.

    A rounded rectangle (the crop template already frames the whole face with a small margin),
    with a smoothstep ramp of ``feather`` px so neither A, C nor F shows a seam. Scales with S.
    """
    s = size / 128.0
    feather, corner = feather * s, corner * s
    c = np.arange(size, dtype=np.float64)
    # Distance inside the rounded rectangle whose edge runs through the outermost pixel centres.
    half = (size - 1) / 2.0
    dx = np.abs(c[None, :] - half) - (half - corner)
    dy = np.abs(c[:, None] - half) - (half - corner)
    outside = np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)
    inside = corner - outside  # 0 on the edge, grows inwards
    t = np.clip(inside / feather, 0.0, 1.0)
    mask = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    mask.setflags(write=False)  # cached: shared by every call
    return mask


def _color01(color: np.ndarray) -> np.ndarray:
    """Colour as float32 [3,S,S] in grey levels [0, 255]."""
    if color.dtype == np.uint8:
        return color.astype(np.float32)
    return (np.clip(color.astype(np.float32), -1.0, 1.0) + 1.0) * 127.5


def crop_stack(out: FaceOutput) -> np.ndarray:
    """The crop-space quantities compose resamples, premultiplied by the region mask.

    Channels: w*C (premultiplied, so resampling never bleeds C where w is 0), w = mask*(1-A) (how
    much of the frame's pixels C replaces), then, for flow models, mask*F in crop pixels (x, y).
    With a colour base, w*(C - d*base) and w*(1-d) instead, d the detail kept
    (:class:`FaceOutput`): the frame's pixels count d*w more, base's less by as much.
    Returns [S,S,6] float32 with flow, [S,S,4] without.
    """
    size = out.size
    mask = feather_mask(size)
    att = np.clip(out.attention.reshape(size, size).astype(np.float32), 0.0, 1.0)
    w = mask * (1.0 - att)
    stack = np.empty((size, size, 4 if out.flow is None else 6), np.float32)
    color = _color01(out.color)
    if out.color_base is not None:  # C + detail * (frame - base): the frame's detail where C adjusts base
        under = _color01(out.color_base)
        detail = np.exp(np.abs(color - under).mean(0) * np.float32(-1.0 / DETAIL_TAU))
        color -= detail[None] * under
        w_keep = w * (1.0 - detail)
    else:
        w_keep = w
    stack[..., 0:3] = (color * w[None]).transpose(1, 2, 0)
    stack[..., 3] = w_keep
    if out.flow is not None:
        stack[..., 4:] = (out.flow.astype(np.float32) * (size / 2.0) * mask[None]).transpose(1, 2, 0)
    return stack


def region_box(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Frame bounding box (x0, y0, x1, y1), end-exclusive, of the crop square; None if off-frame."""
    m = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(m)[:2]
    lo, hi = -0.5, size - 0.5
    corners = np.array([[lo, lo, 1], [hi, lo, 1], [lo, hi, 1], [hi, hi, 1]], np.float64)
    pts = corners @ inv.T
    h, w = shape[:2]
    x0 = max(int(np.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 2, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def grid_factor(matrix: np.ndarray, step: float = GRID_STEP) -> int:
    """Frame pixels per sample of the grid A, C and F are resampled on: the largest k >= 1 whose
    k frame pixels span at most ``step`` crop pixels (1 at native resolution, ``step`` <= 0)."""
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, np.float64)[:, :2]))))  # crop px per frame px
    return max(1, int(step / scale + 1e-9)) if step > 0 else 1


def _grid_matrix(matrix: np.ndarray, x0: float, y0: float, k: int) -> np.ndarray:
    """Frame->crop matrix of a grid whose sample (i, j) sits at frame pixel (x0 + k i, y0 + k j)."""
    grid = np.array([[k, 0.0, x0], [0.0, k, y0], [0.0, 0.0, 1.0]])
    return np.asarray(matrix, np.float64) @ grid


class _Scratch(threading.local):
    """Per-thread buffers reused across calls: at 720p a fresh set of box-sized float arrays every
    frame costs more in page faults (thousands a call) than the arithmetic done in them. Holds
    about 14 float32 per pixel of the largest face box seen (20 MB for a 600 px face)."""

    def __init__(self) -> None:
        self.bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape))
        buf = self.bufs.get(name)
        if buf is None or buf.size < n:
            buf = self.bufs[name] = np.empty(n + n // 4, np.float32)  # headroom: boxes jitter in size
        return buf[:n].reshape(shape)


_scratch = _Scratch()


def _upsample(low: np.ndarray, k: int, pad: int, px: tuple[int, int, int, int], name: str,
              s0: int = 0, t0: int = 0) -> np.ndarray:
    """Bilinear upsampling by k of reduced-grid samples (those from row ``s0``, column ``t0`` of the
    grid on: a part of it, :func:`_painted_part`), cut to the box pixels ``px`` (y0, y1, x0, x1).

    cv2.resize by an integer factor puts output pixel x at input (x + 0.5) / k - 0.5: the block
    centres :func:`_compose_into` samples at. The ``pad`` samples around the box keep the box
    off the border, where resize would clamp.
    """
    if k == 1:
        return low
    y0, y1, x0, x1 = px
    up = _scratch.get(name, (low.shape[0] * k, low.shape[1] * k, low.shape[2]))
    cv2.resize(np.ascontiguousarray(low), up.shape[1::-1], dst=up, interpolation=cv2.INTER_LINEAR)
    # Upsampled pixel Y of the part is pixel Y + k * s0 of the whole grid's, i.e. box pixel Y + k * (s0 - pad).
    dy, dx = k * (s0 - pad), k * (t0 - pad)
    return up[y0 - dy : y1 - dy, x0 - dx : x1 - dx]


def _compose_into(result: np.ndarray, out: FaceOutput, transform: HasMatrix, step: float) -> None:
    size = out.size
    matrix = np.asarray(transform.matrix, np.float64)
    box = region_box(matrix, size, result.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    shape = (y1 - y0, x1 - x0)
    # A, C and F are smooth at frame scale (crop resolution): resample them on a grid of one sample
    # per k x k frame pixels and upsample bilinearly; the frame's own pixels stay at full resolution.
    k = grid_factor(matrix, step)
    pad = int(k > 1)
    ny, nx = -(-shape[0] // k) + 2 * pad, -(-shape[1] // k) + 2 * pad
    # Sample (i, j) sits at the centre of block (i - pad, j - pad) of the box: frame pixel x0 + off + k i.
    off = (k - 1) / 2.0 - k * pad
    grid_m = _grid_matrix(matrix, x0 + off, y0 + off, k)
    stack = crop_stack(out)

    def back(chans: np.ndarray, name: str) -> np.ndarray:
        # 1, 3 or 4 channels per call: OpenCV interpolates other counts on a coarse 1/32-px lattice,
        # which would break agreement with compose_torch near sharp edges.
        dst = _scratch.get(name, (ny, nx, chans.shape[-1]))
        cv2.warpAffine(np.ascontiguousarray(chans), grid_m, (nx, ny), dst=dst,
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return dst

    wc = back(stack[..., 0:3], "wc")
    rest = back(stack[..., 3:], "rest")  # w, then the flow's x and y in crop pixels
    roi = result[y0:y1, x0:x1]
    if stack.shape[-1] == 6:
        # Crop-pixel offsets -> frame-pixel offsets: d_frame = L^-1 d_crop, L the linear part.
        lin_inv = np.linalg.inv(matrix[:, :2]).astype(np.float32)
        fx, fy = rest[..., 1], rest[..., 2]
        maps = _scratch.get("maps", (ny, nx, 2))
        np.multiply(fx, lin_inv[0, 0], out=maps[..., 0])
        maps[..., 0] += lin_inv[0, 1] * fy
        np.multiply(fx, lin_inv[1, 0], out=maps[..., 1])
        maps[..., 1] += lin_inv[1, 1] * fy
        # Sample a float window around the box (flow may reach outside it): one rounding, not two.
        # Upsampled offsets are convex mixtures of these samples, so their largest bounds the reach.
        h, w_ = result.shape[:2]
        reach = int(np.ceil(cv2.norm(maps, cv2.NORM_INF))) + 2
        wx0, wy0, wx1, wy1 = max(x0 - reach, 0), max(y0 - reach, 0), min(x1 + reach, w_), min(y1 + reach, h)
        # Sample positions are linear in the index, so upsampling reproduces every pixel's own.
        maps[..., 0] += (k * np.arange(nx, dtype=np.float32) + (off + x0 - wx0))[None, :]
        maps[..., 1] += (k * np.arange(ny, dtype=np.float32) + (off + y0 - wy0))[:, None]
        window = _scratch.get("window", (wy1 - wy0, wx1 - wx0, 3))
        np.copyto(window, result[wy0:wy1, wx0:wx1])
        base = _scratch.get("base", (*shape, 3))
        up_maps = _upsample(maps, k, pad, (0, shape[0], 0, shape[1]), "up_maps")
        cv2.remap(window, up_maps, None, cv2.INTER_LINEAR, dst=base,
                  borderMode=cv2.BORDER_REPLICATE)
    elif not rest.any():
        return  # nothing repainted, nothing moved
    else:
        base = _scratch.get("base", (*shape, 3))
        np.copyto(base, roi)
    if not rest[..., 0].any() and not wc.any():  # nothing repainted (the warp model): round the moved pixels in
        cv2.convertScaleAbs(base, dst=roi)
        return
    # result = base * (1 - w) + w*C in two passes; the second rounds (half to even, where
    # compose_torch rounds half up: they differ on exact ties only) and saturates into the frame.
    # Only the rows and columns something is painted in take the float passes; the rest of the box
    # (all of it but the mouth and eyes with a paint mask) is the moved pixels rounded in, as above.
    part = _painted_part(rest[..., 0], wc, k, pad, shape)
    if part is None:
        cv2.convertScaleAbs(base, dst=roi)
        return
    (ya, yb, xa, xb), (sa, sb, ta, tb) = part
    for band in (np.s_[:ya], np.s_[yb:], np.s_[ya:yb, :xa], np.s_[ya:yb, xb:]):  # around the part
        if base[band].size:
            cv2.convertScaleAbs(base[band], dst=roi[band])
    keep = _scratch.get("keep", (sb - sa, tb - ta, 3))
    np.subtract(1.0, rest[sa:sb, ta:tb, 0:1], out=keep)
    sub = base[ya:yb, xa:xb]
    cv2.multiply(sub, _upsample(keep, k, pad, (ya, yb, xa, xb), "up3", sa, ta), dst=sub)
    cv2.add(sub, _upsample(wc[sa:sb, ta:tb], k, pad, (ya, yb, xa, xb), "up3", sa, ta),
            dst=roi[ya:yb, xa:xb], dtype=cv2.CV_8U)


def _painted_part(w: np.ndarray, wc: np.ndarray, k: int, pad: int, shape: tuple[int, int]
                  ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Where a repaint reaches after upsampling: box pixels (y0, y1, x0, x1) and the grid samples
    (s0, s1, t0, t1) to upsample for them, both end-exclusive; None where nothing is painted.

    A sample i reaches box pixels within one sample of its own block (bilinear by k), so the pixels
    run one block beyond the painted samples on each side, and the samples one more beyond those,
    so upsampling the part (:func:`_upsample` from s0, t0) never clamps where the whole grid's
    would not: every pixel of the part is what upsampling the whole grid gives.
    """
    painted = (w != 0) | wc.any(axis=-1)
    rows, cols = np.flatnonzero(painted.any(axis=1)), np.flatnonzero(painted.any(axis=0))
    if rows.size == 0:
        return None
    ny, nx = w.shape
    if k == 1:
        return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), \
            (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    y0, y1 = max(k * (int(rows[0]) - 1 - pad), 0), min(k * (int(rows[-1]) + 2 - pad), shape[0])
    x0, x1 = max(k * (int(cols[0]) - 1 - pad), 0), min(k * (int(cols[-1]) + 2 - pad), shape[1])
    s0, s1 = max(int(rows[0]) - 2, 0), min(int(rows[-1]) + 3, ny)
    t0, t1 = max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 3, nx)
    return (y0, y1, x0, x1), (s0, s1, t0, t1)


def compose(
    frame: np.ndarray, outputs: Sequence[FaceOutput], transforms: Sequence[HasMatrix], *, step: float = GRID_STEP
) -> np.ndarray:
    """Composite every face's output into a copy of ``frame`` (uint8 HxWx3), in order.

    Faces compose independently: each one reads the frame as the faces before it left it, so
    overlapping regions stack like layers. ``frame`` is never modified. A, C and F are resampled
    every ``step`` crop pixels at most (:func:`grid_factor`) and upsampled bilinearly, so their
    warps cost the same at any frame size; ``step=0`` resamples them at every frame pixel (the
    reference, what :func:`compose_torch` computes).
    """
    if len(outputs) != len(transforms):
        raise ValueError(f"{len(outputs)} outputs but {len(transforms)} transforms")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 HxWx3, got {frame.dtype} {frame.shape}")
    result = frame.copy()
    for out, t in zip(outputs, transforms, strict=True):
        _compose_into(result, out, t, step)
    return result


# ----------------------------------------------------------------------------- torch


def compose_torch(frame: Any, attention: Any, color: Any, flow: Any, transforms: Sequence[HasMatrix],
                  color_base: Any = None) -> Any:
    """The same composite on tensors (any device), with grid_sample instead of OpenCV.

    ``frame`` uint8 [H,W,3] tensor (the pipeline's layout); ``attention`` [N,1,S,S], ``color``
    [N,3,S,S] in [-1,1], ``flow`` [N,2,S,S] or None, ``color_base`` [N,3,S,S] or None
    (:class:`FaceOutput`), one transform per face. Returns a new uint8
    [H,W,3] tensor. Resamples A, C and F at every frame pixel: agrees with ``compose(..., step=0)``
    within 1 grey level on natural images (OpenCV quantises sample positions to 1/32 px,
    grid_sample does not), and with the default :func:`compose` within its grid's few grey levels.
    """
    import torch
    import torch.nn.functional as F

    n, _, size, _ = attention.shape
    if len(transforms) != n:
        raise ValueError(f"{n} outputs but {len(transforms)} transforms")
    dev = frame.device
    result = frame.clone()
    h, w_ = frame.shape[:2]
    mask = torch.from_numpy(np.array(feather_mask(size))).to(dev)
    for i, t in enumerate(transforms):
        matrix = np.asarray(t.matrix, np.float64)
        box = region_box(matrix, size, (h, w_))
        if box is None:
            continue
        x0, y0, x1, y1 = box
        wgt = mask * (1.0 - attention[i, 0].float().clamp(0, 1))
        col = color[i].float()
        col = col if color.dtype == torch.uint8 else (col.clamp(-1, 1) + 1.0) * 127.5
        keep_w = wgt
        if color_base is not None:
            under = color_base[i].float()
            under = under if color_base.dtype == torch.uint8 else (under.clamp(-1, 1) + 1.0) * 127.5
            detail = torch.exp((col - under).abs().mean(0) * (-1.0 / DETAIL_TAU))
            col = col - detail[None] * under
            keep_w = wgt * (1.0 - detail)
        chans = [keep_w[None], col * wgt[None]]
        if flow is not None:
            chans.append(flow[i].float() * (size / 2.0) * mask[None])
        stack = torch.cat(chans, 0)[None]  # [1,C,S,S]
        # ROI pixel grid -> crop pixels -> grid_sample's normalised coordinates.
        m = torch.tensor(matrix, dtype=torch.float64, device=dev)
        ys, xs = torch.meshgrid(
            torch.arange(y0, y1, device=dev, dtype=torch.float64),
            torch.arange(x0, x1, device=dev, dtype=torch.float64),
            indexing="ij",
        )
        cx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
        cy = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
        grid = torch.stack([(2 * cx + 1) / size - 1, (2 * cy + 1) / size - 1], -1)[None].float()
        warped = F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        wr = warped[0:1]
        if flow is not None:
            lin_inv = torch.tensor(np.linalg.inv(matrix[:, :2]), dtype=torch.float64, device=dev)
            fx, fy = warped[4].double(), warped[5].double()
            sx = xs + lin_inv[0, 0] * fx + lin_inv[0, 1] * fy
            sy = ys + lin_inv[1, 0] * fx + lin_inv[1, 1] * fy
            # Replicate-border sampling, like cv2.BORDER_REPLICATE.
            sx, sy = sx.clamp(0, w_ - 1), sy.clamp(0, h - 1)
            fgrid = torch.stack([(2 * sx + 1) / w_ - 1, (2 * sy + 1) / h - 1], -1)[None].float()
            src = result.permute(2, 0, 1)[None].float()
            base = F.grid_sample(src, fgrid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        else:
            base = result[y0:y1, x0:x1].permute(2, 0, 1).float()
        blended = base * (1.0 - wr) + warped[1:4]
        result[y0:y1, x0:x1] = (blended + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return result
