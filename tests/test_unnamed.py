"""Issue 34: what the user does not name stays the person's own, in every command; the old rule is one option away."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rtanim.cli.app import app
from rtanim.expression.aus import AU_CODES, preset_aus

runner = CliRunner()
ASTRONAUT = Path(__file__).resolve().parents[1] / "rtanim" / "assets" / "astronaut.jpg"


def one_line_error(res, needle: str) -> None:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output


def test_unnamed_zero_is_the_old_rule_bit_for_bit(tmp_path):
    """`--aus smile --unnamed zero` paints exactly what an AU file that names every other AU as 0 paints."""
    every = {c: 0.0 for c in AU_CODES} | preset_aus("smile")
    spelled = tmp_path / "smile_all.json"
    spelled.write_text(json.dumps({"aus": every}))
    outs = {}
    for name, args in (("zero", ["--aus", "smile", "--unnamed", "zero"]), ("spelled", ["--aus", str(spelled)]),
                       ("follow", ["--aus", "smile"])):
        outs[name] = tmp_path / f"{name}.png"
        res = runner.invoke(app, ["image", str(ASTRONAUT), "-o", str(outs[name]), "--model", "warp", *args])
        assert res.exit_code == 0, res.output
    assert outs["zero"].read_bytes() == outs["spelled"].read_bytes()
    # she smiles with parted lips: under the rule the mouth is hers, under the old one it closes
    assert outs["follow"].read_bytes() != outs["zero"].read_bytes()


def test_bad_rule_values_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "o.png"
    one_line_error(runner.invoke(app, ["image", str(ASTRONAUT), "-o", str(out), "--aus", "smile", "--unnamed", "keep"]),
                   "--unnamed")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"unnamed": "none", "aus": {"AU12": 1.0}}))
    one_line_error(runner.invoke(app, ["image", str(ASTRONAUT), "-o", str(out), "--aus", str(bad)]), "unnamed")
    one_line_error(runner.invoke(app, ["video", str(ASTRONAUT), "-o", str(tmp_path / "o.mp4"), "--aus", "smile",
                                       "--unnamed", "0"]), "--unnamed")
    one_line_error(runner.invoke(app, ["webcam", "--aus", "smile", "--unnamed", "off", "--no-preview"]), "--unnamed")
    assert not out.exists() and not (tmp_path / "o.mp4").exists()


def _read_back(path: Path) -> dict[str, np.ndarray]:
    from rtanim.commands.analyze import analyze_video

    a = analyze_video(path, max_faces=1)
    first = a.face_ids[0]
    rows = {s.frame: s.aus for s in a.samples if s.face_id == first}
    frames = sorted(rows)
    return {c: np.array([rows[f].get(c, 0.0) for f in frames]) for c in ("AU12", "AU25", "AU26")} | {
        "frames": np.array(frames)}


def test_a_talking_video_keeps_talking_under_a_smile(shared_data, tmp_path):
    clip = shared_data / "video" / "talking256" / "HelloMeme_jue.mp4"
    out = tmp_path / "smile.mp4"
    res = runner.invoke(app, ["video", str(clip), "-o", str(out), "--aus", "smile", "--model", "warp"])
    assert res.exit_code == 0, res.output
    src, dst = _read_back(clip), _read_back(out)
    common, i_src, i_dst = np.intersect1d(src["frames"], dst["frames"], return_indices=True)
    assert len(common) > 0.8 * len(src["frames"])
    for code in ("AU25", "AU26"):  # the lips still move with the speech
        assert np.median(np.abs(src[code][i_src] - dst[code][i_dst])) <= 0.15, code
    # and it smiles more (her AU12 reads 0.89 already, so the room is small: where she smiles less, it rises)
    assert np.mean(dst["AU12"][i_dst]) > np.mean(src["AU12"][i_src]) + 0.03
    old = tmp_path / "old.mp4"  # the old rule closes the mouth: the test can tell the two apart
    res = runner.invoke(app, ["video", str(clip), "-o", str(old), "--aus", "smile", "--model", "warp", "--unnamed", "zero"])
    assert res.exit_code == 0, res.output
    closed = _read_back(old)
    assert np.median(closed["AU26"]) < np.median(src["AU26"]) - 0.1


@pytest.mark.parametrize("rule", ["follow", "zero"])
def test_a_timeline_naming_only_a_smile_leaves_blinks_to_the_face(rule):
    from rtanim.expression.timeline import timeline_from_dict

    tl = timeline_from_dict({"unnamed": rule, "keyframes": [{"t": 0, "aus": {"AU12": 0.0}}, {"t": 1, "aus": {"AU12": 1.0}}]})
    blink = tl.at(0.5, {"AU45": 1.0})["AU45"]
    assert blink == (1.0 if rule == "follow" else 0.0)
