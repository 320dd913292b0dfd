"""Issue 12's gate for a candidate default model, figure by figure, against `warp` in the same runs.

    python calib/gate_check.py MODEL --reenact REENACT_DIR --stills STILLS_DIR --warp-stills WARP_STILLS_DIR

``REENACT_DIR`` is a ``calib/reenact_models.py`` output holding rows ``warp`` and ``MODEL``;
``STILLS_DIR`` / ``WARP_STILLS_DIR`` are ``rtanim eval --faces 16 --clip ...`` outputs of the model
and of ``warp`` on the same faces. Prints one table row per figure and exits 0 when every figure is
met, 1 when one is not, 2 on a report it cannot read. The stills identity row also gives the paired
view (calib/identity_paired.py), which the gate's median alone cannot resolve.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from calib.identity_paired import ReportProblem, compare, edits, read_report

MOUTH_MARGIN_DB = 1.0  # the gate: mouth-region PSNR at least this much over warp's
FLICKER_MAX = 1.0  # excess flicker, grey levels
READ_BACK = ("AU25", "AU26", "AU45")


@dataclass
class Figure:
    name: str
    warp: float | None
    model: float | None
    needed: str
    met: bool


def check(name: str, warp: float | None, model: float | None, rule: str,
           ok: Callable[[float, float], bool]) -> Figure:
    met = warp is not None and model is not None and ok(model, warp)
    return Figure(name, warp, model, rule, met)


def figures(reenact: dict, model: str, stills: dict, warp_stills: dict) -> list[Figure]:
    """Every figure of the gate (issue 12, "How it is judged")."""
    rows = reenact.get("rows", {})
    for name in ("warp", model):
        if name not in rows:
            raise ReportProblem(f"reenact.json: no row {name!r} (rows: {', '.join(rows) or 'none'})")
    w, m = rows["warp"], rows[model]
    out = [
        check("mouth PSNR (dB)", w["mouth_psnr"], m["mouth_psnr"], f">= warp + {MOUTH_MARGIN_DB:g}",
               lambda a, b: a >= b + MOUTH_MARGIN_DB),
        check("eye PSNR (dB)", w["eye_psnr"], m["eye_psnr"], "> warp", lambda a, b: a > b),
        check("expression error", w["expression"], m["expression"], "< warp", lambda a, b: a < b),
    ]
    out += [check(f"{c} error (self-reenactment)", w[f"{c}_err"], m[f"{c}_err"], "< warp", lambda a, b: a < b)
            for c in READ_BACK]
    per_w, per_m = warp_stills["au"]["per_au"], stills["au"]["per_au"]
    out += [check(f"{c} MAE (stills)", per_w.get(c, {}).get("mae"), per_m.get(c, {}).get("mae"), "< warp",
                   lambda a, b: a < b) for c in READ_BACK]
    out.append(check("identity (self-reenactment)", w["identity"], m["identity"], "<= warp", lambda a, b: a <= b))
    out.append(check("identity (stills, median)", warp_stills["identity"].get("median_distance"),
                      stills["identity"].get("median_distance"), "<= warp", lambda a, b: a <= b))
    bg = stills["background"].get("changed_pixels")
    out.append(Figure("background changed px (stills)", 0, bg, "0", bg == 0))
    fl = stills["flicker"].get("flicker")
    out.append(Figure("excess flicker (grey levels)", None, fl, f"<= {FLICKER_MAX:g}",
                      fl is not None and fl <= FLICKER_MAX))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the candidate's row name in reenact.json")
    ap.add_argument("--reenact", type=Path, required=True, help="calib/reenact_models.py output folder")
    ap.add_argument("--stills", type=Path, required=True, help="rtanim eval output folder of the candidate")
    ap.add_argument("--warp-stills", type=Path, required=True, help="rtanim eval output folder of warp")
    a = ap.parse_args(argv)
    try:
        stills, warp_stills = read_report(a.stills / "report.json"), read_report(a.warp_stills / "report.json")
        rows = figures(read_report(a.reenact / "reenact.json"), a.model, stills, warp_stills)
        paired = compare(edits(stills, str(a.stills)), edits(warp_stills, str(a.warp_stills)))
    except (ReportProblem, KeyError) as e:
        print(f"error: {e if isinstance(e, ReportProblem) else f'report field missing: {e}'}", file=sys.stderr)
        return 2

    def fmt(x: float | None) -> str:
        if x is None or isinstance(x, int):
            return "n/a" if x is None else str(x)
        return f"{x:.4f}" if abs(x) < 1 else f"{x:.3f}"

    print(f"| figure | warp | {a.model} | needed | met |\n|---|---|---|---|---|")
    for f in rows:
        print(f"| {f.name} | {fmt(f.warp)} | {fmt(f.model)} | {f.needed} | {'yes' if f.met else '**no**'} |")
    lo, hi = paired.mean_excess_ci
    print(f"\nStills identity, paired: median difference {paired.median_difference:+.4f} "
          f"({paired.median_difference_ci[0]:+.4f} .. {paired.median_difference_ci[1]:+.4f}), mean excess "
          f"{paired.mean_excess:+.4f} ({lo:+.4f} .. {hi:+.4f}), 95 % over faces.")
    missed = [f.name for f in rows if not f.met]
    print("gate met" if not missed else f"gate not met: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
