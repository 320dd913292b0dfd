"""``rtanim prepare``: turn image folders and videos into a training set of aligned, AU-labelled face crops.

Every face is tracked (MediaPipe, as the product does), aligned to the canonical 128x128 crop
and labelled with its live AUs, so a model learns from exactly the crops and AU scale it will be
fed at run time. Landmarks are stored in crop coordinates, for flow supervision.

Output folder (a superset of the original GANimation layout, so its tools read it too)::

    imgs/NAME.jpg        crops (RGB, JPEG q95)
    aus_openface.pkl     {NAME: 17 AUs on OpenFace's 0-5 scale}   (GANimation)
    train_ids.csv        NAME.jpg per line                         (GANimation)
    test_ids.csv         held-out NAME.jpg per line                (GANimation)
    aus.csv              name, split, group, every AU code (bilateral and sided) in [0, 1]
    landmarks.npy        float32 [N, 478, 3]: x, y crop pixels, z at the same scale; rows as in aus.csv
    meta.json            sources, counts, skips, AU histograms, options, data fingerprint

Work is done in parts (one per video, ``chunk`` images per folder slice; :mod:`train.parts`) written
under ``.parts/`` as they finish, so an interrupted run resumes where it stopped. The crops come from
:mod:`train.extract`; the GANimation files from :mod:`train.ganimation_layout`.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES
from rtanim.face.align import CROP_SIZE
from rtanim.files import load_rgb, staged, write_text
from train.extract import CropFilter, process_images, process_video
from train.ganimation_layout import OPENFACE_SCALE, GanimationLayout, write_ganimation
from train.parts import N_LANDMARKS, TABLE_CODES, Item, Part, PrepareOptions, discover, load_part, save_part

DATASET_FORMAT = "rtanim.dataset"
HIST_BINS = 10


@dataclass
class PrepareResult:
    out: Path
    total: int
    train: int
    test: int
    skipped: dict[str, int]
    problems: list[str]  # corrupt inputs, one line each
    seconds: float = 0.0
    frames: int = 0  # images + sampled video frames looked at

    @property
    def per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- split and tables


def split_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    """Held-out groups: a deterministic pseudo-random ``fraction`` of them (at least one when there are two)."""
    unique = sorted(set(groups))
    if len(unique) < 2 or fraction <= 0:
        return set()
    n_test = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
    return set(ranked[:n_test])


def au_histograms(aus: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Counts per AU in ``HIST_BINS`` bins over [0, 1], for train and test: shows which AUs the data lacks."""
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    out: dict[str, Any] = {"edges": [round(float(e), 3) for e in edges]}
    for j, code in enumerate(TABLE_CODES):
        out[code] = {
            "train": np.histogram(aus[~test, j], edges)[0].tolist(),
            "test": np.histogram(aus[test, j], edges)[0].tolist(),
            "mean": round(float(aus[:, j].mean()), 4) if len(aus) else 0.0,
        }
    return out


def fingerprint(names: Sequence[str], aus: np.ndarray, test: np.ndarray) -> str:
    """Identifies the data a model was trained on (names, labels and split), stored in checkpoints."""
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode() + b"\0")
    h.update(np.ascontiguousarray(aus, np.float32).tobytes())
    h.update(np.ascontiguousarray(test, np.uint8).tobytes())
    return h.hexdigest()[:32]


def write_au_table(path: Path, names: Sequence[str], groups: Sequence[str], test: np.ndarray,
                   aus: np.ndarray) -> None:
    lines = [",".join(("name", "split", "group", *TABLE_CODES))]
    for n, g, t, row in zip(names, groups, test, aus, strict=True):
        g = g.replace(",", "_")
        lines.append(",".join((n, "test" if t else "train", g, *(f"{v:.4f}" for v in row))))
    write_text(path, "\n".join(lines) + "\n")


