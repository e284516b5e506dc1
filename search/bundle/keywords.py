"""Keyword search: a BM25 index over each item's text, stored in the bundle as plain arrays, and its fusion with
the CLIP ranking.

Built with bm25s (chosen over tantivy by `bench/keywords.py`: see docs/keyword-search.md) from the text columns a
bundle's metadata has (`TEXT_COLUMNS`). bm25s precomputes every (token, item) BM25 weight into a sparse matrix; that
matrix is saved here as three .npy arrays and a JSON vocabulary, never with pickle, and checked on load as untrusted
bundle input (dtypes, shapes, offsets, item numbers and weights) before numpy indexes with it. A query sums the
weights of its tokens, so answering one needs numpy only.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from search.bundle.bounded_json import parse_json
from search.bundle.embeddings import shape_text
from search.bundle.manifest import (
    KEYWORD_DOCS_FILE,
    KEYWORD_FILES,
    KEYWORD_OFFSETS_FILE,
    KEYWORD_VOCAB_FILE,
    KEYWORD_WEIGHTS_FILE,
)
from search.bundle.metadata import arrow_memory_returned
from search.bundle.string_index import StringIndex
from search.errors import REBUILD_HINT, BundleError

TEXT_COLUMNS = ("description", "ai_description", "keywords", "words_in_picture")
"""Metadata columns indexed, whichever of them a table has (plain text, or lists of text such as keywords)."""
KEYWORDS_FORMAT = 1
BM25_K1, BM25_B = 1.5, 0.75  # Lucene's defaults, which bm25s also uses
MAX_TOKEN_CHARS = 40  # longer "words" are ids, hashes or URLs: no one types them as a search word
MAX_DOC_TOKENS = 512  # tokens kept per item; the metadata's cell limits allow ~3 x 2000 characters
MAX_VOCAB = 5_000_000
MAX_VOCAB_BYTES = 256 << 20
VOCAB_DEPTH = 2  # keywords.json: an object holding the vocab list of words
VOCAB_FIELDS = 16  # values besides the words: format, count, k1, b and their keys
_WORD = re.compile(r"\w+")
# Short, common English words that say nothing about a picture; keeping them makes every item match "a photo of".
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "has", "have", "in", "into", "is", "it",
    "its", "of", "on", "or", "that", "the", "their", "there", "these", "this", "to", "was", "were", "which",
    "while", "with", "photo", "photos", "picture", "image", "images",
})

Rows = npt.NDArray[np.int64]


def tokenize(text: str) -> list[str]:
    """Lowercased words of `text` without stopwords, a plural 's' folded away (same rule for items and queries)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return [_fold(word) for word in words if word not in STOPWORDS and 1 < len(word) <= MAX_TOKEN_CHARS]


def _fold(word: str) -> str:
    # A crude plural rule instead of a stemmer dependency: "mountains" finds "mountain"; "paris", "glass" stay.
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")) else word


def document_texts(table: pa.Table) -> list[str] | None:
    """Per row, the text of the TEXT_COLUMNS the table has (lists joined); None when it has none of them."""
    columns = [name for name in TEXT_COLUMNS if name in table.column_names]
    if not columns:
        return None
    parts = [[_as_text(value) for value in table.column(name).to_pylist()] for name in columns]
    return [" ".join(filter(None, row)) for row in zip(*parts, strict=True)]


