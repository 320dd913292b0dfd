"""How fast bad input is rejected: each case as a whole process, against ``rtanim --version``.

    python calib/bench_reject.py [--repeats 7] [--json OUT]

Bad input must fail in well under a second (exit 2, one line), before any heavy module
(torch, MediaPipe, ONNX Runtime, OpenCV) loads. Every case runs interleaved with the baseline,
run by run, so a drift of the machine's speed cancels in the ratio; figures are medians.
A case that does not exit with 2 is reported as such (its time means nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "rtanim" / "assets" / "astronaut.jpg"


def cases(tmp: Path) -> dict[str, list[str]]:
    """name -> arguments of ``rtanim``: each one bad input with the reason in the name."""
    bad = tmp / "bad.json"
    bad.write_text('{"keyframes": [{"t": 0, "aus": {"AU13": 1}}]}')
    (tmp / "in.mp4").write_bytes(b"only its name is read before the cheap checks fail")
    return {
        "image: missing input": ["image", str(tmp / "missing.jpg"), "--aus", "smile", "-o", str(tmp / "a.png")],
        "image: unknown AU": ["image", str(FACE), "--aus", "AU13=1", "-o", str(tmp / "a.png")],
        "image: unwritable -o": ["image", str(FACE), "--aus", "smile", "-o", "/proc/rtanim.png"],
        "video: no --aus/--timeline": ["video", str(tmp / "in.mp4"), "-o", str(tmp / "out.mp4")],
        "video: missing input": ["video", str(tmp / "missing.mp4"), "-o", str(tmp / "out.mp4"), "--aus", "smile"],
        "timeline check: bad AU": ["timeline", "check", str(bad)],
        "analyze: output not .csv": ["analyze", str(tmp / "in.mp4"), "-o", str(tmp / "aus.txt")],
        "export: unknown format": ["export", "--format", "xyz", "-o", str(tmp / "g.onnx")],
        "eval: unwritable -o": ["eval", "--model", "warp", "--data", str(tmp), "-o", "/proc/rtanim-report"],
        "demo: -o is a file": ["demo", "-o", str(bad)],
        "train: missing --data": ["train", "--data", str(tmp / "none"), "-o", str(tmp / "run")],
        "prepare: unwritable -o": ["prepare", str(tmp), "-o", "/proc/rtanim-data"],
    }


def rtanim_command() -> list[str]:
    script = Path(sys.executable).with_name("rtanim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def once(args: list[str]) -> tuple[float, int, str]:
    t = time.perf_counter()
    p = subprocess.run(rtanim_command() + args, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    return time.perf_counter() - t, p.returncode, (p.stderr or p.stdout).strip().splitlines()[-1:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        todo = cases(Path(d))
        once(["--version"])  # warm the file cache
        base: list[float] = []
        runs: dict[str, list[float]] = {k: [] for k in todo}
        codes: dict[str, tuple[int, str]] = {}
        for _ in range(a.repeats):
            base.append(once(["--version"])[0])
            for name, args in todo.items():
                dt, rc, line = once(args)
                runs[name].append(dt)
                codes[name] = (rc, line[0] if line else "")
    b = statistics.median(base)
    print(f"| case | exit | median s | / --version | message |\n|---|---|---|---|---|\n"
          f"| rtanim --version | 0 | {b:.3f} | 1.00 | |")
    table = {"--version": b}
    for name, ts in runs.items():
        ratio = statistics.median(t / v for t, v in zip(ts, base, strict=True))
        rc, line = codes[name]
        table[name] = statistics.median(ts)
        print(f"| {name} | {rc}{'' if rc == 2 else ' (expected 2)'} | {table[name]:.3f} | {ratio:.2f} | {line} |")
    if a.json is not None:
        a.json.write_text(json.dumps({"repeats": a.repeats, "median_s": table, "exit": codes}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
