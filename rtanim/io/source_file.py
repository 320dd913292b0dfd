"""File sources: video files (PyAV) and image folders; cameras and files paced like a camera are in
:mod:`rtanim.io.source_live`, and :func:`rtanim.io.source_open.open_source` picks one from a command-line string.

Every source is a context manager and an iterable of :class:`Frame`. File-like
sources (``live = False``) yield every frame in order, so an offline run is
deterministic; live sources (``live = True``) hand out only the newest frame and
drop the rest, so latency stays bounded when the consumer is slower than capture.

Timestamps: ``Frame.pts`` is seconds on the source's own clock (for files, the
container clock with its start at 0, so audio copied by :mod:`rtanim.io.sink_multi` lines
up); subtract the first frame's pts for "time since start". ``Frame.wall`` is
``time.perf_counter()`` when the frame was captured, for latency statistics.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.files import IMAGE_EXTENSIONS, load_rgb
from rtanim.io.source_base import URL, Frame, SourceBase, clock_origin, ffmpeg_reason, open_media


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file, as the video sink needs it to copy audio across."""

    codec: str
    sample_rate: int
    channels: int
    layout: str
    duration: float | None  # seconds, None when the container does not say
    start: float  # first sample, seconds on the file clock (0 = file start)


def probe_audio(path: str | Path) -> AudioInfo | None:
    """Describe the file's first audio stream, or None when it has none. Raises InputError if unreadable."""
    with open_media(path) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        cc = s.codec_context
        origin = clock_origin(c)
        start = 0.0 if s.start_time is None else float(s.start_time * s.time_base) - origin
        dur = None if s.duration is None else float(s.duration * s.time_base)
        return AudioInfo(cc.name, cc.sample_rate, cc.channels, cc.layout.name, dur, start)


class VideoFileSource(SourceBase):
    """Every frame of a video file (any container / codec FFmpeg reads), in order, with its real timestamp.

    Opens and checks the file in the constructor, so a bad path fails before any
    work with an InputError. ``start`` skips to a time (seconds); ``max_frames``
    caps the number of frames yielded.
    """

    live = False

    def __init__(self, path: str | Path, *, start: float = 0.0, max_frames: int | None = None) -> None:
        self.path = path if URL.match(str(path)) else Path(path)
        self.start = float(start)
        self.max_frames = max_frames
        self._container = open_media(self.path, "video file")
        if not self._container.streams.video:
            kinds = ", ".join(sorted({s.type for s in self._container.streams})) or "no streams"
            self._container.close()
            raise InputError(self.path, f"has no video stream ({kinds})")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads: several times faster on HD input
        self._origin = clock_origin(self._container)
        cc = self._stream.codec_context
        if not cc.width or not cc.height:
            self._container.close()
            raise InputError(self.path, "video stream has no frame size (unsupported or damaged)")
        self._size = (cc.width, cc.height)
        s = self._stream
        rate = s.average_rate or s.guessed_rate
        self._fps = float(rate) if rate else None
        self._time_base = s.time_base or Fraction(1, 90000)
        self._frame_count = s.frames or None
        if s.duration is not None and s.time_base is not None:
            self._duration: float | None = float(s.duration * s.time_base)
        else:
            self._duration = None if self._container.duration is None else self._container.duration / av.time_base
        self._has_audio = bool(self._container.streams.audio)
        self._iterated = False
        self._closed = False

    @property
    def fps(self) -> float | None:
        return self._fps

    @property
    def time_base(self) -> Fraction:
        """The stream's time base: pass it to VideoFileSink so VFR timestamps survive exactly."""
        return self._time_base

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def frame_count(self) -> int | None:
        """Frames the container declares (None if it does not say; some formats only estimate)."""
        return self._frame_count

    @property
    def duration(self) -> float | None:
        return self._duration

    @property
    def has_audio(self) -> bool:
        return self._has_audio

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise RunError(f"{self.path}: source is closed")
        tb = self._stream.time_base
        if self.start > 0 or self._iterated:  # a second pass starts again from the beginning
            self._container.seek(int((self.start + self._origin) / tb), stream=self._stream, backward=True)
        self._iterated = True
        fallback_dt = 1.0 / (self.fps or 30.0)
        last = None
        n = 0
        try:
            for vf in self._container.decode(self._stream):
                if vf.pts is not None:
                    pts = float(vf.pts * tb) - self._origin
                else:  # some raw streams carry no timestamps: assume a constant rate
                    pts = 0.0 if last is None else last + fallback_dt
                if pts < self.start - 1e-6:
                    continue
                last = pts
                image = vf.to_ndarray(format="rgb24")
                if vf.rotation:  # phone clips: display matrix says how to turn the coded picture
                    image = np.ascontiguousarray(np.rot90(image, k=round(vf.rotation / 90) % 4))
                yield Frame(image, pts, n, time.perf_counter())
                n += 1
                if self.max_frames is not None and n >= self.max_frames:
                    return
        except av.FFmpegError as e:
            if self._closed:
                return
            raise RunError(f"{self.path}: decoding failed after {n} frames ({ffmpeg_reason(e)})") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


# --------------------------------------------------------------------------- image folders


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _read_image(path: Path) -> np.ndarray:
    img = load_rgb(path)
    if img is None:
        raise InputError(path, "not a readable image")
    return img


class ImageSequenceSource(SourceBase):
    """Images of a folder or glob, in natural sort order (img2 before img10), at a nominal rate."""

    live = False

    def __init__(self, folder_or_glob: str | Path, fps: float = 30.0) -> None:
        spec = str(folder_or_glob)
        if Path(spec).is_dir():
            files = [p for p in Path(spec).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        else:
            files = [Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise InputError(spec, f"no images found ({', '.join(IMAGE_EXTENSIONS)})")
        if fps <= 0:
            raise InputError(spec, "must be > 0", field="fps")
        self.files = sorted(files, key=_natural_key)
        self._fps = float(fps)
        h, w = _read_image(self.files[0]).shape[:2]
        self._size = (w, h)

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def frame_count(self) -> int:
        return len(self.files)

    @property
    def duration(self) -> float:
        return len(self.files) / self._fps

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.files):
            image = _read_image(path)
            if (image.shape[1], image.shape[0]) != self._size:
                raise InputError(path, f"size {image.shape[1]}x{image.shape[0]} differs from the first image's "
                                       f"{self._size[0]}x{self._size[1]}")
            yield Frame(image, i / self._fps, i, time.perf_counter())

    def close(self) -> None:
        pass
