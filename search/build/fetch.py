"""Image bytes from URLs or files: the one boundary where downloaded bytes enter a build.

Every download is bounded where it happens: only http(s) URLs; every connection goes to an address that was
checked to be public (unless `allow_private_hosts`), the very address checked, so DNS cannot change between
check and connect; redirects are followed here, each hop checked; the decoded size is capped while streaming
(gzip and deflate decoded here with bounded output, other encodings refused); one deadline per attempt covers
connect, redirects, headers and body. Local files (`--images-dir`) are the user's own paths and are read as is.
"""

from __future__ import annotations

import logging
import random
import re
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx

from search.build.netguard import ATTEMPT_DEADLINE, GuardedBackend, clamped
from search.build.sources import resized_url
from search.errors import BlockedTargetError, FetchError, PrivateHostError, one_line

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer is treated as down, not waited for
CHUNK = 65_536  # the most one decoding step may produce: a bomb costs at most max_bytes plus this
DECODED = frozenset({"gzip", "x-gzip", "deflate"})  # zlib can bound each step's output; brotli and zstd here cannot
MAX_ENCODINGS = 2
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How images are fetched: CDN width, the deadline per attempt, retries, limits and allowed targets."""

    width: int | None = 384  # Unsplash `?w=`: short side stays >= 224 px for the usual 3:2 photos
    timeout_s: float = 20.0  # the whole of one attempt: connect, redirects, headers and body
    retries: int = 3
    backoff_s: float = 1.0
    max_bytes: int = 20_000_000  # of the decoded body
    user_agent: str = "semantic-image-search/0.1 (build_index.py)"
    max_redirects: int = 5
    allow_private_hosts: bool = False  # loopback and private addresses too: for local mirrors and tests
    private_hosts_hint: str = "--allow-private-hosts allows it for local mirrors"
    """What a refused private host's message adds: what allows it where this fetcher runs (the build's flag here)."""


class ImageFetcher:
    """Fetches image bytes by URL (pooled connections, thread-safe) or by file path."""

    def __init__(self, config: FetchConfig = FetchConfig()) -> None:
        self.config = config
        # httpcore rather than httpx.Client: its network backend is public API, and the guard must sit there.
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(), max_connections=64,
                                             network_backend=GuardedBackend(config.allow_private_hosts))

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, location: str) -> bytes:
        """The bytes at an http(s) URL or a local path; raises FetchError with a one-line reason."""
        if _URL_SCHEME.match(location):
            return self.fetch_url(location)
        return self.read_file(Path(location))

    def fetch_url(self, url: str) -> bytes:
        """The bytes at an http(s) URL (the CDN rendition of `width`); anything else is refused."""
        if not url.lower().startswith(("http://", "https://")):
            raise BlockedTargetError("refused: only http(s) URLs are fetched")
        try:
            return self._fetch_with_retries(resized_url(url, self.config.width))
        except PrivateHostError as exc:
            raise PrivateHostError(f"{exc}; {self.config.private_hosts_hint}") from exc

    def read_file(self, path: Path) -> bytes:
        """The bytes of a local file within the size limit."""
        try:
            size = path.stat().st_size
            if size > self.config.max_bytes:
                raise FetchError(f"file is {size:,} bytes, over the limit of {self.config.max_bytes:,}")
            return path.read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot read file: {exc.strerror or exc}") from exc

    def _fetch_with_retries(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._get_once(url)
            except _RetryableError as exc:
                if attempt >= self.config.retries:
                    tries = f"{attempt + 1} attempts" if attempt else "1 attempt"
                    raise FetchError(f"{exc} (gave up after {tries})") from exc
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                logger.debug("retrying %s in %.2fs: %s", url, delay, exc)
                time.sleep(delay)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter so that many workers do not retry in lockstep.
        return self.config.backoff_s * (2**attempt) * (0.5 + random.random() / 2)

    def _get_once(self, url: str) -> bytes:
        deadline = time.monotonic() + self.config.timeout_s
        token = ATTEMPT_DEADLINE.set(deadline)  # read by every socket operation of this thread's attempt
        try:
            return self._follow(httpx.URL(url), deadline)
        except httpcore.TimeoutException as exc:
            raise _RetryableError(_timeout_reason(exc, deadline, self.config.timeout_s)) from exc
        except (httpcore.NetworkError, httpcore.RemoteProtocolError) as exc:
            raise _RetryableError(one_line(f"connection failed ({type(exc).__name__}: {exc})")) from exc
        except (httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise FetchError(one_line(f"request failed ({type(exc).__name__}: {exc})")) from exc
        finally:
            ATTEMPT_DEADLINE.reset(token)

    def _follow(self, url: httpx.URL, deadline: float) -> bytes:
        """GET `url`, following redirects one checked hop at a time; the connect guard checks each address."""
        seen = {url}
        for _ in range(self.config.max_redirects + 1):
            with self._pool.stream("GET", _core_url(url), headers=self._headers(url),
                                   extensions={"timeout": _timeouts()}) as response:
                target = _redirect_target(response, url)
                if target is None:
                    encodings = _check_response(response, self.config.max_bytes)
                    return _read_body(response.iter_stream(), encodings, self.config, deadline)
            if target in seen:
                raise FetchError("redirect loop")
            seen.add(target)
            url = target
        raise FetchError(f"more than {self.config.max_redirects} redirects")

    def _headers(self, url: httpx.URL) -> list[tuple[bytes, bytes]]:
        # Host from httpx's netloc: it brackets IPv6 literals, which httpcore's default Host header does not.
        return [(b"Host", url.netloc), (b"User-Agent", self.config.user_agent.encode()),
                (b"Accept", b"*/*"), (b"Accept-Encoding", b"identity")]


class _RetryableError(Exception):
    """A failure worth another attempt (429, 5xx, timeout, reset)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _core_url(url: httpx.URL) -> httpcore.URL:
    if url.scheme not in ("http", "https"):
        raise BlockedTargetError("refused: only http(s) URLs are fetched")
    return httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path)


