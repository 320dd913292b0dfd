"""The `rtanim` command: parses and validates arguments, then calls rtanim/. No logic of its own."""

from __future__ import annotations

import typer

import rtanim

app = typer.Typer(
    name="rtanim",
    help="Real-time facial re-expression from Action Units (AUs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rtanim {rtanim.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Real-time facial re-expression from Action Units (AUs)."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
