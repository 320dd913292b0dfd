"""Action Unit vocabulary: the 17 GANimation AUs, unilateral extensions, presets
and the MediaPipe blendshape -> AU map.

Intensities are floats in [0, 1] (OpenFace `_r` values divided by 5, as in the
original GANimation code). AU values travel as plain ``{code: value}`` mappings;
:func:`resolve` and :func:`to_vector` turn them into the vector a model expects,
whatever AU list that model was trained with.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class ActionUnit:
    """One FACS Action Unit as the model sees it."""

    code: str
    name: str
    description: str  # what the muscle does, in plain words
    region: str  # brows | eyes | cheeks | nose | mouth | jaw


#: The conditioning vector of GANimation, in the model's order.
AUS: tuple[ActionUnit, ...] = (
    ActionUnit("AU01", "inner brow raiser", "raises the inner ends of the eyebrows (worried, surprised)", "brows"),
    ActionUnit("AU02", "outer brow raiser", "raises the outer ends of the eyebrows (surprised, questioning)", "brows"),
    ActionUnit("AU04", "brow lowerer", "pulls the eyebrows down and together (frown, anger, concentration)", "brows"),
    ActionUnit(
        "AU05", "upper lid raiser", "opens the eyes wide, showing white above the iris (surprise, fear)", "eyes"
    ),
    ActionUnit("AU06", "cheek raiser", "lifts the cheeks and crinkles the outer eye corners (genuine smile)", "cheeks"),
    ActionUnit("AU07", "lid tightener", "narrows the eyes by tensing the lids (squint, anger)", "eyes"),
    ActionUnit("AU09", "nose wrinkler", "wrinkles the nose and lifts its sides (disgust)", "nose"),
    ActionUnit("AU10", "upper lip raiser", "lifts the upper lip, baring the upper teeth (disgust, sneer)", "mouth"),
    ActionUnit("AU12", "lip corner puller", "pulls the mouth corners up and out: the smile", "mouth"),
    ActionUnit("AU14", "dimpler", "tightens the mouth corners into dimples (contempt, smirk)", "mouth"),
    ActionUnit("AU15", "lip corner depressor", "pulls the mouth corners down (sadness)", "mouth"),
    ActionUnit("AU17", "chin raiser", "pushes the chin and lower lip up (pout, doubt)", "jaw"),
    ActionUnit("AU20", "lip stretcher", "stretches the lips sideways (fear, grimace)", "mouth"),
    ActionUnit("AU23", "lip tightener", "tightens and narrows the lips (anger, determination)", "mouth"),
    ActionUnit("AU25", "lips part", "parts the lips", "mouth"),
    ActionUnit("AU26", "jaw drop", "lowers the jaw, opening the mouth", "jaw"),
    ActionUnit("AU45", "blink", "closes the eyelids", "eyes"),
)

AU_CODES: tuple[str, ...] = tuple(au.code for au in AUS)
AU_BY_CODE: dict[str, ActionUnit] = {au.code: au for au in AUS}

#: Bilateral AUs whose blendshapes come per side, so one side can be driven alone.
#: ``L``/``R`` follow MediaPipe's blendshape names (``...Left``/``...Right``).
SIDED: tuple[str, ...] = (
    "AU02",
    "AU04",
    "AU05",
    "AU06",
    "AU07",
    "AU09",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU20",
    "AU23",
    "AU45",
)
SIDES = ("L", "R")
UNILATERAL_CODES: tuple[str, ...] = tuple(f"{c}{s}" for c in SIDED for s in SIDES)

#: The extended vector: each AU in model order, sided ones replaced by L and R.
EXTENDED_CODES: tuple[str, ...] = tuple(code for c in AU_CODES for code in ((f"{c}L", f"{c}R") if c in SIDED else (c,)))

ALL_CODES: frozenset[str] = frozenset(AU_CODES) | frozenset(UNILATERAL_CODES)


def base_code(code: str) -> str:
    """``AU12L`` -> ``AU12``; ``AU12`` -> ``AU12``."""
    return code[:-1] if code[-1:] in SIDES else code


_CODE = re.compile(r"^\s*AU\s*0*(\d{1,3})\s*([LR]?)\s*$", re.IGNORECASE)
#: Farthest AU number :func:`suggest_code` offers (AU43 -> AU45, but AU99 gets no guess).
SUGGEST_WITHIN = 3


def suggest_code(text: str) -> str | None:
    """The AU code someone most likely meant by an unknown one, or None.

    The same number written differently (``au12``, ``AU6``, ``AU12l``) wins; else the nearest AU
    number, the lower one on a tie. By spelling, AU13 is as close to AU23 as to AU12, but FACS
    numbers a face region's AUs together, so the neighbouring number is what people mean.
    """
    m = _CODE.match(text)
    if m is None:
        hint = difflib.get_close_matches(text.upper(), sorted(ALL_CODES), n=1)
        return hint[0] if hint else None
    n, side = int(m.group(1)), m.group(2).upper()
    pool = [c for c in AU_CODES if not side or c in SIDED]
    best = min(pool, key=lambda c: (abs(int(c[2:]) - n), int(c[2:])))
    return best + side if abs(int(best[2:]) - n) <= SUGGEST_WITHIN else None


def unknown_code(code: object) -> str:
    """The reason for an unknown AU code: the code, and the likely intent or where to look."""
    hint = suggest_code(str(code))
    return f"unknown AU {code!r}; " + (f"did you mean {hint}?" if hint else "run `rtanim aus` for the list")


def expand_code(code: str) -> tuple[str, ...]:
    """The codes of the extended vector that ``code`` stands for: a sided AU's two sides, else itself."""
    return tuple(f"{code}{s}" for s in SIDES) if code in SIDED else (code,)


