"""cap_malloc_arenas: the server's threads share 2 glibc malloc arenas instead of one each (bench: RSS growth)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# 16 threads malloc at once; glibc's malloc_stats then prints one "Arena N:" block per arena on stderr.
CHILD = r"""
import ctypes, sys, threading
from search.web.process_settings import cap_malloc_arenas
print(cap_malloc_arenas() if sys.argv[1] == "cap" else "not called", flush=True)
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
start = threading.Barrier(16)
def work():
    start.wait()
    for _ in range(1000):
        libc.free(libc.malloc(4096))
threads = [threading.Thread(target=work) for _ in range(16)]
for thread in threads: thread.start()
for thread in threads: thread.join()
libc.malloc_stats()
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas: Linux only")


def arenas(mode: str, **env: str) -> tuple[str, int]:
    """What cap_malloc_arenas returned in a fresh process, and how many arenas its 16 threads ended with."""
    clean = {name: value for name, value in os.environ.items() if name != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO, env={**clean, **env}, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip(), sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_threads_share_two_arenas_once_capped() -> None:
    assert arenas("cap") == ("True", 2)
    _, uncapped = arenas("not")
    assert uncapped > 2  # glibc's default: an arena per thread, up to 8 per core: what the cap is for


def test_an_arena_max_in_the_environment_wins() -> None:
    assert arenas("cap", MALLOC_ARENA_MAX="3") == ("False", 3)
    assert arenas("cap", GLIBC_TUNABLES="glibc.malloc.arena_max=3") == ("False", 3)
