import time

import av
import cv2
import numpy as np
import pytest

from rtanim.errors import InputError, RunError
from rtanim.io.source_base import Frame, Source
from rtanim.io.source_file import ImageSequenceSource, VideoFileSource, probe_audio
from rtanim.io.source_live import CameraSource, PacedFileSource
from rtanim.io.source_open import open_source


def wda(shared_data):
    return sorted((shared_data / "video").glob("WDA_*.mp4"))[0]


def pyav_timestamps(path, n):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = []
        for f in c.decode(s):
            out.append(float(f.pts * s.time_base))
            if len(out) == n:
                break
        return out, s.frames


def test_file_source_matches_pyav(shared_data):
    path = wda(shared_data)
    with VideoFileSource(path) as src:
        assert isinstance(src, Source)
        assert not src.live and src.size == (512, 512) and src.fps == pytest.approx(25)
        frames = list(src)
    expected, count = pyav_timestamps(path, 10**6)
    assert src.frame_count == count == len(frames) == 200
    assert [f.pts for f in frames] == pytest.approx(expected)
    assert [f.index for f in frames] == list(range(len(frames)))
    f = frames[0]
    assert isinstance(f, Frame) and f.image.dtype == np.uint8 and f.image.shape == (512, 512, 3)
    assert src.duration == pytest.approx(8.0, abs=0.05)


def test_hevc_vfr_decodes_with_real_timestamps(shared_data):
    path = shared_data / "video" / "face_noface.mov"
    with VideoFileSource(path, max_frames=12) as src:
        assert src.size == (960, 540)
        frames = list(src)
    expected, _ = pyav_timestamps(path, 12)
    assert len(frames) == 12 and [f.pts for f in frames] == pytest.approx(expected)
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:], strict=False))
    assert frames[5].image.std() > 5  # a real picture, not a blank buffer


def test_start_and_max_frames(shared_data):
    with VideoFileSource(wda(shared_data), start=2.0, max_frames=3) as src:
        frames = list(src)
    assert len(frames) == 3 and frames[0].pts == pytest.approx(2.0, abs=0.04)


def test_probe_audio(shared_data):
    info = probe_audio(wda(shared_data))
    assert info.codec == "aac" and info.sample_rate == 16000 and info.duration == pytest.approx(8.0, abs=0.1)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        VideoFileSource(tmp_path / "missing.mp4")
    txt = tmp_path / "notes.mp4"
    txt.write_text("this is not a video\n" * 50)
    with pytest.raises(InputError, match="not a readable"):
        VideoFileSource(txt)
    with pytest.raises(InputError, match="folder"):
        VideoFileSource(tmp_path)
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(5):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in s.encode(fr):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    with pytest.raises(InputError, match="no video stream") as e:
        VideoFileSource(audio_only)
    assert str(audio_only) in str(e.value) and "\n" not in str(e.value)
    assert probe_audio(audio_only).channels == 1
    with pytest.raises(InputError, match="no images"):
        ImageSequenceSource(tmp_path / "*.png")


def test_truncated_file_stops_or_raises_cleanly(shared_data, tmp_path):
    data = wda(shared_data).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    try:
        with VideoFileSource(cut) as src:
            n = sum(1 for _ in src)
        assert n < 200
    except (InputError, RunError) as e:
        assert "\n" not in str(e)


