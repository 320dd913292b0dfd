"""The model-lifecycle commands: `rtanim prepare` (make a training set), `train`, `eval`
(measure), `export` (ONNX, TensorRT, safetensors) and `bench` (speed). The commands that re-express
faces are in cli.py, which registers these with :func:`register`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from rtanim import checks
from rtanim.checks import TRACK_EVERY
from rtanim.cli.base import (
    ENGINE_HELP,
    ENGINE_MV,
    MODEL_HELP,
    MODEL_MV,
    TRACK_EVERY_HELP,
    console,
    err_console,
    guard,
)
from rtanim.errors import InputError

# --------------------------------------------------------------- export

EXPORT_FORMATS = ("onnx", "tensorrt", "safetensors")
PRECISIONS = ("fp32", "fp16", "int8")


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
    from rtanim.checks import parse_size

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
    from rtanim.measure.bench_report import bench_tables, draw_chart, write_report
    from rtanim.measure.bench_run import bench_matrix

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


# ------------------------------------------------------------- prepare / train / eval


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
        from rtanim.expression.aus import parse_codes

        codes = parse_codes(aus)
        if data is not None:
            from rtanim.measure.evaluate import EvalOptions, evaluate

            options = EvalOptions(faces=faces, aus=codes, frames=frames, flicker_target=flicker_aus,
                                  engine=engine, clip=None if clip is None else str(clip),
                                  basis=None if basis is None else str(basis))
            report = evaluate(model, data, out, options, progress=True)
            console.print(f"wrote {out}/report.md: mean AU MAE {report.au['mean_mae']}, Spearman "
                          f"{report.au['mean_spearman']}, background changed {report.background['changed_pixels']} px",
                          highlight=False)
        if reenact is not None:
            from rtanim.measure.reenact import ReenactOptions, evaluate_reenact

            r = evaluate_reenact(model, reenact, out, ReenactOptions(pairs_per_clip=pairs, reference=reference),
                                 engine=engine)
            best = {k: v.get("mouth_psnr") for k, v in r.rows.items()}
            console.print(f"wrote {out}/reenact.md: {r.pairs} pairs; mouth PSNR {best}", highlight=False)


def register(app: typer.Typer, command_cls: type) -> None:
    """Add these commands to ``app`` (after the ones that re-express faces, so `rtanim --help` lists
    those first)."""
    for name, fn in (("prepare", prepare_cmd), ("train", train_cmd), ("eval", eval_cmd), ("export", export_cmd),
                     ("bench", bench_cmd)):
        app.command(name, cls=command_cls)(fn)
