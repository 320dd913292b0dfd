"""What every `rtanim` command shares: help that teaches by example, the error guard that turns
expected errors into one line and the contract's exit codes, the consoles and the option help
texts that several commands repeat. Imports nothing heavy (the CLI checks input before torch loads)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup

from rtanim.errors import InputError, RunError

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

#: Option types shown as plain metavars when an option names none ("N", not "<int range>").
_TYPE_METAVARS = {"int": "N", "float": "NUM", "path": "PATH", "Path": "PATH", "str": "TEXT"}


def reflow(text: str) -> str:
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
        self.help = reflow(self.help or "")

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


MODEL_HELP = (
    "warp (moves the face geometry, no network), default (the shipped trained model; warp if none ships), "
    "lite, ganimation, lite+flow, ganimation+flow, or a checkpoint path (.safetensors or GANimation .pth)."
)
ENGINE_HELP = "auto (TensorRT > PyTorch CUDA > ONNX Runtime CPU), tensorrt, torch or onnxruntime."
MODEL_MV, ENGINE_MV = "NAME|PATH", "auto|tensorrt|torch|onnxruntime"
TRACK_EVERY_HELP = ("Run the face landmarker on 1 frame in N and follow the faces by optical flow in between "
                    "(cheaper tracking; expressions refresh every N frames). 1: every frame.")
AUS_MV = "PRESET|AU=V,...|FILE"
REUSE_HELP = ("Reuse a face's last generated output while it holds still and its target AUs do not change "
              "(looks the same, skips the model); --no-reuse runs the model on every face of every frame.")
