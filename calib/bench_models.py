"""End-to-end pipeline speed of several models in one run, interleaved, as medians of repeats.

    python calib/bench_models.py CLIP MODEL [MODEL ...] [--repeats 3] [--frames 150] [--size WxH] [--json OUT]

The first model is the baseline: each figure is also given as a ratio to it, run by run (so a
drift of the machine's speed cancels). Frames are preloaded and the sink is null, as in
``rtanim bench --input --sinks none``: the figures are track -> generate -> compose (``rtanim bench
--input`` with its default sinks times decode and the real sinks too).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console

if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clip")
    p.add_argument("models", nargs="+")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--size", default=None)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    from rtanim.errors import InputError
    from rtanim.measure.bench_run import bench_pipeline

    quiet = Console(stderr=True, quiet=True)
    runs: dict[str, list[dict]] = {m: [] for m in a.models}
    try:
        for r in range(a.repeats):
            for m in a.models:
                results, desc = bench_pipeline(a.clip, model=m, frames=a.frames, size=a.size, sinks="none",
                                               err_console=quiet)
                s = {res.mode: res.stats.summary() for res in results}
                runs[m].append({"offline_fps": s["offline"]["fps"], "live_fps": s["live"]["fps"],
                                "live_p95_ms": s["live"]["latency_ms"]["p95"], "live_drop_rate": s["live"]["drop_rate"],
                                "generate_ms": s["offline"]["stage_median_ms"].get("generate"),
                                "track_ms": s["offline"]["stage_median_ms"].get("track"),
                                "compose_ms": s["offline"]["stage_median_ms"].get("compose"), "desc": desc})
                print(f"run {r + 1}/{a.repeats} {m}: {runs[m][-1]['offline_fps']} fps offline", file=sys.stderr)
    except InputError as e:
        print(f"error: {e.line()}", file=sys.stderr)
        return 2
    base = a.models[0]
    keys = ("offline_fps", "live_fps", "live_p95_ms", "live_drop_rate", "generate_ms", "track_ms", "compose_ms")
    table = {}
    for m in a.models:
        row = {k: statistics.median(x[k] for x in runs[m] if x[k] is not None) for k in keys}
        row["offline_fps_ratio_to_" + base] = round(statistics.median(
            x["offline_fps"] / b["offline_fps"] for x, b in zip(runs[m], runs[base], strict=True)), 3)
        row["desc"] = runs[m][0]["desc"]
        table[m] = row
    print(f"| model | offline fps | live fps | live p95 ms | live drops | generate ms | track ms | compose ms | "
          f"offline fps / {base} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, row in table.items():
        print(f"| {m} | {row['offline_fps']:.1f} | {row['live_fps']:.1f} | {row['live_p95_ms']:.0f} | "
              f"{100 * row['live_drop_rate']:.0f}% | {row['generate_ms']:.1f} | {row['track_ms']:.1f} | "
              f"{row['compose_ms']:.1f} | {row['offline_fps_ratio_to_' + base]:.2f} |")
    if a.json is not None:
        a.json.write_text(json.dumps({"clip": a.clip, "repeats": a.repeats, "medians": table, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
