"""The ``refine`` model: ``warp`` does the geometry, a small network paints what a warp cannot.

Geng et al. (2018, "Warp-guided GANs for single-photo facial animation") and Yi et al. (2020,
"Animating Through Warping"): a cheap 2D warp moves the real pixels, and a refinement network
only repaints what the warp cannot produce - the inside of a mouth that opens (dark cavity,
teeth), a lid that closes, creases. Here the warp is rtanim's own (the AU -> landmark basis and
its thin-plate flow, rtanim/geometry.py); the network sees

- the warped crop (RGB in [-1, 1]),
- four geometry maps at crop resolution (:func:`geometry_maps`): where the inner mouth and the
  eye openings *should* be (the warp's target landmarks) and where the warped crop *already
  shows* a real mouth interior / real eye (the source's regions carried by the same flow), so
  it knows what to keep and what to paint,
- the target AUs, through FiLM on the bottleneck (a per-channel scale and shift that instance
  normalisation cannot erase, unlike GANimation's tiled AU planes),

and returns GANimation's attention and colour; the composite is ``A * warp(I, F) + (1 - A) * C``
with the warp's own flow F, so rtanim/compose.py applies it at full frame resolution unchanged
and every pixel the network leaves alone (A = 1) is exactly ``warp``'s.

With ``RefineSpec.flow`` the network also returns a small residual flow dF (at most
:data:`FLOW_MAX`): the AU basis is linear and puts a real mouth's lips and jaw only roughly where
they go, so the net may move the warped pixels a few more pixels before it paints. The run time
composes F and dF into one flow (:func:`compose_flows`), so compose still resamples the frame once.

With ``RefineSpec.paint_mask`` the network may paint only where the warp changed the mouth or the
eyes (:func:`paint_region`, computed inside the graph from its own geometry inputs): where the
target's inner mouth / eye openings differ from the source's carried by the warp, grown to cover
lips and lids. Unmasked, the net repainted what the command did not touch: on a still whose
measured jaw-drop AU was lower than its wide-open mouth looked, raising the brows (AU01) made it
half-close the mouth, because the AUs it is conditioned on said so; and trained with L1 it paints
averages, so every repainted mouth or eye is blurred (identity distance on the still-image eval
0.186 against warp's 0.113 at 20,296 steps; blurring only the lips of those photos moves dlib's
embedding by 0.08, only the eyes by 0.10).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rtanim.expression.aus import EXTENDED_CODES
from rtanim.face.align import CROP_SIZE
from rtanim.face.landmarks import EYE_A, EYE_B, INNER_MOUTH, polygon_mask
from rtanim.models.refine_colour import keep_greyscale, keep_warp_detail

#: Geometry channels, in order.
GEOMETRY_CHANNELS = ("target_mouth", "target_eyes", "source_mouth", "source_eyes")
#: The extra geometry channel of a net with ``RefineSpec.paint_keep_stretch``: the source's inner mouth
#: where the source shows it, before the warp (its area is how far the source's own mouth is open;
#: the carried map's area is the target's, since the warp stretches a slit into the opening).
OWN_MOUTH_CHANNEL = "source_mouth_own"


def flow_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (x, y) for a normalised backward flow [2,S,S] (compose.py's convention)."""
    size = flow.shape[-1]
    grid = np.arange(size, dtype=np.float32)
    half = np.float32(size / 2.0)
    return grid[None, :] + flow[0] * half, grid[:, None] + flow[1] * half


