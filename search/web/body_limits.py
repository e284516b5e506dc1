"""Request-body limits at the serving boundary: a plain ASGI middleware (no web framework imported) that refuses
bodies over a size or a time limit before any route parses them, and those that would take a folder's
`DiskBudget` past its size while they stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from search.web.disk_budget import DiskBudget, StorageFullError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


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
    """A small JSON error response: FastAPI's shape for its own errors, and the REST API's (search/web/rest.py)."""
    payload = json.dumps({"detail": message, "error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