def parse_codes(text: str | None, option: str = "--aus") -> tuple[str, ...]:
    """A command-line AU list (``AU12,AU26``, ``all`` or None for all 17) -> checked codes."""
    from rtanim.errors import InputError

    if text is None or text.strip().lower() == "all":
        return AU_CODES
    codes = tuple(c.strip().upper() for c in text.split(",") if c.strip())
    for c in codes:
        if c not in ALL_CODES:
            raise InputError(option, unknown_code(c))
    if not codes:
        raise InputError(option, "expected AU codes, e.g. AU01,AU12,AU26, or 'all'")
    return codes


def describe(code: str) -> str:
    """A one-line plain-words description of any AU code, sided or not."""
    au = AU_BY_CODE[base_code(code)]
    side = {"L": " (left side only)", "R": " (right side only)"}.get(code[-1], "")
    return f"{au.name}{side}: {au.description}"


def resolve(values: Mapping[str, float], code: str, default: float = 0.0) -> float:
    """The value of ``code`` in ``values``, falling back between sides and bilateral.

    A sided code uses its own entry, else the bilateral one. A bilateral code uses
    its own entry, else the mean of its sides (a wink is half a blink for a model
    that only knows bilateral AUs).
    """
    if code in values:
        return float(values[code])
    if code[-1:] in SIDES:
        return float(values.get(base_code(code), default))
    sided = [values[f"{code}{s}"] for s in SIDES if f"{code}{s}" in values]
    if sided:
        other = float(values.get(code, default))
        return (sum(sided) + other * (2 - len(sided))) / 2.0
    return float(default)


def to_vector(values: Mapping[str, float], codes: Sequence[str] = AU_CODES) -> np.ndarray:
    """An AU mapping as a float32 vector in ``codes`` order, clipped to [0, 1]."""
    return np.clip(np.array([resolve(values, c) for c in codes], dtype=np.float32), 0.0, 1.0)


def from_vector(vector: Sequence[float], codes: Sequence[str] = AU_CODES) -> dict[str, float]:
    return {c: float(v) for c, v in zip(codes, vector, strict=True)}


# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    aus: Mapping[str, float]


#: Named expressions from FACS combinations (Ekman & Friesen's prototypes).
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("neutral", "every AU at rest", {c: 0.0 for c in AU_CODES}),  # names every AU: "at rest", not "follow"
        Preset("smile", "Duchenne smile, 6+12", {"AU06": 0.6, "AU12": 1.0}),
        Preset("big_smile", "open-mouthed laugh, 6+12+25+26", {"AU06": 1.0, "AU12": 1.0, "AU25": 0.8, "AU26": 0.4}),
        Preset("surprise", "surprise, 1+2+5+25+26", {"AU01": 1.0, "AU02": 1.0, "AU05": 0.8, "AU25": 0.8, "AU26": 0.8}),
        Preset(
            "fear",
            "fear, 1+2+4+5+7+20+26 (the GANimation paper's example)",
            {"AU01": 1.0, "AU02": 1.0, "AU04": 0.6, "AU05": 1.0, "AU07": 0.6, "AU20": 0.8, "AU26": 0.6},
        ),
        Preset("anger", "anger, 4+5+7+23", {"AU04": 1.0, "AU05": 0.6, "AU07": 0.8, "AU23": 0.8}),
        Preset("sadness", "sadness, 1+4+15", {"AU01": 0.8, "AU04": 0.5, "AU15": 0.8}),
        Preset("disgust", "disgust, 9+10+15", {"AU09": 1.0, "AU10": 0.7, "AU15": 0.5}),
        Preset("contempt", "contempt, one-sided 12+14", {"AU12R": 0.5, "AU14R": 0.8}),
        Preset("wink_left", "left eye closed, AU45 on the left", {"AU45L": 1.0, "AU45R": 0.0}),
        Preset("wink_right", "right eye closed, AU45 on the right", {"AU45L": 0.0, "AU45R": 1.0}),
        Preset("eyebrows_up", "both brows raised, 1+2", {"AU01": 1.0, "AU02": 1.0}),
        Preset("eyes_closed", "both eyes closed, 45", {"AU45": 1.0}),
        Preset("mouth_open", "mouth open, 25+26", {"AU25": 1.0, "AU26": 0.8}),
    )
}


