"""AU timelines: keyframes, easing, loops, passthrough; JSON, AU files and OpenFace CSV.

Every source of target AUs (a preset name, a static AU file, a timeline JSON, an
OpenFace CSV) becomes one :class:`Timeline`, so the pipeline asks one question:
``timeline.at(t, live_aus)`` -> the target AUs for a face at time ``t``.

The rule for what a user does not name: an AU a preset, an AU file or a keyframe names takes the
given value; an AU it does not name follows the face's own live value, frame by frame (stored as
NaN in the keyframe, filled with the live value before interpolation, so a keyframe that lets go
of an AU glides back to the face). ``neutral`` names every AU. ``unnamed: "zero"`` (the JSON field,
or ``--unnamed zero``) restores the old rule: unnamed AUs are 0. Passthrough AUs follow the face
even where named. In ``offset`` mode an unnamed AU adds nothing, which is the same thing.

Keyframe values are stored in the *extended* AU space (sided AUs as L and R),
so bilateral and one-sided keys interpolate consistently; queries return the
extended codes plus the bilateral ones (mean of the sides), which
:func:`rtanim.expression.aus.to_vector` turns into whatever vector a model expects.
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rtanim.checks import UNNAMED_RULES as UNNAMED
from rtanim.checks import choice
from rtanim.errors import InputError
from rtanim.expression.aus import (
    ALL_CODES,
    AU_CODES,
    EXTENDED_CODES,
    PRESETS,
    SIDED,
    SIDES,
    base_code,
    expand_code,
    preset_aus,
    resolve,
    unknown_code,
)
from rtanim.files import staged

EASINGS = ("linear", "ease-in-out", "ease-in", "ease-out", "hold")
LOOPS = ("none", "loop", "pingpong")
MODES = ("absolute", "offset")

#: Mouth AUs follow the live face by default on a webcam, so the user can still talk, even where named.
WEBCAM_PASSTHROUGH: tuple[str, ...] = ("AU25", "AU26")


@dataclass(frozen=True)
class Keyframe:
    t: float  # seconds
    values: np.ndarray  # float32 [len(EXTENDED_CODES)]
    ease: str = "linear"  # easing of the segment that ends here


@dataclass
class Timeline:
    """Target AUs over time. A static AU file is a timeline with one keyframe."""

    keyframes: list[Keyframe]  # values: NaN where the keyframe names no value (the rule above)
    loop: str = "none"
    mode: str = "absolute"
    passthrough: tuple[str, ...] = ()
    fps: float | None = None
    source: str = "<inline>"
    unnamed: str = "follow"  # UNNAMED: what an AU no keyframe names does
    _times: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._times = np.array([k.t for k in self.keyframes], dtype=np.float64)
        self._pass_mask = passthrough_mask(self.passthrough)

    # ----------------------------------------------------------------- queries

    @property
    def start(self) -> float:
        return float(self._times[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last keyframe (0 for a static file)."""
        return float(self._times[-1] - self._times[0])

    @property
    def is_static(self) -> bool:
        return len(self.keyframes) == 1

    def used_codes(self) -> list[str]:
        """Bilateral or sided codes that are non-zero somewhere, plus passthrough ones."""
        stacked = np.nan_to_num(np.stack([k.values for k in self.keyframes]))
        active = (np.abs(stacked) > 1e-6).any(axis=0) | self._pass_mask
        return _collapse([c for c, a in zip(EXTENDED_CODES, active, strict=True) if a])

    def _local_time(self, t: float) -> float:
        t0, d = self.start, self.duration
        if d <= 0 or self.loop == "none":
            return t
        phase = (t - t0) % (2 * d if self.loop == "pingpong" else d)
        if self.loop == "pingpong" and phase > d:
            phase = 2 * d - phase
        return t0 + phase

    def values_at(self, t: float, fill: np.ndarray | None = None) -> np.ndarray:
        """The keyframed values (extended space) at time ``t``, before passthrough/mode.

        Unnamed AUs take ``fill`` (the live face's values) before keyframes interpolate; without
        it they stay NaN. With ``unnamed == "zero"``, and in ``offset`` mode, they are 0.
        """
        t = self._local_time(t)
        times = self._times
        if t <= times[0]:
            return self._filled(self.keyframes[0].values, fill)
        if t >= times[-1]:
            return self._filled(self.keyframes[-1].values, fill)
        i = int(np.searchsorted(times, t, side="right"))  # times[i-1] <= t < times[i]
        a, b = self.keyframes[i - 1], self.keyframes[i]
        u = ease((t - a.t) / (b.t - a.t), b.ease)
        va, vb = self._filled(a.values, fill), self._filled(b.values, fill)
        if u <= 0.0:  # exactly at a keyframe (or held): its own values, even beside an unknown one
            return va
        return (va + (vb - va) * u).astype(np.float32)

    def _filled(self, values: np.ndarray, fill: np.ndarray | None) -> np.ndarray:
        unnamed = np.isnan(values)
        if not unnamed.any():
            return values.copy()
        if self.unnamed == "zero" or self.mode == "offset":
            return np.where(unnamed, np.float32(0.0), values).astype(np.float32)
        return values.copy() if fill is None else np.where(unnamed, fill, values).astype(np.float32)

    def at(self, t: float, live: Mapping[str, float] | None = None) -> dict[str, float]:
        """Target AUs at ``t`` seconds, resolved against the live face's AUs.

        Unnamed and passthrough AUs copy ``live``; in ``offset`` mode the keyframed values are
        added to ``live``. Without ``live`` (plotting, no face yet) they are NaN and offsets
        apply to zero.
        """
        return apply_live(self.values_at(t, live_vector(live)), live, self.mode, self._pass_mask)

    def named(self) -> np.ndarray:
        """Which extended codes some keyframe names (the rest follow the face, or are 0)."""
        return ~np.isnan(np.stack([k.values for k in self.keyframes])).all(axis=0)

    def at_frame(self, index: int, fps: float) -> dict[str, float]:
        """Frame-accurate query: the target for frame ``index`` of a ``fps`` stream (no live face)."""
        return self.at(index / fps)


