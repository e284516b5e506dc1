"""Image bytes from URLs or files: timeouts, retries with backoff, size and content-type limits."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from search.errors import SearchError
from search.sources import resized_url

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0  # a server asking for longer is treated as down, not waited for


class FetchError(SearchError):
    """One image that could not be fetched; the message is the reason recorded in the failures file."""


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How images are fetched: CDN width, timeouts, retries and limits."""

    width: int | None = 384  # Unsplash `?w=`: short side stays >= 224 px for the usual 3:2 photos
    timeout_s: float = 20.0
    retries: int = 3
    backoff_s: float = 1.0
    max_bytes: int = 20_000_000
    user_agent: str = "semantic-image-search/0.1 (build_index.py)"


class ImageFetcher:
    """Fetches image bytes by URL (pooled connections, thread-safe) or by file path."""

    def __init__(self, config: FetchConfig = FetchConfig(), client: httpx.Client | None = None) -> None:
        self.config = config
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(config.timeout_s), follow_redirects=True,
            headers={"User-Agent": config.user_agent}, limits=httpx.Limits(max_connections=64))

    def close(self) -> None:
        """Close pooled connections."""
        self._client.close()

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fetch(self, location: str) -> bytes:
        """The bytes at a URL or path; raises FetchError with a one-line reason."""
        if location.startswith(("http://", "https://")):
            return self._fetch_url(resized_url(location, self.config.width))
        return self._read_file(Path(location))

    def _read_file(self, path: Path) -> bytes:
        try:
            size = path.stat().st_size
            if size > self.config.max_bytes:
                raise FetchError(f"file is {size:,} bytes, over the limit of {self.config.max_bytes:,}")
            return path.read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot read file: {exc.strerror or exc}") from exc

    def _fetch_url(self, url: str) -> bytes:
        attempt = 0
        while True:
            try:
                return self._get_once(url)
            except _RetryableError as exc:
                if attempt >= self.config.retries:
                    raise FetchError(f"{exc} (gave up after {attempt + 1} attempts)") from exc
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                logger.debug("retrying %s in %.2fs: %s", url, delay, exc)
                time.sleep(delay)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        # Exponential with jitter so that many workers do not retry in lockstep.
        return self.config.backoff_s * (2**attempt) * (0.5 + random.random() / 2)

    def _get_once(self, url: str) -> bytes:
        try:
            with self._client.stream("GET", url) as response:
                _check_response(response, self.config.max_bytes)
                return _read_limited(response, self.config.max_bytes)
        except httpx.TimeoutException as exc:
            raise _RetryableError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _RetryableError(f"connection failed ({type(exc).__name__}: {exc})") from exc
        except (httpx.RequestError, httpx.InvalidURL) as exc:  # redirect loops, bad URLs: no retry helps
            raise FetchError(f"request failed ({type(exc).__name__}: {exc})") from exc


class _RetryableError(Exception):
    """A failure worth another attempt (429, 5xx, timeout, reset)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _check_response(response: httpx.Response, max_bytes: int) -> None:
    """Raise for a bad status, a non-image content type or a declared size over the limit."""
    status = response.status_code
    if status in RETRY_STATUSES:
        raise _RetryableError(f"HTTP {status}", _retry_after(response))
    if status != 200:
        raise FetchError(f"HTTP {status}")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    # Some servers label images as octet-stream; the decoder still checks what the bytes are.
    if not (kind.startswith("image/") or kind == "application/octet-stream"):
        raise FetchError(f"content type {kind or 'missing'!r} is not an image")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"declared size {int(declared):,} bytes is over the limit of {max_bytes:,}")


def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    """The body, refusing once it passes `max_bytes` (a server may lie about or omit Content-Length)."""
    chunks, total = [], 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > max_bytes:
            raise FetchError(f"body is over the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None  # the HTTP-date form is rare on CDNs; plain backoff is fine then
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
