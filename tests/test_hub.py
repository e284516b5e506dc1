"""Bundle sources: local folders as they are, Hub repo ids through huggingface_hub (offline here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from search.errors import BundleError
from search.hub import fetch_bundle, parse_hub_source


@pytest.mark.parametrize(("source", "expected"), [
    ("owner/name", ("owner/name", None)),
    ("owner/name@v1.2", ("owner/name", "v1.2")),
    ("my-org/unsplash_25k.clip@3f2a9c1", ("my-org/unsplash_25k.clip", "3f2a9c1")),
    ("just-a-name", None),
    ("a/b/c", None),
    ("", None),
])
def test_parse_hub_source(source: str, expected: tuple[str, str | None] | None) -> None:
    assert parse_hub_source(source) == expected


def test_an_existing_folder_is_used_as_is(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    assert fetch_bundle(str(root)) == root


def test_a_missing_folder_that_is_no_repo_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="neither an existing folder nor a Hub repo id"):
        fetch_bundle(str(tmp_path / "no" / "such" / "bundle"))


@pytest.mark.usefixtures("hub_offline")
def test_an_unreachable_hub_repo_is_refused_with_advice() -> None:
    with pytest.raises(BundleError, match=r"cannot download index bundle someone/missing@main.*network") as info:
        fetch_bundle("someone/missing@main")
    assert "\n" not in str(info.value)
