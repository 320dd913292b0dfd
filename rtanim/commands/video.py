"""Runs behind ``rtanim video`` and ``rtanim webcam``, so cli.py holds no logic.

Each run checks every input first, cheapest first (arguments, timeline, input, output, model),
so bad input fails with one :class:`~rtanim.errors.InputError` line before any frame is
processed and without leaving an output. Importing this module loads no heavy module (torch,
MediaPipe, PyAV, OpenCV): they load inside the runs, after the cheap checks. Everything opened lives on one ExitStack: on success
and on Ctrl-C / SIGTERM the sinks finalise (a playable file with every frame done so far and
its audio), on a failure they are discarded.

What the user does not name follows the face (rtanim.expression.timeline): an AU that ``--aus``
or ``--timeline`` names takes the given value, every other AU the face's own live value, frame by
frame; ``--unnamed zero`` (or a timeline's ``"unnamed": "zero"``) sets them to 0 instead, the old
rule. A driving video (``--timeline other.mp4``) names every AU.

Passthrough on the webcam makes AUs follow the live face even where named: the mouth AUs (AU25,
AU26) by default, so the user can still talk under ``surprise``. A timeline or AU file that lists
its own ``passthrough`` keeps its list instead, and ``--passthrough CODES|none`` overrides both (a
file cannot say "none" with an empty list, since an absent and an empty list read the same).
``rtanim video`` applies only what the timeline says.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rtanim import checks
from rtanim.checks import MAX_FACES, TRACK_EVERY
from rtanim.errors import InputError
from rtanim.expression.timeline import (
    WEBCAM_PASSTHROUGH,
    Timeline,
    load_openface_csv,
    load_timeline_json,
    parse_aus_arg,
    with_unnamed,
)
from rtanim.pipeline.jobs import describe_generator

if TYPE_CHECKING:
    from rtanim.pipeline.graph import Controls, Stats
    from rtanim.pipeline.jobs import FrameJob

TIMELINE_HINT = "give exactly one of --aus FILE|PRESET or --timeline FILE|CSV|VIDEO"


# ------------------------------------------------------------------ signals


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C in the main thread, so ``kill`` also finalises outputs (exit 130).

    It goes through the current SIGINT handler, so a sink that defers Ctrl-C while finalising
    defers SIGTERM too. A SIGINT ignored since start-up (``cmd &`` in a script) is handled for
    the run, as FFmpeg does: ``kill -INT`` must finalise too, not be silently dropped.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        current = signal.getsignal(signal.SIGINT)
        if callable(current):
            current(signal.SIGINT, frame)  # default_int_handler raises KeyboardInterrupt
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


# ------------------------------------------------------------------ arguments


@dataclass(frozen=True)
class DrivingVideo:
    """A ``--timeline`` that is a video: its face's live AUs drive ours (analysed after the cheap checks)."""

    path: Path


def resolve_target(aus: str | None, timeline: str | Path | None, unnamed: str | None = None) -> Timeline | DrivingVideo:
    """``--aus`` / ``--timeline`` under the ``--unnamed`` rule -> a Timeline, or a driving video still to
    analyse (it names every AU). InputError if bad."""
    if unnamed is not None:
        checks.choice(unnamed, checks.UNNAMED_RULES, "--unnamed", "rule")
    if (aus is None) == (timeline is None):
        raise InputError("--aus/--timeline", TIMELINE_HINT)
    if aus is not None:
        return with_unnamed(parse_aus_arg(aus), unnamed)
    path = Path(timeline)
    if not path.exists():
        raise InputError(path, "file not found", field="--timeline")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return with_unnamed(load_timeline_json(path), unnamed)
    if suffix == ".csv":
        return with_unnamed(load_openface_csv(path), unnamed)
    from rtanim.io.source_file import VideoFileSource

    try:
        VideoFileSource(path).close()
    except InputError as e:
        raise InputError(path, f"not a timeline (.json), an OpenFace CSV (.csv) or a readable video ({e.reason})",
                         field="--timeline") from None
    return DrivingVideo(path)


