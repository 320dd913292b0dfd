"""The control panel's HTTP API: every endpoint, its errors and its guards on a stand-in run (fast), then
`rtanim webcam --panel` for real on a paced clip of the bundled portrait: a change posted mid-run shows in
the written video's measured AUs within a few frames, and floods and dropped clients never stall the video."""

from __future__ import annotations

import re
import socket
import threading
import time

import numpy as np
import pytest
from panel_http import LiveRun, call, flood, measured_brows
from typer.testing import CliRunner

pytest.importorskip("starlette", reason="needs the panel extra: pip install -e '.[panel]'")
pytest.importorskip("uvicorn", reason="needs the panel extra: pip install -e '.[panel]'")

from rtanim.cli.app import app  # noqa: E402
from rtanim.expression.timeline import timeline_from_dict  # noqa: E402
from rtanim.io.source_base import Frame  # noqa: E402
from rtanim.panel.live import PanelOptions, PanelRun, bind  # noqa: E402
from rtanim.panel.server import PanelServer  # noqa: E402
from rtanim.panel.state import PanelTarget  # noqa: E402
from rtanim.pipeline.graph import Controls, Stats  # noqa: E402
from rtanim.pipeline.jobs import FaceJob, FrameJob  # noqa: E402

LIVE = {"AU25": 0.3, "AU26": 0.1}


class StandIn:
    """A PanelRun fed by a thread at 50 fps, as the pipeline would: a target query, a frame, on_frame."""

    def __init__(self, options: PanelOptions) -> None:
        tl = timeline_from_dict({"aus": {}, "passthrough": ["AU25", "AU26"]})
        self.run = PanelRun(PanelTarget(tl, easing=0.0), Controls(), model="stand-in", source="test")
        self.run.stats = Stats("live")
        self.sock, self.options = bind(options)
        self.server = PanelServer(self.run, self.options, self.sock)
        self.stop = threading.Event()
        self.image = np.full((96, 128, 3), 90, np.uint8)

    def feed(self) -> None:
        t = 0.0
        while not self.stop.is_set():
            frame = Frame(self.image, t, int(t * 50), time.perf_counter())
            target = self.run.target.at(t, LIVE)
            job = FrameJob(frame, faces=[FaceJob(None, self.image, target)], found=1)  # type: ignore[arg-type]
            self.run.write(frame, self.image)
            self.run.stats.delivered(frame, time.perf_counter())
            self.run.on_frame(self.run.stats, job)
            t += 0.02
            time.sleep(0.02)

    def __enter__(self) -> StandIn:
        self.server.__enter__()
        self.thread = threading.Thread(target=self.feed, daemon=True)
        self.thread.start()
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        self.base = f"http://{host}:{self.options.port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def panel():
    with StandIn(PanelOptions(port=0)) as p:
        yield p


