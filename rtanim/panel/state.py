"""What the control panel changes while a live run goes on, and the target the pipeline reads from it.

The pipeline asks ``target.at(t, live_aus)`` once per face and frame, exactly as it asks a
:class:`~rtanim.expression.timeline.Timeline`, so the panel needs no hook in the stage graph. Every update
(sliders, presets, a timeline) only replaces the *latest* wish under a lock: a flood of requests
coalesces into one value and never queues work for the video. Changes glide over the easing time,
measured on the frames' own clock (``t``), so a file played as a camera eases the same on any machine.

Validation goes through :func:`rtanim.expression.timeline.timeline_from_dict`, the parser of ``--aus`` files
and timelines, so the panel's errors are the CLI's one-line messages.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtanim.errors import InputError
from rtanim.expression.aus import EXTENDED_CODES, PRESETS, expand_code
from rtanim.expression.timeline import LOOPS, Timeline, apply_live, ease, passthrough_mask, timeline_from_dict

_INDEX = {c: i for i, c in enumerate(EXTENDED_CODES)}
#: Longest easing the panel accepts, in seconds: longer reads as "not responding".
MAX_EASING_S = 10.0
#: Samples a recording keeps (about an hour at 30 fps); older ones are dropped from the front.
MAX_RECORD_SAMPLES = 108_000
PLAYBACK_ACTIONS = ("play", "pause", "stop", "restart")


def parse_json(body: bytes, source: str) -> Any:
    """Request bytes -> JSON, with the one-line error the CLI gives for a malformed file."""
    try:
        return json.loads(body.decode("utf-8") if body else "")
    except UnicodeDecodeError:
        raise InputError(source, "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(source, f"malformed JSON: {exc.msg}", field=f"line {exc.lineno} column {exc.colno}") from None


def _object(doc: Any, source: str, example: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InputError(source, f"expected a JSON object, e.g. {example}")
    return doc


def collapse_values(values: np.ndarray, digits: int = 4, zeros: bool = False) -> dict[str, float]:
    """Extended values -> ``{code: value}`` with one bilateral code where both sides agree.

    AUs that follow the face (NaN) are left out, and so are zeros unless ``zeros`` (a timeline
    must name a 0, or the AU would follow the face)."""
    out: dict[str, float] = {}

    def keep(v: float) -> bool:
        return not np.isnan(v) and (zeros or v != 0.0)

    i = 0
    while i < len(EXTENDED_CODES):
        code = EXTENDED_CODES[i]
        if code.endswith("L") and i + 1 < len(EXTENDED_CODES) and EXTENDED_CODES[i + 1] == code[:-1] + "R":
            left, right = round(float(values[i]), digits), round(float(values[i + 1]), digits)
            if left == right:
                if keep(left):
                    out[code[:-1]] = left
            else:
                out.update({k: v for k, v in ((code, left), (code[:-1] + "R", right)) if keep(v)})
            i += 2
            continue
        if keep(v := round(float(values[i]), digits)):
            out[code] = v
        i += 1
    return out


@dataclass(frozen=True)
class Change:
    """The latest accepted update, to measure when the output reached it (frames delivered then and now)."""

    version: int
    posted_frame: int
    posted_at: float  # time.perf_counter()
    codes: tuple[int, ...]  # extended indices whose final value is known (not passthrough)
    values: tuple[float, ...]
    reached_frame: int | None = None
    reached_at: float | None = None


@dataclass
class _Recording:
    start: float | None = None
    times: list[float] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


class PanelTarget:
    """Thread-safe control state; ``at(t, live)`` makes it a drop-in for the run's timeline.

    Two modes: ``manual`` (slider values, presets) and ``timeline`` (a loaded timeline playing on
    its own clock). Every switch or change glides from the last output over ``easing`` seconds.
    """

    def __init__(self, initial: Timeline, easing: float = 0.25) -> None:
        self._lock = threading.Lock()
        self.easing = float(easing)
        self.passthrough: tuple[str, ...] = tuple(initial.passthrough)
        self._pass = passthrough_mask(self.passthrough)
        n = len(EXTENDED_CODES)
        self._manual = np.zeros(n, np.float32)
        self._last = np.zeros(n, np.float32)  # the values (before the live face) of the last query
        self._from = np.zeros(n, np.float32)
        self._ramp_start: float | None = None  # set by the first query after a change
        self._t = 0.0
        self.timeline: Timeline | None = None
        self.playing = False
        self._tl_origin: float | None = None  # pipeline time of the timeline's start
        self._tl_pos = 0.0  # position while paused
        self.version = 0
        self._record: _Recording | None = None
        self.recorded: dict[str, Any] | None = None
        self._mode_offset = initial.mode == "offset"
        if initial.is_static:
            self._manual = initial.keyframes[0].values.copy()
            self._from, self._last = self._manual.copy(), self._manual.copy()
        else:
            self._load(initial)

    # ------------------------------------------------------------ the pipeline's side

    def at(self, t: float, live: Mapping[str, float] | None = None) -> dict[str, float]:
        """Target AUs for one face at pipeline time ``t`` (the same contract as ``Timeline.at``)."""
        with self._lock:
            if t != self._t or self._ramp_start is None:
                self._t = t
                self._last = self._values(t)
                if self._record is not None:
                    self._sample(t)
            values, mode, mask = self._last, "offset" if self._mode_offset else "absolute", self._pass
        return apply_live(values, live, mode, mask)

    def _values(self, t: float) -> np.ndarray:
        """Where the glide is at ``t``; an AU that follows the face (NaN) at either end does not glide."""
        goal = self._manual if self.timeline is None else self.timeline.values_at(self._position(t))
        if self._ramp_start is None:
            self._ramp_start = t
        if self.easing <= 0:
            return goal.copy()
        u = ease((t - self._ramp_start) / self.easing, "ease-in-out")
        glide = self._from + (goal - self._from) * u
        return np.where(np.isnan(self._from), goal, glide).astype(np.float32)

    def _position(self, t: float) -> float:
        assert self.timeline is not None
        if not self.playing:
            return self._tl_pos
        if self._tl_origin is None:
            self._tl_origin = t - (self._tl_pos - self.timeline.start)
        self._tl_pos = self.timeline.start + (t - self._tl_origin)
        return self._tl_pos

    def _changed(self) -> None:
        """Start a glide from what is showing now (caller holds the lock)."""
        self._from = self._last.copy()
        self._ramp_start = None
        self.version += 1

    @property
    def offset_mode(self) -> bool:
        """Values add to the live face's (an ``offset`` timeline or AU file): the output has no fixed end value."""
        return self._mode_offset

    # ------------------------------------------------------------ the panel's side

    def set_aus(self, doc: Any, source: str = "POST /aus") -> dict[int, float]:
        """Change the named AUs (others keep their value); validated as ``--aus`` values. Leaves timeline mode.

        ``null`` hands an AU back to the face: it follows the live value again.
        Returns the extended indices it set and their values, to watch the output reach them.
        """
        body = _object(doc, source, '{"AU12": 0.8}')
        given = {code: value for code, value in body.items() if value is not None}
        # the --aus checks: codes, and [0, 1] ([-1, 1] when the values add to the live face's)
        timeline_from_dict({"aus": given, "mode": "offset" if self._mode_offset else "absolute"}, source)
        timeline_from_dict({"aus": {}, "passthrough": [c for c in body if body[c] is None]}, source)  # the codes
        with self._lock:
            if self.timeline is not None:
                self._manual = self._last.copy()
                self.timeline, self.playing = None, False
            final = {_INDEX[ext]: float(value) for code, value in given.items() for ext in expand_code(code)}
            for i, value in final.items():
                self._manual[i] = value
            for code in body.keys() - given.keys():
                for ext in expand_code(code):
                    self._manual[_INDEX[ext]] = np.nan
            self._changed()
            return final

    def set_preset(self, doc: Any, source: str = "POST /preset") -> dict[int, float]:
        """A named preset at a strength replaces every slider (``{"preset": "smile", "strength": 0.8}``)."""
        body = _object(doc, source, '{"preset": "smile", "strength": 0.8}')
        if "preset" not in body:
            raise InputError(source, f"expected 'preset', one of {', '.join(PRESETS)}", field="preset")
        extra = set(body) - {"preset", "strength"}
        if extra:
            raise InputError(source, "unknown key; expected 'preset' and 'strength'", field=sorted(extra)[0])
        values = timeline_from_dict(body, source).keyframes[0].values
        with self._lock:
            self.timeline, self.playing = None, False
            self._manual = values.copy()
            self._changed()
        return {i: float(v) for i, v in enumerate(values)}

    def load_timeline(self, doc: Any, source: str = "POST /timeline") -> Timeline:
        """A timeline JSON (the ``--timeline`` contract): it plays from its start, gliding in."""
        tl = timeline_from_dict(doc, source)
        with self._lock:
            self._load(tl)
        return tl

    def _load(self, tl: Timeline) -> None:
        if tl.passthrough:
            self.passthrough, self._pass = tuple(tl.passthrough), passthrough_mask(tl.passthrough)
        self._mode_offset = tl.mode == "offset"
        if tl.is_static:
            self.timeline, self.playing, self._manual = None, False, tl.keyframes[0].values.copy()
        else:
            self.timeline, self.playing = tl, True
            self._tl_origin, self._tl_pos = None, tl.start
        self._changed()

    def playback(self, doc: Any, source: str = "POST /playback") -> None:
        """``{"action": "play"|"pause"|"stop"|"restart", "loop": "none"|"loop"|"pingpong"}``, both optional."""
        body = _object(doc, source, '{"action": "pause"}')
        extra = set(body) - {"action", "loop"}
        if extra:
            raise InputError(source, "unknown key; expected 'action' and 'loop'", field=sorted(extra)[0])
        action, loop = body.get("action"), body.get("loop")
        if action is not None and action not in PLAYBACK_ACTIONS:
            raise InputError(source, f"unknown action {action!r}; expected one of {', '.join(PLAYBACK_ACTIONS)}",
                             field="action")
        if loop is not None and loop not in LOOPS:
            raise InputError(source, f"unknown loop {loop!r}; expected one of {', '.join(LOOPS)}", field="loop")
        with self._lock:
            if self.timeline is None:
                if action in ("play", "restart"):
                    raise InputError(source, "no timeline loaded; POST one to /timeline first", field="action")
                return
            if loop is not None:
                self.timeline = dataclasses.replace(self.timeline, loop=loop)
            if action == "play" and not self.playing:
                self.playing, self._tl_origin = True, None
            elif action == "pause":
                self.playing = False
            elif action == "restart":
                self.playing, self._tl_origin, self._tl_pos = True, None, self.timeline.start
                self._changed()
            elif action == "stop":
                self._manual = self._last.copy()
                self.timeline, self.playing = None, False
                self._changed()

    def toggle_pause(self) -> None:
        """Pause or resume a loaded timeline (the preview window's p key); nothing to do for sliders."""
        with self._lock:
            if self.timeline is not None:
                self.playing, self._tl_origin = not self.playing, None

    def settings(self, doc: Any, source: str = "POST /settings") -> bool | None:
        """``{"easing": seconds, "passthrough": [codes], "effect": bool}``, each optional.

        Returns ``effect`` for the caller to apply: the effect switch lives in the run's controls,
        shared with the preview's space key.
        """
        body = _object(doc, source, '{"easing": 0.3, "passthrough": ["AU25", "AU26"], "effect": true}')
        extra = set(body) - {"easing", "passthrough", "effect"}
        if extra:
            raise InputError(source, "unknown key; expected 'easing', 'passthrough' or 'effect'", field=sorted(extra)[0])
        easing = body.get("easing")
        if easing is not None and (isinstance(easing, bool) or not isinstance(easing, int | float)
                                   or not 0 <= easing <= MAX_EASING_S):
            raise InputError(source, f"expected seconds in [0, {MAX_EASING_S:g}], got {json.dumps(easing)}",
                             field="easing")
        codes: tuple[str, ...] | None = None
        if "passthrough" in body:
            codes = timeline_from_dict({"aus": {}, "passthrough": body["passthrough"]}, source).passthrough
        effect = body.get("effect")
        if effect is not None and not isinstance(effect, bool):
            raise InputError(source, f"expected true or false, got {json.dumps(effect)}", field="effect")
        with self._lock:
            if easing is not None:
                self.easing = float(easing)
            if codes is not None:
                self.passthrough, self._pass = codes, passthrough_mask(codes)
        return effect

    # ------------------------------------------------------------ recording

    def record(self, doc: Any, source: str = "POST /record") -> dict[str, Any] | None:
        """``{"action": "start"|"stop"}``; stop returns the take as a timeline JSON (``rtanim video --timeline``)."""
        body = _object(doc, source, '{"action": "start"}')
        action = body.get("action")
        if action not in ("start", "stop") or set(body) - {"action"}:
            raise InputError(source, "expected {\"action\": \"start\"} or {\"action\": \"stop\"}", field="action")
        with self._lock:
            if action == "start":
                self._record = _Recording()
                return None
            rec, self._record = self._record, None
            passthrough = self.passthrough
        if rec is None:
            raise InputError(source, "not recording; start first", field="action")
        self.recorded = recording_to_timeline(rec.times, rec.values, passthrough)
        return self.recorded

    def _sample(self, t: float) -> None:
        rec = self._record
        assert rec is not None
        if rec.start is None:
            rec.start = t
        rec.times.append(t - rec.start)
        rec.values.append(self._last.copy())
        if len(rec.times) > MAX_RECORD_SAMPLES:
            del rec.times[0], rec.values[0]

    # ------------------------------------------------------------ read-outs

    def snapshot(self) -> dict[str, Any]:
        """The state the page shows: slider targets, what is showing now, playback, easing, passthrough."""
        with self._lock:
            tl = self.timeline
            return {
                "mode": "manual" if tl is None else "timeline",
                "target": collapse_values(self._manual) if tl is None else None,
                "values": {c: None if np.isnan(v) else round(float(v), 4)
                           for c, v in zip(EXTENDED_CODES, self._last, strict=True)},
                # AUs nobody set: they follow the live face, as passthrough ones do
                "following": [c for c, v in zip(EXTENDED_CODES, self._last, strict=True) if np.isnan(v)],
                "easing": self.easing,
                "passthrough": list(self.passthrough),
                "recording": self._record is not None,
                "has_recording": self.recorded is not None,
                "timeline": None if tl is None else {
                    "source": tl.source, "duration": round(tl.duration, 3), "loop": tl.loop,
                    "playing": self.playing, "position": round(self._tl_pos - tl.start, 3),
                },
                "version": self.version,
            }

    def current(self) -> dict[str, float]:
        """``GET /aus``: the slider values (what ``POST /aus`` takes), or a playing timeline's values now."""
        with self._lock:
            return collapse_values(self._manual if self.timeline is None else self._last)


