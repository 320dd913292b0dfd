"""Self-reenactment test: re-express a real frame with the AUs of another frame of the same person
and compare the result with that real frame (``rtanim eval --reenact CLIPS``).

For each held-out clip (held-out *people*: the same person appears in several clips), every
frame is tracked as the product tracks a video; the most neutral frame of the clip's first half
is the source; targets are frames whose rigid landmarks (nose bridge, eye corners, temples) line
up with the source after the canonical crop alignment (pose-matched), drawn towards what is hard:
half the widest-open mouths, up to ``closed_per_clip`` of the most closed eyes (spread in time),
the rest at random. Each model
re-expresses the source with the target's measured AUs through the product path (crop ->
generate -> compose at frame resolution), and is scored against the real target frame:

- mouth- and eye-region PSNR and SSIM, on the two canonical crops (output at the source's
  transform, real frame at its own), in boxes around the real target's lips and eyes;
- expression error: mean |blendshape(output) - blendshape(real)| over MediaPipe's expression
  blendshapes (both read in image mode), and the same for the AU25 / AU26 / AU45 read-back;
- identity: dlib embedding distance between output and real frame (the ``eval`` extra);
- what a person sees (:mod:`rtanim.measure.look`): on open-mouth targets the mouth's sharpness
  against the real one, its teeth share and luma; on closed-eye targets the blink read back and the
  sclera left in the eye openings; and a held-out critic (:mod:`rtanim.measure.critic`) per model,
  trained fresh on half the held-out people to tell its mouths (on open-mouth targets) and eyes
  (on closed-eye targets) from real ones: where nothing is painted, it can only guess.

A model that remembers the person's open mouth (rtanim.models.reference) is shown, before each pair, the
widest-open frame a run would have seen (:func:`reference_frame`): with ``reference="before"``
(default) only frames before the source, as in a live run that reached the source frame; with
``"clip"`` any frame of the clip, as a run that met the person earlier; with ``"none"`` nothing.
Frames within :data:`REFERENCE_GAP` of the target never count: they would show the answer.

Rows: ``copy`` (the unchanged source: the floor), ``warp`` and each model, in one run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.checks import REFERENCE_POLICIES, choice
from rtanim.errors import InputError
from rtanim.face.align import crop
from rtanim.face.compose import compose
from rtanim.face.landmarks import EYES, OUTER_MOUTH, POSE_RIGID, box_mask
from rtanim.files import write_bytes
from rtanim.measure import critic
from rtanim.measure.look import lid_look, mouth_look
from rtanim.measure.people import clip_person

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
READ_BACK = ("AU12", "AU25", "AU26", "AU45")
CLOSED_EYES = 0.6  # AU45 above which a target counts as closed-eyed (as in training's sampling)
REFERENCE_GAP = 25  # tracked frames (1 s at 25 fps) around the target that a reference never comes from


@dataclass
class ReenactOptions:
    pairs_per_clip: int = 6
    closed_per_clip: int = 3  # closed-eye targets per clip, when its blinks allow: enough for the eye critic
    max_frames: int = 300  # frames tracked per clip
    max_rigid_px: float = 2.5  # pose match: mean rigid-landmark distance after alignment, crop px
    seed: int = 0
    reference: str = "before"  # REFERENCE_POLICIES: what a model that remembers a mouth has seen


@dataclass
class PairScore:
    clip: str
    source: int
    target: int
    kind: str  # open_mouth | closed_eyes | random
    mouth_psnr: float
    mouth_ssim: float
    eye_psnr: float
    eye_ssim: float
    expression: float  # mean |blendshape diff|, NaN when no face was read back
    read_back: dict[str, float] = field(default_factory=dict)  # |AU(output) - AU(real)|
    identity: float = math.nan
    reference: bool = False  # the model was shown a remembered open mouth
    look: dict[str, float] = field(default_factory=dict)  # rtanim.measure.look figures that apply


def clip_paths(spec: str | Path) -> list[Path]:
    """A clip, a folder of clips, or a .txt list (one path per line, relative to the list's folder)."""
    p = Path(spec)
    if p.is_dir():
        clips = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
    elif p.suffix == ".txt" and p.is_file():
        lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        clips = [(p.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines]
    elif p.is_file():
        clips = [p]
    else:
        raise InputError(p, "no such clip, folder or clip list", field="--reenact")
    missing = [c for c in clips if not c.is_file()]
    if missing:
        raise InputError(missing[0], "clip listed but not found", field="--reenact")
    if not clips:
        raise InputError(p, "no video clips in it", field="--reenact")
    return clips


# ----------------------------------------------------------------------------- metrics


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM (Wang et al. 2004, Gaussian window 11 / 1.5) of two RGB images on luma, per pixel."""
    x = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float64)
    y = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def region_scores(out: np.ndarray, real: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    return psnr(out[mask], real[mask]), float(ssim_map(out, real)[mask].mean())


def expression_blendshapes(blendshapes: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in blendshapes.items() if k != "_neutral"}


# ----------------------------------------------------------------------------- pairs


def track_clip(path: Path, max_frames: int) -> list[tuple[np.ndarray, Any]]:
    """(frame, face) for every frame with one face, tracked as the product tracks video, but with
    unsmoothed AUs: they are the measurements the target is re-expressed with (smoothing would
    flatten blink peaks)."""
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource

    out = []
    with VideoFileSource(path, max_frames=max_frames) as src, FaceTracker(1, mode="video", au_smoothing=0.0) as tracker:
        for frame in src:
            faces = tracker.track(frame.image, frame.pts)
            if len(faces) == 1:
                out.append((frame.image, faces[0]))
    return out


def _crop_landmarks(face: Any) -> np.ndarray:
    return face.transform.to_crop(np.asarray(face.landmarks, np.float64))[:, :2]


def choose_pairs(tracked: list[tuple[np.ndarray, Any]], n: int, o: ReenactOptions,
                 rng: np.random.Generator) -> list[tuple[int, int, str]]:
    """(source, target, kind): the most neutral early frame and pose-matched targets, hard ones first."""
    if len(tracked) < 2:
        return []
    lms = [_crop_landmarks(f) for _, f in tracked]
    aus = [f.aus for _, f in tracked]
    opening = np.array([a.get("AU26", 0.0) + a.get("AU25", 0.0) for a in aus])
    blink = np.array([a.get("AU45", 0.0) for a in aus])
    activity = np.array([sum(v for k, v in a.items() if len(k) == 4) for a in aus])
    first = max(1, len(tracked) // 2)
    src = int(np.argmin((opening + blink + 0.2 * activity)[:first]))
    rigid = list(POSE_RIGID)
    err = np.array([np.linalg.norm(lm[rigid] - lms[src][rigid], axis=1).mean() for lm in lms])
    ok = np.flatnonzero((err <= o.max_rigid_px) & (np.arange(len(tracked)) != src))
    if len(ok) == 0:
        return []
    chosen: list[tuple[int, int, str]] = []
    used: set[int] = {src}  # no target within 5 frames of the source (a near copy of it)

    def take(order: np.ndarray, k: int, kind: str) -> None:
        for t in order:
            if len([c for c in chosen if c[2] == kind]) >= k:
                return
            # spread over time: not within 5 frames of one already taken
            if all(abs(int(t) - u) > 5 for u in used):
                chosen.append((src, int(t), kind))
                used.add(int(t))

    take(ok[np.argsort(-opening[ok])], max(1, n // 2), "open_mouth")
    closed = ok[blink[ok] > CLOSED_EYES]
    most_closed = closed[np.argsort(-blink[closed])]
    take(most_closed, min(max(1, n // 4), o.closed_per_clip), "closed_eyes")
    take(rng.permutation(ok), n - len(chosen), "random")
    take(most_closed, o.closed_per_clip, "closed_eyes")  # beyond the n: the first n stay as they were
    return chosen


def reference_frame(tracked: list[tuple[np.ndarray, Any]], s: int, t: int, policy: str) -> int | None:
    """The widest-open mouth a run would remember for pair (s, t) under ``policy``, if one is open enough."""
    from rtanim.models.reference import MIN_OPEN_PX, mouth_area

    choice(policy, REFERENCE_POLICIES, "--reference", "reference policy")
    if policy == "none":
        return None
    frames = range(s) if policy == "before" else range(len(tracked))
    best, best_area = None, MIN_OPEN_PX
    for i in frames:
        if abs(i - t) < REFERENCE_GAP:
            continue
        area = mouth_area(_crop_landmarks(tracked[i][1]))
        if area >= best_area:
            best, best_area = i, area
    return best


# ----------------------------------------------------------------------------- the test


@dataclass
class ReenactReport:
    clips: list[str]
    pairs: int
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> summary
    by_kind: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # model -> kind -> summary
    settings: dict[str, Any] = field(default_factory=dict)
    # model -> every pair's scores, in the same order for every model: paired comparisons
    # (which pairs a model wins or loses against another) need them, the means hide them
    per_pair: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def summarise(scores: Sequence[PairScore]) -> dict[str, Any]:
    def med(vals: list[float]) -> float | None:
        v = np.array([x for x in vals if x is not None and math.isfinite(x)])
        return round(float(np.median(v)), 4) if len(v) else None

    def mean(vals: list[float]) -> float | None:
        v = np.array([x for x in vals if x is not None and math.isfinite(x)])
        return round(float(v.mean()), 4) if len(v) else None

    out: dict[str, Any] = {"n": len(scores)}
    for k in ("mouth_psnr", "mouth_ssim", "eye_psnr", "eye_ssim"):
        out[k] = mean([getattr(s, k) for s in scores])
    out["expression"] = mean([s.expression for s in scores])
    for code in READ_BACK:
        out[f"{code}_err"] = mean([s.read_back.get(code, math.nan) for s in scores])
    out["identity"] = med([s.identity for s in scores])
    out["with_reference"] = sum(s.reference for s in scores)
    look = [s.look for s in scores]
    for key in ("mouth_sharpness", "luma_out", "luma_real"):
        out[key] = med([x.get(key, math.nan) for x in look])
    # shares are means: most real open mouths show a dark cavity and no teeth, so their median is 0
    for key in ("teeth_out", "teeth_real", "sclera_out", "sclera_real"):
        out[key] = mean([x.get(key, math.nan) for x in look])
    blink, blink_real = mean([x.get("blink_out", math.nan) for x in look]), mean([x.get("blink_real", math.nan) for x in look])
    out["blink_out"], out["blink_real"] = blink, blink_real
    out["blink_ratio"] = round(blink / blink_real, 4) if blink is not None and blink_real else None
    return out


def reenact(generators: dict[str, Any], clips: Sequence[Path], o: ReenactOptions | None = None,
            tick: Callable[[str, int, int], None] | None = None, identity: Any = None,
            examples: int = 6) -> tuple[ReenactReport, dict[str, np.ndarray]]:
    """Run the test for every generator (``copy`` is added first).

    Returns:
        The report, and the pictures as RGB uint8 by name: ``examples`` (source | real target |
        each model, whole crops), ``mouth`` (open-mouth pairs) and ``eyes`` (closed-eye pairs),
        zoomed: source | each model | real. A picture with no pair to show is left out.
    """
    from rtanim.face.tracking import FaceTracker
    from rtanim.pipeline.jobs import FaceJob

    o = o or ReenactOptions()
    rng = np.random.default_rng(o.seed)
    tick = tick or (lambda stage, done, total: None)
    names = ["copy", *generators]
    remembers = any(getattr(g, "memory", None) is not None for g in generators.values())
    scores: dict[str, list[PairScore]] = {n: [] for n in names}
    strip_rows: list[np.ndarray] = []
    mouth_rows: list[np.ndarray] = []  # zoomed strips: source | each model | real
    eye_rows: list[np.ndarray] = []
    # the critic reads each region only on the targets where it applies: open mouths, closed eyes
    patches: dict[str, dict[str, list[np.ndarray]]] = {n: {"mouth": [], "eyes": []} for n in ["real", *names]}
    people: dict[str, list[str]] = {"mouth": [], "eyes": []}
    with FaceTracker(1, mode="image") as reader:
        for ci, clip in enumerate(clips):
            tick("self-reenactment", ci, len(clips))
            tracked = track_clip(clip, o.max_frames)
            for s, t, kind in choose_pairs(tracked, o.pairs_per_clip, o, rng):
                src_img, src_face = tracked[s]
                tgt_img, tgt_face = tracked[t]
                real_crop = crop(tgt_img, tgt_face.transform)
                size = real_crop.shape[0]
                lm = _crop_landmarks(tgt_face)
                mouth = box_mask(lm[list(OUTER_MOUTH)], size)
                eyes = box_mask(lm[list(EYES[0])], size) | box_mask(lm[list(EYES[1])], size)
                mouth_box, eye_box = critic.box_of(mouth), critic.box_of(eyes)
                src_lm = _crop_landmarks(src_face)
                closed = float(tgt_face.aus.get("AU45", 0.0)) > CLOSED_EYES
                boxes = {"mouth": mouth_box, "eyes": eye_box}
                judged = [p for p, applies in (("mouth", mouth_open(lm, size)), ("eyes", closed)) if applies]
                for part in judged:
                    people[part].append(clip_person(clip.name))
                    patches["real"][part].append(critic.patch(real_crop, boxes[part], critic.PATCH[part]))
                src_crop = crop(src_img, src_face.transform)
                zoom_m, zoom_e = [_zoom(src_crop, mouth_box)], [_zoom(src_crop, eye_box)]
                real_read = reader.track(tgt_img)
                real_bs = expression_blendshapes(real_read[0].blendshapes) if real_read else None
                real_au = real_read[0].aus if real_read else None
                ref = identity.embed(tgt_img, tgt_face.bbox) if identity is not None else None
                row = [crop(src_img, src_face.transform), real_crop]
                r = reference_frame(tracked, s, t, o.reference) if remembers else None
                for name in names:
                    memory = getattr(generators.get(name), "memory", None)
                    if memory is not None:  # what this run would have seen of the person's mouth
                        memory.clear()
                        if r is not None:
                            ref_img, ref_face = tracked[r]
                            memory.observe(src_face.face_id, crop(ref_img, ref_face.transform), _crop_landmarks(ref_face))
                    if name == "copy":
                        out = src_img
                    else:
                        job = FaceJob(src_face, crop(src_img, src_face.transform), dict(tgt_face.aus))
                        out = compose(src_img, generators[name].generate([job]), [src_face.transform])
                    out_crop = crop(out, src_face.transform)
                    row.append(out_crop)
                    mp, ms = region_scores(out_crop, real_crop, mouth)
                    ep, es = region_scores(out_crop, real_crop, eyes)
                    read = reader.track(out)
                    expr, rb = math.nan, {}
                    if read and real_bs is not None:
                        bs = expression_blendshapes(read[0].blendshapes)
                        expr = float(np.mean([abs(bs.get(k, 0.0) - v) for k, v in real_bs.items()]))
                        rb = {c: abs(float(read[0].aus.get(c, 0.0)) - float(real_au.get(c, 0.0))) for c in READ_BACK}
                    ident = math.nan
                    if ref is not None:
                        ident = float(np.linalg.norm(identity.embed(out, tgt_face.bbox) - ref))
                    look = _look(out_crop, real_crop, lm, src_lm, closed, read, real_au)
                    scores[name].append(PairScore(clip.name, s, t, kind, mp, ms, ep, es, expr, rb, ident,
                                                  memory is not None and r is not None, look))
                    for part in judged:
                        patches[name][part].append(critic.patch(out_crop, boxes[part], critic.PATCH[part]))
                    if name != "copy":
                        zoom_m.append(_zoom(out_crop, mouth_box))
                        zoom_e.append(_zoom(out_crop, eye_box))
                if len(strip_rows) < examples and kind != "random":
                    strip_rows.append(np.concatenate(row, 1))
                zoom_m.append(_zoom(real_crop, mouth_box))
                zoom_e.append(_zoom(real_crop, eye_box))
                if len(mouth_rows) < examples and kind == "open_mouth":
                    mouth_rows.append(np.concatenate(zoom_m, 1))
                if len(eye_rows) < examples and closed:
                    eye_rows.append(np.concatenate(zoom_e, 1))
        tick("self-reenactment", len(clips), len(clips))
    n = len(scores["copy"])
    if n == 0:
        raise InputError(", ".join(c.name for c in clips[:3]), "no pose-matched frame pairs found", field="--reenact")
    report = ReenactReport([str(c) for c in clips], n, settings=asdict(o))
    for name in names:
        report.rows[name] = summarise(scores[name])
        report.per_pair[name] = [_json_safe(asdict(x)) for x in scores[name]]
        report.by_kind[name] = {k: summarise([s for s in scores[name] if s.kind == k])
                                for k in ("open_mouth", "closed_eyes", "random")}
    tick("held-out critic", 0, len(names))
    for i, name in enumerate(names):
        for part in ("mouth", "eyes"):
            scored = critic.held_out_scores(patches["real"][part], patches[name][part], people[part], seed=o.seed)
            row = report.rows[name]
            row[f"critic_{part}_pairs"] = len(people[part])
            row[f"critic_{part}_auc"] = None if scored is None else _rounded(critic.roc_auc(*scored))
            row[f"critic_{part}_auc_ci"] = None if scored is None else [
                _rounded(x) for x in critic.auc_interval(*scored, seed=o.seed)]
        tick("held-out critic", i + 1, len(names))
    shown = ["source", *[n for n in names if n != "copy"], "real"]
    pictures = {"examples": (strip_rows, ["source", "real", *names]), "mouth": (mouth_rows, shown),
                "eyes": (eye_rows, shown)}
    return report, {k: _label(np.concatenate(rows, 0), labels) for k, (rows, labels) in pictures.items() if rows}


def _json_safe(value: Any) -> Any:
    """NaN (not JSON) as None, in nested dicts too."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _rounded(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def _zoom(rgb: np.ndarray, box: tuple[int, int, int, int] | None, height: int = 72) -> np.ndarray:
    """The ``box`` of a crop, scaled to ``height`` px (nearest: the pixels as they are) on a fixed width."""
    aspect = 1.6
    x0, y0, x1, y1 = box if box is not None else (0, 0, rgb.shape[1], rgb.shape[0])
    w, h = x1 - x0, y1 - y0
    if w > h * aspect:  # grow the shorter side about the centre, so the zoom keeps the picture's shape
        grow = (w / aspect - h) / 2
        y0, y1 = int(round(y0 - grow)), int(round(y1 + grow))
    else:
        grow = (h * aspect - w) / 2
        x0, x1 = int(round(x0 - grow)), int(round(x1 + grow))
    size = rgb.shape[0]
    y0, y1, x0, x1 = max(y0, 0), min(y1, size), max(x0, 0), min(x1, rgb.shape[1])
    part = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    return cv2.resize(part, (int(round(height * aspect)), height), interpolation=cv2.INTER_NEAREST)


def mouth_open(target_lm: np.ndarray, size: int) -> bool:
    """Whether a target's mouth counts as open (as the reference memory counts it): where the mouth
    figures and the mouth critic apply."""
    from rtanim.models.reference import MIN_OPEN_PX, mouth_area

    return mouth_area(target_lm, size) >= MIN_OPEN_PX


def _look(out_crop: np.ndarray, real_crop: np.ndarray, target_lm: np.ndarray, source_lm: np.ndarray,
          closed: bool, read: Any, real_au: dict[str, float] | None) -> dict[str, float]:
    """The look figures that apply to this pair: the mouth's on an open target mouth, the lids' on
    closed target eyes (with the blink read back from the output and from the real frame)."""
    out: dict[str, float] = {}
    if mouth_open(target_lm, real_crop.shape[0]):
        out.update(mouth_look(out_crop, real_crop, target_lm))
    if closed:
        out.update(lid_look(out_crop, real_crop, source_lm))
        if read and real_au is not None:
            out["blink_out"] = float(read[0].aus.get("AU45", 0.0))
            out["blink_real"] = float(real_au.get("AU45", 0.0))
    return out


def _label(strip: np.ndarray, labels: Sequence[str], head: int = 18) -> np.ndarray:
    s = strip.shape[1] // len(labels)
    canvas = np.full((strip.shape[0] + head, strip.shape[1], 3), 255, np.uint8)
    canvas[head:] = strip
    for i, lab in enumerate(labels):
        cv2.putText(canvas, lab, (i * s + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


COLUMNS = (("mouth_psnr", "mouth PSNR (dB)"), ("mouth_ssim", "mouth SSIM"), ("eye_psnr", "eye PSNR (dB)"),
           ("eye_ssim", "eye SSIM"), ("expression", "expression error"), ("AU25_err", "AU25 err"),
           ("AU26_err", "AU26 err"), ("AU45_err", "AU45 err"), ("identity", "identity (median)"))


def render_markdown(r: ReenactReport) -> str:
    def table(rows: dict[str, dict[str, Any]]) -> list[str]:
        lines = ["| model | pairs | " + " | ".join(c[1] for c in COLUMNS) + " |",
                 "|---|---|" + "---|" * len(COLUMNS)]
        for name, v in rows.items():
            cells = " | ".join("n/a" if v.get(k) is None else f"{v[k]:.3f}" for k, _ in COLUMNS)
            n = f"{v['n']} ({v['with_reference']} with a reference)" if v.get("with_reference") else f"{v['n']}"
            lines.append(f"| {name} | {n} | {cells} |")
        return lines

    lines = ["# Self-reenactment", "", f"{r.pairs} pose-matched frame pairs from {len(r.clips)} held-out clips: the "
             "source frame re-expressed with the target frame's AUs, compared with the real target frame "
             "(higher PSNR / SSIM, lower errors and identity distance are better).", ""]
    lines += table(r.rows)
    for kind in ("open_mouth", "closed_eyes", "random"):
        lines += ["", f"## Targets: {kind.replace('_', ' ')}", ""]
        lines += table({m: r.by_kind[m][kind] for m in r.by_kind})
    lines += ["", "## What a person sees", "", "Open-mouth targets: the mouth's sharpness against the real one "
              "(1: as sharp; median), its teeth share (mean) and luma (median) inside the real inner lips; closed-eye "
              "targets: the blink "
              "read back (AU45, mean) and the sclera share left in the eye openings (mean); a critic trained fresh on half the "
              "held-out people to tell each model's mouths / eyes from real ones, scored on the other half "
              "(ROC AUC; 0.5: cannot tell; in brackets the 95 % bootstrap interval over the scored patches).", ""]
    lines += look_table(r.rows)
    lines += ["", "![examples: source, real target, then each model](reenact.png)", "",
              "![mouths of open-mouth targets: source, each model, real](mouth_strip.png)", "",
              "![eyes of closed-eye targets: source, each model, real](eye_strip.png)", ""]
    return "\n".join(lines)


LOOK_COLUMNS = (("mouth_sharpness", "mouth sharpness (x real)"), ("teeth_out", "teeth share"),
                ("luma_out", "mouth luma"), ("blink_out", "blink read-back"), ("sclera_out", "sclera share"),
                ("critic_mouth_auc", "critic AUC, mouth"), ("critic_eyes_auc", "critic AUC, eyes"))


def look_table(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The look figures per model, with the real targets' own values as the first row."""
    lines = ["| model | " + " | ".join(c[1] for c in LOOK_COLUMNS) + " |", "|---|" + "---|" * len(LOOK_COLUMNS)]
    any_row = next(iter(rows.values()), {})
    real = {"mouth_sharpness": 1.0, "teeth_out": any_row.get("teeth_real"), "luma_out": any_row.get("luma_real"),
            "blink_out": any_row.get("blink_real"), "sclera_out": any_row.get("sclera_real")}
    for name, v in [("real targets", real), *rows.items()]:
        cells = " | ".join("n/a" if v.get(k) is None else f"{v[k]:.3f}{_interval(v.get(k + '_ci'))}"
                           for k, _ in LOOK_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    return lines


def _interval(ci: Any) -> str:
    """`` (lo-hi)`` for a figure's 95 % interval, when it has one."""
    if not ci or any(x is None for x in ci):
        return ""
    return f" ({ci[0]:.2f}-{ci[1]:.2f})"


#: Picture files of a report folder, by name in :func:`reenact`'s pictures.
PICTURES = {"examples": "reenact.png", "mouth": "mouth_strip.png", "eyes": "eye_strip.png"}


def write_reenact(r: ReenactReport, pictures: dict[str, np.ndarray], out: Path) -> None:
    for name, picture in pictures.items():
        ok, buf = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        if ok:
            write_bytes(out / PICTURES[name], buf.tobytes())
    write_bytes(out / "reenact.json", (json.dumps(asdict(r), indent=1) + "\n").encode())
    write_bytes(out / "reenact.md", render_markdown(r).encode())


def evaluate_reenact(model: str, clips: str | Path, out: str | Path, o: ReenactOptions | None = None,
                     engine: str = "auto", progress: Callable[[str, int, int], None] | None = None) -> ReenactReport:
    """What ``rtanim eval --reenact`` does: ``copy``, ``warp`` and ``model`` on the clips, one report."""
    from rtanim.measure.evaluate import Identity, load_generator

    paths = clip_paths(clips)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", field="-o")
    gens = {"warp": load_generator("warp", engine)}
    if model != "warp":
        gen = load_generator(model, engine)
        gens[getattr(gen, "name", model)] = gen
    report, pictures = reenact(gens, paths, o, progress, Identity.create())
    out.mkdir(parents=True, exist_ok=True)  # only once there is a report: a bad clip leaves no folder
    write_reenact(report, pictures, out)
    return report
