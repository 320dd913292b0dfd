"""Side-by-side markdown table of ``rtanim eval`` reports against the default models' targets (issue 7).

    python calib/eval_table.py warp=REPORT_DIR lite+flow=REPORT_DIR ...

Each column is one report (``report.json`` in the folder); a cell is bold where it meets the
target. What MODELS.md shows, and what decides whether new weights ship: they must beat the
shipped ones (or ``warp``) on these rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TARGET_AUS = ("AU12", "AU26", "AU25", "AU45", "AU01", "AU02", "AU04")
MAE_MAX, RHO_MIN, IDENTITY_MAX, FLICKER_MAX = 0.15, 0.9, 0.35, 1.0


def rows(report: dict) -> dict[str, tuple[float | None, bool]]:
    """Metric -> (value, meets the target)."""
    out: dict[str, tuple[float | None, bool]] = {}
    per_au = report["au"]["per_au"]
    for code in TARGET_AUS:
        if code in per_au:
            mae, rho = per_au[code]["mae"], per_au[code]["spearman"]
            out[f"{code} MAE"] = (mae, mae is not None and mae <= MAE_MAX)
            out[f"{code} Spearman"] = (rho, rho is not None and rho >= RHO_MIN)
    ident = report["identity"].get("median_distance")
    out["identity (median dlib distance)"] = (ident, ident is not None and ident <= IDENTITY_MAX)
    bg = report["background"].get("changed_pixels")
    out["background (changed px)"] = (bg, bg == 0)
    fl = report["flicker"].get("flicker")
    out["excess flicker (grey levels)"] = (fl, fl is not None and fl <= FLICKER_MAX)
    return out


def table(reports: dict[str, dict]) -> str:
    cols = {name: rows(r) for name, r in reports.items()}
    metrics = list(dict.fromkeys(m for c in cols.values() for m in c))
    targets = {"MAE": f"<= {MAE_MAX}", "Spearman": f">= {RHO_MIN}", "identity": f"<= {IDENTITY_MAX}",
               "background": "0", "excess": f"<= {FLICKER_MAX:g}"}
    head = "| metric | target | " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for m in metrics:
        target = next(v for k, v in targets.items() if k in m)
        cells = []
        for c in cols.values():
            value, ok = c.get(m, (None, False))
            text = "n/a" if value is None else f"{value:g}" if isinstance(value, int) else f"{value:.3f}"
            cells.append(f"**{text}**" if ok else text)
        lines.append(f"| {m} | {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    reports = {}
    for arg in argv:
        name, sep, folder = arg.partition("=")
        path = Path(folder if sep else name) / "report.json"
        if not path.is_file():
            print(f"error: {path}: no such report (run rtanim eval -o FOLDER)", file=sys.stderr)
            return 2
        reports[name] = json.loads(path.read_text())
    if not reports:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
