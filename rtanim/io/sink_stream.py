"""The network stream sink: low-latency H.264 over udp / tcp / srt / rtp / rtmp for OBS, ffplay or VLC."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from fractions import Fraction
from urllib.parse import urlsplit

import av
import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.io.encoder import VideoEncoder
from rtanim.io.sink_base import SinkBase, check_size
from rtanim.io.source_base import Frame, ffmpeg_reason

#: URL schemes that go to :class:`NetworkSink`, and the container each one carries.
STREAM_FORMATS = {"udp": "mpegts", "tcp": "mpegts", "srt": "mpegts", "rtp": "rtp_mpegts", "rtmp": "flv", "rtmps": "flv"}


class NetworkSink(SinkBase):
    """A low-latency H.264 stream OBS / ffplay / VLC can open: MPEG-TS over udp:// tcp:// srt://, FLV over rtmp://.

    x264 runs with preset ultrafast, tune zerolatency, no B-frames and a keyframe
    every second, so a viewer that joins late starts within a second.
    """

    kind = "stream"

    def __init__(self, url: str, size: tuple[int, int], fps: float | None = None, *,
                 bitrate: int | None = None, options: Mapping[str, str] | None = None, timeout: float = 5.0) -> None:
        self.url = url
        self.size = check_size(size, url)
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
            raise InputError(url, f"cannot open the stream ({ffmpeg_reason(e)})") from None
        g = str(max(1, round(fps or 30)))
        opts = {"preset": "ultrafast", "tune": "zerolatency", "g": g, "bf": "0"}
        opts.update(options or {})
        try:
            self._video = VideoEncoder(self._out, "libx264", self.size, fps, Fraction(1, 90000), opts)
            if bitrate:
                self._video.stream.codec_context.bit_rate = int(bitrate)
            self._out.start_encoding()  # PyAV connects lazily: connect now, so a dead server fails before any work
        except Exception as e:
            with contextlib.suppress(Exception):
                self._out.close()
            if isinstance(e, av.ProtocolNotFoundError):
                raise InputError(url, f"this FFmpeg build cannot stream over {scheme}://") from None
            raise InputError(url, f"cannot start the stream ({ffmpeg_reason(e)})") from None
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
                raise RunError(f"{self.url}: streaming failed ({ffmpeg_reason(e)})") from None

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


def is_stream_url(spec: str) -> bool:
    """True for ``--out`` values that go to a NetworkSink (udp://, srt://, rtmp://, tcp://, rtp://)."""
    return urlsplit(spec).scheme.lower() in STREAM_FORMATS and "://" in spec

