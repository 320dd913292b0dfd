"""Frame sources: video files (PyAV), cameras (OpenCV), image folders, and files paced like a camera.

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
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import av
import cv2
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


# --------------------------------------------------------------------------- live: newest frame only


class _LatestSlot:
    """A one-frame mailbox between a producer thread and the consumer: putting overwrites (and counts a drop)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._done = False
        self._error: BaseException | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None at the end. Raises the producer's error, if any."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RunError(f"no frame arrived within {timeout:.1f} s")
                self._cond.wait(left)
            frame, self._frame = self._frame, None
            if frame is None and self._error is not None:
                raise self._error
            return frame

    @property
    def pending(self) -> int:
        """Frames buffered right now: never more than one, by construction."""
        return int(self._frame is not None)


class _LiveSource(_SourceBase):
    """A producer thread feeding a :class:`_LatestSlot`; subclasses implement ``_produce``."""

    live = True

    def __init__(self) -> None:
        self._slot = _LatestSlot()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        """Frames captured but never handed out because the consumer was busy."""
        return self._slot.dropped

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._produce()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread, which raises it
            self._slot.finish(e)
        else:
            self._slot.finish()

    def _produce(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _publish_at(self, due: float, frame: Frame) -> bool:
        """Wait until ``due`` (perf_counter seconds), then publish ``frame`` stamped with the wall
        clock; False (nothing published) once the source is closed, so the producer returns."""
        while not self._stop.is_set() and (wait := due - time.perf_counter()) > 0:
            self._stop.wait(min(wait, 0.05))
        if self._stop.is_set():
            return False
        self._slot.put(replace(frame, wall=time.perf_counter()))
        return True

    def __iter__(self) -> Iterator[Frame]:
        self._start()
        while True:
            frame = self._slot.take()
            if frame is None:
                return
            yield frame

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)


class PacedFileSource(_LiveSource):
    """A video file played in real time like a camera (for tests, demos and live-mode benchmarks).

    A thread decodes and publishes each frame when it is due (``pts / speed`` after
    the start); a slow consumer gets only the newest frame and ``dropped`` counts
    the rest, exactly as with a camera.
    """

    def __init__(self, path: str | Path, speed: float = 1.0, *, loop: bool = False,
                 max_frames: int | None = None) -> None:
        super().__init__()
        if speed <= 0:
            raise InputError(path, "must be > 0", field="speed")
        self.speed = float(speed)
        self.loop = loop
        self.max_frames = max_frames
        self._file = VideoFileSource(path)  # validates up front
        self.path = self._file.path

    fps = property(lambda self: self._file.fps)
    size = property(lambda self: self._file.size)
    time_base = property(lambda self: self._file.time_base)
    frame_count = property(lambda self: None if self.loop else self._file.frame_count)
    duration = property(lambda self: None if self.loop else self._file.duration)

    def _produce(self) -> None:
        t0 = time.perf_counter()
        offset = 0.0  # pts offset of the current loop pass, so pts keep increasing
        first: float | None = None
        index = 0
        source = self._file
        while not self._stop.is_set():
            last = None
            for f in source:
                if first is None:
                    first = f.pts
                pts = f.pts + offset
                if not self._publish_at(t0 + (pts - first) / self.speed, Frame(f.image, pts, index, 0.0)):
                    return
                index += 1
                last = pts
                if self.max_frames is not None and index >= self.max_frames:
                    return
            if not self.loop or last is None:
                return
            offset = last + 1.0 / (self.fps or 30.0) - (first or 0.0)
            source.close()
            source = self._file = VideoFileSource(self.path)

    def close(self) -> None:
        super().close()
        self._file.close()


# --------------------------------------------------------------------------- cameras (OpenCV)


