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

Work is done in parts (one per video, ``chunk`` images per folder slice) written under
``.parts/`` as they finish, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import pickle
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from rtanim.align import CROP_SIZE, crop
from rtanim.aus import AU_CODES, UNILATERAL_CODES
from rtanim.errors import InputError, RunError
from rtanim.files import load_rgb, staged, write_bytes, write_text

#: Columns of the AU table: the 17 bilateral AUs in model order, then every sided code.
TABLE_CODES: tuple[str, ...] = AU_CODES + UNILATERAL_CODES
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
N_LANDMARKS = 478
DATASET_FORMAT = "rtanim.dataset"
OPENFACE_SCALE = 5.0  # OpenFace _r intensities are 0-5; ours are 0-1 (DESIGN.md, "Action Units")
HIST_BINS = 10


@dataclass
class PrepareOptions:
    """Sampling and quality filters; part of every part's key, so changing one redoes the work."""

    fps: float = 5.0  # video frames sampled per second
    min_face: int = 48  # smallest face (landmark extent, frame px)
    max_yaw: float = 35.0  # degrees, from the head transform
    min_sharpness: float = 15.0  # Laplacian variance of the grey crop; lower is blurry
    dedup: float = 1.5  # video: skip a crop within this mean abs grey difference of the face's last kept one
    max_faces: int = 4  # faces per image / frame
    tiles: bool = False  # also search image tiles for small faces (about 10x slower per image)
    test_fraction: float = 0.1  # held out: whole videos for clips, whole identities for stills
    min_age: int = 0  # skip UTKFace-named images ("AGE_GENDER_RACE_DATE") of younger subjects
    seed: int = 0
    chunk: int = 256  # images per resumable part
    limit: int = 0  # stop after this many crops (0: no limit)

    def key(self) -> str:
        keep = {k: v for k, v in asdict(self).items() if k not in ("test_fraction", "seed", "limit")}
        return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Part:
    """One unit of resumable work: a video or a slice of an image folder."""

    kind: str  # video | images
    source: str  # the path the user gave (video file or folder / image)
    files: list[str] = field(default_factory=list)  # images of this slice
    index: int = 0  # slice number within its folder

    def key(self, options: PrepareOptions) -> str:
        stamp = []
        for f in self.files or [self.source]:
            try:
                st = os.stat(f)
                stamp.append(f"{os.path.abspath(f)}:{st.st_size}:{int(st.st_mtime)}")
            except OSError:
                stamp.append(os.path.abspath(f))
        text = f"{self.kind}|{os.path.abspath(self.source)}|{self.index}|{options.key()}|" + "|".join(stamp)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    @property
    def total(self) -> int:
        return len(self.files) if self.kind == "images" else 1


@dataclass
class Item:
    """One kept face crop."""

    name: str
    group: str  # split unit: the video for clips, the source image (see identity_group) for stills
    source: str
    aus: np.ndarray  # [len(TABLE_CODES)] in [0, 1]
    landmarks: np.ndarray  # [478, 3] crop px
    digest: str  # sha1 of the crop pixels (exact duplicates across sources)


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


# ----------------------------------------------------------------------------- discovery


def _natural(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


def discover(sources: Sequence[str | Path], chunk: int) -> list[Part]:
    """Parts for every source: a video, an image, or a folder of them (searched recursively)."""
    parts: list[Part] = []
    for src in sources:
        p = Path(src)
        if not p.exists():
            raise InputError(p, "no such file or folder")
        if p.is_dir():
            files = sorted((f for f in p.rglob("*") if f.is_file()), key=_natural)
            images = [str(f) for f in files if f.suffix.lower() in IMAGE_EXTS and ".parts" not in f.parts]
            videos = [str(f) for f in files if f.suffix.lower() in VIDEO_EXTS]
            if not images and not videos:
                raise InputError(p, "no images or videos in this folder")
            parts += [Part("images", str(p), images[i:i + chunk], i // chunk) for i in range(0, len(images), chunk)]
            parts += [Part("video", v) for v in videos]
        elif p.suffix.lower() in IMAGE_EXTS:
            parts.append(Part("images", str(p), [str(p)], 0))
        elif p.suffix.lower() in VIDEO_EXTS:
            parts.append(Part("video", str(p)))
        else:
            raise InputError(p, f"not an image ({', '.join(IMAGE_EXTS)}) or video ({', '.join(VIDEO_EXTS)})")
    return parts


# ----------------------------------------------------------------------------- per-face measures


def head_yaw(head_matrix: np.ndarray) -> float:
    """Yaw in degrees (0 = frontal) from MediaPipe's face -> camera transform: the angle of the
    face's forward axis (its third rotation column) around the camera's vertical axis."""
    r = np.asarray(head_matrix, np.float64)[:3, :3]
    r = r / np.maximum(np.linalg.norm(r, axis=0, keepdims=True), 1e-12)
    return math.degrees(math.atan2(r[0, 2], r[2, 2]))


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: low on blurry crops (a standard, cheap focus measure)."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:40] or "x"


_UTK_NAME = re.compile(r"^(\d{1,3})_[01]_[0-4]_\d+")
_NUMBERED_PERSON = re.compile(r"^([A-Za-z][A-Za-z'.-]*(?:_[A-Za-z'.-]+)*)_\d{4}$")


def utk_age(path: str | Path) -> int | None:
    """The age a UTKFace file name starts with (``25_0_1_2017...jpg.chip.jpg``), else None."""
    m = _UTK_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def identity_group(source: str | Path) -> str:
    """Split unit of a still: the person for LFW-style names (``Al_Gore_0002.jpg`` -> ``person:al_gore``,
    so no identity sits on both sides of the split), else the source image itself (UTKFace has no
    identity labels; its faces are mostly distinct people)."""
    stem = Path(source).name.split(".")[0]
    m = _NUMBERED_PERSON.match(stem)
    return f"person:{m.group(1).lower()}" if m else f"image:{os.path.abspath(source)}"


class _Filter:
    """Applies the quality filters to tracked faces and counts why faces were dropped."""

    def __init__(self, options: PrepareOptions) -> None:
        self.o = options
        self.skipped: Counter[str] = Counter()

    def accept(self, face: Any, crop_rgb: np.ndarray) -> bool:
        x0, y0, x1, y1 = face.bbox
        if max(x1 - x0, y1 - y0) < self.o.min_face:
            self.skipped["small face"] += 1
            return False
        if abs(head_yaw(face.head_matrix)) > self.o.max_yaw:
            self.skipped["head yaw"] += 1
            return False
        if sharpness(cv2.cvtColor(crop_rgb, cv2.COLOR_RGB2GRAY)) < self.o.min_sharpness:
            self.skipped["blurry"] += 1
            return False
        return True


def _item(name: str, group: str, source: str, face: Any, crop_rgb: np.ndarray) -> Item:
    lm = np.asarray(face.landmarks, np.float64)
    xy = face.transform.to_crop(lm)
    z = lm[:, 2:3] * face.transform.scale
    aus = np.array([float(face.aus.get(c, 0.0)) for c in TABLE_CODES], np.float32)
    return Item(name, group, source, aus, np.hstack([xy, z]).astype(np.float32),
                hashlib.sha1(crop_rgb.tobytes()).hexdigest())


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RunError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


# ----------------------------------------------------------------------------- parts


def _process_images(part: Part, imgs: Path, tracker: Any, flt: _Filter, problems: list[str],
                    tick: Callable[[int], None]) -> tuple[list[Item], int]:
    items: list[Item] = []
    tag = hashlib.sha1(os.path.abspath(part.source).encode()).hexdigest()[:6]
    for f in part.files:
        tick(1)
        age = utk_age(f) if flt.o.min_age else None
        if age is not None and age < flt.o.min_age:
            flt.skipped["under min age"] += 1
            continue
        rgb = load_rgb(f)
        if rgb is None:
            flt.skipped["unreadable image"] += 1
            problems.append(f"{f}: not a readable image, skipped")
            continue
        faces = tracker.track(rgb)
        if not faces:
            flt.skipped["no face"] += 1
        rel = os.path.relpath(f, part.source) if os.path.isdir(part.source) else os.path.basename(f)
        for face in faces:
            c = crop(rgb, face.transform)
            if not flt.accept(face, c):
                continue
            name = f"{_slug(Path(rel).with_suffix('').as_posix())}_{tag}_{face.face_id}"
            _write_jpeg(imgs / f"{name}.jpg", c)
            items.append(_item(name, identity_group(f), f, face, c))
    return items, len(part.files)


def _process_video(part: Part, imgs: Path, options: PrepareOptions, flt: _Filter, problems: list[str],
                   tick: Callable[[int], None]) -> tuple[list[Item], int]:
    from rtanim.sources import VideoFileSource
    from rtanim.tracking import FaceTracker

    items: list[Item] = []
    tag = hashlib.sha1(os.path.abspath(part.source).encode()).hexdigest()[:6]
    stem = _slug(Path(part.source).stem)
    group = f"video:{os.path.abspath(part.source)}"
    last: dict[int, np.ndarray] = {}
    sampled = 0
    try:
        source = VideoFileSource(part.source)
    except InputError as e:
        flt.skipped["unreadable video"] += 1
        problems.append(f"{e.line()}, skipped")
        tick(1)
        return items, 0
    step = 1.0 / options.fps if options.fps > 0 else 0.0
    next_t = -1.0
    with source, FaceTracker(options.max_faces, mode="video", au_smoothing=0.0) as tracker:
        try:
            for frame in source:
                if frame.pts + 1e-6 < next_t:
                    continue
                next_t = (frame.pts if next_t < 0 else next_t) + step
                sampled += 1
                faces = tracker.track(frame.image, frame.pts)
                if not faces:
                    flt.skipped["no face"] += 1
                for face in faces:
                    c = crop(frame.image, face.transform)
                    thumb = cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA)
                    thumb = thumb.astype(np.float32)
                    prev = last.get(face.face_id)
                    if prev is not None and float(np.abs(thumb - prev).mean()) < options.dedup:
                        flt.skipped["duplicate frame"] += 1
                        continue
                    if not flt.accept(face, c):
                        continue
                    last[face.face_id] = thumb
                    name = f"{stem}_{tag}_f{frame.index:06d}_{face.face_id}"
                    _write_jpeg(imgs / f"{name}.jpg", c)
                    items.append(_item(name, group, part.source, face, c))
                if options.limit and len(items) >= options.limit:
                    break
        except RunError as e:
            flt.skipped["video decode error"] += 1
            problems.append(f"{e}; kept the {len(items)} crops before it")
    tick(1)
    return items, sampled


def _save_part(path: Path, items: list[Item], skipped: Counter, problems: list[str], frames: int,
               part: Part) -> None:
    with staged(path) as tmp:
        np.savez(
            tmp,
            names=np.array([i.name for i in items], dtype=str),
            groups=np.array([i.group for i in items], dtype=str),
            sources=np.array([i.source for i in items], dtype=str),
            digests=np.array([i.digest for i in items], dtype=str),
            aus=np.array([i.aus for i in items], np.float32).reshape(-1, len(TABLE_CODES)),
            landmarks=np.array([i.landmarks for i in items], np.float32).reshape(-1, N_LANDMARKS, 3),
            info=np.array(json.dumps({"skipped": dict(skipped), "problems": problems, "frames": frames,
                                      "kind": part.kind, "source": part.source})),
        )


def _load_part(path: Path) -> tuple[list[Item], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        items = [Item(str(n), str(g), str(s), a, lm, str(d)) for n, g, s, d, a, lm in
                 zip(z["names"], z["groups"], z["sources"], z["digests"], z["aus"], z["landmarks"], strict=True)]
    return items, info


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


# ----------------------------------------------------------------------------- GANimation layout


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell raw bytes (array buffers)
}


class _AUUnpickler(pickle.Unpickler):
    """Only numpy arrays and dicts: an AU file must never be able to run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an AU file")
        return super().find_class(module, name)


def load_au_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """``aus_openface.pkl`` -> {name: float64[17] on the 0-5 scale}, refusing anything but arrays and dicts."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    try:
        obj = _AUUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise InputError(path, f"refusing to load: {e}") from None
    except Exception as e:  # truncated or not a pickle at all
        raise InputError(path, f"not a readable AU pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"expected a dict of name -> AU array, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = key.decode("latin1") if isinstance(key, bytes) else key
        arr = np.asarray(value, dtype=np.float64).reshape(-1) if isinstance(value, np.ndarray | list) else None
        if not isinstance(name, str) or arr is None or arr.size != len(AU_CODES):
            raise InputError(path, f"entry {key!r}: expected {len(AU_CODES)} AU values", field=str(key))
        out[name] = arr
    return out


def save_au_pickle(path: str | Path, aus: dict[str, np.ndarray]) -> None:
    """Protocol 2, numpy float64 arrays, as the original code expects (it divides them by 5)."""
    data = {k: np.asarray(v, np.float64).reshape(len(AU_CODES)) for k, v in aus.items()}
    write_bytes(Path(path), pickle.dumps(data, protocol=2))


def read_ids(path: str | Path) -> list[str]:
    """An ids file (``NAME.jpg`` per line; the original reads it with np.loadtxt) -> names without extension."""
    path = Path(path)
    try:
        lines = [ln.strip().split("\t")[0] for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    return [ln[:-4] if ln.lower().endswith(".jpg") else ln for ln in lines]


def write_ids(path: str | Path, names: Sequence[str]) -> None:
    write_text(Path(path), "".join(f"{n}.jpg\n" for n in names))


@dataclass
class GanimationLayout:
    """The original GANimation dataset files: AUs on the 0-5 scale, ids without extension."""

    aus: dict[str, np.ndarray]
    train_ids: list[str]
    test_ids: list[str]


def read_ganimation(root: str | Path) -> GanimationLayout:
    root = Path(root)
    aus = load_au_pickle(root / "aus_openface.pkl")
    train = read_ids(root / "train_ids.csv") if (root / "train_ids.csv").is_file() else sorted(aus)
    test = read_ids(root / "test_ids.csv") if (root / "test_ids.csv").is_file() else []
    return GanimationLayout(aus, train, test)


def write_ganimation(root: str | Path, layout: GanimationLayout) -> None:
    root = Path(root)
    save_au_pickle(root / "aus_openface.pkl", layout.aus)
    write_ids(root / "train_ids.csv", layout.train_ids)
    write_ids(root / "test_ids.csv", layout.test_ids)


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

    from rtanim.tracking import FaceTracker

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
                items, info = _load_part(path)
                kept += len(items)
                continue
            if options.limit and kept >= options.limit:
                break
            flt, problems = _Filter(options), []
            if part.kind == "images":
                if tracker is None:
                    tracker = FaceTracker(options.max_faces, mode="image", tile_search=options.tiles)
                items, n = _process_images(part, imgs, tracker, flt, problems, tick)
            else:
                items, n = _process_video(part, imgs, options, flt, problems, tick)
            frames += n
            kept += len(items)
            _save_part(path, items, flt.skipped, problems, n, part)
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
        part_items, info = _load_part(path)
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
