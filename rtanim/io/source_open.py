"""A frame source from a command-line string: a camera index or device, an image folder or glob,
a video file or stream URL, or a file played in real time like a camera."""

from __future__ import annotations

import glob
import os

from rtanim.io.source_base import URL, Source
from rtanim.io.source_file import ImageSequenceSource, VideoFileSource
from rtanim.io.source_live import CameraSource, PacedFileSource


def open_source(spec: str, *, size: tuple[int, int] | None = None, fps: float | None = None,
                paced: bool = False, speed: float = 1.0, start: float = 0.0,
                max_frames: int | None = None) -> Source:
    """Pick a source from a command-line string.

    Digits -> camera index; ``/dev/video*`` -> camera device; a folder or a glob
    -> image sequence (``fps``, default 30); anything else -> a video file or a
    URL FFmpeg reads. ``paced=True`` plays a file in real time as a live source.
    """
    s = str(spec).strip()
    if s.isdigit():
        return CameraSource(int(s), size=size, fps=fps)
    if s.startswith("/dev/video"):
        return CameraSource(s, size=size, fps=fps)
    if not URL.match(s) and (os.path.isdir(s) or glob.has_magic(s)):
        return ImageSequenceSource(s, fps=fps or 30.0)
    if paced:
        return PacedFileSource(s, speed=speed, max_frames=max_frames)
    return VideoFileSource(s, start=start, max_frames=max_frames)