def analyse_driving(video: DrivingVideo, console: Console) -> Timeline:
    """The driving video's first face, as a timeline (rich progress: it tracks every frame)."""
    from rtanim.commands.analyze import analyze_video, timeline_from_analysis
    from rtanim.io.source_file import VideoFileSource

    with VideoFileSource(video.path) as probe:
        total = probe.frame_count
    with _progress(console, "analysing driving video", total) as advance:
        analysis = analyze_video(video.path, max_faces=1, progress=advance)
    return timeline_from_analysis(analysis, str(video.path))


def with_passthrough(timeline: Timeline, codes: Sequence[str]) -> Timeline:
    return dataclasses.replace(timeline, passthrough=tuple(codes))


def webcam_passthrough(timeline: Timeline, option: str | None) -> Timeline:
    """Apply the webcam passthrough rule (module docstring): option > the file's own list > AU25, AU26."""
    if option is not None:
        value = option.strip()
        if value.lower() == "none":
            return with_passthrough(timeline, ())
        codes = [c.strip() for c in value.split(",") if c.strip()]
        try:  # the timeline parser validates AU codes with its usual one-line errors
            from rtanim.expression.timeline import timeline_from_dict

            timeline_from_dict({"aus": {}, "passthrough": codes}, "--passthrough")
        except InputError as e:
            raise InputError("--passthrough", e.reason, field=e.field) from None
        return with_passthrough(timeline, codes)
    if timeline.passthrough:
        return timeline
    return with_passthrough(timeline, WEBCAM_PASSTHROUGH)


# ------------------------------------------------------------------ display


