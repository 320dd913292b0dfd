import json

from typer.testing import CliRunner

import rtanim
from rtanim.cli.app import app

runner = CliRunner()


def test_help_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "Action Units" in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and rtanim.__version__ in res.output


def test_aus_lists_aus_and_presets():
    res = runner.invoke(app, ["aus"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for word in ("AU12", "lip corner puller", "AU45", "wink_left", "fear"):
        assert word in res.output


def test_timeline_check_and_plot(tmp_path):
    tl = tmp_path / "t.json"
    tl.write_text(
        json.dumps(
            {
                "loop": "pingpong",
                "keyframes": [
                    {"t": 0, "aus": {"AU12": 0}},
                    {"t": 1, "preset": "smile"},
                    {"t": 2, "preset": "surprise"},
                ],
            }
        )
    )
    res = runner.invoke(app, ["timeline", "check", str(tl)])
    assert res.exit_code == 0 and "3 keyframes" in res.output
    png = tmp_path / "curves.png"
    res = runner.invoke(app, ["timeline", "plot", str(tl), "-o", str(png)])
    assert res.exit_code == 0, res.output
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_bad_timeline_is_one_line_and_exit_2(tmp_path):
    tl = tmp_path / "bad.json"
    tl.write_text(json.dumps({"keyframes": [{"t": 0, "aus": {"AU99": 1}}]}))
    res = runner.invoke(app, ["timeline", "check", str(tl)])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "keyframes[0].aus.AU99" in lines[0] and "unknown AU" in lines[0]
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["timeline", "plot", str(tmp_path / "missing.json"), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "file not found" in res.output
    assert not (tmp_path / "x.png").exists()
