"""Benchmark: median ms per frame of tracking (MediaPipe + smoothing + ids + AUs) and of cropping.

Usage: python calib/bench_track.py [--clip PATH] [--frames N]

Decodes one shared talking-head clip once, then for each resolution runs a fresh
VIDEO-mode tracker over the frames and times, per frame, ``FaceTracker.track``, the
cv2 crop (fit + warpAffine) and the torch crop (affine_grid + grid_sample, batch of 1,
on the CPU). Medians, because the first frames include MediaPipe's warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from rtanim import align
from rtanim.tracking import FaceTracker

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "WolfgangLanger_Pexels.mp4"
SIZES = ((640, 360), (1280, 720))


def decode(path: Path, limit: int) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as container:
        frames = []
        for frame in container.decode(video=0):
            if len(frames) == limit:
                break
            frames.append((float(frame.time), frame.to_ndarray(format="rgb24")))
        return frames


def ms(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, (time.perf_counter() - t0) * 1000.0


def fit_and_crop(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    return align.crop(rgb, align.fit_transform(landmarks))


def bench(frames: list[tuple[float, np.ndarray]], size: tuple[int, int]) -> dict[str, float]:
    track_ms, crop_ms, torch_ms, missed = [], [], [], 0
    with FaceTracker(mode="video") as tracker:
        for pts, rgb in frames:
            if rgb.shape[1::-1] != size:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            faces, dt = ms(tracker.track, rgb, pts)
            track_ms.append(dt)
            if not faces:
                missed += 1
                continue
            _, dt = ms(fit_and_crop, rgb, faces[0].landmarks)
            crop_ms.append(dt)
            t = faces[0].transform
            tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # upload/convert not timed
            _, dt = ms(align.crop_torch, tensor, t.matrix[None])
            torch_ms.append(dt)
    return {
        "track": statistics.median(track_ms),
        "crop_cv2": statistics.median(crop_ms) if crop_ms else float("nan"),
        "crop_torch": statistics.median(torch_ms) if torch_ms else float("nan"),
        "missed": missed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    frames = decode(args.clip, args.frames)
    print(f"clip {args.clip.name}: {len(frames)} frames; torch threads {torch.get_num_threads()}; CPU")
    print(f"{'size':>10} | {'track ms':>9} | {'crop cv2 ms':>11} | {'crop torch ms':>13} | {'no face':>7}")
    print("-" * 64)
    for size in SIZES:
        r = bench(frames, size)
        print(
            f"{size[0]:>5}x{size[1]:<4} | {r['track']:9.2f} | {r['crop_cv2']:11.3f} | "
            f"{r['crop_torch']:13.3f} | {r['missed']:7d}"
        )


if __name__ == "__main__":
    main()