def passthrough_mask(codes: Sequence[str]) -> np.ndarray:
    """Which entries of the extended vector follow the live face, for passthrough ``codes`` (sided or not)."""
    pass_ext = {c for p in codes for c in expand_code(p)}
    return np.array([c in pass_ext for c in EXTENDED_CODES])


def live_vector(live: Mapping[str, float] | None) -> np.ndarray | None:
    """The live face's AUs in extended space, or None without a face."""
    return None if live is None else np.array([resolve(live, c) for c in EXTENDED_CODES], dtype=np.float32)


def apply_live(
    values: np.ndarray, live: Mapping[str, float] | None, mode: str, pass_mask: np.ndarray
) -> dict[str, float]:
    """Keyframed ``values`` (extended space) resolved against the live face: what :meth:`Timeline.at` returns.

    Shared with the live control panel, whose targets are not keyframes but follow the same rules:
    a NaN value (an AU nobody named) follows the live face too.
    """
    live_v = live_vector(live)
    if live_v is None:
        live_v = np.full(len(EXTENDED_CODES), np.nan if mode == "absolute" else 0.0, dtype=np.float32)
    v = values
    if mode == "offset":
        v = np.nan_to_num(v) + np.nan_to_num(live_v)
    v = np.where(pass_mask | np.isnan(v), live_v if live is not None else np.nan, v)
    v = np.clip(v, 0.0, 1.0)
    return _with_bilateral(v)


def ease(u: float, kind: str) -> float:
    """Progress ``u`` in [0, 1] shaped by an easing of :data:`EASINGS`."""
    u = min(1.0, max(0.0, u))
    if kind == "linear":
        return u
    if kind == "ease-in-out":
        return u * u * (3.0 - 2.0 * u)
    if kind == "ease-in":
        return u * u
    if kind == "ease-out":
        return 1.0 - (1.0 - u) ** 2
    return 1.0 if u >= 1.0 else 0.0  # hold: keep the previous keyframe until this one


def _with_bilateral(v: np.ndarray) -> dict[str, float]:
    out = {c: float(x) for c, x in zip(EXTENDED_CODES, v, strict=True)}
    for code in SIDED:
        out[code] = (out[f"{code}L"] + out[f"{code}R"]) / 2.0
    return out


def _collapse(codes: Sequence[str]) -> list[str]:
    """Extended codes -> bilateral codes where both sides are present."""
    out: list[str] = []
    s = set(codes)
    for c in codes:
        b = base_code(c)
        if c != b and all(f"{b}{x}" in s for x in SIDES):
            if b not in out:
                out.append(b)
        else:
            out.append(c)
    return out


