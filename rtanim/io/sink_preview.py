"""The preview window: an OpenCV window with a stats overlay, and the hotkeys that steer a live run.

:class:`Controls` lives here because the window's keys set it; the pipeline only reads it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from rtanim.errors import InputError
from rtanim.io.sink_base import SinkBase
from rtanim.io.source_base import Frame


@dataclass
class Controls:
    """What the user can change while a run goes on: the preview's hotkeys set it, the pipeline reads it every frame.

    The one controls object of a run (``rtanim.pipeline.graph`` re-exports it): q quit, space effect, p pause the
    timeline, 1-9 preset (``on_preset`` puts that preset's timeline in ``timeline``), o overlay.
    """

    quit: bool = False
    effect_on: bool = True
    paused: bool = False
    preset_index: int | None = None  # 0-8 after keys 1-9
    overlay: bool = True  # o toggles the stats overlay
    timeline: Any = None  # a rtanim.expression.timeline.Timeline replacing the run's own (set by a preset hotkey)

    def handle_key(self, key: int) -> int | None:
        return apply_key(self, key)


def apply_key(controls: Any, key: int) -> int | None:
    """Apply one ``cv2.waitKey`` code (-1 = none) to any object with ``quit``/``effect_on``/``paused``.

    Duck-typed so the pipeline can hand the preview its own controls object.
    Returns the preset index (0-8) for keys 1-9, also stored in ``preset_index`` when it has one.
    """
    if key < 0:
        return None
    ch = chr(key & 0xFF)
    if ch in ("q", "Q", "\x1b"):
        controls.quit = True
    elif ch == " ":
        controls.effect_on = not controls.effect_on
    elif ch in ("p", "P"):
        controls.paused = not controls.paused
    elif ch in ("o", "O") and hasattr(controls, "overlay"):
        controls.overlay = not controls.overlay
    elif "1" <= ch <= "9":
        index = ord(ch) - ord("1")
        if hasattr(controls, "preset_index"):
            controls.preset_index = index
        return index
    return None


@dataclass(frozen=True)
class OverlayStats:
    """The numbers the preview shows; the pipeline fills them from its own stats."""

    fps: float = 0.0
    latency_ms: float = 0.0
    dropped: int = 0
    faces: int = 0
    note: str = ""  # e.g. "paused", "effect off", the preset name


def draw_overlay(image: np.ndarray, stats: OverlayStats | Mapping[str, Any],
                 aus: Mapping[str, float] | None = None) -> np.ndarray:
    """A copy of ``image`` with fps / latency text and one bar per AU (value clipped to [0, 1]) drawn on it."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(scale * 2))
    line = round(22 * scale) + 4
    if isinstance(stats, OverlayStats):
        text = f"{stats.fps:.1f} fps  {stats.latency_ms:.0f} ms  faces {stats.faces}  dropped {stats.dropped}"
        if stats.note:
            text += f"  {stats.note}"
    else:
        text = "  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
    items = list((aus or {}).items())
    panel_h = line * (1 + len(items)) + 8
    panel_w = min(w, max(round(340 * scale * 1.6), 120))
    y1, x1 = min(h, panel_h), min(w, panel_w)
    roi = out[:y1, :x1]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text so it reads on any frame
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(out, text, (6, line), font, scale * 0.8, (255, 255, 255), thick, cv2.LINE_AA)
    label_w = round(70 * scale)
    bar_max = max(10, x1 - label_w - 16)
    for i, (code, value) in enumerate(items):
        y = line * (i + 2)
        cv2.putText(out, str(code), (6, y), font, scale * 0.6, (220, 220, 220), thick, cv2.LINE_AA)
        v = float(np.clip(value, 0.0, 1.0))
        top = y - line + 8
        cv2.rectangle(out, (label_w + 8, top), (label_w + 8 + bar_max, y - 2), (90, 90, 90), 1)
        if v > 0:
            cv2.rectangle(out, (label_w + 8, top), (label_w + 8 + round(bar_max * v), y - 2), (80, 200, 120), -1)
    return out


def _has_gui() -> bool:
    info = cv2.getBuildInformation()
    gui = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.strip().startswith("GUI:")), "")
    return bool(gui) and gui.upper() != "NONE"


class PreviewSink(SinkBase):
    """An OpenCV window showing the output, with hotkeys that set :class:`Controls` and a stats overlay.

    The pipeline calls ``set_overlay(stats, aus)`` before ``write`` to update the
    overlay and reads ``controls`` after. ``write`` also pumps the window's events
    (``waitKey(1)``), so it must run on the thread that opened the window: the pipeline writes it
    on its calling thread (``main_thread``), the other sinks on their own threads.
    """

    kind = "preview"
    main_thread = True

    def __init__(self, title: str = "rtanim", controls: Any = None,
                 on_preset: Callable[[int], None] | None = None) -> None:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("--preview", "no display ($DISPLAY is not set): run without --preview, or use --out / --vcam")
        if not _has_gui():
            raise InputError("--preview", "this OpenCV build has no GUI support (opencv-python-headless?): "
                                          "install opencv-contrib-python")
        self.title = title
        self.controls = controls if controls is not None else Controls()
        self.on_preset = on_preset
        self.show_overlay = True
        self._stats: OverlayStats | Mapping[str, Any] | None = None
        self._aus: Mapping[str, float] | None = None
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        except cv2.error as e:
            raise InputError("--preview", f"cannot open a window ({e.msg.strip() if hasattr(e, 'msg') else e})") from None
        self._closed = False

    def set_overlay(self, stats: OverlayStats | Mapping[str, Any] | None, aus: Mapping[str, float] | None = None) -> None:
        self._stats, self._aus = stats, aus

    def write(self, frame: Frame, image: np.ndarray) -> None:
        if self._closed:
            return
        if getattr(self.controls, "overlay", self.show_overlay) and self._stats is not None:
            image = draw_overlay(image, self._stats, self._aus)
        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        preset = apply_key(self.controls, cv2.waitKey(1))
        if preset is not None and self.on_preset is not None:
            self.on_preset(preset)
        with contextlib.suppress(cv2.error):
            if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                self.controls.quit = True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)

