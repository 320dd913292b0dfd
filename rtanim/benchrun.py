"""``rtanim bench --input``: end-to-end speed of the whole pipeline on a clip, offline and paced live."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rtanim.errors import InputError
from rtanim.pipeline import STAGES, Pipeline, Stats
from rtanim.runs import MAX_FACES, _describe, _ms, check_faces, parse_size
from rtanim.sources import Frame, VideoFileSource, _LiveSource

#: Target AUs of ``bench --input`` (any change works; the warp model skips faces with none).
BENCH_AUS = "smile"


class MemorySource:
    """Preloaded frames as a file-like source: every frame, in order, stamped when handed out."""

    live = False

    def __init__(self, frames: Sequence[Frame], fps: float) -> None:
        self.frames, self.fps = list(frames), fps

    def __iter__(self) -> Iterator[Frame]:
        for f in self.frames:
            yield dataclasses.replace(f, wall=time.perf_counter())


class PacedMemorySource(_LiveSource):
    """Preloaded frames published in real time like a camera (newest only; ``dropped`` counts the rest)."""

    def __init__(self, frames: Sequence[Frame], fps: float) -> None:
        super().__init__()
        self.frames, self.fps = list(frames), fps

    def _produce(self) -> None:
        t0 = time.perf_counter()
        for i, f in enumerate(self.frames):
            due = t0 + i / self.fps
            while not self._stop.is_set() and (wait := due - time.perf_counter()) > 0:
                self._stop.wait(min(wait, 0.05))
            if self._stop.is_set():
                return
            self._slot.put(Frame(f.image, i / self.fps, i, time.perf_counter()))


@dataclass
class BenchResult:
    mode: str
    stats: Stats


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


def bench_pipeline(
    clip: str | Path,
    *,
    model: str = "warp",
    engine: str = "auto",
    device: str | None = None,
    frames: int = 120,
    size: str | None = None,
    faces: str = "largest",
    batch: int = 8,
    modes: Sequence[str] = ("offline", "live"),
    err_console: Console | None = None,
) -> tuple[list[BenchResult], str]:
    """End-to-end fps, latency and stage medians of ``clip`` in offline and paced-live modes.

    Frames are decoded and resized into memory first (decode is not timed, so a file and a
    camera compare), and the output goes to a null sink (encoding is not timed either). Each
    mode runs a fresh tracker after a warm-up pass. Returns the results and a description.
    """
    from rtanim.runtime import load_generator
    from rtanim.timeline import parse_aus_arg
    from rtanim.tracking import FaceTracker

    err_console = err_console or Console(stderr=True)
    check_faces(faces)
    if frames < 2:
        raise InputError("--frames", "must be >= 2")
    wh = parse_size(size)
    loaded, fps = load_frames(clip, frames, wh)
    generator = load_generator(model, engine, device=device, batch=batch)
    timeline = parse_aus_arg(BENCH_AUS)
    results = []
    with FaceTracker(MAX_FACES, mode="video", fps=fps) as tracker:  # warm-up: engine sessions, caches, threads
        Pipeline(tracker, generator, timeline, "offline", faces, batch).run(MemorySource(loaded[:10], fps),
                                                                           lambda f, im: None)
    for mode in modes:
        err_console.print(f"bench: {mode} over {len(loaded)} frames ...", highlight=False)
        with FaceTracker(MAX_FACES, mode="video", fps=fps) as tracker:
            src = MemorySource(loaded, fps) if mode == "offline" else PacedMemorySource(loaded, fps)
            p = Pipeline(tracker, generator, timeline, "offline" if mode == "offline" else "live", faces, batch)
            try:
                p.run(src, lambda f, im: None)
            finally:
                if isinstance(src, _LiveSource):
                    src.close()
            results.append(BenchResult(mode, p.stats))
    h, w = loaded[0].image.shape[:2]
    desc = (f"{Path(clip).name} at {w}x{h}, {len(loaded)} frames ({fps:.2f} fps source), {_describe(generator)}; "
            f"frames preloaded (decode not timed), null sink (encode not timed)")
    return results, desc


def bench_table(results: Sequence[BenchResult], desc: str) -> Table:
    """One column per mode: fps, latency (capture to sink done), drops and per-stage medians."""
    table = Table(title="End-to-end pipeline", title_justify="left", caption=desc, caption_justify="left")
    table.add_column("")
    sums = [r.stats.summary() for r in results]
    for r in results:
        table.add_column("offline (every frame)" if r.mode == "offline" else "live (paced, newest)", justify="right")
    rows = [("frames", lambda s: str(s["frames"])), ("fps", lambda s: f"{s['fps'] or 0:.1f}"),
            ("latency p50 ms", lambda s: _ms(s["latency_ms"]["p50"])),
            ("latency p95 ms", lambda s: _ms(s["latency_ms"]["p95"])),
            ("dropped", lambda s: f"{s['dropped']} ({100 * s['drop_rate']:.0f}%)")]
    rows += [(f"{st} ms (median)", lambda s, st=st: _ms(s["stage_median_ms"][st])) for st in STAGES]
    for name, cell in rows:
        table.add_row(name, *[cell(s) for s in sums])
    return table
