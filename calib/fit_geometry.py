"""Fit the per-AU gains and the AU -> landmark basis of the ``warp`` model (see calib/GEOMETRY.md).

    /work/venv/bin/python calib/fit_geometry.py            # track (cached), fit, write the assets

Steps: track a UTKFace sample plus every expressive face with rtanim.face.tracking (image mode),
caching landmarks / blendshapes / head pose per image so a rerun (or a refit with other
options) skips the tracking; fit gains so each AU uses [0, 1]; recompute live AUs with those
gains; align landmarks to the canonical crop; add left/right mirrored copies (removes yaw and
handedness bias, makes the basis symmetric); ridge-fit ``landmarks ~ mean + AUs @ B + pose``;
write rtanim/assets/au_basis.npz, rtanim/assets/au_gains.json and calib/geometry_fit.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.expression.aus import AU_CODES, DEFAULT_GAINS, EXTENDED_CODES, SIDED, blendshapes_to_aus
from rtanim.face.align import CROP_SIZE, fit_transform
from rtanim.files import staged
from rtanim.models.geometry import AUBasis, fit_basis, mirror_permutation, select_controls

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rtanim" / "fit_geometry.npz"
#: Gains are 1 / (99th percentile of the raw AU); an AU that needs more than this stays weak
#: rather than turning tracker noise into a full-strength AU.
GAIN_CAP = 4.0
PERCENTILE = 99.0
#: Face-mesh regions for the residual report (index ranges are MediaPipe's, via face_mesh connections).
REGIONS = {
    "lips": (61, 291, 0, 17, 37, 267, 84, 314, 40, 270, 91, 321, 185, 409, 146, 375, 13, 14, 78, 308),
    "brows": (70, 63, 105, 66, 107, 300, 293, 334, 296, 336),
    "eyelids": (159, 386, 145, 374, 158, 385, 160, 387),
    "jaw": (152, 148, 377, 176, 400, 172, 397, 136, 365),
}


# ----------------------------------------------------------------------------- tracking (cached)


def sample_files(data: Path, n_utk: int, seed: int, min_age: int) -> list[Path]:
    """``n_utk`` random UTKFace adults/teens (age >= min_age, from the file name) + all expressive faces."""
    utk = sorted((data / "faces" / "utkface").glob("*.jpg"))
    utk = [p for p in utk if p.name.split("_")[0].isdigit() and int(p.name.split("_")[0]) >= min_age]
    random.Random(seed).shuffle(utk)
    expressive = sorted((data / "faces" / "expressive").glob("*.jpg"))
    return utk[:n_utk] + expressive


def load_cache(path: Path) -> dict[str, dict[str, np.ndarray]]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        # Read each array once (every z[...] decompresses the whole array again) and copy rows,
        # so entries do not keep views of the whole array alive.
        names, lms, shapes, heads = z["names"], z["landmarks"], z["blendshapes"], z["head"]
        out = {
            str(n): {"landmarks": lms[i].copy(), "blendshapes": shapes[i].copy(), "head": heads[i].copy()}
            for i, n in enumerate(names)
        }
        out["__bs_names__"] = {"names": z["bs_names"]}
        return out


def save_cache(path: Path, entries: dict[str, dict[str, np.ndarray]], bs_names: list[str]) -> None:
    names = sorted(k for k in entries if not k.startswith("__"))
    path.parent.mkdir(parents=True, exist_ok=True)
    empty_lm = np.full((478, 3), np.nan, np.float32)
    with staged(path) as tmp:
        np.savez(
            tmp,
            names=np.array(names),
            landmarks=np.stack([entries[n]["landmarks"] for n in names]) if names else empty_lm[None],
            blendshapes=np.stack([entries[n]["blendshapes"] for n in names]) if names else np.zeros((1, 52)),
            head=np.stack([entries[n]["head"] for n in names]) if names else np.zeros((1, 4, 4)),
            bs_names=np.array(bs_names),
        )


def cache_key(f: Path, data: Path) -> str:
    return str(f.relative_to(data))


def track_all(files: list[Path], data: Path, cache_path: Path) -> tuple[dict, list[str]]:
    """Track each file once; a missed face is cached as NaN landmarks so it is not retried."""
    from rtanim.face.tracking import FaceTracker

    cache = load_cache(cache_path)
    bs_names = [str(n) for n in cache.pop("__bs_names__", {"names": np.array([])})["names"]]
    todo = [f for f in files if cache_key(f, data) not in cache]
    if not todo:
        return cache, bs_names
    print(f"tracking {len(todo)} images ({len(files) - len(todo)} cached in {cache_path})", file=sys.stderr)
    t0 = time.time()
    with FaceTracker(1, mode="image", tile_search=False) as tracker:
        for i, f in enumerate(todo):
            rgb = cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            faces = tracker.track(rgb)
            pad = 0
            if not faces:  # tight crops: a margin helps the face detector
                pad = rgb.shape[0] // 4
                faces = tracker.track(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
            entry = {
                "landmarks": np.full((478, 3), np.nan, np.float32),
                "blendshapes": np.zeros(max(len(bs_names), 52), np.float32),
                "head": np.eye(4, dtype=np.float32),
            }
            if faces:
                face = faces[0]
                if not bs_names:
                    bs_names = sorted(face.blendshapes)
                lm = face.landmarks.copy()
                lm[:, :2] -= pad
                entry = {
                    "landmarks": lm.astype(np.float32),
                    "blendshapes": np.array([face.blendshapes.get(n, 0.0) for n in bs_names], np.float32),
                    "head": face.head_matrix.astype(np.float32),
                }
            cache[cache_key(f, data)] = entry
            if (i + 1) % 250 == 0 or i + 1 == len(todo):
                save_cache(cache_path, cache, bs_names)
                rate = (i + 1) / (time.time() - t0)
                print(f"  {i + 1}/{len(todo)}  {rate:.1f} img/s", file=sys.stderr)
    return cache, bs_names


# ----------------------------------------------------------------------------- fitting


def fit_gains(raw: np.ndarray) -> tuple[dict[str, float], list[str], dict[str, float]]:
    """gain = 1 / p99 of the raw (gain 1) bilateral AU, in [1, GAIN_CAP]; weak = needed more than the cap."""
    p = np.percentile(raw, PERCENTILE, axis=0)
    gains, weak = {}, []
    for code, q in zip(AU_CODES, p, strict=True):
        need = 1.0 / max(float(q), 1e-6)
        gains[code] = round(float(np.clip(need, 1.0, GAIN_CAP)), 3)
        if need > GAIN_CAP:
            weak.append(code)
    return gains, weak, {c: round(float(q), 4) for c, q in zip(AU_CODES, p, strict=True)}


def pose_features(head: np.ndarray) -> np.ndarray:
    """Head-pose nuisance terms from MediaPipe's facial transform: the face normal's x (yaw) and
    y (pitch), roll, and their squares / product, so the fit does not confuse a turned head with
    an AU. Mirroring negates the odd terms (x, roll, x*y)."""
    r = head[:, :3, :3]
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    nx, ny, roll = r[:, 0, 2], r[:, 1, 2], r[:, 1, 0]
    return np.stack([nx, ny, roll, nx * nx, ny * ny, nx * ny], 1)


def mirror_codes(codes: tuple[str, ...]) -> np.ndarray:
    """Index permutation swapping ...L and ...R codes (bilateral codes map to themselves)."""
    swap = {"L": "R", "R": "L"}
    out = []
    for c in codes:
        base, side = (c[:-1], c[-1]) if c[-1] in swap and c[:-1] in SIDED else (c, "")
        out.append(codes.index(base + swap[side]) if side else codes.index(c))
    return np.array(out)


def region_rms(residual: np.ndarray, idx: tuple[int, ...]) -> float:
    return float(np.sqrt((residual[:, list(idx)] ** 2).sum(-1).mean()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--utk", type=int, default=3000, help="UTKFace images to sample (plus all expressive faces)")
    ap.add_argument("--min-age", type=int, default=10, help="skip young children (different face proportions)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=CACHE, help="tracking cache (outside the repo)")
    ap.add_argument("--codes", choices=("bilateral", "extended"), default="extended")
    ap.add_argument("--ridge", type=float, default=10.0)
    ap.add_argument("--controls", type=int, default=100)
    ap.add_argument("--basis-out", type=Path, default=ROOT / "rtanim" / "assets" / "au_basis.npz")
    ap.add_argument("--gains-out", type=Path, default=ROOT / "rtanim" / "assets" / "au_gains.json")
    ap.add_argument("--record-out", type=Path, default=ROOT / "calib" / "geometry_fit.json")
    args = ap.parse_args(argv)

    files = sample_files(args.data, args.utk, args.seed, args.min_age)
    cache, bs_names = track_all(files, args.data, args.cache)
    keys = [cache_key(f, args.data) for f in files]
    found = [k for k in keys if np.isfinite(cache[k]["landmarks"]).all()]
    source = np.array([k.split("/")[1] for k in found])
    counts = {
        s: {"images": int(sum(k.split("/")[1] == s for k in keys)), "faces": int((source == s).sum())}
        for s in ("utkface", "expressive")
    }
    print(f"faces found: {counts}", file=sys.stderr)
    landmarks = np.stack([cache[k]["landmarks"] for k in found]).astype(np.float64)
    shapes = [dict(zip(bs_names, cache[k]["blendshapes"].tolist(), strict=False)) for k in found]
    head = np.stack([cache[k]["head"] for k in found]).astype(np.float64)

    # 1. gains, from the raw bilateral AUs
    raw = np.array([[blendshapes_to_aus(b, DEFAULT_GAINS)[c] for c in AU_CODES] for b in shapes])
    gains, weak, p99 = fit_gains(raw)
    codes = AU_CODES if args.codes == "bilateral" else EXTENDED_CODES
    aus = np.array([[blendshapes_to_aus(b, gains)[c] for c in codes] for b in shapes])

    # 2. canonical crop landmarks, pose terms, mirrored copies
    crop = np.stack([fit_transform(lm).to_crop(lm) for lm in landmarks])  # M x 478 x 2
    pose = pose_features(head)
    perm = mirror_permutation()
    flipped = crop[:, perm] * np.array([-1.0, 1.0]) + np.array([CROP_SIZE - 1.0, 0.0])
    x_all = np.concatenate([crop, flipped])
    a_all = np.concatenate([aus, aus[:, mirror_codes(codes)]])
    p_all = np.concatenate([pose, pose * np.array([-1, 1, -1, 1, 1, -1])])

    # 3. held-out check (10% of faces, both copies), then the fit on everything
    m = len(crop)
    held = np.zeros(m, bool)
    held[np.random.default_rng(args.seed).permutation(m)[: m // 10]] = True
    held2 = np.concatenate([held, held])
    # Pose terms stay in both models here, so the comparison isolates what the AUs explain.
    tr = ~held2
    mean_p, b_p, _ = fit_basis(x_all[tr], p_all[tr], None, args.ridge)
    mean_ap, b_ap, _ = fit_basis(x_all[tr], np.hstack([a_all, p_all])[tr], None, args.ridge)
    res_mean = x_all[held2] - (mean_p + np.tensordot(p_all[held2], b_p, axes=([1], [0])))
    res_au = x_all[held2] - (mean_ap + np.tensordot(np.hstack([a_all, p_all])[held2], b_ap, axes=([1], [0])))
    mean, basis, residual = fit_basis(x_all, a_all, p_all, args.ridge)
    controls = select_controls(mean, args.controls)

    report = {
        "held_out_rms_px": {
            "all": {
                "pose_only": region_rms(res_mean, tuple(range(468))),
                "with_aus": region_rms(res_au, tuple(range(468))),
            },
            **{
                r: {"pose_only": region_rms(res_mean, idx), "with_aus": region_rms(res_au, idx)}
                for r, idx in REGIONS.items()
            },
        },
        "train_rms_px_with_pose": region_rms(residual, tuple(range(468))),
        "basis_peak_px": {c: round(float(np.linalg.norm(basis[i], axis=-1).max()), 2) for i, c in enumerate(codes)},
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sources = {
        "utkface": f"{args.utk} random images, age >= {args.min_age}, seed {args.seed}",
        "expressive": "all images",
    }
    meta = {
        "fitted_on": date,
        "command": "python calib/fit_geometry.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": commit,
        "sources": sources,
        "counts": counts,
        "codes": args.codes,
        "ridge": args.ridge,
        "mirrored": True,
        "nuisance": "head pose (normal x, y, roll, squares, x*y)",
        "gains": gains,
        "landmark_units": f"crop pixels ({CROP_SIZE}x{CROP_SIZE}, rtanim.face.align template)",
        "report": report,
    }
    AUBasis(codes, mean, basis, controls, perm, CROP_SIZE, meta).save(args.basis_out)
    args.gains_out.write_text(
        json.dumps(
            {
                "gains": gains,
                "fitted_on": f"{date}: {counts['utkface']['faces']} UTKFace + {counts['expressive']['faces']} "
                f"expressive faces; gain = 1/p{PERCENTILE:g} of the raw AU, in [1, {GAIN_CAP:g}]",
                "weak": weak,
                "p99_raw": p99,
            },
            indent=2,
        )
        + "\n"
    )
    args.record_out.write_text(json.dumps({**meta, "weak": weak, "p99_raw": p99}, indent=2) + "\n")
    print(json.dumps({"counts": counts, "weak": weak, "gains": gains, "report": report}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
