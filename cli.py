"""The `rtanim` command: parses and validates arguments, then calls rtanim/. No logic of its own.

Bad input is refused before any heavy module loads: every command runs its cheap checks
(rtanim.checks: paths, names, AU codes) first and imports torch, MediaPipe, PyAV and OpenCV
only after them, so a mistake costs a fraction of a second and writes nothing.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperArgument, TyperCommand, TyperGroup

import rtanim
from rtanim import checks
from rtanim.errors import InputError, RunError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: Option types shown as plain metavars when an option names none ("N", not "<int range>").
_TYPE_METAVARS = {"int": "N", "float": "NUM", "path": "PATH", "Path": "PATH", "str": "TEXT"}


def _reflow(text: str) -> str:
    """Join the lines of each paragraph so the terminal wraps it; a paragraph with indented lines
    (worked examples) keeps its lines, flush left like every other paragraph."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    joiner = {True: "\n", False: " "}
    return "\n\n".join(joiner[any(ln.startswith(" ") for ln in p.splitlines()[1:])].join(
        ln.strip() for ln in p.splitlines()) for p in paragraphs)


class _TeachingHelp:
    """Help that reads like the README: flags show no type, other options a plain metavar
    (N, PATH, or the option's own), and paragraphs wrap at the terminal's width."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflow(self.help or "")

    def format_help(self, ctx, formatter) -> None:  # noqa: ANN001 - click's types
        for p in self.get_params(ctx):
            if isinstance(p, TyperArgument):  # its name is its metavar: no type column
                p.metavar = p.metavar or p.name.upper()
                p.display_type_rich = lambda ctx: None
            elif p.metavar is not None:
                continue
            elif getattr(p, "is_flag", False):
                p.metavar = ""
            else:
                label = p.display_type(ctx).strip("<>").removeprefix("list[").rstrip("]").split()[0]
                p.metavar = _TYPE_METAVARS.get(label, label.upper())
        super().format_help(ctx, formatter)


class Command(_TeachingHelp, TyperCommand):
    def collect_usage_pieces(self, ctx) -> list[str]:  # noqa: ANN001
        """``rtanim image [OPTIONS] IN``: arguments by name, [optional], ... when repeated (no ``{src}``)."""
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if isinstance(p, TyperArgument):
                name = (p.metavar or p.name).upper()
                pieces.append((name if p.required else f"[{name}]") + ("..." if p.nargs != 1 else ""))
            else:
                pieces.extend(p.get_usage_pieces(ctx))
        return pieces


class Group(_TeachingHelp, TyperGroup):
    pass


app = typer.Typer(
    name="rtanim",
    cls=Group,
    help=(
        "Real-time facial re-expression from Action Units (AUs).\n\n"
        "An AU is one facial muscle movement from the Facial Action Coding System (FACS): AU12 pulls the lip "
        "corners up (a smile), AU45 closes the eyes. rtanim changes the AUs of every face in a still, a video "
        "or a webcam feed. Run `rtanim aus` to see every AU and preset in plain words, and `rtanim COMMAND "
        "--help` for a command's options and examples.\n\n"
        "Examples:\n"
        "  rtanim demo -o rtanim-demo\n"
        "  rtanim image photo.jpg -o smile.png --aus smile:0.8\n"
        "  rtanim webcam --aus smile --vcam"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
timeline_app = typer.Typer(
    cls=Group,
    help="Check and plot AU timelines (JSON keyframes or OpenFace CSV).\n\n"
    "Examples:\n  rtanim timeline check examples/wink_and_smile.json\n"
    "  rtanim timeline plot examples/wink_and_smile.json -o curves.png",
    no_args_is_help=True,
)
app.add_typer(timeline_app, name="timeline")


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn expected errors into one line and the contract's exit codes (2 input, 1 run time, 130 interrupt)."""
    try:
        yield
    except InputError as exc:
        err_console.print(f"[bold red]error:[/] {exc.line()}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except RunError as exc:
        err_console.print(f"[bold red]failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rtanim {rtanim.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Real-time facial re-expression from Action Units (AUs)."""


MODEL_HELP = (
    "warp (moves the face geometry, no network), default (the shipped trained model; warp if none ships), "
    "lite, ganimation, lite+flow, ganimation+flow, or a checkpoint path (.safetensors or GANimation .pth)."
)
ENGINE_HELP = "auto (TensorRT > PyTorch CUDA > ONNX Runtime CPU), tensorrt, torch or onnxruntime."
MODEL_MV, ENGINE_MV = "NAME|PATH", "auto|tensorrt|torch|onnxruntime"
#: Default --track-every: rtanim.runs.TRACK_EVERY, which imports more than the CLI wants at start (a test pins them).
TRACK_EVERY = 2
TRACK_EVERY_HELP = ("Run the face landmarker on 1 frame in N and follow the faces by optical flow in between "
                    "(cheaper tracking; expressions refresh every N frames). 1: every frame.")
AUS_MV = "PRESET|AU=V,...|FILE"
REUSE_HELP = ("Reuse a face's last generated output while it holds still and its target AUs do not change "
              "(looks the same, skips the model); --no-reuse runs the model on every face of every frame.")


# ------------------------------------------------------------------ aus


@app.command("aus", cls=Command)
def aus_cmd() -> None:
    """List the Action Units a model understands, their one-sided variants, and the named presets.

    Intensities are 0 (at rest) to 1 (strongest). Use the codes in `--aus` files and timelines, e.g.
    `{"aus": {"AU12": 1.0, "AU06": 0.6}}`, or a preset name: `--aus smile`.

    Examples:
      rtanim aus
      rtanim image photo.jpg -o out.png --aus AU12=1,AU06=0.6
    """
    from rtanim.aus import AUS, PRESETS, SIDED, describe

    table = Table(title="Action Units (model order)", title_justify="left")
    for col in ("code", "name", "what it does", "one side"):
        table.add_column(col)
    for au in AUS:
        table.add_row(au.code, au.name, au.description, f"{au.code}L {au.code}R" if au.code in SIDED else "")
    console.print(table)
    presets = Table(title="Presets (--aus NAME or NAME:STRENGTH)", title_justify="left")
    for col in ("preset", "what", "AUs"):
        presets.add_column(col)
    for p in PRESETS.values():
        presets.add_row(p.name, p.description, " ".join(f"{c}={v:g}" for c, v in p.aus.items()) or "all 0")
    console.print(presets)
    console.print("Sided codes (L/R) follow MediaPipe's blendshape sides; e.g. " + describe("AU45L") + ".")


# ------------------------------------------------------------- timeline

TIMELINE_ARG_HELP = "Timeline JSON, static AU file or OpenFace CSV."


@timeline_app.command("check", cls=Command)
def timeline_check(file: Path = typer.Argument(..., metavar="FILE", help=TIMELINE_ARG_HELP)) -> None:
    """Validate a timeline and summarise it. Errors name the file, the JSON path and the reason (exit code 2).

    Examples:
      rtanim timeline check examples/wink_and_smile.json
      rtanim timeline check aus.csv
    """
    from rtanim.timeline import load_timeline

    with guard():
        tl = load_timeline(file)
    kind = "static AU file" if tl.is_static else "timeline"
    console.print(
        f"[green]ok[/] {file}: {kind}, {len(tl.keyframes)} keyframe{'s' if len(tl.keyframes) != 1 else ''} over {tl.duration:g}s, "
        f"loop={tl.loop}, mode={tl.mode}",
        highlight=False,
    )
    console.print(f"AUs: {', '.join(tl.used_codes()) or 'none (neutral)'}", highlight=False)
    if tl.passthrough:
        console.print(f"passthrough (follow the live face): {', '.join(tl.passthrough)}", highlight=False)


@timeline_app.command("plot", cls=Command)
def timeline_plot(
    file: Path = typer.Argument(..., metavar="FILE", help=TIMELINE_ARG_HELP),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT.png", help="Figure to write (.png, .svg or .pdf)."),
    duration: float = typer.Option(None, metavar="SECONDS",
                                   help="Seconds to draw (default: the timeline, twice if it loops)."),
) -> None:
    """Draw every AU's curve over time to a PNG, to see a timeline before running it.

    Examples:
      rtanim timeline plot examples/wink_and_smile.json -o curves.png
      rtanim timeline plot examples/smile.json -o smile.png --duration 4
    """
    with guard():
        checks.output_file(out, suffixes=(".png", ".svg", ".pdf"), inputs=[file])
        checks.positive(duration, "--duration")
        from rtanim.timeline import load_timeline

        tl = load_timeline(file)
        from rtanim.plots import plot_timeline

        plot_timeline(tl, out, duration)
    console.print(f"wrote {out}")


# --------------------------------------------------------------- export

EXPORT_FORMATS = ("onnx", "tensorrt", "safetensors")
PRECISIONS = ("fp32", "fp16", "int8")


@app.command("export", cls=Command)
def export_cmd(
    model: str = typer.Option(
        "default",
        "--model",
        "-m",
        metavar=MODEL_MV,
        help="default | lite | ganimation | lite+flow | ganimation+flow, a .safetensors file, or an original "
        "GANimation / ganimation_replicate generator .pth (imported without running any pickled code).",
    ),
    fmt: str = typer.Option(..., "--format", "-f", metavar="|".join(EXPORT_FORMATS),
                            help="onnx | tensorrt | safetensors."),
    out: Path = typer.Option(..., "-o", "--out", metavar="FILE", help="File to write."),
    precision: str = typer.Option(
        None, "--precision", metavar="|".join(PRECISIONS),
        help="fp32 | fp16 | int8 (int8: tensorrt with --calib). Default fp32; fp16 for tensorrt.",
    ),
    calib: Path = typer.Option(
        None, "--calib", metavar="DIR|FILE",
        help="INT8 calibration: a folder of 128x128 face crops, or a .cache file from an earlier run.",
    ),
    max_batch: int = typer.Option(32, "--max-batch", min=1, metavar="N", help="Largest batch a TensorRT engine accepts."),
) -> None:
    """Export a generator: ONNX (the engine I/O contract), a TensorRT engine, or an rtanim safetensors checkpoint.

    `--format safetensors` converts an original GANimation `.pth` into rtanim's checkpoint format.

    Examples:
      rtanim export --model lite --format onnx -o lite.onnx
      rtanim export --model ganimation --format tensorrt --precision fp16 -o ganimation.plan
      rtanim export --model 30000_net_G.pth --format safetensors -o imported.safetensors
    """
    with guard():
        checks.choice(fmt, EXPORT_FORMATS, "--format", "format")
        if precision is not None:
            checks.choice(precision, PRECISIONS, "--precision", "precision")
        checks.model(model)
        if calib is not None:
            checks.input_path(calib, "--calib", folder_ok=True)
        checks.output_file(out, inputs=[model])
        from engines.convert import export_model

        result = export_model(model, fmt, out, precision=precision, calib=calib, max_batch=max_batch)
    note = f"; {result.note}" if result.note else ""
    console.print(
        f"wrote {result.path} ({result.format} {result.precision}, {result.spec.name}, {result.spec.n_aus} AUs{note})",
        highlight=False,
    )


# ---------------------------------------------------------------- bench


def _csv(value: str | None, option: str, cast=str) -> list | None:
    if value is None:
        return None
    try:
        items = [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError:
        raise InputError(option, f"expected a comma-separated list, got {value!r}") from None
    if not items:
        raise InputError(option, "empty list")
    return items


@app.command("bench", cls=Command)
def bench_cmd(
    engines: bool = typer.Option(False, "--engines", help="Time each available engine x model x batch size."),
    models: str = typer.Option(
        None, "--models", metavar="NAME,...",
        help="Comma-separated models (default: lite, lite+flow, ganimation, ganimation+flow).",
    ),
    backends: str = typer.Option(None, "--backends", metavar="NAME,...",
                                 help="Comma-separated subset of tensorrt,torch,onnxruntime."),
    batches: str = typer.Option(None, "--batches", metavar="N,...",
                                help="Comma-separated batch sizes (default 1,8,32; 1,8 --quick)."),
    iters: int = typer.Option(None, "--iters", min=1, metavar="N",
                              help="Timed calls per measurement (default 10; 3 --quick)."),
    quick: bool = typer.Option(False, "--quick", help="Few iterations, batches 1 and 8: a rough table in a minute."),
    device: str = typer.Option(None, "--device", metavar="cpu|cuda|cuda:N",
                               help="cpu, cuda or cuda:N (default: the best available)."),
    input_clip: Path = typer.Option(None, "--input", metavar="CLIP",
                                    help="End-to-end pipeline on this clip (offline and paced live), every stage timed."),
    model: str = typer.Option("warp", "--model", metavar="NAME,...",
                              help="--input: the model(s) to run, comma-separated (see `rtanim video --help`)."),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help="--input: " + ENGINE_HELP),
    frames: int = typer.Option(120, "--frames", metavar="N", help="--input: frames of the clip to use."),
    size: str = typer.Option(None, "--size", metavar="WxH,...",
                             help="--input: frame size(s), comma-separated, e.g. 640x360,1280x720 (default: the "
                                  "clip's); another size is transcoded once before timing, so decode is real."),
    fps: float = typer.Option(None, "--fps", metavar="FPS",
                              help="--input: play the clip at this frame rate (default: its own); live mode is paced at it."),
    repeat: int = typer.Option(1, "--repeat", metavar="N",
                               help="--input: runs of every size x model cell, interleaved; the table shows medians."),
    sinks: str = typer.Option("auto", "--sinks", metavar="auto|none|file,vcam,udp",
                              help="--input: where frames go. auto: offline into a file (x264, audio copied, as "
                                   "`rtanim video`), live into the virtual camera and a UDP stream (as `rtanim webcam "
                                   "--vcam --out udp://...`); none: frames preloaded and a null sink (the model "
                                   "alone); or a list for both modes. Outputs go to a temporary folder, removed after."),
    track_every: int = typer.Option(TRACK_EVERY, "--track-every", metavar="N", help="--input: " + TRACK_EVERY_HELP),
    json_out: Path = typer.Option(None, "--json", metavar="PATH", help="--input: write every figure as JSON."),
    chart: Path = typer.Option(None, "--chart", metavar="PATH.png",
                               help="--input: draw the per-stage times of every cell as a bar chart."),
) -> None:
    """Benchmark: engines alone, or the whole pipeline on a clip; medians, with ratios from the same run.

    `--engines`: median ms per batch and crops/s of each available backend and model, with the
    speed-up over PyTorch measured in the same run. `--input CLIP`: everything a user pays for,
    offline (every frame, into a file) and paced live (newest frame, into the virtual camera and
    a UDP stream): real decode, tracking, the model, compositing and the real sinks; fps, added
    latency p50 / p95, drops, median ms of every stage and the process's CPU use, for each size
    and model given.

    Examples:
      rtanim bench --engines --quick
      rtanim bench --engines --backends torch,onnxruntime --batches 1,8 --device cpu
      rtanim bench --input talk.mp4 --size 640x360,1280x720 --model warp,lite+flow --repeat 3
      rtanim bench --input talk.mp4 --size 1280x720 --json bench.json --chart bench.png
      rtanim bench --input talk.mp4 --sinks none --model lite+flow
    """
    with guard():
        if engines == (input_clip is not None):
            raise InputError("bench", "choose one mode: --engines or --input CLIP")
        if input_clip is not None:
            _bench_input(input_clip, model, engine, device, frames, size, fps, repeat, sinks, track_every, json_out,
                         chart)
            return
        _bench_engines(models, backends, batches, iters, quick, device)


def _bench_input(clip, model, engine, device, frames, size, fps, repeat, sinks, track_every, json_out, chart) -> None:
    checks.input_path(clip, "--input")
    models = _csv(model, "--model")
    for m in models:
        checks.model(m)
    checks.engine(engine)
    from rtanim.runs import parse_size

    sizes = _csv(size, "--size") or [None]
    for s in sizes:
        parse_size(s)
    if frames < 2:
        raise InputError("--frames", f"must be >= 2, got {frames}")
    if repeat < 1:
        raise InputError("--repeat", f"must be >= 1, got {repeat}")
    if track_every < 1:
        raise InputError("--track-every", f"must be >= 1, got {track_every}")
    checks.positive(fps, "--fps")
    sink_spec = checks.bench_sinks(sinks)
    if json_out is not None:
        checks.output_file(json_out, "--json", suffixes=(".json",), inputs=[clip])
    if chart is not None:
        checks.output_file(chart, "--chart", suffixes=(".png",), inputs=[clip, json_out])
    from rtanim.bench_report import bench_tables, draw_chart, write_report
    from rtanim.benchrun import bench_matrix

    report = bench_matrix(clip, models=list(dict.fromkeys(models)), sizes=list(dict.fromkeys(sizes)), repeat=repeat,
                          engine=engine, device=device, frames=frames, fps=fps, track_every=track_every,
                          sinks=sink_spec, err_console=err_console)
    for table in bench_tables(report):
        console.print(table)
    if json_out is not None:
        console.print(f"wrote {write_report(report, json_out)}", highlight=False)
    if chart is not None:
        console.print(f"wrote {draw_chart(report, chart)}", highlight=False)


def _bench_engines(models, backends, batches, iters, quick, device) -> None:
    kw: dict = {"device": device}
    for key, value in (
        ("models", _csv(models, "--models")),
        ("backends", _csv(backends, "--backends")),
        ("batches", _csv(batches, "--batches", int)),
        ("iters", iters),
    ):
        if value is not None:
            kw[key] = tuple(value) if isinstance(value, list) else value
    for b in kw.get("backends", ()):
        checks.choice(b, checks.ENGINES[1:], "--backends", "backend")
    if any(b < 1 for b in kw.get("batches", ())):
        raise InputError("--batches", "batch sizes must be positive")
    from rich.progress import Progress

    from engines.bench import MODELS, BenchConfig, bench_engines
    from engines.select import BACKENDS

    config = BenchConfig.quick(**kw) if quick else BenchConfig(**kw)
    total = len(config.models or MODELS) * len(config.backends or BACKENDS) * len(config.batches)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)
        rows = bench_engines(config, on_row=lambda r: progress.advance(task))
    table = Table(title="Engines: median per batch", title_justify="left")
    for col in ("backend", "model", "device", "batch", "ms/batch", "ms/crop", "crops/s", "vs torch"):
        table.add_column(col, justify="left" if col in ("backend", "model", "device") else "right")
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        table.add_row(
            r.backend,
            r.model,
            f"{r.device} {r.precision}",
            str(r.batch),
            f"{r.median_ms:.1f}",
            f"{r.ms_per_crop:.1f}",
            f"{r.crops_per_s:.1f}",
            ratio,
        )
    console.print(table)


# ------------------------------------------------------------- image / analyze

STILL_FACES = 8
MAX_FACES_HELP = ("Most faces to follow in each frame (video costs time per face and frame; a still has no "
                  f"frame budget, so `image` takes up to {STILL_FACES}).")


@app.command("image", cls=Command)
def image_cmd(
    src: Path = typer.Argument(..., metavar="IN", help="Input image (PNG, JPEG, BMP, TIFF, WebP)."),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT", help="Output image; or, with --grid, the grid figure."),
    aus: str = typer.Option(
        None, "--aus", metavar=AUS_MV,
        help="Target AUs: a preset (smile, surprise:0.7), inline (AU12=1,AU06=0.6) or an AU file.",
    ),
    model: str = typer.Option("default", "--model", metavar=MODEL_MV, help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help=ENGINE_HELP),
    grid: str = typer.Option(
        None, "--grid", metavar="AU,...|all",
        help="Write the AU grid instead: each AU at 0, 0.33, 0.66 and 1, then what the model did (motion; "
        "attention and colour for models that repaint).",
    ),
    max_faces: int = typer.Option(STILL_FACES, "--max-faces", min=1, metavar="N", help="Most faces to re-express."),
) -> None:
    """Re-express every face in a still image.

    Examples:
      rtanim image me.jpg -o smile.png --aus smile
      rtanim image me.jpg -o wink.png --aus AU45L=1,AU12=0.5
      rtanim image me.jpg -o grid.png --grid AU01,AU12,AU26,AU45 --model warp
    """
    with guard():
        if (aus is None) == (grid is None):
            raise InputError("--aus", "give target AUs with --aus, or AU codes with --grid (one of the two)")
        checks.input_path(src)
        from rtanim.files import IMAGE_EXTENSIONS

        checks.output_file(out, suffixes=IMAGE_EXTENSIONS, inputs=[src])
        checks.model(model)
        checks.engine(engine)
        from rtanim.aus import parse_codes
        from rtanim.timeline import parse_aus_arg

        timeline = parse_aus_arg(aus) if aus is not None else None
        codes = parse_codes(grid, "--grid") if grid is not None else None
        from rtanim.files import read_image

        image = read_image(src)
        from rtanim import stills
        from rtanim.runtime import load_generator

        gen = load_generator(model, engine)
        if codes is not None:
            faces = stills.track_still(image, 1)
            if not faces:
                raise InputError(src, "no face found: the AU grid needs one face")
            stills.write_image(out, stills.au_grid(image, faces[0], codes, gen))
            console.print(f"wrote {out}: AU grid of {len(codes)} AUs ({gen.describe()})", highlight=False)
            return
        result = stills.reexpress_image(image, timeline, gen, max_faces)
        stills.write_image(out, result.image)
    if not result.faces:
        err_console.print(
            f"[yellow]warning:[/] {src}: no face found; wrote the image unchanged to {out}", highlight=False
        )
    else:
        console.print(f"wrote {out}: {len(result.faces)} face(s) re-expressed ({gen.describe()})", highlight=False)


@app.command("analyze", cls=Command)
def analyze_cmd(
    src: Path = typer.Argument(..., metavar="IN", help="Input video."),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT.csv",
                             help="CSV to write (OpenFace-compatible AUxx_r columns, 0-5)."),
    max_faces: int = typer.Option(4, "--max-faces", min=1, metavar="N", help=MAX_FACES_HELP),
) -> None:
    """Measure every face's live AUs in each frame of a video, per face id.

    The CSV is a timeline too: `rtanim video other.mp4 -o out.mp4 --timeline aus.csv` transfers
    this video's expressions to another.

    Examples:
      rtanim analyze talk.mp4 -o aus.csv
      rtanim timeline plot aus.csv -o aus.png
    """
    with guard():
        checks.input_path(src)
        checks.output_file(out, suffixes=(".csv",), inputs=[src])
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from rtanim.analysis import analyze_video, write_analysis_csv
        from rtanim.sources import VideoFileSource

        with VideoFileSource(src) as probe:
            total = probe.frame_count
        columns = [
            TextColumn("analyze"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} frames"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("analyze", total=total)
            analysis = analyze_video(src, max_faces, progress=lambda n: bar.advance(task, n))
        write_analysis_csv(analysis, out)
    ids = ", ".join(map(str, analysis.face_ids)) or "none"
    console.print(
        f"wrote {out}: {analysis.frames} frames, face ids {ids}, {analysis.frames_without_face} frames without a face",
        highlight=False,
    )


# ------------------------------------------------------------- video / webcam

TIMELINE_OPT_HELP = "Target AUs over time: a timeline JSON, an OpenFace CSV, or another video whose face drives this one."
AUS_OPT_HELP = "Target AUs: a preset (smile, surprise:0.7), inline (AU12=1,AU06=0.6) or an AU / timeline file."
FACES_HELP = "largest: only the biggest face; all: every face found (up to --max-faces)."


@app.command("video", cls=Command)
def video_cmd(
    src: Path = typer.Argument(..., metavar="IN", help="Input video (any container / codec FFmpeg reads). Never modified."),
    out: Path = typer.Option(..., "-o", "--out", metavar="OUT",
                             help="Output video (.mp4, .mkv, .mov, .webm ...); audio is copied."),
    aus: str = typer.Option(None, "--aus", metavar=AUS_MV, help=AUS_OPT_HELP),
    timeline: Path = typer.Option(None, "--timeline", metavar="FILE|CSV|VIDEO", help=TIMELINE_OPT_HELP),
    model: str = typer.Option("default", "--model", metavar=MODEL_MV, help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help=ENGINE_HELP),
    faces: str = typer.Option("all", "--faces", metavar="largest|all", help=FACES_HELP),
    max_faces: int = typer.Option(4, "--max-faces", min=1, metavar="N", help=MAX_FACES_HELP),
    track_every: int = typer.Option(TRACK_EVERY, "--track-every", min=1, metavar="N", help=TRACK_EVERY_HELP),
    batch: int = typer.Option(8, "--batch", metavar="N", help="Faces per engine call (several frames batched together)."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help=REUSE_HELP),
    stats_json: Path = typer.Option(None, "--stats-json", metavar="FILE",
                                    help="Write fps, latency and per-stage times as JSON."),
    codec: str = typer.Option(None, "--codec", metavar="NAME", help="Video encoder (default libx264; libvpx-vp9 for .webm)."),
    crf: int = typer.Option(18, "--crf", metavar="Q",
                            help="Quality for x264/x265/VP9/AV1: 0 lossless, 18 default, higher smaller."),
    preset: str = typer.Option(checks.DEFAULT_PRESET, "--preset", metavar="NAME",
                               help="x264/x265 speed: ultrafast ... veryfast (default) ... medium (FFmpeg's default: "
                                    "about twice the CPU for a slightly smaller file) ... veryslow."),
    frames: int = typer.Option(None, "--frames", metavar="N",
                               help="Only the first N frames (a quick look); audio is cut to match."),
) -> None:
    """Re-express every face in every frame of a video, in order, keeping the audio.

    Ctrl-C keeps a playable file with every frame done so far (exit code 130).

    Examples:
      rtanim video in.mp4 -o out.mp4 --aus smile
      rtanim video in.mp4 -o out.mp4 --timeline examples/wink_and_smile.json --frames 150
      rtanim video in.mp4 -o out.mp4 --timeline other.mp4   # expression transfer
    """
    from rtanim.runs import run_video

    with guard():
        run_video(src, out, aus=aus, timeline=timeline, model=model, engine=engine, faces=faces, max_faces=max_faces,
                  track_every=track_every, batch=batch, stats_json=stats_json, codec=codec, crf=crf, preset=preset,
                  max_frames=frames, reuse=reuse, console=console, err_console=err_console)
    console.print(f"wrote {out}", highlight=False)


@app.command("webcam", cls=Command)
def webcam_cmd(
    camera: str = typer.Option("0", "--camera", metavar="INDEX|DEVICE|FILE",
                               help="Camera index, /dev/videoN, or a video file played like a camera."),
    aus: str = typer.Option(None, "--aus", metavar=AUS_MV, help=AUS_OPT_HELP),
    timeline: Path = typer.Option(None, "--timeline", metavar="FILE|CSV|VIDEO", help=TIMELINE_OPT_HELP),
    model: str = typer.Option("default", "--model", metavar=MODEL_MV, help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help=ENGINE_HELP),
    vcam: bool = typer.Option(False, "--vcam", help="Send the result to a virtual camera video-call apps can pick."),
    preview: bool = typer.Option(
        None, "--preview/--no-preview", help="Preview window with hotkeys (default: when a display is available)."
    ),
    out: list[str] = typer.Option([], "--out", "-o", metavar="FILE|URL",
                                  help="Also write a file, or stream to udp:// srt:// rtmp:// ... (repeatable)."),
    faces: str = typer.Option("largest", "--faces", metavar="largest|all", help=FACES_HELP),
    max_faces: int = typer.Option(4, "--max-faces", min=1, metavar="N", help=MAX_FACES_HELP),
    track_every: int = typer.Option(TRACK_EVERY, "--track-every", min=1, metavar="N", help=TRACK_EVERY_HELP),
    size: str = typer.Option(None, "--size", metavar="WxH", help="Requested camera mode, e.g. 1280x720."),
    fps: float = typer.Option(None, "--fps", metavar="FPS", help="Requested camera frame rate."),
    paced: bool = typer.Option(True, "--paced/--no-paced", help="A file as --camera: real time (default) or flat out."),
    reuse: bool = typer.Option(True, "--reuse/--no-reuse", help=REUSE_HELP),
    passthrough: str = typer.Option(
        None, "--passthrough", metavar="AU,...|none",
        help="AUs that follow your face (default AU25,AU26 so you can talk, or the file's own list); 'none' for none.",
    ),
    stats_json: Path = typer.Option(None, "--stats-json", metavar="FILE",
                                    help="Write fps, latency and per-stage times as JSON."),
    panel: bool = typer.Option(False, "--panel",
                               help="Serve a control page in your browser: a slider per AU, presets, timelines, "
                               "preview and status (prints its URL)."),
    panel_port: int = typer.Option(None, "--panel-port", metavar="PORT",
                                   help="Port of the control page (default 8765; 0 picks a free one)."),
    panel_host: str = typer.Option(None, "--panel-host", metavar="ADDRESS",
                                   help="Listen on this address instead of 127.0.0.1 only (e.g. 0.0.0.0); every "
                                   "request then needs the access token printed with the URL."),
) -> None:
    """Re-express your face live: newest frame only, so latency stays bounded.

    Preview keys: q quit, space effect on/off, p pause the timeline, 1-9 presets (again: back), o overlay.
    --panel drives the same run from a browser page at http://127.0.0.1:8765 (its HTTP API: see README).

    Examples:
      rtanim webcam --aus smile --vcam
      rtanim webcam --aus neutral --vcam --panel           # then open the printed URL
      rtanim webcam --timeline examples/wink_and_smile.json -o take.mp4
      rtanim webcam --camera clip.mp4 --aus smile --model warp   # no camera needed
      rtanim webcam --camera clip.mp4 --aus neutral --model warp --panel --no-preview
    """
    from rtanim.runs import run_webcam

    with guard():
        run_webcam(camera, aus=aus, timeline=timeline, model=model, engine=engine, vcam=vcam, preview=preview,
                   out=out, faces=faces, max_faces=max_faces, track_every=track_every, size=size, fps=fps,
                   paced=paced, passthrough=passthrough, stats_json=stats_json, panel=panel, panel_host=panel_host,
                   panel_port=panel_port, reuse=reuse, console=console, err_console=err_console)


# ------------------------------------------------------------- prepare / train / eval


@app.command("prepare", cls=Command)
def prepare_cmd(
    src: list[Path] = typer.Argument(..., metavar="SRC", help="Image folders (searched recursively), images and videos."),
    out: Path = typer.Option(..., "-o", "--out", metavar="DATASET", help="Dataset folder to write (run again to resume)."),
    fps: float = typer.Option(5.0, "--fps", metavar="FPS", help="Video frames sampled per second."),
    min_face: int = typer.Option(48, "--min-face", metavar="PX", help="Smallest face kept, in frame pixels."),
    max_yaw: float = typer.Option(35.0, "--max-yaw", metavar="DEG", help="Largest head yaw kept, in degrees."),
    min_sharpness: float = typer.Option(15.0, "--min-sharpness", metavar="VAR",
                                        help="Blur filter: Laplacian variance of the crop."),
    max_faces: int = typer.Option(4, "--max-faces", min=1, metavar="N", help="Most faces per image or frame."),
    tiles: bool = typer.Option(False, "--tiles", help="Also search image tiles for small faces (slower)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", metavar="F",
                                        help="Held out: whole videos, whole identities."),
    min_age: int = typer.Option(0, "--min-age", min=0, metavar="YEARS",
                                help="Skip UTKFace images (AGE_... names) of younger people."),
    limit: int = typer.Option(0, "--limit", min=0, metavar="N", help="Stop after this many crops (0: all)."),
    shard: Path = typer.Option(None, "--shard", metavar="FILE.safetensors",
                               help="Also pack everything into one .safetensors file."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the held-out split."),
) -> None:
    """Make a training set: track, align and AU-label every face of SRC (images, folders, videos).

    Writes imgs/, aus.csv, landmarks.npy, meta.json and the original GANimation files (aus_openface.pkl,
    train_ids.csv, test_ids.csv). Unreadable inputs are skipped and listed.

    Examples:
      rtanim prepare ../shared/data/faces -o data/faces
      rtanim prepare talk1.mp4 talk2.mp4 -o data/talk --fps 2 --shard data/talk.safetensors
    """
    with guard():
        for s in src:
            checks.input_path(s, "SRC", folder_ok=True)
        checks.output_folder(out)
        if shard is not None:
            checks.output_file(shard, "--shard", suffixes=(".safetensors",))
        checks.positive(fps, "--fps")
        if not 0 <= test_fraction < 1:
            raise InputError("--test-fraction", f"must be in [0, 1), got {test_fraction:g}")
        from train.prepare import PrepareOptions, prepare

        options = PrepareOptions(fps=fps, min_face=min_face, max_yaw=max_yaw, min_sharpness=min_sharpness,
                                 max_faces=max_faces, tiles=tiles, test_fraction=test_fraction, seed=seed, limit=limit,
                                 min_age=min_age)
        result = prepare([str(s) for s in src], out, options, shard=shard, progress=True)
    for line in result.problems:
        err_console.print(f"[yellow]skipped:[/] {line}", highlight=False)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())) or "none"
    console.print(f"wrote {out}: {result.total} crops ({result.train} train, {result.test} held out); "
                  f"skipped: {skipped}; {result.per_second:.1f} inputs/s", highlight=False)


