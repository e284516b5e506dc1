"""Where a bundle comes from: a local folder, or a Hub dataset repo pinned by revision (and its cache layout)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from search.bundle.manifest import (
    EMBEDDINGS_FILE,
    FAILURES_FILE,
    INDEX_FILE,
    KEYWORD_FILES,
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FOLDER,
)
from search.errors import BundleError, one_line

logger = logging.getLogger(__name__)

# Owner and name start with a letter, digit or underscore: "./x", "../x" and "~/x" are paths, never repo ids.
HUB_REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")
# `model/*`: the `local-dir:` model a bundle carries (search/build/bundled_model.py), checked on load like the rest.
BUNDLE_PATTERNS = [MANIFEST_FILE, INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE, FAILURES_FILE, *KEYWORD_FILES,
                   "images/*", f"{MODEL_FOLDER}/*"]
# huggingface_hub's cache: REPO_CACHE/snapshots/REVISION/NAME is a symlink to REPO_CACHE/blobs/HASH, where
# REPO_CACHE is named like "datasets--OWNER--NAME".
REPO_CACHE_NAME = re.compile(r"(datasets|models|spaces)--([\w.-]+?)--([\w.-]+)")
HUB_ANSWER_S = 10.0
"""How long the Hub may take to answer whether a repo exists; huggingface_hub itself would wait without end."""


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """`owner/name[@revision]` as (repo_id, revision), or None when it is not a Hub repo id."""
    repo_id, _, revision = source.partition("@")
    if not HUB_REPO_ID.fullmatch(repo_id):
        return None
    return repo_id, revision or None


def snapshot_blobs(folder: Path) -> Path | None:
    """The `blobs/` folder of the repo cache when `folder` is a huggingface_hub snapshot, else None.

    The snapshot's files are symlinks into that folder, so it counts as part of the bundle; blobs of other
    repos, and anything else outside the snapshot, do not.
    """
    snapshot = _snapshot(folder)
    if snapshot is None:
        return None
    blobs = snapshot[0].parent.parent / "blobs"
    return blobs if blobs.is_dir() and not blobs.is_symlink() else None


def snapshot_label(folder: Path) -> str | None:
    """`owner/name@revision` for a huggingface_hub snapshot folder (for messages: no cache path), else None."""
    snapshot = _snapshot(folder)
    if snapshot is None:
        return None
    real, repo = snapshot
    return f"{repo[2]}/{repo[3]}@{real.name[:12]}"


def _snapshot(folder: Path) -> tuple[Path, re.Match[str]] | None:
    """(real folder, match of its repo cache's name) when `folder` is REPO_CACHE/snapshots/REVISION, else None."""
    real = Path(os.path.realpath(folder))
    repo = REPO_CACHE_NAME.fullmatch(real.parent.parent.name)
    return (real, repo) if real.parent.name == "snapshots" and repo is not None else None


def fetch_bundle(source: str) -> Path:
    """The bundle folder for `source`: an existing local folder as is, else a Hub download (cached)."""
    try:
        local = Path(source).expanduser()
        exists = local.exists()
    except (OSError, RuntimeError, ValueError):  # a name too long, an unknown ~user, a NUL byte
        exists = False
    if exists:
        return local
    hub = parse_hub_source(source)
    if hub is None:
        raise BundleError(f"index {source!r} is neither an existing folder nor a Hub repo id "
                          "(owner/name or owner/name@revision)")
    return _download(*hub)


def _download(repo_id: str, revision: str | None) -> Path:
    # Imported here so that using a local bundle never pays for huggingface_hub's import.
    import httpx2  # huggingface_hub's HTTP client: a server that breaks off a download raises its errors as is
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    pin = f"{repo_id}@{revision}" if revision else repo_id
    try:
        hub_answers = _hub_answers(repo_id, revision)  # a missing repo is refused here, within HUB_ANSWER_S
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                   allow_patterns=BUNDLE_PATTERNS, local_files_only=not hub_answers)
    except (OSError, HfHubHTTPError, ValueError, httpx2.HTTPError) as exc:
        raise BundleError(f"cannot download index bundle {pin} from the Hub: {download_failure(exc, repo_id, revision)}"
                          ) from exc
    logger.info("index bundle %s is at %s", pin, folder)
    return Path(folder)


def _hub_answers(repo_id: str, revision: str | None) -> bool:
    """Whether the Hub says the repo exists, asked with a deadline (False, logged, when it does not answer in time:
    the cached snapshot is used, if any); a missing repo or revision raises huggingface_hub's own error."""
    import httpx2
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return False
    logger.info("asking the Hub at %s for the index bundle %s (waiting at most %.0f s)", constants.ENDPOINT,
                f"{repo_id}@{revision}" if revision else repo_id, HUB_ANSWER_S)
    try:
        HfApi().dataset_info(repo_id, revision=revision, timeout=HUB_ANSWER_S)
    except httpx2.TransportError as exc:
        logger.warning("the Hub did not answer (%s); looking for %s in the local cache", one_line(exc, 120),
                       repo_id)
        cached = _cached_snapshot(repo_id, revision)
        if cached is None:
            raise
        return False
    return True


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot huggingface_hub would use offline, else None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                      allow_patterns=BUNDLE_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def download_failure(exc: BaseException, repo_id: str, revision: str | None) -> str:
    """Why a Hub download failed, and what to do, in one line (huggingface_hub's own text only when unclassified)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, RepositoryNotFoundError):
        return (f"the dataset repo {repo_id} does not exist, or it is private or gated. Check the repo id "
                "(owner/name), or set HF_TOKEN to a token with read access.")
    if isinstance(exc, RevisionNotFoundError):
        return (f"{repo_id} has no revision {revision!r}. Pin an existing commit, branch or tag (build_index.py "
                "--push-to prints the commit to pin).")
    cause = _transport_cause(exc, httpx2.TransportError)
    if cause is not None:
        return (f"the Hub at {constants.ENDPOINT} could not be reached or broke off the download "
                f"({type(cause).__name__}: {one_line(cause, 120)}). Check the network and try again.")
    return (f"{one_line(exc, 400)} Check the repo id, the revision and the network (or HF_TOKEN for a private "
            "repo).")


def _transport_cause(exc: BaseException, kinds: type[BaseException]) -> BaseException | None:
    """The connection error behind `exc` (itself, or what huggingface_hub wrapped), if any."""
    seen: BaseException | None = exc
    for _ in range(5):  # huggingface_hub wraps at most a couple of levels deep
        if seen is None or isinstance(seen, kinds):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
