"""The source's audio carried into an output video file, cut to the frames actually written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av

from rtanim.io.source_base import clock_origin


class AudioCopy:
    """The source file's first audio stream, carried into the output in step with the written video.

    Packets are remuxed untouched when the output container accepts the codec,
    otherwise decoded and re-encoded (AAC, or Opus for WebM). Only audio between
    the first and the last written video frame is kept: a packet goes in when its
    midpoint lies inside, so the lengths differ by at most half a packet.
    """

    def __init__(self, path: Path, out: Any, container_format: str) -> None:
        self.input = av.open(str(path))
        self.istream = self.input.streams.audio[0]
        self.clock = clock_origin(self.input)
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

