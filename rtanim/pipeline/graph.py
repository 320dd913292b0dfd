"""The stage graph: capture -> track + crop -> generate -> compose -> sinks, in threads.

Each heavy call (decode, MediaPipe, the engine, OpenCV warps, encode) releases the GIL,
so stages overlap on separate threads joined by bounded queues. Two policies:

- ``live``: only the newest frame is worked on. A live source (camera, paced file) already
  keeps just its newest frame, so the track stage pulls from it directly and the source's
  ``dropped`` is the one drop count; any other source gets a capture stage that keeps the
  newest frame and counts what it discards. Every queue holds one item, and the track stage
  starts the next frame just in time for the slowest later stage (``_start_due``), so no frame
  waits in a queue: latency stays about the sum of the stage times.
- ``offline``: every frame in order, with back-pressure instead of drops, and the crops of
  several frames batched into one engine call.

In both, the generate stage runs the generator only on faces that changed: a face that holds
still under unchanged target AUs gets its last output again (rtanim.pipeline.reuse; ``reuse=None``
turns that off), counted in ``Stats.reused``. Run statistics live in rtanim.pipeline.stats.

Compose runs on the calling thread, so a preview window lives on the main thread and Ctrl-C
lands where outputs can be finalised. Sink objects (a :class:`~rtanim.io.sink_multi.MultiSink`, a file
sink...) then write on their own threads (rtanim.pipeline.sink_threads: each sink behind a small queue, so
compose of the next frame and the sinks' encodes overlap; offline blocks, live drops the oldest);
a plain callable sink is called on the calling thread. A stage that raises stops every stage,
and :meth:`Pipeline.run` re-raises its error (wrapped in :class:`StageError` unless it already is
an :class:`~rtanim.errors.InputError` / :class:`~rtanim.errors.RunError`; a sink's error as it is).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rtanim.errors import InputError, RunError
from rtanim.expression.timeline import Timeline
from rtanim.face.align import crop
from rtanim.face.compose import compose
from rtanim.io.sink_base import Sink
from rtanim.io.sink_multi import Controls, named_sinks
from rtanim.io.source_base import Frame
from rtanim.pipeline.jobs import FaceJob, FrameJob, Generator, Target, Tracker
from rtanim.pipeline.reuse import OutputCache, ReuseTolerance
from rtanim.pipeline.sink_threads import SinkThreads
from rtanim.pipeline.stats import RECENT, STAGES, Stats

if TYPE_CHECKING:  # tracking pulls in MediaPipe; the pipeline only needs its types
    from rtanim.face.tracking import Face

__all__ = [
    "Controls",
    "FaceJob",
    "FrameJob",
    "Generator",
    "Pipeline",
    "RECENT",
    "STAGES",
    "ReuseTolerance",
    "StageError",
    "Stats",
    "select_faces",
]

log = logging.getLogger("rtanim")

Policy = Literal["live", "offline"]
FaceSelect = Literal["largest", "all"]
_END = object()


class StageError(RunError):
    """A pipeline stage failed with an unexpected error; names the stage, keeps the cause."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage, self.cause = stage, cause
        super().__init__(f"{stage} stage failed: {type(cause).__name__}: {cause}")


# ------------------------------------------------------------------ the pipeline


def select_faces(faces: list[Face], which: FaceSelect) -> list[Face]:
    if which == "all" or len(faces) <= 1:
        return faces
    area = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in faces]
    return [faces[int(np.argmax(area))]]


