"""Typed configuration: model specs, hnsw parameters and engine settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from search.errors import SearchError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
LOCAL_DIR_PREFIX = "local-dir:"
TEXT_PRECISIONS = ("auto", "int8", "fp32")  # auto: int8 only where it ranks the bundle as fp32 does
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_INDEX_DIR = REPO_ROOT / "assets" / "demo" / "index"


@dataclass(frozen=True, slots=True)
class EncoderSpec:
    """An open_clip model: a built-in name + pretrained tag or weights file, `hf-hub:ID` or `local-dir:DIR`."""

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED

    def __post_init__(self) -> None:
        # open_clip ignores `pretrained` for schema names; drop it so equal models compare equal.
        if self.model.startswith(("hf-hub:", LOCAL_DIR_PREFIX)) and self.pretrained is not None:
            object.__setattr__(self, "pretrained", None)

    def __str__(self) -> str:
        return self.model if self.pretrained is None else f"{self.model} / {self.pretrained}"

    @property
    def expects_weights(self) -> bool:
        """Whether loading must read a weights file (only a built-in name with no tag is random on purpose)."""
        return self.pretrained is not None or self.model.startswith(("hf-hub:", LOCAL_DIR_PREFIX))

    @property
    def local_dir(self) -> Path | None:
        """The folder of a `local-dir:` spec, else None."""
        if not self.model.startswith(LOCAL_DIR_PREFIX):
            return None
        return Path(self.model.removeprefix(LOCAL_DIR_PREFIX))

    def resolved(self, base: Path) -> EncoderSpec:
        """This spec with a relative `local-dir:` path made absolute against `base`."""
        folder = self.local_dir
        if folder is None or folder.is_absolute():
            return self
        return EncoderSpec(f"{LOCAL_DIR_PREFIX}{(base / folder).resolve()}", None)

    def relative_to(self, base: Path) -> EncoderSpec:
        """This spec with a `local-dir:` path written relative to `base` (for a portable manifest)."""
        folder = self.local_dir
        if folder is None:
            return self
        return EncoderSpec(f"{LOCAL_DIR_PREFIX}{os.path.relpath(folder.resolve(), base.resolve())}", None)


@dataclass(frozen=True, slots=True)
class HnswParams:
    """hnswlib graph parameters; ef_search is not saved by hnswlib, so the bundle manifest keeps it."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


def default_cache_dir() -> Path:
    """SEARCH_CACHE_DIR, else clip-search under XDG_CACHE_HOME (default ~/.cache)."""
    if os.environ.get("SEARCH_CACHE_DIR"):
        return Path(os.environ["SEARCH_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "clip-search"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Where the index comes from and how the model runs."""

    index: str = str(DEMO_INDEX_DIR)
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads for the model; 0 keeps torch's default (one per core)
    text_threads: int = 0  # ONNX Runtime threads per text query; 0: torch's (search/model/onnx_text.py)
    text_cache_size: int = 1024  # repeated text queries (examples, slider re-runs) skip the model
    onnx_text: bool = True  # text queries on ONNX Runtime once exported (search/model/onnx_text.py); CPU only
    text_precision: str = "auto"  # one of TEXT_PRECISIONS: the ONNX text tower's weights (search/model/quantised.py)
    cache_dir: Path = field(default_factory=default_cache_dir)  # where the ONNX export is kept
    batch: bool = True  # concurrent encodes of one kind run as one model call (search/model/batching.py)
    # Serve vectors from a Qdrant collection loaded from the bundle (search/query/qdrant_index.py) instead of its
    # hnswlib graph: a server URL, or `:memory:` for qdrant-client's embedded mode (loaded from the bundle). The
    # bundle still supplies the catalog.
    qdrant_url: str | None = None
    qdrant_collection: str | None = None
    qdrant_api_key: str | None = field(default=None, repr=False)  # a secret: kept out of logs and reprs

    @classmethod
    def from_env(cls) -> EngineConfig:
        """Read SEARCH_INDEX, SEARCH_DEVICE, SEARCH_THREADS, SEARCH_TEXT_THREADS, SEARCH_ONNX_TEXT,
        SEARCH_TEXT_PRECISION, SEARCH_BATCH, SEARCH_CACHE_DIR, SEARCH_QDRANT_URL, SEARCH_QDRANT_COLLECTION and
        QDRANT_API_KEY."""
        defaults = cls()
        return cls(
            index=os.environ.get("SEARCH_INDEX", defaults.index),
            device=os.environ.get("SEARCH_DEVICE", defaults.device),
            threads=_int_env("SEARCH_THREADS", defaults.threads),
            text_threads=_int_env("SEARCH_TEXT_THREADS", defaults.text_threads),
            onnx_text=bool(_int_env("SEARCH_ONNX_TEXT", int(defaults.onnx_text))),
            text_precision=_choice_env("SEARCH_TEXT_PRECISION", TEXT_PRECISIONS, defaults.text_precision),
            batch=_choice_env("SEARCH_BATCH", ("on", "off"), "on" if defaults.batch else "off") == "on",
            qdrant_url=os.environ.get("SEARCH_QDRANT_URL") or None,
            qdrant_collection=os.environ.get("SEARCH_QDRANT_COLLECTION") or None,
            qdrant_api_key=os.environ.get("QDRANT_API_KEY") or None,
        )


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:  # every such setting is a count or a 0/1 switch
        raise SearchError(f"environment variable {name} must be a whole number, 0 or more, got {value!r}")
    return number


def _choice_env(name: str, choices: tuple[str, ...], default: str) -> str:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in choices:
        raise SearchError(f"environment variable {name} must be one of {', '.join(choices)}, got {value[:40]!r}")
    return value
