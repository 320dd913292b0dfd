"""Face crops from one part: stills through the image tracker, video frames sampled at ``--fps``.

Both go through the same quality filters and the same naming, labelling and JPEG writing, so a
crop from a clip and one from a photo are alike to the trainer.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.face.align import crop
from rtanim.files import load_rgb
from train.parts import TABLE_CODES, Item, Part, PrepareOptions


def head_yaw(head_matrix: np.ndarray) -> float:
    """Yaw in degrees (0 = frontal) from MediaPipe's face -> camera transform: the angle of the
    face's forward axis (its third rotation column) around the camera's vertical axis."""
    r = np.asarray(head_matrix, np.float64)[:3, :3]
    r = r / np.maximum(np.linalg.norm(r, axis=0, keepdims=True), 1e-12)
    return math.degrees(math.atan2(r[0, 2], r[2, 2]))


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: low on blurry crops (a standard, cheap focus measure)."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


_UTK_NAME = re.compile(r"^(\d{1,3})_[01]_[0-4]_\d+")
_NUMBERED_PERSON = re.compile(r"^([A-Za-z][A-Za-z'.-]*(?:_[A-Za-z'.-]+)*)_\d{4}$")


def utk_age(path: str | Path) -> int | None:
    """The age a UTKFace file name starts with (``25_0_1_2017...jpg.chip.jpg``), else None."""
    m = _UTK_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def identity_group(source: str | Path) -> str:
    """Split unit of a still: the person for LFW-style names (``Al_Gore_0002.jpg`` -> ``person:al_gore``,
    so no identity sits on both sides of the split), else the source image itself (UTKFace has no
    identity labels; its faces are mostly distinct people)."""
    stem = Path(source).name.split(".")[0]
    m = _NUMBERED_PERSON.match(stem)
    return f"person:{m.group(1).lower()}" if m else f"image:{os.path.abspath(source)}"


class CropFilter:
    """Applies the quality filters to tracked faces and counts why faces were dropped."""

    def __init__(self, options: PrepareOptions) -> None:
        self.o = options
        self.skipped: Counter[str] = Counter()

    def accept(self, face: Any, crop_rgb: np.ndarray) -> bool:
        x0, y0, x1, y1 = face.bbox
        if max(x1 - x0, y1 - y0) < self.o.min_face:
            self.skipped["small face"] += 1
            return False
        if abs(head_yaw(face.head_matrix)) > self.o.max_yaw:
            self.skipped["head yaw"] += 1
            return False
        if sharpness(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)) < self.o.min_sharpness:
            self.skipped["blurry"] += 1
            return False
        return True


def _item(name: str, group: str, source: str, face: Any, crop_rgb: np.ndarray) -> Item:
    lm = np.asarray(face.landmarks, np.float64)
    xy = face.transform.to_crop(lm)
    z = lm[:, 2:3] * face.transform.scale
    aus = np.array([float(face.aus.get(c, 0.0)) for c in TABLE_CODES], np.float32)
    return Item(name, group, source, aus, np.hstack([xy, z]).astype(np.float32),
                hashlib.sha1(crop_rgb.tobytes()).hexdigest())


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RunError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


# ----------------------------------------------------------------------------- stills and video


def process_images(part: Part, imgs: Path, tracker: Any, flt: CropFilter, problems: list[str],
                    tick: Callable[[int], None]) -> tuple[list[Item], int]:
    items: list[Item] = []
    tag = hashlib.sha1(os.path.abspath(part.source).encode()).hexdigest()[:6]
    for f in part.files:
        tick(1)
        age = utk_age(f) if flt.o.min_age else None
        if age is not None and age < flt.o.min_age:
            flt.skipped["under min age"] += 1
            continue
        rgb = load_rgb(f)
        if rgb is None:
            flt.skipped["unreadable image"] += 1
            problems.append(f"{f}: not a readable image, skipped")
            continue
        faces = tracker.track(rgb)
        if not faces:
            flt.skipped["no face"] += 1
        rel = os.path.relpath(f, part.source) if os.path.isdir(part.source) else os.path.basename(f)
        for face in faces:
            c = crop(rgb, face.transform)
            if not flt.accept(face, c):
                continue
            name = f"{_slug(Path(rel).with_suffix('').as_posix())}_{tag}_{face.face_id}"
            _write_jpeg(imgs / f"{name}.jpg", c)
            items.append(_item(name, identity_group(f), f, face, c))
    return items, len(part.files)


def process_video(part: Part, imgs: Path, options: PrepareOptions, flt: CropFilter, problems: list[str],
                   tick: Callable[[int], None]) -> tuple[list[Item], int]:
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource

    items: list[Item] = []
    tag = hashlib.sha1(os.path.abspath(part.source).encode()).hexdigest()[:6]
    stem = _slug(Path(part.source).stem)
    group = f"video:{os.path.abspath(part.source)}"
    last: dict[int, np.ndarray] = {}
    sampled = 0
    try:
        source = VideoFileSource(part.source)
    except InputError as e:
        flt.skipped["unreadable video"] += 1
        problems.append(f"{e.line()}, skipped")
        tick(1)
        return items, 0
    step = 1.0 / options.fps if options.fps > 0 else 0.0
    next_t = -1.0
    with source, FaceTracker(options.max_faces, mode="video", au_smoothing=0.0) as tracker:
        try:
            for frame in source:
                if frame.pts + 1e-6 < next_t:
                    continue
                next_t = (frame.pts if next_t < 0 else next_t) + step
                sampled += 1
                faces = tracker.track(frame.image, frame.pts)
                if not faces:
                    flt.skipped["no face"] += 1
                for face in faces:
                    c = crop(frame.image, face.transform)
                    thumb = cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                    thumb = thumb.astype(np.float32)
                    prev = last.get(face.face_id)
                    if prev is not None and float(np.abs(thumb - prev).mean()) < options.dedup:
                        flt.skipped["duplicate frame"] += 1
                        continue
                    if not flt.accept(face, c):
                        continue
                    last[face.face_id] = thumb
                    name = f"{stem}_{tag}_f{frame.index:06d}_{face.face_id}"
                    _write_jpeg(imgs / f"{name}.jpg", c)
                    items.append(_item(name, group, part.source, face, c))
                if options.limit and len(items) >= options.limit:
                    break
        except RunError as e:
            flt.skipped["video decode error"] += 1
            problems.append(f"{e}; kept the {len(items)} crops before it")
    tick(1)
    return items, sampled