def test_endpoints_round_trip(panel):
    base = panel.base
    vocab = call(base + "/vocabulary").json()
    assert [a["code"] for a in vocab["aus"]][:3] == ["AU01", "AU02", "AU04"]
    assert {"smile", "neutral"} <= {p["name"] for p in vocab["presets"]} and "mouth" in vocab["regions"]
    assert call(base + "/aus").json() == {}
    r = call(base + "/aus", "POST", {"AU12": 0.8, "AU45L": 1})
    assert r.status == 200 and r.json()["ok"]
    assert call(base + "/aus").json() == {"AU12": 0.8, "AU45L": 1.0}
    s = panel.run.status()
    deadline = time.monotonic() + 5
    while s["last_change"]["reached_frame"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
        s = call(base + "/status").json()
    assert s["output"]["AU12"] == pytest.approx(0.8) and s["output"]["AU25"] == pytest.approx(0.3)
    assert s["last_change"]["frames"] <= 2 and s["model"] == "stand-in" and s["faces"] == 1
    assert call(base + "/preset", "POST", {"preset": "smile", "strength": 0.5}).status == 200
    assert call(base + "/aus").json() == {"AU06": 0.3, "AU12": 0.5}
    tl = {"loop": "loop", "keyframes": [{"t": 0, "preset": "neutral"}, {"t": 1, "preset": "surprise"}]}
    assert call(base + "/timeline", "POST", tl).json()["keyframes"] == 2
    assert call(base + "/playback", "POST", {"action": "pause", "loop": "pingpong"}).status == 200
    state = call(base + "/status").json()["panel"]
    assert state["mode"] == "timeline" and state["timeline"]["loop"] == "pingpong" and not state["timeline"]["playing"]
    assert call(base + "/settings", "POST", {"easing": 0.5, "passthrough": ["AU26"], "effect": False}).status == 200
    s = call(base + "/status").json()
    assert s["panel"]["easing"] == 0.5 and s["panel"]["passthrough"] == ["AU26"] and s["effect"] is False
    assert not panel.run.controls.effect_on
    jpg = call(base + "/preview.jpg?w=64")
    assert jpg.status == 200 and jpg.headers["content-type"] == "image/jpeg" and jpg.body[:2] == b"\xff\xd8"
    page = call(base + "/")
    assert page.status == 200 and b"static/panel.js" in page.body
    assert call(base + "/static/panel.js").status == 200 and call(base + "/static/panel.css").status == 200


def test_recording_round_trip(panel, tmp_path):
    base = panel.base
    assert call(base + "/record.json").status == 404
    assert call(base + "/record", "POST", {"action": "start"}).status == 200
    time.sleep(0.3)
    call(base + "/aus", "POST", {"AU01": 1.0})
    time.sleep(0.3)
    call(base + "/aus", "POST", {"AU01": 0.0, "AU12R": 0.6})
    time.sleep(0.3)
    assert call(base + "/record", "POST", {"action": "stop"}).json()["keyframes"] >= 3
    take = call(base + "/record.json")
    assert take.status == 200 and "attachment" in take.headers["content-disposition"]
    tl = timeline_from_dict(take.json(), "take.json")
    path = tmp_path / "take.json"
    path.write_bytes(take.body)
    res = CliRunner().invoke(app, ["timeline", "check", str(path)])  # the loader `rtanim video --timeline` uses
    assert res.exit_code == 0 and "ok" in res.output, res.output
    assert tl.passthrough == ("AU25", "AU26")
    # played on a face at rest (AUs the take leaves to the face follow it: issue 34)
    assert max(tl.at(t, {})["AU01"] for t in np.linspace(0, tl.duration, 50)) == pytest.approx(1.0)
    assert tl.at(tl.duration, {})["AU12R"] == pytest.approx(0.6)


def test_bad_input_is_400_with_the_cli_line_and_the_target_stays(panel):
    base = panel.base
    call(base + "/aus", "POST", {"AU01": 0.7})
    for body, line in (
        ({"AU12": 1.5}, "POST /aus: aus.AU12: value 1.5 is out of range [0.0, 1.0]"),
        ({"AU13": 1}, "POST /aus: aus.AU13: unknown AU 'AU13'; did you mean AU12?"),
        (b'{"AU12": ', "POST /aus: line 1 column 10: malformed JSON: Expecting value"),
        ({"AU12": "high"}, 'POST /aus: aus.AU12: expected a number, got "high"'),
    ):
        r = call(base + "/aus", "POST", body)
        assert r.status == 400 and r.json() == {"error": line}
    # the same reason the command line gives for the same values
    res = CliRunner().invoke(app, ["webcam", "--aus", "AU12=1.5", "--model", "warp", "--no-preview", "--panel"])
    assert res.exit_code == 2 and res.output == "error: --aus: aus.AU12: value 1.5 is out of range [0.0, 1.0]\n"
    for path, body, part in (("/preset", {"preset": "smiel"}, "did you mean 'smile'?"),
                             ("/timeline", {"keyframes": [{"t": 0, "aus": {"AU99": 1}}]},
                              "POST /timeline: keyframes[0].aus.AU99: unknown AU"),
                             ("/settings", {"easing": 99}, "easing"),
                             ("/playback", {"action": "rewind"}, "unknown action"),
                             ("/record", {"action": "stop"}, "not recording")):
        r = call(base + path, "POST", body)
        assert r.status == 400 and part in r.json()["error"] and "\n" not in r.json()["error"], (path, r.body)
    assert call(base + "/aus").json() == {"AU01": 0.7}
    assert panel.run.status()["running"]


def test_guards(panel):
    base = panel.base
    r = call(base + "/aus", "POST", b'{"AU12": 1}', headers={"Content-Type": "text/plain"})
    assert r.status == 415  # a cross-site form cannot send application/json without a preflight
    r = call(base + "/aus", "POST", {"AU12": 1}, headers={"Origin": "http://evil.example"})
    assert r.status == 403 and "cross-site" in r.json()["error"]
    r = call(base + "/status", headers={"Host": "evil.example:8765"})  # DNS rebinding
    assert r.status == 403 and "127.0.0.1" in r.json()["error"]
    assert call(base + "/aus").json() == {}


def test_panel_host_needs_the_token():
    with StandIn(PanelOptions(host="127.0.0.1", port=0, token="s3cret-token")) as p:
        assert p.options.url().endswith("/?token=s3cret-token")
        for path in ("/", "/status", "/events", "/preview.jpg"):
            r = call(p.base + path)
            assert r.status == 401 and "token" in r.json()["error"], path
        assert call(p.base + "/status?token=wrong").status == 401
        assert call(p.base + "/status", headers={"X-Rtanim-Token": "s3cret-token"}).status == 200
        assert call(p.base + "/aus", "POST", {"AU12": 1}, headers={"X-Rtanim-Token": "s3cret-token"}).status == 200
        page = call(p.base + "/?token=s3cret-token", headers={"Host": "192.0.2.1:8765"})  # any host name then
        assert page.status == 200 and "rtanim_panel=s3cret-token" in page.headers["set-cookie"]
        assert call(p.base + "/status", headers={"Cookie": "rtanim_panel=s3cret-token"}).status == 200


def test_panel_options_on_the_command_line(tmp_path):
    runner = CliRunner()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        for args, part in ((["--panel-host", "0.0.0.0"], "--panel-host: needs --panel"),
                           (["--panel-port", "9000"], "--panel-port: needs --panel"),
                           (["--panel", "--panel-port", "70000"], "--panel-port: expected a port in [0, 65535]"),
                           (["--panel", "--panel-port", str(port)], f"cannot listen on 127.0.0.1:{port}")):
            res = runner.invoke(app, ["webcam", "--camera", str(tmp_path / "none.mp4"), "--aus", "smile",
                                      "--model", "warp", "--no-preview", *args])
            lines = [ln for ln in res.output.splitlines() if ln.strip()]
            assert res.exit_code == 2 and len(lines) == 1 and part in lines[0], res.output
    finally:
        busy.close()
    assert "--panel" in runner.invoke(app, ["webcam", "--help"], env={"COLUMNS": "200"}).output


# ------------------------------------------------------------------ a real live run


def abrupt_clients(base: str) -> None:
    """Clients that open the event and preview streams and vanish: one mid-read, one that never reads."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    for path in ("/events", "/preview.mjpg?fps=30", "/events", "/preview.mjpg"):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        s.recv(256)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
    stuck = socket.create_connection((host, int(port)), timeout=5)  # never reads: its buffers fill up
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(f"GET /preview.mjpg?fps=30&w=640 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    threading.Timer(20.0, stuck.close).start()


def test_live_run_change_shows_in_the_written_video(portrait_clip, tmp_path):
    out = tmp_path / "live.mp4"
    with LiveRun(portrait_clip, out=out) as run:
        s = run.wait(lambda s: s["frames"] >= 5 and s["faces"] == 1, what="five frames with the face")
        assert s["model"].startswith("warp") and s["panel"]["mode"] == "manual"
        assert call(run.base + "/settings", "POST", {"easing": 0}).status == 200
        assert call(run.base + "/aus", "POST", {"AU01": 2}).status == 400  # refused: the run goes on unchanged
        posted = call(run.base + "/aus", "POST", {"AU01": 1.0, "AU02": 1.0}).json()
        s = run.wait(lambda s: s["last_change"]["reached_frame"] is not None, what="the change in the output")
        change = s["last_change"]
        assert change["posted_frame"] == posted["frame"] and change["frames"] <= 3, change  # the bound

        # a client flooding slider moves, and clients that drop their streams: the video keeps its pace
        client = flood(run.base, 3.0)
        before, t0 = run.status(), time.monotonic()
        abrupt_clients(run.base)
        sent = int(client.communicate(timeout=60)[0].strip())
        during, t1 = run.status(), time.monotonic()
        expected = (before["fps"] or 1.0) * (t1 - t0)
        got = during["frames"] - before["frames"]
        assert during["running"] and got >= max(1.0, 0.2 * expected), (got, expected, before, during)
        assert sent > 30
        call(run.base + "/aus", "POST", {"AU12": 0.0})
        assert call(run.base + "/aus").json() == {"AU01": 1.0, "AU02": 1.0}  # coalesced: the last value won
        run.wait(lambda s: s["frames"] >= change["reached_frame"] + 5, what="five frames after the change")
        stats = run.stop()

    brows = measured_brows(out)
    assert len(brows) == stats.frames
    # the file's frames are the frames handed out, less those its queue dropped (live: a sink that falls behind
    # drops its oldest frame; each one shifts the later frames one place earlier in the file)
    drops = stats.sink_drops.get("file", 0)
    before_change = [b for b in brows[: change["posted_frame"] - drops] if np.isfinite(b)]
    onset = next(i for i, b in enumerate(brows) if np.isfinite(b) and b > 0.5)
    assert before_change and max(before_change) < 0.4, before_change
    # frame k of the file is handed-out frame k + 1: the first frame with the change is reached_frame - 1
    assert change["reached_frame"] - 1 - drops <= onset <= change["reached_frame"] - 1, (onset, change, drops)
    assert np.nanmin(brows[onset : onset + 5]) > 0.5
    print(f"POST /aus -> output: {change['frames']} frames, {change['ms']} ms; {got} frames "
          f"({expected:.1f} at the rate before) during a flood of {sent} requests in {t1 - t0:.1f} s")


def test_the_readme_documents_every_route():
    from pathlib import Path

    from rtanim.panel.server import build_app

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = set()
    for row in re.findall(r"^\| `(?:GET|POST) .*", readme, re.MULTILINE):
        cell = row.split("|")[1]
        documented |= set(re.findall(r"(?:GET|POST) (/[a-z.]*)", cell))
    app_ = build_app(PanelRun(PanelTarget(timeline_from_dict({"aus": {}})), Controls(), model="m", source="s"),
                     PanelOptions())
    routes = {r.path for r in app_.app.routes if r.path not in ("/", "/static")}
    assert documented == routes


def test_panel_options(monkeypatch):
    from rtanim.errors import InputError
    from rtanim.panel import live
    from rtanim.panel.live import panel_options

    assert panel_options(False, None, None) is None
    local = panel_options(True, None, None)
    assert (local.host, local.port, local.token) == ("127.0.0.1", 8765, None)
    assert local.url() == "http://127.0.0.1:8765/"
    lan = panel_options(True, "0.0.0.0", 9000)
    assert lan.token and len(lan.token) >= 20 and lan.url() == f"http://0.0.0.0:9000/?token={lan.token}"
    assert panel_options(True, "0.0.0.0", None).token != lan.token  # a new one every run
    monkeypatch.setattr(live, "find_spec", lambda name: None)
    with pytest.raises(InputError) as e:
        panel_options(True, None, None)
    assert e.value.line() == '--panel: needs starlette and uvicorn: pip install -e ".[panel]"'
