"""Who a video clip shows, as far as its name tells: the unit every held-out split keeps whole.

The same person appears in several clips (MEAD takes, film memes, public figures in several
sources), so the refine trainer holds out whole people (:func:`train.refine_data.split_people`) and
the self-reenactment test's held-out critic trains on half of them and scores the other half.
"""

from __future__ import annotations

import re
from pathlib import Path

_MEAD = re.compile(r"(?:^|_)([MW]\d{3})(?:_|$)")
_KNOWN = ("obama", "andrew", "feifeili", "reagan", "trump", "kristinoem", "aragaki")
#: Clips whose person was identified by looking at them (talking256 names do not say it), and
#: families of clips that may show the same people (film memes, one demo's takes): kept together.
_SEEN = {"eamm_video_sad": "mead:M030"}
_FAMILIES = ("hellomeme", "eamm_video", "pc-avs", "first-order-model", "megactor", "wav2lip", "video-retalking")


def clip_person(source: str) -> str:
    """Who a clip shows, as far as its name tells: MEAD speaker ids (M030), known public figures,
    else the clip name without its take number (``xzy1``/``xzy2`` -> ``xzy``). Errs towards merging
    clips, so a held-out person never appears in training under another clip."""
    stem = Path(source.split(":", 1)[-1]).stem
    m = _MEAD.search(stem)
    if m:
        return f"mead:{m.group(1)}"
    low = stem.lower()
    if low in _SEEN:
        return _SEEN[low]
    for k in _KNOWN:
        if k in low:
            return f"person:{k}"
    for k in _FAMILIES:
        if low.startswith(k):
            return f"clip:{k}"
    low = re.sub(r"(_clip)?_?\d+(_short)?$", "", low)
    low = re.sub(r"_?\d+$", "", low)
    return f"clip:{low}"
