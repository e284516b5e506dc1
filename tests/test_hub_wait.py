"""A Hub that does not answer: the wait is said at once and bounded (a typo'd SEARCH_INDEX must not hang start-up)."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from search.bundle import hub
from search.errors import BundleError


def test_a_hub_that_never_answers_is_given_up_on_in_bounded_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from huggingface_hub import constants

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
        monkeypatch.setattr(hub, "HUB_ANSWER_S", 0.5)
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="search"), pytest.raises(BundleError, match="could not be reached"):
            hub.fetch_bundle("someone/typo-index")
    assert time.monotonic() - started < 10  # huggingface_hub alone waits without end
    assert "asking the Hub at http://127.0.0.1" in caplog.records[0].getMessage()  # said before the wait
    assert "someone/typo-index" in caplog.records[0].getMessage()
