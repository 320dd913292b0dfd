"""Cheap checks of command-line input, run before any heavy module loads.

Standard library only (no numpy, torch, MediaPipe, ONNX Runtime or OpenCV), so a bad output
path, a missing input or an unknown name is refused in a fraction of a second with one
:class:`~rtanim.errors.InputError` line (exit 2), before any work and with nothing written.

An output *file* needs an existing folder: a mistyped path should fail, not leave new folders
behind. An output *folder* may not exist yet (commands create it), so its nearest existing
ancestor must be a folder we can write in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rtanim.errors import InputError

#: Less free space than this in the output's folder is refused: every output is bigger than a probe.
MIN_FREE_BYTES = 16 * 2**20
#: Generator names ``--model`` takes besides a checkpoint path. NETWORKS mirrors
#: rtanim.models.ganimation.REGISTRY, which imports torch (tests/test_checks.py pins that they agree).
NAMED_MODELS = ("default", "warp", "refine")
NETWORKS = ("lite", "ganimation", "lite+flow", "ganimation+flow")
#: ``--engine`` choices; engines.select.CHOICES is the same tuple behind torch (pinned by a test).
ENGINES = ("auto", "tensorrt", "torch", "onnxruntime")
#: Faces tracked per frame by default (``--max-faces``); ``--faces largest`` keeps the biggest of them.
#: Each tracked face costs track and generate time in every frame, so video keeps fewer than stills.
MAX_FACES = 4
#: Re-expression runs track with the landmarker on one frame in this many (``--track-every``),
#: following the faces by optical flow in between (rtanim.face.follow): 0.62x the mean tracking CPU
#: at 640x360 and 1280x720, no more jitter after smoothing on any shared clip, landmarks 0.1-0.7 px
#: (mean) from every-frame tracking at the clips' own sizes (calib/bench_track.py); the live
#: AUs and the mouth refresh at half the frame rate (mean |AU diff| 0.01-0.015). Analysis and
#: training keep FaceTracker's default (every frame).
TRACK_EVERY = 2
FACE_CHOICES = ("largest", "all")
#: Sinks ``bench --input --sinks`` can name, in the order the bench reports them.
BENCH_SINKS = ("file", "vcam", "udp")


def _writable(folder: Path, path: Path, option: str) -> None:
    """Create and remove a probe file in ``folder``: the only test that holds for root, read-only
    mounts and pseudo file systems alike (os.access says yes to root for /proc)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".rtanim-probe-", dir=folder)
    except OSError as e:
        raise InputError(path, f"folder {folder} is not writable ({e.strerror or e})", field=option) from None
    os.close(fd)
    os.unlink(probe)
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise InputError(path, f"only {free // 2**20} MiB free in {folder}", field=option)


@contextlib.contextmanager
def _os_errors(path: Path, option: str) -> Iterator[None]:
    """A folder we may not even look into (EACCES on stat) is a bad path too, not a traceback."""
    try:
        yield
    except OSError as e:
        raise InputError(path, f"cannot check this path ({e.strerror or e})", field=option) from None


def _existing_ancestor(path: Path, option: str) -> Path:
    """The nearest existing ancestor of ``path``; InputError if it is a file."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(path, f"{folder} is a file, not a folder", field=option)
    return folder


def output_file(
    path: str | Path, option: str = "-o", *, suffixes: Sequence[str] | None = None, inputs: Iterable[str | Path] = ()
) -> Path:
    """An output file the command can write: a known suffix, not a folder, not an input, in a
    writable existing folder with room."""
    path = Path(path)
    with _os_errors(path, option):
        return _output_file(path, option, suffixes, inputs)


def _output_file(path: Path, option: str, suffixes: Sequence[str] | None, inputs: Iterable[str | Path]) -> Path:
    if path.is_dir():
        raise InputError(path, "is a folder, not a file name", field=option)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(path, f"unsupported output format {path.suffix or '(none)'}; use one of {', '.join(suffixes)}",
                         field=option)
    folder = _existing_ancestor(path, option)
    if folder != path.absolute().parent:
        raise InputError(path, f"folder {path.parent} does not exist", field=option)
    for src in inputs:
        if src is not None and path.exists() and Path(src).exists() and path.samefile(src):
            raise InputError(path, f"would overwrite the input {src}; choose another output name", field=option)
    _writable(folder, path, option)
    return path


def output_folder(path: str | Path, option: str = "-o") -> Path:
    """An output folder: an existing folder, or one that can be created, with room."""
    path = Path(path)
    with _os_errors(path, option):
        if path.exists() and not path.is_dir():
            raise InputError(path, "exists and is not a folder", field=option)
        _writable(path if path.is_dir() else _existing_ancestor(path, option), path, option)
    return path


def input_path(path: str | Path, option: str | None = None, *, folder_ok: bool = False, missing: str = "") -> Path:
    """An input that exists (a file; or a folder when ``folder_ok``); ``missing`` says what to do if not."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, missing or "no such file" + (" or folder" if folder_ok else ""), field=option)
    if not folder_ok and not path.is_file():
        raise InputError(path, "is a folder, not a file", field=option)
    return path


