import os
import signal
import socket
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import pyvirtualcam

from rtanim.errors import InputError
from rtanim.io.sink_base import Sink
from rtanim.io.sink_file import VideoFileSink
from rtanim.io.sink_multi import MultiSink, open_sinks
from rtanim.io.sink_preview import Controls, OverlayStats, PreviewSink, apply_key, draw_overlay
from rtanim.io.sink_stream import NetworkSink
from rtanim.io.sink_vcam import VirtualCameraSink
from rtanim.io.source_base import Frame
from rtanim.io.source_file import VideoFileSource

FAST = {"preset": "ultrafast"}


def wda(shared_data):
    return sorted((shared_data / "video").glob("WDA_*.mp4"))[0]


def read_back(path):
    """(decoded RGB frames, video seconds, audio seconds or None, audio codec or None) of a written file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
    with av.open(str(path)) as c:
        vs, aus = [], []
        for p in c.demux():
            if p.pts is None or not p.size:
                continue
            t0, t1 = float(p.pts * p.time_base), float((p.pts + p.duration) * p.time_base)
            (vs if p.stream.type == "video" else aus).append((t0, t1))
    vdur = max(t1 for _, t1 in vs) - min(t0 for t0, _ in vs)
    adur = None if not aus else max(t1 for _, t1 in aus) - max(0.0, min(t0 for t0, _ in aus))
    return frames, vdur, adur, (a.codec_context.name if a is not None else None)


def write_clip(src_path, out, n, **kw):
    images = []
    with VideoFileSource(src_path, max_frames=n) as src:
        with VideoFileSink(out, src.size, src.fps, time_base=src.time_base, audio_from=src_path, **kw) as sink:
            assert isinstance(sink, Sink)
            for f in src:
                images.append(f.image)
                sink.write(f, f.image)
    return images


def test_file_sink_round_trip_with_audio(shared_data, tmp_path):
    src = wda(shared_data)
    out = tmp_path / "out.mp4"
    before = src.stat().st_mtime_ns
    images = write_clip(src, out, 30, crf=0, options=FAST)
    frames, vdur, adur, acodec = read_back(out)
    assert len(frames) == 30 and vdur == pytest.approx(30 / 25)
    assert acodec == "aac" and abs(adur - vdur) <= 1 / 25
    err = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(images, frames, strict=True)])
    assert err < 3  # crf 0: only the 4:2:0 chroma subsampling is lost
    assert not list(tmp_path.glob("*.part")) and src.stat().st_mtime_ns == before


def test_file_sink_transcodes_audio_the_container_cannot_hold(shared_data, tmp_path):
    # WebM takes neither AAC nor H.264: VP9 video, audio re-encoded to Opus; the sink also rescales frames
    out = tmp_path / "small.webm"
    with VideoFileSource(wda(shared_data), max_frames=12) as src:
        with VideoFileSink(out, (96, 96), src.fps, time_base=src.time_base, audio_from=src.path) as sink:
            for f in src:
                sink.write(f, f.image)
    frames, vdur, adur, acodec = read_back(out)
    assert len(frames) == 12 and frames[0].shape == (96, 96, 3) and acodec == "opus"
    assert abs(adur - vdur) <= 1 / 25


def test_file_sink_vfr_timestamps_and_odd_size(tmp_path):
    out = tmp_path / "vfr.mkv"
    stamps = [0.0, 0.04, 0.1, 0.5, 0.52, 1.0]
    img = np.zeros((75, 101, 3), np.uint8)
    with VideoFileSink(out, (101, 75), None, time_base=Fraction(1, 1000), options=FAST) as sink:
        for i, t in enumerate(stamps):
            img[:] = 40 * i
            sink.write(Frame(img, 10.0 + t, i, 0.0), img)  # output time starts at the first frame
    with av.open(str(out)) as c:
        got = [(float(f.pts * f.time_base), f.width, f.height) for f in c.decode(video=0)]
    assert [g[0] for g in got] == pytest.approx(stamps, abs=1e-3)
    assert {(g[1], g[2]) for g in got} == {(102, 76)}  # padded to even for 4:2:0


def test_no_frames_leaves_nothing(tmp_path):
    sink = VideoFileSink(tmp_path / "empty.mp4", (64, 64), 25)
    assert sink.close() is None
    assert list(tmp_path.iterdir()) == []


def test_bad_outputs(tmp_path, shared_data):
    with pytest.raises(InputError, match="existing folder"):
        VideoFileSink(tmp_path, (64, 64), 25)
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(InputError, match="existing folder"):
        VideoFileSink(tmp_path / "x.mp4", (64, 64), 25)
    with pytest.raises(InputError, match="does not exist"):
        VideoFileSink(tmp_path / "nope" / "out.mp4", (64, 64), 25)
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(InputError, match="does not exist"):
        VideoFileSink(afile / "out.mp4", (64, 64), 25)  # parent is a file: cannot write there
    with pytest.raises(InputError, match="unknown video encoder 'nosuchcodec'") as e:
        VideoFileSink(tmp_path / "o.mp4", (64, 64), 25, codec="nosuchcodec")
    assert e.value.field == "codec"
    with pytest.raises(InputError, match="not a video encoder"):
        VideoFileSink(tmp_path / "o.mp4", (64, 64), 25, codec="aac")
    with pytest.raises(InputError, match="unknown video extension"):
        VideoFileSink(tmp_path / "o.xyz", (64, 64), 25)
    with pytest.raises(InputError, match="overwrite the input"):
        VideoFileSink(wda(shared_data), (64, 64), 25, audio_from=wda(shared_data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "x.mp4"]  # nothing created


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user for permissions")
def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(InputError, match="not writable"):
            VideoFileSink(ro / "out.mp4", (64, 64), 25)
    finally:
        ro.chmod(0o755)


INTERRUPTED_WRITER = """
import sys, time
from rtanim.io.sink_file import VideoFileSink
from rtanim.io.source_file import VideoFileSource
src_path, out = sys.argv[1], sys.argv[2]
with VideoFileSource(src_path) as src:
    sink = VideoFileSink(out, src.size, src.fps, time_base=src.time_base, audio_from=src_path,
                         options={"preset": "ultrafast"})
    try:
        for f in src:
            sink.write(f, f.image)
            if f.index == 20:
                print("halfway", flush=True)
            time.sleep(0.02)
    except KeyboardInterrupt:
        sink.close()
        print(sink.frames, flush=True)
        sys.exit(130)
    sink.close()
