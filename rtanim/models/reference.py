"""A remembered open mouth: what the inside of *this* person's mouth looks like.

The AUs say how far a mouth opens, not what is inside it: teeth, a dark cavity, how much tongue,
how bright the teeth are under this light. Measured on held-out people (MODELS.md, session 6),
that is where the ``refine`` model's mouth error is: inside the real inner-lip polygon it scores
18.4 dB against 25.3 on the rest of the mouth box, and pasting the real interior gives +5 dB.
A live or video run sees the person open their mouth sooner or later, so the generator may
remember the widest-open crop of each face (:class:`MouthMemory`) and show the network that
mouth, moved onto the target's lips (:func:`reference_maps`), as four extra input channels.

Channels (:data:`REFERENCE_CHANNELS`), at crop resolution, all zero when nothing is remembered:
the remembered crop's RGB in [-1, 1] inside a window around the target's lips, and where its
inner mouth lands. The move is a least-squares affine fit of the remembered lip landmarks onto
the target's (inner and outer contours): it scales the opening vertically and costs a fraction of
a millisecond, and a thin-plate spline would buy nothing inside a region this small.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from rtanim.face.align import CROP_SIZE
from rtanim.face.landmarks import INNER_MOUTH, OUTER_MOUTH, polygon_mask

REFERENCE_CHANNELS = ("reference_r", "reference_g", "reference_b", "reference_mouth")
#: A remembered mouth must be at least this open (inner-lip area, px of a 128 px crop; training's
#: "open" is 300, "closed" below 120): a closed mouth shows nothing of the inside.
MIN_OPEN_PX = 150.0
#: The window around the target's outer lips that the reference is shown in (px at 128).
WINDOW_PX = 5
_LIPS = list(INNER_MOUTH) + list(OUTER_MOUTH)


def mouth_area(landmarks: np.ndarray, size: int = CROP_SIZE) -> float:
    """Inner-lip polygon area in crop px (how open the mouth is)."""
    return float(polygon_mask(landmarks, [INNER_MOUTH], size).sum())


def lip_affine(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """2x3 least-squares affine map of ``source`` lip landmarks onto ``target``'s (crop px)."""
    s = np.asarray(source, np.float64)[_LIPS, :2]
    t = np.asarray(target, np.float64)[_LIPS, :2]
    design = np.hstack([s, np.ones((len(s), 1))])
    m, *_ = np.linalg.lstsq(design, t, rcond=None)
    return m.T.astype(np.float64)


@dataclass
class MovedReference:
    """A remembered crop moved onto the target's lips, before it becomes network channels (training
    recolours ``rgb`` with its pair, so it is kept as uint8 until then)."""

    rgb: np.ndarray  # S x S x 3 uint8
    window: np.ndarray  # S x S float32: around the target's outer lips
    inner: np.ndarray  # S x S float32: where the remembered inner mouth lands


def move_reference(crop: np.ndarray, landmarks: np.ndarray, target: np.ndarray,
                   size: int = CROP_SIZE) -> MovedReference:
    """The remembered ``crop`` (S x S x 3 uint8 RGB, its crop ``landmarks``) moved onto ``target``'s lips."""
    m = lip_affine(landmarks, target)
    rgb = cv2.warpAffine(crop, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inner = cv2.warpAffine(polygon_mask(landmarks, [INNER_MOUTH], size), m, (size, size), flags=cv2.INTER_LINEAR)
    r = max(1, round(WINDOW_PX * size / 128))
    window = cv2.dilate(polygon_mask(target, [OUTER_MOUTH], size), np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    return MovedReference(rgb, window, inner)


def reference_channels(moved: MovedReference | None, size: int = CROP_SIZE) -> np.ndarray:
    """The network's reference input [4,S,S] float32 (:data:`REFERENCE_CHANNELS`); zeros without one."""
    out = np.zeros((len(REFERENCE_CHANNELS), size, size), np.float32)
    if moved is not None:
        out[:3] = (moved.rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(127.5) - np.float32(1.0)) * moved.window
        out[3] = moved.inner
    return out


def reference_maps(crop: np.ndarray | None, landmarks: np.ndarray | None, target: np.ndarray,
                   size: int = CROP_SIZE) -> np.ndarray:
    """:func:`reference_channels` of ``crop`` moved onto ``target`` (zeros without a crop)."""
    if crop is None or landmarks is None:
        return reference_channels(None, size)
    return reference_channels(move_reference(crop, landmarks, target, size), size)


@dataclass
class Remembered:
    crop: np.ndarray  # S x S x 3 uint8 RGB
    landmarks: np.ndarray  # N x 2 crop px
    area: float


class MouthMemory:
    """The widest-open mouth seen so far for each tracked face (by face id), bounded.

    A face that opens its mouth wider later replaces its entry; faces not seen for a while fall out
    (least recently seen first) so a long run with people coming and going keeps a few entries."""

    def __init__(self, capacity: int = 8, min_open_px: float = MIN_OPEN_PX) -> None:
        self.capacity, self.min_open_px = capacity, min_open_px
        self._faces: OrderedDict[int, Remembered | None] = OrderedDict()

    def observe(self, face_id: int, crop: np.ndarray, landmarks: np.ndarray) -> None:
        area = mouth_area(landmarks, crop.shape[0])
        old = self._faces.pop(face_id, None)
        if area >= self.min_open_px and (old is None or area > old.area):
            old = Remembered(np.array(crop, np.uint8), np.array(landmarks, np.float32)[:, :2], area)
        self._faces[face_id] = old
        while len(self._faces) > self.capacity:
            self._faces.popitem(last=False)

    def get(self, face_id: int) -> Remembered | None:
        return self._faces.get(face_id)

    def clear(self) -> None:
        self._faces.clear()
