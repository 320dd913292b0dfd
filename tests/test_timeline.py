import json
import math

import numpy as np
import pytest

from rtanim.errors import InputError
from rtanim.expression.timeline import (
    load_openface_csv,
    load_timeline,
    parse_aus_arg,
    timeline_from_dict,
    with_unnamed,
    write_openface_csv,
)

DESIGN_EXAMPLE = {
    "fps": 30,
    "loop": "loop",
    "mode": "absolute",
    "passthrough": ["AU25", "AU26"],
    "keyframes": [
        {"t": 0.0, "aus": {"AU12": 0.0}},
        {"t": 1.5, "aus": {"AU06": 0.6, "AU12": 1.0}, "ease": "ease-in-out"},
        {"frame": 90, "preset": "surprise", "strength": 0.7, "ease": "linear"},
        {"t": 4.0, "preset": "neutral", "ease": "hold"},
    ],
}


def write(tmp_path, doc, name="t.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def test_static_files_and_presets():
    assert timeline_from_dict({"aus": {"AU12": 1.0, "AU06": 0.6}}).at(3.0)["AU12"] == 1.0
    tl = timeline_from_dict({"preset": "smile", "strength": 0.8})
    assert tl.is_static and tl.at(0)["AU12"] == pytest.approx(0.8)
    assert parse_aus_arg("smile").at(0)["AU06"] == pytest.approx(0.6)
    assert parse_aus_arg("smile:0.5").at(0)["AU12"] == pytest.approx(0.5)
    assert parse_aus_arg("AU12=1,AU45L=1").at(0, {"AU45": 0.0})["AU45"] == pytest.approx(0.5)  # AU45R: the face's
    assert math.isnan(tl.at(0)["AU26"]) and tl.at(0, {"AU26": 0.4})["AU26"] == pytest.approx(0.4)  # unnamed: the face's
    assert with_unnamed(tl, "zero").at(0, {"AU26": 0.4})["AU26"] == 0.0  # the old rule


def test_design_example_values(tmp_path):
    tl = with_unnamed(load_timeline(write(tmp_path, DESIGN_EXAMPLE)), "zero")  # the mechanics, under the old rule
    assert [k.t for k in tl.keyframes] == [0.0, 1.5, 3.0, 4.0]
    # exact at keyframes
    assert tl.at(1.5)["AU12"] == pytest.approx(1.0)
    assert tl.at(3.0)["AU01"] == pytest.approx(0.7)
    # ease-in-out midpoint is the linear midpoint, quarter point is not
    assert tl.at(0.75)["AU12"] == pytest.approx(0.5)
    assert tl.at(0.375)["AU12"] == pytest.approx(0.15625)
    # linear segment 1.5 -> 3.0
    assert tl.at(2.25)["AU12"] == pytest.approx(0.5)
    assert tl.at(2.25)["AU01"] == pytest.approx(0.35)
    # hold keeps the previous keyframe until the next one
    assert tl.at(3.99)["AU01"] == pytest.approx(0.7)
    assert tl.at(4.0)["AU01"] == pytest.approx(0.0)
    # loop wraps over the 4 s span
    assert tl.at(5.5)["AU12"] == pytest.approx(1.0)
    assert tl.at(4.75)["AU12"] == pytest.approx(0.5)
    # frame-accurate query
    assert tl.at_frame(45, 30)["AU12"] == pytest.approx(1.0)


def test_passthrough_and_offset():
    tl = timeline_from_dict(DESIGN_EXAMPLE)
    live = {"AU25": 0.4, "AU26": 0.2, "AU12": 0.9}
    out = tl.at(1.5, live)
    assert out["AU25"] == pytest.approx(0.4) and out["AU26"] == pytest.approx(0.2)
    assert out["AU12"] == pytest.approx(1.0)  # overridden, not live
    assert np.isnan(tl.at(1.5)["AU25"])  # no live face: unknown
    off = timeline_from_dict({"aus": {"AU12": 0.3, "AU04": -0.5}, "mode": "offset"})
    out = off.at(0, {"AU12": 0.5, "AU04": 0.2, "AU01": 0.7})
    assert out["AU12"] == pytest.approx(0.8)
    assert out["AU04"] == 0.0
    assert out["AU01"] == pytest.approx(0.7)


def test_sided_passthrough_and_sides_interpolate_consistently():
    tl = timeline_from_dict({"keyframes": [{"t": 0, "aus": {"AU45": 1.0}}, {"t": 1, "aus": {"AU45L": 1.0}}]})
    mid = tl.at(0.5, {"AU45": 0.0})  # the second keyframe lets go of AU45R: it glides to the face's (open) eye
    assert (mid["AU45L"], mid["AU45R"], mid["AU45"]) == pytest.approx((1.0, 0.5, 0.75))
    sided = timeline_from_dict({"aus": {"AU12": 1.0}, "passthrough": ["AU45L"]})
    out = sided.at(0, {"AU45L": 0.3, "AU45R": 0.9})
    assert out["AU45L"] == pytest.approx(0.3) and out["AU45R"] == pytest.approx(0.9)  # unnamed: follows too


def test_pingpong_and_none():
    doc = {"loop": "pingpong", "keyframes": [{"t": 0, "aus": {"AU26": 0}}, {"t": 2, "aus": {"AU26": 1}}]}
    tl = timeline_from_dict(doc)
    assert tl.at(3.0)["AU26"] == pytest.approx(0.5)
    assert tl.at(4.0)["AU26"] == pytest.approx(0.0)
    assert tl.at(5.0)["AU26"] == pytest.approx(0.5)
    once = timeline_from_dict({**doc, "loop": "none"})
    assert once.at(10.0)["AU26"] == 1.0 and once.at(-1)["AU26"] == 0.0


@pytest.mark.parametrize(
    ("doc", "field", "reason"),
    [
        ({"aus": {"AU99": 1}}, "aus.AU99", "unknown AU"),
        ({"aus": {"AU12": 1.5}}, "aus.AU12", "out of range"),
        ({"aus": {"AU12": "high"}}, "aus.AU12", "expected a number"),
        ({"preset": "grin"}, "preset", "unknown preset"),
        ({"keyframes": [{"t": 1, "aus": {}}, {"t": 0.5, "aus": {}}]}, "keyframes[1].t", "not after"),
        ({"keyframes": [{"frame": 3, "aus": {}}]}, "keyframes[0].frame", "needs a top-level 'fps'"),
        ({"keyframes": [{"t": 0, "aus": {}, "ease": "bounce"}]}, "keyframes[0].ease", "unknown easing"),
        ({"keyframes": [{"t": 0, "preset": "smile", "strenght": 1}]}, "keyframes[0].strenght", "did you mean"),
        ({"keyframes": [], "loop": "loop"}, "keyframes", "non-empty"),
        ({"aus": {}, "loop": "forever"}, "loop", "unknown key"),
        ({"keyframes": [{"t": 0, "aus": {}}], "loop": "forever"}, "loop", "unknown loop"),
        ({"aus": {"AU01": 1}, "passthrough": ["AU77"]}, "passthrough[0]", "unknown AU"),
    ],
)
def test_validation_names_file_field_and_reason(tmp_path, doc, field, reason):
    path = write(tmp_path, doc)
    with pytest.raises(InputError) as err:
        load_timeline(path)
    assert err.value.file == str(path)
    assert err.value.field == field
    assert reason in err.value.reason


def test_malformed_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="malformed JSON") as err:
        load_timeline(write(tmp_path, '{"aus": {"AU12": 1.0,}}'))
    assert "line 1" in err.value.field
    with pytest.raises(InputError, match="file not found"):
        load_timeline(tmp_path / "nope.json")
    with pytest.raises(InputError, match="neither a file nor a preset"):
        parse_aus_arg("smiel")


