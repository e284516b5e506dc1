"""A loopback HTTP server for tests: serves registered bodies, and faults chosen by the URL path.

    with LoopbackServer() as server:
        server.add("cat.jpg", jpeg_bytes)
        server.url("cat.jpg")                   # 200, image/jpeg
        server.url("cat.jpg", fault="500-once")  # HTTP 500 on the first request, then the image
        server.add_redirect("hop", "http://169.254.169.254/")
        server.url("hop", fault="redirect")      # HTTP 302 to that location

Fault modes (the first path segment): see FAULTS. Request counts per path are in `server.hits`.

    with SilentServer() as silent:              # accepts every connection and never answers
        silent.url("x.jpg")
"""

from __future__ import annotations

import functools
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = {
    "ok": "the registered body with its content type",
    "404": "HTTP 404 every time",
    "500": "HTTP 500 every time",
    "500-once": "HTTP 500 on the first request for this path, then the body",
    "429-once": "HTTP 429 with Retry-After: 0 on the first request, then the body",
    "reset": "the connection is reset (RST) before any response",
    "reset-once": "reset on the first request, then the body",
    "slow": "the response starts after `slow_s` seconds (past a client's timeout)",
    "corrupt": "random bytes labelled image/jpeg",
    "html": "an HTML page (text/html) instead of the image",
    "octet": "the body labelled application/octet-stream",
    "too-large": "a body of `large_bytes` bytes with a matching Content-Length",
    "too-large-unsized": "a body of `large_bytes` bytes sent without Content-Length (chunk by chunk)",
    "gzip": "the registered body gzipped, with Content-Encoding: gzip",
    "gzip-bomb": "`bomb_bytes` zero bytes gzipped twice, with Content-Encoding: gzip, gzip (1 GiB is 1.8 KB)",
    "br-bomb": "`bomb_bytes` zero bytes as brotli, with Content-Encoding: br (raw zeros when brotli is missing)",
    "drip": "the headers, then one byte of the body every `drip_s` seconds",
    "redirect": "HTTP 302 to the location registered with `add_redirect(name, location)`",
}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a `slow` handler must not keep the test process alive

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and clients that hang up mid-body are the point of these faults, not errors


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (or `host`) with a random port; use as a context manager."""

    def __init__(self, slow_s: float = 3.0, large_bytes: int = 2_000_000, delay_s: float = 0.0,
                 host: str = "127.0.0.1") -> None:
        self.bodies: dict[str, tuple[bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.hits: Counter[str] = Counter()
        self.slow_s = slow_s
        self.large_bytes = large_bytes
        self.delay_s = delay_s  # added to every response: makes a build slow enough to interrupt
        self.bomb_bytes = 1 << 27  # what a bomb decodes to (128 MiB); set before the first bomb request
        self.drip_s = 1.0
        self._lock = threading.Lock()
        self.request_headers: dict[str, dict[str, str]] = {}  # the last request's headers, per path
        server_class = _QuietServer6 if ":" in host else _QuietServer
        self._httpd = server_class((host, 0), _handler_for(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    @property
    def base_url(self) -> str:
        """http://HOST:PORT (IPv6 hosts in brackets)"""
        host, port = self._httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def add(self, name: str, body: bytes, content_type: str = "image/jpeg") -> None:
        """Serve `body` at /<fault>/<name> for every fault mode."""
        self.bodies[name] = (body, content_type)

    def add_redirect(self, name: str, location: str) -> None:
        """Answer /redirect/<name> with HTTP 302 to `location` (absolute or relative)."""
        self.redirects[name] = location

    def url(self, name: str, fault: str = "ok") -> str:
        """The URL of a registered name under a fault mode."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
        return f"{self.base_url}/{fault}/{name}"

    def count(self, path: str) -> int:
        """Count a request and return how many there were for this path, this one included."""
        with self._lock:
            self.hits[path] += 1
            return self.hits[path]


class SilentServer:
    """A TCP server on 127.0.0.1 (or `host`) that accepts connections, never reads or answers, and holds each open
    until it closes: the peer a fetch must give up on. `accepted` counts the connections so far."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.settimeout(0.05)  # the accept loop looks at `_stopped` this often
        self._stopped = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for connection in self._held:
            connection.close()

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
        return len(self._held)

    def url(self, name: str) -> str:
        """An http URL on this server (any path: none is ever answered)."""
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}/{name}"

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._held.append(connection)


