"""Process-wide settings of the native libraries under the server, made once at start-up."""

from __future__ import annotations

import ctypes
import os

from threadpoolctl import threadpool_limits

MALLOC_ARENAS = 2
"""glibc malloc arenas for the server. glibc gives threads that contend for malloc arenas of their own (up to 8 per
core), and each keeps the memory its requests freed: at 64 clients for 60 s (bench/load_test.py) the server's RSS
grew 138-176 MiB with glibc's default and 107-130 MiB with 2 arenas, at the same throughput
(docs/performance.md, Load)."""
M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, as `MALLOC_ARENA_MAX` does; whether glibc took the setting.

    Call it before the server's threads start: glibc fixes its limit once more than 8 arenas exist. An operator's
    own setting wins (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`, which glibc read at start); on
    another C library this does nothing."""
    if os.environ.get("MALLOC_ARENA_MAX", "").strip() or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), no such name, or not glibc
        glibc = False
    return glibc and bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))


def pin_blas_threads(threads: int = 1) -> None:
    """One BLAS thread per caller: ranking's matrix products run on the limiter's threads, which already spread
    work over the cores; OpenBLAS's own threads on top oversubscribed them (four heavy requests at once took
    several times four one's time)."""
    threadpool_limits(threads, user_api="blas")