"""


def test_sigint_leaves_playable_file_with_audio(shared_data, tmp_path):
    out = tmp_path / "cut.mp4"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_WRITER, str(wda(shared_data)), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "halfway"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    written = int(stdout.split()[-1])
    assert 20 < written < 200
    assert not list(tmp_path.glob("*.part")) and out.exists()
    frames, vdur, adur, acodec = read_back(out)
    assert len(frames) == written and acodec == "aac" and abs(adur - vdur) <= 1 / 25


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_stream_udp_is_decodable():
    port = free_udp_port()
    got: dict = {}

    def receive():
        try:
            with av.open(f"udp://127.0.0.1:{port}", timeout=(8.0, 8.0),
                         options={"probesize": "65536", "analyzeduration": "500000"}) as c:
                for f in c.decode(video=0):
                    got["frame"] = f.to_ndarray(format="rgb24")
                    return
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            got["error"] = e

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    time.sleep(0.3)
    img = np.zeros((120, 160, 3), np.uint8)
    img[:, :80] = (200, 60, 30)
    with NetworkSink(f"udp://127.0.0.1:{port}", (160, 120), 25) as sink:
        deadline = time.monotonic() + 10
        i = 0
        while reader.is_alive() and time.monotonic() < deadline:
            sink.write(Frame(img, i / 25, i, time.perf_counter()), img)
            i += 1
            time.sleep(0.01)
    reader.join(5)
    assert "frame" in got, got.get("error")
    assert got["frame"].shape == (120, 160, 3)
    assert np.abs(got["frame"][60, 20].astype(int) - (200, 60, 30)).max() < 30


def test_network_sink_bad_urls():
    with pytest.raises(InputError, match="unsupported stream scheme"):
        NetworkSink("gopher://host/x", (64, 64), 25)
    with socket.socket() as s:  # a TCP port with nobody listening: refused before any frame
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InputError, match="cannot start the stream"):
        NetworkSink(f"tcp://127.0.0.1:{port}", (64, 64), 25, timeout=2)


class RecordingCamera:
    """A pyvirtualcam backend (its documented protocol) that keeps what it is sent."""

    sent: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        if device == "missing":
            raise RuntimeError("Device missing does not exist.")
        self.width, self.height, self.fourcc = width, height, fourcc
        RecordingCamera.opened = self

    def close(self):
        RecordingCamera.closed = True

    def send(self, frame):
        RecordingCamera.sent.append(frame.copy())

    def device(self):
        return "test-cam"

    def native_fourcc(self):
        return None


@pytest.fixture
def test_backend():
    RecordingCamera.sent = []
    pyvirtualcam.register_backend("rtanim-test", RecordingCamera)
    yield "rtanim-test"
    pyvirtualcam.camera.BACKENDS.pop("rtanim-test", None)


def test_virtual_camera_through_test_backend(test_backend):
    with VirtualCameraSink((64, 48), 30, backend=test_backend) as cam:
        assert cam.device == "test-cam"
        img = np.full((48, 64, 3), (1, 2, 3), np.uint8)
        cam.write(Frame(img, 0.0, 0, 0.0), img)
        big = np.full((96, 128, 3), 9, np.uint8)
        cam.write(Frame(big, 0.04, 1, 0.0), big)  # resized to the camera's size
    assert RecordingCamera.closed and cam.frames == 2
    assert (RecordingCamera.opened.width, RecordingCamera.opened.height) == (64, 48)
    assert [f.size for f in RecordingCamera.sent] == [64 * 48 * 3] * 2
    assert tuple(RecordingCamera.sent[0][:3]) == (1, 2, 3)  # RGB order kept
    with pytest.raises(InputError, match="Device missing does not exist"):
        VirtualCameraSink((64, 48), 30, backend=test_backend, device="missing")
    with pytest.raises(InputError, match="unknown virtual camera backend"):
        VirtualCameraSink((64, 48), 30, backend="nope")


@pytest.mark.skipif(not sys.platform.startswith("linux") or list(Path("/dev").glob("video*")),
                    reason="needs Linux without any /dev/video device")
def test_virtual_camera_without_device_says_how_to_get_one():
    with pytest.raises(InputError) as e:
        VirtualCameraSink((64, 48), 30, backend="v4l2loopback")
    line = str(e.value)
    assert "\n" not in line and "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=rtanim" in line


def test_preview_without_display(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the $DISPLAY check is Linux only")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(InputError, match="no display"):
        PreviewSink("t")


def test_controls_hotkeys():
    c = Controls()
    for key in (ord(" "), ord("p"), ord("3"), -1):
        c.handle_key(key)
    assert (c.effect_on, c.paused, c.preset_index, c.quit) == (False, True, 2, False)
    c.handle_key(ord("q"))
    assert c.quit

    class PipelineControls:  # the pipeline's own object works too (duck-typed)
        quit, effect_on, paused = False, True, False

    pc = PipelineControls()
    assert apply_key(pc, ord("p")) is None and pc.paused
    assert apply_key(pc, ord("9")) == 8


def test_draw_overlay_changes_pixels_keeps_shape():
    img = np.full((240, 320, 3), 128, np.uint8)
    out = draw_overlay(img, OverlayStats(fps=29.7, latency_ms=41, faces=1), {"AU12": 0.8, "AU06": 0.3, "AU45": 1.5})
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out != img).any() and (img == 128).all()  # drawn on a copy
    assert draw_overlay(np.zeros((20, 30, 3), np.uint8), {"fps": 10.0}).shape == (20, 30, 3)


def test_open_sinks(tmp_path):
    port = free_udp_port()
    sinks = open_sinks([tmp_path / "a.mp4", f"udp://127.0.0.1:{port}"], size=(64, 48), fps=25)
    assert isinstance(sinks, MultiSink) and [type(s) for s in sinks.sinks] == [VideoFileSink, NetworkSink]
    assert sinks.preview is None and not sinks.controls.quit
    img = np.zeros((48, 64, 3), np.uint8)
    for i in range(3):
        sinks.write(Frame(img, i / 25, i, 0.0), img)
    sinks.close()
    assert (tmp_path / "a.mp4").exists()
    with pytest.raises(InputError, match="does not exist"):
        open_sinks([tmp_path / "b.mp4", tmp_path / "missing" / "c.mp4"], size=(64, 48), fps=25)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]  # b's temporary file was removed


def test_close_from_a_signal_handler_inside_write(tmp_path):
    # a handler that runs between two bytecodes of write() and calls close(): the frame completes, then finalises
    sink = VideoFileSink(tmp_path / "h.mp4", (32, 32), 25, options=FAST)
    img = np.zeros((32, 32, 3), np.uint8)
    sink.write(Frame(img, 0.0, 0, 0.0), img)
    encode = sink._video.encode

    def interrupted(frame, image):
        t = encode(frame, image)
        assert sink.close() is None  # deferred, no deadlock
        return t

    sink._video.encode = interrupted
    sink.write(Frame(img, 0.04, 1, 0.0), img)
    assert (tmp_path / "h.mp4").exists() and not list(tmp_path.glob("*.part"))
    assert len(read_back(tmp_path / "h.mp4")[0]) == 2
    with pytest.raises(Exception, match="write after close"):
        sink.write(Frame(img, 0.08, 2, 0.0), img)


def test_failed_run_discards_but_interrupt_keeps(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    for exc, kept in ((RuntimeError, False), (KeyboardInterrupt, True)):
        out = tmp_path / f"{exc.__name__}.mp4"
        with pytest.raises(exc), open_sinks([out], size=(32, 32), fps=25):
            raise exc
        assert not out.exists()  # no frames: nothing either way
        with pytest.raises(exc), open_sinks([out], size=(32, 32), fps=25) as sinks:
            sinks.write(Frame(img, 0.0, 0, 0.0), img)
            raise exc
        assert out.exists() == kept and not list(tmp_path.glob("*.part"))


def test_x264_preset_reaches_the_encoder_and_a_bad_one_is_one_line(tmp_path):
    """x264 writes its settings into the stream (an SEI message): subme=2 is veryfast, 7 medium."""
    frame = np.full((72, 96, 3), 120, np.uint8)
    written = {}
    for preset in (None, "medium"):
        out = tmp_path / f"{preset}.mp4"
        kw = {} if preset is None else {"preset": preset}
        with VideoFileSink(out, (96, 72), 25.0, **kw) as sink:
            for i in range(3):
                sink.write(Frame(frame, i / 25.0, i, 0.0), frame)
        written[preset] = out.read_bytes()
    assert b"subme=2" in written[None] and b"subme=7" in written["medium"]
    with pytest.raises(InputError) as e:
        VideoFileSink(tmp_path / "bad.mp4", (96, 72), 25.0, preset="fastest")
    assert "--preset" in e.value.line() and "veryfast" in e.value.line()
    assert not list(tmp_path.glob("*bad*"))
