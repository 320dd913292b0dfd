"""Frame sinks: video file (audio kept), network stream, virtual camera and preview window, in any combination.

Every sink takes ``write(frame, image)`` (the source :class:`~rtanim.sources.Frame`,
for its timestamp, and the composed RGB image) and ``close()``. Sinks check
their target in the constructor, so a bad ``--out`` fails with an InputError
before any frame is processed. ``close()`` is idempotent and safe on the
KeyboardInterrupt path: a video file is always finalised (encoder flushed,
audio muxed up to the last written frame) and only then renamed to its name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import av
import cv2
import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.sources import Frame, _clock_origin, _ffmpeg_reason

#: Output container for each file extension (the temporary ``.part`` name hides it from FFmpeg).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
              ".avi": "avi", ".ts": "mpegts", ".flv": "flv"}
#: Codecs whose quality is set with ``crf``.
CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1", "libaom-av1"}
#: URL schemes that go to :class:`NetworkSink`, and the container each one carries.
STREAM_FORMATS = {"udp": "mpegts", "tcp": "mpegts", "srt": "mpegts", "rtp": "rtp_mpegts", "rtmp": "flv", "rtmps": "flv"}
VCAM_HINT = {
    "linux": "load v4l2loopback: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=rtanim",
    "other": "install OBS Studio and start its Virtual Camera once (Windows / macOS)",
}


@runtime_checkable
class Sink(Protocol):
    """Where composed frames go."""

    def write(self, frame: Frame, image: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> Sink: ...
    def __exit__(self, *exc: object) -> None: ...


class _SinkBase:
    def __enter__(self):
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        """Finalise on success and on Ctrl-C / exit (outputs so far are kept); discard on a real failure."""
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt | SystemExit):
            self.close()
        else:
            self.discard()

    def close(self) -> None:  # pragma: no cover - overridden
        pass

    def discard(self) -> None:
        """Stop without keeping a result; for sinks with nothing to finalise it is just close()."""
        self.close()


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


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The image at the sink's size (a camera may change mode after reconnecting), RGB uint8 contiguous."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
    if (image.shape[1], image.shape[0]) != tuple(size):
        image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image)


def _check_size(size: tuple[int, int], what: str) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w < 2 or h < 2:
        raise InputError(what, f"frame size {w}x{h} is too small")
    return w, h


# --------------------------------------------------------------------------- encoding (shared by file and network)


class _VideoEncoder:
    """One encoded video stream: even-size padding, timestamps from the source clock, encode + mux."""

    def __init__(self, container: Any, codec: str, size: tuple[int, int], fps: float | None,
                 time_base: Fraction | None, options: Mapping[str, str], pix_fmt: str | None = None) -> None:
        self.size = size
        w, h = size
        self.container = container
        rate = Fraction(fps).limit_denominator(1001 * 1000) if fps else Fraction(30)
        self.stream = container.add_stream(codec, rate=rate)
        cc = self.stream.codec_context
        formats = [f.name for f in (self.stream.codec.video_formats or [])]
        self.pix_fmt = pix_fmt or ("yuv420p" if not formats or "yuv420p" in formats else formats[0])
        # 4:2:0 needs even sizes: pad one edge row/column by replication rather than lose a pixel of the picture.
        sub = self.pix_fmt.startswith(("yuv420", "nv12", "yuvj420"))
        self.coded = (w + (w % 2), h + (h % 2)) if sub else (w, h)
        self.stream.width, self.stream.height = self.coded
        self.stream.pix_fmt = self.pix_fmt
        self.time_base = time_base or Fraction(1, 90000)  # fine enough that jittery live stamps never collide
        cc.time_base = self.time_base
        self.stream.time_base = self.time_base
        if self.pix_fmt.startswith(("yuv", "nv")):
            cc.colorspace = 1  # BT.709, and tagged so players and PyAV decode with the same matrix
            cc.color_primaries = 1
            cc.color_trc = 1
            cc.color_range = 1  # limited ("MPEG") range, what every player expects
        self.stream.options = dict(options)
        self.nominal = bool(fps)
        self.frame_dt = 1.0 / float(rate)
        self.origin: float | None = None  # source pts of the first frame written = output time 0
        self.last_pts: int | None = None
        self.last_t = 0.0
        self.end_t = 0.0  # end of the last frame written, output seconds
        self.frames = 0

    def encode(self, frame: Frame, image: np.ndarray) -> float:
        """Encode one image at the frame's time; returns its output time in seconds."""
        if self.origin is None:
            self.origin = frame.pts
        t = frame.pts - self.origin
        pts = round(t / self.time_base)
        if self.last_pts is not None and pts <= self.last_pts:  # duplicate / backwards stamp: keep muxer happy
            pts = self.last_pts + 1
        if self.frames and not self.nominal:  # no nominal rate: the last frame lasts as long as the one before
            self.frame_dt = max(float((pts - self.last_pts) * self.time_base), 1e-6)
        img = _fit(image, self.size)
        if self.coded != self.size:
            img = cv2.copyMakeBorder(img, 0, self.coded[1] - self.size[1], 0, self.coded[0] - self.size[0],
                                     cv2.BORDER_REPLICATE)
        vf = av.VideoFrame.from_ndarray(img, format="rgb24")
        if self.pix_fmt != "rgb24":
            vf = vf.reformat(format=self.pix_fmt, dst_colorspace="ITU709" if self.pix_fmt.startswith(("yuv", "nv"))
                             else None)
        vf.pts = pts
        vf.time_base = self.time_base
        vf.duration = max(1, round(self.frame_dt / self.time_base))
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.last_pts = pts
        self.last_t = float(pts * self.time_base)
        self.end_t = self.last_t + self.frame_dt
        self.frames += 1
        return self.last_t

    def flush(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)


