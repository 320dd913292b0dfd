"""`rtanim video`, `rtanim webcam` and `rtanim bench --input` end to end, on shared clips with the `warp` model.

A 2 s lossless clip with audio is cut from a WDA clip once per module (by rtanim's own file sink),
so every run is short and pixels outside the faces can be compared exactly.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from rtanim.cli.app import app

runner = CliRunner()
FRAMES = 50  # 2 s at 25 fps


def probe(path: Path) -> dict:
    """Decoded frame count, video and audio durations (s) of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        n = sum(1 for _ in c.decode(video=0))
        return {
            "frames": n,
            "fps": float(v.average_rate),
            "video_s": float(v.duration * v.time_base),
            "audio_s": float(a.duration * a.time_base) if a is not None and a.duration else None,
        }


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture(scope="module")
def clip(shared_data, tmp_path_factory) -> Path:
    """The first 2 s of a WDA clip, lossless H.264 with its AAC audio."""
    from rtanim.io.sink_file import VideoFileSink
    from rtanim.io.source_file import VideoFileSource

    src = shared_data / "video" / "WDA_KatieHill_000.mp4"
    out = tmp_path_factory.mktemp("clip") / "short.mp4"
    with VideoFileSource(src, max_frames=FRAMES) as s, VideoFileSink(out, s.size, s.fps, time_base=s.time_base,
                                                                       crf=0, audio_from=src) as k:
        for f in s:
            k.write(f, f.image)
    return out


def passthrough_copy(src: Path, out: Path) -> None:
    """The clip through the same encoder with the effect off: the reference for untouched pixels."""
    from rtanim.io.sink_file import VideoFileSink
    from rtanim.io.source_file import VideoFileSource

    with VideoFileSource(src) as s, VideoFileSink(out, s.size, s.fps, time_base=s.time_base, crf=0) as k:
        for f in s:
            k.write(f, f.image)