def test_openface_csv_import(tmp_path):
    csv = tmp_path / "of.csv"
    csv.write_text(
        "frame, face_id, timestamp, confidence, success, AU01_r, AU12_r, AU26_r, AU12_c\n"
        "1, 0, 0.000, 0.98, 1, 0.0, 5.0, 1.0, 1\n"
        "2, 0, 0.040, 0.98, 0, 9.9, 9.9, 9.9, 1\n"
        "3, 0, 0.080, 0.98, 1, 2.5, 0.0, 2.0, 0\n"
    )
    tl = load_openface_csv(csv)
    assert len(tl.keyframes) == 2  # the failed row is skipped
    assert tl.at(0.0)["AU12"] == pytest.approx(1.0)
    assert tl.at(0.04)["AU12"] == pytest.approx(0.5)
    assert tl.at(0.08)["AU01"] == pytest.approx(0.5)
    frames_only = tmp_path / "frames.csv"
    frames_only.write_text("frame,AU45_r\n0,0\n15,5\n")
    assert load_timeline(frames_only).at(0.25)["AU45"] == pytest.approx(0.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,AU45_r\n0,x\n")
    with pytest.raises(InputError, match="not a number"):
        load_openface_csv(bad)


def test_openface_csv_roundtrip_keeps_sides(tmp_path):
    path = tmp_path / "aus.csv"
    write_openface_csv(path, [(0, 3, 0.0, {"AU45L": 1.0, "AU12": 0.4}), (1, 3, 0.033, {"AU26": 0.6})])
    tl = load_openface_csv(path)
    assert tl.at(0)["AU45L"] == pytest.approx(1.0) and tl.at(0)["AU45R"] == 0.0
    assert tl.at(0.033)["AU26"] == pytest.approx(0.6)


def test_what_a_timeline_does_not_name_follows_the_face():
    """Issue 34: named AUs take their values, unnamed ones the live face's, frame by frame; a keyframe
    that lets go of an AU glides back to the face; neutral names every AU; "unnamed": "zero" is the old rule."""
    tl = timeline_from_dict({"keyframes": [{"t": 0, "aus": {"AU12": 0.0}}, {"t": 1, "aus": {"AU12": 1.0}},
                                           {"t": 2, "aus": {"AU06": 0.5}}]})
    live = {"AU45": 0.9, "AU12": 0.2, "AU25": 0.6}
    assert tl.at(0.5, live)["AU45"] == pytest.approx(0.9) and tl.at(0.5, live)["AU25"] == pytest.approx(0.6)
    assert tl.at(0.5, live)["AU12"] == pytest.approx(0.5)
    assert tl.at(1.5, live)["AU12"] == pytest.approx(0.6)  # from 1.0 back towards the face's 0.2
    assert tl.at(2.0, live)["AU12"] == pytest.approx(0.2) and tl.at(2.0, live)["AU06"] == pytest.approx(0.5)
    assert parse_aus_arg("neutral").at(0, live)["AU45"] == 0.0  # neutral names every AU: at rest
    old = timeline_from_dict({"unnamed": "zero", "aus": {"AU12": 1.0}})
    assert old.unnamed == "zero" and old.at(0, live)["AU45"] == 0.0
    assert timeline_from_dict({"mode": "offset", "aus": {"AU12": 0.1}}).at(0, live)["AU45"] == pytest.approx(0.9)
    with pytest.raises(InputError, match="unnamed"):
        timeline_from_dict({"unnamed": "none", "aus": {}})
    with pytest.raises(InputError, match="--unnamed"):
        with_unnamed(tl, "keep")