# ------------------------------------------------------------------ parsing


class _Ctx:
    """Builds error messages that name the file and the JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, reason: str) -> InputError:
        return InputError(self.source, reason, field=path or None)


def _number(ctx: _Ctx, path: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ctx.fail(path, f"expected a number, got {json.dumps(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ctx.fail(path, f"value {value} is out of range [{lo}, {hi}]")
    return float(value)


def _check_keys(ctx: _Ctx, path: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed and not key.startswith("_") and key != "comment":
            hint = difflib.get_close_matches(key, sorted(allowed), n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else f" (expected one of {', '.join(sorted(allowed))})"
            raise ctx.fail(f"{path}.{key}" if path else key, f"unknown key{more}")


def _au_code(ctx: _Ctx, path: str, code: Any) -> str:
    if not isinstance(code, str) or code not in ALL_CODES:
        raise ctx.fail(path, unknown_code(code))
    return code


def _preset(ctx: _Ctx, path: str, name: Any) -> str:
    if not isinstance(name, str) or name not in PRESETS:
        hint = difflib.get_close_matches(str(name), sorted(PRESETS), n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else f"; presets: {', '.join(PRESETS)}"
        raise ctx.fail(path, f"unknown preset {name!r}{more}")
    return name


def _values(ctx: _Ctx, path: str, obj: Mapping[str, Any], lo: float) -> np.ndarray:
    """A keyframe's (or AU file's) ``preset``/``strength``/``aus`` -> extended vector, NaN where unnamed."""
    spec: dict[str, float] = {}
    if "preset" in obj:
        name = _preset(ctx, f"{path}.preset" if path else "preset", obj["preset"])
        strength = _number(ctx, f"{path}.strength" if path else "strength", obj.get("strength", 1.0), 0.0, 1.0)
        spec.update(preset_aus(name, strength))
    elif "strength" in obj:
        raise ctx.fail(f"{path}.strength" if path else "strength", "'strength' needs a 'preset'")
    if "aus" in obj:
        aus_path = f"{path}.aus" if path else "aus"
        aus = obj["aus"]
        if not isinstance(aus, dict):
            raise ctx.fail(aus_path, 'expected an object of AU codes to intensities, e.g. {"AU12": 1.0}')
        for code, value in aus.items():
            _au_code(ctx, f"{aus_path}.{code}", code)
            spec[code] = _number(ctx, f"{aus_path}.{code}", value, lo, 1.0)
    return np.array([resolve(spec, c, math.nan) for c in EXTENDED_CODES], dtype=np.float32)


def _common(ctx: _Ctx, doc: Mapping[str, Any]) -> dict[str, Any]:
    mode = doc.get("mode", "absolute")
    if mode not in MODES:
        raise ctx.fail("mode", f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    loop = doc.get("loop", "none")
    if loop not in LOOPS:
        raise ctx.fail("loop", f"unknown loop {loop!r}; expected one of {', '.join(LOOPS)}")
    passthrough = doc.get("passthrough", [])
    if not isinstance(passthrough, list):
        raise ctx.fail("passthrough", 'expected a list of AU codes, e.g. ["AU25", "AU26"]')
    codes = tuple(_au_code(ctx, f"passthrough[{i}]", c) for i, c in enumerate(passthrough))
    fps = doc.get("fps")
    if fps is not None:
        fps = _number(ctx, "fps", fps, 1e-6)
    unnamed = doc.get("unnamed", "follow")
    if unnamed not in UNNAMED:
        raise ctx.fail("unnamed", f"unknown rule {unnamed!r}; expected one of {', '.join(UNNAMED)} "
                                  "(what an AU no keyframe names does)")
    return {"mode": mode, "loop": loop, "passthrough": codes, "fps": fps, "unnamed": unnamed}


def timeline_from_dict(doc: Any, source: str = "<inline>") -> Timeline:
    """Parse a timeline or static AU file that is already decoded from JSON."""
    ctx = _Ctx(source)
    if not isinstance(doc, dict):
        raise ctx.fail("", "expected a JSON object with 'keyframes', 'aus' or 'preset'")
    if "keyframes" not in doc:
        _check_keys(ctx, "", doc, {"aus", "preset", "strength", "mode", "passthrough", "unnamed"})
        if "aus" not in doc and "preset" not in doc:
            raise ctx.fail("", "expected 'keyframes' (a timeline), or 'aus' or 'preset' (a static AU file)")
        common = _common(ctx, doc)
        lo = -1.0 if common["mode"] == "offset" else 0.0
        return Timeline([Keyframe(0.0, _values(ctx, "", doc, lo))], source=source, **common)

    _check_keys(ctx, "", doc, {"keyframes", "fps", "loop", "mode", "passthrough", "unnamed"})
    common = _common(ctx, doc)
    lo = -1.0 if common["mode"] == "offset" else 0.0
    frames = doc["keyframes"]
    if not isinstance(frames, list) or not frames:
        raise ctx.fail("keyframes", "expected a non-empty list of keyframes")
    keyframes: list[Keyframe] = []
    for i, kf in enumerate(frames):
        path = f"keyframes[{i}]"
        if not isinstance(kf, dict):
            raise ctx.fail(path, 'expected an object like {"t": 0.0, "aus": {...}}')
        _check_keys(ctx, path, kf, {"t", "frame", "aus", "preset", "strength", "ease"})
        if ("t" in kf) == ("frame" in kf):
            raise ctx.fail(path, "give exactly one of 't' (seconds) or 'frame' (with a top-level 'fps')")
        if "t" in kf:
            t = _number(ctx, f"{path}.t", kf["t"], 0.0)
        else:
            if common["fps"] is None:
                raise ctx.fail(f"{path}.frame", "a 'frame' keyframe needs a top-level 'fps'")
            t = _number(ctx, f"{path}.frame", kf["frame"], 0.0) / common["fps"]
        if keyframes and t <= keyframes[-1].t:
            raise ctx.fail(
                f"{path}.t" if "t" in kf else f"{path}.frame",
                f"time {t:g}s is not after the previous keyframe ({keyframes[-1].t:g}s)",
            )
        ease = kf.get("ease", "linear")
        if ease not in EASINGS:
            raise ctx.fail(f"{path}.ease", f"unknown easing {ease!r}; expected one of {', '.join(EASINGS)}")
        if "aus" not in kf and "preset" not in kf:
            raise ctx.fail(path, "a keyframe needs 'aus' or 'preset'")
        keyframes.append(Keyframe(t, _values(ctx, path, kf, lo), ease))
    return Timeline(keyframes, source=source, **common)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "not a file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc}") from None


def load_timeline_json(path: str | Path) -> Timeline:
    path = Path(path)
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc.msg}", field=f"line {exc.lineno} column {exc.colno}") from None
    return timeline_from_dict(doc, str(path))


# --------------------------------------------------------------- OpenFace CSV

_AU_COLUMN = re.compile(r"^(AU\d\d[LR]?)_r$")


def load_openface_csv(path: str | Path, face_id: int | None = None, fps: float = 30.0) -> Timeline:
    """An OpenFace CSV (or one written by ``rtanim analyze``) as a timeline, one keyframe per row.

    ``AUxx_r`` columns are on OpenFace's 0-5 scale and are divided by 5; sided
    ``AUxxL_r``/``AUxxR_r`` columns (an rtanim extension) are read too. Time is
    ``timestamp`` if present, else ``frame / fps``. Rows with ``success == 0``
    are skipped. With several faces, ``face_id`` picks one (default: the first seen).
    """
    path = Path(path)
    text = _read_text(path)
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise InputError(path, "empty CSV")
    header = [h.strip() for h in rows[0]]
    cols = {h: i for i, h in enumerate(header)}
    au_cols = {m.group(1): i for h, i in cols.items() if (m := _AU_COLUMN.match(h)) and m.group(1) in ALL_CODES}
    if not au_cols:
        raise InputError(path, "no AUxx_r intensity columns (is this an OpenFace CSV?)", field="header")
    if "timestamp" not in cols and "frame" not in cols:
        raise InputError(path, "needs a 'timestamp' or 'frame' column", field="header")
    keyframes: list[Keyframe] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise InputError(path, f"expected {len(header)} columns, got {len(row)}", field=f"line {n}")

        def num(name: str, row: list[str] = row, n: int = n) -> float:
            try:
                return float(row[cols[name]])
            except ValueError:
                raise InputError(
                    path, f"not a number: {row[cols[name]].strip()!r}", field=f"line {n}, {name}"
                ) from None

        if "face_id" in cols:
            fid = int(num("face_id"))
            if face_id is None:
                face_id = fid
            if fid != face_id:
                continue
        if "success" in cols and num("success") == 0:
            continue
        t = num("timestamp") if "timestamp" in cols else num("frame") / fps
        if keyframes and t <= keyframes[-1].t:
            if t == keyframes[-1].t:
                continue
            raise InputError(path, f"time {t:g}s is not after the previous row", field=f"line {n}")
        spec = {code: min(1.0, max(0.0, num(header[i]) / 5.0)) for code, i in au_cols.items()}
        keyframes.append(Keyframe(t, np.array([resolve(spec, c) for c in EXTENDED_CODES], np.float32)))
    if not keyframes:
        raise InputError(path, "no usable rows" + (f" for face_id {face_id}" if face_id is not None else ""))
    return Timeline(keyframes, source=str(path), fps=fps)


def write_openface_csv(path: str | Path, rows: Sequence[tuple[int, int, float, Mapping[str, float]]]) -> None:
    """Write ``(frame, face_id, timestamp, aus)`` rows as an OpenFace-compatible CSV (0-5 scale).

    Bilateral columns come first in OpenFace's order; sided ones follow, so
    OpenFace readers see what they expect and rtanim keeps winks and smirks.
    """
    sided = [c for c in EXTENDED_CODES if c not in AU_CODES]
    header = ["frame", "face_id", "timestamp", "success"] + [f"{c}_r" for c in AU_CODES + tuple(sided)]
    with staged(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for frame, fid, ts, aus in rows:
            w.writerow([frame, fid, f"{ts:.4f}", 1] + [f"{5.0 * resolve(aus, c):.3f}" for c in AU_CODES + tuple(sided)])


# ------------------------------------------------------------ CLI arguments


_INLINE = re.compile(r"^\s*AU\d\d[LR]?\s*=")


def parse_aus_arg(value: str) -> Timeline:
    """``--aus``: a file, a preset name (``smile`` or ``smile:0.8``) or inline ``AU12=1,AU06=0.6``."""
    path = Path(value)
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_openface_csv(path)
        return load_timeline_json(path)
    if _INLINE.match(value):
        aus: dict[str, float] = {}
        for part in value.split(","):
            code, _, num = part.partition("=")
            try:
                aus[code.strip()] = float(num)
            except ValueError:
                raise InputError("--aus", f"not a number: {num!r}", field=code.strip()) from None
        return timeline_from_dict({"aus": aus}, "--aus")
    name, _, strength = value.partition(":")
    if name in PRESETS:
        try:
            s = float(strength) if strength else 1.0
        except ValueError:
            raise InputError("--aus", f"strength is not a number: {strength!r}") from None
        return timeline_from_dict({"preset": name, "strength": s}, "--aus")
    if path.suffix or "/" in value or "\\" in value:
        raise InputError(value, "file not found")
    hint = difflib.get_close_matches(name, sorted(PRESETS), n=1)
    more = f"; did you mean {hint[0]!r}?" if hint else f"; presets: {', '.join(PRESETS)}"
    raise InputError("--aus", f"{value!r} is neither a file nor a preset{more}")


def with_unnamed(timeline: Timeline, rule: str | None) -> Timeline:
    """``timeline`` under the ``--unnamed`` rule (None: its own, from its ``unnamed`` field or ``follow``)."""
    if rule is None or rule == timeline.unnamed:
        return timeline
    choice(rule, UNNAMED, "--unnamed", "rule")
    from dataclasses import replace

    return replace(timeline, unnamed=rule)


def load_timeline(value: str | Path) -> Timeline:
    """``--timeline``: a JSON timeline or an OpenFace-style CSV."""
    path = Path(value)
    if path.suffix.lower() == ".csv":
        return load_openface_csv(path)
    return load_timeline_json(path)


def sample(
    timeline: Timeline, duration: float | None = None, rate: float = 100.0
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Times and per-code curves (bilateral where both sides match) for plotting and checks."""
    span = duration if duration is not None else max(timeline.duration * (2 if timeline.loop != "none" else 1), 1.0)
    times = np.linspace(0.0, timeline.start + span, max(2, int(round((timeline.start + span) * rate)) + 1))
    rows = [timeline.at(float(t)) for t in times]
    return times, {c: np.array([r[c] for r in rows]) for c in timeline.used_codes()}
