"""One encoded video stream (PyAV), shared by the file sink and the network stream sink.

Both need the same even-size padding, BT.709 tagging and source-clock timestamps, so they live once here.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np

from rtanim.io.sink_base import fit_image
from rtanim.io.source_base import Frame


class VideoEncoder:
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
        img = fit_image(image, self.size)
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

