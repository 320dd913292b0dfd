"""Training stills that leave out everyone the still-image eval reads.

    python calib/training_stills.py ../shared/data/faces/expressive .data/src_expr
    rtanim prepare .data/src_expr -o .data/stills/expr --test-fraction 0 --max-faces 1

Makes ``OUT`` a folder of symlinks to every image of ``SRC`` whose person
(:func:`rtanim.measure.evaluate.person_of`) is not among the files ``rtanim eval --data EVAL --faces N``
reads (:func:`rtanim.measure.evaluate.still_files`; ``EVAL`` is ``SRC`` unless given). Session 9 picked
the people by their initial and missed that the eval spreads its files over the whole set: its
training stills held 16 of the eval's faces (MODELS.md, session 10).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.measure.evaluate import held_out_images, person_of, still_files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="image folder to draw training stills from")
    p.add_argument("out", type=Path, help="new folder of symlinks (must not exist)")
    p.add_argument("--eval", type=Path, default=None, help="the eval's --data (default: SRC)")
    p.add_argument("--faces", type=int, default=16, help="the eval's --faces")
    a = p.parse_args(argv)
    if not a.src.is_dir():
        print(f"error: {a.src}: not a folder", file=sys.stderr)
        return 2
    if a.out.exists():
        print(f"error: {a.out}: exists; give a new folder", file=sys.stderr)
        return 2
    held = {person_of(f) for f in still_files(a.eval or a.src, a.faces)[0]}
    files, _ = held_out_images(a.src)
    keep = [f for f in files if person_of(f) not in held]
    a.out.mkdir(parents=True)
    for f in keep:
        os.symlink(f.resolve(), a.out / f.name)
    print(f"{a.out}: {len(keep)} images linked; {len(files) - len(keep)} left out "
          f"({len(held)} people the eval reads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