# --------------------------------------------------------------------------- audio copy for the file sink


class _AudioCopy:
    """The source file's first audio stream, carried into the output in step with the written video.

    Packets are remuxed untouched when the output container accepts the codec,
    otherwise decoded and re-encoded (AAC, or Opus for WebM). Only audio between
    the first and the last written video frame is kept: a packet goes in when its
    midpoint lies inside, so the lengths differ by at most half a packet.
    """

    def __init__(self, path: Path, out: Any, container_format: str) -> None:
        self.input = av.open(str(path))
        self.istream = self.input.streams.audio[0]
        self.clock = _clock_origin(self.input)
        self.packets = self.input.demux(self.istream)
        self.pending: av.Packet | None = None
        self.exhausted = False
        self.out = out
        self.copy = self.istream.codec_context.name in out.supported_codecs
        if self.copy:
            self.ostream = out.add_stream_from_template(self.istream)
        else:
            codec = "libopus" if container_format == "webm" else "aac"
            icc = self.istream.codec_context
            rate = icc.sample_rate if codec == "aac" else 48000
            self.ostream = out.add_stream(codec, rate=rate)
            self.ostream.layout = icc.layout.name if icc.channels <= 2 else "stereo"
            self.decoder = icc
        self.offset: float | None = None  # file-clock seconds of output time 0

    def start(self, origin: float) -> None:
        """Output time 0 is the first video frame's source pts (source clock, start at 0)."""
        self.offset = origin + self.clock

    def _times(self, packet: av.Packet) -> tuple[float, float]:
        tb = packet.time_base
        start = float(packet.pts * tb) - self.offset
        return start, start + float((packet.duration or 0) * tb)

    def _next(self) -> av.Packet | None:
        while self.pending is None and not self.exhausted:
            try:
                p = next(self.packets)
            except StopIteration:
                self.exhausted = True
                break
            if p.pts is not None and p.size:  # demux ends with an empty flush packet
                self.pending = p
        return self.pending

    def pump(self, until: float, final: bool = False) -> None:
        """Mux packets that end before ``until`` (or, when ``final``, whose midpoint is before it)."""
        if self.offset is None:
            return
        while (p := self._next()) is not None:
            start, end = self._times(p)
            if ((start + end) / 2 >= until) if final else (end > until):
                break
            self.pending = None
            if (start + end) / 2 < 0 and self.offset > self.clock + 1e-3:  # before the first frame of a segment
                continue
            self._emit(p)
        if final and not self.copy:
            for packet in self.ostream.encode(None):
                self.out.mux(packet)

    def _emit(self, packet: av.Packet) -> None:
        shift = round(self.offset / packet.time_base)
        if self.copy:
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.ostream
            self.out.mux(packet)
            return
        for af in self.decoder.decode(packet):
            if af.pts is None:
                continue
            af.pts -= round(self.offset / af.time_base)
            for out_packet in self.ostream.encode(af):
                self.out.mux(out_packet)

    def close(self) -> None:
        self.input.close()


