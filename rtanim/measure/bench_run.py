"""``rtanim bench --input``: end-to-end speed of the whole pipeline on a clip, offline and paced live.

Every stage a user pays for is run and timed: the clip is decoded for real (offline: every frame,
in order; live: decoded in real time on its own thread, newest frame only, like a camera), tracked,
re-expressed, composed and written to the real sinks (:mod:`rtanim.measure.bench_stages`). ``sinks="none"``
keeps the model-only bench: frames preloaded (decode not timed) and a null sink. :func:`bench_matrix`
runs several sizes and models, repeated and interleaved, and keeps the median of each figure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from rtanim import checks
from rtanim.checks import MAX_FACES, TRACK_EVERY
from rtanim.errors import InputError
from rtanim.io.source_base import Frame
from rtanim.io.source_file import VideoFileSource
from rtanim.io.source_live import LiveSource
from rtanim.measure.bench_stages import SINKS, BenchSinks, PacedDecodeSource, cpu_meter, prepare_clip
from rtanim.pipeline.graph import Pipeline, Stats
from rtanim.pipeline.jobs import describe_generator

#: Target AUs of ``bench --input`` (any change works; the warp model skips faces with none).
BENCH_AUS = "smile"
MODES = ("offline", "live")
#: Per-frame figures each mode reports, in table and chart order: decode, the pipeline's stages,
#: the sinks together (``sink``) and each sink on its own.
BENCH_STAGES = ("decode", "track", "generate", "compose", "sink", *SINKS)
#: Sinks each mode writes to with ``--sinks auto``: what ``rtanim video`` and ``rtanim webcam --vcam --out udp://`` pay.
AUTO_SINKS = {"offline": ("file",), "live": ("vcam", "udp")}


class MemorySource:
    """Preloaded frames as a file-like source: every frame, in order, stamped when handed out."""

    live = False

    def __init__(self, frames: Sequence[Frame], fps: float) -> None:
        self.frames, self.fps = list(frames), fps

    def __iter__(self) -> Iterator[Frame]:
        for f in self.frames:
            yield dataclasses.replace(f, wall=time.perf_counter())


class PacedMemorySource(LiveSource):
    """Preloaded frames published in real time like a camera (newest only; ``dropped`` counts the rest)."""

    def __init__(self, frames: Sequence[Frame], fps: float) -> None:
        super().__init__()
        self.frames, self.fps = list(frames), fps

    def _produce(self) -> None:
        t0 = time.perf_counter()
        for i, f in enumerate(self.frames):
            if not self._publish_at(t0 + i / self.fps, Frame(f.image, i / self.fps, i, 0.0)):
                return


@dataclass
class BenchResult:
    """One mode of one run: the pipeline's stats (with each sink's write times), CPU use and the sinks' flush."""

    mode: str
    stats: Stats
    cpu: dict[str, float] = field(default_factory=dict)
    close_ms: float = 0.0
    decode_timed: bool = True
    size: tuple[int, int] = (0, 0)
    fps: float = 0.0
    setup: str = ""
    notes: list[str] = field(default_factory=list)
    sink_threads: bool = True

    def summary(self) -> dict[str, Any]:
        """The figures of this mode. Offline fps counts the sinks' flush at the end; live fps is the delivered rate."""
        s = self.stats.summary()
        med = s["stage_median_ms"]
        stages = {"decode": med["capture"] if self.decode_timed else None,
                  **{k: med[k] for k in ("track", "generate", "compose", "sink")}}
        for name in SINKS:
            stages[name] = s["sink_median_ms"].get(name)
        wall = s["wall_s"] + (self.close_ms / 1e3 if self.mode == "offline" else 0.0)
        return {"frames": s["frames"], "fps": round(s["frames"] / wall, 2) if wall > 0 else None,
                "latency_ms": {"p50": s["latency_ms"]["p50"], "p95": s["latency_ms"]["p95"]},
                "dropped": s["dropped"], "drop_rate": s["drop_rate"], "sink_drops": s["sink_drops"],
                "stage_ms": stages, "cpu": dict(self.cpu),
                "sink_close_ms": round(self.close_ms, 1), "faces": s["faces"],
                "frames_without_face": s["frames_without_face"], "reused": s.get("reused")}


def load_frames(clip: str | Path, frames: int, size: tuple[int, int] | None) -> tuple[list[Frame], float]:
    """Decode (and resize) the first ``frames`` frames of ``clip`` into memory."""
    import cv2

    with VideoFileSource(clip, max_frames=frames) as source:
        fps = source.fps or 30.0
        out = []
        for f in source:
            image = f.image
            if size is not None and (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if size[0] < image.shape[1]
                                   else cv2.INTER_LINEAR)
            out.append(dataclasses.replace(f, image=image))
    if not out:
        raise InputError(clip, "has no frames", field="--input")
    return out, fps


