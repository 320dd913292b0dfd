"""Soak test: the live pipeline for a long time on a looping 720p camera stand-in, into the real sinks.

Usage: python calib/soak.py [--minutes 30] [--clip PATH] [--size 1280x720] [--fps 30] [--model default]
                            [--aus smile] [--loop-frames N] [--every 60] [--json soak.json] [--limit-mb 50]

The clip (default: the shared 640x360 talking head) is transcoded once to ``--size`` at ``--fps``
(rtanim.measure.bench_stages.prepare_clip), then played in a loop in real time by a paced file source:
a real decode of a 720p stream, newest frame only, like a camera. The pipeline runs as ``rtanim
webcam`` runs it (live policy, the real tracker following every other frame, mouth AUs passed
through) into the sinks a user runs: an x264 file with the clip's audio (in a temporary folder,
removed at the end), an MPEG-TS stream to ``udp://127.0.0.1:PORT`` (a bound socket nobody reads)
and the virtual camera (with no device here, its frame conversion alone).

Every ``--every`` seconds (default a minute) it prints one line and rewrites ``--json``: that
interval's fps, drops, p50 / p95 latency (capture to sink done), stage medians, and the
process's resident memory (RSS). At the end: the run's totals and the memory growth after the
first interval (last and peak RSS minus the RSS at the end of the first interval), PASS when the
peak growth stays under ``--limit-mb`` (the issue's 50 MB). Exit code 0 on PASS, 1 on FAIL. Ctrl-C or
SIGTERM stops it early: the sinks finalise and the report covers what ran (exit code 130).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if not __package__:  # run as `python calib/NAME.py`: the checkout's root on sys.path (calib/bootstrap.py)
    import bootstrap  # noqa: F401

from rtanim.files import write_text
from rtanim.pipeline.stats import STAGES, Stats

CLIP = ROOT.parent / "shared" / "data" / "video" / "WolfgangLanger_Pexels.mp4"
LIMIT_MB = 50.0


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc; the peak from getrusage elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


class Monitor:
    """Samples the pipeline's stats every ``every`` seconds; asks the run to stop after ``seconds``."""

    def __init__(self, stats_of: Any, controls: Any, every: float, seconds: float, report: Any) -> None:
        self.stats_of, self.controls, self.every, self.seconds, self.report = stats_of, controls, every, seconds, report
        self.samples: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._mark = {"frames": 0, "dropped": 0, "stages": {s: 0 for s in STAGES}, "t": self.started}
        self._thread = threading.Thread(target=self._run, name="soak-monitor", daemon=True)

    def start(self) -> None:
        self.started = self._mark["t"] = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        end = self.started + self.seconds
        while not self._stop.is_set():
            now = time.perf_counter()
            next_at = min(end, self.started + self.every * (len(self.samples) + 1))
            if self._stop.wait(max(0.0, next_at - now)):
                return
            self.sample()
            if time.perf_counter() >= end - 1e-3:
                self.controls.quit = True  # the run stops after its next frame
                return

    def sample(self) -> dict[str, Any]:
        stats: Stats = self.stats_of()
        now = time.perf_counter()
        m = self._mark
        dropped = stats.dropped
        lat = stats.series("latency", m["frames"])  # one latency per delivered frame
        frames = m["frames"] + lat.size
        stage = {}
        for s in STAGES:
            chunk = stats.series(s, m["stages"][s])
            stage[s] = round(float(np.median(chunk)), 2) if chunk.size else None
            m["stages"][s] += chunk.size
        df, dd, dt = frames - m["frames"], dropped - m["dropped"], now - m["t"]
        sample = {
            "interval": len(self.samples) + 1,
            "t_s": round(now - self.started, 1),
            "frames": df,
            "fps": round(df / dt, 2) if dt > 0 else None,
            "dropped": dd,
            "drop_rate": round(dd / max(1, df + dd), 4),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
            "stage_median_ms": stage,
            "reused": stats.reused,
            "rss_mb": rss_mb(),
        }
        m.update(frames=frames, dropped=dropped, t=now)
        self.samples.append(sample)
        self.report(sample)
        return sample

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def memory_verdict(samples: list[dict[str, Any]], limit_mb: float) -> dict[str, Any]:
    """Growth after the first interval: last and peak RSS minus the first interval's, and PASS / FAIL."""
    if len(samples) < 2:
        return {"rss_first_interval_mb": samples[0]["rss_mb"] if samples else None, "rss_growth_mb": None,
                "rss_peak_growth_mb": None, "limit_mb": limit_mb, "pass": None}
    base = samples[0]["rss_mb"]
    later = [s["rss_mb"] for s in samples[1:]]
    peak = round(max(later) - base, 1)
    return {"rss_first_interval_mb": base, "rss_end_mb": later[-1], "rss_growth_mb": round(later[-1] - base, 1),
            "rss_peak_growth_mb": peak, "limit_mb": limit_mb, "pass": peak < limit_mb}


