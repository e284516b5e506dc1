"""A bundle's `manifest.json`: what it records, and its parsing as untrusted input (types, ranges, file names).

Every value is checked for type and range before anything is built from it, so a hostile or broken manifest
becomes one `BundleError` line, never a traceback or a huge allocation. Messages name manifest fields and
bundle-relative file names only, and never echo strings from the file that could carry markup or paths.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from search.bundle.bounded_json import parse_json
from search.config import EncoderSpec, HnswParams
from search.errors import REBUILD_HINT, BundleError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
INDEX_FILE = "index.hnsw"
EMBEDDINGS_FILE = "embeddings.npy"
METADATA_FILE = "metadata.parquet"
FAILURES_FILE = "failures.parquet"
MODEL_FOLDER = "model"
"""Where a bundle carries its own model (a `local-dir:` model copied in by the build, so the bundle travels whole)."""
# The keyword (BM25) index, written when the metadata has text (search/bundle/keywords.py); optional: older bundles
# lack it.
KEYWORD_VOCAB_FILE = "keywords.json"
KEYWORD_OFFSETS_FILE = "keywords-offsets.npy"
KEYWORD_DOCS_FILE = "keywords-docs.npy"
KEYWORD_WEIGHTS_FILE = "keywords-weights.npy"
KEYWORD_FILES = (KEYWORD_VOCAB_FILE, KEYWORD_OFFSETS_FILE, KEYWORD_DOCS_FILE, KEYWORD_WEIGHTS_FILE)

MAX_MANIFEST_BYTES = 64 << 20
"""64 MiB: a listed file costs ~120 bytes, so this holds ~550 k thumbnails; parsing it takes well under 1 GB."""
MANIFEST_DEPTH = 3  # the top object, then encoder/hnsw/source/files/ui, then ui.examples
MANIFEST_VALUES = 2 * (MAX_MANIFEST_BYTES // 64)
"""Values a manifest may hold before it is parsed: a listed file takes over 64 bytes (a name, a 64-digit sha256,
quotes) and two values (its name and digest); the other fields are a few dozen."""
MAX_COUNT = 50_000_000  # items; 50 M x 512-d float32 is already 100 GB of embeddings
MAX_DIM = 8192  # the widest open_clip models embed to 1280
MAX_HNSW_M = 512
MAX_EF = 100_000
MAX_TEXT = 4096  # characters of a model name, source name or revision
MAX_NAME = 1024  # characters of a bundle-relative file name
MAX_EXAMPLES = 8  # example queries a bundle may suggest to the app
MAX_EXAMPLE_CHARS = 200
MAX_SAMPLE = 48  # ids of the pictures a collection without example queries opens on
FOLDER_SOURCE = "images-dir:"
"""How a folder build's source name starts: its dates come from EXIF, a camera's local time with no zone."""
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
SHOWN_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}(/[A-Za-z0-9._-]{1,100}){0,7}")


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What a bundle records about how it was made (everything but the data itself)."""

    encoder: EncoderSpec
    hnsw: HnswParams = field(default_factory=HnswParams)
    source: str = "unknown"
    source_revision: str | None = None
    failures: int = 0

    @property
    def local_dates(self) -> bool:
        """Whether the items' dates are local wall-clock times (a folder's EXIF), not UTC."""
        return self.source.startswith(FOLDER_SOURCE)