def sink_names(sinks: str | Sequence[str], mode: str) -> tuple[str, ...]:
    """The sinks a mode writes to: ``auto`` (per mode, :data:`AUTO_SINKS`), ``none``, or the names given."""
    if isinstance(sinks, str):
        return AUTO_SINKS[mode] if sinks == "auto" else () if sinks == "none" else (sinks,)
    return tuple(sinks)


def _tracker(fps: float, track_every: int):  # noqa: ANN202 - FaceTracker pulls in MediaPipe
    from rtanim.face.tracking import FaceTracker

    return FaceTracker(MAX_FACES, mode="video", fps=fps, landmark_every=track_every)


def _run_mode(mode: str, source: Any, make_sinks: Callable[[], BenchSinks | None], fps: float, generator: Any, timeline: Any, faces: str, batch: int, track_every: int,
              decode_timed: bool) -> BenchResult:
    with _tracker(fps, track_every) as tracker:
        p = Pipeline(tracker, generator, timeline, "offline" if mode == "offline" else "live", faces, batch)
        if isinstance(source, PacedDecodeSource):
            source.on_decode = lambda ms: p.stats.add("capture", ms)
        sinks = make_sinks()
        with cpu_meter() as cpu:
            try:
                p.run(source, sinks if sinks is not None else lambda f, im: None)
            except BaseException:
                if sinks is not None:
                    sinks.discard()
                raise
            finally:
                if isinstance(source, LiveSource | VideoFileSource):
                    source.close()
            if sinks is not None:
                sinks.close()
    if sinks is None:
        return BenchResult(mode, p.stats, cpu, 0.0, decode_timed, sink_threads=p.sink_threads)
    return BenchResult(mode, p.stats, cpu, sinks.close_ms, decode_timed, notes=list(sinks.notes),
                       sink_threads=p.sink_threads)


def bench_pipeline(
    clip: str | Path,
    *,
    model: str = "warp",
    engine: str = "auto",
    device: str | None = None,
    frames: int = 120,
    size: str | None = None,
    fps: float | None = None,
    faces: str = "largest",
    batch: int = 8,
    track_every: int = TRACK_EVERY,
    sinks: str | Sequence[str] = "auto",
    modes: Sequence[str] = MODES,
    generator: Any = None,
    folder: Path | None = None,
    warm_up: bool = True,
    err_console: Console | None = None,
) -> tuple[list[BenchResult], str]:
    """End-to-end fps, latency, stage medians and CPU use of ``clip`` in offline and paced-live modes.

    With real sinks (``sinks`` ``auto`` or names from :data:`SINKS`) the clip is decoded for real, at
    ``size`` (transcoded once before timing when the clip has another size) and written to those
    sinks in a temporary folder (``folder``, else one made and removed here). ``sinks="none"``:
    frames preloaded into memory (decode not timed) and a null sink, which isolates the model.
    Each mode runs a fresh tracker, after a warm-up pass. Returns the results and a description.
    """
    from rtanim.expression.timeline import parse_aus_arg
    from rtanim.pipeline.generators import load_generator

    err_console = err_console or Console(stderr=True)
    checks.run_options(faces, None, track_every)
    if frames < 2:
        raise InputError("--frames", "must be >= 2")
    wh = checks.parse_size(size)
    generator = generator or load_generator(model, engine, device=device, batch=batch)
    timeline = parse_aus_arg(BENCH_AUS)
    preloaded = sinks == "none"
    with contextlib.ExitStack() as stack:
        tmp = folder or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtanim-bench-")))
        if preloaded:
            loaded, rate = load_frames(clip, frames, wh)
            if fps:
                rate = fps
            n, (w, h), path = len(loaded), loaded[0].image.shape[1::-1], Path(clip)
        else:
            path, (w, h), rate, n = prepare_clip(clip, frames, wh, fps, tmp)
        if warm_up:  # engine sessions, caches, threads
            warm = MemorySource(loaded[:10], rate) if preloaded else VideoFileSource(path, max_frames=min(n, 10))
            _run_mode("offline", warm, lambda: None, rate, generator, timeline, faces, batch, track_every, False)
        results = []
        for mode in modes:
            names = sink_names(sinks, mode)
            err_console.print(f"bench: {w}x{h} {model} {mode} over {n} frames"
                              f"{' into ' + '+'.join(names) if names else ''} ...", highlight=False)
            if preloaded:
                src: Any = MemorySource(loaded, rate) if mode == "offline" else PacedMemorySource(loaded, rate)
            else:
                src = VideoFileSource(path, max_frames=n) if mode == "offline" else PacedDecodeSource(path, rate, n)
            tb = getattr(src, "time_base", None) if mode == "offline" else None

            def make(names: Sequence[str] = names, tb: Any = tb, mode: str = mode) -> BenchSinks | None:
                return BenchSinks(names, tmp, path, (w, h), rate, tb, f"_{mode}") if names else None

            results.append(_run_mode(mode, src, make, rate, generator, timeline, faces, batch, track_every,
                                     not preloaded))
    how = ("frames preloaded (decode not timed), null sink (encode not timed)" if preloaded else
           "real decode (live: decoded in real time, newest frame only)"
           + (", of a copy transcoded to the size before timing" if path != Path(clip) else "")
           + "; sinks " + ", ".join(f"{m}: {'+'.join(sink_names(sinks, m))}" for m in modes))
    threads = ("each sink on its own thread" if all(r.sink_threads for r in results) else
               "sinks in turn on the compose thread (RTANIM_SINK_THREADS=0)")
    setup = "; ".join([how + ("" if preloaded else f" ({threads})"),
                       *dict.fromkeys(note for r in results for note in r.notes)])
    for r in results:
        r.size, r.fps, r.setup = (w, h), rate, setup
    desc = (f"{Path(clip).name} at {w}x{h}, {n} frames ({rate:.2f} fps), {describe_generator(generator)}, "
            f"landmarks every {track_every} frame(s); {setup}")
    return results, desc


