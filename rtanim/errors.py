"""Errors that reach the user as one line and exit code 2 (bad input) or 1 (run time)."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input or usage: the CLI prints ``file: field: reason`` and exits with 2.

    ``file`` is the offending path (or command-line option), ``field`` the JSON
    path / column / option inside it, ``reason`` what is wrong, in plain words.
    """

    exit_code = 2

    def __init__(self, file: str | Path | None, reason: str, field: str | None = None) -> None:
        self.file = None if file is None else str(file)
        self.field = field
        self.reason = reason
        super().__init__(self.line())

    def line(self) -> str:
        return ": ".join(p for p in (self.file, self.field, self.reason) if p)


class RunError(Exception):
    """A failure while running (device lost, engine build failed): exit code 1."""

    exit_code = 1
