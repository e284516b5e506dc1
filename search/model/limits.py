"""The one limit on model work at once, shared by every route: image decodes and model encodes.

`WorkLimiter` bounds how many run at the same time in the process, whatever route asked for them (UI, Gradio
API, REST, MCP), which is what bounds a burst's memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

from search.errors import SearchError

MODEL_SLOTS = 2
"""Model work at once: torch already spreads one encode over both cores of a 2-vCPU Space, so more slots only
add memory (each may hold one full-size decoded picture, up to ~256 MB at the 64 MP limit)."""
WAIT_S = 60.0
"""How long a request waits for a slot before it is told the server is busy."""

T = TypeVar("T")


class BusyError(SearchError):
    """Every model slot stayed taken for longer than a request may wait."""


class WorkLimiter:
    """At most `slots` pieces of model work (an image decode + encode, or a text encode) at once, each run on one of
    `slots` threads of the limiter's own.

    Why its own threads: the libraries under the model (oneDNN, ONNX Runtime, the allocator) keep scratch memory
    per calling thread. Run on whichever server thread took the request (Starlette has 40), that memory grew with
    every new thread that ever did model work; on `slots` threads it is held `slots` times at most."""

    def __init__(self, slots: int = MODEL_SLOTS, wait_s: float = WAIT_S) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.slots, self.wait_s = slots, wait_s
        self._free = threading.BoundedSemaphore(slots)
        self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="model-work")
        self._every_thread = threading.Lock()

    def busy_error(self) -> BusyError:
        """What a request is told when it waited `wait_s` for model work (here or in a batch queue)."""
        return BusyError(f"the server is busy: {self.slots} searches have been running for over "
                         f"{self.wait_s:.0f} s; try again in a minute")

    @contextmanager
    def slot(self, wait_s: float | None = None) -> Iterator[None]:
        """Hold one slot for the duration of the block; BusyError when none frees up within `wait_s` (default: the
        limiter's; less for a caller that already waited part of it elsewhere)."""
        if not self._free.acquire(timeout=self.wait_s if wait_s is None else max(wait_s, 0.0)):
            raise self.busy_error()
        try:
            yield
        finally:
            self._free.release()

    def run(self, work: Callable[[], T], wait_s: float | None = None) -> T:
        """`work()` in a slot, on one of the limiter's threads (a slot held means one of them is free)."""
        with self.slot(wait_s):
            return self._threads.submit(work).result()

    def on_every_thread(self, work: Callable[[], object]) -> None:
        """`work()` once on each of the limiter's threads, at the same time (a barrier gives each thread one)."""
        together = threading.Barrier(self.slots)

        def one() -> None:
            together.wait()
            work()

        # One call at a time: two calls' barrier tasks could otherwise take one thread each and wait forever.
        with self._every_thread:
            for future in [self._threads.submit(one) for _ in range(self.slots)]:
                future.result()


_SHARED = WorkLimiter()


def shared_limiter() -> WorkLimiter:
    """The process-wide limiter: memory is per process, so every engine in it shares one bound."""
    return _SHARED
