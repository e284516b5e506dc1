"""Qdrant backend: a bundle loaded into qdrant-client's embedded mode answers like the hnswlib index, and a
collection or server that does not hold the bundle, or answers outside the contract, is refused."""

from __future__ import annotations

import ast
import json
import math
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from qdrant_client import QdrantClient, models

from bench.common import clip_like_queries, clip_like_vectors, synthetic_metadata
from search import cli
from search.build.qdrant_load import main
from search.bundle.hnsw_index import to_scores
from search.bundle.metadata import ItemCatalog
from search.bundle.store import Bundle, BundleContents, BundleInfo, write_bundle
from search.config import REPO_ROOT, EncoderSpec, EngineConfig, HnswParams
from search.errors import BadQueryError, SearchError
from search.query.engine import load_engine
from search.query.options import Filters, SearchOptions
from search.query.qdrant_index import (
    FORMAT_KEY,
    LoadOptions,
    QdrantIndex,
    QdrantIndexError,
    QdrantSearch,
    checked_answer,
    connect,
    load_collection,
    load_qdrant_bundle,
)
from search.query.qdrant_payload import payload_filter
from search.query.retrieval import Retriever
from tests.conftest import metadata_table, unit_vectors


def loaded(root: Path, name: str = "items", options: LoadOptions | None = None,
           client: QdrantClient | None = None) -> tuple[QdrantClient, BundleContents]:
    """The bundle at `root` loaded into an embedded in-memory collection."""
    client = client or QdrantClient(location=":memory:")
    contents = BundleContents.load(root)
    load_collection(client, name, contents, options)
    return client, contents


def exact(contents: BundleContents, query: np.ndarray, k: int, rows: np.ndarray | None = None
          ) -> tuple[list[int], np.ndarray]:
    """Exact top-k rows (optionally among `rows`) and their rounded scores."""
    rows = np.arange(contents.manifest.count) if rows is None else rows
    similarity = contents.embeddings[rows] @ query
    order = np.argsort(-similarity, kind="stable")[:k]
    return rows[order].tolist(), to_scores(1.0 - similarity[order].astype(np.float64))


def test_answers_are_exact_search_with_the_index_score_rules(make_bundle: Callable[..., Path]) -> None:
    client, contents = loaded(make_bundle(count=120, dim=16))
    index = QdrantIndex.open(client, "items", contents)
    assert (len(index), index.dim) == (120, 16)
    for query in unit_vectors(5, 16, seed=7):
        labels, scores = index.query(query, 10)
        want_labels, want_scores = exact(contents, query, 10)
        assert labels.tolist() == want_labels
        assert labels.dtype == np.int64 and scores.dtype == np.float64
        np.testing.assert_allclose(scores, want_scores, atol=1.01e-6)
        assert np.array_equal(np.round(scores, 6), scores)  # 6 decimals, as to_scores gives
    assert len(index.query(unit_vectors(1, 16)[0], 500)[0]) == 120  # k clamped to the count
    assert len(index.query(unit_vectors(1, 16)[0], 0)[0]) == 0


