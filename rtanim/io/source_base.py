"""What every frame source shares: the :class:`Frame` that crosses every stage boundary, the
:class:`Source` protocol, and opening a media file or stream with FFmpeg's errors as one line.

Timestamps: ``Frame.pts`` is seconds on the source's own clock (for files, the container clock with
its start at 0, so audio copied by :mod:`rtanim.io.audio_copy` lines up); subtract the first frame's
pts for "time since start". ``Frame.wall`` is ``time.perf_counter()`` when the frame was captured,
for latency statistics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import av
import numpy as np

from rtanim.errors import InputError

URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


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


class SourceBase:
    """The context-manager half every source shares."""

    live: bool = False

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


# --------------------------------------------------------------------------- files (PyAV)


def clock_origin(container: av.container.InputContainer) -> float:
    """Seconds to subtract so a file's clock starts at 0; shared with the sink's audio copy."""
    start = container.start_time
    return 0.0 if start is None else start / av.time_base


def open_media(path: str | Path, what: str = "media file") -> av.container.InputContainer:
    """Open a file or stream for reading, turning FFmpeg's errors into one InputError line."""
    spec = str(path)
    if not URL.match(spec):
        p = Path(spec)
        if not p.exists():
            raise InputError(p, "no such file")
        if p.is_dir():
            raise InputError(p, f"is a folder, not a {what}")
    try:
        return av.open(spec, "r", timeout=(10.0, 10.0) if URL.match(spec) else None)
    except av.FFmpegError as e:
        raise InputError(spec, f"not a readable {what} ({ffmpeg_reason(e)})") from None


def ffmpeg_reason(e: Exception) -> str:
    return (getattr(e, "strerror", None) or str(e)).strip().rstrip(".")
