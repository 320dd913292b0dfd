"""MediaPipe Face Mesh index sets and the region masks drawn from them: their one home.

Every module that picks landmarks by index (tracking between landmarker frames, the
warp's control points, the refine net's geometry maps, training pairs and the self-reenactment
test) takes its sets from here, so a region means the same points everywhere; the crop fit's own
anchors live with their template in :mod:`rtanim.face.align`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from rtanim.face.align import CROP_SIZE

#: The 468-point face mesh; the 10 iris points follow the eyelids and are not modelled.
N_LANDMARKS = 468

# ------------------------------------------------------------------ what moves with the skull

#: Points with texture to track by optical flow between landmarker frames (rtanim.face.follow):
#: eye corners, brow points, nose bridge and tip, forehead, cheek and jaw contour.
TRACKED_RIGID = (
    33, 133, 362, 263, 1, 4, 6, 168, 197, 195, 5, 98, 327, 70, 63, 105, 66, 107, 336, 296,
    334, 293, 300, 10, 151, 9, 8, 234, 454, 93, 323, 132, 361, 58, 288, 152, 175, 199,
)  # fmt: skip
#: Points that do not move with expressions (nose bridge, eye corners, temples, forehead): how
#: training pairs and the self-reenactment test match head poses.
POSE_RIGID = (168, 6, 197, 195, 5, 4, 33, 133, 362, 263, 234, 454, 10, 109, 338, 127, 356)

# ------------------------------------------------------------------ regions (closed loops, in order)

#: The inner lip contour, the outer lip contour, and both eye openings.
INNER_MOUTH = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
OUTER_MOUTH = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
EYE_A = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
EYE_B = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
EYES = (EYE_A, EYE_B)
#: Each eye's upper lid (outer corner to inner) and lower lid (inner corner to outer), corners shared.
UPPER_LIDS = (EYE_A[:9], EYE_B[:9])
LOWER_LIDS = (EYE_A[8:] + EYE_A[:1], EYE_B[8:] + EYE_B[:1])
#: The brow above each eye (EYE_A's, EYE_B's), outer end to inner: its upper edge, its lower edge.
BROWS = ((70, 63, 105, 66, 107), (300, 293, 334, 296, 336))
BROWS_LOWER = ((46, 53, 52, 65, 55), (276, 283, 282, 295, 285))

# ------------------------------------------------------------------ the warp's controls (rtanim.models.geometry)

#: Landmarks every control set keeps: the parts the AUs move. Outer lip contour (the inner one
#: collapses to a line when the mouth closes, and two coincident controls with different motion
#: would make the spline ill-posed), eyelids and eye corners, brows, nose wings and tip, cheeks
#: and the jaw line.
CONTROL_LIPS = (61, 291, 0, 17, 37, 267, 84, 314, 40, 270, 91, 321, 185, 409, 146, 375)
CONTROL_EYES = (159, 386, 145, 374, 33, 133, 362, 263, 158, 385, 160, 387)
CONTROL_BROWS = BROWS[0] + BROWS[1]
CONTROL_NOSE_CHEEKS = (1, 98, 327, 48, 278, 50, 280, 205, 425)
CONTROL_JAW = (152, 148, 377, 176, 400, 172, 397, 136, 365, 58, 288, 132, 361, 234, 454)
KEY_LANDMARKS: tuple[int, ...] = CONTROL_LIPS + CONTROL_EYES + CONTROL_BROWS + CONTROL_NOSE_CHEEKS + CONTROL_JAW

# ------------------------------------------------------------------ masks

_SUBPIXEL = 4  # fillPoly fractional bits: polygons at 1/16 px
#: Crop px around the lips / eyes of a :func:`box_mask`.
BOX_PAD = 4


def polygon_mask(landmarks: np.ndarray, loops: Sequence[Sequence[int]], size: int = CROP_SIZE) -> np.ndarray:
    """Anti-aliased filled polygons of landmark ``loops`` (crop px) as float32 [S,S] in [0, 1]."""
    mask = np.zeros((size, size), np.uint8)
    pts = [np.round(np.asarray(landmarks, np.float64)[list(loop), :2] * (1 << _SUBPIXEL)).astype(np.int32)
           for loop in loops]
    cv2.fillPoly(mask, pts, 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL)
    return mask.astype(np.float32) / 255.0


def box_mask(points: np.ndarray, size: int, pad: int = BOX_PAD) -> np.ndarray:
    """The bounding box of ``points`` (crop px) grown by ``pad``, as a bool [S,S] mask."""
    x0, y0 = np.floor(points.min(0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(0) + pad).astype(int)
    m = np.zeros((size, size), bool)
    m[max(y0, 0):min(y1 + 1, size), max(x0, 0):min(x1 + 1, size)] = True
    return m
