"""Still images: ``rtanim image`` (re-express every face) and the paper's AU grid figure."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtanim.align import crop
from rtanim.aus import expand_code
from rtanim.compose import FaceOutput, compose
from rtanim.errors import InputError
from rtanim.files import read_image as read_image  # re-exported: callers read stills here
from rtanim.files import write_bytes
from rtanim.pipeline import FaceJob, Generator
from rtanim.timeline import Timeline
from rtanim.tracking import Face, FaceTracker

log = logging.getLogger("rtanim")

GRID_LEVELS: tuple[float, ...] = (0.0, 0.33, 0.66, 1.0)


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write under a temporary name, then rename: no half-written file ever has the final name."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(path, "could not encode the image")
    write_bytes(path, buf.tobytes())
    return path


@dataclass
class StillResult:
    image: np.ndarray
    faces: list[Face]
    outputs: list[FaceOutput]


def track_still(image: np.ndarray, max_faces: int = 8) -> list[Face]:
    with FaceTracker(max_faces=max_faces, mode="image") as tracker:
        return tracker.track(image)


def reexpress(
    image: np.ndarray, faces: Sequence[Face], targets: Sequence[dict[str, float]], gen: Generator
) -> StillResult:
    """Generate and compose every face of one frame (faces compose independently, in order)."""
    if not faces:
        return StillResult(image, [], [])
    jobs = [FaceJob(f, crop(image, f.transform), t) for f, t in zip(faces, targets, strict=True)]
    outputs = gen.generate(jobs)
    return StillResult(compose(image, outputs, [f.transform for f in faces]), list(faces), outputs)


def reexpress_image(image: np.ndarray, timeline: Timeline, gen: Generator, max_faces: int = 8) -> StillResult:
    """Re-express every face of a still to the timeline's targets at t = 0."""
    faces = track_still(image, max_faces)
    return reexpress(image, faces, [timeline.at(0.0, f.aus) for f in faces], gen)


# ------------------------------------------------------------------------------- the AU grid


def _to_rgb8(x: np.ndarray) -> np.ndarray:
    """A [C,S,S] map to an S x S x 3 uint8 picture: attention in [0,1], colour in [-1,1]."""
    if x.shape[0] == 1:
        g = np.clip(x[0] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x.transpose(1, 2, 0))
    return np.clip((x.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def _flow_rgb8(flow: np.ndarray | None, size: int) -> np.ndarray:
    """Flow as colour (hue = direction, brightness = magnitude, 2 px full scale)."""
    if flow is None:
        return np.zeros((size, size, 3), np.uint8)
    fx, fy = flow[0] * size / 2.0, flow[1] * size / 2.0
    mag, ang = cv2.cartToPolar(fx.astype(np.float32), fy.astype(np.float32), angleInDegrees=True)
    hsv = np.zeros((size, size, 3), np.uint8)
    hsv[..., 0] = (ang / 2).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / 2.0 * 255.0, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def au_grid(
    image: np.ndarray, face: Face, codes: Sequence[str], gen: Generator, levels: Sequence[float] = GRID_LEVELS
) -> np.ndarray:
    """GANimation's figure: one row per AU at each level, then A, C and F at the last level.

    Each AU is commanded alone on top of the face's own live AUs, so a row shows what that AU
    does to this face. Cells are the composed full-resolution result, re-cropped for display.
    """
    s = face.transform.size
    label_w, head_h = 64, 22
    heads = ["input", *[f"{v:g}" for v in levels], "attention", "colour", "flow"]
    rows = []
    for code in codes:
        cells = [crop(image, face.transform)]
        last: FaceOutput | None = None
        for v in levels:
            target = dict(face.aus)
            for c in expand_code(code):  # sided entries win over bilateral ones: set the sides
                target[c] = v
            target[code] = v
            res = reexpress(image, [face], [target], gen)
            cells.append(crop(res.image, face.transform))
            last = res.outputs[0]
        assert last is not None
        cells += [_to_rgb8(last.attention), _to_rgb8(last.color), _flow_rgb8(last.flow, s)]
        row = np.concatenate(cells, axis=1)
        label = np.full((s, label_w, 3), 255, np.uint8)
        cv2.putText(label, code, (6, s // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, row], axis=1))
    header = np.full((head_h, label_w + s * len(heads), 3), 255, np.uint8)
    for i, h in enumerate(heads):
        cv2.putText(header, h, (label_w + i * s + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, *rows], axis=0)
