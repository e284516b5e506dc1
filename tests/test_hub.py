"""Bundle sources: local folders as they are, Hub repo ids through huggingface_hub (offline here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from search.bundle.hub import fetch_bundle, parse_hub_source, snapshot_blobs, snapshot_label
from search.bundle.store import Bundle
from search.errors import BundleError


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


def test_a_snapshot_of_the_hub_cache_counts_its_repo_blobs_as_inside(tmp_path: Path) -> None:
    repo_cache = tmp_path / "hub" / "datasets--owner--my.bundle"
    snapshot = repo_cache / "snapshots" / ("ab" * 20)
    snapshot.mkdir(parents=True)
    (repo_cache / "blobs").mkdir()
    assert snapshot_blobs(snapshot) == repo_cache / "blobs"
    assert snapshot_label(snapshot) == "owner/my.bundle@abababababab"
    assert snapshot_blobs(tmp_path) is None and snapshot_label(tmp_path) is None


@pytest.mark.parametrize("layout", ["not-a-repo-cache/snapshots/rev", "datasets--o--n/other/rev",
                                    "datasets--o--n/snapshots/rev"])
def test_folders_that_only_look_like_snapshots_get_no_blobs(tmp_path: Path, layout: str) -> None:
    folder = tmp_path / layout
    folder.mkdir(parents=True)
    blobs = folder.parent.parent / "blobs"
    if layout.startswith("datasets--o--n/snapshots"):
        blobs.symlink_to(tmp_path)  # a blobs/ that is a link elsewhere is not the cache's own folder
    else:
        blobs.mkdir()
    assert snapshot_blobs(folder) is None


def test_a_snapshot_that_is_no_bundle_is_named_by_repo_not_by_cache_path(tmp_path: Path) -> None:
    snapshot = tmp_path / "datasets--owner--name" / "snapshots" / ("cd" * 20)
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "blobs").mkdir()
    with pytest.raises(BundleError) as info:
        Bundle.load(snapshot)
    assert str(info.value).startswith("owner/name@cdcdcdcdcdcd has no manifest.json")
    assert str(tmp_path) not in str(info.value)


@pytest.mark.parametrize("source", ["~no-such-user-here/bundle", "x" * 5000])
def test_sources_that_cannot_be_paths_are_refused_in_one_line(source: str) -> None:
    with pytest.raises(BundleError, match="neither an existing folder nor a Hub repo id"):
        fetch_bundle(source)