@app.command("train", cls=Command)
def train_cmd(
    data: Path = typer.Option(None, "--data", metavar="DATASET",
                              help="Dataset: a prepare folder, a GANimation folder or a shard."),
    out: Path = typer.Option(..., "--out", "-o", metavar="RUN", help="Run folder: config.json, checkpoints/, logs, samples/."),
    arch: str = typer.Option(None, "--arch", metavar="lite|ganimation|refine",
                             help="lite (default), ganimation, or refine (the supervised CPU model)."),
    minutes: float = typer.Option(None, "--minutes", min=0.1, metavar="M",
                                  help="refine: time budget of this run (default 60)."),
    flow: bool = typer.Option(False, "--flow", help="Add the flow head (supervised by the AU basis)."),
    steps: int = typer.Option(None, "--steps", min=1, metavar="N", help="Batches to train (critic updates; G every 5th)."),
    batch: int = typer.Option(None, "--batch", min=1, metavar="N", help="Images per batch (per process)."),
    device: str = typer.Option(None, "--device", metavar="auto|cpu|cuda|cuda:N", help="auto, cpu, cuda or cuda:N."),
    config: Path = typer.Option(None, "--config", metavar="FILE", help="JSON file of settings to start from."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Any setting, KEY=VALUE (repeatable): lambda_cyc=10 ..."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
) -> None:
    """Train a generator (single process). Several GPUs: `torchrun --nproc_per_node K -m train ...` (same options).

    Every setting, loss weights included, is recorded in RUN/config.json; Ctrl-C saves a checkpoint.
    `--set stage=flow` pretrains a flow model's geometry without a critic (cheap, fine on a CPU);
    `--set init=shipped` or `--set init=PATH` starts from existing weights.

    `--arch refine` trains the refine model supervised on the CPU from prepared video frames (a
    prepare folder, or a folder of them), resuming the run in --out when it has one.

    Examples:
      rtanim train --data data/faces --out runs/lite --set stage=flow --flow --steps 2000
      rtanim train --data data/faces --out runs/lite --resume --steps 20000
      rtanim train --arch refine --data data/talk --out runs/refine --minutes 150
    """
    with guard():
        checks.output_folder(out)
        if data is not None:
            checks.input_path(data, "--data", folder_ok=True,
                              missing="no such dataset (run `rtanim prepare SRC... -o DATASET` first)")
        if config is not None:
            checks.input_path(config, "--config")
        if arch == "refine":
            if data is None:
                raise InputError("--data", "give the prepared frames (a prepare folder or a folder of them)")
            argv = ["--data", str(data), "--run", str(out), "--minutes", str(minutes or 60.0)]
            argv += ["--steps", str(steps)] if steps else []
            argv += ["--batch", str(batch)] if batch else []
            for kv in sets:
                key, _, value = kv.partition("=")
                if key != "init" or not value:
                    raise InputError(f"--set {kv}", "refine takes only --set init=PATH")
                argv += ["--init", value]
            from train.refine_train import main as refine_main

            raise typer.Exit(refine_main(argv))
        from train.config import build_config

        cfg = build_config(data, out, arch=arch, flow=flow or None, steps=steps, batch=batch, device=device,
                           config_file=config, sets=sets, resume=resume)
        from train.trainer import train

        result = train(cfg, resume=resume, progress=True)
    console.print(f"step {result.step}: {result.images_per_s:.2f} images/s; wrote {result.checkpoint}",
                  highlight=False)


@app.command("eval", cls=Command)
def eval_cmd(
    model: str = typer.Option(..., "--model", metavar=MODEL_MV, help=MODEL_HELP),
    data: Path = typer.Option(None, "--data", metavar="DIR|VIDEO",
                              help="A dataset folder (held-out split), an image folder or a video."),
    out: Path = typer.Option(..., "-o", "--out", metavar="REPORT_DIR",
                             help="Report folder: report.md, report.json, au_grid.png."),
    reenact: Path = typer.Option(None, "--reenact", metavar="CLIP|DIR|LIST.txt",
                                 help="Self-reenactment test on held-out clips: a clip, a folder or a .txt list "
                                 "(rows copy, warp and --model; reenact.md)."),
    pairs: int = typer.Option(6, "--pairs", min=1, metavar="N", help="Self-reenactment: frame pairs per clip."),
    reference: str = typer.Option("before", "--reference", metavar="WHEN",
                                  help="Self-reenactment, for a model that remembers the person's open mouth: "
                                       "what it has seen (before: the frames before the source, as live; clip: "
                                       "the whole clip but the target's second; none)."),
    faces: int = typer.Option(8, "--faces", min=1, metavar="N", help="Faces to re-express."),
    aus: str = typer.Option(None, "--aus", metavar="AU,...", help="AUs to command, e.g. AU12,AU26 (default: all 17)."),
    frames: int = typer.Option(90, "--frames", min=2, metavar="N", help="Frames of the flicker clip."),
    clip: Path = typer.Option(None, "--clip", metavar="VIDEO", help="Flicker clip (default: --data when it is a video)."),
    flicker_aus: str = typer.Option("smile", "--flicker-aus", metavar="PRESET", help="Preset held constant over the clip."),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help=ENGINE_HELP),
    basis: Path = typer.Option(None, "--basis", metavar="FILE.npz",
                               help="AU basis .npz for the warp model (default: the shipped one)."),
) -> None:
    """Measure a model: AU fidelity (MAE, Spearman), identity, background and temporal flicker.

    With --reenact, also the self-reenactment test: pose-matched frame pairs of one person, the
    source re-expressed with the target's AUs and compared with the real target (mouth / eye PSNR
    and SSIM, expression error, identity), for copy, warp and the model in one run.

    Examples:
      rtanim eval --model warp --data ../shared/data/faces/expressive -o report
      rtanim eval --model train/init/refine.safetensors --reenact calib/reenact_clips.txt -o report
    """
    with guard():
        if data is None and reenact is None:
            raise InputError("eval", "give --data (still-image eval), --reenact (self-reenactment) or both")
        checks.model(model)
        checks.engine(engine)
        for path, option in ((data, "--data"), (reenact, "--reenact"), (clip, "--clip"), (basis, "--basis")):
            if path is not None:
                checks.input_path(path, option, folder_ok=option in ("--data", "--reenact"))
        checks.output_folder(out)
        checks.choice(reference, checks.REFERENCE_POLICIES, "--reference", "reference policy")
        from rtanim.aus import parse_codes

        codes = parse_codes(aus)
        if data is not None:
            from rtanim.evaluate import EvalOptions, evaluate

            options = EvalOptions(faces=faces, aus=codes, frames=frames, flicker_target=flicker_aus,
                                  engine=engine, clip=None if clip is None else str(clip),
                                  basis=None if basis is None else str(basis))
            report = evaluate(model, data, out, options, progress=True)
            console.print(f"wrote {out}/report.md: mean AU MAE {report.au['mean_mae']}, Spearman "
                          f"{report.au['mean_spearman']}, background changed {report.background['changed_pixels']} px",
                          highlight=False)
        if reenact is not None:
            from rtanim.reenact import ReenactOptions, evaluate_reenact

            r = evaluate_reenact(model, reenact, out, ReenactOptions(pairs_per_clip=pairs, reference=reference),
                                 engine=engine)
            best = {k: v.get("mouth_psnr") for k, v in r.rows.items()}
            console.print(f"wrote {out}/reenact.md: {r.pairs} pairs; mouth PSNR {best}", highlight=False)


