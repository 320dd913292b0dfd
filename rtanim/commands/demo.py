"""The offline demo on the bundled portrait: what rtanim does, with no camera, data or download."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from rtanim.commands.image import read_image, reexpress, track_still
from rtanim.pipeline.jobs import Generator

DEMO_PRESETS: tuple[str, ...] = ("smile", "surprise", "wink_left", "eyes_closed")


def sample_image_path() -> Path:
    """The bundled public-domain portrait (NASA)."""
    return Path(str(resources.files("rtanim") / "assets" / "astronaut.jpg"))


def expression_strip(
    image: np.ndarray, gen: Generator, presets: Sequence[str] = DEMO_PRESETS, size: int = 256
) -> np.ndarray:
    """The input face beside the same face with each preset, labelled, as one RGB image."""
    from rtanim.expression.timeline import timeline_from_dict

    faces = track_still(image, 1)
    if not faces:
        raise ValueError("no face in the demo image")
    face = faces[0]
    x0, y0, x1, y1 = face.bbox
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 0.75
    box = [
        int(max(0, cx - half)),
        int(max(0, cy - half)),
        int(min(image.shape[1], cx + half)),
        int(min(image.shape[0], cy + half)),
    ]

    def tile(img: np.ndarray, label: str) -> np.ndarray:
        t = cv2.resize(img[box[1] : box[3], box[0] : box[2]], (size, size), interpolation=cv2.INTER_AREA)
        cv2.rectangle(t, (0, size - 24), (size, size), (0, 0, 0), -1)
        cv2.putText(t, label, (8, size - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        return t

    tiles = [tile(image, "input")]
    for name in presets:
        target = timeline_from_dict({"preset": name}).at(0.0, face.aus)
        tiles.append(tile(reexpress(image, [face], [target], gen).image, name))
    return np.concatenate(tiles, axis=1)


def demo_still(out_dir: Path, gen: Generator) -> Path:
    out = out_dir / "expressions.png"
    from rtanim.commands.image import write_image

    write_image(out, expression_strip(read_image(sample_image_path()), gen))
    return out


#: The demo timeline: a smile, a wink, surprise, back to rest (written beside the outputs).
DEMO_TIMELINE: dict = {
    "comment": "rtanim demo: smile, wink, surprise, rest",
    "loop": "none",
    "keyframes": [
        {"t": 0.0, "preset": "neutral"},
        {"t": 0.8, "preset": "smile", "ease": "ease-in-out"},
        {"t": 1.2, "aus": {"AU06": 0.6, "AU12": 1.0, "AU45L": 1.0}, "ease": "ease-in"},
        {"t": 1.6, "preset": "smile", "ease": "ease-out"},
        {"t": 2.4, "preset": "surprise", "strength": 0.8, "ease": "ease-in-out"},
        {"t": 3.2, "preset": "neutral", "ease": "ease-in-out"},
    ],
}


def make_sample_clip(path: Path, seconds: float = 3.2, fps: int = 25, size: int = 384) -> Path:
    """A short clip from the bundled portrait, with a slow camera move and a soft tone as audio.

    It stands in for a video file so the demo exercises tracking over time, the video sink and
    the audio copy without shipping any footage.
    """
    import av

    image = read_image(sample_image_path())
    h, w = image.shape[:2]
    n = int(round(seconds * fps))
    rate = 48000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        aud = out.add_stream("aac", rate=rate, layout="mono")
        for i in range(n):
            u = i / max(1, n - 1)
            zoom = 1.0 + 0.08 * u
            angle = 3.0 * np.sin(2 * np.pi * u)
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, zoom * size / w)
            m[:, 2] += (size - w) / 2 + np.array([6.0 * np.sin(np.pi * u), 0.0])
            frame = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        tone = (0.1 * np.sin(2 * np.pi * 220.0 * t) * np.minimum(1.0, 4 * t)).astype(np.float32)
        chunk = 1024
        for start in range(0, len(tone), chunk):
            af = av.AudioFrame.from_ndarray(tone[None, start : start + chunk], format="fltp", layout="mono")
            af.sample_rate, af.pts = rate, start
            for packet in aud.encode(af):
                out.mux(packet)
        for stream in (vs, aud):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def run_demo(
    out_dir: str | Path, model: str = "default", engine: str = "auto", console=None, err_console=None
) -> list[Path]:  # noqa: ANN001
    """The README's offline job: an expression strip and a re-expressed clip with its audio."""
    import json

    from rtanim.checks import output_folder
    from rtanim.commands.video import run_video
    from rtanim.files import write_text
    from rtanim.pipeline.generators import load_generator

    out_dir = output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    strip = demo_still(out_dir, load_generator(model, engine))
    clip = make_sample_clip(out_dir / "input.mp4")
    timeline = out_dir / "timeline.json"
    write_text(timeline, json.dumps(DEMO_TIMELINE, indent=2) + "\n")
    result = run_video(
        clip,
        out_dir / "demo.mp4",
        timeline=timeline,
        model=model,
        engine=engine,
        console=console,
        err_console=err_console,
    )
    return [strip, clip, timeline] + ([result.out] if result.out else [])
