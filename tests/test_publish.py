"""Publishing to the Hub (an injected HfApi-like object) and starting from a Hub bundle (offline cache)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import build_index
from search.build.finalize import rebuild_index
from search.build.publish import PublishError, model_card, push_bundle
from search.bundle.store import Bundle, read_manifest
from search.errors import BundleError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeApi:
    """Records what an HfApi would have been asked to do."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.repos: list[tuple[str, dict[str, Any]]] = []
        self.commits: list[tuple[str, list[Any], dict[str, Any]]] = []
        self.fail_with = fail_with

    def create_repo(self, repo_id: str, **kwargs: Any) -> None:
        self.repos.append((repo_id, kwargs))

    def create_commit(self, repo_id: str, operations: list[Any], **kwargs: Any) -> SimpleNamespace:
        if self.fail_with is not None:
            raise self.fail_with
        self.commits.append((repo_id, operations, kwargs))
        return SimpleNamespace(oid=COMMIT)


def _uploaded(api: FakeApi) -> dict[str, bytes]:
    files = {}
    for operation in api.commits[0][1]:
        source = operation.path_or_fileobj
        files[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
    return files


def test_push_uploads_every_bundle_file_and_a_card_in_one_commit(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    (root / ".build").mkdir()
    (root / ".build" / "work.npy").write_bytes(b"scratch")  # build checkpoints never leave the machine
    api = FakeApi()
    assert push_bundle(root, "me/my-index", private=True, api=api) == COMMIT
    assert api.repos == [("me/my-index", {"repo_type": "dataset", "private": True, "exist_ok": True})]
    assert len(api.commits) == 1 and api.commits[0][2]["repo_type"] == "dataset"
    files = _uploaded(api)
    assert sorted(files) == ["README.md", "embeddings.npy", "index.hnsw", "keywords-docs.npy", "keywords-offsets.npy",
                             "keywords-weights.npy", "keywords.json", "manifest.json", "metadata.parquet"]
    assert files["manifest.json"] == (root / "manifest.json").read_bytes()
    card = files["README.md"].decode()
    assert "unit-test @ r1" in card and "| items | 50 |" in card and "| failed downloads | 2 |" in card
    assert "SEARCH_INDEX=me/my-index@<commit>" in card


def test_the_card_of_an_unsplash_bundle_carries_the_licence_note(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    manifest = read_manifest(root)
    info = manifest.info.__class__(manifest.info.encoder, manifest.info.hnsw, "1aurent/unsplash-lite", "21e2b62", 3)
    card = model_card(manifest.__class__(info, manifest.dim, manifest.count, manifest.created, manifest.files),
                      "me/x")
    assert card.startswith("---\nlicense: other\nlicense_link: https://github.com/unsplash/datasets")
    assert "source_datasets: [1aurent/unsplash-lite]" in card and "1aurent/unsplash-lite @ 21e2b62" in card
    assert "Unsplash License" in card and "holds no images" in card
    assert "`ViT-B-32`" in card


def test_a_corrupt_bundle_is_never_pushed(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle()
    (root / "embeddings.npy").write_bytes(b"changed")
    api = FakeApi()
    with pytest.raises(BundleError, match="corrupt"):
        push_bundle(root, "me/my-index", api=api)
    assert api.repos == [] and api.commits == []


def test_a_bad_repo_id_is_refused(make_bundle: Callable[..., Path]) -> None:
    with pytest.raises(PublishError, match="not a Hub repo id"):
        push_bundle(make_bundle(), "no-owner", api=FakeApi())


def test_hub_errors_are_reported_without_the_token(make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    secret = "hf_NotARealTokenButSecret123"
    monkeypatch.setenv("HF_TOKEN", secret)
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    error = HfHubHTTPError("401 Client Error: Unauthorized", response=httpx2.Response(401, request=request))
    api = FakeApi(fail_with=error)
    with caplog.at_level(logging.DEBUG), pytest.raises(PublishError, match="hf auth login or HF_TOKEN") as info:
        push_bundle(make_bundle(), "me/my-index", api=api)
    assert secret not in str(info.value) and secret not in caplog.text


def test_cli_push_prints_the_commit_to_pin(make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    api = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: api)
    root = make_bundle()
    assert build_index.main(["--from", str(root), "--out", str(root), "--rebuild-index", "--push-to",
                             "me/my-index", "--private"]) == 0
    assert f"me/my-index@{COMMIT}" in capsys.readouterr().out
    assert api.repos[0][1]["private"] is True


def test_every_file_a_build_publishes_is_downloaded_again(make_bundle: Callable[..., Path]) -> None:
    import fnmatch

    from search.build.finalize import FAILURES_FILE
    from search.bundle.hub import BUNDLE_PATTERNS

    root = make_bundle()
    (root / FAILURES_FILE).write_bytes(b"")
    names = [*read_manifest(root).files, "manifest.json", FAILURES_FILE, "images/shape-001.jpg"]
    assert all(any(fnmatch.fnmatch(name, pattern) for pattern in BUNDLE_PATTERNS) for name in names)


def _cached_snapshot(cache: Path, repo_id: str, bundle: Path) -> None:
    """Lay a bundle out as huggingface_hub's cache would after a download of `repo_id` at COMMIT."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    shutil.copytree(bundle, repo / "snapshots" / COMMIT, ignore=shutil.ignore_patterns(".*"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.mark.usefixtures("hub_offline")
def test_from_a_hub_repo_uses_the_pinned_revision_in_the_offline_cache(make_bundle: Callable[..., Path],
                                                                        tmp_path: Path) -> None:
    import huggingface_hub.constants

    _cached_snapshot(Path(huggingface_hub.constants.HF_HUB_CACHE), "me/my-index", make_bundle())
    manifest = rebuild_index(f"me/my-index@{COMMIT}", tmp_path / "out", build_index.HnswParams(4, 20, 10))
    assert manifest.count == 50 and Bundle.load(tmp_path / "out").manifest.info.hnsw.m == 4


@pytest.mark.usefixtures("hub_offline")
def test_from_an_unreachable_hub_repo_exits_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = build_index.main(["--from", "someone/missing@main", "--out", str(tmp_path / "out"), "--rebuild-index"])
    assert code == 1
    assert "cannot download index bundle someone/missing@main" in capsys.readouterr().err
