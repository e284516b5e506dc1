"""Publish a bundle to a Hub dataset repo: one commit with every bundle file and a generated README card."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from search.bundle.hub import HUB_REPO_ID
from search.bundle.store import MANIFEST_FILE, Manifest, read_manifest, verify_files
from search.errors import SearchError, one_line

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
UNSPLASH_TERMS = "https://github.com/unsplash/datasets/blob/master/TERMS.md"


class PublishError(SearchError):
    """A bundle that could not be pushed to the Hub."""


def push_bundle(root: Path, repo_id: str, private: bool = False, api: Any = None) -> str:
    """Create the dataset repo if needed, upload the verified bundle and its card; returns the commit sha."""
    if not HUB_REPO_ID.fullmatch(repo_id):
        raise PublishError(f"--push-to {repo_id!r} is not a Hub repo id; use owner/name")
    manifest = read_manifest(root)
    verify_files(root, manifest)  # never publish a bundle that would be refused on load
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = api or HfApi()  # the token comes from HF_TOKEN or `hf auth login`; it is never logged here
    names = [*sorted(manifest.files), MANIFEST_FILE]
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(root / name)) for name in names]
    card = model_card(manifest, repo_id).encode("utf-8")
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card))
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.create_commit(repo_id, operations=operations, repo_type="dataset",
                                   commit_message=f"Index bundle: {manifest.count} items, {manifest.info.encoder}")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        detail = one_line(exc, 300)
        raise PublishError(f"cannot push to {repo_id}: {detail}. Check the repo id, that you are logged in "
                           "(hf auth login or HF_TOKEN with write access) and the network") from exc
    sha = str(commit.oid)
    logger.info("pushed %d files to %s at commit %s", len(operations), repo_id, sha)
    return sha


def model_card(manifest: Manifest, repo_id: str) -> str:
    """The README card: what the bundle holds, how it was made, how to load it, and the licence note."""
    info = manifest.info
    source = info.source + (f" @ {info.source_revision}" if info.source_revision else "")
    from_hub = HUB_REPO_ID.fullmatch(info.source) is not None
    header = ["---", "license: other", f"license_link: {UNSPLASH_TERMS}" if _is_unsplash(info.source) else None,
              "tags: [clip, open_clip, hnswlib, image-search, embeddings]",
              f"source_datasets: [{info.source}]" if from_hub else None, "---"]
    rows = [("source", source), ("model", f"`{info.encoder}`"), ("vector size", manifest.dim),
            ("items", manifest.count), ("failed downloads", info.failures),
            ("hnsw", f"M={info.hnsw.m}, ef_construction={info.hnsw.ef_construction}, "
                     f"ef_search={info.hnsw.ef_search}, cosine"), ("created", manifest.created)]
    body = [f"# Image search index: {info.source}", "",
            "CLIP image embeddings and an hnswlib index for the semantic image search app, written by "
            "`build_index.py`. Every file's sha256 is in `manifest.json`; the app verifies them on load.", "",
            "| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows), "",
            "## Use it", "", "Pin the commit you tested (`owner/name@<commit sha>`):", "", "```bash",
            f"SEARCH_INDEX={repo_id}@<commit> python app.py",
            f'python -m search "a foggy forest at dawn" --index {repo_id}@<commit>', "```", "",
            "Queries must use the same model; the app loads the one `manifest.json` names.", "",
            "## Files", "", "`manifest.json`, `index.hnsw` (hnswlib graph), `embeddings.npy` (float32, no pickle), "
            "`metadata.parquet` (id, image URL, page URL, description, photographer), `failures.parquet` "
            "(items that could not be downloaded or decoded, with the reason)."
            + (" `images/`: thumbnails of the pictures (longest side 512 px), which the app shows."
               if any(name.startswith("images/") for name in manifest.files) else ""), "", "## Licence", "",
            *_licence_lines(info.source)]
    return "\n".join(line for line in [*header, "", *body] if line is not None) + "\n"


def _is_unsplash(source: str) -> bool:
    return "unsplash" in source.lower()


def _licence_lines(source: str) -> list[str]:
    if _is_unsplash(source):
        return ["The photos belong to their photographers and are served by Unsplash under the Unsplash "
                f"License; the Unsplash Lite dataset has its own terms ({UNSPLASH_TERMS}). This repo holds no "
                "images: only embeddings, metadata and links back to Unsplash. Credit photographers when you "
                "show their photos, and follow the dataset terms for any other use."]
    return ["The embeddings are derived from the source collection; its licence applies to the images and "
            "metadata."]
