"""ImageFetcher against hostile servers: compression bombs, a drip, redirects and targets that must be refused.

Loopback addresses stand in for the internet here: 127.0.0.2 and 127.0.0.3 are treated as public CDN hosts
(the address policy is patched for exactly those two), so every other non-public target is refused by the real
policy, for the first URL and for each redirect hop.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from search.build import netguard
from search.build.fetch import BlockedTargetError, FetchConfig, FetchError, ImageFetcher
from search.config import REPO_ROOT
from tests.loopback import LoopbackServer
from tests.test_sources import jpeg_bytes

IMAGE = jpeg_bytes((30, 200, 30))
STAND_INS = frozenset({"127.0.0.2", "127.0.0.3"})
FAST = FetchConfig(timeout_s=2.0, retries=0, max_bytes=2_000_000)
OPEN = FetchConfig(timeout_s=2.0, retries=0, max_bytes=2_000_000, allow_private_hosts=True)
NOT_PUBLIC = "refused: the host is not a public address"
NOT_HTTP = r"refused: (only http\(s\) URLs are fetched|a redirect to a URL that is not http\(s\))"


@pytest.fixture
def cdn(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    """A 'public' server on 127.0.0.2."""
    real = netguard.is_public_address
    monkeypatch.setattr(netguard, "is_public_address", lambda address: address in STAND_INS or real(address))
    with LoopbackServer(host="127.0.0.2") as running:
        running.add("a.jpg", IMAGE)
        yield running


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = _has_ipv6_loopback()


@pytest.fixture
def internal() -> Iterator[dict[str, LoopbackServer]]:
    """Internal services a data set row must not reach: on 127.0.0.1 and on [::1] (where the host has IPv6)."""
    with contextlib.ExitStack() as stack:
        servers = {"v4": stack.enter_context(LoopbackServer())}
        if IPV6:
            servers["v6"] = stack.enter_context(LoopbackServer(host="::1"))
        for server in servers.values():
            server.add("a.jpg", IMAGE)
        yield servers


def _on(host: str) -> Callable[[dict[str, LoopbackServer]], str]:
    return lambda servers: servers["v4"].url("a.jpg").replace("127.0.0.1", host)


LOOPBACK_TARGETS = {  # each reaches the internal server when private hosts are allowed
    "127.0.0.1": _on("127.0.0.1"),
    "localhost": _on("localhost"),
    "0.0.0.0": _on("0.0.0.0"),
    "ipv4-mapped": _on("[::ffff:127.0.0.1]"),
    "decimal": _on("2130706433"),
    "[::1]": lambda servers: servers["v6"].url("a.jpg") if "v6" in servers else "http://[::1]:9/a.jpg",
}
UNREACHABLE_TARGETS = {  # nothing listens there: refused before any connection is tried
    "metadata": lambda _: "http://169.254.169.254/latest/meta-data/",
    "10.x": lambda _: "http://10.0.0.1/a.jpg",
    "192.168.x": lambda _: "http://192.168.1.1:8080/a.jpg",
    "link-local v6": lambda _: "http://[fe80::1]/a.jpg",
}
NOT_HTTP_TARGETS = {"file": lambda _: "file:///etc/passwd", "ftp": lambda _: "ftp://127.0.0.2/a.jpg"}


def _fetch(config: FetchConfig, url: str) -> bytes:
    with ImageFetcher(config) as fetcher:
        return fetcher.fetch(url)


def _assert_refused(url: str, reason: str, secrets: list[str]) -> None:
    started = time.monotonic()
    with pytest.raises(BlockedTargetError, match=reason) as info:
        _fetch(FAST, url)
    message = str(info.value)
    assert "\n" not in message and not any(secret in message for secret in secrets), message
    assert time.monotonic() - started < 1.0  # refused before connecting, not after a connect timeout


@pytest.mark.parametrize("via", ["direct", "redirect"])
@pytest.mark.parametrize("target", [*LOOPBACK_TARGETS, *UNREACHABLE_TARGETS, *NOT_HTTP_TARGETS])
def test_non_public_and_non_http_targets_are_refused(cdn: LoopbackServer, internal: dict[str, LoopbackServer],
                                                     via: str, target: str) -> None:
    location = {**LOOPBACK_TARGETS, **UNREACHABLE_TARGETS, **NOT_HTTP_TARGETS}[target](internal)
    cdn.add_redirect("hop", location)
    url = location if via == "direct" else cdn.url("hop", "redirect")
    reason = NOT_HTTP if target in NOT_HTTP_TARGETS else NOT_PUBLIC
    ports = [str(server.base_url.rsplit(":", 1)[1]) for server in internal.values()]
    _assert_refused(url, reason, ["127.0.0.1", "169.254", "10.0.0", "192.168", "localhost", "::", *ports])
    assert sum(sum(server.hits.values()) for server in internal.values()) == 0


@pytest.mark.parametrize("via", ["direct", "redirect"])
@pytest.mark.parametrize("target", LOOPBACK_TARGETS)
def test_allow_private_hosts_reaches_local_mirrors(cdn: LoopbackServer, internal: dict[str, LoopbackServer],
                                                   via: str, target: str) -> None:
    if target == "[::1]" and not IPV6:
        pytest.skip("this host has no IPv6 loopback")
    location = LOOPBACK_TARGETS[target](internal)
    cdn.add_redirect("hop", location)
    assert _fetch(OPEN, location if via == "direct" else cdn.url("hop", "redirect")) == IMAGE
    assert sum(sum(server.hits.values()) for server in internal.values()) == 1


@pytest.mark.parametrize("config", [FAST, OPEN], ids=["default", "allow-private"])
@pytest.mark.parametrize("target", NOT_HTTP_TARGETS)
def test_non_http_redirects_stay_refused_with_private_hosts_allowed(cdn: LoopbackServer, config: FetchConfig,
                                                                    target: str) -> None:
    cdn.add_redirect("hop", NOT_HTTP_TARGETS[target]({}))
    with pytest.raises(BlockedTargetError, match=NOT_HTTP):
        _fetch(config, cdn.url("hop", "redirect"))


def test_public_redirects_are_followed_across_hosts_and_relative(cdn: LoopbackServer) -> None:
    with LoopbackServer(host="127.0.0.3") as other:
        other.add("b.jpg", IMAGE)
        cdn.add_redirect("away", other.url("b.jpg"))
        cdn.add_redirect("here", "/ok/a.jpg")
        assert _fetch(FAST, cdn.url("away", "redirect")) == IMAGE
        assert _fetch(FAST, cdn.url("here", "redirect")) == IMAGE
        assert other.hits["/ok/b.jpg"] == 1 and cdn.hits["/ok/a.jpg"] == 1
    assert cdn.request_headers["/ok/a.jpg"]["accept-encoding"] == "identity"


@pytest.mark.parametrize("config", [FAST, OPEN], ids=["default", "allow-private"])
def test_redirect_loops_and_long_chains_end_with_a_reason(cdn: LoopbackServer, config: FetchConfig) -> None:
    cdn.add_redirect("loop", "/redirect/loop")
    cdn.add_redirect("ping", "/redirect/pong")
    cdn.add_redirect("pong", "/redirect/ping")
    for hop in range(7):  # hop0 -> ... -> hop6 -> the image: 7 redirects
        cdn.add_redirect(f"hop{hop}", f"/redirect/hop{hop + 1}" if hop < 6 else "/ok/a.jpg")
    for start in ("loop", "ping"):
        with pytest.raises(FetchError, match="^redirect loop$"):
            _fetch(config, cdn.url(start, "redirect"))
    with pytest.raises(FetchError, match="^more than 5 redirects$"):
        _fetch(config, cdn.url("hop0", "redirect"))
    assert _fetch(config, cdn.url("hop2", "redirect")) == IMAGE  # 5 redirects are fine
    assert cdn.hits["/redirect/hop1"] == 1  # the long chain stopped after 6 requests


def test_dns_rebinding_cannot_swap_the_checked_address(cdn: LoopbackServer, internal: dict[str, LoopbackServer],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The name resolves to the public stand-in once, then to 127.0.0.1: the connection uses the first answer."""
    real, answers = socket.getaddrinfo, iter(["127.0.0.2"])

    def rebinding(host: object, port: object, *args: object, **kwargs: object) -> list:
        if host != "cdn.test":
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers, "127.0.0.1"), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    assert _fetch(FAST, cdn.url("a.jpg").replace("127.0.0.2", "cdn.test")) == IMAGE
    assert next(answers, "resolved once") == "resolved once" and cdn.hits["/ok/a.jpg"] == 1


