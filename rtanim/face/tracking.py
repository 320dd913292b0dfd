"""Face tracking: MediaPipe Face Landmarker -> smoothed landmarks, crop transforms, face ids, live AUs.

One :class:`FaceTracker` per stream. In ``video`` mode MediaPipe tracks landmarks
from frame to frame (re-running its detector when a face is lost), and this module
adds what a re-expression pipeline needs on top: ids that stay with a person,
One Euro smoothing so crops do not jitter, and AUs smoothed in time. With
``landmark_every`` N > 1 the landmarker runs on one frame in N and the faces are
followed by optical flow in between (rtanim.face.follow): the landmark network is most
of tracking's cost and does not shrink with the frame, so running it less often is
what makes tracking cheaper. ``image`` mode
treats every call as an unrelated photo (no smoothing, ids numbered left to right)
and searches overlapping tiles too, because MediaPipe's short-range detector misses
faces smaller than about a tenth of the image.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from rtanim.expression.aus import blendshapes_to_aus
from rtanim.face.align import CropTransform, fit_transform
from rtanim.face.follow import Followed, follow, remember
from rtanim.face.one_euro import BETA, D_CUTOFF, MIN_CUTOFF, OneEuroFilter

Mode = Literal["image", "video"]
BBox = tuple[int, int, int, int]

MODEL_ASSET = "face_landmarker.task"
#: Time constant (s) of the exponential filter on live AUs: damps frame-to-frame flicker
#: of the blendshapes while still passing a blink (~0.1-0.3 s).
AU_SMOOTHING = 0.05
#: Frames a lost face keeps its id (and filters), so a brief miss does not renumber people.
MAX_MISSED = 15
#: MediaPipe's detection / presence / tracking threshold. Its 0.5 default fires on cartoon
#: lettering in the shared face_noface clips; 0.6 does not, and loses no real face there.
MIN_CONFIDENCE = 0.6
#: Overlap (IoU) needed to call two boxes the same face, across frames or across tiles.
MIN_IOU = 0.3
#: Video mode runs the landmarker on one frame in this many and follows the faces by optical
#: flow in between (see rtanim.face.follow). 1 = every frame, exact: what analysis and training
#: data need. 2 cuts tracking's mean CPU to ~0.62x with no more jitter after smoothing on the
#: shared clips, but expressions and AUs refresh at half the frame rate (calib/bench_track.py).
LANDMARK_EVERY = 1


@dataclass
class Face:
    """One tracked face in one frame (frame pixels unless said otherwise)."""

    face_id: int
    landmarks: np.ndarray  # 478 x 3 float32: x, y in frame pixels, z in the same scale as x
    blendshapes: dict[str, float]  # MediaPipe's 52 scores, raw
    head_matrix: np.ndarray  # 4 x 4 facial transformation (MediaPipe's canonical face -> camera)
    aus: dict[str, float]  # live AUs (bilateral and sided codes), smoothed in time
    transform: CropTransform  # frame -> canonical crop, from the smoothed landmarks
    bbox: BBox  # x0, y0, x1, y1: landmark extent, clipped to the frame


@dataclass
class TrackResult:
    """Everything tracking knows about one frame."""

    pts: float  # seconds, as used for smoothing (made strictly increasing in video mode)
    faces: list[Face] = field(default_factory=list)


@dataclass
class Detection:
    """One face as MediaPipe reports it, before ids and smoothing."""

    landmarks: np.ndarray  # 478 x 3 float64 frame pixels
    blendshapes: dict[str, float]
    head_matrix: np.ndarray
    aus: dict[str, float] | None = None  # blendshapes_to_aus(blendshapes), once known


# ------------------------------------------------------------------ pure helpers


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ logging from MediaPipe / TFLite) for a moment.

    Python's own ``sys.stderr`` is flushed first and restored after, so exceptions still surface.
    Set RTANIM_DEBUG=1 to see the native logs.
    """
    if os.environ.get("RTANIM_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)



def model_bytes() -> bytes:
    """The Face Landmarker bundle shipped in the package (read as bytes so zipped installs work)."""
    return (resources.files("rtanim") / "assets" / MODEL_ASSET).read_bytes()


def landmarks_from_result(result: Any, width: int, height: int) -> list[np.ndarray]:
    """MediaPipe's normalised landmarks as 478 x 3 frame-pixel arrays (z scaled by width, as x)."""
    scale = np.array([width, height, width], dtype=np.float64)
    return [np.array([(p.x, p.y, p.z) for p in face], dtype=np.float64) * scale for face in result.face_landmarks]


def blendshapes_from_result(result: Any) -> list[dict[str, float]]:
    return [{c.category_name: float(c.score) for c in face} for face in (result.face_blendshapes or [])]


def head_matrices_from_result(result: Any) -> list[np.ndarray]:
    return [np.asarray(m, dtype=np.float32).reshape(4, 4) for m in (result.facial_transformation_matrixes or [])]


def detections_from_result(result: Any, width: int, height: int) -> list[Detection]:
    lms = landmarks_from_result(result, width, height)
    shapes = blendshapes_from_result(result) or [{} for _ in lms]
    mats = head_matrices_from_result(result) or [np.eye(4, dtype=np.float32) for _ in lms]
    return [Detection(lm, bs, m) for lm, bs, m in zip(lms, shapes, mats, strict=True)]


def bbox_from_landmarks(landmarks: np.ndarray, frame_shape: Sequence[int]) -> BBox:
    """Integer landmark extent (x1, y1 exclusive), clipped to the frame."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    x0, y0 = np.floor(landmarks[:, :2].min(0)).astype(int)
    x1, y1 = np.ceil(landmarks[:, :2].max(0)).astype(int) + 1
    return (int(np.clip(x0, 0, w)), int(np.clip(y0, 0, h)), int(np.clip(x1, 0, w)), int(np.clip(y1, 0, h)))


def _extent(landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([landmarks[:, :2].min(0), landmarks[:, :2].max(0)])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(previous: Sequence[Sequence[float]], current: Sequence[Sequence[float]], min_iou: float) -> list[int]:
    """For each current box, the index of the previous box it continues, or -1.

    Greedy on IoU, best pairs first: with a handful of faces this equals the Hungarian
    assignment in practice and needs no extra dependency.
    """
    pairs = sorted(((iou(p, c), i, j) for i, p in enumerate(previous) for j, c in enumerate(current)), reverse=True)
    out, used = [-1] * len(current), set()
    for score, i, j in pairs:
        if score < min_iou:
            break
        if out[j] == -1 and i not in used:
            out[j] = i
            used.add(i)
    return out


def tiles(width: int, height: int, frac: float = 0.5, steps: int = 3) -> list[tuple[int, int, int, int]]:
    """Overlapping x0, y0, x1, y1 windows, ``frac`` of the image per side, ``steps`` per axis.

    With frac 0.5 and 3 steps the stride is a quarter of the image, so any face smaller
    than a quarter of the image lies wholly inside at least one tile.
    """
    tw, th = max(1, int(width * frac)), max(1, int(height * frac))
    xs = np.linspace(0, width - tw, steps).round().astype(int)
    ys = np.linspace(0, height - th, steps).round().astype(int)
    return [(int(x), int(y), int(x) + tw, int(y) + th) for y in ys for x in xs]


def merge_detections(candidates: Sequence[Detection], max_faces: int, min_iou: float = MIN_IOU) -> list[Detection]:
    """Drop duplicates of the same face (IoU >= min_iou); earlier candidates win."""
    kept: list[Detection] = []
    for det in candidates:
        if all(iou(_extent(det.landmarks), _extent(k.landmarks)) < min_iou for k in kept):
            kept.append(det)
        if len(kept) == max_faces:
            break
    return kept


def smooth_aus(previous: dict[str, float] | None, current: dict[str, float], dt: float, tau: float) -> dict[str, float]:
    """Exponential smoothing with time constant ``tau`` seconds (0 = off), robust to uneven frame times."""
    if previous is None or tau <= 0:
        return dict(current)
    if dt <= 0:
        return dict(previous)
    a = 1.0 - math.exp(-dt / tau)
    return {k: previous.get(k, v) + a * (v - previous.get(k, v)) for k, v in current.items()}


# ------------------------------------------------------------------ tracker


@dataclass
class _Track:
    face_id: int
    extent: np.ndarray  # last raw landmark extent, for matching
    filter: OneEuroFilter
    aus: dict[str, float] | None = None
    last_t: float = 0.0
    missed: int = 0


class FaceTracker:
    """MediaPipe Face Landmarker with ids, smoothing and live AUs. Not thread-safe: one per stream.

    Use as a context manager (or call :meth:`close`): MediaPipe's graph must be closed
    explicitly, its finaliser prints a traceback at interpreter exit otherwise.
    """

    def __init__(
        self,
        max_faces: int = 1,
        mode: Mode = "video",
        min_cutoff: float = MIN_CUTOFF,
        beta: float = BETA,
        d_cutoff: float = D_CUTOFF,
        au_smoothing: float = AU_SMOOTHING,
        min_confidence: float = MIN_CONFIDENCE,
        max_missed: int = MAX_MISSED,
        tile_search: bool | None = None,
        fps: float = 30.0,
        model_path: str | Path | None = None,
        landmark_every: int = LANDMARK_EVERY,
    ) -> None:
        """``min_cutoff`` (Hz), ``beta`` (per crop px/s) and ``d_cutoff`` (Hz) tune the One Euro
        landmark filter (see rtanim.face.one_euro); ``au_smoothing`` is the AU time constant in s;
        ``tile_search`` (image mode; default on) also looks in overlapping tiles when fewer
        than ``max_faces`` faces are found; ``fps`` spaces frames that come without ``pts``;
        ``landmark_every`` (video mode) runs the landmarker on one frame in N and follows the
        faces by optical flow in between, falling back to the landmarker whenever the flow
        fails or no face is tracked (new faces are found on landmarker frames only). A followed
        frame keeps the last landmarker frame's expression, blendshapes and head_matrix; only
        the landmarks move with the head."""
        if mode not in ("image", "video"):
            raise ValueError(f"mode must be 'image' or 'video', not {mode!r}")
        if max_faces < 1:
            raise ValueError("max_faces must be >= 1")
        if landmark_every < 1:
            raise ValueError("landmark_every must be >= 1")
        self.max_faces, self.mode = max_faces, mode
        self.filter_params = (min_cutoff, beta, d_cutoff)
        OneEuroFilter(*self.filter_params)  # validate now, not at the first face
        self.au_smoothing, self.max_missed, self.fps = au_smoothing, max_missed, fps
        self.tile_search = mode == "image" if tile_search is None else tile_search
        base = (
            BaseOptions(model_asset_path=str(model_path))
            if model_path is not None
            else BaseOptions(model_asset_buffer=model_bytes())
        )
        options = vision.FaceLandmarkerOptions(
            base_options=base,
            running_mode=vision.RunningMode.VIDEO if mode == "video" else vision.RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with quiet_native_stderr():  # MediaPipe's C++ start-up chatter is noise to a user
            self._landmarker: Any = vision.FaceLandmarker.create_from_options(options)
        self._warm = False
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_ms: int | None = None
        self.landmark_every = landmark_every
        self._followed: list[tuple[Detection, Followed]] = []  # the last frame's faces, to follow
        self._since_landmarks = 0  # frames followed since the landmarker last ran
        self.frames = 0
        self.frames_without_face = 0
        self.frames_followed = 0  # video frames whose faces came from optical flow, not the landmarker

    # context manager -------------------------------------------------------------
    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None

    # public ----------------------------------------------------------------------
    def track(self, rgb: np.ndarray, pts: float | None = None) -> list[Face]:
        """Faces in one RGB uint8 frame (H x W x 3), sorted by id; empty when there is none."""
        return self.track_result(rgb, pts).faces

    def track_result(self, rgb: np.ndarray, pts: float | None = None) -> TrackResult:
        if self._landmarker is None:
            raise RuntimeError("FaceTracker is closed")
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an H x W x 3 uint8 RGB frame, got {rgb.shape} {rgb.dtype}")
        rgb = np.ascontiguousarray(rgb)
        if self.mode == "video":
            t = self._next_timestamp(pts)
            faces = self._update_tracks(self._detect_video(rgb, int(round(t * 1000))), rgb.shape, t)
        else:
            t = 0.0 if pts is None else float(pts)
            faces = self._still_faces(self._detect_image(rgb), rgb.shape)
        self.frames += 1
        if not faces:
            self.frames_without_face += 1
        return TrackResult(pts=t, faces=faces)

    # detection -------------------------------------------------------------------
    def _next_timestamp(self, pts: float | None) -> float:
        """Seconds, with integer milliseconds strictly increasing, as MediaPipe's VIDEO mode demands."""
        if pts is None:
            ms = 0 if self._last_ms is None else self._last_ms + max(1, int(round(1000.0 / self.fps)))
        else:
            ms = int(round(float(pts) * 1000.0))
            if self._last_ms is not None and ms <= self._last_ms:
                ms = self._last_ms + 1
        self._last_ms = ms
        return ms / 1000.0

    @staticmethod
    def _image(rgb: np.ndarray) -> mp.Image:
        return mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)

    def _native(self, fn: Any, *args: Any) -> Any:
        """Call MediaPipe; its first inference logs C++ warnings, silenced like start-up."""
        if self._warm:
            return fn(*args)
        with quiet_native_stderr():
            out = fn(*args)
        self._warm = True
        return out

    def _detect_video(self, rgb: np.ndarray, ms: int) -> list[Detection]:
        if self._followed and self._since_landmarks + 1 < self.landmark_every:
            followed = self._follow(rgb)
            if followed is not None:
                self._since_landmarks += 1
                self.frames_followed += 1
                return followed
        result = self._native(self._landmarker.detect_for_video, self._image(rgb), ms)
        dets = detections_from_result(result, rgb.shape[1], rgb.shape[0])
        self._since_landmarks = 0
        if self.landmark_every > 1:
            self._remember(rgb, dets)
        return dets

    def _follow(self, rgb: np.ndarray) -> list[Detection] | None:
        """Every face of the last frame moved into this one by optical flow; None if any is lost."""
        dets = []
        for det, state in self._followed:
            landmarks = follow(state, rgb)
            if landmarks is None:
                return None
            dets.append(Detection(landmarks, det.blendshapes, det.head_matrix, det.aus))
        self._remember(rgb, dets)
        return dets

    def _remember(self, rgb: np.ndarray, dets: list[Detection]) -> None:
        states = [remember(rgb, det.landmarks) for det in dets]
        pairs = [(det, state) for det, state in zip(dets, states, strict=True) if state is not None]
        self._followed = pairs if len(pairs) == len(dets) else []  # a face that cannot be followed: look again

    def _detect_image(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        found = detections_from_result(self._native(self._landmarker.detect, self._image(rgb)), w, h)
        if not self.tile_search or len(found) >= self.max_faces:
            return found
        # Tile hits first: a face seen at higher resolution gets better landmarks. A hit
        # counts only if the face lies inside its tile with a margin, since faces cut by a
        # tile edge come back with extrapolated, wrong landmarks; of several hits on one
        # face, the one most central in its tile wins. (A tile hit's head_matrix assumes
        # the tile was the whole picture: its rotation holds, its translation does not.)
        scored: list[tuple[float, Detection]] = []
        for x0, y0, x1, y1 in tiles(w, h):
            sub = np.ascontiguousarray(rgb[y0:y1, x0:x1])
            for det in detections_from_result(self._landmarker.detect(self._image(sub)), x1 - x0, y1 - y0):
                ex = _extent(det.landmarks)
                room = min(ex[0], ex[1], x1 - x0 - ex[2], y1 - y0 - ex[3]) / max(ex[2] - ex[0], ex[3] - ex[1], 1.0)
                if room >= 0.1:
                    det.landmarks[:, :2] += (x0, y0)
                    scored.append((room, det))
        tiled = [det for _, det in sorted(scored, key=lambda sd: -sd[0])]
        return merge_detections(tiled + found, self.max_faces)

    # faces -----------------------------------------------------------------------
    def _face(self, face_id: int, det: Detection, lm: np.ndarray, aus: dict[str, float], shape: tuple) -> Face:
        return Face(
            face_id=face_id,
            landmarks=lm.astype(np.float32),
            blendshapes=det.blendshapes,
            head_matrix=det.head_matrix,
            aus=aus,
            transform=fit_transform(lm),
            bbox=bbox_from_landmarks(lm, shape),
        )

    def _still_faces(self, dets: list[Detection], shape: tuple) -> list[Face]:
        dets = sorted(dets, key=lambda d: float(d.landmarks[:, 0].mean()))
        return [self._face(i, d, d.landmarks, blendshapes_to_aus(d.blendshapes), shape) for i, d in enumerate(dets)]

    def _update_tracks(self, dets: list[Detection], shape: tuple, t: float) -> list[Face]:
        extents = [_extent(d.landmarks) for d in dets]
        match = match_boxes([tr.extent for tr in self._tracks], extents, MIN_IOU)
        faces: list[Face] = []
        seen: set[int] = set()
        for det, ext, idx in zip(dets, extents, match, strict=True):
            if idx < 0:  # a new face: fresh id, fresh filters
                track = _Track(self._next_id, ext, OneEuroFilter(*self.filter_params), last_t=t)
                self._next_id += 1
                self._tracks.append(track)
            else:
                track = self._tracks[idx]
            seen.add(id(track))
            # Speed in crop pixels, so one beta fits every face size and resolution.
            lm = track.filter(det.landmarks, t, speed_scale=fit_transform(det.landmarks).scale)
            if det.aus is None:
                det.aus = blendshapes_to_aus(det.blendshapes)
            track.aus = smooth_aus(track.aus, det.aus, t - track.last_t, self.au_smoothing)
            track.extent, track.last_t, track.missed = ext, t, 0
            faces.append(self._face(track.face_id, det, lm, track.aus, shape))
        for track in self._tracks:
            if id(track) not in seen:
                track.missed += 1
        self._tracks = [tr for tr in self._tracks if tr.missed <= self.max_missed]
        return sorted(faces, key=lambda f: f.face_id)
