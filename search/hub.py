"""Where a bundle comes from: a local folder, or a Hub dataset repo pinned by revision."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from search.bundle import EMBEDDINGS_FILE, INDEX_FILE, MANIFEST_FILE, METADATA_FILE
from search.errors import BundleError, one_line

logger = logging.getLogger(__name__)

HUB_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
BUNDLE_PATTERNS = [MANIFEST_FILE, INDEX_FILE, EMBEDDINGS_FILE, METADATA_FILE, "failures.parquet", "images/*"]


def parse_hub_source(source: str) -> tuple[str, str | None] | None:
    """`owner/name[@revision]` as (repo_id, revision), or None when it is not a Hub repo id."""
    repo_id, _, revision = source.partition("@")
    if not HUB_REPO_ID.fullmatch(repo_id):
        return None
    return repo_id, revision or None


def fetch_bundle(source: str) -> Path:
    """The bundle folder for `source`: an existing local folder as is, else a Hub download (cached)."""
    local = Path(source).expanduser()
    if local.exists():
        return local
    hub = parse_hub_source(source)
    if hub is None:
        raise BundleError(f"index {source!r} is neither an existing folder nor a Hub repo id "
                          "(owner/name or owner/name@revision)")
    return _download(*hub)


def _download(repo_id: str, revision: str | None) -> Path:
    # Imported here so that using a local bundle never pays for huggingface_hub's import.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        folder = snapshot_download(repo_id, repo_type="dataset", revision=revision,
                                   allow_patterns=BUNDLE_PATTERNS)
    except (OSError, HfHubHTTPError, ValueError) as exc:
        detail = one_line(exc)
        pin = f"@{revision}" if revision else ""
        raise BundleError(f"cannot download index bundle {repo_id}{pin} from the Hub: {detail} "
                          "Check the repo id, the revision and the network (or HF_TOKEN for a private repo)."
                          ) from exc
    logger.info("index bundle %s%s is at %s", repo_id, f"@{revision}" if revision else "", folder)
    return Path(folder)
