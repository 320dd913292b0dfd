"""`rtanim bench --input`: every stage a user pays for, several sizes and models in one run, JSON and chart.

Short real runs on the bundled portrait clip (no shared data needed). Timings are never asserted: the
figures exist, have every stage and cell, and CPU use is in a possible range; bad input is one line.
"""

from __future__ import annotations

import json
import tempfile

import pytest
from typer.testing import CliRunner

from rtanim.cli import app as cli
from rtanim.cli.app import app

runner = CliRunner()
SIZES = ("320x180", "256x144")
MODELS = ("warp", "lite")


def _cpu_ok(cpu: dict) -> bool:
    """Process CPU over wall: some work, and never more than every core the process may use (1% slack)."""
    cores = cpu["cores"]
    return (0.0 < cpu["one_core_pct"] <= 101.0 * cores and 0.0 < cpu["all_cores_pct"] <= 101.0
            and abs(cpu["one_core_pct"] / cores - cpu["all_cores_pct"]) < 0.2)


@pytest.fixture(scope="module")
def matrix(portrait_clip, tmp_path_factory):
    """One run of 2 sizes x 2 models into every sink, with JSON and chart; the temp folder is watched."""
    out = tmp_path_factory.mktemp("bench")
    tmp = out / "tmp"
    tmp.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setattr(tempfile, "tempdir", str(tmp))
    try:
        res = runner.invoke(app, ["bench", "--input", str(portrait_clip), "--frames", "10", "--size", ",".join(SIZES),
                                  "--model", ",".join(MODELS), "--sinks", "file,vcam,udp", "--json",
                                  str(out / "b.json"), "--chart", str(out / "b.png")], env={"COLUMNS": "200"})
    finally:
        mp.undo()
    return res, out, tmp


def test_bench_matrix_json_has_every_stage_and_cell(matrix):
    res, out, _ = matrix
    assert res.exit_code == 0, res.output
    report = json.loads((out / "b.json").read_text())
    stages = ("decode", "track", "generate", "compose", "sink", "file", "vcam", "udp")
    assert tuple(report["stages"]) == stages
    assert {(c["size"], c["model"]) for c in report["cells"]} == {(s, m) for s in SIZES for m in MODELS}
    for c in report["cells"]:
        for mode in ("offline", "live"):
            s = c[mode]
            assert set(s["stage_ms"]) == set(stages)
            assert s["frames"] >= 1 and s["fps"] > 0
            assert s["latency_ms"]["p50"] is not None and s["latency_ms"]["p95"] >= s["latency_ms"]["p50"]
            for st in ("decode", "track", "sink", "file", "vcam", "udp"):  # run on every frame, face or not
                assert s["stage_ms"][st] is not None, (c["size"], c["model"], mode, st)
            assert _cpu_ok(s["cpu"]), s["cpu"]
            assert len(c["runs"][mode]) == 1
        assert c["offline"]["frames"] == 10 and c["offline"]["dropped"] == 0
        assert c["offline"]["faces"] > 0  # the portrait's face was re-expressed: generate and compose ran
        assert c["offline"]["stage_ms"]["generate"] is not None and c["offline"]["stage_ms"]["compose"] is not None
        assert c["live"]["frames"] + c["live"]["dropped"] == 10
        assert "transcoded" in c["setup"] and "vcam" in c["setup"]
    assert report["track_every"] == cli.TRACK_EVERY and report["repeat"] == 1


def test_bench_matrix_table_chart_and_cleanup(matrix):
    res, out, tmp = matrix
    assert res.exit_code == 0, res.output
    for text in ("offline (every frame)", "live (paced, newest)", "320x180", "256x144", "lite", "udp", "CPU"):
        assert text in res.output
    import cv2

    png = out / "b.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 300
    assert list(tmp.iterdir()) == []  # transcoded clips and sink outputs are removed


def test_bench_preloaded_null_sink_mode(portrait_clip, tmp_path, monkeypatch):
    """`--sinks none` keeps the model-only bench (frames preloaded, null sink); --track-every reaches the tracker."""
    import rtanim.measure.bench_run as benchrun

    seen = []
    real = benchrun._tracker

    def spy(fps, track_every):
        seen.append(track_every)
        return real(fps, track_every)

    monkeypatch.setattr(benchrun, "_tracker", spy)
    res = runner.invoke(app, ["bench", "--input", str(portrait_clip), "--frames", "6", "--sinks", "none",
                              "--track-every", "3", "--json", str(tmp_path / "b.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "preloaded" in res.output and "null sink" in res.output
    assert seen and set(seen) == {3}
    (cell,) = json.loads((tmp_path / "b.json").read_text())["cells"]
    assert cell["size"] == "256x256" and cell["model"] == "warp"
    for mode in ("offline", "live"):
        st = cell[mode]["stage_ms"]
        assert st["decode"] is None and st["file"] is None and st["udp"] is None and st["track"] is not None
        assert _cpu_ok(cell[mode]["cpu"])


def test_track_every_default_is_the_runs_default():
    from rtanim.checks import TRACK_EVERY

    assert cli.TRACK_EVERY == TRACK_EVERY


@pytest.mark.parametrize("args, words", [
    (["--model", "warp,nope"], ["nope", "--model", "no such file or model name"]),
    (["--size", "640x360,big"], ["--size", "WIDTHxHEIGHT", "'big'"]),
    (["--sinks", "file,tape"], ["--sinks", "unknown sink 'tape'"]),
    (["--repeat", "0"], ["--repeat", "must be >= 1"]),
    (["--track-every", "0"], ["--track-every", "must be >= 1"]),
    (["--fps", "-5"], ["--fps", "must be positive"]),
    (["--chart", "chart.jpg"], ["chart.jpg", "--chart", "use one of .png"]),
    (["--json", "no/such/dir/b.json"], ["--json", "does not exist"]),
])
def test_bench_bad_input_is_one_line(portrait_clip, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["bench", "--input", str(portrait_clip), *args], env={"COLUMNS": "200"})
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    for w in words:
        assert w in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []  # refused before any work: nothing written


def test_bench_missing_clip_is_one_line(tmp_path):
    res = runner.invoke(app, ["bench", "--input", str(tmp_path / "missing.mp4"), "--size", "640x360,1280x720",
                              "--model", "warp,lite+flow"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "missing.mp4" in lines[0] and "no such file" in lines[0]


def test_help_teaches_the_new_options():
    res = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for text in ("--size 640x360,1280x720 --model warp,lite+flow --repeat 3", "--json", "--chart", "--sinks",
                 "--track-every"):
        assert text in res.output, text
