"""Frame sinks: video file (audio kept), network stream, virtual camera and preview window, in any combination.

Every sink takes ``write(frame, image)`` (the source :class:`~rtanim.io.source_base.Frame`,
for its timestamp, and the composed RGB image) and ``close()``. Sinks check
their target in the constructor, so a bad ``--out`` fails with an InputError
before any frame is processed. ``close()`` is idempotent and safe on the
KeyboardInterrupt path: a video file is always finalised (encoder flushed,
audio muxed up to the last written frame) and only then renamed to its name.

Each kind has its own module (:mod:`rtanim.io.sink_file`, :mod:`rtanim.io.sink_stream`,
:mod:`rtanim.io.sink_vcam`, :mod:`rtanim.io.sink_preview`, all on :mod:`rtanim.io.sink_base`);
this one opens what a command asks for and feeds them together. Given to the pipeline, a
:class:`MultiSink`'s sinks each write on their own thread (:mod:`rtanim.pipeline.sink_threads`), named
by :func:`named_sinks`; its own ``write`` feeds them in turn on the caller's thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.checks import DEFAULT_PRESET
from rtanim.io.sink_base import Sink, SinkBase
from rtanim.io.sink_file import VideoFileSink
from rtanim.io.sink_preview import Controls, OverlayStats, PreviewSink
from rtanim.io.sink_stream import NetworkSink, is_stream_url
from rtanim.io.sink_vcam import VirtualCameraSink
from rtanim.io.source_base import Frame


class MultiSink(SinkBase):
    """Several sinks fed the same frames; ``close()`` closes every one even if some fail.

    ``names`` (one per sink) name them in run statistics; by default each sink's ``kind``.
    """

    def __init__(self, sinks: Sequence[Sink], names: Sequence[str] | None = None) -> None:
        self.sinks = list(sinks)
        if names is not None and len(names) != len(self.sinks):
            raise ValueError(f"{len(names)} names for {len(self.sinks)} sinks")
        self.names = list(names) if names is not None else [_kind(s) for s in self.sinks]
        self._default_controls = Controls()

    def add(self, sink: Sink) -> None:
        """One more sink, named by its ``kind``."""
        self.sinks.append(sink)
        self.names.append(_kind(sink))

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


def _kind(sink: object) -> str:
    return getattr(sink, "kind", type(sink).__name__.lower())


def named_sinks(sink: Sink) -> list[tuple[str, Sink]]:
    """The sinks inside ``sink`` (a MultiSink's members, else itself) with unique names for statistics."""
    pairs = list(zip(sink.names, sink.sinks, strict=True)) if isinstance(sink, MultiSink) else [(_kind(sink), sink)]
    out: list[tuple[str, Sink]] = []
    for base, s in pairs:
        name, n = base, 1
        while any(name == taken for taken, _ in out):
            n += 1
            name = f"{base} {n}"
        out.append((name, s))
    return out


def open_sinks(out: Sequence[str | Path] = (), vcam: bool = False, preview: bool = False, *,
               size: tuple[int, int], fps: float | None = None, time_base: Fraction | None = None,
               audio_from: str | Path | None = None, codec: str | None = None, crf: int | None = 18,
               preset: str | None = DEFAULT_PRESET, title: str = "rtanim", controls: Any = None,
               on_preset: Callable[[int], None] | None = None,
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
                                            audio_from=audio_from, preset=preset))
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
