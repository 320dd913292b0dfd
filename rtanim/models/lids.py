"""Closed lids for eyes the warp closes: lid skin, a lash line and a crease, in the face's own colours.

A warp can only move the pixels it has. Closing an open eye squeezes the iris and the white into a
slit and stretches the few pixels of lid above it into a smear (issue 32); a closed eye shows the
upper lid unfolded over the eye, a dark line of lashes where the lids meet and a crease above it. The
refine net, trained with L1 on the few blinks of its clips, leaves that slit as it is, so the refine
model paints the lid itself where an eye closes (``RefineSpec.lids``), after the network:

- how closed: the target eye opening's area over the source's, per eye (a wink closes one), as far
  as the target's AU45 of that eye asks it shut;
- where: from under the target's brow to its lower lid, and the source's eye opening and lash band
  as the flow carries them (where the warped crop shows iris, white or stretched lashes); there the
  network's own paint gives way too (it paints smears and white blobs round a closing eye);
- what: the skin round the source's eye (not its lashes, brow or eye), spread over the lid by a
  normalised blur, shaded toward a lash line of the source's own lash colour along the target's
  closed margin, with a faint crease above; an eye behind a dark lens is left as it is.

Everything is in crop pixels of an upright crop (y grows downwards), at any crop size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtanim.face.landmarks import BROWS, BROWS_LOWER, EYES, LOWER_LIDS, UPPER_LIDS, polygon_mask

#: An eye gets a lid from this target / source opening ratio, fully from :data:`CLOSE_FULL`:
#: a squint keeps the warp's eye, only an eye that (nearly) shuts is painted.
CLOSE_FROM = 0.55
CLOSE_FULL = 0.4
#: ... and only as far as the target's AU45 of that eye asks it shut, from ASK_FROM, fully from ASK_FULL
#: (MediaPipe reads a real closed eye at about 0.75).
ASK_FROM = 0.5
ASK_FULL = 0.7
#: Below this source opening (its share of the eye's width squared) the source eye is already shut.
MIN_OPEN = 0.04
#: The lash band above the source's upper lid, in eye widths.
LASH_BAND = 0.10
#: The lash line's width, the crease's height above it, and the shadow's reach, in eye widths.
LASH_WIDTH = 0.045
CREASE_HEIGHT = 0.22
#: How dark the crease is drawn (its share of the lash colour): a hint, or the lid reads as an outline.
CREASE_ALPHA = 0.1
SHADOW_REACH = 0.10
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: How far (eye widths, a Gaussian's sigma) the lid looks for the skin it continues.
SKIN_REACH = 0.3
#: An eye whose opening and the skin under it are darker than this share of the cheek's luma is
#: behind a dark lens.
DARK_LENS = 0.45
#: How much darker the lid is at the eye's corners than over its middle (the eyeball's roundness).
ROUNDING = 0.05
#: A closed lid's colour against the skin round the eye (a little darker).
LID_TONE = 0.97
#: The painted lid stops this far under the brow (eye widths), so brow hairs stay the warp's.
BROW_GAP = 0.05
#: The lid fades into the warped skin over this share of the way from under the brow to the lashes.
FADE = 0.3
#: The edge of the painted lid blends into the warped skin over this many eye widths.
FEATHER = 0.1


@dataclass(frozen=True)
class Lids:
    """A lid layer at crop resolution: ``alpha`` [S,S] in [0, 1] (1 paints the lid), ``color``
    [3,S,S] float32 in [-1, 1] (the crop's scale in the refine model), and ``reset`` [S,S] in [0, 1]:
    where the network's own paint round a closing eye gives way to the warped pixels under the lid
    (it paints smears and white blobs there: issue 32)."""

    alpha: np.ndarray
    color: np.ndarray
    reset: np.ndarray


def opening(landmarks: np.ndarray, eye: int) -> float:
    """Area of eye ``eye``'s opening (0 or 1) over its width squared: 0 shut, about 0.3 wide open."""
    loop = np.asarray(landmarks, np.float64)[list(EYES[eye]), :2]
    x, y = loop[:, 0], loop[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return area / max(_width(landmarks, eye) ** 2, 1e-6)


def closing(source: np.ndarray, target: np.ndarray, eye: int) -> float:
    """How much of a lid to paint, 0 to 1, as the warp takes eye ``eye`` from ``source`` to ``target``."""
    before = opening(source, eye)
    if before < MIN_OPEN:
        return 0.0
    ratio = opening(target, eye) / before
    return float(np.clip((CLOSE_FROM - ratio) / (CLOSE_FROM - CLOSE_FULL), 0.0, 1.0))


def _width(landmarks: np.ndarray, eye: int) -> float:
    corners = np.asarray(landmarks, np.float64)[[UPPER_LIDS[eye][0], UPPER_LIDS[eye][-1]], :2]
    return float(np.linalg.norm(corners[1] - corners[0]))


def _band(line: np.ndarray, near: float, far: float, size: int) -> np.ndarray:
    """Mask of the band between ``line`` moved up (negative: down) by ``near`` and by ``far`` px."""
    poly = np.concatenate([line - [0.0, near], (line - [0.0, far])[::-1]])
    return polygon_mask(poly, [range(len(poly))], size) > 0.5


def _behind_a_lens(crop: np.ndarray, landmarks: np.ndarray, eye: int, width: float) -> bool:
    """Whether a dark lens covers eye ``eye``: its opening and the skin just under it are both far
    darker than the cheek (an eye in shadow has bright skin under it)."""
    size = crop.shape[0]
    lower = landmarks[list(LOWER_LIDS[eye])][1:-1]
    inside = polygon_mask(landmarks, [EYES[eye]], size) > 0.5
    under, cheek = (crop[_band(lower, -lo * width, -hi * width, size)] for lo, hi in ((0.05, 0.2), (0.6, 0.9)))
    if inside.sum() < 4 or len(under) < 4 or len(cheek) < 4:
        return False
    level = float(np.median(cheek.astype(np.float32) @ LUMA))
    return all(float(np.median(px.astype(np.float32) @ LUMA)) < DARK_LENS * level for px in (crop[inside], under))


def _lash_colour(crop: np.ndarray, upper: np.ndarray, width: float) -> np.ndarray:
    """The darkest fifth of the source's lash band (the crop's where the band is empty)."""
    px = crop[_band(upper, -0.03 * width, LASH_BAND * width, crop.shape[0])].astype(np.float32)
    if len(px) < 4:
        px = crop.reshape(-1, 3).astype(np.float32)
    luma = px @ LUMA
    return px[luma <= np.percentile(luma, 20)].mean(0)


def _column_curve(points: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y of the polyline ``points`` at the crop columns ``cols``, and whether each lies within it."""
    order = np.argsort(points[:, 0])
    xs, ys = points[order, 0], points[order, 1]
    return np.interp(cols, xs, ys), (cols >= xs[0]) & (cols <= xs[-1])


def _window(mask: np.ndarray, pad: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """The box round ``mask``'s nonzero pixels grown by ``pad`` (clipped to the crop): its slices,
    its columns and its rows (crop px, float)."""
    ys, xs = np.nonzero(mask)
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, mask.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, mask.shape[1])
    return (slice(y0, y1), slice(x0, x1)), np.arange(x0, x1, dtype=np.float64), np.arange(y0, y1, dtype=np.float64)


def asked(au45: float) -> float:
    """How much of a lid the target's AU45 of one eye allows, 0 to 1 (:data:`ASK_FROM` to :data:`ASK_FULL`)."""
    return float(np.clip((au45 - ASK_FROM) / (ASK_FULL - ASK_FROM), 0.0, 1.0))


def lid_layer(crop: np.ndarray, source: np.ndarray, target: np.ndarray, flow: np.ndarray | None,
              shut: tuple[float, float] | None = None) -> Lids | None:
    """The lids to paint as the warp takes a face's eyes from ``source`` to ``target`` landmarks.

    Args:
        crop: the source crop, S x S x 3 uint8 (RGB).
        source: the source face's landmarks in crop px (N x 2 or more columns).
        target: the landmarks the warp moves them to (N x 2).
        flow: the backward flow [2,S,S] that moves the crop's pixels (refine's warp, composed with the
            net's residual flow if it has one), or None.
        shut: the target's AU45 of each eye (EYE_A's, EYE_B's: the face's right, left), or None. A lid
            needs the eye asked shut as well as the warp closing it: a half-closed target (a squint, a
            sleepy look) keeps the warp's eye, whose opening the warp may overshoot.

    Returns:
        The lid layer, or None where no eye closes (the common case, which costs two areas).
    """
    amounts = [closing(source, target, eye) * (1.0 if shut is None else asked(shut[eye])) for eye in range(2)]
    if max(amounts) <= 0.0:
        return None
    from rtanim.models.refine import warp_image

    size = crop.shape[0]
    src = np.asarray(source, np.float64)[:, :2]
    tgt = np.asarray(target, np.float64)[:, :2]
    alpha = np.zeros((size, size), np.float32)
    reset = np.zeros((size, size), np.float32)
    color = np.zeros((size, size, 3), np.float32)
    for eye, amount in enumerate(amounts):
        if amount <= 0.0:
            continue
        width = _width(src, eye)
        upper = src[list(UPPER_LIDS[eye])]
        if _behind_a_lens(crop, src, eye, width):
            continue  # a dark lens hides the eye: nothing to close
        lash = _lash_colour(crop, upper[1:-1], width)
        brow_mask = polygon_mask(src, [list(BROWS[eye]) + list(BROWS_LOWER[eye][::-1])], size) > 0.3
        # where: from under the brow to the lower lid (the warp drags the brow and lid skin over it),
        # and the source's eye and lash band as the flow carries them
        t_brow = tgt[list(BROWS_LOWER[eye])] + [0.0, BROW_GAP * width]
        t_eye_lower = tgt[list(LOWER_LIDS[eye])] + [0.0, 0.03 * width]
        where = polygon_mask(np.concatenate([t_brow, t_eye_lower]), [range(len(t_brow) + len(t_eye_lower))], size)
        carried = polygon_mask(src, [EYES[eye]], size)
        carried = np.maximum(carried, _band(upper, -0.02 * width, LASH_BAND * width, size).astype(np.float32))
        where = np.maximum(where, warp_image(carried, flow))
        hole = (where > 0.3).astype(np.uint8)
        if not hole.any():
            continue
        sigma = max(0.6, FEATHER * width)
        grow = int(np.ceil(0.75 * sigma))  # the feather starts outside the hole: no half-covered lashes at its edge
        win, cols, rows = _window(hole, int(np.ceil(3 * max(sigma, SKIN_REACH * width))) + grow + 1)
        hole = cv2.dilate(hole[win], np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
        # the skin round the source's eye (not its lashes, brow or eye), spread over the hole by a
        # normalised blur: each point of the lid takes the colour and light of the skin nearest it
        bare = 1.0 - cv2.dilate(((carried > 0.3) | brow_mask)[win].astype(np.uint8), np.ones((3, 3), np.uint8))
        bare = bare.astype(np.float32)
        reach = max(1.5, SKIN_REACH * width)
        fill = cv2.GaussianBlur(crop[win].astype(np.float32) * bare[..., None], (0, 0), reach)
        fill /= np.maximum(cv2.GaussianBlur(bare, (0, 0), reach), 1e-3)[..., None]
        where = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), sigma)
        # what: that skin, shaded above the closed margin, with a lash line and a crease
        t_upper, t_lower = tgt[list(UPPER_LIDS[eye])], tgt[list(LOWER_LIDS[eye])][::-1]
        margin_y, inside = _column_curve(0.35 * t_upper + 0.65 * t_lower, cols)
        above = (margin_y[None, :] - rows[:, None]).astype(np.float32)  # px above the margin, per pixel
        shade = 1.0 - 0.18 * np.exp(-np.clip(above, 0.0, None) / max(SHADOW_REACH * width, 0.5))
        # the eyeball rounds the lid: lit in the middle, darker toward the corners
        across = np.clip((cols - _centre_x(t_upper)) / (0.5 * width), -1.5, 1.5)
        shade = shade * (1.0 - ROUNDING * across[None, :] ** 2)
        paint = fill * np.where(above >= 0, shade * LID_TONE, 1.0)[..., None]
        lash_a = np.clip(1.0 - np.abs(above) / max(LASH_WIDTH * width, 0.6), 0.0, 1.0) * inside[None, :]
        paint = paint * (1.0 - 0.9 * lash_a[..., None]) + 0.9 * lash_a[..., None] * lash
        middle = inside & (np.abs(cols - _centre_x(t_upper)) < 0.35 * width)
        crease_a = CREASE_ALPHA * np.clip(1.0 - np.abs(above - CREASE_HEIGHT * width) / max(0.03 * width, 0.6), 0.0, 1.0)
        crease_a = crease_a * middle[None, :]
        paint = paint * (1.0 - crease_a[..., None]) + crease_a[..., None] * lash
        top_y, _ = _column_curve(t_brow, cols)
        fade = np.clip((rows[:, None] - top_y[None, :]) / np.maximum(FADE * (margin_y - top_y), 1.0)[None, :], 0.0, 1.0)
        a = (where * fade * amount).astype(np.float32)
        mine = a > alpha[win]
        color[win][mine], alpha[win][mine] = paint[mine], a[mine]
        reset[win] = np.maximum(reset[win], where * np.float32(amount))
    if not alpha.any():
        return None
    return Lids(alpha, (color.transpose(2, 0, 1) / 127.5 - 1.0).astype(np.float32), reset)


def _centre_x(points: np.ndarray) -> float:
    return float(0.5 * (points[0, 0] + points[-1, 0]))


def paint_lids(attention: np.ndarray, color: np.ndarray, lids: Lids) -> tuple[np.ndarray, np.ndarray]:
    """Lay ``lids`` over a refine output: (attention [1,S,S], colour [3,S,S]) whose composite
    ``A * warped + (1 - A) * C`` becomes ``(1 - L) * (R * warped + (1 - R) * before) + L * lid``."""
    att = lids.reset[None] + (1.0 - lids.reset[None]) * attention  # the warped pixels where R = 1
    keep = 1.0 - lids.alpha[None]
    out = att * keep
    paint = 1.0 - out
    mixed = (keep * (1.0 - att) * color + lids.alpha[None] * lids.color) / np.maximum(paint, 1e-6)
    return out.astype(np.float32), np.where(paint > 1e-6, mixed, color).astype(np.float32)
