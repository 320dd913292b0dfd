"""The panel's HTTP API (Starlette) and the uvicorn thread that serves it; the page uses nothing else.

Endpoints (JSON in and out; errors are ``{"error": "one line"}`` with status 400, the line the
CLI would print for the same mistake):

- ``GET /status``: fps, latency, drops, faces, model, the applied AUs and the panel's state
- ``GET /vocabulary``: AUs with names, regions and sides, presets, easings, loop modes
- ``GET /aus`` / ``POST /aus``: AU -> value (``{"AU12": 0.8}``); POST changes only the named AUs
- ``POST /preset``: ``{"preset": "smile", "strength": 0.8}``
- ``POST /timeline``: a timeline JSON (the ``--timeline`` contract); it plays at once
- ``POST /playback``: ``{"action": "play|pause|stop|restart", "loop": "none|loop|pingpong"}``
- ``POST /settings``: ``{"easing": 0.3, "passthrough": ["AU25"], "effect": true}``
- ``POST /record``: ``{"action": "start|stop"}``; ``GET /record.json``: the last take
- ``GET /preview.jpg?w=360``, ``GET /preview.mjpg?w=360&fps=10``: the newest output
- ``GET /events``: server-sent events, the ``/status`` object five times a second

Safety: by default the server listens on 127.0.0.1 and accepts only ``Host: 127.0.0.1|localhost``
(so a web page cannot reach it through DNS rebinding); POSTs must be ``application/json`` from
the same origin, which a cross-site form cannot send. With ``--panel-host`` every request needs
the token, as ``?token=``, an ``X-Rtanim-Token`` header or the cookie the page sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import threading
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from rtanim.errors import InputError
from rtanim.expression.aus import AUS, PRESETS, SIDED
from rtanim.expression.timeline import EASINGS, LOOPS
from rtanim.panel.live import PanelOptions, PanelRun
from rtanim.panel.state import PanelTarget, parse_json

if TYPE_CHECKING:
    from rtanim.expression.timeline import Timeline
    from rtanim.pipeline.graph import Controls

STATIC = Path(str(resources.files("rtanim") / "panel" / "static"))
COOKIE = "rtanim_panel"
EVENTS_PER_S = 5.0
REGIONS = ("brows", "eyes", "cheeks", "nose", "mouth", "jaw")


def _error(status: int, line: str) -> JSONResponse:
    return JSONResponse({"error": line}, status_code=status)


class Guard:
    """ASGI middleware: host, token, origin and content-type checks before any route runs."""

    def __init__(self, app: ASGIApp, options: PanelOptions) -> None:
        self.app, self.options = app, options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        problem = self.check(request)
        if problem is not None:
            await _error(*problem)(scope, receive, send)
            return
        if self.options.token and request.query_params.get("token") == self.options.token and scope["path"] == "/":
            async def send_cookie(message: dict) -> None:  # the page's images and event stream carry it from now on
                if message["type"] == "http.response.start":
                    cookie = f"{COOKIE}={self.options.token}; Path=/; HttpOnly; SameSite=Strict"
                    message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
                await send(message)

            await self.app(scope, receive, send_cookie)
            return
        await self.app(scope, receive, send)

    def check(self, request: Request) -> tuple[int, str] | None:
        host = request.headers.get("host", "")
        if self.options.token is None:
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in ("127.0.0.1", "localhost", "[::1]"):
                return 403, f"{host or 'no Host'}: this panel answers only http://127.0.0.1 (see --panel-host)"
        else:
            given = (request.query_params.get("token") or request.headers.get("x-rtanim-token")
                     or request.cookies.get(COOKIE) or "")
            if not secrets.compare_digest(given.encode(), self.options.token.encode()):
                return 401, "token: missing or wrong; open the URL rtanim printed (it ends in ?token=...)"
        if request.method == "POST":
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != host:
                return 403, f"origin {origin}: cross-site requests are refused"
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return 415, "content-type: expected application/json"
        return None


def build_app(run: PanelRun, options: PanelOptions) -> ASGIApp:
    """The Starlette app of one live run."""

    def apply(fn: Any, source: str) -> Any:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(fn(parse_json(await request.body(), source)))
            except InputError as e:
                return _error(400, e.line())

        return endpoint

    target = run.target

    def post_aus(doc: Any) -> dict:
        final = target.set_aus(doc)
        return run.changed({} if target.offset_mode else final)

    def post_preset(doc: Any) -> dict:
        final = target.set_preset(doc)
        return run.changed({} if target.offset_mode else final)

    def post_timeline(doc: Any) -> dict:
        tl = target.load_timeline(doc)
        return {"ok": True, "duration": tl.duration, "keyframes": len(tl.keyframes), "static": tl.is_static}

    def post_settings(doc: Any) -> dict:
        effect = target.settings(doc)
        if effect is not None:
            run.controls.effect_on = effect
        return {"ok": True}

    def post_playback(doc: Any) -> dict:
        target.playback(doc)
        return {"ok": True}

    def post_record(doc: Any) -> dict:
        take = target.record(doc)
        return {"ok": True} if take is None else {"ok": True, "keyframes": len(take.get("keyframes", []))}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def status(request: Request) -> Response:
        return JSONResponse(run.status())

    async def vocabulary(request: Request) -> Response:
        return JSONResponse({
            "aus": [{"code": a.code, "name": a.name, "description": a.description, "region": a.region,
                     "sided": a.code in SIDED} for a in AUS],
            "regions": list(REGIONS),
            "presets": [{"name": p.name, "description": p.description, "aus": dict(p.aus)} for p in PRESETS.values()],
            "easings": list(EASINGS), "loops": list(LOOPS),
        })

    async def get_aus(request: Request) -> Response:
        return JSONResponse(target.current())

    async def record_json(request: Request) -> Response:
        if target.recorded is None:
            return _error(404, "GET /record.json: nothing recorded yet; POST {\"action\": \"start\"} to /record")
        return JSONResponse(target.recorded, headers={"Content-Disposition": 'attachment; filename="take.json"'})

    def width(request: Request) -> int:
        try:
            return int(request.query_params.get("w", "360"))
        except ValueError:
            return 360

    async def preview_jpg(request: Request) -> Response:
        data = await asyncio.to_thread(run.jpeg, width(request))
        if not data:
            return _error(503, "GET /preview.jpg: no frame yet")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def preview_mjpg(request: Request) -> Response:
        w = width(request)
        try:
            period = 1.0 / min(30.0, max(1.0, float(request.query_params.get("fps", "10"))))
        except ValueError:
            period = 0.1

        async def frames() -> Any:
            last = -1
            while not run.ended.is_set():
                started = time.perf_counter()
                if run.frame_number != last:
                    last = run.frame_number
                    try:
                        data = await asyncio.to_thread(run.jpeg, w)
                    except RuntimeError:  # the server is shutting down
                        return
                    if data:
                        yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                               + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                await asyncio.sleep(max(0.01, period - (time.perf_counter() - started)))

        return StreamingResponse(frames(), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> Response:
        async def stream() -> Any:
            yield "retry: 1000\n\n"
            while not run.ended.is_set():
                yield f"data: {json.dumps(run.status())}\n\n"
                await asyncio.sleep(1.0 / EVENTS_PER_S)
            yield f"data: {json.dumps(run.status())}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    routes = [
        Route("/", index),
        Route("/status", status),
        Route("/vocabulary", vocabulary),
        Route("/aus", get_aus, methods=["GET"]),
        Route("/aus", apply(post_aus, "POST /aus"), methods=["POST"]),
        Route("/preset", apply(post_preset, "POST /preset"), methods=["POST"]),
        Route("/timeline", apply(post_timeline, "POST /timeline"), methods=["POST"]),
        Route("/playback", apply(post_playback, "POST /playback"), methods=["POST"]),
        Route("/settings", apply(post_settings, "POST /settings"), methods=["POST"]),
        Route("/record", apply(post_record, "POST /record"), methods=["POST"]),
        Route("/record.json", record_json),
        Route("/preview.jpg", preview_jpg),
        Route("/preview.mjpg", preview_mjpg),
        Route("/events", events),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Guard(Starlette(routes=routes), options)


class PanelServer(contextlib.AbstractContextManager):
    """uvicorn on a daemon thread with its own event loop, on a socket bound beforehand (:func:`~rtanim.panel.live.bind`)."""

    def __init__(self, run: PanelRun, options: PanelOptions, sock: socket.socket) -> None:
        self.run, self.options, self.sock = run, options, sock
        config = uvicorn.Config(build_app(run, options), log_level="warning", access_log=False, lifespan="off",
                                ws="none", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="rtanim-panel", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> PanelServer:
        self.thread.start()
        deadline = time.perf_counter() + 10.0
        while not self.server.started and self.thread.is_alive() and time.perf_counter() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            self.close()
            from rtanim.errors import RunError

            raise RunError(f"the control panel did not start on {self.options.url()}")
        return self

    def close(self) -> None:
        self.run.ended.set()
        self.server.should_exit = True
        self.thread.join(timeout=5.0)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_panel(stack: contextlib.ExitStack, options: PanelOptions, sock: socket.socket, timeline: Timeline,
                controls: Controls, *, model: str, source: str, console: Any) -> PanelRun:
    """Serve the panel for a live run (stopped by ``stack``) and print its URL.

    Returns the panel's run: its ``target`` replaces the run's timeline; set its ``stats`` once the
    pipeline exists, and add it to the run's sinks to feed the panel's preview.
    """
    run = PanelRun(PanelTarget(timeline), controls, model=model, source=source)
    stack.enter_context(PanelServer(run, options, sock))
    console.print(f"control panel: {options.url()}", highlight=False, soft_wrap=True)
    if options.token:
        console.print("(from another machine, put this machine's address in the URL; keep the token private: "
                      "anyone with it can drive your face)", highlight=False)
    return run