@dataclass(frozen=True, slots=True)
class UiHints:
    """What the app should suggest for this collection: example queries and default thresholds, measured on it."""

    examples: tuple[str, ...] = ()
    text_threshold: float | None = None  # None: the bundle has no descriptions to measure text scores on
    image_threshold: float | None = None
    sample: tuple[str, ...] = ()  # ids of items that differ from each other: what the page opens on without examples

    def to_json(self) -> dict[str, Any]:
        """The `ui` object of the manifest."""
        return {"examples": list(self.examples), "text_threshold": self.text_threshold,
                "image_threshold": self.image_threshold, "sample": list(self.sample)}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The parsed `manifest.json` of a bundle."""

    info: BundleInfo
    dim: int
    count: int
    created: str
    files: dict[str, str] = field(default_factory=dict)
    space: str = "cosine"
    format_version: int = FORMAT_VERSION
    ui: UiHints | None = None  # optional: bundles written before it was recorded have none

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk."""
        info = self.info
        ui = {"ui": self.ui.to_json()} if self.ui is not None else {}
        return {
            "format_version": self.format_version,
            "encoder": {"model": info.encoder.model, "pretrained": info.encoder.pretrained},
            "dim": self.dim,
            "count": self.count,
            "space": self.space,
            "hnsw": asdict(info.hnsw),
            "source": {"name": info.source, "revision": info.source_revision},
            "created": self.created,
            "failures": info.failures,
            "files": self.files,
            **ui,
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse and validate; raises BundleError naming the bad field."""
        top = _Fields(data, "")
        version = data.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            shown = version if type(version) is int and abs(version) < 10**6 else _json_type(version)
            raise BundleError(f"bundle format_version {shown} is not supported (expected {FORMAT_VERSION}); "
                              "rebuild the bundle with this version of build_index.py")
        encoder, hnsw, source = top.object("encoder"), top.object("hnsw"), top.object("source")
        info = BundleInfo(
            encoder=EncoderSpec(encoder.text("model"), encoder.optional_text("pretrained")),
            hnsw=HnswParams(hnsw.integer("m", 2, MAX_HNSW_M), hnsw.integer("ef_construction", 1, MAX_EF),
                            hnsw.integer("ef_search", 1, MAX_EF)),
            source=source.text("name"),
            source_revision=source.optional_text("revision"),
            failures=top.integer("failures", 0, 10 * MAX_COUNT, default=0),
        )
        space = top.text("space")
        if space != "cosine":
            shown = repr(space) if re.fullmatch(r"[A-Za-z0-9_-]{1,20}", space) else "of this manifest"
            raise BundleError(f"bundle space {shown} is not supported (only 'cosine'); {REBUILD_HINT}")
        return cls(info, top.integer("dim", 1, MAX_DIM), top.integer("count", 0, MAX_COUNT), top.text("created"),
                   _file_list(top.raw("files")), space, version, _ui_hints(data.get("ui")))


def parse_manifest(text: bytes) -> Manifest:
    """Parse the bytes of a `manifest.json` (already capped in size by the caller)."""
    return Manifest.from_json(parse_json(text, MANIFEST_FILE, MANIFEST_DEPTH, MANIFEST_VALUES))


def malformed(what: str) -> BundleError:
    """The error for a manifest field of the wrong type or out of range."""
    return BundleError(f"{MANIFEST_FILE} is malformed: {what}; {REBUILD_HINT}")


class _Fields:
    """Typed access to one JSON object of the manifest; a failure names the field, never its value."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise malformed(f"{path or 'the top level'} is not a JSON object")
        self._data = data
        self._path = path

    def _name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def raw(self, key: str) -> Any:
        """The value of a required key, unchecked."""
        if key not in self._data:
            raise malformed(f"{self._name(key)} is missing")
        return self._data[key]

    def object(self, key: str) -> _Fields:
        """A nested object."""
        return _Fields(self.raw(key), self._name(key))

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        """A whole number in [low, high]; JSON booleans and floats are refused."""
        value = self._data.get(key, default) if default is not None else self.raw(key)
        if type(value) is not int:
            raise malformed(f"{self._name(key)} must be a whole number, not {_json_type(value)}")
        if not low <= value <= high:
            raise malformed(f"{self._name(key)} must be from {low} to {high}")
        return value

    def text(self, key: str) -> str:
        """A non-empty string of bounded length."""
        value = self.raw(key)
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT or "\0" in value:
            raise malformed(f"{self._name(key)} must be a non-empty string of at most {MAX_TEXT} characters")
        return value

    def optional_similarity(self, key: str) -> float | None:
        """A cosine similarity in [-1, 1], or null / absent."""
        value = self._data.get(key)
        if value is None:
            return None
        if type(value) not in (int, float) or not -1.0 <= value <= 1.0:  # NaN fails the range check too
            raise malformed(f"{self._name(key)} must be a number from -1 to 1 or null")
        return float(value)

    def optional_text(self, key: str) -> str | None:
        """A string as `text`, or null / absent."""
        return None if self._data.get(key) is None else self.text(key)


def _ui_hints(data: Any) -> UiHints | None:
    """The optional `ui` object: at most MAX_EXAMPLES short example texts and thresholds in [-1, 1] (or null)."""
    if data is None:
        return None
    ui = _Fields(data, "ui")
    examples = ui.raw("examples")
    if not isinstance(examples, list) or len(examples) > MAX_EXAMPLES or not all(
            isinstance(text, str) and 0 < len(text) <= MAX_EXAMPLE_CHARS and text.isprintable() for text in examples):
        raise malformed(f"ui.examples must be a list of at most {MAX_EXAMPLES} printable texts of at most "
                        f"{MAX_EXAMPLE_CHARS} characters")
    return UiHints(tuple(examples), ui.optional_similarity("text_threshold"), ui.optional_similarity("image_threshold"),
                   _sample(data.get("sample", [])))


def _sample(ids: Any) -> tuple[str, ...]:
    """The optional `ui.sample`: at most MAX_SAMPLE distinct item ids (that each is in the bundle: `Bundle.load`)."""
    if not isinstance(ids, list) or len(ids) > MAX_SAMPLE or len(set(map(str, ids))) != len(ids) or not all(
            isinstance(item, str) and 0 < len(item) <= MAX_TEXT and "\0" not in item for item in ids):
        raise malformed(f"ui.sample must be a list of at most {MAX_SAMPLE} distinct item ids")
    return tuple(ids)


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", float: "a fraction", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _file_list(files: Any) -> dict[str, str]:
    """`files`: bundle-relative names to sha256 hex digests, each name checked by `check_name`."""
    if not isinstance(files, dict):
        raise malformed("files must be an object of file name to sha256")
    if len(files) > 2 * MAX_COUNT:
        raise malformed("files lists more files than any bundle has")
    for number, (name, digest) in enumerate(files.items(), 1):
        check_name(name, f"file {number} in {MANIFEST_FILE}")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise malformed(f"the sha256 of {shown_name(name)} is not 64 lowercase hex digits")
    return dict(files)


def check_name(name: Any, what: str) -> str:
    """`name` if it is a plain relative POSIX path (no `..`, `.`, empty parts, backslash, NUL or control character).

    Only the form is checked here; where it leads (symlinks) is checked against the bundle folder on load.
    """
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise BundleError(f"{what} has no usable file name; {REBUILD_HINT}")
    parts = name.split("/")
    if (any(part in ("", ".", "..") for part in parts) or "\\" in name
            or any(ord(char) < 32 or ord(char) == 127 for char in name)):
        raise BundleError(f"{what} is not a relative path inside the bundle (absolute, '..', '.', empty parts, "
                          f"backslashes and control characters are refused); {REBUILD_HINT}")
    return name


def shown_name(name: str) -> str:
    """A file name safe to show in a message (plain characters only), else a neutral placeholder."""
    return name if SHOWN_NAME.fullmatch(name) else "a file with an unusual name"
