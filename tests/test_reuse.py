"""Reusing a still face's generator output (rtanim.pipeline.reuse), with the real tracker and the `warp` model."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from rtanim.checks import TRACK_EVERY
from rtanim.commands.demo import sample_image_path
from rtanim.expression.timeline import parse_aus_arg, timeline_from_dict
from rtanim.files import load_rgb
from rtanim.io.source_base import Frame
from rtanim.pipeline.graph import Pipeline, ReuseTolerance
from rtanim.pipeline.jobs import FaceJob
from rtanim.pipeline.reuse import OutputCache

N = 40


@pytest.fixture(scope="module")
def still_frames() -> list[Frame]:
    image = cv2.resize(load_rgb(sample_image_path()), (256, 256), interpolation=cv2.INTER_AREA)
    return [Frame(image, i / 30, i, 0.0) for i in range(N)]


def run(frames, timeline, reuse=ReuseTolerance(), policy="offline"):
    from rtanim.face.tracking import FaceTracker
    from rtanim.pipeline.generators import load_generator

    out: list[np.ndarray] = []
    with FaceTracker(1, mode="video", landmark_every=TRACK_EVERY) as tracker:
        p = Pipeline(tracker, load_generator("warp"), timeline, policy, faces="largest", reuse=reuse)
        p.run(frames, lambda f, im: out.append(im))
    return p.stats, out


def test_still_face_is_generated_once_then_reused(still_frames):
    stats, out = run(still_frames, parse_aus_arg("smile"))
    base_stats, base = run(still_frames, parse_aus_arg("smile"), reuse=None)
    assert stats.faces == base_stats.faces == N
    assert stats.generated + stats.reused == N
    # the smoothed landmarks and AUs settle over the first ~15 frames (a few runs), then one run per refresh
    assert stats.generated <= 12 and stats.reused >= N - 12, stats.summary()
    assert base_stats.reused == 0 and base_stats.generated == N
    assert stats.summary()["reused"] == stats.reused
    diff = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(out, base, strict=True)]
    assert max(diff) <= 3, diff  # the reused output looks the same as a fresh one
    assert any(not np.array_equal(o, f.image) for o, f in zip(out, still_frames, strict=True))  # effect applied


def test_moving_au_timeline_never_reuses(still_frames):
    ramp = timeline_from_dict({"keyframes": [{"t": 0.0, "aus": {"AU12": 0.0}},
                                             {"t": N / 30, "aus": {"AU12": 1.0}, "ease": "linear"}]})
    stats, _ = run(still_frames, ramp)  # AU12 rises 0.025 a frame: above the 0.01 tolerance every frame
    assert stats.faces == N and stats.reused == 0 and stats.generated == N


def test_reuse_in_live_mode(still_frames):
    from rtanim.measure.bench_run import PacedMemorySource

    src = PacedMemorySource(still_frames * 2, 30.0)  # 2.7 s: the tracker's smoothing settles in about 0.5 s
    try:
        stats, _ = run(src, parse_aus_arg("smile"), policy="live")
    finally:
        src.close()
    assert stats.frames > 5 and stats.reused >= stats.frames // 2, stats.summary()
    assert stats.generated + stats.reused == stats.faces


def test_cache_tolerances(still_frames):
    """A face moved by 1 crop pixel, or with an AU changed by 0.02, is generated again; by 0.1 px it is not."""
    from rtanim.commands.image import track_still

    face = track_still(still_frames[0].image, 1)[0]
    target = {"AU12": 1.0}
    cache = OutputCache(ReuseTolerance(refresh=3))
    refs, run_ = cache.plan([FaceJob(face, np.zeros((128, 128, 3), np.uint8), target)])
    assert run_ == [0]
    per_crop_px = 1.0 / face.transform.scale  # frame px per crop px

    def moved(dx_crop: float, aus=None, tgt=None) -> list[int]:
        f = dataclasses.replace(face, landmarks=face.landmarks + np.float32([dx_crop * per_crop_px, 0, 0]),
                                aus=aus or face.aus)
        return cache.plan([FaceJob(f, np.zeros((128, 128, 3), np.uint8), tgt or target)])[1]

    assert moved(0.1) == []  # still: reused
    assert moved(0.0, tgt={"AU12": 1.005}) == []
    assert moved(0.0, tgt={"AU12": 0.98}) == [0]  # target changed: a fresh reference
    assert moved(0.0) == [0]  # and back
    assert moved(1.0) == [0]  # moved one crop pixel
    live = dict(face.aus)
    live["AU26"] = live.get("AU26", 0.0) + 0.02
    assert moved(1.0, aus=live) == [0]  # the live face changed expression
    assert moved(1.0) == [0]  # and back
    assert [moved(1.0) for _ in range(4)] == [[], [], [], [0]]  # at most `refresh` reuses in a row
    cache.retain(set())
    assert moved(1.0) == [0]  # a face that left loses its reference
