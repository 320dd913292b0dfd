"""The `rtanim` command: parses and validates arguments, then calls rtanim/. No logic of its own."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

import rtanim
from rtanim.errors import InputError, RunError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

app = typer.Typer(
    name="rtanim",
    help=(
        "Real-time facial re-expression from Action Units (AUs).\n\n"
        "An AU is one facial muscle movement from the Facial Action Coding System (FACS): AU12 pulls the lip "
        "corners up (a smile), AU45 closes the eyes. rtanim changes the AUs of every face in a still, a video "
        "or a webcam feed. Run `rtanim aus` to see every AU and preset in plain words."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
timeline_app = typer.Typer(help="Check and plot AU timelines (JSON keyframes or OpenFace CSV).", no_args_is_help=True)
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


# ------------------------------------------------------------------ aus


@app.command("aus")
def aus_cmd() -> None:
    """List the Action Units a model understands, their one-sided variants, and the named presets.

    Intensities are 0 (at rest) to 1 (strongest). Use the codes in `--aus` files and timelines, e.g.
    `{"aus": {"AU12": 1.0, "AU06": 0.6}}`, or a preset name: `--aus smile`.
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


@timeline_app.command("check")
def timeline_check(
    file: Path = typer.Argument(..., help="Timeline JSON, static AU file or OpenFace CSV."),
) -> None:
    """Validate a timeline and summarise it. Errors name the file, the JSON path and the reason (exit code 2)."""
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


@timeline_app.command("plot")
def timeline_plot(
    file: Path = typer.Argument(..., help="Timeline JSON, static AU file or OpenFace CSV."),
    out: Path = typer.Option(..., "-o", "--out", help="PNG to write."),
    duration: float = typer.Option(None, help="Seconds to draw (default: the timeline, twice if it loops)."),
) -> None:
    """Draw every AU's curve over time to a PNG, to see a timeline before running it."""
    from rtanim.plots import plot_timeline
    from rtanim.timeline import load_timeline

    with guard():
        tl = load_timeline(file)
        if not out.parent.is_dir():
            raise InputError(out, "output folder does not exist")
        if duration is not None and duration <= 0:
            raise InputError("--duration", "must be positive")
        plot_timeline(tl, out, duration)
    console.print(f"wrote {out}")


# --------------------------------------------------------------- export


@app.command("export")
def export_cmd(
    model: str = typer.Option(
        "default",
        "--model",
        "-m",
        help="default | lite | ganimation | lite+flow | ganimation+flow, a .safetensors file, or an original "
        "GANimation / ganimation_replicate generator .pth (imported without running any pickled code).",
    ),
    fmt: str = typer.Option(..., "--format", "-f", help="onnx | tensorrt | safetensors."),
    out: Path = typer.Option(..., "-o", "--out", help="File to write."),
    precision: str = typer.Option(
        None, "--precision", help="fp32 | fp16 | int8 (int8: tensorrt with --calib). Default fp32; fp16 for tensorrt."
    ),
    calib: Path = typer.Option(
        None, "--calib", help="INT8 calibration: a folder of 128x128 face crops, or a .cache file from an earlier run."
    ),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Largest batch a TensorRT engine accepts."),
) -> None:
    """Export a generator: ONNX (the engine I/O contract), a TensorRT engine, or an rtanim safetensors checkpoint.

    `--format safetensors` converts an original GANimation `.pth` into rtanim's checkpoint format.
    """
    from engines.convert import export_model

    with guard():
        if not out.parent.is_dir():
            raise InputError(out, "output folder does not exist", field="-o")
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