# --------------------------------------------------------------------------- video file


class VideoFileSink(_SinkBase):
    """A video file, H.264 by default, with the source's audio copied across in sync.

    Frames are stamped with their source timestamps (variable frame rate stays in
    sync with the audio); pass the source's ``fps`` and ``time_base``. The file is
    written as ``.NAME.part`` in the target folder and renamed on ``close()``,
    which also runs on Ctrl-C: an interrupted run leaves a playable file holding
    every frame written so far and the audio up to its end.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float | None = None, *,
                 time_base: Fraction | None = None, codec: str | None = None, crf: int | None = 18,
                 audio_from: str | Path | None = None, options: Mapping[str, str] | None = None,
                 pix_fmt: str | None = None) -> None:
        self.path = Path(path)
        self.size = _check_size(size, str(path))
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
        self._audio: _AudioCopy | None = None
        try:
            self.part.touch()  # PyAV creates the file only at the first frame: prove now that we can
            self._out = av.open(str(self.part), "w", format=fmt)
        except (av.FFmpegError, OSError) as e:
            with contextlib.suppress(OSError):
                self.part.unlink()
            raise InputError(self.path, f"cannot create the output file ({_ffmpeg_reason(e)})") from None
        try:
            self._video = _VideoEncoder(self._out, codec, self.size, fps, time_base, opts, pix_fmt)
            if audio_from is not None:
                src = av.open(str(audio_from))
                has_audio = bool(src.streams.audio)
                src.close()
                if has_audio:
                    self._audio = _AudioCopy(Path(audio_from), self._out, fmt)
        except Exception as e:
            self._abort()
            if isinstance(e, InputError):
                raise
            raise InputError(self.path, f"cannot set up the output ({_ffmpeg_reason(e)})") from None

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
                    raise RunError(f"{self.path}: writing failed ({_ffmpeg_reason(e)})") from None
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
                raise RunError(f"{self.path}: could not finalise the video ({_ffmpeg_reason(e)})") from None
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


# --------------------------------------------------------------------------- network stream


class NetworkSink(_SinkBase):
    """A low-latency H.264 stream OBS / ffplay / VLC can open: MPEG-TS over udp:// tcp:// srt://, FLV over rtmp://.

    x264 runs with preset ultrafast, tune zerolatency, no B-frames and a keyframe
    every second, so a viewer that joins late starts within a second.
    """

    def __init__(self, url: str, size: tuple[int, int], fps: float | None = None, *,
                 bitrate: int | None = None, options: Mapping[str, str] | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self.size = _check_size(size, url)
        scheme = urlsplit(url).scheme.lower()
        fmt = STREAM_FORMATS.get(scheme)
        if fmt is None:
            raise InputError(url, f"unsupported stream scheme (use {', '.join(s + '://' for s in STREAM_FORMATS)})")
        target = url
        if scheme == "udp" and "pkt_size" not in url:
            target += ("&" if "?" in url else "?") + "pkt_size=1316"  # 7 TS packets: fits one Ethernet frame
        try:
            self._out = av.open(target, "w", format=fmt, timeout=timeout)
        except av.ProtocolNotFoundError:
            raise InputError(url, f"this FFmpeg build cannot stream over {scheme}://") from None
        except (av.FFmpegError, OSError) as e:
            raise InputError(url, f"cannot open the stream ({_ffmpeg_reason(e)})") from None
        g = str(max(1, round(fps or 30)))
        opts = {"preset": "ultrafast", "tune": "zerolatency", "g": g, "bf": "0"}
        opts.update(options or {})
        try:
            self._video = _VideoEncoder(self._out, "libx264", self.size, fps, Fraction(1, 90000), opts)
            if bitrate:
                self._video.stream.codec_context.bit_rate = int(bitrate)
            self._out.start_encoding()  # PyAV connects lazily: connect now, so a dead server fails before any work
        except Exception as e:
            with contextlib.suppress(Exception):
                self._out.close()
            if isinstance(e, av.ProtocolNotFoundError):
                raise InputError(url, f"this FFmpeg build cannot stream over {scheme}://") from None
            raise InputError(url, f"cannot start the stream ({_ffmpeg_reason(e)})") from None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def frames(self) -> int:
        return self._video.frames

    def write(self, frame: Frame, image: np.ndarray) -> None:
        with self._lock:
            if self._closed:
                raise RunError(f"{self.url}: write after close")
            try:
                self._video.encode(frame, image)
            except (av.FFmpegError, OSError) as e:
                raise RunError(f"{self.url}: streaming failed ({_ffmpeg_reason(e)})") from None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(av.FFmpegError, OSError):
                if self._video.frames:
                    self._video.flush()
            with contextlib.suppress(av.FFmpegError, OSError):
                self._out.close()


# --------------------------------------------------------------------------- virtual camera


class VirtualCameraSink(_SinkBase):
    """A virtual webcam (pyvirtualcam: v4l2loopback on Linux, OBS Virtual Camera on Windows / macOS).

    Frames are sent as they come: pacing belongs to the live source, so no
    ``sleep_until_next_frame``. With no device, one InputError line says how to get one.
    """

    def __init__(self, size: tuple[int, int], fps: float | None = 30.0, *, backend: str | None = None,
                 device: str | None = None) -> None:
        import pyvirtualcam

        self.size = _check_size(size, "--vcam")
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(pyvirtualcam.camera.BACKENDS) or "none on this system"
            raise InputError("--vcam", f"unknown virtual camera backend {backend!r} (available: {known})")
        try:
            self._cam = pyvirtualcam.Camera(self.size[0], self.size[1], float(fps or 30.0),
                                            fmt=pyvirtualcam.PixelFormat.RGB, backend=backend, device=device)
        except Exception as e:  # noqa: BLE001 - pyvirtualcam raises RuntimeError / ValueError per backend
            why = " ".join(str(e).split())  # backends report one line each: keep ONE line
            hint = VCAM_HINT["linux" if sys.platform.startswith("linux") else "other"]
            raise InputError("--vcam", f"no virtual camera available ({why}); {hint}") from None
        self.device = self._cam.device
        self.backend = self._cam.backend
        self._closed = False

    @property
    def frames(self) -> int:
        return self._cam.frames_sent

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._closed:
            raise RunError("virtual camera: write after close")
        try:
            self._cam.send(_fit(image, self.size))
        except Exception as e:  # noqa: BLE001 - device errors come from native code
            raise RunError(f"virtual camera {self.device}: sending failed ({e})") from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cam.close()


# --------------------------------------------------------------------------- preview window


@dataclass
class Controls:
    """What the user can change while a run goes on: the preview's hotkeys set it, the pipeline reads it every frame.

    The one controls object of a run (``rtanim.pipeline`` re-exports it): q quit, space effect, p pause the
    timeline, 1-9 preset (``on_preset`` puts that preset's timeline in ``timeline``), o overlay.
    """

    quit: bool = False
    effect_on: bool = True
    paused: bool = False
    preset_index: int | None = None  # 0-8 after keys 1-9
    overlay: bool = True  # o toggles the stats overlay
    timeline: Any = None  # a rtanim.timeline.Timeline replacing the run's own (set by a preset hotkey)

    def handle_key(self, key: int) -> int | None:
        return apply_key(self, key)


def apply_key(controls: Any, key: int) -> int | None:
    """Apply one ``cv2.waitKey`` code (-1 = none) to any object with ``quit``/``effect_on``/``paused``.

    Duck-typed so the pipeline can hand the preview its own controls object.
    Returns the preset index (0-8) for keys 1-9, also stored in ``preset_index`` when it has one.
    """
    if key < 0:
        return None
    ch = chr(key & 0xFF)
    if ch in ("q", "Q", "\x1b"):
        controls.quit = True
    elif ch == " ":
        controls.effect_on = not controls.effect_on
    elif ch in ("p", "P"):
        controls.paused = not controls.paused
    elif ch in ("o", "O") and hasattr(controls, "overlay"):
        controls.overlay = not controls.overlay
    elif "1" <= ch <= "9":
        index = ord(ch) - ord("1")
        if hasattr(controls, "preset_index"):
            controls.preset_index = index
        return index
    return None


@dataclass(frozen=True)
class OverlayStats:
    """The numbers the preview shows; the pipeline fills them from its own stats."""

    fps: float = 0.0
    latency_ms: float = 0.0
    dropped: int = 0
    faces: int = 0
    note: str = ""  # e.g. "paused", "effect off", the preset name


def draw_overlay(image: np.ndarray, stats: OverlayStats | Mapping[str, Any],
                 aus: Mapping[str, float] | None = None) -> np.ndarray:
    """A copy of ``image`` with fps / latency text and one bar per AU (value clipped to [0, 1]) drawn on it."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(scale * 2))
    line = round(22 * scale) + 4
    if isinstance(stats, OverlayStats):
        text = f"{stats.fps:.1f} fps  {stats.latency_ms:.0f} ms  faces {stats.faces}  dropped {stats.dropped}"
        if stats.note:
            text += f"  {stats.note}"
    else:
        text = "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
    items = list((aus or {}).items())
    panel_h = line * (1 + len(items)) + 8
    panel_w = min(w, max(round(340 * scale * 1.6), 120))
    y1, x1 = min(h, panel_h), min(w, panel_w)
    roi = out[:y1, :x1]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text so it reads on any frame
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(out, text, (6, line), font, scale * 0.8, (255, 255, 255), thick, cv2.LINE_AA)
    label_w = round(70 * scale)
    bar_max = max(10, x1 - label_w - 16)
    for i, (code, value) in enumerate(items):
        y = line * (i + 2)
        cv2.putText(out, str(code), (6, y), font, scale * 0.6, (220, 220, 220), thick, cv2.LINE_AA)
        v = float(np.clip(value, 0.0, 1.0))
        top = y - line + 8
        cv2.rectangle(out, (label_w + 8, top), (label_w + 8 + bar_max, y - 2), (90, 90, 90), 1)
        if v > 0:
            cv2.rectangle(out, (label_w + 8, top), (label_w + 8 + round(bar_max * v), y - 2), (80, 200, 120), -1)
    return out


def _has_gui() -> bool:
    info = cv2.getBuildInformation()
    gui = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    return bool(gui) and gui.upper() != "NONE"


class PreviewSink(_SinkBase):
    """An OpenCV window showing the output, with hotkeys that set :class:`Controls` and a stats overlay.

    The pipeline calls ``set_overlay(stats, aus)`` before ``write`` to update the
    overlay and reads ``controls`` after. ``write`` also pumps the window's events
    (``waitKey(1)``), so it must run on the thread that opened the window.
    """

    def __init__(self, title: str = "rtanim", controls: Any = None,
                 on_preset: Callable[[int], None] | None = None) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("--preview", "no display ($DISPLAY is not set): run without --preview, or use --out / --vcam")
        if not _has_gui():
            raise InputError("--preview", "this OpenCV build has no GUI support (opencv-python-headless?): "
                                          "install opencv-contrib-python")
        self.title = title
        self.controls = controls if controls is not None else Controls()
        self.on_preset = on_preset
        self.show_overlay = True
        self._stats: OverlayStats | Mapping[str, Any] | None = None
        self._aus: Mapping[str, float] | None = None
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        except cv2.error as e:
            raise InputError("--preview", f"cannot open a window ({e.msg.strip() if hasattr(e, 'msg') else e})") from None
        self._closed = False

    def set_overlay(self, stats: OverlayStats | Mapping[str, Any] | None, aus: Mapping[str, float] | None = None) -> None:
        self._stats, self._aus = stats, aus

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._closed:
            return
        if getattr(self.controls, "overlay", self.show_overlay) and self._stats is not None:
            image = draw_overlay(image, self._stats, self._aus)
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        preset = apply_key(self.controls, cv2.waitKey(1))
        if preset is not None and self.on_preset is not None:
            self.on_preset(preset)
        with contextlib.suppress(cv2.error):
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                self.controls.quit = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)


