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


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
