"""Small HTTP helpers for the panel tests (standard library only), and a live run of ``rtanim webcam --panel``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from rich.console import Console


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def call(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = 30.0) -> Reply:
    """One request; HTTP errors are replies too. ``body``: bytes as they are, anything else as JSON."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Reply(r.status, r.read(), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read(), dict(e.headers))


@dataclass
class LiveRun:
    """``run_webcam(..., panel=True)`` on a thread; ``base`` is the panel's URL once it listens.

    The clip plays in real time and loops, as a camera would go on, until :meth:`stop`: however slow
    the machine, the test decides when the run ends.
    """

    camera: Path
    out: Path | None = None
    aus: str = "neutral"
    base: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    _log: io.StringIO = field(default_factory=io.StringIO)
    _sources: list[Any] = field(default_factory=list)
    _patch: Any = None

    def start(self, timeout: float = 240.0) -> LiveRun:
        from rtanim.commands.video import run_webcam
        from rtanim.io import source_open as sources
        from rtanim.io.source_live import PacedFileSource

        def looping(spec: str, **kw: Any) -> Any:
            src = PacedFileSource(spec, loop=True)
            self._sources.append(src)
            return src

        self._patch = mock.patch.object(sources, "open_source", looping)
        self._patch.start()

        def go() -> None:
            try:
                self.result["stats"] = run_webcam(
                    str(self.camera), aus=self.aus, model="warp", engine="auto", preview=False,
                    out=[str(self.out)] if self.out else [], panel=True, panel_port=0,
                    console=Console(file=io.StringIO()), err_console=Console(file=self._log, width=200))
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.result["error"] = e

        self.thread = threading.Thread(target=go, name="test-webcam", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.thread.is_alive():
            m = re.search(r"control panel: (http://\S+?)/(\s|$)", self._log.getvalue())
            if m:
                self.base = m.group(1)
                return self
            time.sleep(0.1)
        raise AssertionError(f"the panel did not start: {self.result.get('error')!r}\n{self._log.getvalue()}")

    def status(self) -> dict[str, Any]:
        return call(self.base + "/status").json()

    def wait(self, predicate, timeout: float = 120.0, what: str = "") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status()
            if predicate(s):
                return s
            if not s["running"]:
                break
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {s}")

    def __enter__(self) -> LiveRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():  # a failed test: end the run anyway, keeping the test's own error
            with contextlib.suppress(BaseException):
                self.stop()

    def stop(self, timeout: float = 240.0) -> Any:
        """End the run (its source ends, as an unplugged camera's would) and return its stats."""
        for src in self._sources:
            src.close()
        return self.join(timeout)

    def join(self, timeout: float = 240.0) -> Any:
        self.thread.join(timeout)
        if self._patch is not None:
            self._patch.stop()
            self._patch = None
        assert not self.thread.is_alive(), "the run did not end"
        if "error" in self.result:
            raise self.result["error"]
        return self.result["stats"]


def measured_brows(path) -> list[float]:
    """AU01 + AU02 / 2 of the face in every frame of a video, unsmoothed (so the onset is exact)."""
    from rtanim.face.tracking import FaceTracker
    from rtanim.io.source_file import VideoFileSource

    out = []
    with VideoFileSource(path) as src, FaceTracker(1, mode="video", au_smoothing=0.0, fps=src.fps or 25) as tr:
        for f in src:
            faces = tr.track(f.image, f.pts)
            out.append((faces[0].aus["AU01"] + faces[0].aus["AU02"]) / 2 if faces else float("nan"))
    return out


#: A client in its own process (as a real one is) that POSTs slider values as fast as it can from 4 threads.
_FLOOD = r"""
import json, sys, threading, time, urllib.request
base, seconds = sys.argv[1], float(sys.argv[2])
count = [0]
stop = time.monotonic() + seconds
def loop():
    i = 0
    while time.monotonic() < stop:
        body = json.dumps({"AU12": (i % 10) / 10}).encode()
        req = urllib.request.Request(base + "/aus", data=body, headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
        i += 1
        count[0] += 1
print("go", flush=True)
threads = [threading.Thread(target=loop) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
print(count[0], flush=True)
"""


def flood(base: str, seconds: float) -> subprocess.Popen:
    """Start the flooding client; it prints ``go`` when it starts and the number of requests at the end."""
    proc = subprocess.Popen([sys.executable, "-c", _FLOOD, base, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    return proc
