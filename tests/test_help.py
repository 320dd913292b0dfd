"""`--help` teaches: every command has worked examples, usage lines name arguments plainly, types
show as metavars (never `<bool>` or `<str>`), and paragraphs wrap at the terminal, not mid-phrase."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.cli.base import reflow as _reflow

runner = CliRunner()


def command_paths(cmd=None, path=()) -> list[tuple[str, ...]]:
    cmd = cmd or typer.main.get_command(app)
    found = [path]
    for name, sub in getattr(cmd, "commands", {}).items():
        found += command_paths(sub, (*path, name))
    return found


PATHS = command_paths()


def help_of(path: tuple[str, ...], columns: int = 120) -> str:
    res = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    return res.output


def test_every_command_is_covered():
    names = {p[0] for p in PATHS if p}
    assert {"aus", "bench", "export", "prepare", "train", "eval", "timeline", "image", "video", "webcam", "analyze",
            "demo"} <= names
    assert ("timeline", "check") in PATHS and ("timeline", "plot") in PATHS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "rtanim")
def test_help_has_a_worked_example(path):
    text = help_of(path)
    examples = text.split("Examples:", 1)
    assert len(examples) == 2, text
    assert re.search(rf"^\s*rtanim {re.escape(' '.join(path))}\b", examples[1], re.MULTILINE), text


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "rtanim")
def test_help_shows_plain_usage_and_metavars(path):
    text = help_of(path)
    usage = next(ln for ln in text.splitlines() if "Usage:" in ln)
    assert "{" not in usage and "<" not in usage, usage
    assert not re.search(r"<(bool|str|text|path|int|float|list)", text, re.IGNORECASE), text


def test_paragraphs_wrap_at_the_terminal_not_mid_phrase():
    text = help_of(("demo",), columns=250)
    assert "input.mp4 (a short clip made from the portrait" in text
    assert _reflow("One\ntwo.\n\nExamples:\n  rtanim a\n  rtanim b") == "One two.\n\nExamples:\nrtanim a\nrtanim b"


def test_video_and_image_name_their_face_limit_alike():
    for path in (("image",), ("video",), ("webcam",), ("analyze",)):
        assert "--max-faces" in help_of(path)
    assert "up to 4" not in help_of(("video",))
