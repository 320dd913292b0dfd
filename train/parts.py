"""The resumable units of ``rtanim prepare``: what a part is, how it is keyed, found, saved and loaded.

A part (one video, or ``chunk`` images of a folder) is saved under ``.parts/`` once done, keyed by
its files and the options, so an interrupted or repeated prepare redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, UNILATERAL_CODES
from rtanim.files import staged

#: Columns of the AU table: the 17 bilateral AUs in model order, then every sided code.
TABLE_CODES: tuple[str, ...] = AU_CODES + UNILATERAL_CODES
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
N_LANDMARKS = 478


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


def save_part(path: Path, items: list[Item], skipped: Counter, problems: list[str], frames: int,
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


def load_part(path: Path) -> tuple[list[Item], dict[str, Any]]:
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        items = [Item(str(n), str(g), str(s), a, lm, str(d)) for n, g, s, d, a, lm in
                 zip(z["names"], z["groups"], z["sources"], z["digests"], z["aus"], z["landmarks"], strict=True)]
    return items, info

