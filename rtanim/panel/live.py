"""The panel's view of a live run: the newest output frame, its stats, and when a change reached the output.

The pipeline thread only stores references here (the newest image, the first face's target);
all encoding happens on the web server's threads when a page asks, once per new frame however
many pages ask. So a slow, flooding or vanished client costs the video nothing.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, replace
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import AU_CODES, EXTENDED_CODES, PRESETS, base_code
from rtanim.panel.state import Change, PanelTarget

if TYPE_CHECKING:
    from rtanim.io.source_base import Frame
    from rtanim.pipeline.graph import Controls, Stats
    from rtanim.pipeline.jobs import FrameJob

DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
#: Widest preview the panel serves: it is a thumbnail for the person in the call, not the output.
MAX_PREVIEW_WIDTH = 640


@dataclass(frozen=True)
class PanelOptions:
    """Where the panel listens; ``token`` is set (and required of every request) when ``--panel-host`` was given."""

    host: str = LOOPBACK
    port: int = DEFAULT_PORT
    token: str | None = None

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port if port is None else port}/{query}"


def panel_options(panel: bool, host: str | None, port: int | None) -> PanelOptions | None:
    """The ``--panel*`` options, checked before anything heavy loads (one line, exit 2 when wrong)."""
    if not panel:
        for value, option in ((host, "--panel-host"), (port, "--panel-port")):
            if value is not None:
                raise InputError(option, "needs --panel")
        return None
    if port is not None and not 0 <= port <= 65535:
        raise InputError("--panel-port", f"expected a port in [0, 65535], got {port}")
    missing = [m for m in ("starlette", "uvicorn") if find_spec(m) is None]
    if missing:
        raise InputError("--panel", f"needs {' and '.join(missing)}: pip install -e \".[panel]\"")
    token = None
    if host is not None:
        if not host.strip():
            raise InputError("--panel-host", "expected an address to listen on, e.g. 0.0.0.0")
        import secrets

        token = secrets.token_urlsafe(18)
    return PanelOptions(host=LOOPBACK if host is None else host.strip(),
                        port=DEFAULT_PORT if port is None else port, token=token)


def bind(options: PanelOptions) -> tuple[socket.socket, PanelOptions]:
    """Listen now, before the camera and the model open, so a busy port fails fast; port 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(options.host, options.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError("--panel-host", f"unknown address {options.host!r} ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(64)
    except OSError as e:
        sock.close()
        option = "--panel-port" if e.errno in (98, 48) else "--panel-host"  # EADDRINUSE on Linux / macOS
        raise InputError(option, f"cannot listen on {options.host}:{options.port} ({e.strerror}); "
                                 "choose another --panel-port") from None
    sock.setblocking(False)
    return sock, replace(options, port=sock.getsockname()[1])


class PanelRun:
    """Shared between the pipeline (``write``, ``on_frame``) and the web server (everything else).

    As a sink (one of the run's :class:`~rtanim.io.sink_multi.MultiSink`) it only keeps the newest output, so it
    is written on the pipeline's calling thread (``main_thread``) and has nothing to finalise. Its frame
    numbers (``posted_frame``, ``reached_frame``) count the frames handed to the outputs, in order, as
    each leaves compose (the other sinks finish writing it a little later, on their threads).
    """

    kind = "panel"
    main_thread = True

    def __init__(self, target: PanelTarget, controls: Controls, *, model: str, source: str) -> None:
        self.target, self.controls, self.model, self.source = target, controls, model, source
        self.stats: Stats | None = None
        self.ended = threading.Event()
        self._lock = threading.Lock()
        self._image: np.ndarray | None = None
        self._frame_no = 0
        self._faces = 0
        self._output: dict[str, float] = {}
        self._change: Change | None = None
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, int, bytes] | None = None  # frame number, width, bytes

    # ------------------------------------------------------------ pipeline thread

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """A sink: keeps a reference to the newest output (sinks never change an image in place)."""
        with self._lock:
            self._image, self._frame_no = image, self._frame_no + 1

    def close(self) -> None:
        """Nothing to finalise (the server stops with the run's stack)."""

    def on_frame(self, stats: Stats, job: FrameJob) -> None:
        """After each delivered frame: faces, the applied target, and whether the latest change shows yet."""
        if self.controls.paused:  # the preview's p key: with a panel it pauses the panel's timeline, and the
            self.controls.paused = False  # run's clock (which eases slider moves too) keeps going
            self.target.toggle_pause()
        target = job.faces[0].target if job.faces else None
        with self._lock:
            self._faces = job.found
            if target is not None:
                self._output = target
            c = self._change
            if c is not None and c.reached_frame is None and target is not None and all(
                    abs(target[EXTENDED_CODES[i]] - v) < 1e-3 for i, v in zip(c.codes, c.values, strict=True)):
                self._change = replace(c, reached_frame=self._frame_no, reached_at=time.perf_counter())

    # ------------------------------------------------------------ server threads

    def changed(self, final: dict[int, float]) -> dict[str, Any]:
        """Note an accepted update whose end values are known (``final``: extended index -> value)."""
        with self._lock:
            frames = self._frame_no
            passthrough = set(self.target.passthrough)
            codes = tuple(i for i in final if not {EXTENDED_CODES[i], base_code(EXTENDED_CODES[i])} & passthrough)
            self._change = Change(self.target.version, frames, time.perf_counter(), codes,
                                  tuple(final[i] for i in codes))
        return {"ok": True, "version": self.target.version, "frame": frames}

    def status(self) -> dict[str, Any]:
        """``GET /status``: what the status line shows, plus the panel's state."""
        stats = self.stats
        recent = stats.recent() if stats is not None else {}
        with self._lock:
            output = {c: round(float(self._output[c]), 4) for c in (*AU_CODES, *EXTENDED_CODES)
                      if c in self._output and np.isfinite(self._output[c])}
            faces, change = self._faces, self._change
        last = None
        if change is not None:
            last = {"version": change.version, "posted_frame": change.posted_frame,
                    "reached_frame": change.reached_frame,
                    "frames": None if change.reached_frame is None else change.reached_frame - change.posted_frame,
                    "ms": None if change.reached_at is None else round((change.reached_at - change.posted_at) * 1e3, 1)}

        def num(v: Any) -> float | None:
            return None if v is None else round(float(v), 1)

        return {
            "running": not self.ended.is_set(),
            "fps": num(recent.get("fps")),
            "latency_ms": num(recent.get("latency_p50")),
            "latency_p95_ms": num(recent.get("latency_p95")),
            "frames": stats.frames if stats is not None else 0,
            "dropped": stats.dropped if stats is not None else 0,
            "faces": faces,
            "model": self.model,
            "source": self.source,
            "effect": bool(self.controls.effect_on),
            "output": output,
            "last_change": last,
            "panel": self.target.snapshot(),
        }

    def jpeg(self, width: int = 360) -> bytes | None:
        """The newest output as a JPEG at most ``width`` wide; encoded once per frame and width."""
        import cv2

        width = max(64, min(MAX_PREVIEW_WIDTH, int(width)))
        with self._encode_lock:
            with self._lock:
                image, number = self._image, self._frame_no
            if image is None:
                return None
            if self._jpeg is not None and self._jpeg[:2] == (number, width):
                return self._jpeg[2]
            h, w = image.shape[:2]
            if w > width:
                image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
            data = buf.tobytes() if ok else b""
            self._jpeg = (number, width, data)
            return data

    def preset_key(self, index: int) -> None:
        """The preview's keys 1-9 while the panel runs: set that preset through the panel, so the page shows it."""
        names = list(PRESETS)[:9]
        if 0 <= index < len(names):
            final = self.target.set_preset({"preset": names[index]}, f"key {index + 1}")
            self.changed({} if self.target.offset_mode else final)

    @property
    def frame_number(self) -> int:
        with self._lock:
            return self._frame_no
