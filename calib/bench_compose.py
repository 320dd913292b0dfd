"""Median per-frame cost of the ``warp`` model's flow and of compose, one face, 640x360 and 1280x720.

    /work/venv/bin/python calib/bench_compose.py [--repeats 100] [--data ../shared/data]

The face is the astronaut still's, tracked once and scaled into each frame size (so the face
covers the same share of the frame as in a webcam shot), with the ``smile`` preset as target.
Reports medians in ms, plus compose without flow (A/C only) as the baseline it is measured against.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from rtanim.align import fit_transform
from rtanim.aus import preset_aus
from rtanim.compose import FaceOutput, compose
from rtanim.geometry import WarpFace, WarpModel
from rtanim.tracking import FaceTracker

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn, repeats: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()

    still = cv2.cvtColor(cv2.imread(str(args.data / "stills" / "astronaut.png")), cv2.COLOR_BGR2RGB)
    with FaceTracker(1, mode="image") as tracker:
        (face,) = tracker.track(still)
    model = WarpModel()
    target = preset_aus("smile")
    print(f"{'frame':>10} {'face px':>8} {'warp flow':>10} {'compose A/C':>12} {'compose +flow':>14} {'total':>8}")
    for w, h in ((640, 360), (1280, 720)):
        # Letterbox the square still into a 16:9 frame: the face spans ~45% of the frame height.
        scale = h / still.shape[0]
        img = cv2.resize(still, (round(still.shape[1] * scale), h), interpolation=cv2.INTER_AREA)
        frame = np.zeros((h, w, 3), np.uint8)
        x0 = (w - img.shape[1]) // 2
        frame[:, x0 : x0 + img.shape[1]] = img
        lm = face.landmarks.copy()
        lm[:, :2] = lm[:, :2] * scale + np.array([x0, 0])
        t = fit_transform(lm)
        wf = WarpFace(t.to_crop(lm), face.aus, target)
        flow = model.flow(wf.landmarks, wf.live_aus, wf.target_aus)
        s = model.size
        rng = np.random.default_rng(0)
        ac = FaceOutput(rng.random((1, s, s), np.float32), rng.uniform(-1, 1, (3, s, s)).astype(np.float32))
        warp_out = FaceOutput(np.ones((1, s, s), np.float32), np.zeros((3, s, s), np.float32), flow)
        t_flow = median_ms(lambda wf=wf: model.flow(wf.landmarks, wf.live_aus, wf.target_aus), args.repeats)
        t_ac = median_ms(lambda f=frame, t=t, o=ac: compose(f, [o], [t]), args.repeats)
        t_cf = median_ms(lambda f=frame, t=t, o=warp_out: compose(f, [o], [t]), args.repeats)
        face_px = round(s / t.scale)
        print(f"{w}x{h:<5} {face_px:>8} {t_flow:>9.2f}  {t_ac:>11.2f}  {t_cf:>13.2f}  {t_flow + t_cf:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
