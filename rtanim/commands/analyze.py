"""Live AUs of every face over a video: ``rtanim analyze`` and driving-video timelines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import EXTENDED_CODES, resolve
from rtanim.expression.timeline import Keyframe, Timeline, write_openface_csv
from rtanim.face.tracking import FaceTracker
from rtanim.io.source_file import VideoFileSource


@dataclass(frozen=True)
class AUSample:
    """One face's live AUs in one frame."""

    frame: int
    face_id: int
    pts: float
    aus: dict[str, float]


@dataclass
class Analysis:
    samples: list[AUSample]
    frames: int
    frames_without_face: int

    @property
    def face_ids(self) -> list[int]:
        return sorted({s.face_id for s in self.samples})


def analyze_video(path: str | Path, max_faces: int = 4, progress: Callable[[int], None] | None = None) -> Analysis:
    """Track a whole video in VIDEO mode and collect each face's smoothed live AUs per frame."""
    samples: list[AUSample] = []
    with VideoFileSource(path) as source, FaceTracker(max_faces=max_faces, mode="video") as tracker:
        frames = 0
        for frame in source:
            for face in tracker.track(frame.image, frame.pts):
                samples.append(AUSample(frame.index, face.face_id, frame.pts, dict(face.aus)))
            frames += 1
            if progress is not None:
                progress(1)
        return Analysis(samples, frames, tracker.frames_without_face)


def write_analysis_csv(analysis: Analysis, out: str | Path) -> None:
    write_openface_csv(out, [(s.frame, s.face_id, s.pts, s.aus) for s in analysis.samples])


def timeline_from_analysis(analysis: Analysis, source: str, face_id: int | None = None) -> Timeline:
    """A driving video's live AUs as a timeline (expression transfer), one keyframe per frame."""
    ids = analysis.face_ids
    if not ids:
        raise InputError(source, "no face found in the driving video")
    fid = ids[0] if face_id is None else face_id
    if fid not in ids:
        raise InputError(source, f"no face with id {fid}; found {', '.join(map(str, ids))}", field="face_id")
    keyframes: list[Keyframe] = []
    for s in analysis.samples:
        if s.face_id == fid and (not keyframes or s.pts > keyframes[-1].t):
            values = np.array([resolve(s.aus, c) for c in EXTENDED_CODES], dtype=np.float32)
            keyframes.append(Keyframe(s.pts, values))
    return Timeline(keyframes, source=source)