def test_gzip_bodies_are_decoded_and_stacked_ones_too(cdn: LoopbackServer) -> None:
    cdn.bomb_bytes = 1 << 20  # a "bomb" under the limit is a legitimate (if odd) body
    assert _fetch(FAST, cdn.url("a.jpg", "gzip")) == IMAGE
    assert _fetch(FAST, cdn.url("a.jpg", "gzip-bomb")) == bytes(1 << 20)


BOMB_LIMIT = 8_000_000  # large enough to stand out of the allocator's noise in RSS


@pytest.mark.parametrize(("fault", "reason"), [
    ("gzip-bomb", f"decoded body is over the limit of {BOMB_LIMIT:,} bytes"),
    ("br-bomb", "content encoding 'br' is refused"),
])
def test_bombs_are_refused_within_max_bytes_of_memory(cdn: LoopbackServer, fault: str, reason: str) -> None:
    """Peak RSS of a fresh process fetching a 128 MiB bomb grows by about max_bytes, not by the bomb."""
    cdn.bomb_bytes = 1 << 27
    message, growth = _peak_growth(cdn.url("a.jpg", fault), cdn.url("a.jpg"))
    assert reason in message
    # Held at the peak: the accepted chunks (<= max_bytes) plus one decoding step (64 KiB); half as much again
    # for the allocator and socket buffers. Decoding the bomb in one go costs >= 128 MiB (~2 GB measured for a
    # 1 GiB bomb before the bound).
    assert growth < 1.5 * BOMB_LIMIT, f"peak RSS grew by {growth:,} bytes"


def test_the_memory_probe_sees_a_body_of_max_bytes(cdn: LoopbackServer) -> None:
    """The probe above can fail: an accepted body near the limit shows (chunks + joined copy)."""
    cdn.add("big.jpg", b"\x01" * (BOMB_LIMIT - 100_000))
    message, growth = _peak_growth(cdn.url("big.jpg"), cdn.url("a.jpg"))
    assert message == "accepted" and growth > BOMB_LIMIT


CHILD = """
import sys
from search.build.fetch import FetchConfig, FetchError, ImageFetcher

def peak_rss():  # VmHWM starts afresh at exec (ru_maxrss keeps the forking parent's peak)
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]) * 1024

url, warm_up, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
with ImageFetcher(FetchConfig(retries=0, max_bytes=max_bytes, allow_private_hosts=True)) as fetcher:
    fetcher.fetch(warm_up)
    before = peak_rss()
    try:
        fetcher.fetch(url)
        print("accepted")
    except FetchError as exc:
        print(exc)
    print(peak_rss() - before)
"""


def _peak_growth(url: str, warm_up: str) -> tuple[str, int]:
    """(reason, bytes of peak RSS growth) of fetching `url` in a fresh process, after one warm-up fetch."""
    done = subprocess.run([sys.executable, "-c", CHILD, url, warm_up, str(BOMB_LIMIT)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    message, growth = done.stdout.strip().splitlines()
    return message, int(growth)


@pytest.mark.parametrize("drip_s", [0.2, 0.7])
def test_a_drip_is_cut_at_the_deadline(drip_s: float) -> None:
    """A byte per 0.2 s or 0.7 s never trips a per-read timeout of 1 s; the deadline of the attempt cuts it."""
    with LoopbackServer() as server:
        server.drip_s = drip_s
        server.add("drip.jpg", bytes(100))  # 20 s or more at this pace
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"timed out \(no complete response within 1 s\)"):
            _fetch(FetchConfig(timeout_s=1.0, retries=0, allow_private_hosts=True), server.url("drip.jpg", "drip"))
        elapsed = time.monotonic() - started
    # At 0.7 s a byte, a check between chunks alone would cut at 1.4 s: each read must wait only for what is left.
    assert 0.9 < elapsed < 1.3, f"cut after {elapsed:.2f} s"
