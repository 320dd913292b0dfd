"""Still images: ``rtanim image`` (re-express every face) and the paper's AU grid figure."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import expand_code
from rtanim.expression.timeline import Timeline
from rtanim.face.align import crop
from rtanim.face.compose import FaceOutput, compose
from rtanim.face.tracking import Face, FaceTracker
from rtanim.files import read_image as read_image  # re-exported: callers read stills here
from rtanim.files import write_bytes
from rtanim.pipeline.jobs import FaceJob, Generator, forget_faces

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
    forget_faces(gen)  # a photo's face ids say nothing about the last photo's people
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


def flow_px(flow: np.ndarray) -> np.ndarray:
    """How far each crop pixel moves, in crop pixels, from a normalised [2,S,S] backward flow."""
    s = flow.shape[-1]
    return np.hypot(flow[0], flow[1]) * (s / 2.0)


def _motion_rgb8(crop_rgb: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
    """Flow magnitude as a heat map over the dimmed grey face: where the model moves pixels, and how
    far (brightest = the most any pixel moves, written in the corner)."""
    grey = cv2.cvtColor(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB).astype(np.float32) * 0.6
    if flow is None:
        return grey.astype(np.uint8)
    px = flow_px(flow)
    level = np.clip(px / max(float(px.max()), 0.5), 0.0, 1.0)  # under half a pixel stays dark
    heat = cv2.cvtColor(cv2.applyColorMap((level * 255).astype(np.uint8), cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    alpha = np.sqrt(level)[..., None]
    cell = (grey * (1 - alpha) + heat.astype(np.float32) * alpha + 0.5).astype(np.uint8)
    cv2.putText(cell, f"{px.max():.1f} px", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return cell


def _text_strip(lines: Sequence[str], width: int) -> np.ndarray:
    strip = np.full((8 + 18 * len(lines), width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (6, 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def au_grid(
    image: np.ndarray, face: Face, codes: Sequence[str], gen: Generator, levels: Sequence[float] = GRID_LEVELS
) -> np.ndarray:
    """GANimation's figure: one row per AU at each level, then what the model did at the last level.

    Each AU is commanded alone on top of the face's own live AUs, so a row shows what that AU
    does to this face. Cells are the composed full-resolution result, re-cropped for display.
    The last columns show only what the model really outputs: attention and colour when it
    repaints (A < 1 somewhere), motion (flow magnitude as a heat map) when it moves pixels. A
    model that only moves pixels (``warp``) gets no attention or colour column, and the caption
    says so rather than showing a blank and a flat grey square.
    """
    s = face.transform.size
    label_w, head_h = 64, 22
    rows: list[list[np.ndarray]] = []
    lasts: list[FaceOutput] = []
    for code in codes:
        cells = [crop(image, face.transform)]
        for v in levels:
            target = dict(face.aus)
            for c in expand_code(code):  # sided entries win over bilateral ones: set the sides
                target[c] = v
            target[code] = v
            res = reexpress(image, [face], [target], gen)
            cells.append(crop(res.image, face.transform))
        rows.append(cells)
        lasts.append(res.outputs[0])
    repaints = any(float(o.attention.min()) < 0.99 for o in lasts)
    moves = any(o.flow is not None for o in lasts)
    heads = ["input", *[f"{v:g}" for v in levels]]
    heads += ["attention", "colour"] if repaints else []
    heads += ["motion"] if moves else []
    picture = []
    for code, cells, last in zip(codes, rows, lasts, strict=True):
        if repaints:
            cells += [_to_rgb8(last.attention), _to_rgb8(last.color)]
        if moves:
            cells.append(_motion_rgb8(cells[0], last.flow))
        label = np.full((s, label_w, 3), 255, np.uint8)
        cv2.putText(label, code, (6, s // 2 + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        picture.append(np.concatenate([label, *cells], axis=1))
    width = label_w + s * len(heads)
    header = np.full((head_h, width, 3), 255, np.uint8)
    for i, h in enumerate(heads):
        cv2.putText(header, h, (label_w + i * s + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, *picture, _text_strip(grid_caption(repaints, moves, levels[-1], s), width)])


def grid_caption(repaints: bool, moves: bool, level: float, size: int) -> list[str]:
    """The AU grid's legend: what its last columns show, and why some are left out."""
    lines = []
    if repaints:
        lines.append(f"attention, colour at {level:g}: dark attention = repainted, with the colour shown")
    else:
        lines.append("no attention or colour: this model repaints nothing, it only moves pixels")
    if moves:
        lines.append(f"motion at {level:g}: how far pixels move (brightest: the px in the corner, of the {size} px crop)")
    return lines
