"""``rtanim bench --input`` output: rich tables, the JSON report and the per-stage bar chart."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from rtanim.files import staged, write_text

#: Row labels of the stage figures (BENCH_STAGES of rtanim.measure.bench_run, which needs the heavy modules).
STAGE_LABELS = {"decode": "decode", "track": "track", "generate": "generate", "compose": "compose",
                "sink": "sinks (all)", "file": "  file (encode + audio)", "vcam": "  vcam (conversion)",
                "udp": "  udp (encode + send)"}
MODE_TITLES = {"offline": "offline (every frame)", "live": "live (paced, newest)"}
#: Bar colours of the chart, one per stage (the sinks' total is not drawn: its parts are).
COLOURS = {"decode": "#8c8c8c", "track": "#1f77b4", "generate": "#d62728", "compose": "#2ca02c",
           "file": "#9467bd", "vcam": "#ff7f0e", "udp": "#17becf"}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _pct(cpu: dict[str, Any]) -> str:
    one, every = cpu.get("one_core_pct"), cpu.get("all_cores_pct")
    return "-" if one is None else f"{one:.0f}% ({every:.0f}% of {cpu.get('cores', '?')})"


def _dropped(s: dict[str, Any]) -> str:
    """Frames dropped (and rate); the sinks' share by sink when a sink's queue dropped any (live)."""
    sinks = ", ".join(f"{k} {v:.0f}" for k, v in (s.get("sink_drops") or {}).items() if v)
    return f"{s['dropped']:.0f} ({100 * s['drop_rate']:.0f}%)" + (f", in sinks: {sinks}" if sinks else "")


def _rows(stages: list[str]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("frames", lambda s: str(s["frames"])),
        ("fps", lambda s: f"{s['fps'] or 0:.1f}"),
        ("added latency p50 ms", lambda s: _ms(s["latency_ms"]["p50"])),
        ("added latency p95 ms", lambda s: _ms(s["latency_ms"]["p95"])),
        ("dropped", _dropped),
        ("CPU: one core (all)", lambda s: _pct(s["cpu"])),
    ]
    rows += [(f"{STAGE_LABELS.get(st, st)} ms", lambda s, st=st: _ms(s["stage_ms"].get(st))) for st in stages]
    return rows


def bench_tables(report: dict[str, Any]) -> list[Table]:
    """One table per mode, one column per size x model cell (medians of the repeats), stage medians as rows."""
    cells = report["cells"]
    caption = "\n".join(caption_lines(report))
    tables = []
    modes = [m for m in ("offline", "live") if any(m in c for c in cells)]
    for mode in modes:
        used = [c for c in cells if mode in c]
        stages = [st for st in report["stages"] if any(c[mode]["stage_ms"].get(st) is not None for c in used)]
        table = Table(title=f"End-to-end pipeline, {MODE_TITLES[mode]}", title_justify="left",
                      caption=caption if mode == modes[-1] else None, caption_justify="left")
        table.add_column("")
        for c in used:
            table.add_column(f"{c['size']}\n{c['model']}", justify="right")
        for name, cell in _rows(stages):
            table.add_row(name, *[cell(c[mode]) for c in used])
        tables.append(table)
    return tables


def caption_lines(report: dict[str, Any]) -> list[str]:
    """What the figures are: clip, frames, rate, tracking, how frames come and go, the models, the repeats."""
    cells, reps = report["cells"], report["repeat"]
    first = cells[0]
    frames = first.get("offline", first.get("live", {})).get("frames")
    lines = [f"{Path(report['clip']).name}: {frames} frames at {first['fps']:.2f} fps, landmarks every "
             f"{report['track_every']} frame(s), " + (f"median of {reps} runs per cell" if reps > 1 else "one run")]
    lines += list(dict.fromkeys(c["setup"] for c in cells))
    lines += list(dict.fromkeys(f"{c['model']}: {c['generator']}" for c in cells))
    lines.append("stage figures: median ms per frame (stages overlap on threads; sinks (all): the slowest sink's "
                 "write when each sink has its thread, their sum when written in turn); CPU: the whole process, "
                 "% of one core (% of all cores)")
    return lines


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Every figure of the run (medians per cell and each run's own) as JSON, written atomically."""
    write_text(path, json.dumps(report, indent=1) + "\n")
    return Path(path)


def draw_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Per-stage median ms of every cell, one stacked bar per cell and mode, beside the frame budget.

    The stages run on separate threads, so a bar is the work of one frame, not its latency: throughput
    follows the longest single stage and the CPU it all needs (written at the bar's end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = report["cells"]
    modes = [m for m in ("offline", "live") if any(m in c for c in cells)]
    stages = [st for st in report["stages"] if st in COLOURS]
    fig, axes = plt.subplots(1, len(modes), figsize=(6.5 * len(modes), 1.6 + 0.7 * len(cells)), squeeze=False,
                             sharey=True)
    labels = [f"{c['size']}\n{c['model']}" for c in cells]
    fps_src = max((c.get("fps") or 0.0 for c in cells), default=0.0) or None
    for ax, mode in zip(axes[0], modes, strict=True):
        left = [0.0] * len(cells)
        for st in stages:
            widths = [(c.get(mode, {}).get("stage_ms", {}).get(st) or 0.0) for c in cells]
            if not any(widths):
                continue
            ax.barh(range(len(cells)), widths, left=left, color=COLOURS[st], label=st, height=0.6)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        for i, c in enumerate(cells):
            s = c.get(mode)
            if s is not None:
                ax.text(left[i], i, f"  {s['fps'] or 0:.1f} fps, CPU {s['cpu'].get('all_cores_pct', 0):.0f}%"
                                    f" of {s['cpu'].get('cores', '?')} cores", va="center", fontsize=8)
        if fps_src:
            ax.axvline(1e3 / fps_src, color="0.3", ls="--", lw=1, label=f"1 frame at {fps_src:.0f} fps")
        ax.set_xlim(0, max(left + [1e3 / fps_src if fps_src else 0]) * 1.45 + 1)
        ax.set_yticks(range(len(cells)), labels, fontsize=8)
        ax.set_xlabel("median ms per frame, by stage")
        ax.set_title(MODE_TITLES[mode], fontsize=10)
    axes[0, 0].invert_yaxis()  # first cell on top (the axes share y: invert once)
    reps = report["repeat"]
    fig.suptitle(f"rtanim bench: {Path(report['clip']).name}, {report['frames']} frames"
                 + (f", median of {reps} runs" if reps > 1 else ""), fontsize=10)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    order = [k for k in (*COLOURS, *handles) if k in handles]
    fig.legend([handles[k] for k in dict.fromkeys(order)], list(dict.fromkeys(order)), loc="lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    out = Path(path)
    with staged(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out