def _as_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(part) for part in value if part is not None)
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class KeywordIndex:
    """BM25 weights as a sparse (token -> items) matrix: token t's items are docs[offsets[t]:offsets[t+1]]."""

    vocab: StringIndex  # token number -> word; a word's number by bisection (no dict of a million words)
    offsets: npt.NDArray[np.int64]  # (tokens + 1,), non-decreasing from 0 to len(docs)
    docs: npt.NDArray[np.int32]  # item row numbers, each in [0, count)
    weights: npt.NDArray[np.float32]  # BM25 weight of the token in that item, finite and >= 0
    count: int
    top_weight: float = field(init=False)  # the largest weight: what a query word the items never use counts

    def __post_init__(self) -> None:
        object.__setattr__(self, "top_weight", float(self.weights.max()) if len(self.weights) else 1.0)

    @classmethod
    def build(cls, table: pa.Table) -> KeywordIndex | None:
        """The index of the table's text (see TEXT_COLUMNS); None when it has no text column or no word at all."""
        texts = document_texts(table)
        if texts is None:
            return None
        tokens = [tokenize(text)[:MAX_DOC_TOKENS] for text in texts]
        if not any(tokens):
            return None
        import bm25s  # build side only: a query needs numpy alone

        model = bm25s.BM25(method="lucene", k1=BM25_K1, b=BM25_B)
        model.index(tokens, create_empty_token=False, show_progress=False)
        scores = model.scores
        words = sorted(model.vocab_dict, key=model.vocab_dict.__getitem__)  # numbered 0.. in this order
        return cls(StringIndex(pa.array([str(word) for word in words], pa.string())),
                   np.asarray(scores["indptr"], np.int64), np.asarray(scores["indices"], np.int32),
                   np.asarray(scores["data"], np.float32), len(texts))

    def search(self, text: str, limit: int) -> tuple[Rows, npt.NDArray[np.float32]]:
        """Up to `limit` item rows that share a word with `text`, best BM25 score first (ties by row)."""
        return self._ranked(self._word_numbers(text), limit)

    def _word_numbers(self, text: str) -> list[int | None]:
        """The vocabulary number of each distinct word of `text` (None for a word no item uses)."""
        return [self.vocab.find(token) for token in set(tokenize(text))]

    def _ranked(self, words: list[int | None], limit: int) -> tuple[Rows, npt.NDArray[np.float32]]:
        numbers = sorted({number for number in words if number is not None})
        if not numbers or limit <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        total = np.zeros(self.count, np.float32)
        for number in numbers:
            start, end = self.offsets[number], self.offsets[number + 1]
            total[self.docs[start:end]] += self.weights[start:end]  # an item appears once per token
        matched = np.flatnonzero(total > 0)
        if len(matched) > limit:
            matched = matched[np.argpartition(-total[matched], limit - 1)[:limit]]
        order = np.lexsort((matched, -total[matched]))
        return matched[order].astype(np.int64), total[matched[order]]

    def coverage(self, text: str, limit: int) -> tuple[Rows, npt.NDArray[np.float64]]:
        """`search`, each score divided by the best any item could get: the sum over the query's words of the
        word's largest weight (`top_weight` for a word no item uses); so in [0, 1]."""
        words = self._word_numbers(text)
        rows, scores = self._ranked(words, limit)
        if not len(rows):
            return rows, np.empty(0)
        best = 0.0
        for number in words:
            start, end = (0, 0) if number is None else (self.offsets[number], self.offsets[number + 1])
            best += float(self.weights[start:end].max()) if end > start else self.top_weight
        return rows, np.minimum(scores / best, 1.0)

    def writers(self) -> dict[str, Callable[[Path], None]]:
        """Bundle file name -> a function writing that file (no pickle: .npy arrays and JSON)."""
        text = json.dumps({"format": KEYWORDS_FORMAT, "count": self.count, "k1": BM25_K1, "b": BM25_B,
                           "vocab": self.vocab.values.to_pylist()}, ensure_ascii=False)
        return {
            KEYWORD_VOCAB_FILE: lambda tmp: tmp.write_text(text, encoding="utf-8"),
            KEYWORD_OFFSETS_FILE: lambda tmp: np.save(tmp, self.offsets, allow_pickle=False),
            KEYWORD_DOCS_FILE: lambda tmp: np.save(tmp, self.docs, allow_pickle=False),
            KEYWORD_WEIGHTS_FILE: lambda tmp: np.save(tmp, self.weights, allow_pickle=False),
        }