# --------------------------------------------------------------------------- several at once


class MultiSink(_SinkBase):
    """Several sinks fed the same frames; ``close()`` closes every one even if some fail."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self._default_controls = Controls()

    @property
    def preview(self) -> PreviewSink | None:
        return next((s for s in self.sinks if isinstance(s, PreviewSink)), None)

    @property
    def controls(self) -> Any:
        """The preview's hotkey state; a fixed default (effect on, never quit) without a preview."""
        p = self.preview
        return p.controls if p is not None else self._default_controls

    def set_overlay(self, stats: OverlayStats | Mapping[str, Any] | None, aus: Mapping[str, float] | None = None) -> None:
        if (p := self.preview) is not None:
            p.set_overlay(stats, aus)

    def write(self, frame: Frame, image: np.ndarray) -> None:
        for s in self.sinks:
            s.write(frame, image)

    def close(self) -> None:
        self._each("close")

    def discard(self) -> None:
        self._each("discard")

    def _each(self, method: str) -> None:
        first: BaseException | None = None
        for s in self.sinks:
            try:
                getattr(s, method, s.close)()
            except BaseException as e:  # noqa: BLE001 - finish closing the others, then report the first
                first = first or e
        if first is not None:
            raise first

    def __len__(self) -> int:
        return len(self.sinks)


