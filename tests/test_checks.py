"""Cheap checks before work: every command refuses a bad output path with one line and exit 2,
writes nothing, and rejects bad input before torch, MediaPipe, PyAV or OpenCV load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from rtanim import checks
from rtanim.cli.app import EXPORT_FORMATS, app
from rtanim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "rtanim" / "assets" / "astronaut.jpg"
runner = CliRunner()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# -------------------------------------------------------------------------- the helpers


def test_names_agree_with_the_heavy_modules():
    from engines.convert import FORMATS
    from engines.select import CHOICES
    from rtanim.models.ganimation import REGISTRY

    assert set(checks.NETWORKS) | {"default"} == set(REGISTRY)
    assert checks.ENGINES == CHOICES
    assert EXPORT_FORMATS == FORMATS


def test_output_file_reasons(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "in.png").write_text("x")
    cases = {
        tmp_path / "no" / "out.png": "folder",
        tmp_path / "afile" / "sub" / "out.png": "is a file, not a folder",
        tmp_path: "is a folder, not a file name",
        tmp_path / "out.gif": "unsupported output format .gif",
        tmp_path / "in.png": "would overwrite the input",
    }
    before = tree(tmp_path)
    for path, reason in cases.items():
        with pytest.raises(InputError, match=reason) as e:
            checks.output_file(path, "-o", suffixes=(".png",), inputs=[tmp_path / "in.png"])
        assert e.value.line().startswith(f"{path}: -o: ")
    assert checks.output_file(tmp_path / "ok.png", suffixes=(".png",)) == tmp_path / "ok.png"
    assert tree(tmp_path) == before  # the writability probe leaves nothing


def test_output_folder_may_be_created_below_a_writable_folder(tmp_path):
    (tmp_path / "afile").write_text("x")
    assert checks.output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(InputError, match="exists and is not a folder"):
        checks.output_folder(tmp_path / "afile")
    with pytest.raises(InputError, match="is a file, not a folder"):
        checks.output_folder(tmp_path / "afile" / "run")
    assert tree(tmp_path) == ["afile"]


def test_a_full_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: SimpleNamespace(total=10**9, used=10**9 - 2**20, free=2**20))
    with pytest.raises(InputError, match="only 1 MiB free"):
        checks.output_file(tmp_path / "x.png")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (unwritable even for root)")
def test_an_unwritable_folder_is_refused():
    with pytest.raises(InputError, match="/proc is not writable"):
        checks.output_file("/proc/x.png")
    with pytest.raises(InputError, match="/proc is not writable"):
        checks.output_folder("/proc/rtanim-run")


# -------------------------------------------------------------------------- every command

# {d}: the test's folder; {f}: a file there, so "{f}/x" needs a folder where a file is. Inputs exist.
OUTPUTS = {
    "image": ["image", str(FACE), "--aus", "smile", "-o", "{f}/out.png"],
    "image --grid": ["image", str(FACE), "--grid", "AU12", "-o", "{f}/grid.png"],
    "video": ["video", str(FACE), "--aus", "smile", "-o", "{f}/out.mp4"],
    "video --stats-json": ["video", str(FACE), "--aus", "smile", "-o", "{d}/out.mp4", "--stats-json", "{f}/s.json"],
    "webcam --out": ["webcam", "--camera", str(FACE), "--aus", "smile", "-o", "{f}/out.mp4"],
    "webcam --stats-json": ["webcam", "--camera", str(FACE), "--aus", "smile", "--stats-json", "{f}/s.json"],
    "analyze": ["analyze", str(FACE), "-o", "{f}/aus.csv"],
    "export": ["export", "--model", "lite", "--format", "onnx", "-o", "{f}/lite.onnx"],
    "prepare": ["prepare", str(FACE), "-o", "{f}"],
    "prepare --shard": ["prepare", str(FACE), "-o", "{d}/data", "--shard", "{f}/s.safetensors"],
    "train": ["train", "--data", "{d}", "-o", "{f}"],
    "train --arch refine": ["train", "--arch", "refine", "--data", "{d}", "-o", "{f}/run"],
    "eval": ["eval", "--model", "warp", "--data", str(FACE), "-o", "{f}"],
    "timeline plot": ["timeline", "plot", str(ROOT / "examples" / "smile.json"), "-o", "{f}/t.png"],
    "demo": ["demo", "-o", "{f}/demo"],
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_every_command_checks_its_output_first(case, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    before = tree(tmp_path)
    args = [a.format(d=tmp_path, f=afile) for a in OUTPUTS[case]]
    res = runner.invoke(app, args)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {afile}") and "Traceback" not in res.output, res.output
    assert "not a folder" in lines[0]
    assert tree(tmp_path) == before


# -------------------------------------------------------------------------- fast: before heavy modules

REJECT = """
import contextlib, io, json, sys
from rtanim.cli import app as cli
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            cli.app(args, prog_name="rtanim")
            code = 0
        except SystemExit as e:
            code = e.code
    results.append({"args": args, "code": code, "out": err.getvalue()})