def recording_to_timeline(times: Sequence[float], values: Sequence[np.ndarray], passthrough: Sequence[str],
                          tol: float = 0.005) -> dict[str, Any]:
    """Per-frame samples -> the fewest linear keyframes that stay within ``tol`` of them, as a timeline JSON.

    The result goes through the timeline parser before it is returned, so it is always a valid
    ``--timeline`` file.
    """
    if not times:
        doc: dict[str, Any] = {"aus": {}, "passthrough": list(passthrough)}
    else:
        t = np.asarray(times, np.float64)
        v = np.stack(values).astype(np.float64)
        keep = _simplify(t, np.nan_to_num(v, nan=-1.0), tol)  # an AU that starts or stops following is a change
        keyframes = [{"t": round(float(t[i]), 3), "aus": collapse_values(v[i].astype(np.float32), zeros=True)}
                     for i in keep]
        # rounding may merge two times; the parser wants strictly increasing ones
        dedup: list[dict[str, Any]] = []
        for kf in keyframes:
            if dedup and kf["t"] <= dedup[-1]["t"]:
                dedup[-1] = kf | {"t": dedup[-1]["t"]}
            else:
                dedup.append(kf)
        if len(dedup) > 1:
            for kf in dedup[1:]:
                kf["ease"] = "linear"
        doc = {"_comment": "recorded with the rtanim control panel", "loop": "none", "mode": "absolute",
               "passthrough": list(passthrough), "keyframes": dedup}
    timeline_from_dict(doc, "recording")
    return doc


def _simplify(t: np.ndarray, v: np.ndarray, tol: float, window: int = 300) -> list[int]:
    """Indices of samples to keep so that linear interpolation between them stays within ``tol`` of every sample."""
    n = len(t)
    if n <= 2:
        return list(range(n))
    keep = [0]
    anchor = 0
    j = 2
    while j < n:
        inner = np.arange(anchor + 1, j)
        u = ((t[inner] - t[anchor]) / max(t[j] - t[anchor], 1e-9))[:, None]
        interp = v[anchor] + (v[j] - v[anchor]) * u
        if j - anchor > window or np.abs(interp - v[inner]).max() > tol:
            anchor = j - 1
            keep.append(anchor)
        j += 1
    keep.append(n - 1)
    return keep
