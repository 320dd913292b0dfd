"""``rtanim eval``: does a model do what it is told, without changing who it is or anything else?

Every measurement goes through the product's own path (track -> crop -> generate -> compose at
frame resolution) and reads results back with the product's tracker, so the numbers describe
what users see, not the crop the network emits:

- AU fidelity: each AU commanded at 0, 0.33, 0.66 and 1 on held-out faces (the other AUs left at
  the face's own values); the output's AU as MediaPipe reads it. Mean absolute error, and the
  Spearman rank correlation, which asks only that more command gives more AU (the tracker's
  scale need not match ours).
- Identity: dlib's face-recognition embedding distance between input and output (< 0.6 is the
  usual "same person" threshold); needs the ``eval`` extra.
- Background: the share of pixels outside the face region that changed. Compose promises 0.
- Temporal flicker: on a clip with constant target AUs, the mean absolute frame-to-frame change
  of the output inside the face region minus that of the input (> 0: the model adds flicker).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import ALL_CODES, AU_CODES, PRESETS, SIDES
from rtanim.face.align import crop
from rtanim.face.compose import compose, feather_mask
from rtanim.files import write_bytes
from rtanim.io.source_file import IMAGE_EXTENSIONS, load_rgb

LEVELS: tuple[float, ...] = (0.0, 0.33, 0.66, 1.0)
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: dlib's own threshold: descriptors of one person are closer than this in 99.38% of LFW pairs.
SAME_PERSON = 0.6
MIN_SIDE = 256  # small stills (128 px training crops) are upscaled to a webcam-like face size
SKIP_EVAL_EXTRA = "skipped: install rtanim[eval]"


@dataclass
class EvalOptions:
    """How much to measure; the defaults take minutes on a laptop CPU, tests use a handful."""

    faces: int = 8  # held-out faces for AU fidelity and identity
    aus: tuple[str, ...] = AU_CODES  # AUs to command
    levels: tuple[float, ...] = LEVELS
    frames: int = 90  # frames of the flicker clip
    flicker_target: str = "smile"  # preset held constant over the clip
    engine: str = "auto"
    clip: str | None = None  # flicker clip; default: --data when it is a video
    basis: str | None = None  # AU basis for the warp model (default: the shipped one)


# ----------------------------------------------------------------------------- statistics


def rankdata(x: Sequence[float]) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (what Spearman's rho needs)."""
    x = np.asarray(x, np.float64)
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on tie-averaged ranks); NaN when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    rx, ry = rankdata(x[ok]), rankdata(y[ok])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denom) if denom > 0 else math.nan


# ----------------------------------------------------------------------------- generators


def load_generator(model: str, engine: str = "auto", basis: str | None = None) -> Any:
    """``--model`` as the product resolves it (rtanim.pipeline.generators), so eval measures what users run."""
    from rtanim.pipeline.generators import WarpGenerator
    from rtanim.pipeline.generators import load_generator as runtime_generator

    if model == "warp" and basis:
        if not Path(basis).is_file():
            raise InputError(basis, "no such AU basis file", field="--basis")
        return WarpGenerator(basis=basis)

    try:
        return runtime_generator(model, engine)
    except (FileNotFoundError, OSError) as e:  # the warp model without a shipped AU basis
        raise InputError(model, f"cannot load the model ({e}); for warp without a shipped basis pass --basis FILE",
                         field="--model") from None


def command(live: Mapping[str, float], code: str, level: float) -> dict[str, float]:
    """The face's own AUs with ``code`` set to ``level`` (its sided variants too, so models with the
    extended vector get the same command)."""
    target = dict(live)
    target[code] = level
    if code[-1:] not in SIDES:
        for s in SIDES:
            if f"{code}{s}" in target:
                target[f"{code}{s}"] = level
    return target


# ----------------------------------------------------------------------------- data


