"""Stills identity, one model against another, edit by edit (issue 12's "no worse than `warp`").

    python calib/identity_paired.py CANDIDATE_DIR BASELINE_DIR [--reps 2000]

Both folders hold an ``rtanim eval`` report of the same faces and commands (``report.json`` with
``identity.per_edit``). The medians alone differ by about 0.001 between checkpoints of one recipe
(MODELS.md, session 9), which is the size of the gap being judged; pairing each output with the
baseline's output of the same face, AU and level shows whether a difference is systematic. The
intervals resample whole faces (a face's 68 edits move together), 95 %, percentile bootstrap.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Key = tuple[int, str, float]


class ReportProblem(ValueError):
    """A report that cannot be paired: one line, naming the file and the reason."""


def edits(report: dict, where: str = "report") -> dict[Key, float]:
    """(face, AU, level) -> dlib distance of one output to its input."""
    ident = report.get("identity", {})
    rows = ident.get("per_edit")
    if not rows:
        raise ReportProblem(f"{where}: identity.per_edit missing ({ident.get('status', 'no identity section')}; "
                            "re-run rtanim eval with this version and the eval extra)")
    return {(int(r["face"]), str(r["au"]), float(r["level"])): float(r["distance"]) for r in rows}


@dataclass
class PairedIdentity:
    n: int
    faces: int
    median: float
    baseline_median: float
    median_difference: float
    median_difference_ci: tuple[float, float]
    mean_excess: float
    mean_excess_ci: tuple[float, float]
    share_worse: float  # of the edits where the two differ
    by_au_level: dict[str, dict[str, float]] = field(default_factory=dict)  # AU -> level -> mean excess


def compare(candidate: dict[Key, float], baseline: dict[Key, float], reps: int = 2000,
            seed: int = 0) -> PairedIdentity:
    """Paired statistics of ``candidate`` - ``baseline`` over the edits both hold."""
    if set(candidate) != set(baseline):
        only = len(set(candidate) ^ set(baseline))
        raise ReportProblem(f"the reports hold different edits ({only} not in both): same --data, --faces and --aus?")
    keys = sorted(baseline)
    c = np.array([candidate[k] for k in keys])
    b = np.array([baseline[k] for k in keys])
    face = np.array([k[0] for k in keys])
    ids = np.unique(face)
    rows = [np.flatnonzero(face == f) for f in ids]
    rng = np.random.default_rng(seed)
    med, mean = np.empty(reps), np.empty(reps)
    for i in range(reps):
        pick = np.concatenate([rows[j] for j in rng.integers(0, len(ids), len(ids))])
        med[i] = np.median(c[pick]) - np.median(b[pick])
        mean[i] = (c[pick] - b[pick]).mean()
    differ = c != b
    by: dict[str, dict[str, list[float]]] = {}
    for k, d in zip(keys, c - b, strict=True):
        by.setdefault(k[1], {}).setdefault(f"{k[2]:g}", []).append(float(d))
    by_mean = {au: {lv: round(float(np.mean(v)), 4) for lv, v in levels.items()} for au, levels in by.items()}
    return PairedIdentity(
        n=len(keys), faces=len(ids), median=float(np.median(c)), baseline_median=float(np.median(b)),
        median_difference=float(np.median(c) - np.median(b)),
        median_difference_ci=(float(np.percentile(med, 2.5)), float(np.percentile(med, 97.5))),
        mean_excess=float((c - b).mean()),
        mean_excess_ci=(float(np.percentile(mean, 2.5)), float(np.percentile(mean, 97.5))),
        share_worse=float((c[differ] > b[differ]).mean()) if differ.any() else 0.0, by_au_level=by_mean)


def markdown(p: PairedIdentity, names: tuple[str, str] = ("candidate", "baseline")) -> str:
    lo, hi = p.median_difference_ci
    mlo, mhi = p.mean_excess_ci
    lines = [f"{p.n} edits of {p.faces} faces. Median dlib distance: {names[0]} {p.median:.4f}, "
             f"{names[1]} {p.baseline_median:.4f}; difference {p.median_difference:+.4f} "
             f"(95 % over faces {lo:+.4f} .. {hi:+.4f}). Mean paired excess {p.mean_excess:+.4f} "
             f"({mlo:+.4f} .. {mhi:+.4f}); where the outputs differ, {names[0]} is further from the input "
             f"in {100 * p.share_worse:.0f} % of edits.", ""]
    levels = sorted({lv for v in p.by_au_level.values() for lv in v}, key=float)
    lines += ["| AU | " + " | ".join(f"excess at {lv}" for lv in levels) + " |", "|---" * (len(levels) + 1) + "|"]
    for au, v in p.by_au_level.items():
        lines.append(f"| {au} | " + " | ".join(f"{v.get(lv, float('nan')):+.4f}" for lv in levels) + " |")
    return "\n".join(lines)


def read_report(path: Path) -> dict:
    """A JSON report, or a :class:`ReportProblem` naming the file."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ReportProblem(f"{path}: cannot read ({e.__class__.__name__})") from None


def load(folder: str) -> dict[Key, float]:
    path = Path(folder) / "report.json"
    return edits(read_report(path), str(path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("candidate", help="rtanim eval output folder of the model judged")
    ap.add_argument("baseline", help="the same eval of the baseline (warp)")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap resamples")
    a = ap.parse_args(argv)
    try:
        p = compare(load(a.candidate), load(a.baseline), a.reps)
    except ReportProblem as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(p, (Path(a.candidate).name, Path(a.baseline).name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
