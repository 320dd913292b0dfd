"""The default models' training set, reproducibly: ``python -m train.default_data [--shared DIR] [--out DIR]``.

Takes every expressive face (the open mouths, frowns and raised brows UTKFace lacks), frames of the
talking-head clips, and a seeded random sample of UTKFace aged 10 or more (its ~2,400 toddlers are
left out: they are not the product's users and their proportions differ), and runs ``rtanim
prepare`` on them, writing the dataset folder and a shard small enough to travel to a GPU machine
in one call (64 MiB with the working tree). The sample is picked by file name hash, so the same
data gives the same set on any machine; the held-out split is prepare's (whole videos, whole
identities).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from rtanim.errors import InputError
from train.extract import utk_age
from train.prepare import PrepareOptions, prepare

UTK_SAMPLE = 4600  # with the ~1,100 expressive faces and the clips: ~6,000 crops, a ~52 MB shard
MIN_AGE = 10
CLIPS = ("WolfgangLanger_Pexels.mp4", "WDA_AlexandriaOcasioCortez_000.mp4", "WDA_KatieHill_000.mp4",
         "tpsmm_driving.mp4", "single_face.mp4")


def utk_sample(folder: Path, count: int, min_age: int = MIN_AGE, seed: int = 0) -> list[Path]:
    """``count`` UTKFace files of subjects aged ``min_age`` or more, chosen by a seeded hash of the name."""
    files = [f for f in folder.iterdir() if (utk_age(f) or 0) >= min_age]
    files.sort(key=lambda f: hashlib.sha1(f"{seed}:{f.name}".encode()).hexdigest())
    return sorted(files[:count])


def link_folder(files: list[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``files`` (prepare reads folders; nothing is copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f.name for f in files}
    for old in folder.iterdir():
        if old.name not in wanted:
            old.unlink()
    for f in files:
        link = folder / f.name
        if not link.is_symlink():
            link.symlink_to(f.resolve())
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.default_data", description=__doc__.splitlines()[0])
    p.add_argument("--shared", default="../shared/data", help="the shared data folder")
    p.add_argument("--out", default=".data/default", help="dataset folder (the shard is written beside it)")
    p.add_argument("--utk", type=int, default=UTK_SAMPLE, help="UTKFace faces to sample")
    a = p.parse_args(argv)
    shared, out = Path(a.shared), Path(a.out)
    try:
        for need in ("faces/utkface", "faces/expressive", "video"):
            if not (shared / need).is_dir():
                raise InputError(shared / need, "missing: pass --shared, the folder of the shared data set (faces, video)")
        utk = link_folder(utk_sample(shared / "faces/utkface", a.utk), out.parent / f"{out.name}.utk")
        sources = [shared / "faces/expressive", utk] + [shared / "video" / c for c in CLIPS]
        shard = out.parent / f"{out.name}.safetensors"
        result = prepare([str(s) for s in sources], out, PrepareOptions(min_age=MIN_AGE), shard=shard,
                         progress=sys.stderr.isatty())
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    size = os.path.getsize(shard) / 2**20
    print(f"{out}: {result.total} crops ({result.train} train, {result.test} held out); shard {shard} {size:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