class _Clock:
    """Timeline time: the frame's pts since the first frame, frozen while paused."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.paused_at: float | None = None
        self.offset = 0.0

    def __call__(self, pts: float, paused: bool) -> float:
        if self.first is None:
            self.first = pts
        raw = pts - self.first
        if paused:
            if self.paused_at is None:
                self.paused_at = raw
            return self.paused_at - self.offset
        if self.paused_at is not None:
            self.offset += raw - self.paused_at
            self.paused_at = None
        return raw - self.offset


class Pipeline:
    """Runs one source through tracking, a generator and compositing into a sink. One run per instance."""

    def __init__(
        self,
        tracker: Tracker,
        generator: Generator,
        timeline: Timeline | Target,
        policy: Policy = "offline",
        faces: FaceSelect = "all",
        batch: int = 8,
        queue_size: int = 8,
        controls: Controls | None = None,
        reuse: ReuseTolerance | None = ReuseTolerance(),
        sink_threads: bool | None = None,
    ) -> None:
        """``reuse``: when a face and its targets count as unchanged, so that its last generator output is
        used again instead of running the generator (rtanim.pipeline.reuse); None runs the generator on every face.
        ``sink_threads``: write sink objects on their own threads (None: yes, unless the environment sets
        ``RTANIM_SINK_THREADS=0``, the baseline the bench compares against)."""
        if policy not in ("live", "offline"):
            raise ValueError(f"policy must be 'live' or 'offline', not {policy!r}")
        self.tracker, self.generator, self.timeline = tracker, generator, timeline
        self.policy, self.which = policy, faces
        self.batch = max(1, batch) if policy == "offline" else 1  # live: batching would only add latency
        self.queue_size = 1 if policy == "live" else max(2, queue_size)
        self.controls = controls or Controls()
        self.stats = Stats(policy)
        self.reuse = None if reuse is None else OutputCache(reuse)
        self.sink_threads = os.environ.get("RTANIM_SINK_THREADS", "1") != "0" if sink_threads is None else sink_threads
        self._sinks: SinkThreads | None = None
        self._handoff: collections.deque[float] = collections.deque(maxlen=15)  # ms the calling thread gives sinks
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._clock = _Clock()
        self._gen_took: float | None = None  # when the generate stage last took a job (live pacing)
        self._post_took: float | None = None  # when the compose stage last took a job (live pacing)
        self._n_tracked = self._n_posted = self._n_sunk = 0  # jobs out of the track stage / into compose / to sinks

    # -- queue helpers that never hang: every wait wakes up to check for a stop
    def _put(self, q: queue.Queue, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return _END

    def _worker(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - any stage failure stops the run with its error
                log.debug("%s stage failed", name, exc_info=True)
                self._errors.append(exc if isinstance(exc, InputError | RunError) else StageError(name, exc))
                self._stop.set()

        t = threading.Thread(target=run, name=f"rtanim-{name}", daemon=True)
        t.start()
        return t

    # -- stages
    def _capture(self, source: Iterable[Frame], out: queue.Queue) -> None:
        """Reads the source; in live mode (non-live source) keeps only the newest frame."""
        it = iter(source)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                break
            self.stats.add("capture", (time.perf_counter() - t0) * 1e3)
            if self.policy == "live":
                try:  # only this thread puts, so after taking the stale frame out there is room
                    out.get_nowait()
                    self.stats.pipeline_dropped += 1
                except queue.Empty:
                    pass
                out.put_nowait(frame)
            elif not self._put(out, frame):
                return
            self.stats.peak("frames", out)
        self._put(out, _END)

    def _start_due(self) -> float:
        """Live: when to start tracking the next frame so that it reaches each later stage just as it frees up.

        Starting earlier only makes the frame wait in a queue behind the slowest stage (older at the
        sink, same fps): up to two of its periods of extra latency. The generate stage is free
        ``generate`` ms after it took its last job, the compose stage (compose, then handing the frame to
        the sinks: ``post`` ms) ``post`` ms after it took its last one, plus ``post`` for each job already
        on its way to it; the frame needs ``track`` ms to reach the first and ``track + generate`` the
        second. Counting the jobs on the way drains a backlog (say, from start-up) instead of keeping it
        at the bottleneck's pace forever. Sinks on their own threads are one more stage: free when their
        slowest worker has written what it holds plus one write for each job on its way to them
        (:meth:`SinkThreads.free_at`), reached ``track + generate + post`` after the start.
        """
        est = self.stats.recent_median
        track, generate = est("track"), est("generate")
        if track is None or generate is None:
            return 0.0
        post = (est("compose") or 0.0) + (statistics.median(self._handoff) if self._handoff else 0.0)
        due = 0.0
        if self._gen_took is not None:
            due = self._gen_took + (generate - track) / 1e3
        if self._post_took is not None:
            ahead = max(0, self._n_tracked - self._n_posted)  # tracked jobs the compose stage has not taken yet
            due = max(due, self._post_took + (post * (1 + ahead) - generate - track) / 1e3)
        if self._sinks is not None:  # the sinks' own threads: free after what they hold and the jobs on the way
            free = self._sinks.free_at(max(0, self._n_tracked - self._n_sunk))
            if free is not None:
                due = max(due, free - (track + generate + post) / 1e3)
        return due

    def _pace(self, out: queue.Queue) -> None:
        while not self._stop.is_set():
            wait = self._start_due() - time.perf_counter()
            if wait <= 0 and out.empty():
                return
            time.sleep(min(max(wait, 0.001), 0.01))

    def _track(self, frames: Iterable[Frame], out: queue.Queue) -> None:
        it = iter(frames)
        while True:
            if self.policy == "live":
                self._pace(out)  # take the newest frame only when it can go straight on
            if self._stop.is_set():
                return
            try:
                frame = next(it)
            except StopIteration:
                break
            t0 = time.perf_counter()
            job = self.prepare(frame)
            self.stats.add("track", (time.perf_counter() - t0) * 1e3)
            if not self._put(out, job):
                return
            self._n_tracked += 1
            self.stats.peak("tracked", out)
        self._put(out, _END)

    def _drain(self, q: queue.Queue) -> Iterable[Frame]:
        while (item := self._get(q)) is not _END:
            yield item

    def prepare(self, frame: Frame) -> FrameJob:
        """Track, select, resolve targets and crop: everything before the generator."""
        c = self.controls
        faces = select_faces(self.tracker.track(frame.image, frame.pts), self.which)
        effect = bool(c.effect_on)
        job = FrameJob(frame, effect=effect, found=len(faces))
        t = self._clock(frame.pts, bool(c.paused))  # keeps running while the effect is off
        if not faces or not effect:
            return job
        timeline = c.timeline or self.timeline
        job.faces = [FaceJob(f, crop(frame.image, f.transform), timeline.at(t, f.aus)) for f in faces]
        return job

    def _generate(self, inp: queue.Queue, out: queue.Queue) -> None:
        done = False
        while not done:
            first = self._get(inp)
            if first is _END:
                break
            self._gen_took = time.perf_counter()
            jobs = [first]
            # offline: gather more frames while the batch has room and frames are ready
            while self.policy == "offline" and sum(len(j.faces) for j in jobs) < self.batch:
                try:
                    nxt = inp.get(timeout=0.002)
                except queue.Empty:
                    break
                if nxt is _END:
                    done = True
                    break
                jobs.append(nxt)
            self.run_generator(jobs)
            for j in jobs:
                if not self._put(out, j):
                    return
                self.stats.peak("generated", out)
        self._put(out, _END)

    def run_generator(self, jobs: Sequence[FrameJob]) -> None:
        """Fill each job's outputs: the generator runs on the faces that changed, the others reuse theirs."""
        faces = [f for j in jobs for f in j.faces]
        if self.reuse is not None:
            self.reuse.retain({f.face.face_id for f in faces})  # a face that left loses its reference
        if not faces:
            return
        t0 = time.perf_counter()
        if self.reuse is not None:
            refs, run = self.reuse.plan(faces)
        else:
            refs, run = [], list(range(len(faces)))
        fresh = self.generator.generate([faces[i] for i in run]) if run else []
        if len(fresh) != len(run):
            raise RunError(f"the generator returned {len(fresh)} outputs for {len(run)} faces")
        outputs = self.reuse.fill(refs, run, fresh) if self.reuse is not None else fresh
        self.stats.generated += len(run)
        self.stats.reused += len(faces) - len(run)
        per_frame = (time.perf_counter() - t0) * 1e3 / max(1, sum(1 for j in jobs if j.faces))
        i = 0
        for j in jobs:
            if j.faces:
                j.outputs = outputs[i : i + len(j.faces)]
                i += len(j.faces)
                self.stats.add("generate", per_frame)

    def finish(self, job: FrameJob) -> np.ndarray:
        """Compose one frame (untouched when it has no face or the effect is off)."""
        if not job.found:
            self.stats.frames_without_face += 1
        if not job.outputs:
            return job.frame.image
        t0 = time.perf_counter()
        image = compose(job.frame.image, job.outputs, [f.face.transform for f in job.faces])
        self.stats.add("compose", (time.perf_counter() - t0) * 1e3)
        self.stats.faces += len(job.faces)
        return image

    def run(
        self,
        source: Iterable[Frame],
        sink: Sink | Callable[[Frame, np.ndarray], None],
        on_frame: Callable[[Stats, FrameJob], None] | None = None,
    ) -> Stats:
        """Run to the end of the source, a quit request or an error; always stops every thread.

        ``sink``: a sink object (a :class:`~rtanim.io.sink_multi.MultiSink`'s sinks each) is written on its own
        thread (:mod:`rtanim.pipeline.sink_threads`; a preview on this one); a plain callable is called here.
        The caller keeps the sinks and finalises them after the run: when it returns (or raises
        KeyboardInterrupt) every frame handed to them has been written.

        Errors of any stage (and of the sinks and ``on_frame``) propagate after the other stages
        have stopped; so does a KeyboardInterrupt, leaving the caller to finalise its outputs
        with every frame delivered so far.
        """
        if self._stop.is_set() or self.stats.finished is not None:
            raise RuntimeError("a Pipeline runs once; make a new one")
        q_frames: queue.Queue = queue.Queue(maxsize=self.queue_size)
        q_tracked: queue.Queue = queue.Queue(maxsize=self.queue_size)
        q_generated: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self.stats.started = time.perf_counter()
        out = None
        if isinstance(sink, Sink):
            out = self._sinks = SinkThreads(
                named_sinks(sink), self.stats, policy=self.policy, depth=1 if self.policy == "live" else 4,
                threaded=self.sink_threads, stop=self._stop, on_error=self._sink_failed)
        threads = []
        if self.policy == "live" and getattr(source, "live", False):
            # the source's own newest-frame slot is the only buffer, and its drop count the only one
            self.stats.source_dropped = lambda: getattr(source, "dropped", 0)
            frames: Iterable[Frame] = source
        else:
            threads.append(self._worker("capture", lambda: self._capture(source, q_frames)))
            frames = self._drain(q_frames)
        threads.append(self._worker("track", lambda: self._track(frames, q_tracked)))
        threads.append(self._worker("generate", lambda: self._generate(q_tracked, q_generated)))
        ended = "error"
        try:
            while (job := self._get(q_generated)) is not _END:
                self._post_took = time.perf_counter()
                self._n_posted += 1
                image = self.finish(job)
                t0 = time.perf_counter()
                if out is not None:
                    out.write(job.frame, image)  # delivered when the sinks have written it
                    self._handoff.append((time.perf_counter() - t0) * 1e3)
                else:
                    sink(job.frame, image)
                    now = time.perf_counter()
                    self._handoff.append((now - t0) * 1e3)
                    self.stats.add("sink", (now - t0) * 1e3)
                    self.stats.delivered(job.frame, now)
                self._n_sunk += 1
                if on_frame is not None:
                    on_frame(self.stats, job)
                if self.controls.quit:
                    break
            ended = "end"
        except (KeyboardInterrupt, SystemExit):
            ended = "interrupt"
            raise
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=5.0)
            if out is not None:  # write what the sinks hold (the end, Ctrl-C), or drop it (a failure)
                out.finish(flush=ended != "error" and not self._errors)
            self.stats.finished = time.perf_counter()
        if self._errors:
            raise self._errors[0]
        return self.stats

    def _sink_failed(self, exc: BaseException) -> None:
        """A sink's worker raised: stop every stage; :meth:`run` raises its error as it is."""
        self._errors.append(exc)
        self._stop.set()
