"""The malloc arena limit that keeps long live runs flat (issue 14's soak), measured in a fresh
process: glibc reads the limit once, so only a new interpreter shows whether it took."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from rtanim.pipeline.malloc_arenas import limit_arenas

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the arena limit is glibc's (Linux); elsewhere limit_arenas does nothing")

# Six threads each allocate many malloc-sized blocks at once (bytearrays above pymalloc's 512
# bytes); then glibc's malloc_info lists one <heap> per arena in use.
PROBE = r"""
import ctypes, ctypes.util, json, os, re, sys, tempfile, threading
limit = None
if sys.argv[1] == "limit":
    from rtanim.pipeline.malloc_arenas import limit_arenas
    limit = limit_arenas()
start = threading.Barrier(6)
def work():
    start.wait()
    keep = [bytearray(2000) for _ in range(2000)]
    return keep
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = (ctypes.c_char_p, ctypes.c_char_p)
libc.malloc_info.argtypes = (ctypes.c_int, ctypes.c_void_p)
libc.fclose.argtypes = (ctypes.c_void_p,)
path = os.path.join(tempfile.mkdtemp(), "info.xml")
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, fp)
libc.fclose(fp)
print(json.dumps({"limit": limit, "arenas": len(re.findall(r'<heap nr="\d+">', open(path).read()))}))
"""


def probe(mode: str, env: dict[str, str] | None = None) -> dict:
    import os

    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_ARENA", "RTANIM_MALLOC"))}
    run_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=run_env,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_threads_share_two_arenas_once_limited():
    free, limited = probe("free"), probe("limit")
    assert free["limit"] is None and free["arenas"] > 2  # glibc's default: a new arena per thread
    assert limited["limit"] == 2 and limited["arenas"] <= 2


def test_a_users_own_choice_and_zero_leave_glibc_alone():
    assert probe("limit", {"MALLOC_ARENA_MAX": "4"})["limit"] is None
    off = probe("limit", {"RTANIM_MALLOC_ARENAS": "0"})
    assert off["limit"] is None and off["arenas"] > 2


def test_limit_is_a_number_or_nothing():
    assert limit_arenas(0) is None