def _upscale(rgb: np.ndarray) -> np.ndarray:
    side = min(rgb.shape[:2])
    if side >= MIN_SIDE:
        return rgb
    f = MIN_SIDE / side
    return cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_CUBIC)


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def held_out_images(data: Path) -> tuple[list[Path], str]:
    """Images to evaluate on: a dataset's held-out split (``test_ids.csv``, written by prepare and by the
    original GANimation tools), else every image of the folder (or the one image given)."""
    if data.is_file() and data.suffix.lower() in IMAGE_EXTENSIONS:
        return [data], "image"
    ids = data / "test_ids.csv"
    if ids.is_file() and (data / "imgs").is_dir():
        names = [ln.strip().split("\t")[0] for ln in ids.read_text().splitlines() if ln.strip()]
        files = [data / "imgs" / (n if n.lower().endswith(".jpg") else f"{n}.jpg") for n in names]
        files = [f for f in files if f.is_file()]
        if files:
            return files, "held-out split (test_ids.csv)"
        # a dataset with no held-out split: fall back to its images, and say so
        return sorted((data / "imgs").glob("*.jpg")), "all images (the dataset has no held-out split)"
    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files, "all images of the folder"


def still_files(data: Path, faces: int) -> tuple[list[Path], str]:
    """The images the still-image eval reads for ``faces`` faces (in order; the first that hold a
    trackable face are used): ``3 * faces`` spread over :func:`held_out_images`, whose sorted names
    cluster by source. Training stills must leave these people out (:func:`person_of`,
    calib/training_stills.py)."""
    files, what = held_out_images(data)
    if len(files) > faces * 3:
        files = [files[i] for i in np.linspace(0, len(files) - 1, faces * 3).round().astype(int)]
    return files, what


def person_of(path: Path) -> str:
    """Who a photo shows, by its name: ``George_W_Bush_0224.jpg`` and ``Dileep_79.jpg`` (the
    expressive set's LFW-style names) -> ``George_W_Bush``, ``Dileep``; other names are their own person."""
    return re.sub(r"_\d+$", "", path.stem)


