"""StringIndex: a string's position by bisection, in the order Python compares str."""

from __future__ import annotations

import pyarrow as pa

from search.bundle.string_index import StringIndex

WORDS = ["zebra", "été", "apple", "😀 smile", "Zebra", "e", "étude", "apple pie", ""]


def test_every_string_is_found_at_its_position_and_others_are_not() -> None:
    index = StringIndex(pa.array(WORDS))
    assert [index.find(word) for word in WORDS] == list(range(len(WORDS)))
    for absent in ("zebras", "ete", "appl", "😀", " ", "\x00"):
        assert index.find(absent) is None
    assert len(index) == len(WORDS)


def test_a_repeated_string_is_reported_and_distinct_ones_are_not() -> None:
    assert StringIndex(pa.array(WORDS)).repeated() is None
    assert StringIndex(pa.array([*WORDS, "été"])).repeated() in (1, len(WORDS))
    assert StringIndex(pa.array([], pa.string())).repeated() is None
    assert StringIndex(pa.array([], pa.string())).find("a") is None
