"""Pipeline policies, stats, controls and failure handling.

Most tests use a fake tracker and generator (no MediaPipe, no model), so they check the stage
graph itself: order, drops, bounded queues, stopping on errors. The last ones run the real
tracker and `warp` model on a shared clip played like a camera.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from rtanim.commands.video import resolve_target, sigterm_as_interrupt, webcam_passthrough, with_passthrough
from rtanim.errors import InputError, RunError
from rtanim.expression.timeline import WEBCAM_PASSTHROUGH, parse_aus_arg, timeline_from_dict
from rtanim.face.compose import FaceOutput
from rtanim.io import sink_preview as preview
from rtanim.io.source_base import Frame
from rtanim.measure.bench_run import MemorySource, PacedMemorySource
from rtanim.pipeline import graph as pipeline
from rtanim.pipeline.graph import Controls, Pipeline, StageError, select_faces

H, W = 48, 64


def frames(n: int, fps: float = 30.0) -> list[Frame]:
    """Frames whose pixel value encodes their index, so a sink can tell which one it got."""
    return [Frame(np.full((H, W, 3), i % 256, np.uint8), i / fps, i, time.perf_counter()) for i in range(n)]


def fake_face(face_id: int = 0, box=(16, 8, 48, 40), aus=None):
    x0, y0, x1, y1 = box
    s = 128.0 / (x1 - x0)  # frame -> crop: the box fills the crop
    m = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]], np.float64)
    return SimpleNamespace(face_id=face_id, bbox=box, aus=dict(aus or {"AU25": 0.3}),
                           transform=SimpleNamespace(matrix=m, size=128))


class FakeTracker:
    def __init__(self, faces=1, delay=0.0):
        self.faces, self.delay, self.calls = faces, delay, 0

    def track(self, rgb, pts=None):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return [fake_face(i, (4 + 20 * i, 4, 20 + 20 * i, 20)) for i in range(self.faces)]


class FakeGenerator:
    """Paints the face region white; records batch sizes and targets."""

    au_codes = ("AU12", "AU25")

    def __init__(self, delay=0.0, fail_at=None):
        self.delay, self.fail_at, self.batches, self.targets = delay, fail_at, [], []

    def generate(self, jobs):
        if self.fail_at is not None and len(self.batches) >= self.fail_at:
            raise ValueError("boom")
        self.batches.append(len(jobs))
        self.targets.extend(j.target for j in jobs)
        if self.delay:
            time.sleep(self.delay)
        return [FaceOutput(np.zeros((1, 128, 128), np.float32), np.ones((3, 128, 128), np.float32)) for _ in jobs]


class Collect:
    def __init__(self, delay=0.0):
        self.indices, self.images, self.delay = [], [], delay

    def __call__(self, frame, image):
        if self.delay:
            time.sleep(self.delay)
        self.indices.append(frame.index)
        self.images.append(image)


class ListLive:
    """A live source stand-in: publishes frames at ``fps`` into a newest-only slot (like PacedFileSource)."""

    def __new__(cls, n, fps):
        return PacedMemorySource(frames(n, fps), fps)


def no_stage_threads():
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        if not [t for t in threading.enumerate() if t.name.startswith("rtanim-") and t.is_alive()]:
            return True
        time.sleep(0.05)
    return False


SMILE = parse_aus_arg("smile")


# ------------------------------------------------------------------ policies


def test_offline_every_frame_in_order_and_batched():
    gen = FakeGenerator(delay=0.01)
    sink = Collect()
    p = Pipeline(FakeTracker(faces=2), gen, SMILE, policy="offline", faces="all", batch=6)
    stats = p.run(MemorySource(frames(60), 30.0), sink)
    assert sink.indices == list(range(60))
    assert stats.frames == 60 and stats.dropped == 0 and stats.faces == 120
    assert max(gen.batches) <= 6 and max(gen.batches) > 2  # several frames share one engine call
    assert sum(gen.batches) == 120
    assert all(v <= 8 for v in stats.queue_peak.values())
    s = stats.summary()
    assert set(s["stage_median_ms"]) == set(pipeline.STAGES) and s["latency_ms"]["p95"] is not None
    # the face region changed, the rest of the frame did not
    out, src = sink.images[5], frames(6)[5].image
    assert (out[9:15, 9:15] == 255).all() and (out[24:, :] == src[24:, :]).all()


def test_live_non_live_source_keeps_newest_and_counts_drops_once():
    sink = Collect()
    p = Pipeline(FakeTracker(delay=0.02), FakeGenerator(), SMILE, policy="live")
    stats = p.run(MemorySource(frames(80), 30.0), sink)  # decodes flat out: the tracker cannot keep up
    assert sink.indices == sorted(sink.indices) and len(set(sink.indices)) == len(sink.indices)
    assert stats.dropped > 0 and stats.frames + stats.dropped == 80  # every frame delivered or dropped, once
    assert all(v <= 1 for v in stats.queue_peak.values())


def test_live_source_drops_counted_by_the_source_only():
    src = ListLive(60, 200.0)  # a 200 fps "camera" and a ~25 fps pipeline
    sink = Collect()
    p = Pipeline(FakeTracker(delay=0.01), FakeGenerator(delay=0.03), SMILE, policy="live")
    try:
        stats = p.run(src, sink)
    finally:
        src.close()
    assert stats.pipeline_dropped == 0 and stats.dropped == src.dropped > 0
    assert stats.frames + stats.dropped == 60
    assert "capture" not in stats.queue_peak and all(v <= 1 for v in stats.queue_peak.values())
    assert sink.indices == sorted(sink.indices)
    assert stats.summary()["drop_rate"] == pytest.approx(stats.dropped / 60, abs=1e-3)


def test_live_paces_tracking_so_frames_do_not_wait_for_a_slow_generator():
    """Generator-bound: the track stage starts the newest frame just in time, so latency stays about
    track + generate (+ the frame's age in the source), not the ~3 generator periods two queued frames cost."""
    src = ListLive(150, 100.0)
    p = Pipeline(FakeTracker(delay=0.01), FakeGenerator(delay=0.08), SMILE, policy="live")
    try:
        stats = p.run(src, Collect())
    finally:
        src.close()
    assert stats.frames >= 8
    assert stats.summary()["latency_ms"]["p50"] < 10 + 2 * 80  # unpaced: about 250 ms


def test_live_never_batches():
    gen = FakeGenerator(delay=0.01)
    Pipeline(FakeTracker(faces=1), gen, SMILE, policy="live", batch=8).run(MemorySource(frames(30), 30.0), Collect())
    assert set(gen.batches) == {1}


def test_select_faces_largest():
    small, big = fake_face(0, (0, 0, 10, 10)), fake_face(1, (0, 0, 30, 30))
    assert select_faces([small, big], "largest") == [big]
    assert select_faces([small, big], "all") == [small, big]


# ------------------------------------------------------------------ failures: stop cleanly, no hang


def test_failing_generator_stops_the_run_with_its_error():
    p = Pipeline(FakeTracker(), FakeGenerator(fail_at=3), SMILE, policy="offline", batch=1)
    t0 = time.monotonic()
    with pytest.raises(StageError, match="generate stage failed: ValueError: boom") as e:
        p.run(MemorySource(frames(200), 30.0), Collect())
    assert isinstance(e.value, RunError) and isinstance(e.value.cause, ValueError)
    assert time.monotonic() - t0 < 10 and no_stage_threads()


def test_failing_source_and_tracker_keep_their_errors():
    def bad_source():
        yield from frames(5)
        raise RunError("camera 0: lost")

    with pytest.raises(RunError, match="camera 0: lost"):
        Pipeline(FakeTracker(), FakeGenerator(), SMILE).run(bad_source(), Collect())

    class BadTracker(FakeTracker):
        def track(self, rgb, pts=None):
            raise RuntimeError("landmarker crashed")

    with pytest.raises(StageError, match="track stage failed: RuntimeError: landmarker crashed"):
        Pipeline(BadTracker(), FakeGenerator(), SMILE, policy="live").run(MemorySource(frames(20), 30.0), Collect())
    assert no_stage_threads()


def test_failing_sink_and_interrupt_stop_every_stage():
    def sink(frame, image):
        if frame.index == 4:
            raise RunError("out.mp4: writing failed")

    with pytest.raises(RunError, match="writing failed"):
        Pipeline(FakeTracker(), FakeGenerator(), SMILE).run(MemorySource(frames(500), 30.0), sink)
    assert no_stage_threads()

    def interrupted(frame, image):
        if frame.index == 3:
            raise KeyboardInterrupt

    p = Pipeline(FakeTracker(), FakeGenerator(), SMILE)
    with pytest.raises(KeyboardInterrupt):
        p.run(MemorySource(frames(500), 30.0), interrupted)
    assert p.stats.frames == 3 and no_stage_threads()


def test_generator_returning_too_few_outputs_is_an_error():
    class Short(FakeGenerator):
        def generate(self, jobs):
            return super().generate(jobs)[:-1]

    with pytest.raises(RunError, match="returned 0 outputs for 1 faces"):
        Pipeline(FakeTracker(), Short(), SMILE, batch=1).run(MemorySource(frames(10), 30.0), Collect())


# ------------------------------------------------------------------ controls (what the preview hotkeys drive)


def test_one_controls_class():
    assert pipeline.Controls is preview.Controls
    c = Controls()
    preview.apply_key(c, ord(" "))
    preview.apply_key(c, ord("p"))
    assert (c.effect_on, c.paused, c.timeline) == (False, True, None)


def test_effect_off_passes_frames_through_and_quit_stops():
    c = Controls(effect_on=False)
    gen, sink = FakeGenerator(), Collect()
    stats = Pipeline(FakeTracker(), gen, SMILE, controls=c).run(MemorySource(frames(10), 30.0), sink)
    assert gen.batches == [] and stats.frames_without_face == 0
    assert all((img == f.image).all() for img, f in zip(sink.images, frames(10), strict=True))

    c = Controls()

    def sink_quit(frame, image):
        if frame.index == 4:
            c.quit = True

    stats = Pipeline(FakeTracker(), FakeGenerator(), SMILE, controls=c).run(MemorySource(frames(100), 30.0), sink_quit)
    assert stats.frames == 5 and no_stage_threads()


def test_pause_freezes_the_timeline_and_presets_replace_it():
    ramp = timeline_from_dict({"keyframes": [{"t": 0, "aus": {"AU12": 0}}, {"t": 2, "aus": {"AU12": 1}}]})
    gen = FakeGenerator()
    Pipeline(FakeTracker(), gen, ramp, batch=1).run(MemorySource(frames(30, 10.0), 10.0), Collect())
    assert gen.targets[-1]["AU12"] > 0.9  # 2.9 s at 10 fps: the ramp ran
    gen = FakeGenerator()
    Pipeline(FakeTracker(), gen, ramp, controls=Controls(paused=True)).run(MemorySource(frames(30, 10.0), 10.0), Collect())
    assert max(t["AU12"] for t in gen.targets) == 0.0
    gen = FakeGenerator()
    c = Controls(timeline=with_passthrough(parse_aus_arg("surprise"), WEBCAM_PASSTHROUGH))
    Pipeline(FakeTracker(), gen, ramp, controls=c).run(MemorySource(frames(5, 10.0), 10.0), Collect())
    assert gen.targets[0]["AU25"] == pytest.approx(0.3) and gen.targets[0]["AU12"] == 0.0  # mouth follows the face
    assert gen.targets[0]["AU01"] > 0.3  # the preset, not the ramp


def test_preset_hotkeys_swap_the_timeline_and_back():
    from rtanim.commands.video import preset_switcher

    c = Controls()
    on_preset = preset_switcher(c, WEBCAM_PASSTHROUGH)
    on_preset(1)  # key 2: the second preset
    assert c.timeline is not None and c.timeline.passthrough == WEBCAM_PASSTHROUGH
    assert c.timeline.at(0.0, {})["AU12"] > 0.5  # smile
    on_preset(1)
    assert c.timeline is None  # same key again: back to the run's own timeline


# ------------------------------------------------------------------ stats, runs helpers


def test_stats_json(tmp_path):
    stats = Pipeline(FakeTracker(), FakeGenerator(), SMILE).run(MemorySource(frames(12), 30.0), Collect())
    stats.write_json(tmp_path / "s.json", {"command": "test"})
    d = json.loads((tmp_path / "s.json").read_text())
    assert d["command"] == "test" and d["frames"] == 12 and d["dropped"] == 0 and d["fps"] > 0
    assert set(d["stage_median_ms"]) == set(pipeline.STAGES) and {"p50", "p95"} <= set(d["latency_ms"])
    r = stats.recent()
    assert r["fps"] > 0 and r["stage_ms"]["track"] is not None


def test_webcam_passthrough_rule():
    assert webcam_passthrough(parse_aus_arg("smile"), None).passthrough == WEBCAM_PASSTHROUGH
    own = timeline_from_dict({"aus": {"AU12": 1}, "passthrough": ["AU45"]})
    assert webcam_passthrough(own, None).passthrough == ("AU45",)
    assert webcam_passthrough(own, "none").passthrough == ()
    assert webcam_passthrough(own, "AU25, AU01").passthrough == ("AU25", "AU01")
    with pytest.raises(InputError, match="--passthrough"):
        webcam_passthrough(own, "AU99")


def test_resolve_target_needs_exactly_one(tmp_path):
    for aus, tl in ((None, None), ("smile", tmp_path / "t.json")):
        with pytest.raises(InputError, match="exactly one of --aus"):
            resolve_target(aus, tl)
    with pytest.raises(InputError, match="file not found"):
        resolve_target(None, tmp_path / "missing.json")
    (tmp_path / "t.txt").write_text("hello")
    with pytest.raises(InputError, match="not a timeline"):
        resolve_target(None, tmp_path / "t.txt")


def test_sigterm_becomes_keyboard_interrupt():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------ real tracker and warp model, paced clip


def test_live_on_paced_clip(shared_data):
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource
    from rtanim.io.source_live import PacedFileSource
    from rtanim.pipeline.generators import load_generator

    clip = shared_data / "video" / "single_face.mp4"
    sink = Collect()
    with VideoFileSource(clip) as f:
        total = sum(1 for _ in f)
    with PacedFileSource(clip, speed=2.0) as src, FaceTracker(4, mode="video") as tracker:  # 2x: drops likely
        p = Pipeline(tracker, load_generator("warp"), parse_aus_arg("smile"), policy="live", faces="largest")
        stats = p.run(src, sink)
    s = stats.summary()
    assert s["frames"] >= 5 and s["faces"] >= 5  # few on a loaded machine; the counts below are what matters
    assert s["frames"] + s["dropped"] == total  # every published frame: delivered or counted as dropped, once
    assert s["latency_ms"]["p50"] > 0 and s["latency_ms"]["p95"] >= s["latency_ms"]["p50"]
    assert all(v <= 1 for v in s["queue_peak"].values())
    assert sink.indices == sorted(sink.indices)


def test_frames_without_a_face_pass_through_byte_identical(shared_data):
    """face_noface.mov loses its face at frame 72: those frames must leave the pipeline untouched."""
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource
    from rtanim.pipeline.generators import load_generator

    class Keep:
        def __init__(self) -> None:
            self.pairs: list[tuple[np.ndarray, np.ndarray]] = []

        def __call__(self, frame: Frame, image: np.ndarray) -> None:
            self.pairs.append((frame.image, image))

    keep = Keep()
    with VideoFileSource(shared_data / "video" / "face_noface.mov", max_frames=90) as src:
        with FaceTracker(1, mode="video") as tracker:
            p = Pipeline(tracker, load_generator("warp"), parse_aus_arg("surprise"), policy="offline")
            stats = p.run(src, keep)
    assert len(keep.pairs) == 90
    changed = [not np.array_equal(a, b) for a, b in keep.pairs]
    assert sum(changed[:60]) > 50  # the face is re-expressed while it is there
    assert not any(changed[75:])  # no face: byte-identical
    assert stats.frames_without_face >= 15


def test_stats_series_copies_while_the_pipeline_appends():
    """Readers get copies: holding one must never stop a stage from appending its next sample."""
    stats = pipeline.Stats("live")
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(20000):
                stats.add("track", float(i))
                stats.delivered(Frame(np.zeros((1, 1, 3), np.uint8), 0.0, i, time.perf_counter()), time.perf_counter())
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    held = []
    while not done.is_set():
        held.append(stats.series("track", max(0, len(held) - 5)))  # keep every copy alive
        held.append(stats.series("latency"))
        stats.summary(), stats.recent()
    t.join()
    assert not errors, errors
    assert len(stats.series("track")) == 20000 and len(stats.series("latency", 19990)) == 10
    assert stats.series("track", 19998).tolist() == [19998.0, 19999.0]