def main(argv: list[str] | None = None) -> int:
    from rtanim.pipeline.malloc_arenas import limit_arenas

    limit_arenas()  # as the rtanim entry point does, before the pipeline's threads exist
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    ap.add_argument("--clip", type=Path, default=CLIP, help="the clip to loop (default: the shared talking head)")
    ap.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    ap.add_argument("--fps", type=float, default=30.0, help="the camera's frame rate (default 30)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--aus", default="smile", help="target AUs (mouth AUs pass through, as in rtanim webcam)")
    ap.add_argument("--loop-frames", type=int, default=10**6, help="loop only the clip's first N frames")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between reports (default 60)")
    ap.add_argument("--json", type=Path, default=Path("soak.json"), help="report file, rewritten every interval")
    ap.add_argument("--limit-mb", type=float, default=LIMIT_MB, help="largest memory growth that passes (MB)")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.every <= 0 or args.loop_frames < 2:
        ap.error("--minutes and --every must be > 0, --loop-frames >= 2")
    if not args.clip.is_file():
        print(f"soak: no clip at {args.clip} (pass --clip)", file=sys.stderr)
        return 2

    from rtanim.checks import MAX_FACES, TRACK_EVERY, parse_size
    from rtanim.commands.video import sigterm_as_interrupt, webcam_passthrough
    from rtanim.expression.timeline import parse_aus_arg
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.sink_file import VideoFileSink
    from rtanim.io.sink_multi import MultiSink
    from rtanim.io.sink_stream import NetworkSink
    from rtanim.io.source_live import PacedFileSource
    from rtanim.measure.bench_stages import open_vcam, prepare_clip
    from rtanim.pipeline.generators import load_generator
    from rtanim.pipeline.graph import Pipeline
    from rtanim.pipeline.jobs import describe_generator

    size = parse_size(args.size)
    report: dict[str, Any] = {"config": {}, "samples": [], "result": None}

    def write_report() -> None:
        write_text(args.json, json.dumps(report, indent=2) + "\n")

    def on_sample(s: dict[str, Any]) -> None:
        report["samples"] = monitor.samples
        lat = "-" if s["latency_p95_ms"] is None else f"{s['latency_p95_ms']:.0f}"
        print(f"[{s['t_s']:7.1f} s] {s['fps'] or 0:5.1f} fps  dropped {s['dropped']:4d} ({100 * s['drop_rate']:.1f}%)  "
              f"p95 {lat} ms  rss {s['rss_mb']:.1f} MB", flush=True)
        write_report()

    with tempfile.TemporaryDirectory(prefix="rtanim-soak-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        clip, size, rate, n = prepare_clip(args.clip, args.loop_frames, size, args.fps, folder)
        receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.bind(("127.0.0.1", 0))  # bound and never read: the kernel drops what overflows, no ICMP errors
        port = receiver.getsockname()[1]
        out_file = folder / "soak.mp4"
        source = stack.enter_context(PacedFileSource(clip, loop=True))
        file_sink = stack.enter_context(VideoFileSink(out_file, size, rate, time_base=source.time_base,
                                                      audio_from=clip))
        udp = stack.enter_context(NetworkSink(f"udp://127.0.0.1:{port}", size, rate))
        vcam, vcam_note = open_vcam(size, rate)
        stack.callback(vcam.close)
        sinks = MultiSink([file_sink, udp, vcam])
        generator = load_generator(args.model)
        timeline = webcam_passthrough(parse_aus_arg(args.aus), None)
        tracker = stack.enter_context(FaceTracker(MAX_FACES, mode="video", fps=rate, landmark_every=TRACK_EVERY))
        pipeline = Pipeline(tracker, generator, timeline, policy="live", faces="largest")
        monitor = Monitor(lambda: pipeline.stats, pipeline.controls, args.every, args.minutes * 60.0, on_sample)
        report["config"] = {
            "clip": str(args.clip), "size": list(size), "fps": rate, "loop_frames": n,
            "minutes": args.minutes, "every_s": args.every, "model": describe_generator(generator),
            "sinks": [f"file {out_file.name} (x264 crf 18, audio copied)", f"udp://127.0.0.1:{port} (MPEG-TS)",
                      vcam_note],
            "rss_start_mb": rss_mb(),
        }
        write_report()
        print(f"soak: {args.minutes:g} min of {args.clip.name} at {size[0]}x{size[1]} {rate:g} fps, looping; "
              f"{report['config']['model']}; sinks: {'; '.join(report['config']['sinks'])}", flush=True)
        monitor.start()
        interrupted = False
        try:
            with sigterm_as_interrupt():
                stats = pipeline.run(source, sinks)  # each sink on its own thread
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the pipeline has stopped; report what ran
            interrupted, stats = True, pipeline.stats
        finally:
            monitor.stop()
        file_sink.close()
        written = file_sink.frames
        file_bytes = out_file.stat().st_size if out_file.exists() else None
    s = stats.summary()
    verdict = memory_verdict(monitor.samples, args.limit_mb)
    report["samples"] = monitor.samples
    report["result"] = {
        "frames": s["frames"], "dropped": s["dropped"], "drop_rate": s["drop_rate"], "sink_dropped": s["sink_dropped"],
        "sink_drops": s["sink_drops"], "fps": s["fps"],
        "latency_ms": s["latency_ms"], "stage_median_ms": s["stage_median_ms"], "reused": s["reused"],
        "generated": s["generated"], "queue_peak": s["queue_peak"], "file_frames": written,
        "file_mb": None if file_bytes is None else round(file_bytes / 1e6, 1), "interrupted": interrupted, **verdict,
    }
    write_report()
    r = report["result"]
    growth = "-" if r["rss_peak_growth_mb"] is None else f"{r['rss_growth_mb']:+.1f} MB (peak {r['rss_peak_growth_mb']:+.1f})"
    verdict_word = {True: "PASS", False: "FAIL", None: "n/a (needs 2 intervals)"}[r["pass"]]
    early = f" (interrupted after {time.perf_counter() - monitor.started:.0f} s)" if interrupted else ""
    print(f"soak{early}: {s['frames']} frames, {s['fps'] or 0:.1f} fps, dropped {s['dropped']} ({100 * s['drop_rate']:.1f}%), "
          f"p95 {s['latency_ms']['p95']} ms; memory after the first interval {growth}, limit {args.limit_mb:g} MB: "
          f"{verdict_word}; report {args.json}", flush=True)
    return 130 if interrupted else 0 if r["pass"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