def choice(value: str, choices: Sequence[str], option: str, what: str = "value") -> str:
    if value not in choices:
        raise InputError(option, f"unknown {what} {value!r} (choose {', '.join(choices)})")
    return value


def model(name: str) -> str:
    """``--model``: a known name or an existing checkpoint path (its contents are checked when loaded)."""
    if name not in NAMED_MODELS + NETWORKS and not Path(name).exists():
        raise InputError(name, f"no such file or model name (names: {', '.join(NAMED_MODELS + NETWORKS)})",
                         field="--model")
    return name


def engine(name: str) -> str:
    return choice(name, ENGINES, "--engine", "engine")


def positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise InputError(option, f"must be positive, got {value:g}")


def bench_sinks(value: str) -> str | tuple[str, ...]:
    """``bench --sinks``: ``auto``, ``none``, or a comma-separated list of :data:`BENCH_SINKS`."""
    value = value.strip()
    if value in ("auto", "none"):
        return value
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise InputError("--sinks", f"expected auto, none or a list of {', '.join(BENCH_SINKS)}, got {value!r}")
    for n in names:
        choice(n, BENCH_SINKS, "--sinks", "sink")
    return tuple(dict.fromkeys(names))


#: x264 / x265 speed presets, fastest first; ``--preset`` picks one.
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
#: The default: FFmpeg's own (medium) spent 2.0-2.2x veryfast's CPU per 720p frame (48-53 vs 24 ms,
#: the bench clip upscaled, crf 18) for a file 5 % smaller; a real-time tool keeps the encode cheap.
DEFAULT_PRESET = "veryfast"
#: What a model that remembers a person's open mouth has seen in the self-reenactment test (rtanim.measure.reenact).
REFERENCE_POLICIES = ("before", "clip", "none")
#: What an AU the user does not name does (``--unnamed``, a timeline's ``"unnamed"``): follow the face, or 0.
UNNAMED_RULES = ("follow", "zero")


def check_preset(preset: str | None, where: str | Path = "--preset") -> None:
    """An unknown x264 / x265 preset is one clear line before any file is opened."""
    if preset is not None and preset not in X26X_PRESETS:
        raise InputError(where, f"unknown x264 preset {preset!r}; use one of {', '.join(X26X_PRESETS)}", field="--preset")


# ------------------------------------------------------------------ run options (video, webcam, bench)


def check_faces(faces: str) -> str:
    if faces not in FACE_CHOICES:
        raise InputError("--faces", f"expected one of {', '.join(FACE_CHOICES)}, got {faces!r}")
    return faces


def run_options(faces: str, max_faces: int | None, track_every: int) -> None:
    """``--faces``, ``--max-faces`` (None: the command has none) and ``--track-every``, in that order."""
    check_faces(faces)
    if max_faces is not None and max_faces < 1:
        raise InputError("--max-faces", "must be >= 1")
    if track_every < 1:
        raise InputError("--track-every", "must be >= 1")


def parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    w, sep, h = value.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 16 or int(h) < 16:
        raise InputError("--size", f"expected WIDTHxHEIGHT like 1280x720, got {value!r}")
    return int(w), int(h)


def camera_unavailable(spec: str | int) -> InputError:
    """The one line for a camera that cannot be opened (here, before the run, or by the camera source)."""
    hint = ("list devices with `v4l2-ctl --list-devices` or `ls /dev/video*`" if sys.platform.startswith("linux")
            else "check the camera index and that no other program is using it")
    return InputError(f"camera {spec}", f"cannot open it: no such device, or busy ({hint})")


def camera(spec: str) -> None:
    """On Linux, a camera index or /dev/videoN that names no device is refused before anything loads
    (V4L2 numbers its devices /dev/videoN); a file or URL is checked when it is opened."""
    s = str(spec).strip()
    if not sys.platform.startswith("linux"):
        return
    if s.isdigit() and not Path(f"/dev/video{int(s)}").exists():
        raise camera_unavailable(int(s))
    if s.startswith("/dev/video") and not Path(s).exists():
        raise camera_unavailable(s)
