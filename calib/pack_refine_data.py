"""Pack a share of the refine trainer's training frames small enough to travel to a GPU machine.

    python calib/pack_refine_data.py --data .data/talk .data/stills -o .gpu/refine_data.tar --max-mb 44

A GPU session's working tree travels in at most 64 MiB, and the prepared frames are ~570 MB
(JPEG crops at quality 95 and float32 landmarks with depth). This keeps the trainer's own
``rtanim prepare`` layout but only what it reads: a uniform random share of the *training*
frames (the held-out people are split off here exactly as the trainer splits them, so the GPU
run, started with ``--held-out 0``, never sees them), crops re-encoded at ``--quality``, landmarks
as float16 x, y. The share is the largest that fits ``--max-mb``; what was packed is written to
``pack.json`` inside the archive.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.errors import InputError
from rtanim.files import staged
from train.refine_data import load_frames, prepare_folders, split_people

#: Bytes a packed frame costs besides its JPEG: float16 x, y landmarks, its aus.csv row, and the
#: tar header and padding of its image file.
FRAME_OVERHEAD = 478 * 2 * 2 + 420 + 1024
#: ... and what the archive costs whatever it holds: tar's end record, pack.json, and per folder the
#: headers of its aus.csv and landmarks.npy.
FIXED_OVERHEAD, FOLDER_OVERHEAD = 16384, 4096


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python calib/pack_refine_data.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="rtanim prepare folders, as given to train.refine_train")
    p.add_argument("-o", "--out", type=Path, required=True, help="the archive to write (.tar)")
    p.add_argument("--max-mb", type=float, default=44.0, help="size budget of the archive, MiB")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality of the packed crops")
    p.add_argument("--held-out", type=float, default=0.15, help="as train.refine_train's (the same people left out)")
    p.add_argument("--seed", type=int, default=0, help="as train.refine_train's; also draws the packed share")
    return p.parse_args(argv)


def pack(a: argparse.Namespace) -> dict:
    frames = load_frames(a.data)
    if len(set(frames.names)) != len(frames.names):
        raise InputError(", ".join(a.data), "crop names repeat across folders; cannot pack them by name", field="--data")
    held = split_people(frames, a.held_out, a.seed) if a.held_out > 0 else np.zeros(len(frames), bool)
    train = np.flatnonzero(~held)
    if not len(train):
        raise InputError(", ".join(a.data), "no training frames left after the held-out split", field="--data")
    jpeg = {}
    order = np.random.default_rng(a.seed).permutation(train)
    folders = prepare_folders(a.data)
    budget, used = a.max_mb * 2**20 - FIXED_OVERHEAD - FOLDER_OVERHEAD * len(folders), 0
    for i in order:  # a uniform share: keep drawing until the next frame would not fit
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frames.images[i], cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, a.quality])
        if not ok:
            continue
        if used + len(buf) + FRAME_OVERHEAD > budget:
            break
        jpeg[frames.names[i]] = buf.tobytes()
        used += len(buf) + FRAME_OVERHEAD
    if not jpeg:
        raise InputError(a.out, f"not one frame fits {a.max_mb:g} MiB", field="--max-mb")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"frames": len(frames), "held_out": int(held.sum()), "train_frames": int(len(train)),
               "packed": len(jpeg), "quality": a.quality, "seed": a.seed, "folders": {}}
    with staged(a.out) as tmp, tarfile.open(tmp, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for k, folder in enumerate(folders):
            lines = (folder / "aus.csv").read_text().splitlines()
            rows = [r for r in lines[1:] if r.strip()]
            keep = [j for j, r in enumerate(rows) if r.split(",", 1)[0] in jpeg]
            if not keep:
                continue
            dest = f"{k:02d}_{folder.parent.name}_{folder.name}"
            lm = np.load(folder / "landmarks.npy", allow_pickle=False)
            add(f"{dest}/aus.csv", ("\n".join([lines[0]] + [rows[j] for j in keep]) + "\n").encode())
            out = io.BytesIO()
            np.save(out, lm[keep, :, :2].astype(np.float16), allow_pickle=False)
            add(f"{dest}/landmarks.npy", out.getvalue())
            for j in keep:
                name = rows[j].split(",", 1)[0]
                add(f"{dest}/imgs/{name}.jpg", jpeg[name])
            summary["folders"][dest] = len(keep)
        add("pack.json", json.dumps(summary, indent=1).encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:
        s = pack(a)
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    print(f"packed {s['packed']} of {s['train_frames']} training frames ({s['held_out']} held out) into {a.out} "
          f"({a.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