def _timeouts() -> dict[str, float | None]:
    left = clamped(None)
    return {"connect": left, "read": left, "write": left, "pool": left}


def _redirect_target(response: httpcore.Response, url: httpx.URL) -> httpx.URL | None:
    """The next hop of a redirect (None for any other status); only http(s) targets are accepted."""
    if response.status not in REDIRECT_STATUSES:
        return None
    location = _header(response, b"location")
    if not location:
        raise FetchError(f"HTTP {response.status} without a Location")
    target = url.join(location).copy_with(fragment=None)
    if target.scheme not in ("http", "https"):
        raise BlockedTargetError("refused: a redirect to a URL that is not http(s)")
    return target


def _check_response(response: httpcore.Response, max_bytes: int) -> list[str]:
    """The content encodings to undo; raises for a bad status, type, declared size or encoding."""
    status = response.status
    if status in RETRY_STATUSES:
        raise _RetryableError(f"HTTP {status}", _retry_after(response))
    if status != 200:
        raise FetchError(f"HTTP {status}")
    kind = _header(response, b"content-type").split(";")[0].strip().lower()
    # Some servers label images as octet-stream; the decoder still checks what the bytes are.
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise FetchError(f"content type {kind[:60] or 'missing'!r} is not an image")
    declared = _header(response, b"content-length")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"declared size {int(declared):,} bytes is over the limit of {max_bytes:,}")
    return _content_encodings(response)


def _content_encodings(response: httpcore.Response) -> list[str]:
    """Content-Encoding as a list (outermost last), refusing what cannot be decoded with a size bound."""
    names = [name.strip().lower() for name in _header(response, b"content-encoding").split(",")]
    names = [name for name in names if name and name != "identity"]
    if len(names) > MAX_ENCODINGS:
        raise FetchError(f"{len(names)} stacked content encodings; at most {MAX_ENCODINGS} are decoded")
    for name in names:
        if name not in DECODED:
            shown = repr(name) if name in ("br", "zstd", "compress") else "an unknown one"
            raise FetchError(f"content encoding {shown} is refused: only gzip and deflate are decoded "
                             "(with a size bound), and identity was asked for")
    return names


def _read_body(raw: Iterable[bytes], encodings: list[str], config: FetchConfig, deadline: float) -> bytes:
    """The decoded body, refused once it passes max_bytes or the deadline (a server may lie or drip)."""
    pieces = _limited(raw, config.max_bytes, "body")
    for _ in encodings:  # each stage yields at most CHUNK bytes per step, so nothing inflates unchecked
        pieces = _inflate(pieces)
    if encodings:
        pieces = _limited(pieces, config.max_bytes, "decoded body")
    chunks = []
    for piece in pieces:
        chunks.append(piece)
        if time.monotonic() > deadline:
            raise _RetryableError(f"timed out (no complete response within {config.timeout_s:g} s)")
    return b"".join(chunks)


def _limited(pieces: Iterable[bytes], max_bytes: int, what: str) -> Iterator[bytes]:
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > max_bytes:
            raise FetchError(f"{what} is over the limit of {max_bytes:,} bytes")
        yield piece


def _inflate(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """gzip or zlib-wrapped deflate, decoded at most CHUNK bytes per step."""
    decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # +32: detect the gzip or zlib header
    try:
        for piece in pieces:
            data = piece
            while not decoder.eof:
                out = decoder.decompress(data, CHUNK)
                data = decoder.unconsumed_tail
                if out:
                    yield out
                if not data and len(out) < CHUNK:  # a full CHUNK may leave output pending inside zlib
                    break
    except zlib.error as exc:
        raise FetchError("compressed body is corrupt") from exc
    if not decoder.eof:
        raise FetchError("compressed body is truncated")


def _header(response: httpcore.Response, name: bytes) -> str:
    return ", ".join(value.decode("latin-1") for key, value in response.headers if key.lower() == name)


def _retry_after(response: httpcore.Response) -> float | None:
    try:
        seconds = float(_header(response, b"retry-after"))
    except ValueError:
        return None  # the HTTP-date form is rare on CDNs; plain backoff is fine then
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _timeout_reason(exc: Exception, deadline: float, timeout_s: float) -> str:
    if time.monotonic() >= deadline - 0.01:
        return f"timed out (no complete response within {timeout_s:g} s)"
    return f"timed out ({type(exc).__name__})"
