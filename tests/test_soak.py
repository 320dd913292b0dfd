"""calib/soak.py, briefly: a 12-second soak into the real sinks; checks the report's structure, not its timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_soak_smoke(shared_data, tmp_path):
    out = tmp_path / "soak.json"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "calib" / "soak.py"), "--minutes", "0.2", "--every", "4", "--size", "320x180",
         "--loop-frames", "40", "--model", "warp", "--clip", str(shared_data / "video" / "WolfgangLanger_Pexels.mp4"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["result"] is not None, proc.stderr[-3000:]  # the run finished (no traceback on the way)
    cfg = report["config"]
    assert cfg["size"] == [320, 180] and cfg["fps"] == 30 and cfg["loop_frames"] == 40 and cfg["rss_start_mb"] > 0
    assert len(cfg["sinks"]) == 3 and cfg["sinks"][1].startswith("udp://127.0.0.1:")
    samples = report["samples"]
    assert len(samples) == 3  # every 4 s of 12
    for i, s in enumerate(samples, 1):
        assert s["interval"] == i and s["rss_mb"] > 0 and s["frames"] >= 0 and s["dropped"] >= 0
        assert {"fps", "drop_rate", "latency_p50_ms", "latency_p95_ms", "stage_median_ms", "reused"} <= set(s)
    r = report["result"]
    # every delivered frame reached the file, and so did those only another sink's queue dropped
    assert r["frames"] > 0 and r["file_frames"] == r["frames"] + r["sink_dropped"] - r["sink_drops"].get("file", 0)
    assert r["frames"] >= sum(s["frames"] for s in samples)
    assert r["dropped"] >= sum(s["dropped"] for s in samples)
    assert all(v <= 1 for v in r["queue_peak"].values())
    assert r["rss_growth_mb"] == round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 1)
    assert r["limit_mb"] == 50 and r["pass"] is (r["rss_peak_growth_mb"] < 50)
    assert proc.returncode == (0 if r["pass"] else 1)
    assert ("PASS" if r["pass"] else "FAIL") in proc.stdout
    assert not list(tmp.iterdir())  # the temporary folder (transcoded clip, output file) is gone


def test_soak_stopped_early_reports_what_ran(shared_data, tmp_path):
    """SIGTERM (or Ctrl-C) mid-soak: no traceback, the report and its verdict for the intervals done, exit 130."""
    import signal

    out = tmp_path / "soak.json"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "calib" / "soak.py"), "--minutes", "5", "--every", "2", "--size", "320x180",
         "--loop-frames", "40", "--model", "warp", "--clip", str(shared_data / "video" / "WolfgangLanger_Pexels.mp4"),
         "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )
    try:
        seen = 0
        for line in proc.stdout:
            seen += line.startswith("[")
            if seen == 2:
                break
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "interrupted after" in stdout
    r = json.loads(out.read_text())["result"]
    assert r["interrupted"] is True and r["frames"] > 0 and r["pass"] is not None
