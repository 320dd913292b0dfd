"""The README's offline job on the bundled portrait: needs no shared data."""

import av
from typer.testing import CliRunner

from rtanim.cli.app import app


def test_demo_runs_offline_and_keeps_audio(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "-o", str(out), "--model", "warp"])
    assert res.exit_code == 0, res.output
    for name in ("expressions.png", "input.mp4", "timeline.json", "demo.mp4"):
        assert (out / name).is_file() and (out / name).stat().st_size > 500, name
    with av.open(str(out / "input.mp4")) as a, av.open(str(out / "demo.mp4")) as b:
        assert b.streams.video[0].frames == a.streams.video[0].frames == 80
        assert b.streams.audio, "the demo video lost its audio"
        fa = [f.to_ndarray(format="rgb24") for f in a.decode(video=0)]
        fb = [f.to_ndarray(format="rgb24") for f in b.decode(video=0)]
    # the surprise keyframe (t = 2.4 s, frame 60) visibly changes the face; pixels far from it change by codec noise only
    diff = abs(fa[60].astype(int) - fb[60].astype(int)).max(axis=2)
    assert diff.max() > 60
    assert diff[-40:, :].mean() < 4.0  # re-encoding noise only


def test_demo_refuses_a_file_as_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    res = CliRunner().invoke(app, ["demo", "-o", str(f), "--model", "warp"])
    assert res.exit_code == 2 and "not a folder" in res.output
