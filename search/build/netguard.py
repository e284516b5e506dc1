"""Network guard for downloads: connect only to checked public addresses, within one attempt's deadline.

Used by search/build/fetch.py through httpcore's NetworkBackend hook, which is where connections are opened: the
host name is resolved once here, every address is checked, and the socket goes to exactly that address, so DNS
cannot change between check and connect. Every socket read and write waits no longer than the attempt has left.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from contextvars import ContextVar

import httpcore

from search.errors import BlockedTargetError, PrivateHostError

NAT64 = ipaddress.ip_network("64:ff9b::/96")
ATTEMPT_DEADLINE: ContextVar[float | None] = ContextVar("fetch_deadline", default=None)
"""time.monotonic() by which the current download attempt must end (set by search/build/fetch.py per attempt)."""


def clamped(timeout: float | None) -> float | None:
    """`timeout` shortened to what is left of this thread's deadline (the deadline of one attempt)."""
    deadline = ATTEMPT_DEADLINE.get()
    if deadline is None:
        return timeout
    left = max(deadline - time.monotonic(), 0.001)  # 0 would make the socket non-blocking, not time out
    return left if timeout is None else min(timeout, left)


def is_public_address(address: str) -> bool:
    """Whether an IP address is public unicast: not loopback, private, link-local, multicast, reserved..."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in NAT64 else None)
        if embedded is not None:  # the IPv4 address the packets reach decides (NAT64: DNS64 networks)
            return is_public_address(str(embedded))
        if ip.sixtofour is not None and not is_public_address(str(ip.sixtofour)):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback
                                 or ip.is_link_local or ip.is_private)


def _resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address `host` resolves to, all checked: one bad address refuses the host."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve the host name ({getattr(exc, 'strerror', None) or exc})") \
            from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private and not all(is_public_address(address) for address in addresses):
        # No address in the reason: failures.parquet is published, and this must not map internal DNS.
        raise PrivateHostError("refused: the host is not a public address (loopback, private, link-local "
                               "or reserved)")  # ImageFetcher adds what allows it where it runs
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """Connects only to checked addresses, to exactly the address checked (no second DNS lookup)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        error: httpcore.ConnectError | None = None
        for address in _resolve(host, port, self._allow_private):
            try:  # the next address on failure, as socket.create_connection does
                stream = self._inner.connect_tcp(address, port, clamped(timeout), local_address, socket_options)
                return _DeadlineStream(stream)
            except httpcore.ConnectError as exc:
                error = exc
        raise error or httpcore.ConnectError("the host name has no address")

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        raise BlockedTargetError("refused: unix sockets are not fetched")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write waits no longer than the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, clamped(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, clamped(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: object, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, clamped(timeout)))

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)