def is_stream_url(spec: str) -> bool:
    """True for ``--out`` values that go to a NetworkSink (udp://, srt://, rtmp://, tcp://, rtp://)."""
    return urlsplit(spec).scheme.lower() in STREAM_FORMATS and "://" in spec


def open_sinks(out: Sequence[str | Path] = (), vcam: bool = False, preview: bool = False, *,
               size: tuple[int, int], fps: float | None = None, time_base: Fraction | None = None,
               audio_from: str | Path | None = None, codec: str | None = None, crf: int | None = 18,
               title: str = "rtanim", controls: Any = None, on_preset: Callable[[int], None] | None = None,
               vcam_backend: str | None = None, vcam_device: str | None = None) -> MultiSink:
    """Open every requested sink (each ``--out`` is a file, or a stream URL), or none: on any error, close the rest.

    ``controls`` / ``on_preset`` go to the preview: pass the pipeline's own controls object to have hotkeys drive it.
    """
    opened: list[Sink] = []
    try:
        for spec in out:
            s = str(spec)
            if is_stream_url(s):
                opened.append(NetworkSink(s, size, fps))
            else:
                opened.append(VideoFileSink(s, size, fps, time_base=time_base, codec=codec, crf=crf,
                                            audio_from=audio_from))
        if vcam:
            opened.append(VirtualCameraSink(size, fps, backend=vcam_backend, device=vcam_device))
        if preview:
            opened.append(PreviewSink(title, controls, on_preset))
    except BaseException:
        for s in opened:
            with contextlib.suppress(Exception):
                s.close()
        raise
    return MultiSink(opened)