@app.command("bench")
def bench_cmd(
    engines: bool = typer.Option(False, "--engines", help="Time each available engine x model x batch size."),
    models: str = typer.Option(
        None, "--models", help="Comma-separated models (default: lite, lite+flow, ganimation, ganimation+flow)."
    ),
    backends: str = typer.Option(None, "--backends", help="Comma-separated subset of tensorrt,torch,onnxruntime."),
    batches: str = typer.Option(None, "--batches", help="Comma-separated batch sizes (default 1,8,32; 1,8 --quick)."),
    iters: int = typer.Option(None, "--iters", min=1, help="Timed calls per measurement (default 10; 3 --quick)."),
    quick: bool = typer.Option(False, "--quick", help="Few iterations, batches 1 and 8: a rough table in a minute."),
    device: str = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: the best available)."),
    input_clip: Path = typer.Option(None, "--input", help="End-to-end pipeline on this clip (offline and paced live)."),
    model: str = typer.Option("warp", "--model", help="--input: the model to run (see `rtanim video --help`)."),
    engine: str = typer.Option("auto", "--engine", help="--input: auto, tensorrt, torch or onnxruntime."),
    frames: int = typer.Option(120, "--frames", help="--input: frames of the clip to use."),
    size: str = typer.Option(None, "--size", help="--input: resize frames to WxH first, e.g. 1280x720."),
) -> None:
    """Benchmark. `--engines`: median ms per batch and crops/s of each available backend and model,
    with the speed-up over PyTorch measured in the same run. `--input CLIP`: end-to-end fps, latency
    and per-stage times of the whole pipeline, offline and paced live (frames preloaded, null sink).
    """
    with guard():
        if engines == (input_clip is not None):
            raise InputError("bench", "choose one mode: --engines or --input CLIP")
        if input_clip is not None:
            from rtanim.benchrun import bench_pipeline, bench_table

            results, desc = bench_pipeline(input_clip, model=model, engine=engine, device=device, frames=frames,
                                           size=size, err_console=err_console)
            console.print(bench_table(results, desc))
            return
        _bench_engines(models, backends, batches, iters, quick, device)


def _bench_engines(models, backends, batches, iters, quick, device) -> None:
    from rich.progress import Progress

    from engines.bench import MODELS, BenchConfig, bench_engines
    from engines.select import BACKENDS

    kw: dict = {"device": device}
    for key, value in (
        ("models", _csv(models, "--models")),
        ("backends", _csv(backends, "--backends")),
        ("batches", _csv(batches, "--batches", int)),
        ("iters", iters),
    ):
        if value is not None:
            kw[key] = tuple(value) if isinstance(value, list) else value
    bad = [b for b in kw.get("backends", ()) if b not in BACKENDS]
    if bad:
        raise InputError("--backends", f"unknown backend {bad[0]!r} (choose {', '.join(BACKENDS)})")
    if any(b < 1 for b in kw.get("batches", ())):
        raise InputError("--batches", "batch sizes must be positive")
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

MODEL_HELP = (
    "warp (moves the face geometry, no network), default (the shipped trained model; warp if none ships), "
    "lite, ganimation, lite+flow, ganimation+flow, or a checkpoint path (.safetensors or GANimation .pth)."
)
ENGINE_HELP = "auto (TensorRT > PyTorch CUDA > ONNX Runtime CPU), tensorrt, torch or onnxruntime."


