"""Sinks on their own threads: offline order and back-pressure, live drop-oldest, errors, flushing.

Fake tracker and generator (no MediaPipe), real file sink where the written file is the point.
Nothing asserts a time: a sink that must be slow waits on an event instead.
"""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest
from test_pipeline import FakeGenerator, FakeTracker, frames, no_stage_threads
from typer.testing import CliRunner

from rtanim.commands.video import live_line
from rtanim.errors import RunError
from rtanim.expression.timeline import parse_aus_arg
from rtanim.io.sink_base import SinkBase
from rtanim.io.sink_file import VideoFileSink
from rtanim.io.sink_multi import MultiSink, named_sinks
from rtanim.io.source_base import Frame
from rtanim.measure.bench_run import MemorySource, PacedMemorySource
from rtanim.pipeline.graph import Controls, Pipeline
from rtanim.pipeline.sink_threads import SinkThreads
from rtanim.pipeline.stats import Stats

SMILE = parse_aus_arg("smile")
FAST = {"preset": "ultrafast"}


class FakeSink(SinkBase):
    """Records what it got and on which thread; ``delay`` slows each write, ``gate`` holds its write
    number ``hold`` (0: the first) until set, ``fail_at`` makes that write raise."""

    kind = "fake"

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None, hold: int = 0,
                 fail_at: int | None = None) -> None:
        self.delay, self.gate, self.hold, self.fail_at = delay, gate, hold, fail_at
        self.indices: list[int] = []
        self.calls = 0
        self.threads: set[str] = set()
        self.started = threading.Event()  # the held frame's write began
        self.closed = False

    def write(self, frame: Frame, image: np.ndarray) -> None:
        self.threads.add(threading.current_thread().name)
        n, self.calls = self.calls, self.calls + 1
        if n == self.fail_at:
            raise RunError(f"fake sink: write {n} failed")
        if self.gate is not None and n == self.hold:
            self.started.set()
            assert self.gate.wait(20), "the test never opened the gate"
        if self.delay:
            time.sleep(self.delay)
        self.indices.append(frame.index)

    def close(self) -> None:
        self.closed = True


def file_frames(path) -> list[int]:
    """The top-left pixel of each frame of a written file (the test frames carry their index there)."""
    with av.open(str(path)) as c:
        return [int(f.to_ndarray(format="rgb24")[0, 0, 0]) for f in c.decode(video=0)]


