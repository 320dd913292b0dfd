"""Live sources: a camera (OpenCV) or a file paced like one, handing out only the newest frame.

Beside :mod:`rtanim.io.source_file` (the file-like sources; :class:`~rtanim.io.source_base.Frame` is
what both hand out): a producer thread captures or decodes in real time and publishes into a
one-frame slot, so a consumer slower than the camera gets the newest frame and the rest are
counted as dropped; latency stays bounded instead of a queue growing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.checks import camera_unavailable
from rtanim.errors import InputError, RunError
from rtanim.io.source_base import Frame, SourceBase
from rtanim.io.source_file import VideoFileSource

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


class LiveSource(SourceBase):
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


class PacedFileSource(LiveSource):
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


class CameraSource(LiveSource):
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
            raise camera_unavailable(self.spec)
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
