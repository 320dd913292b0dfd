"""The control panel's state without a server: validation (the CLI's messages), easing, presets, playback, recording."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rtanim.errors import InputError
from rtanim.expression.aus import EXTENDED_CODES
from rtanim.expression.timeline import parse_aus_arg, timeline_from_dict
from rtanim.panel.state import PanelTarget, collapse_values, parse_json, recording_to_timeline

LIVE = {"AU25": 0.3, "AU26": 0.2, "AU12": 0.4}


def neutral(passthrough=("AU25", "AU26"), easing=0.0) -> PanelTarget:
    tl = timeline_from_dict({"preset": "neutral", "passthrough": list(passthrough)})
    return PanelTarget(tl, easing=easing)


def reason(fn, *args) -> InputError:
    with pytest.raises(InputError) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize("inline,body", [
    ("AU12=1.5", {"AU12": 1.5}),
    ("AU13=1", {"AU13": 1}),
    ("AU12=-0.2", {"AU12": -0.2}),
])
def test_post_aus_errors_are_the_cli_lines(inline, body):
    cli = reason(parse_aus_arg, inline)
    api = reason(neutral().set_aus, body)
    assert (api.file, api.field, api.reason) == ("POST /aus", cli.field, cli.reason)
    assert api.line() == cli.line().replace("--aus", "POST /aus", 1)


def test_bad_bodies_are_one_line_and_keep_the_last_good_target():
    p = neutral()
    p.set_aus({"AU01": 0.7})
    p.at(0.0, LIVE)
    for bad in (b"{", b"[1, 2]", b'"smile"', b"\xff"):
        with pytest.raises(InputError) as e:
            p.set_aus(parse_json(bad, "POST /aus"))
        assert "\n" not in e.value.line() and e.value.line().startswith("POST /aus")
    assert reason(parse_json, b'{"AU12": ', "POST /aus").line() == "POST /aus: line 1 column 10: malformed JSON: Expecting value"
    assert p.at(0.1, LIVE)["AU01"] == pytest.approx(0.7)
    for fn, body, part in ((p.set_preset, {"preset": "smiel"}, "did you mean 'smile'"),
                           (p.set_preset, {"preset": "smile", "strength": 2}, "out of range"),
                           (p.settings, {"easing": -1}, "easing"),
                           (p.settings, {"passthrough": ["AU99"]}, "unknown AU"),
                           (p.settings, {"effect": "yes"}, "true or false"),
                           (p.playback, {"action": "jump"}, "unknown action"),
                           (p.playback, {"action": "play"}, "no timeline loaded"),
                           (p.load_timeline, {"keyframes": []}, "non-empty list"),
                           (p.record, {"action": "stop"}, "not recording")):
        assert part in reason(fn, body).line()
    assert p.at(0.2, LIVE)["AU01"] == pytest.approx(0.7)


def test_sliders_change_only_the_named_aus_and_passthrough_follows_the_live_face():
    p = neutral()
    p.set_aus({"AU12": 0.8})
    p.set_aus({"AU45L": 1.0})
    out = p.at(0.0, LIVE)
    assert out["AU12"] == pytest.approx(0.8) and out["AU45L"] == 1.0 and out["AU45R"] == 0.0
    assert out["AU25"] == pytest.approx(0.3) and out["AU26"] == pytest.approx(0.2)  # passthrough
    p.settings({"passthrough": ["AU12"]})
    out = p.at(0.04, LIVE)
    assert out["AU12"] == pytest.approx(0.4) and out["AU25"] == 0.0
    assert p.current() == {"AU12": 0.8, "AU45L": 1.0}


def test_easing_glides_on_the_frames_clock():
    p = neutral(easing=0.5)
    p.at(0.0, LIVE)
    p.set_aus({"AU12": 1.0})
    values = [p.at(t, LIVE)["AU12"] for t in (1.0, 1.1, 1.25, 1.4, 1.5, 2.0)]
    assert values[0] == 0.0 and values[2] == pytest.approx(0.5) and values[-2] == values[-1] == 1.0
    assert all(a < b for a, b in zip(values[:5], values[1:5], strict=False))


def test_preset_strength_and_timeline_playback():
    p = neutral()
    p.set_preset({"preset": "smile", "strength": 0.5})
    assert p.at(0.0, LIVE)["AU12"] == pytest.approx(0.5)
    doc = {"loop": "none", "keyframes": [{"t": 0, "aus": {"AU01": 0}}, {"t": 1, "aus": {"AU01": 1}}]}
    p.load_timeline(doc)
    assert p.at(10.0, LIVE)["AU01"] == 0.0  # plays from its own start
    assert p.at(10.5, LIVE)["AU01"] == pytest.approx(0.5)
    p.playback({"action": "pause"})
    assert p.at(12.0, LIVE)["AU01"] == pytest.approx(0.5)
    p.playback({"action": "play", "loop": "pingpong"})
    assert p.at(12.25, LIVE)["AU01"] == pytest.approx(0.5)  # resumes where it paused
    assert p.at(12.5, LIVE)["AU01"] == pytest.approx(0.75)
    assert p.at(13.5, LIVE)["AU01"] == pytest.approx(0.25)  # 1.75 s in: on the way back
    snap = p.snapshot()
    assert snap["mode"] == "timeline" and snap["timeline"]["loop"] == "pingpong" and snap["timeline"]["playing"]
    p.set_aus({"AU12": 1.0})  # a slider move takes over from the timeline, holding what showed
    out = p.at(14.0, LIVE)
    assert p.snapshot()["mode"] == "manual" and out["AU12"] == 1.0 and out["AU01"] == pytest.approx(0.25)


def test_recording_is_a_timeline_that_replays_what_was_shown():
    p = neutral(easing=0.4)
    p.record({"action": "start"})
    shown = []
    for i in range(100):
        t = i / 25
        if i == 10:
            p.set_aus({"AU12": 1.0})
        if i == 50:
            p.set_preset({"preset": "surprise", "strength": 0.6})
        if i == 70:
            p.set_aus({"AU45L": 1.0})
        shown.append((t, p.at(t, LIVE)))
    doc = p.record({"action": "stop"})
    tl = timeline_from_dict(json.loads(json.dumps(doc)), "take.json")
    assert tl.passthrough == ("AU25", "AU26") and len(tl.keyframes) < 60
    for t, out in shown:
        replay = tl.at(t, LIVE)
        assert max(abs(replay[c] - out[c]) for c in EXTENDED_CODES) < 0.01, t


def test_recording_helpers():
    assert recording_to_timeline([], [], ["AU25"]) == {"aus": {}, "passthrough": ["AU25"]}
    v = np.zeros(len(EXTENDED_CODES), np.float32)
    v[EXTENDED_CODES.index("AU12L")] = v[EXTENDED_CODES.index("AU12R")] = 0.5
    v[EXTENDED_CODES.index("AU45L")] = 1.0
    assert collapse_values(v) == {"AU12": 0.5, "AU45L": 1.0}


def test_offset_runs_take_negative_values():
    p = PanelTarget(timeline_from_dict({"aus": {"AU12": 0.2}, "mode": "offset"}), easing=0.0)
    assert p.offset_mode and p.at(0.0, LIVE)["AU12"] == pytest.approx(0.6)  # live 0.4 + 0.2
    p.set_aus({"AU12": -0.3})
    assert p.at(0.1, LIVE)["AU12"] == pytest.approx(0.1)
    assert "out of range [-1.0, 1.0]" in reason(p.set_aus, {"AU12": -1.5}).line()


def test_the_preview_p_key_pauses_the_panel_timeline_not_the_run_clock():
    from types import SimpleNamespace

    from rtanim.panel.live import PanelRun
    from rtanim.pipeline.graph import Controls, Stats

    p = neutral()
    p.load_timeline({"keyframes": [{"t": 0, "aus": {"AU01": 0}}, {"t": 1, "aus": {"AU01": 1}}]})
    p.at(0.0, LIVE)
    controls = Controls()
    run = PanelRun(p, controls, model="m", source="s")
    controls.paused = True  # what the p key does
    run.on_frame(Stats("live"), SimpleNamespace(faces=[], found=0))
    assert not controls.paused and not p.snapshot()["timeline"]["playing"]
    assert p.at(0.5, LIVE)["AU01"] == 0.0
    controls.paused = True
    run.on_frame(Stats("live"), SimpleNamespace(faces=[], found=0))
    assert p.snapshot()["timeline"]["playing"] and p.at(0.6, LIVE)["AU01"] == 0.0 and p.at(0.85, LIVE)["AU01"] == 0.25


def test_unset_aus_follow_the_face_and_a_slider_hands_one_back():
    """Issue 34 in the panel: what nobody set follows the live face (shown as such), null hands an AU back."""
    p = PanelTarget(timeline_from_dict({"aus": {"AU12": 0.8}}))
    live = {"AU45": 0.7, "AU12": 0.1, "AU25": 0.5}
    out = p.at(0.0, live)
    assert out["AU12"] == pytest.approx(0.8) and out["AU45"] == pytest.approx(0.7) and out["AU25"] == pytest.approx(0.5)
    snap = p.snapshot()
    assert "AU45L" in snap["following"] and snap["values"]["AU45L"] is None and "AU12L" not in snap["following"]
    json.dumps(snap, allow_nan=False)  # the page reads it: no NaN
    p.set_aus({"AU12": None})
    assert p.at(0.1, live)["AU12"] == pytest.approx(0.1) and "AU12L" in p.snapshot()["following"]
    p.set_aus({"AU45": 0.0})
    assert p.at(0.2, live)["AU45"] == 0.0
    p.set_preset({"preset": "eyebrows_up"})  # names AU01 and AU02 only
    out = p.at(0.3, live)
    assert out["AU01"] == pytest.approx(1.0) and out["AU45"] == pytest.approx(0.7)
    with pytest.raises(InputError):
        p.set_aus({"AU99": None})