def wait_for(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ------------------------------------------------------------------ offline: every frame, in order


def test_offline_writes_every_frame_in_order_on_the_sinks_threads(tmp_path):
    slow = FakeSink(delay=0.01)
    out = tmp_path / "o.mp4"
    sinks = MultiSink([slow, VideoFileSink(out, (64, 48), 30.0, options=FAST)])
    with sinks:
        stats = Pipeline(FakeTracker(), FakeGenerator(), SMILE, policy="offline").run(MemorySource(frames(40), 30.0),
                                                                                      sinks)
        assert slow.indices == list(range(40))  # all written before run() returned
    assert slow.threads == {"rtanim-sink-fake"}  # on its own thread, not the caller's
    top = file_frames(out)
    assert len(top) == 40 and all(abs(v - i) <= 2 for i, v in enumerate(top))  # every frame, in order
    s = stats.summary()
    assert s["frames"] == 40 and s["dropped"] == 0 and s["sink_drops"] == {"fake": 0, "file": 0}
    assert set(s["sink_median_ms"]) == {"fake", "file"} and s["stage_median_ms"]["sink"] is not None
    assert 1 <= s["queue_peak"]["sink fake"] <= 4  # bounded queue
    assert s["latency_ms"]["p50"] is not None and no_stage_threads()


def test_offline_interrupt_flushes_what_was_queued(tmp_path):
    """Ctrl-C mid-run: every frame handed to the sinks is written, then the file is finalised with all of them."""
    slow = FakeSink(delay=0.02)
    out = tmp_path / "i.mp4"
    handed: list[int] = []

    def on_frame(stats, job):
        handed.append(job.frame.index)
        if job.frame.index == 10:
            raise KeyboardInterrupt

    sinks = MultiSink([slow, VideoFileSink(out, (64, 48), 30.0, options=FAST)])
    with pytest.raises(KeyboardInterrupt), sinks:
        Pipeline(FakeTracker(), FakeGenerator(), SMILE).run(MemorySource(frames(200), 30.0), sinks, on_frame)
    assert handed == list(range(11)) and slow.indices == handed and slow.closed
    assert len(file_frames(out)) == 11 and no_stage_threads()


def test_serial_baseline_writes_on_the_calling_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("RTANIM_SINK_THREADS", "0")
    sink = FakeSink()
    p = Pipeline(FakeTracker(), FakeGenerator(), SMILE)
    assert p.sink_threads is False
    stats = p.run(MemorySource(frames(12), 30.0), MultiSink([sink]))
    assert sink.indices == list(range(12)) and sink.threads == {threading.current_thread().name}
    assert stats.frames == 12 and stats.summary()["sink_median_ms"]["fake"] is not None


# ------------------------------------------------------------------ live: drop the oldest, count it


def test_live_queue_drops_its_oldest_frame_and_counts_it():
    """One slot: while the sink writes frame 0, frame 1 waits; 2 replaces it, then 3 replaces 2."""
    gate, stats = threading.Event(), Stats("live")
    sink = FakeSink(gate=gate, hold=0)
    threads = SinkThreads(named_sinks(sink), stats, policy="live", depth=1)
    fs = frames(4)
    threads.write(fs[0], fs[0].image)
    assert sink.started.wait(20)
    for f in fs[1:]:
        threads.write(f, f.image)
    gate.set()
    threads.finish(flush=True)
    assert sink.indices == [0, 3]
    assert stats.sink_drops == {"fake": 2} and stats.sink_dropped == 2 and stats.dropped == 2
    assert stats.frames == 2 and stats.summary()["queue_peak"]["sink fake"] == 1


def test_live_run_with_a_stalling_sink_keeps_the_bound_and_shows_the_drops():
    """A sink that stalls (its 4th write is held until frames pile up behind it): the queue never grows,
    the oldest waiting frames are dropped, every frame is delivered or counted once, the status line says so."""
    gate = threading.Event()
    stall = FakeSink(gate=gate, hold=3)
    other = FakeSink()
    sinks = MultiSink([stall, other])
    p = Pipeline(FakeTracker(delay=0.005), FakeGenerator(), SMILE, policy="live")
    opener = threading.Thread(target=lambda: (wait_for(lambda: p.stats.sink_dropped >= 2), gate.set()), daemon=True)
    opener.start()
    src = PacedMemorySource(frames(120, 100.0), 100.0)
    try:
        stats = p.run(src, sinks)
    finally:
        src.close()
    opener.join()
    s = stats.summary()
    assert stats.sink_dropped >= 2 and s["sink_drops"]["fake"] >= 2
    assert s["frames"] + s["dropped"] == 120  # each frame delivered, or dropped and counted once
    assert stall.indices == sorted(stall.indices) and other.indices == sorted(other.indices)
    assert all(v <= 1 for v in s["queue_peak"].values()), s["queue_peak"]
    line = live_line(stats, Controls()).plain
    assert f"dropped {stats.dropped} (in sinks {stats.sink_dropped})" in line and "fake 2" in line
    assert no_stage_threads()


# ------------------------------------------------------------------ errors: stop with the sink's own error


@pytest.mark.parametrize("policy", ["offline", "live"])
def test_a_failing_sink_thread_stops_the_run_with_its_error(policy, tmp_path):
    out = tmp_path / "f.mp4"
    bad = FakeSink(fail_at=4)
    t0 = time.monotonic()
    src = MemorySource(frames(300), 30.0) if policy == "offline" else PacedMemorySource(frames(300, 100.0), 100.0)
    with pytest.raises(RunError, match="fake sink: write 4 failed"):
        with MultiSink([bad, VideoFileSink(out, (64, 48), 30.0, options=FAST)]) as sinks:
            Pipeline(FakeTracker(), FakeGenerator(), SMILE, policy=policy).run(src, sinks)
    if policy == "live":
        src.close()
    assert time.monotonic() - t0 < 20 and no_stage_threads()
    assert not out.exists() and not list(tmp_path.iterdir())  # the failed run's file was discarded


def test_video_command_reports_a_sink_error_in_one_line(portrait_clip, tmp_path, monkeypatch):
    from rtanim.cli.app import app

    def fail(self, frame, image):
        if frame.index >= 3:
            raise RunError(f"{self.path}: writing failed (No space left on device)")

    monkeypatch.setattr(VideoFileSink, "write", fail)
    res = CliRunner().invoke(app, ["video", str(portrait_clip), "-o", str(tmp_path / "o.mp4"), "--aus", "smile",
                                   "--model", "warp", "--frames", "40"])
    assert res.exit_code != 0 and "No space left on device" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.mp4").exists()


def test_named_sinks_are_unique():
    a, b = FakeSink(), FakeSink()
    assert [n for n, _ in named_sinks(MultiSink([a, b]))] == ["fake", "fake 2"]
    assert named_sinks(a) == [("fake", a)]