def sample_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread evenly over a video (decoded once, in order)."""
    from rtanim.io.source_file import VideoFileSource

    with VideoFileSource(path) as src:
        frames = [f.image for f in src]
    if not frames:
        raise InputError(path, "video has no frames")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return [frames[i] for i in idx]


# ----------------------------------------------------------------------------- measures


def face_region(transform: Any, shape: tuple[int, ...], size: int = 128, grow: int = 2) -> np.ndarray:
    """Frame pixels compose may change for one face: the feathered crop region, grown by ``grow`` px
    for bilinear reach. Everything outside must stay byte-identical."""
    support = (feather_mask(size) > 0).astype(np.uint8)
    h, w = shape[:2]
    m = cv2.warpAffine(support * 255, np.asarray(transform.inverse), (w, h), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    if grow:
        m = cv2.dilate(m.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    return m


class Identity:
    """dlib's ResNet face descriptor (128-d) on the tracker's face box; None when the extra is missing."""

    def __init__(self) -> None:
        import dlib  # noqa: F401 - the eval extra

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("face_recognition_models is not installed")
        # Located by path: the package's __init__ imports pkg_resources, gone from recent setuptools.
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        self.dlib = dlib
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    @classmethod
    def create(cls) -> Identity | None:
        try:
            return cls()
        except (ImportError, RuntimeError, OSError):
            return None

    def embed(self, rgb: np.ndarray, bbox: Sequence[int]) -> np.ndarray:
        x0, y0, x1, y1 = (int(v) for v in bbox)
        rect = self.dlib.rectangle(x0, y0, x1, y1)
        shape = self.shape(np.ascontiguousarray(rgb), rect)
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(rgb), shape), np.float64)


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalReport:
    model: str
    data: str
    faces: int
    au: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    background: dict[str, Any] = field(default_factory=dict)
    flicker: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def evaluate(model: str, data: str | Path, out: str | Path, options: EvalOptions | None = None,
             progress: bool | Callable[[str, int, int], None] = False) -> EvalReport:
    """Measure ``model`` on ``data`` (dataset folder, image folder or video) and write the report to ``out``.

    ``progress``: True for a rich bar on stderr, or a callback ``(stage, done, total)``.
    """
    if progress is True:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       console=Console(stderr=True), transient=True)
        tasks: dict[str, Any] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if not tasks:  # started at the first tick, so an input error before it prints one clean line
                bar.start()
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        try:
            return _evaluate(model, data, out, options, tick)
        finally:
            if tasks:
                bar.stop()
    return _evaluate(model, data, out, options, progress or None)


def _evaluate(model: str, data: str | Path, out: str | Path, options: EvalOptions | None,
              progress: Callable[[str, int, int], None] | None) -> EvalReport:
    from rtanim.face.tracking import FaceTracker
    from rtanim.pipeline.jobs import FaceJob, forget_faces

    o = options or EvalOptions()
    t_start = time.perf_counter()
    data = Path(data)
    if not data.exists():
        raise InputError(data, "no such file or folder", field="--data")
    bad = [c for c in o.aus if c not in ALL_CODES]
    if bad or not o.aus:
        raise InputError("--aus", f"unknown AU codes {bad}" if bad else "no AUs to evaluate")
    if o.faces < 1 or o.frames < 2:
        raise InputError("eval", "need --faces >= 1 and --frames >= 2")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", field="-o")
    gen = load_generator(model, o.engine, o.basis)  # before anything is written: a bad --model writes nothing
    out.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda stage, done, total: None)

    # faces: held-out stills, or frames spread over a video
    if is_video(data):
        frames, what = [_upscale(f) for f in sample_frames(data, o.faces * 3)], "frames spread over the video"
    else:
        files, what = still_files(data, o.faces)
        frames = []
        for f in files:
            img = load_rgb(f)
            if img is not None:
                frames.append(_upscale(img))
            if len(frames) >= o.faces * 3:  # some may hold no trackable face
                break
    report = EvalReport(model=getattr(gen, "name", model), data=str(data), faces=0,
                        settings={**asdict(o), "faces_from": what, "levels": list(o.levels), "aus": list(o.aus)})
    identity = Identity.create()
    rows: dict[str, list[tuple[float, float]]] = {c: [] for c in o.aus}
    baseline: dict[str, list[float]] = {c: [] for c in o.aus}
    per_edit: list[dict[str, Any]] = []  # each output's distance, so two models can be compared pair by pair
    changed = outside = 0
    worst_bg = 0.0
    missed = 0
    grid: list[list[np.ndarray]] = []
    total = o.faces * len(o.aus) * len(o.levels)
    with FaceTracker(1, mode="image") as tracker:
        subjects = []
        for img in frames:
            faces = tracker.track(img)
            if faces:
                subjects.append((img, faces[0]))
            if len(subjects) == o.faces:
                break
        if not subjects:
            raise InputError(data, "no face found to evaluate on", field="--data")
        report.faces = len(subjects)
        for fi, (img, face) in enumerate(subjects):
            forget_faces(gen)  # each photo is another person: never show one the mouth another opened
            region = face_region(face.transform, img.shape)
            ref = identity.embed(img, face.bbox) if identity else None
            crop_in = crop(img, face.transform)
            if fi == 0:
                grid = [[crop_in] for _ in o.aus]
            for ai, code in enumerate(o.aus):
                baseline[code].append(float(face.aus.get(code, 0.0)))
                for level in o.levels:
                    job = FaceJob(face, crop_in, command(face.aus, code, level))
                    result = compose(img, gen.generate([job]), [face.transform])
                    diff = np.any(result != img, axis=2)
                    n_out = int((~region).sum())
                    n_changed = int((diff & ~region).sum())
                    changed, outside = changed + n_changed, outside + n_out
                    worst_bg = max(worst_bg, n_changed / max(1, n_out))
                    measured = tracker.track(result)
                    value = float(measured[0].aus.get(code, 0.0)) if measured else math.nan
                    missed += 0 if measured else 1
                    rows[code].append((level, value))
                    if ref is not None:
                        distance = float(np.linalg.norm(identity.embed(result, face.bbox) - ref))
                        per_edit.append({"face": fi, "au": code, "level": level, "distance": distance})
                    if fi == 0:
                        grid[ai].append(crop(result, face.transform))
                    tick("AU fidelity", sum(len(r) for r in rows.values()), total)

    per_au = {}
    for code in o.aus:
        pairs = np.array(rows[code], np.float64).reshape(-1, 2)
        ok = np.isfinite(pairs[:, 1])
        per_au[code] = {
            "mae": _finite(float(np.abs(pairs[ok, 1] - pairs[ok, 0]).mean()) if ok.any() else math.nan),
            "spearman": _finite(spearman(pairs[:, 0], pairs[:, 1])),
            "measured_by_level": {f"{lv:g}": _finite(float(np.nanmean(pairs[pairs[:, 0] == lv, 1]))
                                                     if np.isfinite(pairs[pairs[:, 0] == lv, 1]).any() else math.nan)
                                  for lv in o.levels},
            "live_mean": _finite(float(np.mean(baseline[code]))),
            "n": int(ok.sum()),
        }
    maes = [v["mae"] for v in per_au.values() if v["mae"] is not None]
    rhos = [v["spearman"] for v in per_au.values() if v["spearman"] is not None]
    report.au = {"per_au": per_au, "mean_mae": _finite(float(np.mean(maes)) if maes else math.nan),
                 "mean_spearman": _finite(float(np.mean(rhos)) if rhos else math.nan),
                 "outputs_without_face": missed}
    if identity is None:
        report.identity = {"status": SKIP_EVAL_EXTRA}
    else:
        d = np.array([e["distance"] for e in per_edit])
        by_au = {c: [e["distance"] for e in per_edit if e["au"] == c] for c in o.aus}  # where a model loses identity
        report.identity = {"status": "ok", "median_distance": _finite(float(np.median(d))),
                           "mean_distance": _finite(float(d.mean())), "max_distance": _finite(float(d.max())),
                           "same_person_share": _finite(float((d < SAME_PERSON).mean())), "threshold": SAME_PERSON,
                           "n": len(d),
                           "median_by_au": {c: _finite(float(np.median(v))) for c, v in by_au.items() if v},
                           "per_edit": per_edit}
    report.background = {"status": "ok", "changed_share": changed / max(1, outside), "worst_output_share": worst_bg,
                         "changed_pixels": changed, "outside_pixels": outside,
                         "pass": changed == 0}
    clip = Path(o.clip) if o.clip else (data if is_video(data) else None)
    report.flicker = flicker(gen, clip, o, tick) if clip is not None else \
        {"status": "skipped: no clip (pass --clip VIDEO, or --data VIDEO)"}
    report.seconds = round(time.perf_counter() - t_start, 2)
    write_report(report, out, grid, o)
    return report


def flicker(gen: Any, clip: Path, o: EvalOptions, tick: Callable[[str, int, int], None]) -> dict[str, Any]:
    """Frame-to-frame change inside the face region, output minus input, with constant target AUs."""
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource
    from rtanim.pipeline.jobs import FaceJob, forget_faces

    if not clip.is_file():
        raise InputError(clip, "no such video", field="--clip")
    from rtanim.expression.timeline import timeline_from_dict

    if o.flicker_target not in PRESETS:
        raise InputError("--flicker-aus", f"unknown preset {o.flicker_target!r}")
    target = timeline_from_dict({"preset": o.flicker_target}, "--flicker-aus")  # unnamed AUs follow the face
    from rtanim.face.landmarks import OUTER_MOUTH

    d_in, d_out, m_in, m_out = [], [], [], []
    prev_in = prev_out = None
    frames = 0
    forget_faces(gen)
    with VideoFileSource(clip, max_frames=o.frames) as src, FaceTracker(1, mode="video") as tracker:
        for frame in src:
            faces = tracker.track(frame.image, frame.pts)
            frames += 1
            tick("flicker", frames, o.frames)
            if not faces:
                prev_in = prev_out = None
                continue
            face = faces[0]
            job = FaceJob(face, crop(frame.image, face.transform), target.at(frame.pts, face.aus))
            result = compose(frame.image, gen.generate([job]), [face.transform])
            region = face_region(face.transform, frame.image.shape, grow=0)
            cur_in, cur_out = frame.image.astype(np.int16), result.astype(np.int16)
            mouth = np.zeros(frame.image.shape[:2], np.uint8)  # the lips and what they hold, this frame
            cv2.fillPoly(mouth, [np.round(np.asarray(face.landmarks)[list(OUTER_MOUTH), :2]).astype(np.int32)], 1)
            mouth = mouth.astype(bool)
            if prev_in is not None and region.any():
                d_in.append(float(np.abs(cur_in - prev_in)[region].mean()))
                d_out.append(float(np.abs(cur_out - prev_out)[region].mean()))
                if mouth.any():
                    m_in.append(float(np.abs(cur_in - prev_in)[mouth].mean()))
                    m_out.append(float(np.abs(cur_out - prev_out)[mouth].mean()))
            prev_in, prev_out = cur_in, cur_out
    if not d_in:
        return {"status": f"skipped: no face in two consecutive frames of {clip}"}
    return {"status": "ok", "clip": str(clip), "frames": frames, "pairs": len(d_in), "target": o.flicker_target,
            "input_change": round(float(np.mean(d_in)), 4), "output_change": round(float(np.mean(d_out)), 4),
            "flicker": round(float(np.mean(d_out) - np.mean(d_in)), 4),
            # teeth that swim: the frame-to-frame change inside the mouth, against the real footage's
            "mouth_stability": round(float(np.mean(m_out) / max(np.mean(m_in), 1e-6)), 4) if m_in else None}


# ----------------------------------------------------------------------------- report


def au_grid(grid: list[list[np.ndarray]], aus: Sequence[str], levels: Sequence[float]) -> np.ndarray:
    """Rows = AUs, columns = input then each commanded level; labelled, RGB uint8."""
    s, pad, head = 128, 64, 20
    h, w = head + s * len(grid), pad + s * (1 + len(levels))
    canvas = np.full((h, w, 3), 255, np.uint8)
    for j, label in enumerate(["input"] + [f"{lv:g}" for lv in levels]):
        cv2.putText(canvas, label, (pad + j * s + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (code, row) in enumerate(zip(aus, grid, strict=True)):
        y = head + i * s
        cv2.putText(canvas, code, (4, y + s // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j, img in enumerate(row):
            canvas[y:y + s, pad + j * s:pad + (j + 1) * s] = cv2.resize(img, (s, s))
    return canvas


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def render_markdown(r: EvalReport) -> str:
    levels = r.settings["levels"]
    lines = [f"# rtanim eval: {r.model}", "",
             f"Data: `{r.data}` ({r.faces} faces, {r.settings['faces_from']}); {r.seconds:.0f}s.", "",
             "## AU fidelity", "",
             "Each AU commanded on every face (other AUs left as they were), read back with the tracker.", "",
             "| AU | MAE | Spearman | " + " | ".join(f"at {lv:g}" for lv in levels) + " | live mean |",
             "|---|---|---|" + "---|" * len(levels) + "---|"]
    for code, v in r.au["per_au"].items():
        by = " | ".join(_fmt(v["measured_by_level"][f"{lv:g}"]) for lv in levels)
        lines.append(f"| {code} | {_fmt(v['mae'])} | {_fmt(v['spearman'])} | {by} | {_fmt(v['live_mean'])} |")
    lines += ["", f"Mean MAE {_fmt(r.au['mean_mae'])}, mean Spearman {_fmt(r.au['mean_spearman'])}; "
                  f"outputs where no face was found: {r.au['outputs_without_face']}.", "", "![AU grid](au_grid.png)",
              "", "## Identity", ""]
    if r.identity.get("status") == "ok":
        lines.append(f"dlib embedding distance input vs output: median {_fmt(r.identity['median_distance'])}, "
                     f"mean {_fmt(r.identity['mean_distance'])}, max "
                     f"{_fmt(r.identity['max_distance'])}; {100 * r.identity['same_person_share']:.0f}% under "
                     f"{SAME_PERSON} (same person).")
        by_au = r.identity.get("median_by_au", {})
        if by_au:
            lines += ["", "Median by commanded AU: " + ", ".join(f"{c} {_fmt(v)}" for c, v in by_au.items()) + "."]
    else:
        lines.append(r.identity["status"])
    b = r.background
    lines += ["", "## Background", "",
              f"Changed pixels outside the face region: {b['changed_pixels']} of {b['outside_pixels']} "
              f"({100 * b['changed_share']:.4f}%); {'PASS' if b['pass'] else 'FAIL'} (must be 0).", "",
              "## Temporal flicker", ""]
    f = r.flicker
    if f.get("status") == "ok":
        lines.append(f"Clip `{f['clip']}`, {f['pairs']} frame pairs, target `{f['target']}`: mean abs change in the "
                     f"face region {f['output_change']:.3f} (output) vs {f['input_change']:.3f} (input): "
                     f"flicker {f['flicker']:+.3f} grey levels." + (
                         "" if f.get("mouth_stability") is None else
                         f" Inside the mouth the output changes {f['mouth_stability']:.2f}x as much as the input "
                         "from frame to frame."))
    else:
        lines.append(f["status"])
    return "\n".join(lines) + "\n"


def write_report(r: EvalReport, out: Path, grid: list[list[np.ndarray]], o: EvalOptions) -> None:
    if grid:
        png = au_grid(grid, o.aus, o.levels)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(png, cv2.COLOR_RGB2BGR))
        if ok:
            write_bytes(out / "au_grid.png", buf.tobytes())
    write_bytes(out / "report.json", (json.dumps(asdict(r), indent=1, default=_json_default) + "\n").encode())
    write_bytes(out / "report.md", render_markdown(r).encode())


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(type(v).__name__)