@app.command("image")
def image_cmd(
    src: Path = typer.Argument(..., help="Input image (PNG, JPEG, BMP, TIFF, WebP)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output image; or, with --grid, the grid figure."),
    aus: str = typer.Option(
        None, "--aus", help="Target AUs: a preset (smile, surprise:0.7), inline (AU12=1,AU06=0.6) or an AU file."
    ),
    model: str = typer.Option("default", "--model", help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    grid: str = typer.Option(
        None, "--grid", help="Write the AU grid instead: e.g. AU01,AU12,AU26 or 'all', at 0, 0.33, 0.66, 1."
    ),
    max_faces: int = typer.Option(8, "--max-faces", min=1, help="Most faces to re-express."),
) -> None:
    """Re-express every face in a still image.

    Examples: `rtanim image me.jpg -o smile.png --aus smile`;
    `rtanim image me.jpg -o grid.png --grid AU01,AU12,AU26,AU45 --model warp`.
    """
    from rtanim import stills
    from rtanim.aus import parse_codes
    from rtanim.runtime import load_generator
    from rtanim.timeline import parse_aus_arg

    with guard():
        if (aus is None) == (grid is None):
            raise InputError("--aus", "give target AUs with --aus, or AU codes with --grid (one of the two)")
        image = stills.read_image(src)
        stills.check_output_image(out, src)
        timeline = parse_aus_arg(aus) if aus is not None else None
        codes = parse_codes(grid, "--grid") if grid is not None else None
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


@app.command("analyze")
def analyze_cmd(
    src: Path = typer.Argument(..., help="Input video."),
    out: Path = typer.Option(..., "-o", "--out", help="CSV to write (OpenFace-compatible AUxx_r columns, 0-5)."),
    max_faces: int = typer.Option(4, "--max-faces", min=1, help="Most faces to follow."),
) -> None:
    """Measure every face's live AUs in each frame of a video, per face id.

    The CSV is a timeline too: `rtanim video other.mp4 -o out.mp4 --timeline aus.csv` transfers
    this video's expressions to another.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtanim.analysis import analyze_video, write_analysis_csv
    from rtanim.sources import VideoFileSource

    with guard():
        if out.suffix.lower() != ".csv":
            raise InputError(out, "the output must be a .csv file")
        if not out.parent.is_dir():
            raise InputError(out, "output folder does not exist")
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
FACES_HELP = "largest: only the biggest face; all: every face found (up to 4)."


@app.command("video")
def video_cmd(
    src: Path = typer.Argument(..., help="Input video (any container / codec FFmpeg reads). Never modified."),
    out: Path = typer.Option(..., "-o", "--out", help="Output video (.mp4, .mkv, .mov, .webm ...); audio is copied."),
    aus: str = typer.Option(None, "--aus", help=AUS_OPT_HELP),
    timeline: Path = typer.Option(None, "--timeline", help=TIMELINE_OPT_HELP),
    model: str = typer.Option("default", "--model", help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    faces: str = typer.Option("all", "--faces", help=FACES_HELP),
    batch: int = typer.Option(8, "--batch", help="Faces per engine call (several frames batched together)."),
    stats_json: Path = typer.Option(None, "--stats-json", help="Write fps, latency and per-stage times as JSON."),
    codec: str = typer.Option(None, "--codec", help="Video encoder (default libx264; libvpx-vp9 for .webm)."),
    crf: int = typer.Option(18, "--crf", help="Quality for x264/x265/VP9/AV1: 0 lossless, 18 default, higher smaller."),
    frames: int = typer.Option(None, "--frames", help="Only the first N frames (a quick look); audio is cut to match."),
) -> None:
    """Re-express every face in every frame of a video, in order, keeping the audio.

    Examples: `rtanim video in.mp4 -o out.mp4 --aus smile`; `rtanim video in.mp4 -o out.mp4 --timeline other.mp4`
    (expression transfer). Ctrl-C keeps a playable file with every frame done so far (exit code 130).
    """
    from rtanim.runs import run_video

    with guard():
        run_video(src, out, aus=aus, timeline=timeline, model=model, engine=engine, faces=faces, batch=batch,
                  stats_json=stats_json, codec=codec, crf=crf, max_frames=frames, console=console,
                  err_console=err_console)
    console.print(f"wrote {out}", highlight=False)


@app.command("webcam")
def webcam_cmd(
    camera: str = typer.Option("0", "--camera", help="Camera index, /dev/videoN, or a video file played like a camera."),
    aus: str = typer.Option(None, "--aus", help=AUS_OPT_HELP),
    timeline: Path = typer.Option(None, "--timeline", help=TIMELINE_OPT_HELP),
    model: str = typer.Option("default", "--model", help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    vcam: bool = typer.Option(False, "--vcam", help="Send the result to a virtual camera video-call apps can pick."),
    preview: bool = typer.Option(
        None, "--preview/--no-preview", help="Preview window with hotkeys (default: when a display is available)."
    ),
    out: list[str] = typer.Option([], "--out", "-o", help="Also write a file, or stream to udp:// srt:// rtmp:// ..."),
    faces: str = typer.Option("largest", "--faces", help=FACES_HELP),
    size: str = typer.Option(None, "--size", help="Requested camera mode, e.g. 1280x720."),
    fps: float = typer.Option(None, "--fps", help="Requested camera frame rate."),
    paced: bool = typer.Option(True, "--paced/--no-paced", help="A file as --camera: real time (default) or flat out."),
    passthrough: str = typer.Option(
        None, "--passthrough", help="AUs that follow your face (default AU25,AU26 so you can talk, or the file's "
        "own list); 'none' for none."
    ),
    stats_json: Path = typer.Option(None, "--stats-json", help="Write fps, latency and per-stage times as JSON."),
) -> None:
    """Re-express your face live: newest frame only, so latency stays bounded.

    Preview keys: q quit, space effect on/off, p pause the timeline, 1-9 presets (again: back), o overlay.
    Try it without a camera: `rtanim webcam --camera clip.mp4 --aus smile --model warp`.
    """
    from rtanim.runs import run_webcam

    with guard():
        run_webcam(camera, aus=aus, timeline=timeline, model=model, engine=engine, vcam=vcam, preview=preview,
                   out=out, faces=faces, size=size, fps=fps, paced=paced, passthrough=passthrough,
                   stats_json=stats_json, console=console, err_console=err_console)


# ------------------------------------------------------------- prepare / train / eval


@app.command("prepare")
def prepare_cmd(
    src: list[Path] = typer.Argument(..., help="Image folders (searched recursively), images and videos."),
    out: Path = typer.Option(..., "-o", "--out", help="Dataset folder to write (run again to resume)."),
    fps: float = typer.Option(5.0, "--fps", help="Video frames sampled per second."),
    min_face: int = typer.Option(48, "--min-face", help="Smallest face kept, in frame pixels."),
    max_yaw: float = typer.Option(35.0, "--max-yaw", help="Largest head yaw kept, in degrees."),
    min_sharpness: float = typer.Option(15.0, "--min-sharpness", help="Blur filter: Laplacian variance of the crop."),
    max_faces: int = typer.Option(4, "--max-faces", min=1, help="Most faces per image or frame."),
    tiles: bool = typer.Option(False, "--tiles", help="Also search image tiles for small faces (slower)."),
    test_fraction: float = typer.Option(0.1, "--test-fraction", help="Held out: whole videos, whole identities."),
    min_age: int = typer.Option(0, "--min-age", min=0, help="Skip UTKFace images (AGE_... names) of younger people."),
    limit: int = typer.Option(0, "--limit", min=0, help="Stop after this many crops (0: all)."),
    shard: Path = typer.Option(None, "--shard", help="Also pack everything into one .safetensors file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split."),
) -> None:
    """Make a training set: track, align and AU-label every face of SRC (images, folders, videos).

    Writes imgs/, aus.csv, landmarks.npy, meta.json and the original GANimation files (aus_openface.pkl,
    train_ids.csv, test_ids.csv). Unreadable inputs are skipped and listed.
    """
    from train.prepare import PrepareOptions, prepare

    with guard():
        if shard is not None and shard.suffix != ".safetensors":
            raise InputError(shard, "the shard must be a .safetensors file", field="--shard")
        options = PrepareOptions(fps=fps, min_face=min_face, max_yaw=max_yaw, min_sharpness=min_sharpness,
                                 max_faces=max_faces, tiles=tiles, test_fraction=test_fraction, seed=seed, limit=limit,
                                 min_age=min_age)
        result = prepare([str(s) for s in src], out, options, shard=shard, progress=True)
    for line in result.problems:
        err_console.print(f"[yellow]skipped:[/] {line}", highlight=False)
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items())) or "none"
    console.print(f"wrote {out}: {result.total} crops ({result.train} train, {result.test} held out); "
                  f"skipped: {skipped}; {result.per_second:.1f} inputs/s", highlight=False)


@app.command("train")
def train_cmd(
    data: Path = typer.Option(None, "--data", help="Dataset: a prepare folder, a GANimation folder or a shard."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.json, checkpoints/, logs, samples/."),
    arch: str = typer.Option(None, "--arch", help="lite (default), ganimation, or refine (the supervised CPU model)."),
    minutes: float = typer.Option(None, "--minutes", min=0.1, help="refine: time budget of this run (default 60)."),
    flow: bool = typer.Option(False, "--flow", help="Add the flow head (supervised by the AU basis)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Batches to train (critic updates; G every 5th)."),
    batch: int = typer.Option(None, "--batch", min=1, help="Images per batch (per process)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    config: Path = typer.Option(None, "--config", help="JSON file of settings to start from."),
    sets: list[str] = typer.Option([], "--set", help="Any setting, KEY=VALUE (repeatable): lambda_cyc=10 ..."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
) -> None:
    """Train a generator (single process). Several GPUs: `torchrun --nproc_per_node K -m train ...` (same options).

    Every setting, loss weights included, is recorded in RUN/config.json; Ctrl-C saves a checkpoint.
    `--set stage=flow` pretrains a flow model's geometry without a critic (cheap, fine on a CPU);
    `--set init=shipped` or `--set init=PATH` starts from existing weights.

    `--arch refine` trains the refine model supervised on the CPU from prepared video frames (a
    prepare folder, or a folder of them), resuming the run in --out when it has one:
    rtanim train --arch refine --data .data/talk --out runs/refine --minutes 150
    """
    if arch == "refine":
        from train.refine_train import main as refine_main

        if data is None:
            err_console.print("error: --data: give the prepared frames (a prepare folder or a folder of them)")
            raise typer.Exit(2)
        argv = ["--data", str(data), "--run", str(out), "--minutes", str(minutes or 60.0)]
        argv += ["--steps", str(steps)] if steps else []
        argv += ["--batch", str(batch)] if batch else []
        for kv in sets:
            key, _, value = kv.partition("=")
            if key != "init" or not value:
                err_console.print(f"error: --set {kv}: refine takes only --set init=PATH")
                raise typer.Exit(2)
            argv += ["--init", value]
        raise typer.Exit(refine_main(argv))
    from train.config import build_config
    from train.trainer import train

    with guard():
        cfg = build_config(data, out, arch=arch, flow=flow or None, steps=steps, batch=batch, device=device,
                           config_file=config, sets=sets, resume=resume)
        result = train(cfg, resume=resume, progress=True)
    console.print(f"step {result.step}: {result.images_per_s:.2f} images/s; wrote {result.checkpoint}",
                  highlight=False)


@app.command("eval")
def eval_cmd(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    data: Path = typer.Option(None, "--data", help="A dataset folder (held-out split), an image folder or a video."),
    out: Path = typer.Option(..., "-o", "--out", help="Report folder: report.md, report.json, au_grid.png."),
    reenact: Path = typer.Option(None, "--reenact", help="Self-reenactment test on held-out clips: a clip, a folder "
                                 "or a .txt list (rows copy, warp and --model; reenact.md)."),
    pairs: int = typer.Option(6, "--pairs", min=1, help="Self-reenactment: frame pairs per clip."),
    faces: int = typer.Option(8, "--faces", min=1, help="Faces to re-express."),
    aus: str = typer.Option(None, "--aus", help="AUs to command, e.g. AU12,AU26 (default: all 17)."),
    frames: int = typer.Option(90, "--frames", min=2, help="Frames of the flicker clip."),
    clip: Path = typer.Option(None, "--clip", help="Flicker clip (default: --data when it is a video)."),
    flicker_aus: str = typer.Option("smile", "--flicker-aus", help="Preset held constant over the clip."),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
    basis: Path = typer.Option(None, "--basis", help="AU basis .npz for the warp model (default: the shipped one)."),
) -> None:
    """Measure a model: AU fidelity (MAE, Spearman), identity, background and temporal flicker.

    With --reenact, also the self-reenactment test: pose-matched frame pairs of one person, the
    source re-expressed with the target's AUs and compared with the real target (mouth / eye PSNR
    and SSIM, expression error, identity), for copy, warp and the model in one run.

    Example: rtanim eval --model train/init/refine.safetensors --reenact calib/reenact_clips.txt -o report
    """
    from rtanim.aus import parse_codes
    from rtanim.evaluate import EvalOptions, evaluate

    with guard():
        if data is None and reenact is None:
            raise InputError("eval", "give --data (still-image eval), --reenact (self-reenactment) or both")
        if data is not None:
            options = EvalOptions(faces=faces, aus=parse_codes(aus), frames=frames, flicker_target=flicker_aus,
                                  engine=engine, clip=None if clip is None else str(clip),
                                  basis=None if basis is None else str(basis))
            report = evaluate(model, data, out, options, progress=True)
            console.print(f"wrote {out}/report.md: mean AU MAE {report.au['mean_mae']}, Spearman "
                          f"{report.au['mean_spearman']}, background changed {report.background['changed_pixels']} px",
                          highlight=False)
        if reenact is not None:
            from rtanim.reenact import ReenactOptions, evaluate_reenact

            r = evaluate_reenact(model, reenact, out, ReenactOptions(pairs_per_clip=pairs), engine=engine)
            best = {k: v.get("mouth_psnr") for k, v in r.rows.items()}
            console.print(f"wrote {out}/reenact.md: {r.pairs} pairs; mouth PSNR {best}", highlight=False)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("rtanim-demo"), "-o", "--out", help="Folder for the results (created)."),
    model: str = typer.Option("default", "--model", help=MODEL_HELP),
    engine: str = typer.Option("auto", "--engine", help=ENGINE_HELP),
) -> None:
    """Run rtanim offline on the bundled portrait: no camera, data or download needed.

    Writes expressions.png (the face with smile, surprise, a wink and closed eyes), input.mp4 (a
    short clip made from the portrait, with a tone as audio), timeline.json and demo.mp4 (the clip
    re-expressed along the timeline, audio kept).
    """
    from rtanim.demo import run_demo

    with guard():
        paths = run_demo(out, model, engine, console=console, err_console=err_console)
    for p in paths:
        console.print(f"wrote {p}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