def preset_aus(name: str, strength: float = 1.0) -> dict[str, float]:
    """A preset's AUs scaled by ``strength``; raises KeyError for unknown names."""
    return {code: value * strength for code, value in PRESETS[name].aus.items()}


# ------------------------------------------------------------- blendshapes -> AUs


@dataclass(frozen=True)
class BlendshapeRule:
    """How one AU is read from MediaPipe's 52 blendshapes.

    Per side, the AU is ``max(blendshapes in plus) - max(blendshapes in minus)``,
    then multiplied by the AU's gain and clipped to [0, 1]. Centre-only
    blendshapes are listed on both sides.
    """

    au: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    minus: tuple[str, ...] = ()


#: The one table that labels AUs from blendshapes (docs/ARCHITECTURE.md, "Action Units").
BLENDSHAPE_RULES: tuple[BlendshapeRule, ...] = (
    BlendshapeRule("AU01", ("browInnerUp",), ("browInnerUp",)),
    BlendshapeRule("AU02", ("browOuterUpLeft",), ("browOuterUpRight",)),
    BlendshapeRule("AU04", ("browDownLeft",), ("browDownRight",)),
    BlendshapeRule("AU05", ("eyeWideLeft",), ("eyeWideRight",)),
    BlendshapeRule("AU06", ("cheekSquintLeft",), ("cheekSquintRight",)),
    BlendshapeRule("AU07", ("eyeSquintLeft",), ("eyeSquintRight",)),
    BlendshapeRule("AU09", ("noseSneerLeft",), ("noseSneerRight",)),
    BlendshapeRule("AU10", ("mouthUpperUpLeft",), ("mouthUpperUpRight",)),
    BlendshapeRule("AU12", ("mouthSmileLeft",), ("mouthSmileRight",)),
    BlendshapeRule("AU14", ("mouthDimpleLeft",), ("mouthDimpleRight",)),
    BlendshapeRule("AU15", ("mouthFrownLeft",), ("mouthFrownRight",)),
    BlendshapeRule("AU17", ("mouthShrugLower",), ("mouthShrugLower",)),
    BlendshapeRule("AU20", ("mouthStretchLeft",), ("mouthStretchRight",)),
    BlendshapeRule("AU23", ("mouthPressLeft",), ("mouthPressRight",)),
    BlendshapeRule(
        "AU25", ("mouthLowerDownLeft", "jawOpen"), ("mouthLowerDownRight", "jawOpen"), minus=("mouthClose",)
    ),
    BlendshapeRule("AU26", ("jawOpen",), ("jawOpen",)),
    BlendshapeRule("AU45", ("eyeBlinkLeft",), ("eyeBlinkRight",)),
)

#: Default gains: 1.0 unless calib/ measured better ones (``assets/au_gains.json``).
DEFAULT_GAINS: dict[str, float] = {code: 1.0 for code in AU_CODES}
GAINS_ASSET = "au_gains.json"


@lru_cache(maxsize=1)
def shipped_gains() -> dict[str, float]:
    """Per-AU gains fitted by ``calib/fit_geometry.py``, or the defaults if none ship."""
    gains = dict(DEFAULT_GAINS)
    path = resources.files("rtanim") / "assets" / GAINS_ASSET
    if path.is_file():
        gains.update({k: float(v) for k, v in json.loads(path.read_text())["gains"].items() if k in gains})
    return gains


def blendshapes_to_aus(blendshapes: Mapping[str, float], gains: Mapping[str, float] | None = None) -> dict[str, float]:
    """Live AUs from one face's blendshape scores: every bilateral and sided code.

    The bilateral value is the mean of the two sides.
    """
    gains = shipped_gains() if gains is None else gains
    out: dict[str, float] = {}
    for rule in BLENDSHAPE_RULES:
        gain = float(gains.get(rule.au, 1.0))
        minus = max((blendshapes.get(n, 0.0) for n in rule.minus), default=0.0)
        sides = [
            min(1.0, max(0.0, gain * (max(blendshapes.get(n, 0.0) for n in names) - minus)))
            for names in (rule.left, rule.right)
        ]
        out[rule.au] = (sides[0] + sides[1]) / 2.0
        if rule.au in SIDED:
            out[f"{rule.au}L"], out[f"{rule.au}R"] = sides
    return out
