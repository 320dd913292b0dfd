"""Benchmark: tracking cost, jitter and agreement, landmarker on every frame (old) vs followed frames (new).

Usage: python calib/bench_track.py [--clip PATH] [--frames N] [--every N ...] [--json PATH]

Speed: decodes one shared talking-head clip once, then for each size runs one VIDEO-mode
tracker per ``landmark_every`` value (1 = the landmarker on every frame, the old path)
over the same frames, interleaved frame by frame so that background load falls on all of
them alike, and times ``FaceTracker.track`` per frame, as wall and as process CPU time
(all of the process's threads; steadier than wall on a loaded machine). With followed
frames the cost alternates between a cheap follow and a full landmarker call, so the mean
is the throughput figure; the median of such a mix says little. Also times the cv2 and
torch crops once per size (old path).

Steadiness and agreement: on every shared clip at its own size, the same trackers again,
and per clip: jitter of the smoothed output (what the crop sees): the high-frequency
residual (distance from the centred 5-frame mean) of the crop corners and of the rigid
landmarks, in crop px; of the AUs (mean |residual|); and agreement with the old path:
mean and p95 landmark distance in frame px, mouth landmarks in crop px, mean |AU diff|.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
import torch

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.face import align
from rtanim.face.landmarks import TRACKED_RIGID
from rtanim.face.tracking import Face, FaceTracker

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT.parent / "shared" / "data" / "video"
CLIP = VIDEO / "WolfgangLanger_Pexels.mp4"
CLIPS = ("WolfgangLanger_Pexels.mp4", "WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4",
         "tpsmm_driving.mp4", "single_face.mp4")  # fmt: skip
SIZES = ((640, 360), (1280, 720))
#: Lips, outer and inner: the landmarks a followed frame does not update.
MOUTH = [0, 13, 14, 17, 37, 39, 40, 61, 78, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
         291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415]  # fmt: skip
AUS = ("AU01", "AU04", "AU06", "AU12", "AU25", "AU26", "AU45")
CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64) * (align.CROP_SIZE - 1)
WARMUP = 5  # frames left out of the timing medians (MediaPipe's first calls)


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


@dataclass
class Record:
    """One tracker's run: per-frame times and its first face (None where it found none)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    faces: list[Face | None] = field(default_factory=list)
    followed: int = 0


def run_trackers(frames: list[tuple[float, np.ndarray]], everies: list[int], size=None) -> dict[int, Record]:
    """One tracker per ``landmark_every``, all fed each frame in turn."""
    records = {n: Record() for n in everies}
    trackers = {n: FaceTracker(mode="video", landmark_every=n) for n in everies}
    try:
        for pts, rgb in frames:
            if size is not None and rgb.shape[1::-1] != tuple(size):
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
            for n, tracker in trackers.items():
                c0, t0 = time.process_time(), time.perf_counter()
                faces = tracker.track(rgb, pts)
                records[n].wall.append((time.perf_counter() - t0) * 1e3)
                records[n].cpu.append((time.process_time() - c0) * 1e3)
                records[n].faces.append(faces[0] if faces else None)
        for n, tracker in trackers.items():
            records[n].followed = tracker.frames_followed
    finally:
        for tracker in trackers.values():
            tracker.close()
    return records


def timing(rec: Record) -> dict[str, float]:
    wall, cpu = rec.wall[WARMUP:], rec.cpu[WARMUP:]
    return {
        "wall_median": statistics.median(wall), "wall_mean": float(np.mean(wall)),
        "wall_p95": float(np.percentile(wall, 95)), "cpu_median": statistics.median(cpu),
        "cpu_mean": float(np.mean(cpu)), "cpu_p95": float(np.percentile(cpu, 95)),
        "followed": rec.followed, "no_face": sum(f is None for f in rec.faces),
    }  # fmt: skip


def hf_residual(track: np.ndarray) -> np.ndarray:
    """Distance of each sample (T x ...) from the mean of the 5 centred on it; NaN where any is missing."""
    centred = np.mean([track[i : len(track) - 4 + i] for i in range(5)], axis=0)
    return track[2:-2] - centred


def steadiness(rec: Record, old: Record) -> dict[str, float]:
    """Jitter of ``rec`` (crop px, AU units) and its agreement with ``old`` (frame px, crop px, AU units)."""
    def stack(get, shape):
        return np.array([get(f) if f is not None else np.full(shape, np.nan) for f in rec.faces])

    scale = stack(lambda f: f.transform.scale, ())
    corners = stack(lambda f: f.transform.to_frame(CORNERS), (4, 2))
    rigid = stack(lambda f: f.landmarks[list(TRACKED_RIGID), :2], (len(TRACKED_RIGID), 2))
    aus = stack(lambda f: [f.aus.get(c, 0.0) for c in AUS], (len(AUS),))
    out = {
        "jitter_corner": float(np.nanmean(np.linalg.norm(hf_residual(corners), axis=2).mean(1) * scale[2:-2])),
        "jitter_rigid": float(np.nanmean(np.linalg.norm(hf_residual(rigid), axis=2).mean(1) * scale[2:-2])),
        "jitter_au": float(np.nanmean(np.abs(hf_residual(aus)))),
    }
    pairs = [(a, b) for a, b in zip(rec.faces, old.faces, strict=True) if a is not None and b is not None]
    if pairs:
        dist = [np.linalg.norm(a.landmarks[:, :2] - b.landmarks[:, :2], axis=1) for a, b in pairs]
        out["agree_mean_px"] = float(np.mean(np.concatenate(dist)))
        out["agree_p95_px"] = float(np.percentile(np.concatenate(dist), 95))
        out["agree_mouth_crop_px"] = float(np.mean([d[MOUTH].mean() * b.transform.scale for d, (_, b) in
                                                    zip(dist, pairs, strict=True)]))  # fmt: skip
        out["agree_au"] = float(np.mean([abs(a.aus.get(c, 0.0) - b.aus.get(c, 0.0)) for a, b in pairs for c in AUS]))
    return out