def test_image_sequence_natural_order(tmp_path):
    for i in (10, 2, 1):
        img = np.full((6, 8, 3), i, np.uint8)
        img[0, 0] = (255, 0, 0)  # BGR on disk: blue pixel
        cv2.imwrite(str(tmp_path / f"img{i}.png"), img)
    (tmp_path / "readme.txt").write_text("not an image")
    src = open_source(str(tmp_path), fps=10)
    assert isinstance(src, ImageSequenceSource) and src.size == (8, 6) and src.frame_count == 3
    frames = list(src)
    assert [int(f.image[1, 1, 0]) for f in frames] == [1, 2, 10]
    assert [f.pts for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    assert tuple(frames[0].image[0, 0]) == (0, 0, 255)  # RGB in memory
    assert open_source(str(tmp_path / "img1*.png")).frame_count == 2


def test_open_source_dispatch(shared_data, tmp_path):
    assert isinstance(open_source(str(wda(shared_data))), VideoFileSource)
    paced = open_source(str(wda(shared_data)), paced=True)
    assert isinstance(paced, PacedFileSource) and paced.live
    paced.close()
    with pytest.raises(InputError, match="camera 9"):
        open_source("9")
    with pytest.raises(InputError, match="camera /dev/video42"):
        open_source("/dev/video42")


def test_paced_source_drops_for_slow_consumer(shared_data):
    got: list[Frame] = []
    with PacedFileSource(wda(shared_data), speed=2.0, max_frames=40) as src:
        assert src.live
        for f in src:
            got.append(f)
            assert src._slot.pending <= 1  # one-frame mailbox: nothing queues up behind a slow consumer
            time.sleep(0.1)  # a 10 fps consumer on a 50 fps feed
        dropped = src.dropped
    assert dropped > 0 and len(got) + dropped == 40
    assert all(b.pts > a.pts for a, b in zip(got, got[1:], strict=False))
    assert max(b.index - a.index for a, b in zip(got, got[1:], strict=False)) > 1


def test_paced_source_fast_consumer_gets_everything(shared_data):
    with PacedFileSource(wda(shared_data), speed=8.0, max_frames=10) as src:
        frames = list(src)
    assert [f.index for f in frames] == list(range(10)) and src.dropped == 0
    assert frames[-1].pts == pytest.approx(9 / 25)


def test_paced_source_closes_early(shared_data):
    src = PacedFileSource(wda(shared_data), speed=1.0)
    it = iter(src)
    next(it)
    src.close()
    assert not src._thread.is_alive()


class FakeCapture:
    """A cv2.VideoCapture stand-in whose reads follow a script: True = frame, False = failure."""

    def __init__(self, script, opened=True):
        self.script = list(script)
        self.opened = opened
        self.props = {}
        self.released = False

    def isOpened(self):  # noqa: N802 - cv2's name
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        ok = self.script.pop(0) if self.script else False
        return (True, np.full((4, 6, 3), (10, 20, 30), np.uint8)) if ok else (False, None)

    def release(self):
        self.released = True


def test_camera_reconnects_after_short_loss():
    caps = [FakeCapture([True, True, False, False]), FakeCapture([], opened=False), FakeCapture([True] * 3)]
    made = []

    def factory(spec):
        made.append(spec)
        return caps.pop(0) if caps else FakeCapture([], opened=False)

    with CameraSource(0, size=(6, 4), fps=30, retry_seconds=0.6, capture_factory=factory) as cam:
        assert cam.live and cam.size == (6, 4) and cam.fps == 30
        props = cam._cap.props
        assert props[cv2.CAP_PROP_FOURCC] == cv2.VideoWriter.fourcc(*"MJPG") and props[cv2.CAP_PROP_FRAME_WIDTH] == 6
        frames = []
        with pytest.raises(RunError, match="camera 0: lost"):
            for f in cam:
                frames.append(f)
                time.sleep(0.02)
    assert len(made) >= 3  # reopened after the loss
    assert len(frames) + cam.dropped == 5 and all(tuple(f.image[0, 0]) == (30, 20, 10) for f in frames)


def test_camera_gives_up_after_retry_window():
    caps = [FakeCapture([True])]

    def factory(spec):  # the first open works; every reopen gives a device that opens but never delivers
        return caps.pop(0) if caps else FakeCapture([])

    t = time.monotonic()
    with CameraSource("/dev/video7", retry_seconds=0.3, capture_factory=factory) as cam:
        with pytest.raises(RunError, match=r"lost \(no frames for 0.3 s"):
            list(cam)
    assert time.monotonic() - t < 5


def test_camera_that_never_opens_or_delivers():
    with pytest.raises(InputError, match="no such device"):
        CameraSource(3, capture_factory=lambda s: FakeCapture([], opened=False))
    with pytest.raises(InputError, match="delivered no frame"):
        CameraSource(3, open_timeout=0.2, capture_factory=lambda s: FakeCapture([]))



def test_second_pass_starts_over(shared_data):
    with VideoFileSource(wda(shared_data), max_frames=3) as src:
        a, b = [f.pts for f in src], [f.pts for f in src]
    assert a == b == pytest.approx([0.0, 0.04, 0.08])
