"""How much does reusing a still face's generator output change the video? (rtanim.pipeline.reuse)

Usage: python calib/reuse_check.py [--clip PATH|still ...] [--model warp] [--aus smile] [--frames N]
                                   [--au-tol A,...] [--landmark-px P,...] [--json PATH]

For each clip, runs the offline pipeline (real tracker, following every other frame as the
CLI does; the model; the targets with the webcam passthrough of AU25/AU26, so the mouth
follows the live face) three times over the same frames: twice without reuse (a control:
the pipeline is deterministic, so these must agree exactly) and once with the default reuse
tolerance (or once per ``--au-tol`` x ``--landmark-px``), and reports per clip and tolerance:
faces generated and reused, and the difference of the reuse run to the no-reuse run: max and mean absolute difference (0-255, over every pixel of
every frame), the mean over the pixels the effect changed, the 99.9th percentile, and PSNR.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.checks import MAX_FACES, TRACK_EVERY
from rtanim.commands.video import webcam_passthrough
from rtanim.expression.timeline import parse_aus_arg
from rtanim.face.tracking import FaceTracker
from rtanim.io.source_base import Frame
from rtanim.io.source_file import VideoFileSource
from rtanim.pipeline.generators import load_generator
from rtanim.pipeline.graph import Pipeline, ReuseTolerance

VIDEO = ROOT.parent / "shared" / "data" / "video"
CLIPS = ("WDA_KatieHill_000.mp4", "single_face.mp4", "talking256/DPE_s.mp4", "WolfgangLanger_Pexels.mp4")


STILL = "still"  # --clip still: the bundled portrait as a still webcam, with sensor noise


def still_frames(frames: int, noise: float = 2.0) -> list[Frame]:
    """The bundled portrait at 512x512, ``frames`` times, each with fresh Gaussian noise (sigma 2 grey levels)."""
    from rtanim.commands.demo import sample_image_path
    from rtanim.files import load_rgb

    image = load_rgb(sample_image_path()).astype(np.float32)
    rng = np.random.default_rng(0)
    return [Frame(np.clip(image + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8), i / 30, i, 0.0)
            for i in range(frames)]


def run(clip: Path, model: str, aus: str, frames: int, reuse: ReuseTolerance | None):
    outs: list[tuple[np.ndarray, np.ndarray]] = []
    timeline = webcam_passthrough(parse_aus_arg(aus), None)
    with contextlib.ExitStack() as stack:
        if str(clip) == STILL:
            src, fps = still_frames(frames), 30.0
        else:
            src = stack.enter_context(VideoFileSource(clip, max_frames=frames))
            fps = src.fps or 30.0
        tracker = stack.enter_context(FaceTracker(MAX_FACES, mode="video", fps=fps, landmark_every=TRACK_EVERY))
        p = Pipeline(tracker, load_generator(model), timeline, "offline", faces="largest", reuse=reuse)
        p.run(src, lambda f, im: outs.append((f.image, im)))
    return outs, p.stats


def compare(a: list, b: list) -> dict:
    assert len(a) == len(b), (len(a), len(b))
    mx, total, n, changed_sum, changed_n, hist = 0, 0.0, 0, 0.0, 0, np.zeros(256, np.int64)
    se = 0.0
    for (src, x), (_, y) in zip(a, b, strict=True):
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        mx = max(mx, int(d.max()))
        total += float(d.sum())
        se += float((d.astype(np.float64) ** 2).sum())
        n += d.size
        touched = (x != src) | (y != src)
        changed_sum += float(d[touched].sum())
        changed_n += int(touched.sum())
        hist += np.bincount(d.ravel(), minlength=256)
    cdf = np.cumsum(hist) / hist.sum()
    mse = se / max(1, n)
    return {
        "max_abs": mx,
        "mean_abs": round(total / max(1, n), 4),
        "mean_abs_changed_px": round(changed_sum / max(1, changed_n), 4),
        "p99_9_abs": int(np.searchsorted(cdf, 0.999)),
        "psnr_db": None if mse == 0 else round(10 * np.log10(255.0**2 / mse), 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", action="append",
                    help="clips, or 'still' (the bundled portrait with sensor noise); default: four shared talking "
                         "heads and 'still'")
    ap.add_argument("--model", default="warp")
    ap.add_argument("--aus", default="smile")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--au-tol", type=lambda v: [float(x) for x in v.split(",")], default=[ReuseTolerance().au],
                    help="AU tolerances to try, comma-separated (default: the shipped one)")
    ap.add_argument("--landmark-px", type=lambda v: [float(x) for x in v.split(",")],
                    default=[ReuseTolerance().landmark_px], help="landmark tolerances (crop px) to try")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    clips = [Path(c) for c in args.clip] if args.clip else [VIDEO / c for c in CLIPS] + [Path(STILL)]
    tolerances = [ReuseTolerance(landmark_px=px, au=au) for px in args.landmark_px for au in args.au_tol]
    rows = []
    for clip in clips:
        base, s0 = run(clip, args.model, args.aus, args.frames, None)
        again, _ = run(clip, args.model, args.aus, args.frames, None)
        control = compare(base, again)["max_abs"]
        for tol in tolerances:
            reused, s1 = run(clip, args.model, args.aus, args.frames, tol)
            row = {"clip": clip.name, "landmark_px": tol.landmark_px, "au_tol": tol.au, "frames": s0.frames,
                   "faces": s0.faces, "generated": s1.generated, "reused": s1.reused,
                   "reuse_rate": round(s1.reused / max(1, s1.generated + s1.reused), 3),
                   "control_max_abs": control, **compare(base, reused)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "aus": args.aus,
                                         "default_tolerance": dataclasses.asdict(ReuseTolerance()), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
