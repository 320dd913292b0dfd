"""Run statistics of the pipeline: per-stage times, end-to-end latency, drops, skipped work, queue peaks.

Samples are kept for the whole run (the summary's percentiles are over every frame) in
``array('d')`` columns: 8 bytes a sample, so an hour of 30 fps live video with its six series
costs about 5 MB (and 1 MB per sink), not the ~30 MB of Python float lists. Other threads read
them with :meth:`Stats.series` (a copy): a column cannot grow while a numpy view of it is alive.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.files import write_text
from rtanim.io.source_base import Frame

__all__ = ["RECENT", "STAGES", "Stats"]

STAGES = ("capture", "track", "generate", "compose", "sink")
#: Frames the live-view numbers (``Stats.recent``) are computed over.
RECENT = 60


def _series() -> array:
    return array("d")


@dataclass
class Stats:
    """Per-stage times (ms), throughput, end-to-end latency (capture to sink done), drops and reuse.

    ``dropped`` is every frame a live run captured but never delivered, counted once where it
    was discarded: in the live source (``source.dropped``), in the pipeline's capture stage
    (``pipeline_dropped``) or in a sink's queue (``sink_dropped``: frames some sink dropped;
    ``sink_drops`` counts them per sink). A frame is delivered when every sink has written it.
    ``sink_ms`` holds each sink's write times (ms) by its name; the ``sink`` stage is the whole
    sink stage per frame (sinks on threads: the slowest write; in turn: their sum).
    ``reused`` counts faces whose generator output was reused from an earlier frame because the
    face and its target AUs had not changed (see :mod:`rtanim.pipeline.reuse`); ``generated`` the faces the
    generator ran on.
    """

    policy: str
    started: float = field(default_factory=time.perf_counter)
    frames: int = 0
    faces: int = 0
    frames_without_face: int = 0
    generated: int = 0
    reused: int = 0
    pipeline_dropped: int = 0
    sink_dropped: int = 0
    sink_drops: dict[str, int] = field(default_factory=dict)
    sink_ms: dict[str, array] = field(default_factory=dict)
    stage_ms: dict[str, array] = field(default_factory=lambda: {s: _series() for s in STAGES})
    latency_ms: array = field(default_factory=_series)
    queue_peak: dict[str, int] = field(default_factory=dict)
    finished: float | None = None
    source_dropped: Callable[[], int] = field(default=lambda: 0, repr=False)
    _done_at: collections.deque = field(default_factory=lambda: collections.deque(maxlen=RECENT), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.stage_ms[stage].append(ms)

    def add_sink(self, name: str, ms: float) -> None:
        """One write of the sink ``name`` took ``ms``."""
        with self._lock:
            self.sink_ms.setdefault(name, _series()).append(ms)

    def sink_drop(self, name: str) -> None:
        """The sink ``name`` dropped a queued frame (live policy, its queue was full)."""
        with self._lock:
            self.sink_drops[name] = self.sink_drops.get(name, 0) + 1

    def count_sink_dropped(self) -> None:
        """A frame some sink dropped is done: not delivered, counted once in ``dropped``."""
        with self._lock:
            self.sink_dropped += 1

    def delivered(self, frame: Frame, now: float) -> None:
        with self._lock:
            self.latency_ms.append((now - frame.wall) * 1e3)
            self._done_at.append(now)
            self.frames += 1

    def recent_median(self, stage: str, n: int = 15) -> float | None:
        """Median ms of the stage's last ``n`` frames (None before the first): live pacing follows changes."""
        with self._lock:
            xs = self.stage_ms[stage][-n:]
        return float(np.median(xs)) if xs else None

    def peak(self, name: str, q: queue.Queue | int) -> None:
        depth = q if isinstance(q, int) else q.qsize()
        if depth > self.queue_peak.get(name, 0):
            self.queue_peak[name] = depth

    @property
    def dropped(self) -> int:
        return self.pipeline_dropped + self.sink_dropped + int(self.source_dropped() or 0)

    @property
    def wall(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def series(self, name: str, start: int = 0, *, sink: bool = False) -> np.ndarray:
        """A copy of the samples of ``name`` (a stage, ``"latency"``, or with ``sink`` a sink) from index ``start`` on.

        Read the samples through this (or under ``_lock``): a numpy view of a column held while the
        pipeline appends to it would make that append fail (an array cannot grow while it exports
        its buffer).
        """
        with self._lock:
            if sink:
                xs = self.sink_ms.get(name, _series())
            else:
                xs = self.latency_ms if name == "latency" else self.stage_ms[name]
            return np.array(xs[start:], np.float64)

    def recent(self) -> dict[str, Any]:
        """fps, latency and stage medians over the last frames, for a live display (cheap at any run length)."""
        with self._lock:
            done = list(self._done_at)
            lat = self.latency_ms[-RECENT:]
            stages = {s: v[-RECENT:] for s, v in self.stage_ms.items()}
            sinks = {s: v[-RECENT:] for s, v in self.sink_ms.items()}
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else None
        return {
            "fps": fps,
            "latency_p50": float(np.median(lat)) if lat else None,
            "latency_p95": float(np.percentile(lat, 95)) if lat else None,
            "stage_ms": {s: float(np.median(v)) if v else None for s, v in stages.items()},
            "sink_ms": {s: float(np.median(v)) if v else None for s, v in sinks.items()},
        }

    def summary(self) -> dict[str, Any]:
        def pct(xs: array, q: float) -> float | None:
            return round(float(np.percentile(xs, q)), 2) if xs else None

        dropped = self.dropped
        with self._lock:
            return {
                "policy": self.policy,
                "frames": self.frames,
                "faces": self.faces,
                "frames_without_face": self.frames_without_face,
                "generated": self.generated,
                "reused": self.reused,
                "dropped": dropped,
                "drop_rate": round(dropped / max(1, self.frames + dropped), 4),
                "sink_dropped": self.sink_dropped,
                "sink_drops": {n: self.sink_drops.get(n, 0) for n in {**self.sink_ms, **self.sink_drops}},
                "wall_s": round(self.wall, 3),
                "fps": round(self.frames / self.wall, 2) if self.wall > 0 else None,
                "latency_ms": {
                    "p50": pct(self.latency_ms, 50),
                    "p95": pct(self.latency_ms, 95),
                    "max": pct(self.latency_ms, 100),
                },
                "stage_median_ms": {s: pct(v, 50) for s, v in self.stage_ms.items()},
                "sink_median_ms": {s: pct(v, 50) for s, v in self.sink_ms.items()},
                "queue_peak": dict(self.queue_peak),
            }

    def write_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> None:
        """The summary (plus ``extra``, e.g. model and input) as JSON, written atomically."""
        write_text(path, json.dumps({**(extra or {}), **self.summary()}, indent=2) + "\n")