@contextlib.contextmanager
def _progress(console: Console, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (with ETA when ``total`` is known); yields ``advance(n)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    if total:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(label, total=total, rate="")
        started = time.perf_counter()
        done = 0

        def advance(n: int = 1) -> None:
            nonlocal done
            done += n
            dt = time.perf_counter() - started
            progress.update(task, advance=n, rate=f"{done / dt:.1f} fps" if dt > 0 else "")

        yield advance


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def live_line(stats: Stats, controls: Controls) -> Text:
    """One line for the terminal while a live run goes on."""
    r = stats.recent()
    stage = r["stage_ms"]
    notes = [n for n, on in (("effect off", not controls.effect_on), ("paused", controls.paused)) if on]
    head = (f"{_ms(r['fps'])} fps  latency {_ms(r['latency_p50'])} ms (p95 {_ms(r['latency_p95'])})  "
            f"frames {stats.frames}  dropped {stats.dropped}"
            + (f" (in sinks {stats.sink_dropped})" if stats.sink_dropped else "") + f"  reused {stats.reused}"
            + ("  [" + ", ".join(notes) + "]" if notes else ""))
    ms = "  ".join(f"{s} {_ms(stage.get(s))}" for s in ("track", "generate", "compose", "sink"))
    if len(r["sink_ms"]) > 1:  # which sink is the slow one
        ms += " (" + ", ".join(f"{k} {_ms(v)}" for k, v in r["sink_ms"].items()) + ")"
    return Text(f"{head}\nms: {ms}")


def summary_table(stats: Stats, title: str) -> Group:
    """Per-stage medians and the run's totals, as printed at the end of every run."""
    from rtanim.pipeline.graph import STAGES

    s = stats.summary()
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    for name in STAGES:
        table.add_row(name, _ms(s["stage_median_ms"][name]))
    if len(s["sink_median_ms"]) > 1:
        for name, ms in s["sink_median_ms"].items():
            table.add_row(f"  {name}", _ms(ms))
    lat = s["latency_ms"]
    line = (f"{s['frames']} frames in {s['wall_s']:.1f} s: {s['fps'] or 0:.1f} fps; latency p50 {_ms(lat['p50'])} ms, "
            f"p95 {_ms(lat['p95'])} ms; dropped {s['dropped']} ({100 * s['drop_rate']:.1f}%"
            f"{f', {sc} in sinks' if (sc := s['sink_dropped']) else ''}); "
            f"faces {s['faces']} (model run on {s['generated']}, reused for {s['reused']}), "
            f"frames without a face {s['frames_without_face']}")
    return Group(table, Text(line))


# ------------------------------------------------------------------ rtanim video


@dataclass
class VideoResult:
    stats: Stats
    out: Path | None  # None when no frame was written
    frames_in: int | None  # frames the input declares (capped by --frames)


def run_video(
    inp: str | Path,
    out: str | Path,
    *,
    aus: str | None = None,
    timeline: str | Path | None = None,
    model: str = "default",
    engine: str = "auto",
    faces: str = "all",
    max_faces: int = MAX_FACES,
    track_every: int = TRACK_EVERY,
    batch: int = 8,
    stats_json: str | Path | None = None,
    codec: str | None = None,
    crf: int | None = 18,
    preset: str | None = checks.DEFAULT_PRESET,
    max_frames: int | None = None,
    reuse: bool = True,
    unnamed: str | None = None,
    console: Console | None = None,
    err_console: Console | None = None,
) -> VideoResult:
    """Re-express every frame of ``inp`` into ``out`` (offline policy), audio copied.

    Raises InputError before any work for bad input; KeyboardInterrupt (Ctrl-C, SIGTERM) after
    finalising ``out`` with every frame written so far.
    """
    console = console or Console()
    err_console = err_console or Console(stderr=True)
    checks.run_options(faces, max_faces, track_every)
    if batch < 1:
        raise InputError("--batch", "must be >= 1")
    if max_frames is not None and max_frames < 1:
        raise InputError("--frames", "must be >= 1")
    checks.engine(engine)
    checks.model(model)
    checks.input_path(inp)
    target = resolve_target(aus, timeline, unnamed)
    out = checks.output_file(out, "-o", inputs=[inp, timeline])
    if stats_json is not None:
        checks.output_file(stats_json, "--stats-json", inputs=[inp, timeline, out])
    from rtanim.io.sink_file import VideoFileSink
    from rtanim.io.source_file import VideoFileSource
    from rtanim.pipeline.generators import load_generator
    from rtanim.pipeline.graph import Pipeline, ReuseTolerance

    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:  # handlers stay while the sinks finalise
        source = stack.enter_context(VideoFileSource(inp, max_frames=max_frames))
        sink = stack.enter_context(VideoFileSink(out, source.size, source.fps, time_base=source.time_base,
                                                 codec=codec, crf=crf, audio_from=inp, preset=preset))
        generator = load_generator(model, engine, batch=batch)
        tl = analyse_driving(target, err_console) if isinstance(target, DrivingVideo) else target
        from rtanim.face.tracking import FaceTracker

        tracker = stack.enter_context(FaceTracker(max_faces, mode="video", fps=source.fps or 30.0,
                                                       landmark_every=track_every))
        pipeline = Pipeline(tracker, generator, tl, policy="offline", faces=faces, batch=batch,
                            reuse=ReuseTolerance() if reuse else None)
        total = source.frame_count
        if total is not None and max_frames is not None:
            total = min(total, max_frames)
        err_console.print(f"{inp} -> {out}: {source.size[0]}x{source.size[1]}, {describe_generator(generator)}",
                          highlight=False)
        interrupted = False
        try:
            with _progress(err_console, "re-expressing", total) as advance:
                pipeline.run(source, sink, on_frame=lambda stats, job: advance(1))
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            written = sink.frames
            stats = pipeline.stats
            if stats.frames:
                console.print(summary_table(stats, f"rtanim video ({'interrupted, ' if interrupted else ''}"
                                                   f"offline, batch {batch})"))
            if stats_json is not None:
                stats.write_json(stats_json, {"command": "video", "input": str(inp), "output": str(out),
                                              "model": describe_generator(generator), "interrupted": interrupted})
            if interrupted:
                err_console.print(f"finalising {out} with the {written} frames done so far")
    path = out if out.exists() else None
    return VideoResult(stats, path, total)


# ------------------------------------------------------------------ rtanim webcam


def preset_switcher(controls: Controls, passthrough: Sequence[str], unnamed: str | None = None) -> Callable[[int], None]:
    """Hotkeys 1-9 -> the first nine presets (pressing the active one again returns to the run's timeline)."""
    from rtanim.expression.aus import PRESETS
    from rtanim.expression.timeline import timeline_from_dict

    names = list(PRESETS)[:9]
    active: list[int | None] = [None]

    def on_preset(index: int) -> None:
        if index >= len(names):
            return
        if active[0] == index:
            controls.timeline, active[0] = None, None
            return
        tl = with_unnamed(timeline_from_dict({"preset": names[index]}, f"preset {names[index]}"), unnamed)
        controls.timeline, active[0] = with_passthrough(tl, passthrough), index

    return on_preset


def _has_display() -> bool:
    return not sys.platform.startswith("linux") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_webcam(
    camera: str = "0",
    *,
    aus: str | None = None,
    timeline: str | Path | None = None,
    model: str = "default",
    engine: str = "auto",
    vcam: bool = False,
    preview: bool | None = None,
    out: Sequence[str] = (),
    faces: str = "largest",
    max_faces: int = MAX_FACES,
    track_every: int = TRACK_EVERY,
    size: str | None = None,
    fps: float | None = None,
    paced: bool = True,
    passthrough: str | None = None,
    stats_json: str | Path | None = None,
    panel: bool = False,
    panel_host: str | None = None,
    panel_port: int | None = None,
    reuse: bool = True,
    unnamed: str | None = None,
    console: Console | None = None,
    err_console: Console | None = None,
) -> Stats:
    """Re-express a camera (or a file played like one) live: newest frame only, bounded latency.

    ``preview=None`` opens a preview window when a display is available. Without any sink the
    frames are processed and discarded (useful to measure). Stops at the end of a file, on the
    preview's q / Esc / window close, or on Ctrl-C / SIGTERM (KeyboardInterrupt, after finalising).
    ``panel`` serves the browser control panel (rtanim.panel) for the run's length; its target
    replaces the run's timeline, starting from it, and the preview's preset keys drive it too.
    """
    console = console or Console()
    err_console = err_console or Console(stderr=True)
    checks.run_options(faces, max_faces, track_every)
    req_size = checks.parse_size(size)
    if fps is not None and fps <= 0:
        raise InputError("--fps", "must be > 0")
    checks.engine(engine)
    checks.model(model)
    target = resolve_target(aus, timeline, unnamed)
    files = [checks.output_file(o, "--out", inputs=[camera, timeline]) for o in out if "://" not in str(o)]
    if stats_json is not None:
        checks.output_file(stats_json, "--stats-json", inputs=[camera, timeline, *files])
    from rtanim.panel.live import panel_options

    panel_opts = panel_options(panel, panel_host, panel_port)
    tl = None if isinstance(target, DrivingVideo) else webcam_passthrough(target, passthrough)
    pass_codes = (tl or webcam_passthrough(parse_aus_arg("neutral"), passthrough)).passthrough  # checks the option early
    checks.camera(camera)  # a camera index with no device: refused before torch, OpenCV and PyAV load
    from rtanim.io.sink_multi import open_sinks
    from rtanim.io.sink_preview import OverlayStats
    from rtanim.io.source_open import open_source
    from rtanim.pipeline.generators import load_generator
    from rtanim.pipeline.graph import Controls, Pipeline, ReuseTolerance

    want_preview = _has_display() if preview is None else preview
    controls = Controls()
    with sigterm_as_interrupt(), contextlib.ExitStack() as stack:
        if panel_opts is not None:  # listen first: a busy port fails before the camera and the model open
            from rtanim.panel.live import bind

            panel_sock, panel_opts = bind(panel_opts)
            stack.callback(panel_sock.close)
        source = stack.enter_context(open_source(camera, size=req_size, fps=fps, paced=paced))
        panel_run: Any = None
        switch = preset_switcher(controls, pass_codes, unnamed)

        def on_preset(index: int) -> None:
            if panel_run is not None:
                panel_run.preset_key(index)
            else:
                switch(index)
        kw = dict(size=source.size, fps=source.fps, time_base=getattr(source, "time_base", None), controls=controls,
                  on_preset=on_preset, title=f"rtanim {camera}")
        try:
            sinks = stack.enter_context(open_sinks(list(out), vcam, want_preview, **kw))
        except InputError as e:
            if preview is not None or e.file != "--preview":
                raise
            sinks = stack.enter_context(open_sinks(list(out), vcam, False, **kw))  # auto preview: none possible
            want_preview = False
        generator = load_generator(model, engine, batch=1)
        if tl is None:
            tl = webcam_passthrough(analyse_driving(target, err_console), passthrough)
        from rtanim.face.tracking import FaceTracker

        tracker = stack.enter_context(FaceTracker(max_faces, mode="video", fps=source.fps or 30.0,
                                                       landmark_every=track_every))
        if panel_opts is not None:
            from rtanim.panel.server import start_panel

            panel_run = start_panel(stack, panel_opts, panel_sock, tl, controls,
                                    model=describe_generator(generator), source=str(camera), console=err_console)
            sinks.add(panel_run)  # its browser preview: the newest output
        target = tl if panel_run is None else panel_run.target
        pipeline = Pipeline(tracker, generator, target, policy="live", faces=faces, controls=controls,
                            reuse=ReuseTolerance() if reuse else None)
        if panel_run is not None:
            panel_run.stats = pipeline.stats
        where = [str(o) for o in out] + (["virtual camera"] if vcam else []) + (["preview"] if want_preview else [])
        err_console.print(
            f"{camera} ({source.size[0]}x{source.size[1]}{f' @ {source.fps:.0f} fps' if source.fps else ''}) -> "
            f"{', '.join(where) or 'no output (null sink: frames are processed and dropped)'}; {describe_generator(generator)}; "
            f"passthrough {', '.join(tl.passthrough) or 'none'}"
            + ("; keys: q quit, space effect, p pause, 1-9 presets, o overlay" if want_preview else ""),
            highlight=False)
        preview_sink = sinks.preview

        def on_frame(stats: Stats, job: FrameJob) -> None:
            if panel_run is not None:
                panel_run.on_frame(stats, job)
            if preview_sink is not None:
                r = stats.recent()
                note = "effect off" if not controls.effect_on else ("paused" if controls.paused else "")
                aus_shown = {k: v for k, v in (job.faces[0].target.items() if job.faces else ())
                             if len(k) == 4 and v > 0.01}
                preview_sink.set_overlay(OverlayStats(r["fps"] or 0.0, r["latency_p50"] or 0.0, stats.dropped,
                                                      len(job.faces), note), aus_shown)

        interrupted = False
        live = Live(Text("starting"), console=err_console, refresh_per_second=4, transient=False,
                    get_renderable=lambda: live_line(pipeline.stats, controls))
        try:
            with live:
                pipeline.run(source, sinks, on_frame=on_frame)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if not err_console.is_terminal:  # a redirected log: end the last status line before the summary
                err_console.line()
            stats = pipeline.stats
            if stats.frames:
                console.print(summary_table(stats, f"rtanim webcam ({'interrupted, ' if interrupted else ''}live)"))
            if stats_json is not None:
                stats.write_json(stats_json, {"command": "webcam", "input": str(camera), "model": describe_generator(generator),
                                              "interrupted": interrupted})
    return stats
