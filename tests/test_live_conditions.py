"""Live mode under bad conditions: a camera that stalls, a face that leaves and returns, two faces, 4K.

Every test runs the real pipeline with the real tracker (MediaPipe, following by optical flow
every other frame as ``rtanim webcam`` does) and the real ``warp`` model, fed by a scripted
camera: a real live source (newest-frame slot, drop counting) whose producer publishes frames
on a script instead of a clock. They assert bounds on queues, frames in flight, counts and
pixels, never times: "latency stays bounded" is checked as "no more than a handful of frames
are ever between the camera and the sink".
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from rtanim.checks import MAX_FACES, TRACK_EVERY
from rtanim.commands.demo import sample_image_path
from rtanim.commands.video import live_line
from rtanim.expression.timeline import parse_aus_arg
from rtanim.files import load_rgb
from rtanim.io.source_base import Frame
from rtanim.io.source_file import VideoFileSource
from rtanim.io.source_live import LiveSource
from rtanim.pipeline.graph import Controls, Pipeline
from rtanim.pipeline.jobs import FrameJob

#: Frames that can be between the camera and the sink at once in live mode: one being tracked,
#: one in each of the two one-slot queues, one being generated, one being composed and written.
MAX_IN_FLIGHT = 5


class ScriptedCamera(LiveSource):
    """A camera whose frame ``i`` is captured at ``pts[i]`` but published at ``times[i]`` s after the start.

    Publishing several frames at one time is a camera (or driver, or USB link) that stalled and
    then delivered what it had buffered, late and in a burst. The slot keeps the newest frame only
    and counts the rest as dropped, exactly as for a real camera. ``taken`` counts the frames the
    pipeline took, so a sink can tell how many are in flight.
    """

    def __init__(self, images: Sequence[np.ndarray], times: Sequence[float], pts: Sequence[float] | None = None,
                 fps: float = 30.0) -> None:
        super().__init__()
        self.images, self.times = list(images), list(times)
        self.pts = list(pts) if pts is not None else [i / fps for i in range(len(self.images))]
        self.fps = fps
        h, w = self.images[0].shape[:2]
        self.size = (w, h)
        self.published = self.taken = 0

    def _produce(self) -> None:
        t0 = time.perf_counter()
        for i, (image, t) in enumerate(zip(self.images, self.times, strict=True)):
            if not self._publish_at(t0 + t, Frame(image, self.pts[i], i, 0.0)):
                return
            self.published += 1

    def __iter__(self):
        for frame in super().__iter__():
            self.taken += 1
            yield frame


class Record:
    """The sink: per delivered frame its index, faces found, frames in flight and (optionally) both images."""

    def __init__(self, source: ScriptedCamera, keep_images: bool = True) -> None:
        self.source, self.keep = source, keep_images
        self.indices: list[int] = []
        self.found: dict[int, int] = {}
        self.in_flight: list[int] = []
        self.images: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def on_frame(self, stats, job: FrameJob) -> None:
        self.found[job.frame.index] = job.found

    def __call__(self, frame: Frame, image: np.ndarray) -> None:
        self.in_flight.append(self.source.taken - len(self.indices))  # taken, not yet delivered (this one included)
        self.indices.append(frame.index)
        if self.keep:
            self.images[frame.index] = (frame.image, image)


def run_live(source: ScriptedCamera, faces: str = "largest", aus: str = "surprise", keep_images: bool = True,
             max_faces: int = MAX_FACES):
    from rtanim.face.tracking import FaceTracker
    from rtanim.pipeline.generators import load_generator

    rec = Record(source, keep_images)
    with source, FaceTracker(max_faces, mode="video", fps=source.fps, landmark_every=TRACK_EVERY) as tracker:
        p = Pipeline(tracker, load_generator("warp"), parse_aus_arg(aus), policy="live", faces=faces)
        stats = p.run(source, rec, on_frame=rec.on_frame)
    return stats, rec


def assert_bounded(stats, rec: Record, source: ScriptedCamera) -> None:
    """The live-mode invariants: every frame delivered or counted as dropped, no queue beyond one, few in flight."""
    s = stats.summary()
    assert source.published == len(source.images)
    assert s["frames"] + s["dropped"] == source.published  # each frame: delivered, or dropped and counted once
    assert s["frames"] == len(rec.indices) > 0
    assert rec.indices == sorted(rec.indices)  # never an older frame after a newer one
    assert s["queue_peak"] and all(v <= 1 for v in s["queue_peak"].values()), s["queue_peak"]
    assert max(rec.in_flight) <= MAX_IN_FLIGHT, rec.in_flight


def portrait(size: int = 256) -> np.ndarray:
    return cv2.resize(load_rgb(sample_image_path()), (size, size), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------ a camera that stalls


def test_stalling_camera_drops_the_backlog_and_shows_it():
    """Cycles of 10 frames at 30 fps, then a 0.5 s stall whose 15 frames arrive at once, late."""
    image = portrait()
    times, bursts, t, i = [], [], 0.0, 0
    for _ in range(3):
        for _ in range(10):
            times.append(t)
            t += 1 / 30
            i += 1
        t += 0.5
        bursts.append(range(i, i + 15))
        times += [t] * 15
        i += 15
    t_end = t + 1 / 30
    times += [t_end + k / 30 for k in range(10)]  # the camera recovers
    images = [image] * len(times)
    src = ScriptedCamera(images, times)
    stats, rec = run_live(src, keep_images=False)

    assert_bounded(stats, rec, src)
    for burst in bursts:  # of a burst only the newest frame (or two, if one was taken mid-burst) goes on
        assert sum(1 for k in rec.indices if k in burst) <= 2
    assert stats.dropped >= sum(len(b) - 2 for b in bursts)
    assert stats.faces > 0
    line = live_line(stats, Controls()).plain
    assert f"dropped {stats.dropped}" in line and stats.dropped > 0  # the status line shows the drops


# ------------------------------------------------------------------ a face that leaves and returns


def test_face_that_leaves_and_returns(shared_data):
    """Real footage: the face walks out of face_noface.mov (frame 72) and into noface_face.mov (frame 98)."""
    def frames(name: str, lo: int, hi: int) -> list[np.ndarray]:
        with VideoFileSource(shared_data / "video" / name, max_frames=hi) as s:
            return [cv2.resize(f.image, (480, 270), interpolation=cv2.INTER_AREA) for f in s][lo:hi]

    leaving, returning = frames("face_noface.mov", 52, 100), frames("noface_face.mov", 80, 130)
    images = leaving + returning
    present = set(range(0, 68 - 52)) | {len(leaving) + k for k in range(102 - 80, 130 - 80)}
    absent = set(range(76 - 52, len(leaving))) | {len(leaving) + k for k in range(0, 95 - 80)}
    src = ScriptedCamera(images, [i / 25 for i in range(len(images))], fps=25.0)
    stats, rec = run_live(src)

    assert_bounded(stats, rec, src)
    seen_absent = [k for k in rec.indices if k in absent]
    seen_back = [k for k in rec.indices if k in present and k >= len(leaving)]
    assert len(seen_absent) >= 5 and seen_back, (seen_absent, seen_back)
    for k in seen_absent:  # no ghost face while it is gone, and not a pixel touched
        assert rec.found[k] == 0, k
        assert np.array_equal(*rec.images[k]), k
    for k in rec.indices:  # wherever no face was found, the frame passes through untouched
        if rec.found[k] == 0:
            assert np.array_equal(*rec.images[k]), k
    before = [k for k in rec.indices if k in present and k < len(leaving)]
    for k in before + seen_back:  # tracked and re-expressed before it leaves and after it returns
        assert rec.found[k] == 1, k
    assert sum(not np.array_equal(*rec.images[k]) for k in seen_back) >= len(seen_back) - 1
    assert stats.frames_without_face >= len(seen_absent)


# ------------------------------------------------------------------ two faces


def two_faces(shared_data) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Two UTKFace faces side by side (each padded so the detector sees the whole head) and their x ranges."""
    names = ("30_0_0_20170103181149464.jpg.chip.jpg", "30_0_0_20170104200535163.jpg.chip.jpg")
    tiles = [cv2.copyMakeBorder(load_rgb(shared_data / "faces" / "utkface" / n), 60, 60, 60, 60,
                                cv2.BORDER_REPLICATE) for n in names]
    w = tiles[0].shape[1]
    return np.concatenate(tiles, axis=1), [(0, w), (w, 2 * w)]