def warp_image(image: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
    """``image`` (HxW or HxWxC) resampled by the backward flow, as compose does at crop size."""
    if flow is None or not np.any(flow):
        return image
    mx, my = flow_maps(flow.astype(np.float32))
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def compose_flows(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """One backward flow [2,S,S] for warping by ``first`` and then by ``then``, so the image is
    resampled once (two resamplings blur it more than a single warp does)."""
    tx, ty = flow_maps(then)
    fx = cv2.remap(first[0], tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fy = cv2.remap(first[1], tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.stack([then[0] + fx, then[1] + fy]).astype(np.float32)


def geometry_maps(
    target_landmarks: np.ndarray,
    source_landmarks: np.ndarray,
    flow: np.ndarray | None,
    size: int = CROP_SIZE,
    source_hidden: tuple[bool, bool] = (False, False),
    own_mouth: bool = False,
) -> np.ndarray:
    """The network's four geometry channels [4,S,S] float32 in [0, 1] (:data:`GEOMETRY_CHANNELS`),
    with ``own_mouth`` a fifth (:data:`OWN_MOUTH_CHANNEL`, for ``RefineSpec.paint_keep_stretch``).

    Target regions come from the landmarks the warp moved the face to; source regions are the
    source face's inner mouth / eye openings resampled by the same ``flow``, i.e. where the warped
    crop shows real interior pixels. ``source_hidden`` (mouth, eyes) zeroes a source region whose
    pixels were blanked (training pairs), so the maps never claim content that is not there.
    """
    out = np.zeros((5 if own_mouth else 4, size, size), np.float32)
    out[0] = polygon_mask(target_landmarks, [INNER_MOUTH], size)
    out[1] = polygon_mask(target_landmarks, [EYE_A, EYE_B], size)
    src = np.stack([polygon_mask(source_landmarks, [INNER_MOUTH], size),
                    polygon_mask(source_landmarks, [EYE_A, EYE_B], size)], -1)
    if own_mouth and not source_hidden[0]:
        out[4] = src[..., 0]
    src = warp_image(src, flow)
    for i, hidden in enumerate(source_hidden):
        if not hidden:
            out[2 + i] = src[..., i]
    return out


def warp_inputs(warp, crop_rgb: np.ndarray, landmarks: np.ndarray, live_aus, target_aus, own_mouth: bool = False,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the network sees when ``warp`` (a rtanim.models.geometry.WarpModel) takes a face from its live
    AUs to the targets: (warped crop S x S x 3 uint8, geometry [4,S,S] (5 with ``own_mouth``), flow [2,S,S], target
    landmarks N x 2). The run
    time and the training pairs warped as at run time both use it, so they cannot drift apart."""
    src = np.asarray(landmarks, np.float64)[:, :2]
    flow = warp.flow(src, live_aus, target_aus)
    target = src + warp.landmark_motion(live_aus, target_aus)[: len(src)]
    return warp_image(crop_rgb, flow), geometry_maps(target, src, flow, own_mouth=own_mouth), flow, target


# ----------------------------------------------------------------------------- network


@dataclass(frozen=True)
class RefineSpec:
    """Architecture of the refiner (stored in checkpoints)."""

    widths: tuple[int, int, int] = (32, 64, 96)  # at S/2, S/4, S/8 (S/2 by space-to-depth)
    n_res: int = 2
    au_codes: tuple[str, ...] = EXTENDED_CODES
    crop_size: int = CROP_SIZE
    n_geometry: int = len(GEOMETRY_CHANNELS)
    flow: bool = False  # a residual flow head (outputs attention, color, flow)
    paint_mask: bool = False  # paint only where the warp changed mouth or eyes (paint_region); elsewhere A = 1
    paint_grow: tuple[int, int] = (14, 7)  # paint_region's reach around a changed mouth / eyes (px at 128)
    paint_min: float = 0.0  # paint_region ignores changes of smaller local coverage (0: any change)
    paint_small: int = 0  # paint_region's mouth reach for a small change (px at 128; 0: always paint_grow[0])
    paint_area: tuple[float, float] = (20.0, 100.0)  # changed mouth px (at 128) from paint_small to paint_grow[0]
    #: paint_region leaves a real interior the warp carries unpainted where the source mouth is open
    #: at least this much (px at 128, fully from twice it; 0: always paint the whole region)
    paint_keep: float = 0.0
    #: with paint_keep: keep the carried interior only where it and the target's inner mouth overlap by
    #: at least this intersection over union (fully from it, none 0.15 below it; 0: whatever the overlap)
    paint_keep_overlap: float = 0.0
    #: with paint_keep: keep the carried interior only where the target's inner mouth is at most this
    #: many times the source's own opening (fully up to it, none from 1.25 times it; 0: any): a mouth
    #: the warp stretches open shows smear, not teeth. Its gate reads the source's own opening from a
    #: fifth geometry channel (OWN_MOUTH_CHANNEL), which only paint_region sees, not the convolutions.
    paint_keep_stretch: float = 0.0
    mirror_average: bool = False  # also run the face's mirror image and average (twice the cost, see RefineNet)
    #: the painted colour takes its fine texture from the warped crop: above a Gaussian of this sigma
    #: (px at 128) it is the warp's, below it the net's (keep_warp_detail; 0: the net's alone)
    detail_sigma: float = 0.0
    #: with detail_sigma: not inside the target's inner mouth, whose warped crop is stretched lip
    detail_spare_mouth: bool = False
    n_reference: int = 0  # channels of a remembered open mouth (rtanim.models.reference; 0: no such input)
    #: the AU basis (a file in rtanim/assets) whose warp the net paints over: "" is the shipped one,
    #: ``warp``'s; :data:`REGIONAL_BASIS` confines each AU's motion to its part of the face
    basis: str = ""
    #: paint a closed lid where the warp shuts an open eye (rtanim.models.lids), after the network
    lids: bool = False

    @property
    def in_channels(self) -> int:
        return 3 + self.n_geometry + self.n_reference

    @property
    def geometry_inputs(self) -> int:
        """Channels of the graph's ``geometry`` input: the convolutions' plus the own-mouth one."""
        return self.n_geometry + (1 if self.paint_keep_stretch > 0 else 0)

    @property
    def inputs(self) -> tuple[str, ...]:
        return ("image", "aus", "geometry", "reference") if self.n_reference else ("image", "aus", "geometry")

    @property
    def outputs(self) -> tuple[str, ...]:
        return ("attention", "color", "flow") if self.flow else ("attention", "color")

    def to_json(self) -> str:
        import json

        return json.dumps({"widths": list(self.widths), "n_res": self.n_res, "au_codes": list(self.au_codes),
                           "crop_size": self.crop_size, "n_geometry": self.n_geometry, "flow": self.flow,
                           "paint_mask": self.paint_mask, "paint_grow": list(self.paint_grow),
                           "paint_min": self.paint_min, "paint_small": self.paint_small,
                           "paint_area": list(self.paint_area), "paint_keep": self.paint_keep,
                           "paint_keep_overlap": self.paint_keep_overlap,
                           "paint_keep_stretch": self.paint_keep_stretch,
                           "n_reference": self.n_reference,
                           "mirror_average": self.mirror_average, "detail_sigma": self.detail_sigma,
                           "detail_spare_mouth": self.detail_spare_mouth, "basis": self.basis,
                           "lids": self.lids})

    @classmethod
    def from_json(cls, text: str) -> RefineSpec:
        import json

        s = json.loads(text)
        return cls(widths=tuple(s["widths"]), n_res=int(s["n_res"]), au_codes=tuple(s["au_codes"]),
                   crop_size=int(s["crop_size"]), n_geometry=int(s["n_geometry"]), flow=bool(s.get("flow", False)),
                   paint_mask=bool(s.get("paint_mask", False)),
                   paint_grow=tuple(int(v) for v in s.get("paint_grow", (14, 7))),
                   paint_min=float(s.get("paint_min", 0.0)), paint_small=int(s.get("paint_small", 0)),
                   paint_area=tuple(float(v) for v in s.get("paint_area", (20.0, 100.0))),
                   paint_keep=float(s.get("paint_keep", 0.0)),
                   paint_keep_overlap=float(s.get("paint_keep_overlap", 0.0)),
                   paint_keep_stretch=float(s.get("paint_keep_stretch", 0.0)),
                   n_reference=int(s.get("n_reference", 0)), mirror_average=bool(s.get("mirror_average", False)),
                   detail_sigma=float(s.get("detail_sigma", 0.0)),
                   detail_spare_mouth=bool(s.get("detail_spare_mouth", False)), basis=str(s.get("basis", "")),
                   lids=bool(s.get("lids", False)))

    def warp_model(self):  # noqa: ANN201 - rtanim.models.geometry.WarpModel, imported lazily
        """The warp this net paints over (its AU basis), as training and the run time must both use it."""
        from rtanim.models.geometry import WarpModel

        return WarpModel(load_basis(self.basis))


#: The AU basis whose motion stays in each AU's own part of the face (calib/regional_basis.py).
REGIONAL_BASIS = "au_basis_regional.npz"
#: ``RefineSpec.basis`` by the name the trainer's and calib/respec_refine.py's ``--basis`` give it.
BASES = {"shipped": "", "regional": REGIONAL_BASIS}


def load_basis(name: str):  # noqa: ANN201 - rtanim.models.geometry.AUBasis, imported lazily
    """The AU basis ``name`` from rtanim/assets ("" : the shipped one, ``warp``'s)."""
    from importlib import resources

    from rtanim.models.geometry import AUBasis

    if name not in BASES.values():
        raise ValueError(f"unknown AU basis {name!r} (one of {', '.join(repr(b) for b in BASES.values())})")
    if not name:
        return AUBasis.load()
    with resources.as_file(resources.files("rtanim") / "assets" / name) as path:
        return AUBasis.load(path)


#: RefineSpec's paint-region fields: the trainer's and calib/respec_refine.py's options of the same
#: names (--paint-grow, ...), which change them on a trained net.
PAINT_FIELDS = ("paint_grow", "paint_min", "paint_small", "paint_keep", "paint_keep_overlap", "paint_keep_stretch")


def add_paint_options(parser: argparse.ArgumentParser) -> None:
    """The paint-region and detail options (``--paint-grow`` ... ``--detail-spare-mouth``, one per
    :data:`PAINT_FIELDS` field and the two detail fields), each None when not given: the one
    declaration shared by the trainer and calib/respec_refine.py (read back by :func:`paint_settings`)."""
    parser.add_argument("--paint-grow", type=int, nargs=2, metavar=("MOUTH", "EYES"), default=None,
                        help="with --paint-mask: the region's reach around a changed mouth / eyes, px of a 128 px crop "
                             "(default 14 7)")
    parser.add_argument("--paint-small", type=int, default=None, metavar="PX",
                        help="with --paint-mask: the mouth's reach for a change under 20 px (growing to the full reach at "
                             "100 px), e.g. 4: lips that part get a slit painted, not both lips (default 0: always the full reach)")
    parser.add_argument("--paint-min", type=float, default=None,
                        help="with --paint-mask: ignore changes of smaller 3x3 coverage, e.g. 0.25: a lip line that only "
                             "slides opens no region (default 0: any change)")
    parser.add_argument("--paint-keep", type=float, default=None, metavar="PX",
                        help="with --paint-mask: where the source shows a real open mouth of at least PX (of a 128 px crop), "
                             "leave what the target's mouth still holds of it to the warp, e.g. 150: the person's own teeth "
                             "rather than painted ones (default 0: off)")
    parser.add_argument("--paint-keep-overlap", type=float, default=None, metavar="IOU",
                        help="with --paint-keep: keep it only where it and the target's inner mouth overlap this much "
                             "(intersection over union), e.g. 0.6: a jaw that moves far gets a painted interior (default 0: any)")
    parser.add_argument("--paint-keep-stretch", type=float, default=None, metavar="RATIO",
                        help="with --paint-keep: keep it only where the target's inner mouth is at most RATIO times the "
                             "source's own opening, e.g. 1.2: a slit or a smile the warp stretches wide open gets a painted "
                             "interior; the pairs get the source's own mouth as a fifth geometry channel (default 0: any)")
    parser.add_argument("--detail-sigma", type=float, default=None, metavar="PX",
                        help="train with the painted colour's detail finer than this sigma taken from the warped crop "
                             "(RefineSpec.detail_sigma; 0: off)")
    parser.add_argument("--detail-spare-mouth", choices=("on", "off"), default=None,
                        help="with --detail-sigma: not inside the target's inner mouth, whose warped crop is stretched lip "
                             "(RefineSpec.detail_spare_mouth)")


def paint_settings(options: object) -> dict[str, object]:
    """The paint-region fields ``options`` (parsed command-line options named as the fields) sets,
    by RefineSpec field, for ``dataclasses.replace``; an option left at None is not being changed."""
    given = {f: getattr(options, f) for f in PAINT_FIELDS if getattr(options, f) is not None}
    if "paint_grow" in given:
        given["paint_grow"] = tuple(given["paint_grow"])
    return given


def paint_option_problem(grow: Sequence[int] | None, min_change: float | None,
                         small: int | None, keep: float | None = None,
                         detail: float | None = None, overlap: float | None = None,
                         stretch: float | None = None) -> tuple[str, str] | None:
    """(option, reason) for a paint-region setting no RefineSpec may hold, else None; shared by the
    trainer and calib/respec_refine.py (None: the setting is not being changed)."""
    if small is not None and small < 0:
        return "--paint-small", f"must be 0 (off) or a reach in px, got {small}"
    if keep is not None and keep < 0:
        return "--paint-keep", f"must be 0 (off) or an area in px, got {keep:g}"
    if overlap is not None and not 0.0 <= overlap <= 1.0:
        return "--paint-keep-overlap", f"must be an intersection over union in [0, 1] (0: any), got {overlap:g}"
    if stretch is not None and stretch != 0 and not 1.0 <= stretch <= 8.0:
        return "--paint-keep-stretch", f"must be 0 (off) or a ratio of mouth areas from 1 to 8, got {stretch:g}"
    if detail is not None and not 0.0 <= detail <= 16.0:
        return "--detail-sigma", f"must be 0 (off) or a sigma in px up to 16, got {detail:g}"
    if grow is not None and min(grow) < 1:
        return "--paint-grow", f"must be at least 1 px each, got {list(grow)}"
    if min_change is not None and not 0.0 <= min_change < 1.0:
        return "--paint-min", f"must be a coverage in [0, 1), got {min_change:g}"
    return None


#: Paint region: a change of a whole pixel's coverage (ANTIALIAS_FULL) opens it fully, sub-pixel
#: jitter of the polygons only partly; then a feathered edge. The reach (RefineSpec.paint_grow,
#: px of a 128 px crop, scaled with the crop) defaults to 14 px around a changed inner mouth, far
#: enough to cover both lips and the evaluation's lip box (4 px beyond the outer lips), and 7 px
#: around changed eye openings, far enough for the lids.
PAINT_FEATHER_PX = 4
#: paint_region's keep_overlap: the intersection over union below the set one over which keeping fades out.
KEEP_OVERLAP_RAMP = 0.15
#: paint_region's keep_stretch: keeping fades out between the set ratio and this many times it.
KEEP_STRETCH_RAMP = 1.25
ANTIALIAS_FULL = 0.5


def paint_region(geometry: torch.Tensor, crop_size: int = CROP_SIZE, grow_px: tuple[int, int] = (14, 7),
                 min_change: float = 0.0, small_px: int = 0,
                 area: tuple[float, float] = (20.0, 100.0), keep_px: float = 0.0,
                 keep_overlap: float = 0.0, keep_stretch: float = 0.0) -> torch.Tensor:
    """Where the net may paint [N,1,S,S] in [0, 1]: where the target's mouth / eye maps differ from
    the source's carried by the warp (a mouth that opens or closes, lids that close), grown by
    max-pooling and feathered by average-pooling. Nothing changed, nothing painted: the output is
    then exactly ``warp``'s. With ``min_change`` > 0 the change is first averaged over 3x3 px and
    must exceed it: a lip line that only slides (a closed-mouth smile) changes a sliver of pixels
    by a fraction, and repainting the whole mouth for it costs identity (MODELS.md, session 4).
    With ``small_px`` > 0 the mouth's reach follows the size of its change: ``small_px`` below
    ``area[0]`` changed px (of a 128 px crop), ``grow_px[0]`` above ``area[1]``, the larger of the two
    regions blended in between; lips that only part get a slit painted, not both lips repainted
    (session 8: where only AU25 is commanded, the repainted lips cost identity on stills).
    With ``keep_px`` > 0, where the source shows a real open mouth (its carried interior covers at
    least ``keep_px``, fully from twice that), the part of it the target's mouth still holds is left
    to the warp, less a 2 px rim: the source's own teeth rather than a painted guess; a slit of
    parted lips (under ``keep_px``) is stretched smear, which the net still repaints. With
    ``keep_overlap`` > 0 the interior is kept only when it and the target's inner mouth overlap that
    much (intersection over union): a lip command that reshapes an open mouth keeps the person's
    teeth; a jaw that opens or shuts much further gets a painted interior (session 11: at 0.75 it
    gave back the self-reenactment identity that keeping cost, and only 0.03 dB of its mouth PSNR).
    With ``keep_stretch`` > 0 ``geometry`` has a fifth channel, the source's own inner mouth before
    the warp (:data:`OWN_MOUTH_CHANNEL`): the open-mouth test reads its area instead of the carried
    one, and the interior is kept only where the target's inner mouth is at most ``keep_stretch``
    times it. The carried map cannot tell: the warp maps the source's inner lips onto the target's, so
    a slit or a toothy smile warped wide open covers the whole target opening (session 12: the pairs
    where keeping lost 1-3 dB of mouth PSNR were such sources).
    Pure pooling and sums, so the exported graph needs no extra input beyond that channel."""
    scale = crop_size / 128.0  # a plain int, not the traced shape: the pool sizes are constants in ONNX

    def grow(x: torch.Tensor, px: float) -> torch.Tensor:
        r = max(1, round(px * scale))
        return F.max_pool2d(x, 2 * r + 1, 1, r)

    def seed(change: torch.Tensor) -> torch.Tensor:
        if min_change <= 0:
            return change / ANTIALIAS_FULL
        local = F.avg_pool2d(change, 3, 1, 1, count_include_pad=False)
        return (local - min_change) / ANTIALIAS_FULL

    mouth_seed = seed((geometry[:, 0:1] - geometry[:, 2:3]).abs())
    mouth = grow(mouth_seed, grow_px[0])
    if small_px > 0:
        changed = mouth_seed.clamp(0.0, 1.0).sum((2, 3), keepdim=True) / (scale * scale)
        t = ((changed - area[0]) / max(area[1] - area[0], 1e-6)).clamp(0.0, 1.0)
        mouth = torch.maximum(grow(mouth_seed, small_px), t * mouth)
    if keep_px > 0:
        carried = geometry[:, 2:3]
        held = carried * geometry[:, 0:1]  # the carried interior the target's mouth still holds
        carried_px = carried.sum((2, 3), keepdim=True)
        seen_px = carried_px
        if keep_stretch > 0:
            if geometry.shape[1] < 5:
                raise ValueError("paint_keep_stretch needs the own-mouth geometry channel (geometry_maps(own_mouth=True))")
            seen_px = geometry[:, 4:5].sum((2, 3), keepdim=True)
            ratio = geometry[:, 0:1].sum((2, 3), keepdim=True) / (seen_px + 1.0)
            top = keep_stretch * KEEP_STRETCH_RAMP
            stretch_ok = ((top - ratio) / (top - keep_stretch)).clamp(0.0, 1.0)
        g = ((seen_px / (scale * scale) - keep_px) / keep_px).clamp(0.0, 1.0)
        if keep_stretch > 0:
            g = g * stretch_ok
        if keep_overlap > 0:
            both = held.sum((2, 3), keepdim=True)
            iou = both / (carried_px + geometry[:, 0:1].sum((2, 3), keepdim=True) - both + 1e-6)
            g = g * ((iou - (keep_overlap - KEEP_OVERLAP_RAMP)) / KEEP_OVERLAP_RAMP).clamp(0.0, 1.0)
        r = max(1, round(2 * scale))
        kept = 1.0 - F.max_pool2d(1.0 - held, 2 * r + 1, 1, r)  # eroded by r px
        mouth = mouth * (1.0 - g * kept)
    eyes = grow(seed((geometry[:, 1:2] - geometry[:, 3:4]).abs()), grow_px[1])
    region = torch.clamp(torch.maximum(mouth, eyes), 0.0, 1.0)
    f = max(1, round(PAINT_FEATHER_PX * scale))
    return F.avg_pool2d(region, 2 * f + 1, 1, f, count_include_pad=False)


def mirrored_aus(codes: Sequence[str]) -> list[int]:
    """Index of each AU code's other side (AU12L <-> AU12R; unsided codes map to themselves)."""
    other = {"L": "R", "R": "L"}
    return [codes.index(c[:-1] + other[c[-1]]) if c[-1] in other and c[:-1] + other[c[-1]] in codes else i
            for i, c in enumerate(codes)]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


class _Res(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(dim, dim, 3, 1, 1)
        self.b = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(F.leaky_relu(self.a(x), 0.1))


class RefineNet(nn.Module):
    """A small U-Net: warped crop + geometry -> attention [N,1,S,S] in [0,1], colour [N,3,S,S] in [-1,1].

    The crop enters by space-to-depth (S -> S/2 with 4x the channels) and the output leaves by
    depth-to-space, so no convolution runs at full crop size (most of a U-Net's cost); two
    stride-2 levels go down to S/8 (the mouth spans ~6 cells there, enough context to place
    teeth), FiLM from the AUs on the bottleneck, skip connections back up so painted edges line up
    with the warped pixels. No normalisation layers: supervised training converges without them
    and the exported graph stays plain convolutions for ONNX Runtime and TensorRT.
    """

    def __init__(self, spec: RefineSpec = RefineSpec()) -> None:
        super().__init__()
        self.spec = spec
        w1, w2, w3 = spec.widths
        self.e1 = _conv(4 * spec.in_channels, w1)
        self.e2 = _conv(w1, w2, 2)
        self.e3 = _conv(w2, w3, 2)
        self.film = nn.Sequential(nn.Linear(len(spec.au_codes), 64), nn.LeakyReLU(0.1), nn.Linear(64, 2 * w3))
        self.res = nn.Sequential(*[_Res(w3) for _ in range(spec.n_res)])
        self.d2 = _conv(w3 + w2, w2)
        self.d1 = _conv(w2 + w1, w1)
        # depth-to-space outputs: A, C (3) and, with a flow head, dF (2); 4 head channels each
        self.head = nn.Conv2d(w1, 4 * (6 if spec.flow else 4), 3, 1, 1)
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        nn.init.zeros_(self.head.weight)
        # Starts as warp: C = the warped input (residual head at 0), so the composite is the warp
        # whatever A is; A starts at 0.5, where its sigmoid still has gradient to learn from.
        nn.init.zeros_(self.head.bias)

    def forward(self, image: torch.Tensor, aus: torch.Tensor, geometry: torch.Tensor,
                reference: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """(attention, colour[, flow]). With ``spec.mirror_average`` the net also paints the mirror
        image (sided AUs swapped) and the two composites are averaged, in the graph: an L1-trained
        net's guess of an unseen mouth varies with the side it is seen from, and the average is
        closer to the real one (session 8: +0.1 dB of mouth PSNR on held-out people)."""
        if not self.spec.mirror_average:
            return self._paint(image, aus, geometry, reference)
        n = image.shape[0]

        def both(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, torch.flip(x, dims=[3])], 0)

        swapped = aus[:, mirrored_aus(self.spec.au_codes)]
        outs = self._paint(both(image), torch.cat([aus, swapped], 0), both(geometry),
                           None if reference is None else both(reference))
        a1, a2 = outs[0][:n], torch.flip(outs[0][n:], dims=[3])
        c1, c2 = outs[1][:n], torch.flip(outs[1][n:], dims=[3])
        w1, w2 = 1.0 - a1, 1.0 - a2  # how much each composite takes from its colour
        att = 1.0 - 0.5 * (w1 + w2)
        color = (w1 * c1 + w2 * c2 + 1e-4 * c1) / (w1 + w2 + 1e-4)
        if not self.spec.flow:
            return att, color
        f2 = torch.flip(outs[2][n:], dims=[3]) * torch.tensor([-1.0, 1.0], device=outs[2].device).view(1, 2, 1, 1)
        return att, color, 0.5 * (outs[2][:n] + f2)

    def _paint(self, image: torch.Tensor, aus: torch.Tensor, geometry: torch.Tensor,
               reference: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        # the convolutions read the first n_geometry channels; a fifth (own mouth) is paint_region's
        parts = [image, geometry[:, : self.spec.n_geometry] if geometry.shape[1] > self.spec.n_geometry else geometry]
        if self.spec.n_reference:  # nothing remembered: zeros, which the net learned to mean "none"
            n, _, h, w = image.shape
            parts.append(image.new_zeros(n, self.spec.n_reference, h, w) if reference is None else reference)
        x1 = self.e1(F.pixel_unshuffle(torch.cat(parts, 1), 2))
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        gamma, beta = self.film(aus).chunk(2, 1)
        x3 = self.res(x3 * (1 + gamma[..., None, None]) + beta[..., None, None])
        y = self.d2(torch.cat([F.interpolate(x3, scale_factor=2.0, mode="nearest"), x2], 1))
        y = self.d1(torch.cat([F.interpolate(y, scale_factor=2.0, mode="nearest"), x1], 1))
        out = F.pixel_shuffle(self.head(y), 2)
        # The colour head is residual on the warped input: painting nothing costs nothing.
        color = torch.clamp(image + out[:, 1:4], -1.0, 1.0)
        if self.spec.detail_sigma > 0:
            color = keep_warp_detail(image, color, self.spec.detail_sigma * self.spec.crop_size / 128.0,
                                     self.spec.crop_size, geometry[:, 0:1] if self.spec.detail_spare_mouth else None)
        color = keep_greyscale(image, color)
        att = torch.sigmoid(out[:, :1])
        if self.spec.paint_mask:
            att = 1.0 - (1.0 - att) * paint_region(geometry, self.spec.crop_size, self.spec.paint_grow,
                                                   self.spec.paint_min, self.spec.paint_small, self.spec.paint_area,
                                                   self.spec.paint_keep, self.spec.paint_keep_overlap,
                                                   self.spec.paint_keep_stretch)
        if self.spec.flow:
            return att, color, FLOW_MAX * torch.tanh(out[:, 4:6])
        return att, color


#: Largest residual flow, normalised (x S/2 px: 9.6 px on a 128 px crop).
FLOW_MAX = 0.15


def shift(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` [N,C,S,S] resampled by a normalised backward flow [N,2,S,S], as compose does
    (pixel centres, border replicated)."""
    n, _, h, w = image.shape
    ys = (torch.arange(h, dtype=image.dtype, device=image.device) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=image.dtype, device=image.device) * 2 + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)[None]
    grid = base + flow.permute(0, 2, 3, 1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


def compose_crop(warped: torch.Tensor, attention: torch.Tensor, color: torch.Tensor,
                 region: torch.Tensor | None = None) -> torch.Tensor:
    """The composite at crop resolution, as rtanim/compose.py applies it: w = region * (1 - A)."""
    w = 1.0 - attention if region is None else region * (1.0 - attention)
    return (1.0 - w) * warped + w * color


# ----------------------------------------------------------------------------- checkpoints

REFINE_FORMAT = "rtanim.refine"
REFINE_ASSET = "refine.safetensors"


def shipped_refine() -> Path | None:
    """The refine weights shipped in rtanim/assets, if this build has them."""
    from importlib import resources

    asset = resources.files("rtanim") / "assets" / REFINE_ASSET
    return Path(str(asset)) if asset.is_file() else None


def save_refine(net: RefineNet, path: str | Path, *, precision: str = "fp16",
                extra: Mapping[str, object] | None = None) -> Path:
    """safetensors + JSON metadata (spec, training totals), written atomically."""
    import json

    from rtanim.models.checkpoint_io import write_checkpoint

    return write_checkpoint(path, net.state_dict(), format=REFINE_FORMAT, spec=net.spec.to_json(), precision=precision,
                            extra={k: json.dumps(v) for k, v in (extra or {}).items()})


def is_refine_checkpoint(path: str | Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == REFINE_FORMAT
    except Exception:  # noqa: BLE001 - not a safetensors file at all
        return False


def load_refine(path: str | Path) -> tuple[RefineNet, dict[str, object]]:
    """(network in FP32, eval mode; metadata extras decoded from JSON). InputError on a bad file."""
    import json

    from safetensors import safe_open

    from rtanim.errors import InputError

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds
        raise InputError(path, f"not a readable safetensors checkpoint ({e})") from None
    if meta.get("format") != REFINE_FORMAT:
        raise InputError(path, f"not a refine checkpoint (format {meta.get('format')!r})")
    spec = RefineSpec.from_json(meta["spec"])
    if spec.basis not in BASES.values():  # a checkpoint from another build: say so before a warp is made
        raise InputError(path, f"paints over an AU basis this build lacks ({spec.basis!r}; it has "
                               f"{', '.join(repr(b) for b in BASES.values())})")
    net = RefineNet(spec)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(path, f"weights do not match the refine architecture (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]})")
    from rtanim.models.checkpoint_io import extras as extra_fields

    extras = {k: json.loads(v) for k, v in extra_fields(meta).items()}
    return net.eval(), extras
