"""The real ends of the pipeline for ``rtanim bench --input``: a decoding source and the user's sinks, timed.

- :func:`prepare_clip`: the clip at the benchmarked size (and rate), so decoding it is the real decode
  of a stream of that size. A clip already at that size is used as it is; otherwise it is transcoded
  once (H.264, crf 18, audio kept) into the bench's temporary folder before any timing.
- :class:`PacedDecodeSource`: a live source that decodes the clip in real time on its own thread
  and publishes only the newest frame, like a camera; each decode is timed as the ``capture`` stage.
- :class:`BenchSinks`: the sinks a user runs, each on its thread and timed per frame: ``file`` (the file sink of
  ``rtanim video``: x264 crf 18 with the clip's audio copied, into the temporary folder),
  ``vcam`` (what the virtual-camera sink does to a frame; with no camera device here, the same
  conversion without the device write) and ``udp`` (the stream sink to ``udp://127.0.0.1:PORT``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rtanim.checks import BENCH_SINKS as SINKS
from rtanim.errors import InputError
from rtanim.io.sink_base import fit_image
from rtanim.io.sink_multi import MultiSink
from rtanim.io.source_base import Frame
from rtanim.io.source_file import VideoFileSource
from rtanim.io.source_live import LiveSource

__all__ = ["SINKS", "BenchSinks", "PacedDecodeSource", "VcamConversion", "cpu_meter", "open_vcam", "prepare_clip"]


def prepare_clip(clip: str | Path, frames: int, size: tuple[int, int] | None, fps: float | None,
                 folder: Path) -> tuple[Path, tuple[int, int], float, int]:
    """The clip to decode at ``size`` (None: its own) and ``fps`` (None: its own): path, size, fps, frames.

    Only the first ``frames`` frames are kept when transcoding; a clip used as it is is capped when read.
    """
    import cv2

    from rtanim.io.sink_file import VideoFileSink

    with VideoFileSource(clip) as src:
        own_size, own_fps, declared = src.size, src.fps or 30.0, src.frame_count
        size, rate = size or own_size, fps or own_fps
        if size == own_size and fps is None:
            out, n = Path(clip), min(frames, declared) if declared else frames
        else:
            out, n = folder / f"clip_{size[0]}x{size[1]}_{rate:g}fps.mp4", 0
            with VideoFileSink(out, size, rate, time_base=None if fps else src.time_base, crf=18,
                               audio_from=clip, options={"preset": "veryfast"}) as sink:
                for f in src:
                    image = f.image
                    if (image.shape[1], image.shape[0]) != size:
                        shrink = size[0] < image.shape[1]
                        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
                    sink.write(Frame(image, n / rate if fps else f.pts, n, f.wall), image)
                    n += 1
                    if n >= frames:
                        break
    if n < 2:
        raise InputError(clip, f"has {n} frame(s); the bench needs at least 2", field="--input")
    return out, size, rate, n


class PacedDecodeSource(LiveSource):
    """A video file decoded in real time like a camera: newest frame only, ``dropped`` counts the rest.

    A thread decodes each frame ahead of its due time (index / fps after the start) and publishes it
    then; ``on_decode(ms)`` gets each decode's time (decode and conversion to RGB, as the offline
    ``capture`` stage measures them).
    """

    def __init__(self, path: str | Path, fps: float, max_frames: int,
                 on_decode: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self._file = VideoFileSource(path, max_frames=max_frames)  # validates up front
        self.fps, self.size, self.time_base = fps, self._file.size, self._file.time_base
        self.on_decode = on_decode

    def _produce(self) -> None:
        it = iter(self._file)
        t0 = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            d0 = time.perf_counter()
            try:
                f = next(it)
            except StopIteration:
                return
            if self.on_decode is not None:
                self.on_decode((time.perf_counter() - d0) * 1e3)
            if not self._publish_at(t0 + i / self.fps, Frame(f.image, i / self.fps, i, 0.0)):
                return
            i += 1

    def close(self) -> None:
        super().close()
        self._file.close()


class VcamConversion:
    """The virtual-camera sink's work on a frame without a device: its ``fit_image``, then the RGB to
    I420 conversion pyvirtualcam's v4l2loopback backend does natively before writing (here OpenCV's)."""

    kind = "vcam"

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def write(self, frame: Frame, image: np.ndarray) -> None:
        import cv2

        cv2.cvtColor(fit_image(image, self.size), cv2.COLOR_RGB2YUV_I420)

    def close(self) -> None:
        pass

    discard = close


def open_vcam(size: tuple[int, int], fps: float) -> tuple[object, str]:
    """The real virtual camera when one can be opened here, else :class:`VcamConversion`; with a note saying which."""
    try:
        import pyvirtualcam  # noqa: F401 - only to know whether a backend could exist
    except ImportError:
        return VcamConversion(size), ("vcam: conversion only (pyvirtualcam is not installed: the sink's fit and an "
                                      "RGB to I420 conversion, without the device write)")
    from rtanim.io.sink_vcam import VirtualCameraSink

    try:
        sink = VirtualCameraSink(size, fps)
    except InputError:
        return VcamConversion(size), ("vcam: conversion only (no virtual camera device here: the sink's fit and the "
                                      "RGB to I420 conversion pyvirtualcam's backend does, without the device write)")
    return sink, f"vcam: the real virtual camera ({sink.backend} {sink.device})"


class BenchSinks(MultiSink):
    """The requested sinks, named ``file`` / ``vcam`` / ``udp``: the pipeline writes each on its own thread
    and times each write under its name (``Stats.sink_ms``).

    ``close()`` finalises them all (the file sink's encoder flush and audio mux) and times that too;
    the file written is removed afterwards, its byte size kept in ``file_bytes``.
    """

    def __init__(self, names: Sequence[str], folder: Path, clip: Path, size: tuple[int, int], fps: float,
                 time_base: object = None, tag: str = "") -> None:
        from rtanim.io.sink_file import VideoFileSink
        from rtanim.io.sink_stream import NetworkSink

        super().__init__([])
        self.notes: list[str] = []
        self.close_ms = 0.0
        self.file_bytes: int | None = None
        self._receiver: socket.socket | None = None
        self._path = folder / f"out{tag}.mp4"
        try:
            for name in (n for n in SINKS if n in names):
                sink: object
                if name == "file":
                    sink = VideoFileSink(self._path, size, fps, time_base=time_base, audio_from=clip)
                elif name == "vcam":
                    sink, note = open_vcam(size, fps)
                    self.notes.append(note)
                else:  # a bound socket that nobody reads: the kernel drops what overflows, no ICMP errors
                    self._receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    self._receiver.bind(("127.0.0.1", 0))
                    port = self._receiver.getsockname()[1]
                    sink = NetworkSink(f"udp://127.0.0.1:{port}", size, fps)
                    self.notes.append("udp: x264 ultrafast / zerolatency MPEG-TS to a local UDP port")
                self.sinks.append(sink)
                self.names.append(name)
        except BaseException:
            self.discard()
            raise

    def close(self) -> None:
        t0 = time.perf_counter()
        try:
            super().close()
        finally:
            self.close_ms = (time.perf_counter() - t0) * 1e3
            if self._path.exists():
                self.file_bytes = self._path.stat().st_size
            self._cleanup()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            super().discard()
        self._cleanup()

    def _cleanup(self) -> None:
        self._path.unlink(missing_ok=True)
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None


@contextlib.contextmanager
def cpu_meter() -> Iterator[dict[str, float]]:
    """Process CPU time (every thread: user + system) over wall time while the block runs.

    Fills ``cpu_s``, ``wall_s``, ``one_core_pct`` (100 = one core busy) and ``all_cores_pct``
    (100 = every core this process may use busy) once the block ends.
    """
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    out: dict[str, float] = {"cores": cores}
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        yield out
    finally:
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        one = 100.0 * cpu / wall if wall > 0 else 0.0
        out.update(cpu_s=round(cpu, 3), wall_s=round(wall, 3), one_core_pct=round(one, 1),
                   all_cores_pct=round(one / cores, 1))
