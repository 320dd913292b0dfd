"""The video file sink: H.264 (or the container's codec) with the source's audio, finalised even on Ctrl-C.

A file is written under a hidden ``.part`` name and renamed only once finalised, so a half-written
video never carries the name the user asked for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rtanim.checks import DEFAULT_PRESET, check_preset
from rtanim.errors import InputError, RunError
from rtanim.io.audio_copy import AudioCopy
from rtanim.io.encoder import VideoEncoder
from rtanim.io.sink_base import SinkBase, check_size
from rtanim.io.source_base import Frame, ffmpeg_reason

#: Output container for each file extension (the temporary ``.part`` name hides it from FFmpeg).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
              ".avi": "avi", ".ts": "mpegts", ".flv": "flv"}
#: Codecs whose quality is set with ``crf``.
CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"}
#: Codecs whose speed is set with ``preset`` (rtanim.checks.X26X_PRESETS).
PRESET_CODECS = {"libx264", "libx264rgb", "libx265"}


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold off Ctrl-C while finalising, so a second press cannot leave a half-written file; re-raise after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    except (ValueError, OSError):  # not allowed here (embedded interpreter): finalise anyway
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if pending:
        raise KeyboardInterrupt


class VideoFileSink(SinkBase):
    """A video file, H.264 by default, with the source's audio copied across in sync.

    Frames are stamped with their source timestamps (variable frame rate stays in
    sync with the audio); pass the source's ``fps`` and ``time_base``. The file is
    written as ``.NAME.part`` in the target folder and renamed on ``close()``,
    which also runs on Ctrl-C: an interrupted run leaves a playable file holding
    every frame written so far and the audio up to its end.
    """

    kind = "file"

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float | None = None, *,
                 time_base: Fraction | None = None, codec: str | None = None, crf: int | None = 18,
                 audio_from: str | Path | None = None, options: Mapping[str, str] | None = None,
                 pix_fmt: str | None = None, preset: str | None = DEFAULT_PRESET) -> None:
        self.path = Path(path)
        self.size = check_size(size, str(path))
        if self.path.is_dir():
            raise InputError(self.path, "is an existing folder, not a file name")
        fmt = CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise InputError(self.path, f"unknown video extension (use one of {', '.join(CONTAINERS)})")
        folder = self.path.parent
        if not folder.is_dir():
            raise InputError(self.path, f"folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(self.path, f"folder {folder} is not writable")
        if audio_from is not None and Path(audio_from).resolve() == self.path.resolve():
            raise InputError(self.path, "would overwrite the input video; choose another output name")
        codec = codec or ("libvpx-vp9" if fmt == "webm" else "libx264")
        try:
            c = av.Codec(codec, "w")
        except Exception:  # noqa: BLE001 - PyAV raises several types for unknown names
            raise InputError(self.path, f"unknown video encoder {codec!r} in this FFmpeg build", field="codec") from None
        if c.type != "video":
            raise InputError(self.path, f"{codec!r} is not a video encoder", field="codec")
        opts = dict(options or {})
        check_preset(preset, self.path)
        if preset is not None and codec in PRESET_CODECS:
            opts.setdefault("preset", preset)
        if crf is not None and codec in CRF_CODECS:
            opts.setdefault("crf", str(crf))
            if codec == "libvpx-vp9":
                opts.setdefault("b", "0")  # constant quality mode
                opts.setdefault("cpu-used", "4")  # libvpx's default speed is many times slower than x264's
                opts.setdefault("row-mt", "1")
        self.part = folder / f".{self.path.name}.part"
        self._lock = threading.Lock()
        self._writer: int | None = None  # thread id inside write(), to spot a re-entrant close from a signal handler
        self._close_requested = False
        self._closed = False
        self._audio: AudioCopy | None = None
        try:
            self.part.touch()  # PyAV creates the file only at the first frame: prove now that we can
            self._out = av.open(str(self.part), "w", format=fmt)
        except (av.FFmpegError, OSError) as e:
            with contextlib.suppress(OSError):
                self.part.unlink()
            raise InputError(self.path, f"cannot create the output file ({ffmpeg_reason(e)})") from None
        try:
            self._video = VideoEncoder(self._out, codec, self.size, fps, time_base, opts, pix_fmt)
            if audio_from is not None:
                src = av.open(str(audio_from))
                has_audio = bool(src.streams.audio)
                src.close()
                if has_audio:
                    self._audio = AudioCopy(Path(audio_from), self._out, fmt)
        except Exception as e:
            self._abort()
            if isinstance(e, InputError):
                raise
            raise InputError(self.path, f"cannot set up the output ({ffmpeg_reason(e)})") from None

    @property
    def frames(self) -> int:
        return self._video.frames

    @property
    def duration(self) -> float:
        """Seconds of video written so far."""
        return self._video.end_t if self._video.frames else 0.0

    def write(self, frame: Frame, image: np.ndarray) -> None:
        try:
            with self._lock:
                if self._closed:
                    raise RunError(f"{self.path}: write after close")
                self._writer = threading.get_ident()
                try:
                    t = self._video.encode(frame, image)
                    if self._audio is not None:
                        if self._audio.offset is None:
                            self._audio.start(self._video.origin)
                        self._audio.pump(until=t)
                except av.FFmpegError as e:
                    raise RunError(f"{self.path}: writing failed ({ffmpeg_reason(e)})") from None
                finally:
                    self._writer = None
        finally:
            if self._close_requested:
                self.close()

    def close(self) -> Path | None:
        """Finalise and rename; returns the final path, or None when no frame was written (nothing is left).

        Called from a signal handler that interrupted ``write`` on the same thread,
        it only flags the request: ``write`` finishes its frame, then finalises.
        """
        if self._writer == threading.get_ident():
            self._close_requested = True
            return None
        with _sigint_deferred(), self._lock:
            if self._closed:
                return self.path if self.path.exists() else None
            self._closed = True
            if not self._video.frames:
                self._abort()
                return None
            try:
                self._video.flush()
                if self._audio is not None:
                    self._audio.pump(until=self._video.end_t, final=True)
                    self._audio.close()
                self._out.close()
            except Exception as e:
                self._abort()
                raise RunError(f"{self.path}: could not finalise the video ({ffmpeg_reason(e)})") from None
            os.replace(self.part, self.path)
            return self.path

    def discard(self) -> None:
        """Give up (a run failed): the temporary file is removed and nothing gets the final name."""
        if self._writer == threading.get_ident():
            return
        with self._lock:
            if not self._closed:
                self._closed = True
                self._abort()

    def _abort(self) -> None:
        """Drop everything: no half-written file is left behind, under either name."""
        for closer in (getattr(self, "_audio", None), getattr(self, "_out", None)):
            with contextlib.suppress(Exception):
                if closer is not None:
                    closer.close()
        with contextlib.suppress(OSError):
            self.part.unlink()

