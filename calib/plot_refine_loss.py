"""Draw a refine run's loss curves (RUN/metrics.jsonl, all sessions) for the lab notes (docs/lab/).

    python calib/plot_refine_loss.py runs/refine docs/lab/refine_loss.png [STEP=LABEL ...]

Each STEP=LABEL draws a vertical line where the recipe changed (a new data set, a new loss).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in m or not m.split("=", 1)[0].isdigit() for m in argv[2:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    run, out = Path(argv[0]), Path(argv[1])
    marks = [(int(m.split("=", 1)[0]), m.split("=", 1)[1]) for m in argv[2:]]
    path = run / "metrics.jsonl"
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    steps = [r["step"] for r in rows]
    for key, label in (("l1", "composite L1 (weighted)"), ("grad", "gradient L1"), ("color", "colour L1 (mouth, eyes)")):
        ax.plot(steps, [r[key] for r in rows], label=label)
    for step, label in marks:
        ax.axvline(step, color="grey", lw=0.8, ls="--")
        ax.text(step, ax.get_ylim()[1], f" {label}", rotation=90, va="top", ha="left", fontsize=7, color="dimgrey")
    ax.set_xlabel("training step (batch 16)")
    ax.set_ylabel("loss (EMA)")
    ax.set_title(f"refine training, to step {steps[-1]}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
