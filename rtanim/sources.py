"""Frame sources: video files (PyAV) and image folders; cameras and files paced like a camera are in
:mod:`rtanim.live_sources`, picked from a command-line string by :func:`open_source`.

Every source is a context manager and an iterable of :class:`Frame`. File-like
sources (``live = False``) yield every frame in order, so an offline run is
deterministic; live sources (``live = True``) hand out only the newest frame and
drop the rest, so latency stays bounded when the consumer is slower than capture.

Timestamps: ``Frame.pts`` is seconds on the source's own clock (for files, the
container clock with its start at 0, so audio copied by :mod:`rtanim.sinks` lines
up); subtract the first frame's pts for "time since start". ``Frame.wall`` is
``time.perf_counter()`` when the frame was captured, for latency statistics.
"""

from __future__ import annotations

import glob
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.files import IMAGE_EXTENSIONS, load_rgb

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Frame:
    """One captured frame; crosses every stage boundary of the pipeline."""

    image: np.ndarray  # HxWx3 uint8 RGB
    pts: float  # seconds on the source clock
    index: int  # capture index (gaps mean live frames were dropped)
    wall: float  # time.perf_counter() at capture, for latency


@runtime_checkable
class Source(Protocol):
    """What the pipeline needs from any frame source."""

    @property
    def fps(self) -> float | None: ...
    @property
    def size(self) -> tuple[int, int]: ...
    @property
    def live(self) -> bool: ...
    @property
    def frame_count(self) -> int | None: ...
    @property
    def duration(self) -> float | None: ...
    def __iter__(self) -> Iterator[Frame]: ...
    def __enter__(self) -> Source: ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...


class _SourceBase:
    live: bool = False

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


# --------------------------------------------------------------------------- files (PyAV)


def _clock_origin(container: av.container.InputContainer) -> float:
    """Seconds to subtract so a file's clock starts at 0; shared with the sink's audio copy."""
    start = container.start_time
    return 0.0 if start is None else start / av.time_base


def _open_media(path: str | Path, what: str = "media file") -> av.container.InputContainer:
    """Open a file or stream for reading, turning FFmpeg's errors into one InputError line."""
    spec = str(path)
    if not _URL.match(spec):
        p = Path(spec)
        if not p.exists():
            raise InputError(p, "no such file")
        if p.is_dir():
            raise InputError(p, f"is a folder, not a {what}")
    try:
        return av.open(spec, "r", timeout=(10.0, 10.0) if _URL.match(spec) else None)
    except av.FFmpegError as e:
        raise InputError(spec, f"not a readable {what} ({_ffmpeg_reason(e)})") from None


def _ffmpeg_reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e)).strip().rstrip(".")


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
    with _open_media(path) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        cc = s.codec_context
        origin = _clock_origin(c)
        start = 0.0 if s.start_time is None else float(s.start_time * s.time_base) - origin
        dur = None if s.duration is None else float(s.duration * s.time_base)
        return AudioInfo(cc.name, cc.sample_rate, cc.channels, cc.layout.name, dur, start)


class VideoFileSource(_SourceBase):
    """Every frame of a video file (any container / codec FFmpeg reads), in order, with its real timestamp.

    Opens and checks the file in the constructor, so a bad path fails before any
    work with an InputError. ``start`` skips to a time (seconds); ``max_frames``
    caps the number of frames yielded.
    """

    live = False

    def __init__(self, path: str | Path, *, start: float = 0.0, max_frames: int | None = None) -> None:
        self.path = path if _URL.match(str(path)) else Path(path)
        self.start = float(start)
        self.max_frames = max_frames
        self._container = _open_media(self.path, "video file")
        if not self._container.streams.video:
            kinds = ", ".join(sorted({s.type for s in self._container.streams})) or "no streams"
            self._container.close()
            raise InputError(self.path, f"has no video stream ({kinds})")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"  # frame + slice threads: several times faster on HD input
        self._origin = _clock_origin(self._container)
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
            raise RunError(f"{self.path}: decoding failed after {n} frames ({_ffmpeg_reason(e)})") from None

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


class ImageSequenceSource(_SourceBase):
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


# --------------------------------------------------------------------------- dispatch


def open_source(spec: str, *, size: tuple[int, int] | None = None, fps: float | None = None,
                paced: bool = False, speed: float = 1.0, start: float = 0.0,
                max_frames: int | None = None) -> Source:
    """Pick a source from a command-line string.

    Digits -> camera index; ``/dev/video*`` -> camera device; a folder or a glob
    -> image sequence (``fps``, default 30); anything else -> a video file or a
    URL FFmpeg reads. ``paced=True`` plays a file in real time as a live source.
    """
    from rtanim.live_sources import CameraSource, PacedFileSource

    s = str(spec).strip()
    if s.isdigit():
        return CameraSource(int(s), size=size, fps=fps)
    if s.startswith("/dev/video"):
        return CameraSource(s, size=size, fps=fps)
    if not _URL.match(s) and (os.path.isdir(s) or glob.has_magic(s)):
        return ImageSequenceSource(s, fps=fps or 30.0)
    if paced:
        return PacedFileSource(s, speed=speed, max_frames=max_frames)
    return VideoFileSource(s, start=start, max_frames=max_frames)
