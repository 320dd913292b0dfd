"""The pipeline's sink stage on threads: every sink writes on its own worker, behind a small bounded queue.

The encoders (PyAV: ``avcodec_send_frame`` / ``receive_packet``, swscale and the muxer's write all run
``nogil``; x264 adds its own threads) and OpenCV's colour conversions release the GIL, so while the
calling thread composes frame N+1 the sinks write frame N, and different sinks write at the same time.
Throughput is then bounded by the slowest sink, not by compose plus every sink in series.

Policies, as for the rest of the pipeline:

- ``offline``: every frame, in order; a sink's full queue blocks the caller (back-pressure), nothing is dropped.
- ``live``: a sink's full queue drops its oldest frame (counted per sink in ``Stats.sink_drops``; the frame
  counts once in ``Stats.sink_dropped``, part of ``Stats.dropped``); a queue never grows.

A frame counts as delivered (``Stats.delivered``: the end of its latency) when the last sink has written it,
not when it was queued. Sinks marked ``main_thread`` (the preview window: HighGUI wants the thread that
opened the window) are written on the calling thread, after the frame is handed to the workers. A sink
that raises stops its worker; ``on_error`` hears of it at once and :meth:`SinkThreads.write` re-raises it.
:meth:`SinkThreads.finish` writes every queued frame (the end of a run, Ctrl-C) or abandons them (a failed
run); finalising the sinks (file trailer, audio) stays with their owner, after the run.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtanim.io.source_base import Frame
from rtanim.pipeline.stats import Stats

__all__ = ["SinkThreads"]

log = logging.getLogger("rtanim")


@dataclass
class _Item:
    """A frame on its way through the sinks: done once every sink has written or dropped it."""

    frame: Frame
    image: np.ndarray
    pending: int
    slowest: float = 0.0  # ms of the slowest write so far
    total: float = 0.0  # ms of all its writes
    dropped: bool = False


class _Worker:
    """One sink on its own thread, fed by a deque of at most ``depth`` frames."""

    def __init__(self, name: str, sink: Any, owner: SinkThreads) -> None:
        self.name, self.sink, self.owner = name, sink, owner
        self.cond = threading.Condition()
        self.queue: collections.deque[_Item] = collections.deque()
        self.busy_since: float | None = None  # when the frame being written was taken
        self.recent: collections.deque[float] = collections.deque(maxlen=15)  # its last write times, ms
        self.closing = False  # write what is queued, then end
        self.dead = False  # failed or abandoned: takes nothing more
        self.thread = threading.Thread(target=self._run, name=f"rtanim-sink-{name}", daemon=True)
        self.thread.start()

    def put(self, item: _Item) -> bool:
        """Queue a frame (live: dropping the oldest queued one when full; offline: waiting for room)."""
        o = self.owner
        with self.cond:
            if self.dead:
                return False
            if o.live:
                if len(self.queue) >= o.depth:
                    o._done(self, self.queue.popleft(), None)
            else:
                while len(self.queue) >= o.depth:
                    if o.error is not None or self.dead or (o.stop is not None and o.stop.is_set()):
                        return False
                    self.cond.wait(0.1)
            self.queue.append(item)
            o.stats.peak(f"sink {self.name}", len(self.queue))
            self.cond.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.closing and not self.dead:
                    self.cond.wait()
                if self.dead or not self.queue:
                    return
                item = self.queue.popleft()
                self.busy_since = time.perf_counter()
                self.cond.notify_all()  # room for a caller waiting to queue
            try:
                self.sink.write(item.frame, item.image)
            except BaseException as exc:  # noqa: BLE001 - a sink's failure ends the run with its error
                with self.cond:
                    self.dead, self.busy_since = True, None
                    self.cond.notify_all()
                self.owner._fail(self.name, exc)
                return
            now = time.perf_counter()
            ms = (now - self.busy_since) * 1e3
            with self.cond:
                self.busy_since = None
                self.recent.append(ms)
            self.owner._done(self, item, ms, now)

    def free_at(self, now: float, ahead: int) -> float | None:
        """When this worker will have written what it holds and ``ahead`` frames more, each taking its recent
        mean write time (an encoder's writes come in bursts: the mean is the rate it keeps up); None before any."""
        with self.cond:
            if not self.recent:
                return None
            ms = sum(self.recent) / len(self.recent) / 1e3
            left = (len(self.queue) + ahead) * ms
            if self.busy_since is not None:
                left += max(0.0, self.busy_since + ms - now)
        return now + left

    def stop(self, flush: bool) -> None:
        with self.cond:
            if flush:
                self.closing = True
            else:
                self.dead = True
                self.queue.clear()
            self.cond.notify_all()


class SinkThreads:
    """The sinks of one run: each on its worker thread (``threaded``), or all on the caller's thread, in turn.

    ``sinks``: ``(name, sink)`` pairs; the name keys the per-sink figures in ``stats`` (``sink_ms``,
    ``sink_drops``, queue peaks). Unthreaded (a measuring baseline, ``RTANIM_SINK_THREADS=0``), every sink
    is written on the calling thread in turn, as before sinks had threads, with the same figures.
    """

    def __init__(self, sinks: Sequence[tuple[str, object]], stats: Stats, *, policy: str = "offline", depth: int = 2,
                 threaded: bool = True, stop: threading.Event | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.stats, self.live, self.depth, self.threaded = stats, policy == "live", depth, threaded
        self.stop, self.on_error = stop, on_error
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._inline: list[tuple[str, object]] = []
        for name, sink in sinks:
            if threaded and not getattr(sink, "main_thread", False):
                self._workers.append(_Worker(name, sink, self))
            else:
                self._inline.append((name, sink))

    # -- the calling thread
    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Hand a frame to every sink (queued for the workers, written here for the inline ones).

        Raises the first sink error of the run; offline, waits while a sink's queue is full.
        """
        if self.error is not None:
            raise self.error
        item = _Item(frame, image, len(self._workers) + len(self._inline))
        for w in self._workers:
            if not w.put(item):
                if self.error is not None:
                    raise self.error
                return  # the run is stopping
        for name, sink in self._inline:
            t0 = time.perf_counter()
            sink.write(frame, image)
            now = time.perf_counter()
            self._done(None, item, (now - t0) * 1e3, now, name)

    def free_at(self, ahead: int = 0) -> float | None:
        """Live pacing: when the slowest worker will have written all it holds now and ``ahead`` frames more
        (``perf_counter`` seconds); None when no worker has written yet (or none runs)."""
        now = time.perf_counter()
        times = [t for w in self._workers if (t := w.free_at(now, ahead)) is not None]
        return max(times) if times else None

    def finish(self, flush: bool) -> None:
        """End the workers: ``flush`` writes every queued frame first (a run's end, Ctrl-C); otherwise the
        queued frames are dropped (a failed run). Never raises a sink's error (``on_error`` had it);
        an interrupt while flushing abandons the rest."""
        try:
            for w in self._workers:
                w.stop(flush and self.error is None)
            for w in self._workers:
                while w.thread.is_alive():
                    if self.error is not None:
                        w.stop(False)
                    w.thread.join(0.1)
        except BaseException:
            for w in self._workers:
                w.stop(False)
            for w in self._workers:
                w.thread.join(5.0)
            raise

    def __len__(self) -> int:
        return len(self._workers) + len(self._inline)

    # -- the workers
    def _done(self, worker: _Worker | None, item: _Item, ms: float | None, now: float | None = None,
              name: str | None = None) -> None:
        """One sink is done with a frame: written in ``ms`` (at ``now``), or dropped (``ms`` None)."""
        name = worker.name if worker is not None else name
        if ms is None:
            self.stats.sink_drop(name)
        else:
            self.stats.add_sink(name, ms)
        with self._lock:
            item.pending -= 1
            if ms is None:
                item.dropped = True
            else:
                item.slowest, item.total = max(item.slowest, ms), item.total + ms
            last = item.pending == 0
        if not last:
            return
        if item.dropped:
            self.stats.count_sink_dropped()
        else:
            self.stats.add("sink", item.slowest if self.threaded else item.total)
            self.stats.delivered(item.frame, now if now is not None else time.perf_counter())

    def _fail(self, name: str, exc: BaseException) -> None:
        log.debug("sink %s failed", name, exc_info=exc)
        with self._lock:
            first = self.error is None
            if first:
                self.error = exc
        for w in self._workers:  # wake a caller waiting for room
            with w.cond:
                w.cond.notify_all()
        if first and self.on_error is not None:
            self.on_error(exc)
