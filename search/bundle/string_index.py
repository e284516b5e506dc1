"""Find a string's position in a large Arrow string array, without a dict of Python strings.

A million ids or words as dict keys take ~130 MB of Python objects; the array plus its sort order take ~25 MB,
and a lookup is a bisection of ~20 steps (microseconds).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class StringIndex:
    """Positions of the strings of `values` (an Arrow string array without nulls)."""

    def __init__(self, values: pa.Array) -> None:
        self.values = values
        # Arrow sorts strings by their UTF-8 bytes, which is code point order: the order of Python's `<` on str.
        self._order = np.asarray(pc.sort_indices(values), np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def find(self, text: str) -> int | None:
        """The position of `text` in `values`, or None when it is not there."""
        low, high = 0, len(self._order)
        while low < high:
            middle = (low + high) // 2
            if self.values[int(self._order[middle])].as_py() < text:
                low = middle + 1
            else:
                high = middle
        if low < len(self._order) and self.values[int(self._order[low])].as_py() == text:
            return int(self._order[low])
        return None

    def repeated(self) -> int | None:
        """A position whose string an earlier-sorted position also holds; None when every string is distinct."""
        if len(self._order) < 2:
            return None
        same = pc.equal(self.values.take(self._order[1:]), self.values.take(self._order[:-1]))
        first = pc.index(same, True).as_py()
        return None if first < 0 else int(self._order[first + 1])
