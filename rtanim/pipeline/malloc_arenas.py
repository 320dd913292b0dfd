"""Fewer glibc malloc arenas, so a long live run's memory stays flat.

glibc gives each new thread its own malloc arena (up to 8 per core) and rarely gives their pages
back. With the sinks on their own threads (rtanim/pipeline/sink_threads.py) beside ONNX Runtime's and
MediaPipe's, a 30-minute 720p soak grew +75.6 MB after its first minute; with two arenas
(``MALLOC_ARENA_MAX=2``) +8.7 MB, about 100 MB lower in all, at the same frame rate (measured by
calib/soak.py for issue 14). glibc reads its arena limit once, when a thread first needs an arena, so
:func:`limit_arenas` must run before any thread starts: ``rtanim``'s entry point calls it first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt's parameter number for the arena limit (glibc malloc.h: M_ARENA_MAX).
M_ARENA_MAX = -8
#: Two: the main thread's arena and one the others share. Measured flat in the soak; speed unchanged.
DEFAULT_ARENAS = 2
#: ``RTANIM_MALLOC_ARENAS=N`` sets another limit (0 leaves glibc's default).
ENV = "RTANIM_MALLOC_ARENAS"


def limit_arenas(arenas: int | None = None) -> int | None:
    """Cap glibc's malloc arenas at ``arenas`` (default :data:`DEFAULT_ARENAS`, or ``$RTANIM_MALLOC_ARENAS``).

    Returns the limit set, or None where nothing was set: not glibc (macOS, Windows, musl), a
    ``MALLOC_ARENA_MAX`` the user already chose, or a limit of 0."""
    if "MALLOC_ARENA_MAX" in os.environ:  # glibc has read the user's own choice already
        return None
    if arenas is None:
        try:
            arenas = int(os.environ.get(ENV, DEFAULT_ARENAS))
        except ValueError:
            arenas = DEFAULT_ARENAS
    if arenas <= 0:
        return None
    libc = _glibc()
    if libc is None or not libc.mallopt(M_ARENA_MAX, arenas):
        return None
    return arenas


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc
