"""ImageFetcher against a loopback server: retries, timeouts, limits, content types; local files."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from search.build.fetch import FetchConfig, FetchError, ImageFetcher
from tests.loopback import LoopbackServer
from tests.test_sources import jpeg_bytes

IMAGE = jpeg_bytes((200, 30, 30))
FAST = FetchConfig(width=384, timeout_s=0.5, retries=2, backoff_s=0.01, max_bytes=100_000, allow_private_hosts=True)


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer(slow_s=2.0, large_bytes=300_000) as running:
        running.add("a.jpg", IMAGE)
        yield running


@pytest.fixture
def fetcher() -> Iterator[ImageFetcher]:
    with ImageFetcher(FAST) as active:
        yield active


@pytest.mark.parametrize(("fault", "requests"), [("ok", 1), ("octet", 1), ("500-once", 2), ("429-once", 2),
                                                 ("reset-once", 2)])
def test_good_and_transient_responses_give_the_image(server: LoopbackServer, fetcher: ImageFetcher, fault: str,
                                                     requests: int) -> None:
    assert fetcher.fetch(server.url("a.jpg", fault)) == IMAGE
    assert server.hits[f"/{fault}/a.jpg"] == requests


@pytest.mark.parametrize(("fault", "reason", "requests"), [
    ("404", "HTTP 404", 1),
    ("500", r"HTTP 500 \(gave up after 3 attempts\)", 3),
    ("reset", r"connection failed .*gave up after 3 attempts", 3),
    ("html", "content type 'text/html' is not an image", 1),
    ("too-large", "declared size 300,000 bytes is over the limit of 100,000", 1),
    ("too-large-unsized", "body is over the limit of 100,000 bytes", 1),
])
def test_faults_become_one_line_reasons(server: LoopbackServer, fetcher: ImageFetcher, fault: str, reason: str,
                                        requests: int) -> None:
    with pytest.raises(FetchError, match=reason) as info:
        fetcher.fetch(server.url("a.jpg", fault))
    assert "\n" not in str(info.value)
    assert server.hits[f"/{fault}/a.jpg"] == requests


def test_a_slow_server_times_out_instead_of_hanging(server: LoopbackServer) -> None:
    started = time.monotonic()
    with ImageFetcher(FetchConfig(timeout_s=0.3, retries=1, backoff_s=0.01, allow_private_hosts=True)) as fetcher, \
            pytest.raises(FetchError, match=r"timed out .*gave up after 2 attempts"):
        fetcher.fetch(server.url("a.jpg", "slow"))
    assert time.monotonic() - started < 1.5  # two 0.3 s attempts, not the server's 2 s


def test_retry_after_is_capped_and_backoff_grows() -> None:
    fetcher = ImageFetcher(FetchConfig(backoff_s=1.0))
    delays = [fetcher._backoff(attempt) for attempt in range(4)]
    assert all(0.5 * 2**n <= delay <= 2**n for n, delay in enumerate(delays))
    fetcher.close()


def test_local_files_are_read_within_the_size_limit(tmp_path: Path, fetcher: ImageFetcher) -> None:
    small, big = tmp_path / "small.jpg", tmp_path / "big.jpg"
    small.write_bytes(IMAGE)
    big.write_bytes(b"\0" * 200_000)
    assert fetcher.fetch(str(small)) == IMAGE
    with pytest.raises(FetchError, match="over the limit"):
        fetcher.fetch(str(big))
    with pytest.raises(FetchError, match="cannot read file"):
        fetcher.fetch(str(tmp_path / "missing.jpg"))


def test_a_bad_url_fails_without_retrying(fetcher: ImageFetcher) -> None:
    with pytest.raises(FetchError):
        fetcher.fetch("http://[::1")
