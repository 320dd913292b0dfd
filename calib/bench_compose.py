"""Median per-frame cost of the ``warp`` model's flow and of compose, one face, 640x360 and 1280x720.

    python calib/bench_compose.py [--repeats 100] [--clock wall|cpu] [--data ../shared/data]

Two faces, each tracked once and scaled into each frame size (so it covers the same share of the
frame at both sizes), with the ``smile`` preset as target: the astronaut still letterboxed into
the frame (a small face: ~90 px at 360p), and the first frame of the talking-head clip
(``WolfgangLanger_Pexels.mp4``, a webcam-like close-up: ~300 px at 360p, ~600 px at 720p).

Compose is timed twice in the same run, interleaved: ``native`` resamples A, C and F at every
frame pixel (``step=0``, the paste-back before the reduced grid) and ``grid`` is the default,
which resamples them on a grid of about crop resolution (k x k frame px per sample, k shown).
Both are reported for A/C only and with the flow, with the ratio grid / native. ``--clock cpu``
times process CPU instead of wall time: steadier when other jobs share the cores (the two
clocks differ by OpenCV's second thread, and by waiting when the machine is loaded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.expression.aus import preset_aus
from rtanim.face.align import fit_transform
from rtanim.face.compose import FaceOutput, compose, grid_factor
from rtanim.face.tracking import FaceTracker
from rtanim.models.geometry import WarpFace, WarpModel

ROOT = Path(__file__).resolve().parents[1]
SIZES = ((640, 360), (1280, 720))


def median_ms(fns: list[Callable[[], object]], repeats: int, clock: Callable[[], float]) -> list[float]:
    """Median ms of each function, run interleaved so a change in load hits them all alike."""
    for fn in fns:
        fn()  # warm caches and buffers
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = clock()
            fn()
            ts.append(clock() - t0)
    return [1000.0 * statistics.median(ts) for ts in times]


def letterboxed(still: np.ndarray, lm: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The square still scaled to the frame height and centred; its landmarks moved with it."""
    scale = h / still.shape[0]
    img = cv2.resize(still, (round(still.shape[1] * scale), h), interpolation=cv2.INTER_AREA)
    frame = np.zeros((h, w, 3), np.uint8)
    x0 = (w - img.shape[1]) // 2
    frame[:, x0 : x0 + img.shape[1]] = img
    lm = lm.copy()
    lm[:, :2] = lm[:, :2] * scale + np.array([x0, 0])
    return frame, lm


def resized(image: np.ndarray, lm: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A 16:9 frame resized to w x h; its landmarks moved with it."""
    sx, sy = w / image.shape[1], h / image.shape[0]
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
    lm = lm.copy()
    lm[:, :2] = lm[:, :2] * np.array([sx, sy])
    return cv2.resize(image, (w, h), interpolation=interp), lm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    still = cv2.cvtColor(cv2.imread(str(args.data / "stills" / "astronaut.png")), cv2.COLOR_BGR2RGB)
    with av.open(str(args.data / "video" / "WolfgangLanger_Pexels.mp4")) as clip:
        first = next(clip.decode(video=0)).to_ndarray(format="rgb24")
    with FaceTracker(1, mode="image") as tracker:
        faces = {"astronaut": (still, tracker.track(still)[0], letterboxed)}
        faces["clip"] = (first, tracker.track(first)[0], resized)
    model = WarpModel()
    target = preset_aus("smile")
    s = model.size
    rng = np.random.default_rng(0)
    ac = FaceOutput(rng.random((1, s, s), np.float32), rng.uniform(-1, 1, (3, s, s)).astype(np.float32))

    print(f"{args.clock} ms, median of {args.repeats}")
    head = ("frame", "face", "face px", "k", "warp flow", "A/C native", "A/C grid", "ratio",
            "+flow native", "+flow grid", "ratio")
    print("{:>9} {:>9} {:>7} {:>2} {:>9} {:>10} {:>9} {:>5} {:>12} {:>10} {:>5}".format(*head))
    with_flow: dict[tuple[str, int], tuple[float, float]] = {}  # (face, height) -> (native, grid)
    for w, h in SIZES:
        for name, (image, face, place) in faces.items():
            frame, lm = place(image, face.landmarks, w, h)
            t = fit_transform(lm)
            wf = WarpFace(t.to_crop(lm), face.aus, target)
            flow = model.flow(wf.landmarks, wf.live_aus, wf.target_aus)
            warp_out = FaceOutput(np.ones((1, s, s), np.float32), np.zeros((3, s, s), np.float32), flow)
            t_flow, ac_native, ac_grid, cf_native, cf_grid = median_ms(
                [
                    lambda wf=wf: model.flow(wf.landmarks, wf.live_aus, wf.target_aus),
                    lambda f=frame, t=t: compose(f, [ac], [t], step=0),
                    lambda f=frame, t=t: compose(f, [ac], [t]),
                    lambda f=frame, t=t, o=warp_out: compose(f, [o], [t], step=0),
                    lambda f=frame, t=t, o=warp_out: compose(f, [o], [t]),
                ],
                args.repeats,
                clock,
            )
            print(
                f"{w}x{h:<4} {name:>9} {round(s / t.scale):>7} {grid_factor(t.matrix):>2} {t_flow:>9.2f} "
                f"{ac_native:>10.2f} {ac_grid:>9.2f} {ac_grid / ac_native:>5.2f} "
                f"{cf_native:>12.2f} {cf_grid:>10.2f} {cf_grid / cf_native:>5.2f}"
            )
            with_flow[name, h] = cf_native, cf_grid
    (_, lo), (_, hi) = SIZES
    for name in faces:
        (n_lo, g_lo), (n_hi, g_hi) = with_flow[name, lo], with_flow[name, hi]
        print(f"{name}: compose +flow {hi}p / {lo}p: native {n_hi / n_lo:.2f}x, grid {g_hi / g_lo:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