def test_two_faces_both_processed_with_faces_all(shared_data):
    image, halves = two_faces(shared_data)
    n = 30
    src = ScriptedCamera([image] * n, [i / 30 for i in range(n)])
    stats, rec = run_live(src, faces="all")

    assert_bounded(stats, rec, src)
    assert all(rec.found[k] == 2 for k in rec.indices)
    assert stats.faces == 2 * stats.frames  # both composed, in every delivered frame
    for k in rec.indices[2:]:  # both halves re-expressed
        before, after = rec.images[k]
        for x0, x1 in halves:
            assert not np.array_equal(before[:, x0:x1], after[:, x0:x1]), (k, x0)


def test_two_faces_largest_only_by_default(shared_data):
    image, halves = two_faces(shared_data)
    src = ScriptedCamera([image] * 12, [i / 30 for i in range(12)])
    stats, rec = run_live(src, faces="largest")
    assert_bounded(stats, rec, src)
    assert stats.faces == stats.frames  # one face per frame composed
    changed = [[not np.array_equal(rec.images[k][0][:, a:b], rec.images[k][1][:, a:b]) for a, b in halves]
               for k in rec.indices[2:]]
    assert all(sum(c) == 1 for c in changed)


# ------------------------------------------------------------------ 4K


def test_4k_input_live(shared_data):
    """A talking head upscaled to 3840x2160 at 30 fps, with a 0.5 s stall whose backlog arrives at once."""
    from rtanim.face.compose import region_box

    with VideoFileSource(shared_data / "video" / "WolfgangLanger_Pexels.mp4", max_frames=3) as s:
        images = [cv2.resize(f.image, (3840, 2160), interpolation=cv2.INTER_LINEAR) for f in s]
    sums = [hash(im.tobytes()) for im in images]
    n = 16
    times = [i / 30 if i < 8 else 8 / 30 + 0.5 for i in range(n)]  # 8 frames, then 8 at once after a stall
    src = ScriptedCamera([images[i % len(images)] for i in range(n)], times)

    class Check(Record):
        """Checks each 4K output as it comes: right size, changed inside the face's region, untouched outside."""

        changed = 0

        def __call__(self, f: Frame, image: np.ndarray) -> None:
            super().__call__(f, image)
            self.last = (f.image, image)

        def on_frame(self, stats, job: FrameJob) -> None:
            super().on_frame(stats, job)
            before, after = self.last
            assert after.shape == (2160, 3840, 3)
            outside = np.ones(after.shape[:2], bool)
            for fj in job.faces:
                x0, y0, x1, y1 = region_box(fj.face.transform.matrix, fj.face.transform.size, after.shape)
                outside[y0:y1, x0:x1] = False
            assert np.array_equal(before[outside], after[outside])
            self.changed += int(not np.array_equal(before, after))

    from rtanim.face.tracking import FaceTracker
    from rtanim.pipeline.generators import load_generator

    rec = Check(src, keep_images=False)
    with src, FaceTracker(MAX_FACES, mode="video", landmark_every=TRACK_EVERY) as tracker:
        p = Pipeline(tracker, load_generator("warp"), parse_aus_arg("surprise"), policy="live", faces="largest")
        stats = p.run(src, rec, on_frame=rec.on_frame)
    assert_bounded(stats, rec, src)
    assert stats.dropped >= 8 - 2  # the stall's backlog was dropped, not queued
    assert stats.faces >= 1 and rec.changed == stats.faces  # every frame with a face re-expressed
    assert [hash(im.tobytes()) for im in images] == sums  # the camera's buffers are never written to


def test_scripted_camera_counts_every_frame():
    """The scripted camera itself: a consumer that takes nothing until the end sees only the newest frame."""
    images = [np.full((8, 8, 3), i, np.uint8) for i in range(5)]
    src = ScriptedCamera(images, [0.0] * 5)
    with src:
        src._start()
        deadline = time.monotonic() + 5
        while src.published < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        got = list(src)
    assert [f.index for f in got] == [4] and src.dropped == 4 and src.taken == 1
