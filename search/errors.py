"""Exceptions raised by the search package; each message says what went wrong and what to do."""

REBUILD_HINT = "rebuild it with build_index.py or download it again"
"""How every refusal of a bundle ends: what to do about it."""


class SearchError(Exception):
    """Base class: anything the user can fix by changing input, files or configuration."""


class BadQueryError(SearchError, ValueError):
    """A query, top-k or threshold that cannot be searched."""


class BadImageError(SearchError, ValueError):
    """An image file or upload that cannot be read as a picture."""


class UnknownItemError(SearchError, KeyError):
    """An item id that is not in the index."""

    def __str__(self) -> str:
        # KeyError quotes its message; show it plainly like every other error.
        return str(self.args[0]) if self.args else ""


class BundleError(SearchError):
    """An index bundle that is missing, corrupt, or of an unknown format."""


class EncoderMismatchError(SearchError):
    """An encoder that differs from the one an index was built with."""


class EncoderLoadError(SearchError):
    """A model spec that open_clip cannot load (unknown name, missing files, no network)."""


class FetchError(SearchError):
    """One image that could not be fetched; the message is the reason recorded in the failures file."""


class BlockedTargetError(FetchError):
    """A URL or redirect refused by policy: not http(s), or not a public address."""


class PrivateHostError(BlockedTargetError):
    """A host that is not a public address; what allows it depends on the surface (FetchConfig.private_hosts_hint)."""


def one_line(exc: BaseException | str, limit: int | None = None) -> str:
    """An exception's message (or a text) folded onto one line, cut to `limit` characters; an exception with an
    empty message gives its type name."""
    text = " ".join(str(exc).split())[:limit]
    return text or ("" if isinstance(exc, str) else type(exc).__name__)