def test_app_and_cli_serve_the_demo_from_qdrant_with_the_same_hits(demo_engine,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = EngineConfig(qdrant_url=":memory:", qdrant_collection="demo", onnx_text=False)
    engine = load_engine(config)  # embedded mode, filled from the bundle's own vectors
    assert isinstance(engine.bundle.index, QdrantIndex)
    for got, want in [(engine.search_text("a red circle", 8), demo_engine.search_text("a red circle", 8)),
                      (engine.similar("shape-010", 5, 0.5), demo_engine.similar("shape-010", 5, 0.5))]:
        assert [hit.id for hit in got] == [hit.id for hit in want]
        assert all(abs(a.score - b.score) <= 1.01e-6 for a, b in zip(got, want, strict=True))
    assert cli.main(["a red circle", "--top-k", "3", "--json", "--qdrant", ":memory:", "--collection", "demo"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [hit["id"] for hit in hits] == [hit.id for hit in demo_engine.search_text("a red circle", 3)]


def _other_bundle(make_bundle: Callable[..., Path]) -> Path:
    return make_bundle(count=61, dim=16, name="other")  # other vectors: the same seed gives the same 60 rows


def _drop_a_point(client: QdrantClient) -> None:
    client.delete("items", points_selector=models.PointIdsList(points=[59]))


def _move_a_vector(client: QdrantClient) -> None:
    client.upsert("items", [models.PointStruct(id=0, vector=unit_vectors(1, 16, seed=99)[0].tolist(),
                                                payload={"id": "item-0000"})])


def _swap_an_id(client: QdrantClient) -> None:
    client.set_payload("items", {"id": "item-0001"}, points=[0])


def _old_payload_format(client: QdrantClient) -> None:
    info = client.get_collection("items")
    client.delete_collection("items")
    client.create_collection("items", vectors_config=models.VectorParams(size=16, distance=models.Distance.COSINE),
                             metadata={**(info.config.metadata or {}), FORMAT_KEY: 1})


def _wrong_size(client: QdrantClient) -> None:
    info = client.get_collection("items")
    client.delete_collection("items")
    client.create_collection("items", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                             metadata=info.config.metadata)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda client: client.delete_collection("items"), "there is no Qdrant collection items"),
    (_wrong_size, "one 16-d Cosine vector per point"),
    (_old_payload_format, "loaded by an older version, without the filter fields"),
    (_drop_a_point, "holds 59 points, the bundle 60"),
    (_move_a_vector, "point 0 differs from the bundle's row 0"),
    (_swap_an_id, "point 0 differs"),
])
def test_a_collection_that_does_not_hold_the_bundle_is_refused(make_bundle: Callable[..., Path], tamper,
                                                                message: str) -> None:
    client, contents = loaded(make_bundle(count=60, dim=16))
    tamper(client)
    with pytest.raises(QdrantIndexError, match=message) as error:
        QdrantIndex.open(client, "items", contents)
    assert "\n" not in str(error.value)


def test_a_collection_loaded_from_another_bundle_is_refused(make_bundle: Callable[..., Path]) -> None:
    client, _ = loaded(_other_bundle(make_bundle))
    contents = BundleContents.load(make_bundle(count=60, dim=16))
    with pytest.raises(QdrantIndexError, match="loaded from another bundle.*--recreate"):
        QdrantIndex.open(client, "items", contents)


class ScriptedServer:
    """A stand-in client whose query_points answers with given (id, score) pairs."""

    def __init__(self, answer: list[tuple[object, object]]) -> None:
        self.answer = answer
        self.init_options = {"url": "http://qdrant.example:6333"}

    def query_points(self, *_args: object, **kwargs: object) -> SimpleNamespace:
        self.asked = kwargs
        return SimpleNamespace(points=[SimpleNamespace(id=row, score=score) for row, score in self.answer])


@pytest.mark.parametrize(("answer", "message"), [
    ([(50, 0.5)], "point id '50', not a row"),
    ([(-1, 0.5)], "point id '-1'"),
    ([(True, 0.5)], "point id 'True'"),
    ([("0b7e4a54-5ac6-4b3e-9d7f-6d1c5e2a9f10", 0.5)], "not a row of this bundle"),
    ([(1, 0.5), (1, 0.4)], "same point twice"),
    ([(1, math.nan)], "score nan"),
    ([(1, 1.5)], "score 1.5"),
    ([(1, -math.inf)], "score -inf"),
    ([(1, "0.5")], "score 0.5"),
    ([(row, 0.1) for row in range(6)], "answered 6 points for k=5"),
])
def test_an_answer_outside_the_contract_is_refused(answer: list[tuple[object, object]], message: str) -> None:
    index = QdrantIndex(ScriptedServer(answer), "items", count=50, dim=4)  # type: ignore[arg-type]
    with pytest.raises(QdrantIndexError, match=message) as error:
        index.query(np.ones(4, np.float32) / 2, 5)
    assert "\n" not in str(error.value)