def _handler_for(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            seen = server.count(path)
            server.request_headers[path] = {key.lower(): value for key, value in self.headers.items()}
            fault, _, name = path.lstrip("/").partition("/")
            if server.delay_s:
                time.sleep(server.delay_s)
            if fault == "redirect" and name in server.redirects:
                self._send(302, b"moved", "text/plain", {"Location": server.redirects[name]})
            elif fault not in FAULTS or name not in server.bodies:
                self._send(404, b"not found", "text/plain")
            elif fault in HOSTILE:
                HOSTILE[fault](self, server.bodies[name], server)
            else:
                _serve(self, fault, server.bodies[name], seen, server)

        def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _serve(handler: Any, fault: str, entry: tuple[bytes, str], seen: int, server: LoopbackServer) -> None:
    body, content_type = entry
    first = seen == 1
    if fault in {"404", "500"} or (fault == "500-once" and first):
        handler._send(int(fault[:3]), b"error", "text/plain")
    elif fault == "429-once" and first:
        handler._send(429, b"slow down", "text/plain", {"Retry-After": "0"})
    elif fault == "reset" or (fault == "reset-once" and first):
        _reset(handler)
    elif fault == "slow":
        time.sleep(server.slow_s)
        handler._send(200, body, content_type)
    elif fault == "corrupt":
        handler._send(200, bytes(range(256)) * 8, "image/jpeg")
    elif fault == "html":
        handler._send(200, b"<!doctype html><title>Photo</title><p>Sign in to view</p>", "text/html; charset=utf-8")
    elif fault == "octet":
        handler._send(200, body, "application/octet-stream")
    elif fault == "too-large":
        handler._send(200, b"\xff" * server.large_bytes, content_type)
    elif fault == "too-large-unsized":
        _send_unsized(handler, server.large_bytes, content_type)
    else:
        handler._send(200, body, content_type)


def _reset(handler: Any) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.connection.close()
    handler.close_connection = True


def _send_unsized(handler: Any, size: int, content_type: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Connection", "close")  # no length: the body ends when the connection closes
    handler.end_headers()
    chunk = b"\xff" * 65536
    sent = 0
    try:
        while sent < size:
            handler.wfile.write(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client stopped reading at its limit, as it should
    handler.close_connection = True


def _send_gzip(handler: Any, entry: tuple[bytes, str], server: LoopbackServer) -> None:
    handler._send(200, _gzip([entry[0]]), entry[1], {"Content-Encoding": "gzip"})


def _send_gzip_bomb(handler: Any, entry: tuple[bytes, str], server: LoopbackServer) -> None:
    handler._send(200, _gzip_bomb(server.bomb_bytes), entry[1], {"Content-Encoding": "gzip, gzip"})


def _send_br_bomb(handler: Any, entry: tuple[bytes, str], server: LoopbackServer) -> None:
    handler._send(200, _br_bomb(server.bomb_bytes), entry[1], {"Content-Encoding": "br"})


def _send_drip(handler: Any, entry: tuple[bytes, str], server: LoopbackServer) -> None:
    body, content_type = entry
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        for index in range(len(body)):
            handler.wfile.write(body[index:index + 1])
            handler.wfile.flush()
            time.sleep(server.drip_s)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up at its deadline, as it should
    handler.close_connection = True


HOSTILE = {"gzip": _send_gzip, "gzip-bomb": _send_gzip_bomb, "br-bomb": _send_br_bomb, "drip": _send_drip}


def _gzip(chunks: Any) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    return b"".join([*(compressor.compress(chunk) for chunk in chunks), compressor.flush()])


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    # Compressed a MiB at a time so that building a 1 GiB bomb never holds the GiB.
    zeros = bytes(1 << 20)
    return _gzip([_gzip(zeros for _ in range(max(size >> 20, 1)))])


@functools.lru_cache(maxsize=4)
def _br_bomb(size: int) -> bytes:
    try:
        import brotli
    except ImportError:
        return bytes(1024)  # the header alone is what a client must refuse
    compressor, zeros = brotli.Compressor(quality=5), bytes(1 << 20)
    return b"".join([*(compressor.process(zeros) for _ in range(max(size >> 20, 1))), compressor.finish()])