def _median_tree(items: Sequence[Any]) -> Any:
    """The median of each numeric leaf across ``items`` (dicts of the same shape); None where all are None."""
    first = items[0]
    if isinstance(first, dict):
        return {k: _median_tree([it.get(k) for it in items]) for k in first}
    xs = [x for x in items if isinstance(x, int | float) and not isinstance(x, bool)]
    if not xs:
        return first if not isinstance(first, int | float) else None
    m = statistics.median(xs)
    return round(m, 3) if isinstance(m, float) else m


def bench_matrix(
    clip: str | Path,
    *,
    models: Sequence[str] = ("warp",),
    sizes: Sequence[str | None] = (None,),
    repeat: int = 1,
    engine: str = "auto",
    device: str | None = None,
    frames: int = 120,
    fps: float | None = None,
    faces: str = "largest",
    batch: int = 8,
    track_every: int = TRACK_EVERY,
    sinks: str | Sequence[str] = "auto",
    err_console: Console | None = None,
) -> dict[str, Any]:
    """Every size x model cell, ``repeat`` times, interleaved (a drift of the machine's speed spreads over
    every cell); each cell keeps the median of each figure over its repeats, and every run's figures.

    Returns a JSON-ready report: ``cells`` (size, model, ``offline`` / ``live`` medians, ``runs``),
    the stages, the settings and the machine.
    """
    from rtanim.pipeline.generators import load_generator

    if repeat < 1:
        raise InputError("--repeat", "must be >= 1")
    for s in sizes:
        checks.parse_size(s)
    generators = {m: load_generator(m, engine, device=device, batch=batch) for m in models}
    cells: dict[tuple, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rtanim-bench-") as tmp:
        for r in range(repeat):
            for size in sizes:
                for m in models:
                    results, desc = bench_pipeline(
                        clip, model=m, engine=engine, frames=frames, size=size, fps=fps, faces=faces, batch=batch,
                        track_every=track_every, sinks=sinks, generator=generators[m], folder=Path(tmp), warm_up=r == 0,
                        err_console=err_console)
                    w, h = results[0].size
                    cell = cells.setdefault((size, m), {
                        "size": f"{w}x{h}", "model": m, "fps": results[0].fps, "generator": describe_generator(generators[m]),
                        "setup": results[0].setup, "desc": desc, "runs": {k: [] for k in MODES}})
                    for res in results:
                        cell["runs"][res.mode].append(res.summary())
    out = []
    for cell in cells.values():
        runs = cell.pop("runs")
        cell.update({mode: _median_tree(runs[mode]) for mode in MODES if runs[mode]})
        out.append({**cell, "runs": runs})
    return {"clip": str(clip), "frames": frames, "repeat": repeat, "engine": engine, "faces": faces,
            "track_every": track_every, "sinks": sinks if isinstance(sinks, str) else list(sinks),
            "auto_sinks": {k: list(v) for k, v in AUTO_SINKS.items()}, "stages": list(BENCH_STAGES),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
            "cells": out}
