"""`rtanim image` and `rtanim analyze` end to end, on the shared stills and clips."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.commands.image import read_image, track_still
from rtanim.expression.timeline import load_timeline

runner = CliRunner()
ASSET_FACE = Path(__file__).resolve().parents[1] / "rtanim" / "assets" / "astronaut.jpg"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def measured_au(path, code):
    faces = track_still(read_image(path), 1)
    assert faces, f"no face found in {path}"
    return faces[0].aus[code]


@pytest.fixture(scope="module")
def astronaut(shared_data):
    return shared_data / "stills" / "astronaut.png"


def test_warp_neutral_lowers_the_astronauts_smile(astronaut, tmp_path):
    before = measured_au(astronaut, "AU12")
    out = tmp_path / "neutral.png"
    res = run("image", astronaut, "-o", out, "--aus", "neutral", "--model", "warp")
    assert res.exit_code == 0, res.output
    after = measured_au(out, "AU12")
    assert after < before - 0.15, (before, after)


def test_warp_jaw_drop_opens_the_mouth(astronaut, tmp_path):
    before = measured_au(astronaut, "AU26")
    out = tmp_path / "open.png"
    res = run("image", astronaut, "-o", out, "--aus", "AU26=1,AU12=0.9", "--model", "warp")
    assert res.exit_code == 0, res.output
    assert measured_au(out, "AU26") > before + 0.1


def test_image_changes_only_the_face_region(astronaut, tmp_path):
    out = tmp_path / "s.png"
    assert run("image", astronaut, "-o", out, "--aus", "surprise", "--model", "warp").exit_code == 0
    a, b = read_image(astronaut), read_image(out)
    changed = np.argwhere((a != b).any(axis=2))
    assert len(changed) > 500
    face = track_still(a, 1)[0]
    x0, y0, x1, y1 = face.bbox
    # every changed pixel lies near the face (the crop frames it with a small margin)
    w, h = x1 - x0, y1 - y0
    assert changed[:, 1].min() > x0 - w and changed[:, 1].max() < x1 + w
    assert changed[:, 0].min() > y0 - h and changed[:, 0].max() < y1 + h
    assert (a[0] == b[0]).all() and (a[-1] == b[-1]).all()


def test_grid_figure(astronaut, tmp_path):
    out = tmp_path / "grid.png"
    res = run("image", astronaut, "-o", out, "--grid", "AU12,AU26", "--model", "warp")
    assert res.exit_code == 0, res.output
    grid = read_image(out)
    assert grid.shape[0] > 2 * 128 and grid.shape[1] == 64 + 6 * 128  # input, 4 levels, motion
    assert grid.std() > 20


class Repainter:
    """A generator that repaints the face grey (attention 0.5) and moves nothing (no flow)."""

    name = "repainter"

    def generate(self, jobs):
        from rtanim.face.compose import FaceOutput

        s = 128
        a = np.full((1, s, s), 1.0, np.float32)
        a[:, 40:90, 30:100] = 0.5
        return [FaceOutput(a, np.zeros((3, s, s), np.float32), None) for _ in jobs]


def test_grid_columns_show_what_the_model_outputs():
    """warp only moves pixels: a motion column, no blank attention or flat colour; a model that
    repaints without flow: attention and colour, no motion."""
    from rtanim.commands.image import au_grid, grid_caption
    from rtanim.pipeline.generators import WarpGenerator

    image = read_image(ASSET_FACE)
    face = track_still(image, 1)[0]
    warp = au_grid(image, face, ["AU26"], WarpGenerator())
    paint = au_grid(image, face, ["AU26"], Repainter())
    assert warp.shape[1] == 64 + 6 * 128 and paint.shape[1] == 64 + 7 * 128
    motion = warp[22:22 + 128, 64 + 5 * 128:]
    assert motion.std() > 15  # a heat map, not a flat square
    attention = paint[22:22 + 128, 64 + 5 * 128:64 + 6 * 128]
    assert attention.min() < 140 and attention.max() > 240  # the repainted patch and the kept rest
    assert "repaints nothing" in grid_caption(False, True, 1.0, 128)[0]
    assert len(grid_caption(True, False, 1.0, 128)) == 1


def test_no_face_is_a_warning_and_a_pass_through(tmp_path):
    from rtanim.commands.image import write_image

    src = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    write_image(src, (rng.random((120, 160, 3)) * 40 + 100).astype(np.uint8))
    out = tmp_path / "out.png"
    res = run("image", src, "-o", out, "--aus", "smile", "--model", "warp")
    assert res.exit_code == 0 and "no face" in res.output
    assert (read_image(out) == read_image(src)).all()


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (None, ["--aus", "smile"], "no such file"),
        ("text", ["--aus", "smile"], "not a readable image"),
        ("ok", ["--aus", "grin"], "neither a file nor a preset"),
        ("ok", ["--aus", "smile", "--model", "nope"], "no such file or model name"),
        ("ok", [], "one of the two"),
        ("ok", ["--grid", "AU13"], "unknown AU"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(astronaut, tmp_path, make, args, needle):
    src = tmp_path / "in.png"
    if make == "text":
        src.write_text("not an image")
    elif make == "ok":
        src.write_bytes(astronaut.read_bytes())
    out = tmp_path / "out.png"
    res = run("image", src, "-o", out, *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert not out.exists()


def test_bad_output_format(astronaut, tmp_path):
    res = run("image", astronaut, "-o", tmp_path / "out.gif", "--aus", "smile", "--model", "warp")
    assert res.exit_code == 2 and "unsupported output format" in res.output


def test_analyze_writes_a_csv_the_timeline_loader_accepts(shared_data, tmp_path):
    out = tmp_path / "aus.csv"
    res = run("analyze", shared_data / "video" / "single_face.mp4", "-o", out)
    assert res.exit_code == 0, res.output
    tl = load_timeline(out)
    assert len(tl.keyframes) > 30
    assert tl.duration > 1.5
    values = np.stack([k.values for k in tl.keyframes])
    assert values.max() > 0.1  # the face moves some AU
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    res = run("analyze", fake, "-o", tmp_path / "x.csv")
    assert res.exit_code == 2 and "fake.mp4" in res.output
    assert not (tmp_path / "x.csv").exists()