heavy = [m for m in ("torch", "mediapipe", "onnxruntime", "cv2", "av", "tensorrt") if m in sys.modules]
print(json.dumps({"results": results, "heavy": heavy}))
"""


def test_bad_input_is_rejected_before_any_heavy_module_loads(tmp_path):
    """Not timed (calib/bench_reject.py measures that): the message, the exit code, and that neither
    torch, MediaPipe, ONNX Runtime, PyAV nor OpenCV was imported to produce them."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keyframes": [{"t": 0, "aus": {"AU13": 1}}]}))
    cases = {
        "no such file": ["image", str(tmp_path / "missing.jpg"), "--aus", "smile", "-o", str(tmp_path / "a.png")],
        "did you mean AU12": ["image", str(FACE), "--aus", "AU13=1", "-o", str(tmp_path / "a.png")],
        "unknown AU 'AU99'": ["image", str(FACE), "--grid", "AU99", "-o", str(tmp_path / "a.png")],
        "unsupported output format .gif": ["image", str(FACE), "--aus", "smile", "-o", str(tmp_path / "a.gif")],
        "exactly one of --aus": ["video", str(FACE), "-o", str(tmp_path / "o.mp4")],
        "no such file or model name": ["video", str(FACE), "-o", str(tmp_path / "o.mp4"), "--aus", "smile",
                                       "--model", "nosuch"],
        "unknown engine 'gpu'": ["webcam", "--aus", "smile", "--engine", "gpu"],
        "keyframes[0].aus.AU13": ["timeline", "check", str(bad)],
        "unsupported output format .txt": ["analyze", str(FACE), "-o", str(tmp_path / "aus.txt")],
        "unknown format 'tflite'": ["export", "--format", "tflite", "-o", str(tmp_path / "g.onnx")],
        "unknown backend 'tpu'": ["bench", "--engines", "--backends", "tpu"],
        "no such dataset": ["train", "--data", str(tmp_path / "none"), "-o", str(tmp_path / "run")],
        "SRC: no such file or folder": ["prepare", str(tmp_path / "none"), "-o", str(tmp_path / "data")],
        "give --data": ["eval", "--model", "warp", "-o", str(tmp_path / "report")],
        "exists and is not a folder": ["demo", "-o", str(bad)],
    }
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-c", REJECT, json.dumps(list(cases.values()))], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for needle, r in zip(cases, report["results"], strict=True):
        lines = [ln for ln in r["out"].splitlines() if ln.strip()]
        assert r["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r
    assert report["heavy"] == []
    assert tree(tmp_path) == before


def test_a_path_the_system_refuses_to_look_at_is_one_line(tmp_path):
    too_long = tmp_path / ("x" * 300) / "out.png"  # stat fails with ENAMETOOLONG, as with EACCES
    with pytest.raises(InputError, match="cannot check this path"):
        checks.output_file(too_long)
    with pytest.raises(InputError, match="cannot check this path"):
        checks.output_folder(too_long)
