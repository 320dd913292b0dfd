"""The README's examples, run against the real command line so they cannot drift from it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rtanim.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
runner = CliRunner()


def blocks(lang: str | None = None) -> list[str]:
    """The README's fenced blocks (of one language, if given), in order."""
    found, current, kind = [], None, ""
    for line in README.splitlines():
        if line.startswith("```"):
            if current is None:
                current, kind = [], line[3:].strip()
            else:
                if lang is None or kind == lang:
                    found.append("\n".join(current) + "\n")
                current = None
        elif current is not None:
            current.append(line)
    return found


def session() -> list[tuple[list[str], str]]:
    """The ``$ rtanim ...`` / ``error: ...`` pairs of the README's mistakes block."""
    block = next(b for b in blocks() if b.startswith("$ rtanim"))
    lines = block.strip().splitlines()
    return [(shlex.split(cmd[2:])[1:], out) for cmd, out in zip(lines[::2], lines[1::2], strict=True)]


def test_the_setup_blocks_are_what_ci_runs():
    bash = [b.strip() for b in blocks("bash")]
    install, demo, test = bash[:3]
    assert install.splitlines()[0].startswith("git clone ") and "python3 -m venv .venv" in install
    assert demo == "rtanim demo -o rtanim-demo" and test == "pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install.splitlines()[-1] in ci and test in ci


@pytest.mark.parametrize("args, expected", session(), ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_documented_mistakes_print_exactly_that_line(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photo.jpg").write_bytes((ROOT / "rtanim" / "assets" / "astronaut.jpg").read_bytes())
    (tmp_path / "bad.json").write_text(json.dumps({"keyframes": [
        {"t": 0, "preset": "neutral"}, {"t": 1, "preset": "smile"}, {"t": 2, "aus": {"AU13": 1.0}}]}))
    res = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert res.exit_code == 2
    assert res.output.strip() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "photo.jpg"]


def test_the_au_table_is_what_rtanim_aus_prints():
    rows = re.findall(r"^\| (AU\d\d) \| ([a-z ]+) \|", README, re.MULTILINE)
    assert len(rows) == 17
    res = runner.invoke(app, ["aus"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    for code, name in rows:
        assert re.search(rf"{code}\s+│\s+{name}\s+│", res.output), (code, name)


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.json")), ids=lambda p: p.name)
def test_the_example_timelines_check(example):
    res = runner.invoke(app, ["timeline", "check", str(example)])
    assert res.exit_code == 0 and "ok" in res.output, res.output


def test_every_documented_command_exists():
    commands = set(re.findall(r"^\| `rtanim ([a-z]+(?: check| plot)?)", README, re.MULTILINE))
    assert {"image", "video", "timeline check", "demo"} <= commands
    for cmd in commands:
        assert runner.invoke(app, [*cmd.split(), "--help"]).exit_code == 0, cmd
