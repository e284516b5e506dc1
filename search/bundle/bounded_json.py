"""JSON files of a bundle (`manifest.json`, `keywords.json`) parsed with their cost bounded before parsing.

`json.loads` builds the whole document before any shape check, and a Python object costs far more than the
bytes that spell it: `{}` is 2 bytes of file and ~64 bytes of dict, so 32 MiB of empty objects took 1 GB. So
the bytes are scanned first (strings skipped by one linear regex, then bracket and separator counts) and a file
nested deeper or holding more values than its schema allows is refused before any object is built. What then
gets parsed costs at most a small multiple of the file plus a bounded number of small objects.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from search.errors import REBUILD_HINT, BundleError

# A JSON string, or an unterminated one up to the end: every match attempt at a quote succeeds, so the scan is
# linear even on a file of escaped quotes that never closes.
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_OPENERS = np.frombuffer(b"[{", np.uint8)
_ASTRAL = re.compile(rb"[\xf0-\xf4]|\\u[dD][89abAB]")  # a character past U+FFFF: its UTF-8 lead byte or escape
LONGEST_ASTRAL_TEXT = 1 << 16
"""Longest string (in bytes) allowed once the file holds a character past U+FFFF: Python then stores the decoded
text at 4 bytes a character, so one long string would cost 8 times its bytes. No field of either format needs
more (manifest texts are at most 4096 characters, keyword-index words at most 40)."""


class _NotStrictJsonError(ValueError):
    """A document `json.loads` accepts but that has no single reading."""


def parse_json(raw: bytes, name: str, depth: int, values: int) -> Any:
    """The JSON value of `raw` (UTF-8, no key repeated in an object; NaN is left to the fields' range checks).

    A BundleError naming `name` when it is not valid JSON, or, before parsing, when containers nest more than
    `depth` deep (the top value is level 1) or it holds more than `values` values (what its schema needs)."""
    _check_cost(raw, name, depth, values)
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, ints of over 4300 digits, the hooks
        raise BundleError(f"{name} is not valid JSON ({_problem(exc)}); {REBUILD_HINT}") from None


def _check_cost(raw: bytes, name: str, depth: int, values: int) -> None:
    # Each string is a value or a key, and each quote that is not escaped opens or closes one: too many strings
    # is refused before the string scan, whose cost grows with their number.
    strings = (raw.count(b'"') - raw.count(b'\\"')) // 2
    bare = b"" if strings > values else _STRING.sub(b"", raw)  # structure only: a string's content opens nothing
    found = 1 + sum(bare.count(mark) for mark in (b",", b":", b"[", b"{"))  # each value but the first follows one
    closers = bare.count(b"]") + bare.count(b"}")
    if max(strings, found, closers) > values:
        raise BundleError(f"{name} holds more than {values} values, more than its format needs; {REBUILD_HINT}")
    if _ASTRAL.search(raw) and max((m.end() - m.start() for m in _STRING.finditer(raw)), default=0) \
            > LONGEST_ASTRAL_TEXT:
        raise BundleError(f"{name} holds a text longer than its format needs; {REBUILD_HINT}")
    brackets = bare.translate(None, _NOT_BRACKETS)
    del bare
    steps = np.where(np.isin(np.frombuffer(brackets, np.uint8), _OPENERS), np.int32(1), np.int32(-1))
    if len(steps) and int(np.cumsum(steps).max()) > depth:
        raise BundleError(f"{name} is nested too deeply (more than {depth} levels) for its format; {REBUILD_HINT}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key means two readers may see two different files (one takes the first value, one the last).
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _NotStrictJsonError("an object repeats a key")
    return value


def _problem(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg}: line {exc.lineno} column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    return str(exc) if isinstance(exc, _NotStrictJsonError) else type(exc).__name__  # not the digits of a huge int