def read_keywords(files: Mapping[str, Path], count: int) -> KeywordIndex | None:
    """The bundle's keyword index from its verified files; None for a bundle without one (older bundles)."""
    listed = [name for name in KEYWORD_FILES if name in files]
    if not listed:
        return None
    if len(listed) != len(KEYWORD_FILES):
        missing = ", ".join(name for name in KEYWORD_FILES if name not in files)
        raise BundleError(f"the bundle's keyword index lacks {missing}; {REBUILD_HINT}")
    with arrow_memory_returned():  # the word list's conversion and sort buffers
        vocab = _read_vocab(files[KEYWORD_VOCAB_FILE], count)
    offsets = _read_array(files[KEYWORD_OFFSETS_FILE], KEYWORD_OFFSETS_FILE, np.dtype("<i8"), len(vocab) + 1)
    nnz = int(offsets[-1])
    if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or nnz > count * MAX_DOC_TOKENS:
        raise _corrupt(KEYWORD_OFFSETS_FILE, "its offsets do not rise from 0 to a sane number of entries")
    docs = _read_array(files[KEYWORD_DOCS_FILE], KEYWORD_DOCS_FILE, np.dtype("<i4"), nnz)
    if nnz and (int(docs.min()) < 0 or int(docs.max()) >= count):
        raise _corrupt(KEYWORD_DOCS_FILE, f"it names items outside 0..{count - 1}")
    weights = _read_array(files[KEYWORD_WEIGHTS_FILE], KEYWORD_WEIGHTS_FILE, np.dtype("<f4"), nnz)
    if not np.all(np.isfinite(weights) & (weights >= 0)):
        raise _corrupt(KEYWORD_WEIGHTS_FILE, "it holds weights that are negative or not finite")
    return KeywordIndex(vocab, offsets, docs, weights, count)


def _corrupt(name: str, what: str) -> BundleError:
    return BundleError(f"bundle file {name} is not a keyword index: {what}; {REBUILD_HINT}")


def _read_vocab(path: Path, count: int) -> StringIndex:
    # Not pyarrow.json: Arrow's JSON reader crashed the process on a file holding `null` (pyarrow 26,
    # apache/arrow#47409) and took 2.7 GB on a file of many small objects; this file is someone else's data.
    with path.open("rb") as handle:
        raw = handle.read(MAX_VOCAB_BYTES + 1)
    if len(raw) > MAX_VOCAB_BYTES:
        raise _corrupt(KEYWORD_VOCAB_FILE, f"it is larger than {MAX_VOCAB_BYTES >> 20} MiB")
    data = parse_json(raw, KEYWORD_VOCAB_FILE, VOCAB_DEPTH, MAX_VOCAB + VOCAB_FIELDS)
    if not isinstance(data, dict) or data.get("format") != KEYWORDS_FORMAT:
        raise _corrupt(KEYWORD_VOCAB_FILE, f"it is not a format {KEYWORDS_FORMAT} object")
    if type(data.get("count")) is not int or data["count"] != count:
        raise _corrupt(KEYWORD_VOCAB_FILE, f"its count differs from the manifest's {count}")
    vocab = data.get("vocab")
    if (not isinstance(vocab, list) or len(vocab) > MAX_VOCAB
            or not all(isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS for token in vocab)):
        raise _corrupt(KEYWORD_VOCAB_FILE, f"vocab must be a list of words of 1 to {MAX_TOKEN_CHARS} characters")
    try:
        words = StringIndex(pa.array(vocab, pa.string()))  # one array, not a dict of a million words
    except UnicodeEncodeError:  # JSON may spell a lone surrogate, which no UTF-8 text holds
        raise _corrupt(KEYWORD_VOCAB_FILE, "vocab holds a word that is not valid text") from None
    if words.repeated() is not None:
        raise _corrupt(KEYWORD_VOCAB_FILE, "vocab repeats a word")
    return words


def _read_array(path: Path, name: str, dtype: np.dtype, length: int) -> np.ndarray:
    """A 1-d .npy array of `dtype` and `length`; mapped first, so a header declaring more than the file holds
    fails before any allocation, and never read with pickle."""
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise _corrupt(name, "it is not a plain .npy array") from None
    if mapped.dtype != dtype or mapped.shape != (length,):
        raise _corrupt(name, f"it holds {mapped.dtype.name} {shape_text(mapped.shape)}, expected {dtype.name} "
                             f"({length},)")
    array = np.array(mapped)  # a private copy: the mapping is closed, the file may change afterwards
    del mapped
    return array
