"""What a person sees in a re-expressed mouth and eye, measured against the real frame.

PSNR rewards the average of every plausible mouth, which is a grey blur. These figures measure
what the average loses, each on the same pose-matched crops the self-reenactment test scores
(:mod:`rtanim.measure.reenact`), inside the real target's own regions:

- **sharpness**: the variance of the Laplacian of luma inside the real target's inner-lip polygon,
  output over real (1: as sharp as a real mouth; a blur is far below 1);
- **teeth**: the share of teeth-like pixels there, and the mean luma (a dark cavity rim lowers it).
  Teeth-like is relative to the same image's lips (the ring between the outer and inner lip
  contours), since light and skin differ from clip to clip: brighter than the lips' median luma and
  less than :data:`WHITE_CHROMA` of their median chroma (teeth are white, lips red);
- **lids**: on closed-eye targets, the share of sclera-like pixels inside the *source's* eye
  openings (where an eye that did not close still shows its white): brighter than the skin around
  the eyes and less than :data:`WHITE_CHROMA` of its chroma (in a grey photo, :data:`GREY_LIGHT`
  times brighter).

A region too small to measure gives NaN, which the summaries leave out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from rtanim.face.landmarks import EYES, INNER_MOUTH, OUTER_MOUTH, polygon_mask

#: Teeth and sclera: at most this share of the surrounding lips' / skin's median chroma (distance of
#: Cb, Cr from grey): lips, tongue and skin are redder than white.
WHITE_CHROMA = 0.6
#: Surroundings of less median chroma than this are a grey photo, where teeth and sclera are the
#: pixels brighter than GREY_LIGHT times the surroundings' median luma.
GREY_CHROMA = 3.0
GREY_LIGHT = 1.15
#: The ring of skin around the eyes that sclera is told from, in crop px.
EYE_RING_PX = 3
#: Fewest pixels a region needs to be measured (an inner mouth under this is closed).
MIN_REGION_PX = 40


def _luma_chroma(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    return ycc[..., 0], np.hypot(ycc[..., 1] - 128.0, ycc[..., 2] - 128.0)


def region(landmarks: np.ndarray, loops: tuple[tuple[int, ...], ...], size: int) -> np.ndarray:
    """The pixels inside landmark ``loops`` (crop px), as a bool mask."""
    return polygon_mask(landmarks, loops, size) > 0.5


def sharpness(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the luma Laplacian inside ``mask`` (NaN for a region under MIN_REGION_PX)."""
    if int(mask.sum()) < MIN_REGION_PX:
        return math.nan
    lap = cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F, ksize=3)
    return float(lap[mask].var())


def white_share(rgb: np.ndarray, mask: np.ndarray, around: np.ndarray) -> float:
    """Share of teeth- or sclera-like pixels inside ``mask``: brighter than the median of ``around``
    (the lips, the skin round the eyes) and under WHITE_CHROMA of its median chroma."""
    if int(mask.sum()) < MIN_REGION_PX or int(around.sum()) < MIN_REGION_PX:
        return math.nan
    luma, chroma = _luma_chroma(rgb)
    ref_luma, ref_chroma = float(np.median(luma[around])), float(np.median(chroma[around]))
    if ref_chroma < GREY_CHROMA:  # a grey photo: white is told by light alone
        return float((luma[mask] > GREY_LIGHT * ref_luma).mean())
    return float(((luma[mask] > ref_luma) & (chroma[mask] < WHITE_CHROMA * ref_chroma)).mean())


def mean_luma(rgb: np.ndarray, mask: np.ndarray) -> float:
    if int(mask.sum()) < MIN_REGION_PX:
        return math.nan
    return float(_luma_chroma(rgb)[0][mask].mean())


def mouth_look(out: np.ndarray, real: np.ndarray, target_landmarks: np.ndarray) -> dict[str, float]:
    """Sharpness ratio, teeth share and luma of ``out`` and ``real`` inside the real target's inner mouth.

    Args:
        out: the re-expressed crop (RGB uint8, the source's crop transform).
        real: the real target's crop (its own transform; the pair is pose-matched).
        target_landmarks: the real target's landmarks in crop px.

    Returns:
        ``mouth_sharpness`` (out / real), ``teeth_out``, ``teeth_real``, ``luma_out``, ``luma_real``;
        NaN where the real mouth is too small to measure.
    """
    mask = region(target_landmarks, (INNER_MOUTH,), real.shape[0])
    lips = region(target_landmarks, (OUTER_MOUTH,), real.shape[0]) & ~mask
    s_out, s_real = sharpness(out, mask), sharpness(real, mask)
    ratio = s_out / s_real if s_real and math.isfinite(s_real) and s_real > 1e-6 else math.nan
    return {"mouth_sharpness": ratio, "teeth_out": white_share(out, mask, lips),
            "teeth_real": white_share(real, mask, lips), "luma_out": mean_luma(out, mask), "luma_real": mean_luma(real, mask)}


def lid_look(out: np.ndarray, real: np.ndarray, source_landmarks: np.ndarray) -> dict[str, float]:
    """Sclera share of ``out`` and ``real`` inside the source's (open) eye openings, in crop px."""
    mask = region(source_landmarks, EYES, real.shape[0])
    k = 2 * EYE_RING_PX + 1
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool) & ~mask
    return {"sclera_out": white_share(out, mask, ring), "sclera_real": white_share(real, mask, ring)}