class CameraSource(_LiveSource):
    """A webcam or capture device through OpenCV, newest frame only, with reconnection.

    ``index_or_path`` is a camera index or a device path (/dev/video2). ``size``
    and ``fps`` are requests: the device may pick the nearest mode, so read
    ``size``/``fps`` back. MJPG is requested because most USB cameras deliver
    full HD at 30 fps only compressed. A camera that stops delivering is reopened
    for up to ``retry_seconds``, then iteration raises RunError.

    ``capture_factory(index_or_path) -> cv2.VideoCapture``-like object is a test
    seam (and a way to pick another OpenCV backend); by default V4L2 on Linux.
    """

    def __init__(self, index_or_path: int | str, size: tuple[int, int] | None = None, fps: float | None = None, *,
                 retry_seconds: float = 3.0, open_timeout: float = 5.0,
                 capture_factory: Callable[[int | str], Any] | None = None) -> None:
        super().__init__()
        self.spec = index_or_path
        self.requested_size = size
        self.requested_fps = fps
        self.retry_seconds = float(retry_seconds)
        self._factory = capture_factory or _default_capture
        self._cap = self._open()
        first = self._read_first(open_timeout)
        if first is None:
            self._cap.release()
            raise InputError(self._label(), f"camera opened but delivered no frame within {open_timeout:.0f} s "
                                            "(in use by another program, or no permission?)")
        self._first = first
        h, w = first.shape[:2]
        self._size = (w, h)
        got = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = got if got > 0 else fps

    def _label(self) -> str:
        return f"camera {self.spec}"

    def _open(self) -> Any:
        cap = self._factory(self.spec)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            hint = ("list devices with `v4l2-ctl --list-devices` or `ls /dev/video*`" if sys.platform.startswith("linux")
                    else "check the camera index and that no other program is using it")
            raise InputError(self._label(), f"cannot open it: no such device, or busy ({hint})")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        if self.requested_size:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(self.requested_size[0]))
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(self.requested_size[1]))
        if self.requested_fps:
            cap.set(cv2.CAP_PROP_FPS, float(self.requested_fps))
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued driver buffers = less latency
        return cap

    def _read_first(self, timeout: float) -> np.ndarray | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, img = self._cap.read()
            if ok and img is not None:
                return img
            time.sleep(0.05)
        return None

    fps = property(lambda self: self._fps)
    size = property(lambda self: self._size)
    frame_count = property(lambda self: None)
    duration = property(lambda self: None)

    @staticmethod
    def _to_rgb(img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)

    def _produce(self) -> None:
        t0 = time.perf_counter()
        index = 0
        pending = self._first
        self._first = None
        lost_since: float | None = None
        while not self._stop.is_set():
            if pending is not None:
                img, pending = pending, None
                ok = True
            else:
                ok, img = self._cap.read()
            if ok and img is not None:
                lost_since = None
                now = time.perf_counter()
                self._slot.put(Frame(self._to_rgb(img), now - t0, index, now))
                index += 1
                continue
            now = time.monotonic()
            lost_since = lost_since if lost_since is not None else now
            if now - lost_since > self.retry_seconds:
                raise RunError(f"{self._label()}: lost (no frames for {self.retry_seconds:.1f} s; unplugged, or taken "
                               "by another program?)")
            self._reopen()
            self._stop.wait(0.1)

    def _reopen(self) -> None:
        try:
            self._cap.release()
        except Exception:  # noqa: BLE001 - a dead device may fail to release; reopening is what matters
            pass
        try:
            self._cap = self._open()
        except InputError:
            self._cap = _ClosedCapture()

    def close(self) -> None:
        super().close()
        self._cap.release()


class _ClosedCapture:
    """Stands in while a lost camera cannot be reopened, so the retry loop has one code path."""

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


def _default_capture(spec: int | str) -> Any:
    """OpenCV capture (V4L2 on Linux), with OpenCV's own warnings muted: a failed open gets one InputError line."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        if sys.platform.startswith("linux"):
            return cv2.VideoCapture(spec, cv2.CAP_V4L2)
        return cv2.VideoCapture(spec)
    finally:
        cv2.utils.logging.setLogLevel(level)


# --------------------------------------------------------------------------- dispatch


def open_source(spec: str, *, size: tuple[int, int] | None = None, fps: float | None = None,
                paced: bool = False, speed: float = 1.0, start: float = 0.0,
                max_frames: int | None = None) -> VideoFileSource | CameraSource | ImageSequenceSource | PacedFileSource:
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
    if not _URL.match(s) and (os.path.isdir(s) or glob.has_magic(s)):
        return ImageSequenceSource(s, fps=fps or 30.0)
    if paced:
        return PacedFileSource(s, speed=speed, max_frames=max_frames)
    return VideoFileSource(s, start=start, max_frames=max_frames)
