"""Figures: AU timeline curves (``rtanim timeline plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtanim.expression.aus import describe
from rtanim.expression.timeline import Timeline, sample
from rtanim.files import staged


def plot_timeline(timeline: Timeline, out: str | Path, duration: float | None = None) -> Path:
    """Draw every AU's curve over time, one row per AU, so a user sees a timeline before running it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times, curves = sample(timeline, duration)
    codes = list(curves)
    rows = max(1, len(codes))
    fig, axes = plt.subplots(rows, 1, figsize=(9, 0.9 * rows + 1.2), sharex=True, squeeze=False)
    for ax, code in zip(axes[:, 0], codes or [None], strict=True):
        if code is None:
            ax.text(0.5, 0.5, "every AU stays at 0", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        y = curves[code]
        if np.isnan(y).all():
            ax.axhspan(0, 1, color="0.85")
            ax.text(0.5, 0.5, "passthrough: follows the live face", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.plot(times, y, lw=1.6)
            ax.fill_between(times, 0, y, alpha=0.2)
        for kf in timeline.keyframes:
            ax.axvline(kf.t, color="0.7", lw=0.6, ls=":")
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([0, 1])
        ax.set_ylabel(code, rotation=0, ha="right", va="center", fontsize=9)
        ax.text(1.0, 0.5, " " + describe(code).split(":")[0], transform=ax.transAxes, fontsize=7, va="center")
    axes[-1, 0].set_xlabel("time (s)")
    title = (
        f"{Path(timeline.source).name}: {len(timeline.keyframes)} keyframes, loop={timeline.loop}, mode={timeline.mode}"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    with staged(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out
