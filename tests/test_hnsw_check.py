"""index.hnsw is untrusted: valid files load; targeted patches and a seeded fuzz are refused or served, never crash.

The fuzz loads and queries mutants in a child process (`python -m tests.test_hnsw_check ...`) so a segfault
fails the test and names the mutant instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hnswlib
import numpy as np
import pytest

from search.bundle.hnsw_check import CorruptIndexError, HnswHeader, check_hnsw_file
from search.bundle.hnsw_index import VectorIndex, to_scores
from search.config import REPO_ROOT, HnswParams
from tests.conftest import DEMO_INDEX_DIR, unit_vectors

FIELD_FORMATS = "QQQQQQiIQQQdQ"  # hnswalg.h saveIndex, written field by field (no padding), little-endian
HEADER_FORMAT = "<" + FIELD_FORMATS
FIELDS = ("offset_level0", "max_elements", "count", "size_per_element", "label_offset", "offset_data",
          "maxlevel", "entry_point", "max_m", "max_m0", "m", "mult", "ef_construction")
N, DIM, M = 300, 16, 8
PARAMS = HnswParams(m=M, ef_construction=100, ef_search=32)
SUITE_MUTANTS, LONG_MUTANTS = 300, 5000


@dataclass
class Layout:
    """An hnswlib file as a mutable byte array with the offsets of its parts (an independent, plain parse)."""

    data: bytearray
    header: dict[str, int | float]
    levels: list[int]
    size_words: list[int]  # byte offset of each element's linkListSize

    @classmethod
    def parse(cls, raw: bytes) -> Layout:
        """Walk the file the way hnswlib's loadIndex does."""
        header = dict(zip(FIELDS, struct.unpack_from(HEADER_FORMAT, raw), strict=True))
        position = struct.calcsize(HEADER_FORMAT) + header["count"] * header["size_per_element"]
        levels, size_words = [], []
        for _ in range(header["count"]):
            (size,) = struct.unpack_from("<I", raw, position)
            size_words.append(position)
            levels.append(size // (4 * (1 + header["max_m"])))
            position += 4 + size
        assert position == len(raw)
        return cls(bytearray(raw), header, levels, size_words)

    def labels(self) -> list[int]:
        """Each internal item's label."""
        return [self.get(self.label(item), "<Q") for item in range(int(self.header["count"]))]

    def set_field(self, name: str, value: float) -> None:
        """Overwrite one header field."""
        index = FIELDS.index(name)
        if FIELD_FORMATS[index] != "d":  # wrap into the field's width, as a patch of its bytes would
            bits = 8 * struct.calcsize(FIELD_FORMATS[index])
            value = int(value) % 2**bits
            value = value - 2**bits if FIELD_FORMATS[index] == "i" and value >= 2**31 else value
        struct.pack_into("<" + FIELD_FORMATS[index], self.data, struct.calcsize("<" + FIELD_FORMATS[:index]), value)
        self.header[name] = value

    def record(self, item: int) -> int:
        """Byte offset of an internal item's level-0 record (its link word comes first)."""
        return struct.calcsize(HEADER_FORMAT) + item * int(self.header["size_per_element"])

    def link_id(self, item: int, slot: int) -> int:
        """Byte offset of a level-0 neighbour slot."""
        return self.record(item) + 4 + 4 * slot

    def label(self, item: int) -> int:
        """Byte offset of an item's label."""
        return self.record(item) + int(self.header["label_offset"])

    def vector(self, item: int) -> int:
        """Byte offset of an internal item's stored vector."""
        return self.record(item) + int(self.header["offset_data"])

    def scale_vector(self, item: int, value: float) -> None:
        """Multiply an item's stored float32 vector by `value` in place."""
        dim = (int(self.header["label_offset"]) - int(self.header["offset_data"])) // 4
        start = self.vector(item)
        vector = np.frombuffer(bytes(self.data[start:start + 4 * dim]), "<f4") * np.float32(value)
        self.data[start:start + 4 * dim] = vector.astype("<f4").tobytes()

    def upper_list(self, item: int, level: int) -> int:
        """Byte offset of an item's link list at `level` >= 1 (its count word)."""
        return self.size_words[item] + 4 + (level - 1) * 4 * (1 + int(self.header["max_m"]))

    def put(self, offset: int, value: int, fmt: str = "<I") -> None:
        """Overwrite bytes at `offset`."""
        struct.pack_into(fmt, self.data, offset, value)

    def get(self, offset: int, fmt: str = "<I") -> int:
        """Read bytes at `offset`."""
        return struct.unpack_from(fmt, self.data, offset)[0]


def build_file(path: Path, count: int = N, dim: int = DIM, params: HnswParams = PARAMS, seed: int = 0) -> Path:
    """Save a real hnswlib index over random unit vectors."""
    VectorIndex.build(unit_vectors(count, dim, seed), params).save(path)
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    layout = Layout.parse(build_file(tmp_path_factory.mktemp("hnsw") / "index.hnsw").read_bytes())
    assert layout.header["maxlevel"] >= 1 and sum(lv > 0 for lv in layout.levels) >= 5  # patches need upper lists
    return layout


def assert_refused(path: Path, dim: int = DIM, count: int | None = N, params: HnswParams = PARAMS,
                   vectors: np.ndarray | None = None) -> str:
    """VectorIndex.load refuses `path` with one line that names only index.hnsw; returns the message."""
    with pytest.raises(CorruptIndexError) as caught:
        VectorIndex.load(path, dim, params, count=count, vectors=vectors)
    message = str(caught.value)
    assert "\n" not in message and "index.hnsw" in message
    assert str(path.parent) not in message and "/tmp" not in message and tempfile.gettempdir() not in message
    return message


# --- valid files ---------------------------------------------------------------------------------------------

def test_the_demo_index_passes_with_its_vectors() -> None:
    embeddings = np.load(DEMO_INDEX_DIR / "embeddings.npy")
    header = check_hnsw_file(DEMO_INDEX_DIR / "index.hnsw", 64, 300, 16, vectors=embeddings)
    assert (header.count, header.dim, header.max_m0) == (300, 64, 32)
    index = VectorIndex.load(DEMO_INDEX_DIR / "index.hnsw", 64, HnswParams(16, 200, 64), count=300)
    labels, scores = index.query(embeddings[42], 3)
    assert labels[0] == 42 and scores[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(("count", "dim", "m"), [(0, 8, 16), (1, 8, 2), (2, 4, 2), (60, 16, 2), (50, 16, 4),
                                                 (1000, 32, 16)])
def test_fresh_indexes_pass_and_answer_like_the_original(tmp_path: Path, count: int, dim: int, m: int) -> None:
    params = HnswParams(m, 50, 50)
    vectors = unit_vectors(count, dim, seed=count)
    # hnswlib's add_items fails on an empty batch, so the empty index is made empty.
    original = VectorIndex.build(vectors, params) if count else VectorIndex.create(dim, params, capacity=0)
    original.save(tmp_path / "index.hnsw")
    header = check_hnsw_file(tmp_path / "index.hnsw", dim, count, m, vectors=vectors)
    assert header.count == count
    loaded = VectorIndex.load(tmp_path / "index.hnsw", dim, params, count=count)
    assert len(loaded) == count
    for query in unit_vectors(5, dim, seed=99):
        np.testing.assert_array_equal(loaded.query(query, 10)[0], original.query(query, 10)[0])


def test_an_index_grown_by_several_adds_passes(tmp_path: Path) -> None:
    index = VectorIndex.create(8, PARAMS, capacity=3)  # add doubles the capacity: max_elements > count
    for start in range(0, 100, 7):
        index.add(unit_vectors(7, 8, seed=start), np.arange(start, start + 7))
    index.save(tmp_path / "index.hnsw")
    assert Layout.parse((tmp_path / "index.hnsw").read_bytes()).header["max_elements"] > 105
    assert len(VectorIndex.load(tmp_path / "index.hnsw", 8, PARAMS, count=105)) == 105


def test_stored_vectors_must_be_the_bundles_rows(tmp_path: Path) -> None:
    path = build_file(tmp_path / "index.hnsw")
    vectors = unit_vectors(N, DIM, 0)
    check_hnsw_file(path, DIM, N, M, vectors=vectors * 3)  # scale does not matter (cosine)
    edited = vectors.copy()
    edited[123, 5] += 1e-3  # one coordinate of one row: a full comparison sees it
    with pytest.raises(CorruptIndexError, match="differ from embeddings.npy"):
        check_hnsw_file(path, DIM, N, M, vectors=edited)
    nan = vectors.copy()
    nan[7] = np.nan
    with pytest.raises(CorruptIndexError, match="differ from embeddings.npy"):
        check_hnsw_file(path, DIM, N, M, vectors=nan)


def test_load_compares_a_sample_of_rows_and_refuses_a_graph_of_other_embeddings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_file(tmp_path / "index.hnsw")
    monkeypatch.setattr("search.bundle.hnsw_index.VECTOR_SAMPLE", 30)  # 300 rows: records 0, 10, 20, ... are compared
    rows = unit_vectors(N, DIM, 0)
    assert len(VectorIndex.load(path, DIM, PARAMS, count=N, vectors=rows)) == N
    assert "differ from embeddings.npy" in assert_refused(path, vectors=unit_vectors(N, DIM, 1))
    labels = Layout.parse(path.read_bytes()).labels()
    off_stride, on_stride = rows.copy(), rows.copy()
    off_stride[labels[11]] *= -1
    on_stride[labels[10]] *= -1
    assert len(VectorIndex.load(path, DIM, PARAMS, count=N, vectors=off_stride)) == N  # a sample, not a proof
    assert "differ from embeddings.npy" in assert_refused(path, vectors=on_stride)


# --- targeted patches ----------------------------------------------------------------------------------------

def upper_owner(layout: Layout, level: int = 1) -> int:
    """An item with a non-empty link list at `level`."""
    return next(i for i, lv in enumerate(layout.levels) if lv >= level and layout.get(layout.upper_list(i, level)))


def every_level0_id_huge(layout: Layout) -> None:
    for item in range(N):
        for slot in range(layout.get(layout.record(item)) & 0xFFFF):
            layout.put(layout.link_id(item, slot), 0x7FFFFFF0)


def upper_link_to_a_ground_item(layout: Layout) -> None:
    layout.put(layout.upper_list(upper_owner(layout), 1) + 4, layout.levels.index(0))


def raise_a_level(layout: Layout) -> None:
    item = layout.levels.index(1)
    layout.put(layout.size_words[item], 2 * 4 * (1 + M))  # claims two levels, the file holds one


def truncate(keep: Callable[[Layout], int]) -> Callable[[Layout], None]:
    def patch(layout: Layout) -> None:
        del layout.data[keep(layout):]
    return patch


PATCHES: dict[str, Callable[[Layout], None]] = {
    "entry point far out": lambda lay: lay.set_field("entry_point", 0x7FFFFFF0),
    "entry point = count": lambda lay: lay.set_field("entry_point", N),
    "entry point below the top level": lambda lay: lay.set_field("entry_point", lay.levels.index(0)),
    "every level-0 neighbour id huge": every_level0_id_huge,
    "one level-0 neighbour id = count": lambda lay: lay.put(lay.link_id(7, 0), N),
    "level-0 link count 0xFFFF": lambda lay: lay.put(lay.record(3), 0xFFFF),
    "level-0 link count maxM0 + 1": lambda lay: lay.put(lay.record(3), 2 * M + 1),
    "deleted mark": lambda lay: lay.put(lay.record(5) + 2, 1, "<B"),
    "maxlevel above the top": lambda lay: lay.set_field("maxlevel", lay.header["maxlevel"] + 1),
    "maxlevel below the top": lambda lay: lay.set_field("maxlevel", lay.header["maxlevel"] - 1),
    "maxlevel negative": lambda lay: lay.set_field("maxlevel", -1),
    "maxlevel huge": lambda lay: lay.set_field("maxlevel", 2**31 - 1),
    "upper link count above maxM": lambda lay: lay.put(lay.upper_list(upper_owner(lay), 1), M + 1),
    "upper neighbour id out of range": lambda lay: lay.put(lay.upper_list(upper_owner(lay), 1) + 4, 2**31),
    "upper link to an item without that level": upper_link_to_a_ground_item,
    "element level not whole": lambda lay: lay.put(lay.size_words[lay.levels.index(1)], 4 * (1 + M) + 4),
    "element level raised": raise_a_level,
    "label out of range": lambda lay: lay.put(lay.label(9), N, "<Q"),
    "label huge": lambda lay: lay.put(lay.label(9), 2**63, "<Q"),
    "label duplicated": lambda lay: lay.put(lay.label(1), lay.get(lay.label(0), "<Q"), "<Q"),
    "record size of another dim": lambda lay: lay.set_field("size_per_element", lay.header["size_per_element"] + 4),
    "vector offset shifted": lambda lay: lay.set_field("offset_data", lay.header["offset_data"] + 4),
    "truncated header": truncate(lambda lay: 50),
    "truncated after the header": truncate(lambda lay: 96),
    "truncated in level 0": truncate(lambda lay: lay.record(N // 2) + 5),
    "truncated in the upper lists": truncate(lambda lay: lay.upper_list(upper_owner(lay), 1) + 8),
    "truncated by 1 byte": truncate(lambda lay: len(lay.data) - 1),
    "truncated by 4 bytes": truncate(lambda lay: len(lay.data) - 4),
    "1 byte appended": lambda lay: lay.data.extend(b"\x00"),
    "4 zero bytes appended": lambda lay: lay.data.extend(bytes(4)),
    "4 KiB appended": lambda lay: lay.data.extend(os.urandom(4096)),
    "huge max_elements": lambda lay: lay.set_field("max_elements", 2**60),
    "max_elements below count": lambda lay: lay.set_field("max_elements", N - 1),
    "huge cur_element_count": lambda lay: lay.set_field("count", 2**40),
    "cur_element_count + 1": lambda lay: lay.set_field("count", N + 1),
    "cur_element_count - 1": lambda lay: lay.set_field("count", N - 1),
    "M of another graph": lambda lay: lay.set_field("m", M + 1),
    "maxM0 too large": lambda lay: lay.set_field("max_m0", 4 * M),
    "mult NaN": lambda lay: lay.set_field("mult", float("nan")),
    "mult huge": lambda lay: lay.set_field("mult", 1e300),
    "ef_construction 0": lambda lay: lay.set_field("ef_construction", 0),
    "ef_construction huge": lambda lay: lay.set_field("ef_construction", 2**62),
    "a stored vector scaled by 1e6": lambda lay: lay.scale_vector(N - 1, 1e6),
    "a stored vector scaled by 1.01": lambda lay: lay.scale_vector(1, 1.01),
    "a stored vector zero": lambda lay: lay.scale_vector(2, 0.0),
    "a stored vector NaN": lambda lay: lay.scale_vector(3, np.nan),
    "a stored vector infinite": lambda lay: lay.scale_vector(4, np.inf),
    "a stored vector overflowing when squared": lambda lay: lay.scale_vector(5, 1e30),
    "one stored coordinate NaN": lambda lay: lay.put(lay.vector(6) + 4, 0x7FC00000),
}


@pytest.mark.parametrize("name", sorted(PATCHES))
def test_each_targeted_patch_is_refused_with_one_line(tmp_path: Path, base: Layout, name: str) -> None:
    layout = Layout(bytearray(base.data), dict(base.header), list(base.levels), list(base.size_words))
    PATCHES[name](layout)
    assert layout.data != base.data
    (tmp_path / "index.hnsw").write_bytes(layout.data)
    assert_refused(tmp_path / "index.hnsw")


def test_every_stored_vector_must_be_a_finite_unit_vector_not_only_the_sampled_ones(tmp_path: Path,
                                                                                    base: Layout) -> None:
    # The published attack: every odd record x1e6 ranked those items first with scores ~383 000; the 1 024-row
    # sample of VectorIndex.load compared only even records. The unit check covers every record, with no vectors.
    layout = Layout(bytearray(base.data), dict(base.header), list(base.levels), list(base.size_words))
    for item in range(1, N, 2):
        layout.scale_vector(item, 1e6)
    (tmp_path / "index.hnsw").write_bytes(layout.data)
    labels = layout.labels()
    message = assert_refused(tmp_path / "index.hnsw")
    assert f"the stored vector of item {labels[1]} is not a finite unit vector: norm 1e+06" in message
    with pytest.raises(CorruptIndexError, match="not a finite unit vector"):
        check_hnsw_file(tmp_path / "index.hnsw", DIM, N, M)  # the structural check itself, without embeddings


def test_a_norm_within_the_tolerance_loads_and_its_scores_stay_within_minus_one_and_one(tmp_path: Path,
                                                                                     base: Layout) -> None:
    layout = Layout(bytearray(base.data), dict(base.header), list(base.levels), list(base.size_words))
    for item in range(N):  # 1 +- 9e-4: inside UNIT_TOLERANCE (1e-3), so the last guard is to_scores' clip
        layout.scale_vector(item, 1 + 9e-4 * (-1) ** item)
    (tmp_path / "index.hnsw").write_bytes(layout.data)
    index = VectorIndex.load(tmp_path / "index.hnsw", DIM, PARAMS, count=N)
    stored = hnswlib.Index(space="cosine", dim=DIM)
    stored.load_index(str(tmp_path / "index.hnsw"))
    scores = []
    for item in range(0, 20, 2):  # the stretched records, queried with themselves: raw similarity ~1.0009
        vector = stored.get_items([layout.labels()[item]], return_type="numpy")[0]
        assert float(1 - stored.knn_query(vector, k=1)[1][0, 0]) > 1.0005
        scores.extend(index.query(vector, 5)[1])
    assert all(-1.0 <= score <= 1.0 for score in scores) and max(scores) == 1.0
    assert all(score == round(score, 6) for score in scores)


def test_to_scores_clips_to_the_cosine_range_and_keeps_six_decimals() -> None:
    scores = to_scores(np.array([-383_000.0, -1e-3, 0.0, 0.1234567, 1.0, 2.0, 2.5, 1e9], np.float32))
    np.testing.assert_array_equal(scores, [1.0, 1.0, 1.0, 0.876543, 0.0, -1.0, -1.0, -1.0])


def test_an_index_of_another_dim_is_refused(tmp_path: Path) -> None:
    path = build_file(tmp_path / "index.hnsw", dim=16)
    assert "dim 16, expected 64" in assert_refused(path, dim=64)


def test_a_count_other_than_the_manifests_is_refused(tmp_path: Path) -> None:
    path = build_file(tmp_path / "index.hnsw")
    assert f"{N} items, the manifest says {N + 1}" in assert_refused(path, count=N + 1)
    assert "M=8, the manifest says M=16" in assert_refused(path, params=HnswParams(16, 100, 32))


def test_an_unreadable_or_missing_file_is_one_line(tmp_path: Path) -> None:
    assert "cannot be read" in assert_refused(tmp_path / "index.hnsw")
    (tmp_path / "index.hnsw").mkdir()
    assert "cannot be read" in assert_refused(tmp_path / "index.hnsw")


def test_hnswlibs_own_load_errors_become_the_same_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 base: Layout) -> None:
    # A file the check has not seen (as if it changed in between): hnswlib's RuntimeError is mapped, not raised.
    path = tmp_path / "index.hnsw"
    path.write_bytes(base.data[:-3])
    monkeypatch.setattr("search.bundle.hnsw_index.check_hnsw_file",
                        lambda *args, **kwargs: HnswHeader(N, DIM, M, 2 * M, 0, 0, 0))
    assert "Index seems to be corrupted" in assert_refused(path)


# --- fuzz ----------------------------------------------------------------------------------------------------

INTERESTING = (0, 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1)


def mutate(layout: Layout, rng: np.random.Generator, kind: int) -> str:
    """Apply one random mutation of `kind` in place; returns what it did (enough to reproduce it by hand)."""
    count, size = int(layout.header["count"]), len(layout.data)
    if kind == 0:  # bit flips anywhere
        bits = rng.integers(0, 8 * size, rng.integers(1, 5)).tolist()
    elif kind == 1:  # bit flips in the structure (header, link words and ids, labels, upper lists)
        spots = [rng.integers(0, 96), layout.record(int(rng.integers(count))) + int(rng.integers(0, 4 + 8 * M)),
                 layout.label(int(rng.integers(count))) + int(rng.integers(0, 8)),
                 int(rng.integers(layout.size_words[0], size))]
        bits = [8 * int(rng.choice(spots)) + int(rng.integers(8)) for _ in range(rng.integers(1, 4))]
    else:
        return patch_value(layout, rng, kind)
    for bit in bits:
        layout.data[bit // 8] ^= 1 << (bit % 8)
    return f"flip bits {bits}"


def patch_value(layout: Layout, rng: np.random.Generator, kind: int) -> str:
    """A header field, level-0 link or upper-level link set to an edge value or a random one."""
    count = int(layout.header["count"])
    near = [count - 1, count, count + 1, int(rng.integers(0, count)), int(rng.integers(0, 2**32))]
    value = int(rng.choice([*INTERESTING, *near]))
    if kind == 2:
        name = str(rng.choice([f for f in FIELDS if f != "mult"]))
        if name in ("maxlevel", "entry_point"):
            value = int(rng.choice([-1, 0, 1, layout.header["maxlevel"] + 1, *near]))
        layout.set_field(name, value)
        return f"header {name} = {layout.header[name]}"
    value %= 2**32
    owners = [i for i, lv in enumerate(layout.levels) if lv]
    if kind == 3:
        item, slot = int(rng.integers(count)), int(rng.integers(-1, 2 * M))
        offset = layout.record(item) if slot < 0 else layout.link_id(item, slot)
    elif rng.random() < 0.2:
        item = int(rng.choice(owners))
        offset, value = layout.size_words[item], int(rng.integers(0, 4)) * 4 * (1 + M) + int(rng.choice([0, 4]))
    else:
        item = int(rng.choice(owners))
        value = int(rng.choice([value, int(rng.integers(0, count)), int(rng.choice(owners))]))
        level, slot = int(rng.integers(1, layout.levels[item] + 1)), int(rng.integers(0, M + 1))
        offset = layout.upper_list(item, level) + 4 * slot
    layout.put(offset, value)
    return f"u32 at byte {offset} = {value}"


def fuzz_worker(base_path: Path, seed: int, mutants: int, checked: bool) -> None:
    """Child process: mutate, load and query each mutant, one JSON line per step (a 'start' line first)."""
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a huge allocation fails instead of swapping
    base = base_path.read_bytes()
    queries = unit_vectors(4, DIM, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.hnsw"
        for number in range(mutants):
            layout = Layout.parse(base)
            what = mutate(layout, np.random.default_rng([seed, number]), number % 5)
            path.write_bytes(layout.data)
            name = f"mutant {number} (seed {seed}, kind {number % 5}): {what}"
            print(json.dumps({"mutant": name, "outcome": "start"}), flush=True)
            print(json.dumps({"mutant": name, **load_and_query(path, queries, checked)}), flush=True)


def load_and_query(path: Path, queries: np.ndarray, checked: bool) -> dict[str, str]:
    """'refused', 'ok' (loaded and every query answered with labels in range) or 'error' with the reason."""
    try:
        if checked:
            index = VectorIndex.load(path, DIM, PARAMS, count=N)
        else:  # the old, unchecked load: shows that the mutants do include crashers
            raw = hnswlib.Index(space="cosine", dim=DIM)
            raw.load_index(str(path))
            index = VectorIndex(raw, PARAMS)
    except CorruptIndexError as exc:
        return {"outcome": "refused", "detail": str(exc)}
    except (RuntimeError, MemoryError, ValueError) as exc:
        return {"outcome": "refused" if not checked else "error", "detail": repr(exc)}
    try:
        for query in queries:
            for k in (1, 10, N):
                labels, _ = index.query(query, k)
                if not np.all((labels >= 0) & (labels < N)):
                    return {"outcome": "error", "detail": f"label out of range in {labels.tolist()}"}
    except Exception as exc:  # the parent reports any Python error as a failure, with its text
        return {"outcome": "error", "detail": repr(exc)}
    return {"outcome": "ok"}


@dataclass
class FuzzResult:
    outcomes: dict[str, list[str]]  # outcome -> mutant names
    crashed: str | None  # the mutant that was running when the child died, with how it died


def run_fuzz(base_path: Path, seed: int, mutants: int, checked: bool = True, timeout: float = 240) -> FuzzResult:
    """Run the child on `mutants` mutants of `base_path`; a signal or timeout is reported with the running mutant."""
    command = [sys.executable, "-m", "tests.test_hnsw_check", str(base_path), str(seed), str(mutants),
               "checked" if checked else "unchecked"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    try:
        done = subprocess.run(command, check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        stdout, died = done.stdout, (f"signal {-done.returncode}" if done.returncode < 0 else
                                     f"exit {done.returncode}: {done.stderr[-300:]}" if done.returncode else None)
    except subprocess.TimeoutExpired as exc:
        stdout, died = (exc.stdout or b"").decode(), f"timeout after {timeout} s"
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    outcomes: dict[str, list[str]] = {}
    for line in lines:
        if line["outcome"] != "start":
            outcomes.setdefault(line["outcome"], []).append(line["mutant"])
    crashed = f"{lines[-1]['mutant'] if lines else 'before the first mutant'}: {died}" if died else None
    return FuzzResult(outcomes, crashed)


def fuzz_base(tmp_path: Path) -> Path:
    path = build_file(tmp_path / "base.hnsw")
    assert Layout.parse(path.read_bytes()).header["maxlevel"] >= 1
    return path


def assert_fuzz_is_safe(result: FuzzResult, mutants: int) -> None:
    counts = {outcome: len(names) for outcome, names in result.outcomes.items()}
    print(f"hnsw fuzz: {mutants} mutants, {counts}, crash: {result.crashed}")
    assert result.crashed is None, result.crashed
    assert not result.outcomes.get("error"), result.outcomes.get("error", [])[:5]
    assert counts.get("refused", 0) + counts.get("ok", 0) == mutants
    # Both branches are exercised: many mutants are refused, and harmless ones (vector bits, in-range links) load.
    assert counts.get("refused", 0) >= mutants // 4 and counts.get("ok", 0) >= mutants // 10


def test_fuzzed_index_files_are_refused_or_served_never_crash(tmp_path: Path) -> None:
    base = fuzz_base(tmp_path)
    assert_fuzz_is_safe(run_fuzz(base, seed=2024, mutants=SUITE_MUTANTS), SUITE_MUTANTS)
    # The same mutants without the check kill the child, and the harness names the one that did.
    unchecked = run_fuzz(base, seed=2024, mutants=SUITE_MUTANTS, checked=False)
    assert unchecked.crashed is not None and unchecked.crashed.startswith("mutant ")


@pytest.mark.fuzz
def test_long_fuzz(tmp_path: Path) -> None:
    assert_fuzz_is_safe(run_fuzz(fuzz_base(tmp_path), seed=7, mutants=LONG_MUTANTS, timeout=1800), LONG_MUTANTS)


if __name__ == "__main__":
    fuzz_worker(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "checked")
