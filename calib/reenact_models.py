"""The self-reenactment test for several models in one run (rows copy, warp, then each model).

    python calib/reenact_models.py -o runs/eval/reenact \\
        refine-new=runs/refine/refine.safetensors refine-8899=train/init/refine.safetensors

``rtanim eval --reenact`` compares one model with ``copy`` and ``warp``; this puts two checkpoints
of the same model (which share the name ``refine``) beside each other on the same pairs, which is
how MODELS.md decides whether new weights are better than the last ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.checks import REFERENCE_POLICIES
from rtanim.measure.reenact import ReenactOptions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="LABEL=MODEL (a model name or a checkpoint path)")
    p.add_argument("-o", "--out", type=Path, required=True, help="report folder (reenact.md, .json, .png)")
    p.add_argument("--clips", default=str(ROOT / "calib" / "reenact_clips.txt"), help="clip, folder or .txt list")
    p.add_argument("--pairs", type=int, default=6, help="frame pairs per clip")
    p.add_argument("--closed", type=int, default=ReenactOptions.closed_per_clip,
                   help="closed-eye targets per clip where its blinks allow (beyond one, added to --pairs)")
    p.add_argument("--examples", type=int, default=6, help="rows of each picture (examples, mouths, eyes)")
    p.add_argument("--engine", default="auto")
    p.add_argument("--reference", default="before", choices=REFERENCE_POLICIES,
                   help="what a model that remembers a mouth has seen: frames before the source (a live run), "
                        "the whole clip but the target's second (a run that met the person earlier), or nothing")
    a = p.parse_args(argv)

    from rtanim.checks import output_folder
    from rtanim.errors import InputError
    from rtanim.measure.evaluate import Identity, load_generator
    from rtanim.measure.reenact import clip_paths, reenact, write_reenact

    try:
        output_folder(a.out)  # before the long run, not after it
        for option, value in (("--pairs", a.pairs), ("--closed", a.closed), ("--examples", a.examples)):
            if value < 0:
                raise InputError(value, "must be 0 or more", field=option)
        specs = [m.split("=", 1) if "=" in m else [m, m] for m in a.models]
        gens = {"warp": load_generator("warp", a.engine)}
        for label, model in specs:
            if label in gens:
                raise InputError(label, "a label used twice (labels name the rows)", field="models")
            gens[label] = load_generator(model, a.engine)
        report, pictures = reenact(gens, clip_paths(a.clips), ReenactOptions(pairs_per_clip=a.pairs, closed_per_clip=a.closed,
                                                                         reference=a.reference),
                                identity=Identity.create(), examples=a.examples)
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    write_reenact(report, pictures, a.out)
    print((a.out / "reenact.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