@app.command("demo", cls=Command)
def demo_cmd(
    out: Path = typer.Option(Path("rtanim-demo"), "-o", "--out", metavar="DIR", help="Folder for the results (created)."),
    model: str = typer.Option("default", "--model", metavar=MODEL_MV, help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", metavar=ENGINE_MV, help=ENGINE_HELP),
) -> None:
    """Run rtanim offline on the bundled portrait: no camera, data or download needed.

    Writes expressions.png (the face with smile, surprise, a wink and closed eyes), input.mp4 (a
    short clip made from the portrait, with a tone as audio), timeline.json and demo.mp4 (the clip
    re-expressed along the timeline, audio kept).

    Examples:
      rtanim demo -o rtanim-demo
      rtanim demo -o demo-warp --model warp
    """
    with guard():
        checks.model(model)
        checks.engine(engine)
        checks.output_folder(out)
        from rtanim.demo import run_demo

        paths = run_demo(out, model, engine, console=console, err_console=err_console)
    for p in paths:
        console.print(f"wrote {p}", highlight=False)


def main() -> None:
    from rtanim.malloc_arenas import limit_arenas

    limit_arenas()  # before any thread exists: glibc reads the limit once (flat memory in long live runs)
    app()


if __name__ == "__main__":
    sys.exit(main())