def crop_times(frames: list[tuple[float, np.ndarray]], rec: Record, size) -> dict[str, float]:
    crop_ms, torch_ms = [], []
    for (_, rgb), face in zip(frames, rec.faces, strict=True):
        if face is None:
            continue
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) if rgb.shape[1::-1] != tuple(size) else rgb
        crop_ms.append(ms(lambda im, lm: align.crop(im, align.fit_transform(lm)), rgb, face.landmarks)[1])
        tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()  # upload/convert not timed
        torch_ms.append(ms(align.crop_torch, tensor, face.transform.matrix[None])[1])
    nan = float("nan")
    return {"crop_cv2": statistics.median(crop_ms) if crop_ms else nan,
            "crop_torch": statistics.median(torch_ms) if torch_ms else nan}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP, help="clip for the speed table")
    parser.add_argument("--frames", type=int, default=200, help="frames per clip")
    parser.add_argument("--every", type=int, nargs="+", default=[2], help="landmark_every values to compare with 1")
    parser.add_argument("--no-steadiness", action="store_true", help="speed table only")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    everies = [1, *[n for n in args.every if n != 1]]
    report: dict = {"load_note": "absolute ms are inflated by whatever else runs; compare ratios", "speed": {},
                    "steadiness": {}}  # fmt: skip
    frames = decode(args.clip, args.frames)
    print(f"clip {args.clip.name}: {len(frames)} frames; torch threads {torch.get_num_threads()}; CPU")
    print("per-frame ms of FaceTracker.track (wall and process CPU); every N: the landmarker on 1 frame in N")
    print(f"{'size':>10} {'every':>5} | {'wall med':>8} {'mean':>6} {'p95':>6} | {'cpu med':>7} {'mean':>6} "
          f"{'p95':>6} | {'cpu mean/old':>12} {'wall mean/old':>13} | {'followed':>8} {'no face':>7}")  # fmt: skip
    for size in SIZES:
        recs = run_trackers(frames, everies, size)
        key = f"{size[0]}x{size[1]}"
        report["speed"][key] = {str(n): timing(r) for n, r in recs.items()}
        report["speed"][key]["crop"] = crop_times(frames, recs[1], size)
        old = report["speed"][key]["1"]
        for n in everies:
            t = report["speed"][key][str(n)]
            t["cpu_mean_ratio"] = t["cpu_mean"] / old["cpu_mean"]
            t["wall_mean_ratio"] = t["wall_mean"] / old["wall_mean"]
            print(f"{key:>10} {n:>5} | {t['wall_median']:8.2f} {t['wall_mean']:6.2f} {t['wall_p95']:6.1f} | "
                  f"{t['cpu_median']:7.2f} {t['cpu_mean']:6.2f} {t['cpu_p95']:6.1f} | {t['cpu_mean_ratio']:12.2f} "
                  f"{t['wall_mean_ratio']:13.2f} | {t['followed']:8d} {t['no_face']:7d}")  # fmt: skip
        crop = report["speed"][key]["crop"]
        print(f"{key:>10}  crop cv2 {crop['crop_cv2']:.3f} ms, crop torch {crop['crop_torch']:.3f} ms")
    if not args.no_steadiness:
        print("\nsmoothed output: jitter (5-frame residual; crop px, AU units) and agreement with every=1")
        print(f"{'clip':>36} {'every':>5} | {'corner':>6} {'rigid':>6} {'AU':>6} | {'mean px':>7} {'p95 px':>6} "
              f"{'mouth crop px':>13} {'AU diff':>7}")  # fmt: skip
        for name in CLIPS:
            recs = run_trackers(decode(VIDEO / name, args.frames), everies)
            rows = report["steadiness"][name] = {str(n): steadiness(r, recs[1]) for n, r in recs.items()}
            for n in everies:
                s = rows[str(n)]
                print(f"{name:>36} {n:>5} | {s['jitter_corner']:6.3f} {s['jitter_rigid']:6.3f} {s['jitter_au']:6.4f} | "
                      f"{s.get('agree_mean_px', 0):7.2f} {s.get('agree_p95_px', 0):6.2f} "
                      f"{s.get('agree_mouth_crop_px', 0):13.2f} {s.get('agree_au', 0):7.4f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