def read_au_table(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, tuple[str, ...]]:
    """(names, test mask, aus [N, C], codes) from ``aus.csv``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    rows = [r.split(",") for r in text.splitlines() if r.strip()]
    if not rows or rows[0][:3] != ["name", "split", "group"]:
        raise InputError(path, "not an rtanim AU table (expected columns name, split, group, AU...)")
    codes = tuple(rows[0][3:])
    try:
        aus = np.array([[float(v) for v in r[3:]] for r in rows[1:]], np.float32).reshape(-1, len(codes))
    except ValueError as e:
        raise InputError(path, f"bad number ({e})") from None
    return [r[0] for r in rows[1:]], np.array([r[1] == "test" for r in rows[1:]], bool), aus, codes


# ----------------------------------------------------------------------------- shard


def write_shard(path: str | Path, root: Path, names: Sequence[str], aus: np.ndarray, landmarks: np.ndarray,
                test: np.ndarray, meta: dict[str, Any]) -> Path:
    """One safetensors file with everything training needs: crops as their JPEG bytes (uint8, ~10x
    smaller than raw pixels, decoded once at load), AUs, float16 landmarks and the split."""
    from safetensors.numpy import save_file

    blobs = [(root / "imgs" / f"{n}.jpg").read_bytes() for n in names]
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    tensors = {
        "jpeg": np.frombuffer(b"".join(blobs), np.uint8).copy() if blobs else np.zeros(0, np.uint8),
        "offsets": offsets,
        "aus": np.ascontiguousarray(aus, np.float32),
        "landmarks": np.ascontiguousarray(landmarks, np.float16),
        "test": np.ascontiguousarray(test, np.uint8),
    }
    info = {"format": "rtanim.shard", "names": json.dumps(list(names)), "codes": json.dumps(list(TABLE_CODES)),
            "meta": json.dumps({k: meta[k] for k in ("fingerprint", "counts", "crop_size", "sources")})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged(path) as tmp:
        save_file(tensors, str(tmp), metadata=info)
    return path


# ----------------------------------------------------------------------------- driver


def prepare(
    sources: Sequence[str | Path],
    out: str | Path,
    options: PrepareOptions | None = None,
    *,
    shard: str | Path | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Track, align, label, filter and split every face in ``sources`` into the dataset folder ``out``."""
    import time

    from rtanim.face.tracking import FaceTracker

    options = options or PrepareOptions()
    if options.fps <= 0 or options.max_faces < 1 or options.chunk < 1 or not 0 <= options.test_fraction < 1:
        raise InputError("prepare", "need --fps > 0, --max-faces >= 1 and 0 <= --test-fraction < 1")
    if not sources:
        raise InputError("SRC", "give at least one image, folder or video")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder", field="-o")
    parts = discover(sources, options.chunk)
    imgs, part_dir = out / "imgs", out / ".parts"
    imgs.mkdir(parents=True, exist_ok=True)
    part_dir.mkdir(exist_ok=True)

    t0 = time.perf_counter()
    total = sum(p.total for p in parts)
    bar = _progress(progress)
    task = bar.add_task("preparing", total=total) if bar else None
    tick = (lambda n: bar.advance(task, n)) if bar else (lambda n: None)
    kept = 0
    frames = 0
    tracker = None
    try:
        if bar:
            bar.start()
        for part in parts:
            path = part_dir / f"{part.key(options)}.npz"
            if path.is_file():  # done in an earlier run
                tick(part.total)
                items, info = load_part(path)
                kept += len(items)
                continue
            if options.limit and kept >= options.limit:
                break
            flt, problems = CropFilter(options), []
            if part.kind == "images":
                if tracker is None:
                    tracker = FaceTracker(options.max_faces, mode="image", tile_search=options.tiles)
                items, n = process_images(part, imgs, tracker, flt, problems, tick)
            else:
                items, n = process_video(part, imgs, options, flt, problems, tick)
            frames += n
            kept += len(items)
            save_part(path, items, flt.skipped, problems, n, part)
    finally:
        if tracker is not None:
            tracker.close()
        if bar:
            bar.stop()
    result = assemble(out, parts, options, shard=shard)
    result.seconds, result.frames = time.perf_counter() - t0, frames
    return result


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


def assemble(out: Path, parts: Sequence[Part], options: PrepareOptions, *,
             shard: str | Path | None = None) -> PrepareResult:
    """Join finished parts into the tables, split and meta.json (cheap: rerun after every prepare)."""
    items: list[Item] = []
    skipped: Counter[str] = Counter()
    problems: list[str] = []
    source_info: list[dict[str, Any]] = []
    seen: set[str] = set()
    for part in parts:
        path = out / ".parts" / f"{part.key(options)}.npz"
        if not path.is_file():
            continue
        part_items, info = load_part(path)
        skipped.update(info["skipped"])
        problems += info["problems"]
        n_kept = 0
        for it in part_items:
            if it.digest in seen:  # the same picture twice (copies across folders)
                skipped["duplicate image"] += 1
                (out / "imgs" / f"{it.name}.jpg").unlink(missing_ok=True)
                continue
            if options.limit and len(items) >= options.limit:
                break
            seen.add(it.digest)
            items.append(it)
            n_kept += 1
        source_info.append({"path": part.source, "kind": part.kind, "slice": part.index,
                            "inputs": len(part.files) if part.kind == "images" else info["frames"],
                            "kept": n_kept, "skipped": info["skipped"]})
    names = [i.name for i in items]
    groups = [i.group for i in items]
    aus = np.array([i.aus for i in items], np.float32).reshape(-1, len(TABLE_CODES))
    landmarks = np.array([i.landmarks for i in items], np.float32).reshape(-1, N_LANDMARKS, 3)
    test_groups = split_groups(groups, options.test_fraction, options.seed)
    test = np.array([g in test_groups for g in groups], bool)
    write_au_table(out / "aus.csv", names, groups, test, aus)
    with staged(out / "landmarks.npy") as tmp:
        np.save(tmp, landmarks)
    bilateral = aus[:, : len(AU_CODES)].astype(np.float64) * OPENFACE_SCALE
    write_ganimation(out, GanimationLayout(
        {n: bilateral[i] for i, n in enumerate(names)},
        [n for n, t in zip(names, test, strict=True) if not t],
        [n for n, t in zip(names, test, strict=True) if t],
    ))
    meta = {
        "format": DATASET_FORMAT,
        "version": 1,
        "crop_size": CROP_SIZE,
        "codes": list(TABLE_CODES),
        "split": "held out by video for clips, by person for LFW-style names, by source image otherwise",
        "sources": source_info,
        "counts": {"total": len(names), "train": int((~test).sum()), "test": int(test.sum()),
                   "skipped": dict(sorted(skipped.items()))},
        "problems": problems,
        "options": asdict(options),
        "fingerprint": fingerprint(names, aus, test),
        "au_histograms": au_histograms(aus, test),
    }
    write_text(out / "meta.json", json.dumps(meta, indent=1) + "\n")
    if shard is not None:
        write_shard(shard, out, names, aus, landmarks, test, meta)
    return PrepareResult(out, len(names), int((~test).sum()), int(test.sum()), dict(skipped), problems)


def iter_crops(root: str | Path, names: Sequence[str]) -> Iterator[np.ndarray]:
    """RGB crops of a prepared dataset, in ``names`` order."""
    for n in names:
        img = load_rgb(str(Path(root) / "imgs" / f"{n}.jpg"))
        if img is None:
            raise InputError(Path(root) / "imgs" / f"{n}.jpg", "missing or unreadable crop")
        yield img
