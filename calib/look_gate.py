"""Issue 32's gate for a candidate default, on the self-reenactment report: what a person sees.

    python calib/look_gate.py CANDIDATE --reenact REENACT_DIR [--default default]

``REENACT_DIR`` is one ``calib/reenact_models.py`` run holding rows ``warp``, today's default
(``--default``, the shipped file) and ``CANDIDATE``. Prints one row per figure (the look figures
of :mod:`rtanim.measure.look` and :mod:`rtanim.measure.critic`, and the self-reenactment
guardrails) and exits 0 when every figure is met, 1 when one is not, 2 on a report it cannot read.
The stills guardrails (identity on photos, background, flicker, mouth stability) come from
``rtanim eval`` and ``calib/gate_check.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from calib.gate_check import Figure, check
from calib.identity_paired import ReportProblem, read_report

SHARPNESS_OVER_DEFAULT = 2.5  # mouth sharpness at least this times today's default's
TEETH_FACTOR = 2.0  # teeth share within this factor of the real targets'
BLINK_OF_REAL = 0.8  # blink read-back on closed-eye targets, at least this share of the real targets'
SCLERA_OF_WARP = 0.5  # sclera left in the eye openings, at most this share of warp's
CRITIC_DROP = 0.1  # held-out critic AUC at least this much below today's default's


def figures(reenact: dict, model: str, default: str) -> list[Figure]:
    rows = reenact.get("rows", {})
    for name in ("warp", default, model):
        if name not in rows:
            raise ReportProblem(f"reenact.json: no row {name!r} (rows: {', '.join(rows) or 'none'})")
    w, d, m = rows["warp"], rows[default], rows[model]
    real_teeth = m.get("teeth_real")
    out = [
        check("mouth sharpness (x real)", d["mouth_sharpness"], m["mouth_sharpness"],
               f">= {SHARPNESS_OVER_DEFAULT:g} x {default}, > warp",
               lambda a, b: a >= SHARPNESS_OVER_DEFAULT * b and a > (w["mouth_sharpness"] or 0.0)),
        Figure("teeth share", real_teeth, m.get("teeth_out"), f"within {TEETH_FACTOR:g}x of real",
               real_teeth is not None and m.get("teeth_out") is not None
               and real_teeth / TEETH_FACTOR <= m["teeth_out"] <= real_teeth * TEETH_FACTOR),
        Figure("blink read-back (x real)", None, m.get("blink_ratio"), f">= {BLINK_OF_REAL:g}",
               m.get("blink_ratio") is not None and m["blink_ratio"] >= BLINK_OF_REAL),
        check("sclera share (closed eyes)", w.get("sclera_out"), m.get("sclera_out"), f"<= {SCLERA_OF_WARP:g} x warp",
               lambda a, b: a <= SCLERA_OF_WARP * b),
    ]
    for part in ("mouth", "eyes"):
        key = f"critic_{part}_auc"
        out.append(check(f"critic AUC, {part}", d.get(key), m.get(key), f"<= {default} - {CRITIC_DROP:g}",
                          lambda a, b: a <= b - CRITIC_DROP))
    out += [
        check("mouth PSNR (dB)", w["mouth_psnr"], m["mouth_psnr"], ">= warp", lambda a, b: a >= b),
        check("eye PSNR (dB)", w["eye_psnr"], m["eye_psnr"], ">= warp", lambda a, b: a >= b),
        check("expression error", w["expression"], m["expression"], "<= warp", lambda a, b: a <= b),
    ]
    out += [check(f"{c} error", w[f"{c}_err"], m[f"{c}_err"], "<= warp", lambda a, b: a <= b)
            for c in ("AU25", "AU26", "AU45")]
    out.append(check("identity (self-reenactment)", w["identity"], m["identity"], "<= warp", lambda a, b: a <= b))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the candidate's row name in reenact.json")
    ap.add_argument("--reenact", type=Path, required=True, help="calib/reenact_models.py output folder")
    ap.add_argument("--default", default="default", help="the row of today's default (the shipped file)")
    a = ap.parse_args(argv)
    try:
        rows = figures(read_report(a.reenact / "reenact.json"), a.model, a.default)
    except (ReportProblem, KeyError) as e:
        print(f"error: {e if isinstance(e, ReportProblem) else f'report field missing: {e}'}", file=sys.stderr)
        return 2

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    print(f"| figure | reference | {a.model} | needed | met |\n|---|---|---|---|---|")
    for f in rows:
        print(f"| {f.name} | {fmt(f.warp)} | {fmt(f.model)} | {f.needed} | {'yes' if f.met else '**no**'} |")
    missed = [f.name for f in rows if not f.met]
    print("gate met" if not missed else f"gate not met: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
