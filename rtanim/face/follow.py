"""Following a tracked face between landmarker frames: sparse optical flow moves the last landmarks.

MediaPipe's landmark network costs the same whatever the frame size (it always sees a
256x256 crop of the face), so a cheaper tracker has to run it less often. Between two
landmarker frames this module estimates the head's similarity motion (shift, rotation,
scale) from Lucas-Kanade flow on rigid, textured landmarks (eye corners, brows, nose,
forehead, jaw line) in a small grey window around the face, and moves all 478 landmarks
by it. The expression (mouth, lids) and the blendshapes are the landmarker frame's;
only the head moves. When the flow is not trustworthy, :func:`follow` says so and the
tracker runs the landmarker instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rtanim.face.landmarks import TRACKED_RIGID

#: Face size (px, longest side of the landmark extent) the flow window is shrunk to.
WINDOW_FACE = 160
#: Margin around the face in the flow window, as a fraction of the face size (room for motion).
WINDOW_MARGIN = 0.5
#: Fewest rigid points that must be tracked (and fit the similarity) for a follow to count.
MIN_POINTS = 16
#: Largest median distance (window px) between tracked points and the fitted similarity.
MAX_RESIDUAL = 1.0
#: Largest mean absolute grey difference (0-255) of a tracked point's patch before and after;
#: measured ~0.5-2 between frames of a clip, ~30 after a cut to another picture.
MAX_PATCH_ERROR = 12.0


@dataclass(frozen=True)
class Window:
    """Where the flow looks: x0, y0, x1, y1 in frame pixels and the shrink factor (window px per frame px)."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float

    def to_window(self, xy: np.ndarray) -> np.ndarray:
        return (xy - (self.x0, self.y0)) * self.scale

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        return xy / self.scale + (self.x0, self.y0)


@dataclass
class Followed:
    """One face's state between frames: its landmarks and the grey window they were seen in."""

    landmarks: np.ndarray  # 478 x 3 frame pixels (z scaled like x)
    window: Window
    grey: np.ndarray


def face_window(landmarks: np.ndarray, frame_shape: tuple[int, ...]) -> Window | None:
    """The flow window around a face (None when it lies outside the frame)."""
    h, w = int(frame_shape[0]), int(frame_shape[1])
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    size = float(max(hi - lo))
    margin = WINDOW_MARGIN * size
    x0, y0 = int(max(0, lo[0] - margin)), int(max(0, lo[1] - margin))
    x1, y1 = int(min(w, hi[0] + margin)), int(min(h, hi[1] + margin))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return Window(x0, y0, x1, y1, min(1.0, WINDOW_FACE / max(size, 1.0)))


def grey(rgb: np.ndarray, win: Window) -> np.ndarray:
    """The window of an RGB frame, shrunk and in grey (the shrink first: it is the cheaper order)."""
    sub = rgb[win.y0 : win.y1, win.x0 : win.x1]
    if win.scale < 1.0:
        size = (max(1, round((win.x1 - win.x0) * win.scale)), max(1, round((win.y1 - win.y0) * win.scale)))
        sub = cv2.resize(sub, size, interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(sub, cv2.COLOR_RGB2GRAY)


def remember(rgb: np.ndarray, landmarks: np.ndarray) -> Followed | None:
    """What :func:`follow` needs from this frame to move ``landmarks`` into the next one."""
    win = face_window(landmarks, rgb.shape)
    return None if win is None else Followed(landmarks, win, grey(rgb, win))


def head_motion(before: np.ndarray, after: np.ndarray, src: np.ndarray) -> np.ndarray | None:
    """2x3 similarity (window px) of the rigid points ``src`` from grey ``before`` to ``after``, or None."""
    pts = src.astype(np.float32).reshape(-1, 1, 2)
    moved, status, error = cv2.calcOpticalFlowPyrLK(before, after, pts, None, winSize=(15, 15), maxLevel=2)
    ok = (status.ravel() == 1) & (error.ravel() < MAX_PATCH_ERROR)
    if ok.sum() < MIN_POINTS:
        return None
    a, b = pts[ok, 0], moved[ok, 0]
    m, inliers = cv2.estimateAffinePartial2D(a, b, method=cv2.LMEDS)
    if m is None or int(inliers.sum()) < MIN_POINTS:
        return None
    residual = np.linalg.norm(a @ m[:, :2].T + m[:, 2] - b, axis=1)
    return m if float(np.median(residual)) <= MAX_RESIDUAL else None


def follow(state: Followed, rgb: np.ndarray) -> np.ndarray | None:
    """``state``'s landmarks moved into frame ``rgb`` (478 x 3 frame px), or None when the flow fails."""
    win = state.window
    m = head_motion(state.grey, grey(rgb, win), win.to_window(state.landmarks[list(TRACKED_RIGID), :2]))
    if m is None:
        return None
    out = state.landmarks.copy()
    out[:, :2] = win.to_frame(win.to_window(out[:, :2]) @ m[:, :2].T + m[:, 2])
    out[:, 2] *= float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    return out
