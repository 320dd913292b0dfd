"""The `rtanim` command: parses and validates arguments, then hands over to rtanim.commands. No logic of its own.

The commands that re-express faces live here; the model's lifecycle (prepare, train, eval,
export, bench) in rtanim/cli/dev.py, and what all commands share in rtanim/cli/base.py.

Bad input is refused before any heavy module loads: every command runs its cheap checks
(rtanim.checks: paths, names, AU codes) first and imports torch, MediaPipe, PyAV and OpenCV
only after them, so a mistake costs a fraction of a second and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

import rtanim
from rtanim import checks
from rtanim.checks import TRACK_EVERY
from rtanim.cli import dev as cli_dev
from rtanim.cli.base import (
    AUS_MV,
    ENGINE_HELP,
    ENGINE_MV,
    MODEL_HELP,
    MODEL_MV,
    REUSE_HELP,
    TRACK_EVERY_HELP,
    Command,
    Group,
    console,
    err_console,
    guard,
)
from rtanim.cli.dev import EXPORT_FORMATS  # noqa: F401 - tests read it here
from rtanim.errors import InputError

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
    from rtanim.expression.aus import AUS, PRESETS, SIDED, describe

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
    from rtanim.expression.timeline import load_timeline

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
        from rtanim.expression.timeline import load_timeline

        tl = load_timeline(file)
        from rtanim.expression.plots import plot_timeline

        plot_timeline(tl, out, duration)
    console.print(f"wrote {out}")


# ------------------------------------------------------------- image / analyze

STILL_FACES = 8
UNNAMED_HELP = ("What the AUs that --aus / --timeline do not name do: follow (the default: the face's own "
                "value, frame by frame, so a talking mouth keeps talking under --aus smile) or zero (the old "
                "rule: at rest). A timeline's \"unnamed\" field says it too; this option wins.")
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
    unnamed: str = typer.Option(None, "--unnamed", metavar="follow|zero", help=UNNAMED_HELP),
) -> None:
    """Re-express every face in a still image.

    The AUs you name take your values; every AU you do not name keeps the face's own (--unnamed zero:
    at rest), so `--aus smile` on a face that shows its teeth keeps them.

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
        if unnamed is not None:  # also with --grid, which has no --aus to apply it to
            checks.choice(unnamed, checks.UNNAMED_RULES, "--unnamed", "rule")
        from rtanim.expression.aus import parse_codes
        from rtanim.expression.timeline import parse_aus_arg, with_unnamed

        timeline = with_unnamed(parse_aus_arg(aus), unnamed) if aus is not None else None
        codes = parse_codes(grid, "--grid") if grid is not None else None
        from rtanim.files import read_image

        image = read_image(src)
        from rtanim.commands import image as stills
        from rtanim.pipeline.generators import load_generator

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

        from rtanim.commands.analyze import analyze_video, write_analysis_csv
        from rtanim.io.source_file import VideoFileSource

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
    unnamed: str = typer.Option(None, "--unnamed", metavar="follow|zero", help=UNNAMED_HELP),
) -> None:
    """Re-express every face in every frame of a video, in order, keeping the audio.

    The AUs you name take your values; every AU you do not name follows the face, frame by frame
    (--unnamed zero: at rest), so `--aus smile` on a talking video keeps the lips moving.

    Ctrl-C keeps a playable file with every frame done so far (exit code 130).

    Examples:
      rtanim video in.mp4 -o out.mp4 --aus smile
      rtanim video in.mp4 -o out.mp4 --timeline examples/wink_and_smile.json --frames 150
      rtanim video in.mp4 -o out.mp4 --timeline other.mp4   # expression transfer
    """
    from rtanim.commands.video import run_video

    with guard():
        run_video(src, out, aus=aus, timeline=timeline, model=model, engine=engine, faces=faces, max_faces=max_faces,
                  track_every=track_every, batch=batch, stats_json=stats_json, codec=codec, crf=crf, preset=preset,
                  max_frames=frames, reuse=reuse, unnamed=unnamed, console=console, err_console=err_console)
    console.print(f"wrote {out}", highlight=False)


@app.command("webcam", cls=Command)
def webcam_cmd(
    camera: str = typer.Option("0", "--camera", metavar="INDEX|DEVICE|FILE",
                               help="Camera index, /dev/videoN, or a video file played like a camera (its picture only: a file's "
                                    "audio is not carried; `rtanim video` keeps it)."),
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
        help="AUs that follow your face even where --aus names them (default AU25,AU26 so you can talk under "
             "surprise, or the file's own list); 'none' for none. AUs --aus does not name follow your face anyway.",
    ),
    unnamed: str = typer.Option(None, "--unnamed", metavar="follow|zero", help=UNNAMED_HELP),
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

    The AUs you name take your values; every other AU follows your face (--unnamed zero: at rest),
    and --passthrough AUs follow it even where named.

    Preview keys: q quit, space effect on/off, p pause the timeline, 1-9 presets (again: back), o overlay.
    --panel drives the same run from a browser page at http://127.0.0.1:8765 (its HTTP API: see README).

    Examples:
      rtanim webcam --aus smile --vcam
      rtanim webcam --aus neutral --vcam --panel           # then open the printed URL
      rtanim webcam --timeline examples/wink_and_smile.json -o take.mp4
      rtanim webcam --camera clip.mp4 --aus smile --model warp   # no camera needed
      rtanim webcam --camera clip.mp4 --aus neutral --model warp --panel --no-preview
    """
    from rtanim.commands.video import run_webcam

    with guard():
        run_webcam(camera, aus=aus, timeline=timeline, model=model, engine=engine, vcam=vcam, preview=preview,
                   out=out, faces=faces, max_faces=max_faces, track_every=track_every, size=size, fps=fps,
                   paced=paced, passthrough=passthrough, stats_json=stats_json, panel=panel, panel_host=panel_host,
                   panel_port=panel_port, reuse=reuse, unnamed=unnamed, console=console, err_console=err_console)


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
        from rtanim.commands.demo import run_demo

        paths = run_demo(out, model, engine, console=console, err_console=err_console)
    for p in paths:
        console.print(f"wrote {p}", highlight=False)


cli_dev.register(app, Command)


def main() -> None:
    from rtanim.pipeline.malloc_arenas import limit_arenas

    limit_arenas()  # before any thread exists: glibc reads the limit once (flat memory in long live runs)
    app()


if __name__ == "__main__":
    sys.exit(main())
