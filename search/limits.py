"""Limits on hostile or runaway input at the serving boundary: model work at once, request bodies.

`WorkLimiter` bounds how many image decodes and model encodes run at the same time in the process, whatever
route asked for them (UI, Gradio API, later REST and MCP), which is what bounds a burst's memory. `BodyLimits`
is a plain ASGI middleware (no web framework imported) that refuses request bodies over a size or a time limit
before any route parses them, and those that would take a folder's `DiskBudget` past its size while they stream.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from search.errors import SearchError
from search.storage import DiskBudget, StorageFullError

MODEL_SLOTS = 2
"""Model work at once: torch already spreads one encode over both cores of a 2-vCPU Space, so more slots only
add memory (each may hold one full-size decoded picture, up to ~256 MB at the 64 MP limit)."""
WAIT_S = 60.0
"""How long a request waits for a slot before it is told the server is busy."""

MALLOC_ARENAS = 2
"""glibc malloc arenas for the server. glibc gives threads that contend for malloc arenas of their own (up to 8 per
core), and each keeps the memory its requests freed: at 64 clients for 60 s (bench/load_test.py) the server's RSS
grew 138-176 MiB with glibc's default and 107-130 MiB with 2 arenas, at the same throughput (README, Load)."""
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


T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the duration of the block; BusyError when none frees up within `wait_s`."""
        if not self._free.acquire(timeout=self.wait_s):
            raise BusyError(f"the server is busy: {self.slots} searches have been running for over "
                            f"{self.wait_s:.0f} s; try again in a minute")
        try:
            yield
        finally:
            self._free.release()

    def run(self, work: Callable[[], T]) -> T:
        """`work()` in a slot, on one of the limiter's threads (a slot held means one of them is free)."""
        with self.slot():
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


class BodyRefusedError(Exception):
    """Raised into the route reading a body that broke a limit (status None: the client went away)."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.args = (message,)  # whatever a second base class made of them
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class BodyRule:
    """The largest body a set of paths may send, and the time allowed to receive all of it."""

    max_bytes: int
    deadline_s: float
    path_suffixes: tuple[str, ...] = ()  # empty: the default rule for every other path
    space: DiskBudget | None = None  # where the routes store the body: charged per request and per byte received


@dataclass(slots=True)
class _Body:
    """What one request has sent so far, and whether the middleware refused it."""

    rule: BodyRule
    deadline: float
    received: int = 0
    complete: bool = False
    refusal: BodyRefusedError | None = None
    response_started: bool = False


class BodyLimits:
    """ASGI middleware: a body over `max_bytes` gets 413 (from Content-Length before reading, else while it
    streams), one not received within `deadline_s` gets 408; the route never sees the rest of it.

    The route is stopped by raising `refused` from its `receive`; pass a subclass of the exception that the
    framework's multipart parser cleans up after (Starlette's MultiPartException) so no partial upload file
    stays on disk. Whatever the route answers then is replaced by the refusal.
    """

    def __init__(self, app: AsgiApp, *, rules: tuple[BodyRule, ...], default: BodyRule,
                 refused: type[BodyRefusedError] = BodyRefusedError) -> None:
        self.app, self.rules, self.default, self.refused = app, rules, default, refused

    def rule_for(self, path: str) -> BodyRule:
        """The first rule whose suffixes match `path`, else the default."""
        return next((rule for rule in self.rules if path.rstrip("/").endswith(rule.path_suffixes)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > rule.max_bytes:
            await _respond(send, 413, _too_large(rule))  # refused unread
            return
        body = _Body(rule, asyncio.get_running_loop().time() + rule.deadline_s)
        if rule.space is not None:
            try:  # refused unread where even the declared body cannot be stored
                await _charge(rule.space, STORED_PER_REQUEST, also_fits=declared or 0)
            except StorageFullError as full:
                await _respond(send, 507, str(full))
                return
        try:
            await self.app(scope, self._receiver(body, receive), self._sender(body, send))
        except BodyRefusedError:
            if body.refusal is None:
                raise
        if body.refusal is not None and body.refusal.status is not None and not body.response_started:
            await _respond(send, body.refusal.status, body.refusal.message)

    def _receiver(self, body: _Body, receive: Receive) -> Receive:
        async def limited() -> Message:
            if body.refusal is not None:
                raise body.refusal  # a route that caught the refusal and reads on
            if body.complete:
                return await receive()  # after the body: only the disconnect a streaming response waits for
            remaining = body.deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(remaining, 0.0))
            except TimeoutError:
                raise self._refuse(body, 408, f"the request body did not arrive within "
                                              f"{body.rule.deadline_s:.0f} s; send it again") from None
            if message["type"] == "http.disconnect":
                raise self._refuse(body, None, "the client went away before sending the whole body")
            size = len(message.get("body", b""))
            body.received += size
            if body.received > body.rule.max_bytes:
                raise self._refuse(body, 413, _too_large(body.rule))
            if body.rule.space is not None:
                try:
                    await _charge(body.rule.space, size)
                except StorageFullError as full:
                    raise self._refuse(body, 507, str(full)) from None
            body.complete = not message.get("more_body", False)
            return message

        return limited

    def _refuse(self, body: _Body, status: int | None, message: str) -> BodyRefusedError:
        body.refusal = self.refused(status, message)
        return body.refusal

    @staticmethod
    def _sender(body: _Body, send: Send) -> Send:
        async def guarded(message: Message) -> None:
            if body.refusal is not None and not body.response_started:
                return  # the route's own answer to the broken body; ours replaces it
            if message["type"] == "http.response.start":
                body.response_started = True
            await send(message)

        return guarded


STORED_PER_REQUEST = 8192
"""Charged to a rule's DiskBudget for each request before its bytes: the disk blocks of the file and the folder that
gradio makes for it, which a tiny upload would otherwise leave uncounted until the next measure."""


async def _charge(space: DiskBudget, size: int, also_fits: int = 0) -> None:
    """Charge `size` bytes to `space` (measuring it first off the event loop when stale), checking that `also_fits`
    more would still fit."""
    if space.stale():
        await asyncio.to_thread(space.measure_if_stale)
    space.check(size + also_fits)
    space.charge(size)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server itself refuses a malformed length
    return None


def _too_large(rule: BodyRule) -> str:
    return f"the request body is over the limit of {rule.max_bytes:,} bytes; send a smaller file or query"


async def _respond(send: Send, status: int, message: str) -> None:
    """A small JSON error response: FastAPI's shape for its own errors, and the REST API's (rest_api.py)."""
    payload = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