def test_a_server_is_searched_at_the_given_ef_with_int8_rescoring() -> None:
    server = ScriptedServer([(2, 0.5)])
    index = QdrantIndex(server, "items", count=50, dim=4, search=QdrantSearch(hnsw_ef=32))  # type: ignore[arg-type]
    assert index.query(np.ones(4, np.float32) / 2, 5)[0].tolist() == [2]
    params = server.asked["search_params"]
    assert params.hnsw_ef == 32 and params.quantization.rescore and params.quantization.oversampling == 2.0
    assert server.asked["limit"] == 5 and server.asked["with_vectors"] is False


def test_a_valid_answer_comes_back_sorted_and_rounded() -> None:
    labels, scores = checked_answer([SimpleNamespace(id=3, score=0.25), SimpleNamespace(id=7, score=1.0000001),
                                     SimpleNamespace(id=1, score=-0.1234567)], k=5, count=10, collection="c")
    assert labels.tolist() == [7, 3, 1]
    assert scores.tolist() == [1.0, 0.25, -0.123457]


def test_int8_option_and_an_existing_collection(make_bundle: Callable[..., Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bundle(count=40, dim=16)
    client = QdrantClient(location=":memory:")
    created: list[dict] = []
    create = client.create_collection
    client.create_collection = lambda *args, **kwargs: created.append(kwargs) or create(*args, **kwargs)  # type: ignore[method-assign]
    client, contents = loaded(root, options=LoadOptions(int8=True), client=client)
    quantization = created[0]["quantization_config"]  # embedded mode accepts it but does not report it back
    assert isinstance(quantization, models.ScalarQuantization)
    assert quantization.scalar.type == models.ScalarType.INT8 and quantization.scalar.always_ram
    assert created[0]["vectors_config"].on_disk  # full vectors on disk, read only to rescore
    with pytest.raises(QdrantIndexError, match="exists already; pass --recreate"):
        load_collection(client, "items", contents)
    assert load_collection(client, "items", contents, LoadOptions(recreate=True)) == 40
    assert created[1]["quantization_config"] is None
    QdrantIndex.open(client, "items", contents)  # the recreated collection is complete
    assert main([str(root), "--qdrant", ":memory:", "--collection", "c"]) == 1
    assert capsys.readouterr().err.strip() == "error: --qdrant :memory: keeps nothing once this command ends; give " \
        "a Qdrant server URL (the app and `python -m search` load a bundle into :memory: themselves)"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_server_or_a_bad_url_is_one_line(make_bundle: Callable[..., Path]) -> None:
    root = make_bundle(count=10, dim=16)
    config = EngineConfig(index=str(root), qdrant_url=f"http://127.0.0.1:{_closed_port()}", qdrant_collection="c")
    with pytest.raises(QdrantIndexError, match="check the --qdrant URL and that the server is up") as error:
        load_qdrant_bundle(root, config)
    assert "\n" not in str(error.value)
    with pytest.raises(QdrantIndexError, match="not a server URL"):
        connect("ftp://qdrant.example")
    with pytest.raises(QdrantIndexError, match="needs both a URL"):
        load_qdrant_bundle(root, EngineConfig(index=str(root), qdrant_url=":memory:"))


def test_configuration_from_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEARCH_QDRANT_URL", "http://qdrant.example:6333")
    monkeypatch.setenv("SEARCH_QDRANT_COLLECTION", "photos")
    monkeypatch.setenv("QDRANT_API_KEY", "secret-key")
    config = EngineConfig.from_env()
    assert (config.qdrant_url, config.qdrant_collection, config.qdrant_api_key) == \
        ("http://qdrant.example:6333", "photos", "secret-key")
    assert "secret-key" not in repr(config)
    args = cli.build_parser().parse_args(["q", "--qdrant", ":memory:", "--collection", "c"])
    assert (args.qdrant, args.collection) == (":memory:", "c")
    assert EngineConfig().qdrant_url is None  # the default stays the in-process hnswlib index


def test_without_qdrant_client_the_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "search.query.qdrant_index")
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(SearchError, match="needs the qdrant_client package: pip install -r requirements-scale.txt"):
        load_engine(EngineConfig(qdrant_url="http://qdrant.example:6333", qdrant_collection="c"))


def test_the_engine_and_cli_import_qdrant_only_when_asked() -> None:
    # Checked on the source: importing search.query.engine in a subprocess costs torch's import (~10-30 s on 2 cores).
    for name in ("query/engine", "cli", "config"):
        tree = ast.parse((REPO_ROOT / "search" / f"{name}.py").read_text())
        top = [node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)]
        names = [alias.name for node in top for alias in node.names] + \
            [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
        assert "search.errors" in names or name == "config"  # the probe sees the real imports
        assert not [module for module in names if "qdrant" in module]


def test_app_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import parse_args

    monkeypatch.setenv("SEARCH_QDRANT_URL", "http://from-env:6333")
    monkeypatch.setenv("SEARCH_QDRANT_COLLECTION", "env-photos")
    assert (parse_args([]).qdrant_url, parse_args([]).qdrant_collection) == ("http://from-env:6333", "env-photos")
    config = parse_args(["--qdrant", "http://q.example:6333", "--collection", "photos"])
    assert (config.qdrant_url, config.qdrant_collection) == ("http://q.example:6333", "photos")


def test_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import qdrant

    qdrant.main(["--n", "2000", "--dim", "64", "--queries", "10", "--rounds", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recalls = {name: path["recall_at_10"] for name, path in result["results"].items()}
    assert set(recalls) == {"hnswlib", "qdrant-edge f32", "qdrant-edge int8+rescore", "qdrant-edge int8",
                            "qdrant-embedded"}
    assert recalls["qdrant-embedded"] == 1.0  # an exact scan through QdrantIndex
    assert min(recalls["hnswlib"], recalls["qdrant-edge f32"], recalls["qdrant-edge int8+rescore"]) >= 0.9


FILTERED_COUNT = 1500


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One bundle with the filter columns behind two Retrievers: hnswlib (ef_search > count: exact) and Qdrant."""
    count = FILTERED_COUNT
    table = synthetic_metadata(count)
    width = table.column("width").to_numpy() + np.where(np.arange(count) % 7 == 0, 100, 0)  # 3100x3000: square
    table = table.set_column(table.column_names.index("width"), "width", pa.array(width))
    table = table.append_column("camera_model", pa.array([("EOS R5", None, "Z 6")[row % 3] for row in range(count)]))
    words = [("EXIT", "", None, None)[row % 4] for row in range(count)]  # OCR: words, none found, not read
    table = table.append_column("words_in_picture", pa.array(words, pa.string()))
    for name, every in (("country", 11), ("date", 13)):  # some items without a place or a date, as real photos
        column = [None if row % every == 0 else value for row, value in enumerate(table.column(name).to_pylist())]
        table = table.set_column(table.column_names.index(name), name, pa.array(column, pa.string()))
    table = table.set_column(table.column_names.index("description"), "description", pa.array(
        ["harbour boats in Reykjavik" if row % 40 == 0 else f"synthetic picture {row}" for row in range(count)]))
    info = BundleInfo(EncoderSpec("ViT-B-32", None), HnswParams(m=16, ef_construction=100, ef_search=2048),
                      source="unit-test")
    root = tmp_path_factory.mktemp("filtered") / "b"
    write_bundle(root, clip_like_vectors(count, 32, seed=5), table, info)
    hnsw = Bundle.load(root)
    client, contents = loaded(root)
    qdrant = QdrantIndex.open(client, "items", contents)
    asked: list[object] = []
    query_points = client.query_points
    client.query_points = lambda *a, **kw: asked.append(kw["query_filter"]) or query_points(*a, **kw)  # type: ignore[method-assign]
    return SimpleNamespace(
        client=client, asked=asked, attributes=hnsw.catalog.attributes, queries=clip_like_queries(hnsw.embeddings, 3),
        hnsw=Retriever(hnsw.index, hnsw.embeddings, hnsw.catalog, keywords=hnsw.keywords),
        qdrant=Retriever(qdrant, contents.embeddings, contents.catalog, keywords=hnsw.keywords))


FILTER_KINDS = [
    Filters(orientation="landscape"), Filters(orientation="portrait"), Filters(orientation="square"),
    Filters(colour="blue"), Filters(colour="red"),
    Filters(date_from=1.5e9, date_to=1.6e9), Filters(date_to=1.45e9),
    Filters(country="COUNTRY-003"), Filters(city="city-000"),
    Filters(camera="on"), Filters(camera="canon eos"), Filters(camera="NIKON Z"),
    Filters(photographer="USER0042"),
    Filters(featured=True), Filters(featured=False), Filters(min_downloads=400),
    Filters(orientation="landscape", colour="blue", featured=False, min_downloads=50, country="country-000"),
    Filters(photographer="nobody"),
    Filters(has_text=True), Filters(has_text=False, colour="blue"),
    Filters(country="country-003", or_unknown=("country",)),  # a query's readings: unknowns kept (understand.py)
    Filters(date_from=1.5e9, date_to=1.6e9, orientation="portrait", or_unknown=("date_from", "date_to")),
]


@pytest.mark.parametrize("filters", FILTER_KINDS, ids=repr)
def test_each_filter_keeps_the_mask_rows_in_qdrant_and_ranks_them_exactly(twins: SimpleNamespace,
                                                                          filters: Filters) -> None:
    mask = filters.mask(twins.attributes)
    assert mask.sum() < FILTERED_COUNT
    where = payload_filter(filters, twins.attributes)
    points, _ = twins.client.scroll("items", scroll_filter=where, limit=FILTERED_COUNT + 1)
    assert sorted(point.id for point in points) == np.flatnonzero(mask).tolist()  # the same items, not similar
    options = SearchOptions(filters=filters)
    for query in twins.queries:
        twins.asked.clear()
        got = twins.qdrant.ranked(query, 10, -1.0, options)
        want_rows, want_scores = twins.hnsw.exact(query, 10, np.flatnonzero(mask))
        assert got.rows.tolist() == want_rows.tolist() == twins.hnsw.ranked(query, 10, -1.0, options).rows.tolist()
        np.testing.assert_allclose(got.scores, want_scores, atol=1.01e-6)
        assert twins.asked == ([where] if mask.any() else [])  # answered by Qdrant's payload filter, once


def test_sort_collapse_pages_cutoff_and_keyword_fusion_work_unchanged_on_qdrant(twins: SimpleNamespace) -> None:
    filters = Filters(orientation="landscape")
    cases = [(SearchOptions(sort="date"), None), (SearchOptions(sort="popularity", filters=filters), None),
             (SearchOptions(collapse_radius=0.05), None), (SearchOptions(offset=10, filters=filters), None),
             (SearchOptions(cutoff="gap"), None), (SearchOptions(cutoff="relative", filters=filters), None),
             (SearchOptions(filters=filters), "reykjavik harbour"), (SearchOptions(sort="date"), "reykjavik")]
    for options, text in cases:
        for query in twins.queries:
            got, want = (side.ranked(query, 10, 0.0, options, text=text) for side in (twins.qdrant, twins.hnsw))
            assert got.rows.tolist() == want.rows.tolist(), (options, text)
            np.testing.assert_allclose(got.scores, want.scores, atol=1.01e-6)  # float32 sums differ in the 7th digit
            assert got.duplicates.tolist() == want.duplicates.tolist()
    fused = twins.qdrant.ranked(twins.queries[0], 10, 0.0, SearchOptions(filters=filters), text="reykjavik harbour")
    plain = twins.qdrant.ranked(twins.queries[0], 10, 0.0, SearchOptions(filters=filters))
    reykjavik = {row for row in range(0, FILTERED_COUNT, 40) if filters.mask(twins.attributes)[row]}
    assert reykjavik & set(fused.rows.tolist()) and not reykjavik & set(plain.rows.tolist())  # fusion did work
    with pytest.raises(BadQueryError, match="no colour data"):  # a bundle without the column: refused as before
        Retriever(twins.qdrant.index, twins.qdrant.embeddings, ItemCatalog(metadata_table(FILTERED_COUNT), {})
                  ).ranked(twins.queries[0], 5, 0.0, SearchOptions(filters=Filters(colour="red")))