def test_video_end_to_end(clip, tmp_path):
    from rtanim.face.compose import region_box
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource

    before = sha(clip)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    res = runner.invoke(app, ["video", str(clip), "-o", str(out), "--aus", "smile", "--model", "warp", "--crf", "0",
                              "--stats-json", str(stats)])
    assert res.exit_code == 0, res.output
    assert sha(clip) == before and leftovers(tmp_path) == []
    pin, pout = probe(clip), probe(out)
    frame = 1.0 / pin["fps"]
    assert pout["frames"] == pin["frames"] == FRAMES
    assert pout["video_s"] == pytest.approx(pin["video_s"], abs=1e-3)
    assert pout["audio_s"] is not None and abs(pout["audio_s"] - pout["video_s"]) <= frame
    assert abs(pout["audio_s"] - pin["audio_s"]) <= frame
    s = json.loads(stats.read_text())
    assert s["frames"] == FRAMES and s["faces"] == FRAMES and s["policy"] == "offline" and s["fps"] > 0
    assert "stage" in res.output and "latency p50" in res.output  # the summary table

    ref = tmp_path / "ref.mp4"
    passthrough_copy(clip, ref)
    changed = []
    with (VideoFileSource(clip) as a, VideoFileSource(ref) as r, VideoFileSource(out) as b,
          FaceTracker(4, mode="video") as tracker):
        for fa, fr, fb in zip(a, r, b, strict=True):
            diff = np.abs(fr.image.astype(int) - fb.image.astype(int)).max(axis=2)
            outside = np.ones(diff.shape, bool)
            for face in tracker.track(fa.image, fa.pts):
                x0, y0, x1, y1 = region_box(face.transform.matrix, 128, fa.image.shape)
                outside[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = False  # 4:2:0 chroma spans 2 px
                changed.append(diff[y0:y1, x0:x1].mean())
            assert diff[outside].max() <= 1, f"frame {fa.index}: pixels outside the face changed"
    assert len(changed) == FRAMES and np.mean(changed) > 3  # the faces did change


def test_video_timeline_from_csv_and_from_a_driving_video(clip, shared_data, tmp_path):
    from rtanim.expression.timeline import write_openface_csv

    csv = tmp_path / "aus.csv"
    write_openface_csv(csv, [(i, 0, i / 25, {"AU12": i / 10, "AU06": 0.5}) for i in range(11)])
    out = tmp_path / "csv.mp4"
    res = runner.invoke(app, ["video", str(clip), "-o", str(out), "--timeline", str(csv), "--model", "warp",
                              "--frames", "10"])
    assert res.exit_code == 0, res.output
    p = probe(out)
    assert p["frames"] == 10 and p["audio_s"] is not None and abs(p["audio_s"] - p["video_s"]) <= 1 / 25

    out = tmp_path / "driven.mp4"
    res = runner.invoke(app, ["video", str(clip), "-o", str(out), "--timeline",
                              str(shared_data / "video" / "single_face.mp4"), "--model", "warp", "--frames", "8"])
    assert res.exit_code == 0, res.output
    assert probe(out)["frames"] == 8


@pytest.fixture(scope="module")
def audio_only(shared_data, tmp_path_factory) -> Path:
    src = shared_data / "video" / "WDA_KatieHill_000.mp4"
    out = tmp_path_factory.mktemp("audio") / "sound.m4a"
    with av.open(str(src)) as i, av.open(str(out), "w") as o:
        stream = o.add_stream_from_template(i.streams.audio[0])
        for pkt in i.demux(i.streams.audio[0]):
            if pkt.dts is not None:
                pkt.stream = stream
                o.mux(pkt)
    return out


BAD = {
    "missing input": (["{dir}/nope.mp4", "-o", "{out}", "--aus", "smile"], "no such file"),
    "not a video": (["{dir}/text.mp4", "-o", "{out}", "--aus", "smile"], "not a readable video"),
    "no video stream": (["{audio}", "-o", "{out}", "--aus", "smile"], "no video stream"),
    "output folder missing": (["{clip}", "-o", "{dir}/no/such/out.mp4", "--aus", "smile"], "does not exist"),
    "output is the input": (["{clip}", "-o", "{clip}", "--aus", "smile"], "overwrite the input"),
    "unknown extension": (["{clip}", "-o", "{dir}/out.xyz", "--aus", "smile"], "unknown video extension"),
    "bad timeline": (["{clip}", "-o", "{out}", "--timeline", "{dir}/bad.json"], "malformed JSON"),
    "timeline not usable": (["{clip}", "-o", "{out}", "--timeline", "{dir}/text.txt"], "not a timeline"),
    "both aus and timeline": (["{clip}", "-o", "{out}", "--aus", "smile", "--timeline", "{dir}/bad.json"],
                              "exactly one"),
    "neither": (["{clip}", "-o", "{out}"], "exactly one"),
    "bad preset": (["{clip}", "-o", "{out}", "--aus", "smiel"], "did you mean 'smile'"),
    "bad faces": (["{clip}", "-o", "{out}", "--aus", "smile", "--faces", "some"], "--faces"),
    "bad model": (["{clip}", "-o", "{out}", "--aus", "smile", "--model", "nosuchmodel"], "no such file or model"),
    "bad codec": (["{clip}", "-o", "{out}", "--aus", "smile", "--codec", "nosuchcodec"], "unknown video encoder"),
    "bad x264 preset": (["{clip}", "-o", "{out}", "--aus", "smile", "--preset", "fastest"], "unknown x264 preset"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_video_bad_input_is_one_line_and_exit_2(case, clip, audio_only, tmp_path):
    (tmp_path / "text.mp4").write_text("not a video")
    (tmp_path / "text.txt").write_text("not a timeline")
    (tmp_path / "bad.json").write_text('{"aus": {"AU12": 1.0,}}')
    args, reason = BAD[case]
    out = tmp_path / "out.mp4"
    fill = {"dir": tmp_path, "out": out, "clip": clip, "audio": audio_only}
    before = sha(clip)
    argv = ["video", *[a.format(**fill) for a in args]] + ([] if "--model" in args else ["--model", "warp"])
    res = runner.invoke(app, argv)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in res.output, res.output
    assert not out.exists() and leftovers(tmp_path) == [] and leftovers(clip.parent) == []
    assert sha(clip) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_leaves_a_playable_file_with_audio(sig, shared_data, tmp_path):
    src = shared_data / "video" / "WDA_AlexandriaOcasioCortez_000.mp4"  # 8 s, 200 frames
    total = probe(src)["frames"]
    out, part = tmp_path / "out.mp4", tmp_path / ".out.mp4.part"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "video", str(src), "-o", str(out), "--aus", "smile", "--model", "warp"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script: must still work
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if part.exists() and part.stat().st_size > 20_000:  # encoded frames are reaching the file
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished (or failed) before it could be interrupted"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert out.exists() and not part.exists()
    p = probe(out)
    assert 0 < p["frames"] < total
    # The audio is remuxed, not re-encoded, so a cut at an arbitrary frame lands on an AAC packet
    # boundary: 1024 samples = 64 ms at this clip's 16 kHz, more than one 40 ms video frame.
    packet_s = 1024 / 16000
    assert p["audio_s"] is not None and abs(p["audio_s"] - p["video_s"]) <= max(1 / 25, packet_s) + 1e-3


def test_webcam_on_a_paced_file(shared_data, tmp_path):
    stats, out = tmp_path / "live.json", tmp_path / "live.mp4"
    res = runner.invoke(app, ["webcam", "--camera", str(shared_data / "video" / "single_face.mp4"), "--aus", "smile",
                              "--model", "warp", "--no-preview", "--out", str(out), "--stats-json", str(stats)])
    assert res.exit_code == 0, res.output
    s = json.loads(stats.read_text())
    assert s["policy"] == "live" and s["frames"] > 10 and s["latency_ms"]["p95"] is not None
    assert "dropped" in s and all(v <= 1 for v in s["queue_peak"].values())
    assert "passthrough AU25, AU26" in res.output and "latency" in res.output
    assert probe(out)["frames"] == s["frames"]


def test_webcam_bad_input(tmp_path):
    for args, reason in ((["--camera", str(tmp_path / "none.mp4"), "--aus", "smile"], "no such file"),
                         (["--camera", str(tmp_path), "--aus", "smile"], "no images found"),
                         (["--aus", "smile", "--size", "big"], "--size"),
                         (["--aus", "smile", "--passthrough", "AU99"], "--passthrough")):
        res = runner.invoke(app, ["webcam", *args, "--model", "warp", "--no-preview"])
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and reason in lines[0], res.output


def test_bench_input(shared_data):
    res = runner.invoke(app, ["bench", "--input", str(shared_data / "video" / "single_face.mp4"), "--frames", "16",
                              "--model", "warp", "--size", "320x180"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "offline" in res.output and "live (paced" in res.output and "real decode" in res.output
    assert "320x180" in res.output and "file (encode" in res.output and "udp (encode" in res.output
    assert runner.invoke(app, ["bench", "--engines", "--input", "x.mp4"]).exit_code == 2


@pytest.mark.skipif(not sys.platform.startswith("linux") or Path("/dev/video7").exists(), reason="needs Linux without a /dev/video7")
def test_webcam_without_that_camera_is_refused_before_heavy_modules_load():
    code = ("import sys\nfrom rtanim.cli.app import main\nsys.argv = ['rtanim', 'webcam', '--camera', '7', '--aus', 'smile']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    heavy = [m for m in ('torch', 'cv2', 'av', 'mediapipe') if m in sys.modules]\n"
            "    print('HEAVY', heavy, 'EXIT', e.code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY [] EXIT 2" in proc.stdout, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: camera 7: cannot open it"), proc.stderr


def test_webcam_log_ends_the_status_line_before_the_summary(shared_data, tmp_path):
    log = tmp_path / "run.log"
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "rtanim", "webcam", "--camera", str(shared_data / "video" / "single_face.mp4"),
                               "--aus", "smile", "--model", "warp", "--no-preview", "-o", str(tmp_path / "take.mp4")],
                              stdout=f, stderr=subprocess.STDOUT, timeout=300, cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert any(ln.startswith("rtanim webcam (live)") for ln in text.splitlines()), text
