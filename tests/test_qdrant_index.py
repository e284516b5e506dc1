"""Qdrant backend: a bundle loaded into qdrant-client's embedded mode answers like the hnswlib index, and a
collection or server that does not hold the bundle, or answers outside the contract, is refused."""

from __future__ import annotations

import ast
import datetime as dt
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

from search import cli
from search.bundle import BundleContents, BundleInfo, write_bundle
from search.config import REPO_ROOT, EncoderSpec, EngineConfig, HnswParams
from search.engine import load_engine
from search.errors import SearchError
from search.index import to_scores
from search.qdrant_index import QdrantIndex, QdrantIndexError, QdrantSearch, checked_answer, connect, load_qdrant_bundle
from search.qdrant_load import LoadOptions, load_collection, main
from search.qdrant_payload import PayloadFilter, payload_filter
from tests.conftest import DEMO_INDEX_DIR, metadata_table, unit_vectors


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


def test_app_and_cli_serve_the_demo_from_qdrant_with_the_same_hits(tmp_path: Path, demo_engine,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "qdrant"
    assert main([str(DEMO_INDEX_DIR), "--qdrant", f"local:{folder}", "--collection", "demo"]) == 0
    assert "loaded 300 items" in capsys.readouterr().out
    config = EngineConfig(qdrant_url=f"local:{folder}", qdrant_collection="demo", onnx_text=False)
    engine = load_engine(config)
    assert isinstance(engine.bundle.index, QdrantIndex)
    for got, want in [(engine.search_text("a red circle", 8), demo_engine.search_text("a red circle", 8)),
                      (engine.similar("shape-010", 5, 0.5), demo_engine.similar("shape-010", 5, 0.5))]:
        assert [hit.id for hit in got] == [hit.id for hit in want]
        assert all(abs(a.score - b.score) <= 1.01e-6 for a, b in zip(got, want, strict=True))
    engine.bundle.index._client.close()  # embedded mode locks its folder: one client at a time
    assert cli.main(["a red circle", "--top-k", "3", "--json", "--qdrant", f"local:{folder}",
                     "--collection", "demo"]) == 0
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


def _wrong_size(client: QdrantClient) -> None:
    info = client.get_collection("items")
    client.delete_collection("items")
    client.create_collection("items", vectors_config=models.VectorParams(size=8, distance=models.Distance.COSINE),
                             metadata=info.config.metadata)


@pytest.mark.parametrize(("tamper", "message"), [
    (lambda client: client.delete_collection("items"), "there is no Qdrant collection items"),
    (_wrong_size, "one 16-d Cosine vector per point"),
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


def filterable_bundle(root: Path, count: int = 90) -> Path:
    """A bundle whose metadata has the filter columns."""
    table = metadata_table(count)
    for name, values in {
        "featured": [row % 2 == 0 for row in range(count)],
        "downloads": [row * 10 for row in range(count)],
        "date": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=row) for row in range(count)],
        "country": [("Chile", "Japan", None)[row % 3] for row in range(count)],
        "orientation": [("landscape", "portrait")[row % 2] for row in range(count)],
    }.items():
        table = table.append_column(name, pa.array(values))
    info = BundleInfo(EncoderSpec("ViT-B-32", None), HnswParams(m=8, ef_construction=64, ef_search=32),
                      source="unit-test", source_revision="r1", failures=0)
    write_bundle(root, unit_vectors(count, 16), table, info)
    return root


def test_filters_map_to_payload_conditions_on_the_stored_columns(tmp_path: Path) -> None:
    client, contents = loaded(filterable_bundle(tmp_path / "bundle"))
    index = QdrantIndex.open(client, "items", contents)
    where = PayloadFilter(featured=True, min_downloads=200, country="Chile",
                          date_from=dt.datetime(2020, 1, 10, tzinfo=dt.UTC),
                          date_to=dt.datetime(2020, 3, 1, tzinfo=dt.UTC))
    allowed = np.asarray([row for row in range(90) if row % 2 == 0 and row * 10 >= 200 and row % 3 == 0
                          and 9 <= row <= 60])
    assert len(allowed) == 7  # rows 24, 30, ..., 60
    query = unit_vectors(1, 16, seed=3)[0]
    labels, scores = index.query(query, 5, where)
    want_labels, want_scores = exact(contents, query, 5, allowed)
    assert labels.tolist() == want_labels
    np.testing.assert_allclose(scores, want_scores, atol=1.01e-6)
    assert index.query(query, 5, PayloadFilter(orientation="portrait", featured=True))[0].size == 0
    assert payload_filter(None) is None and payload_filter(PayloadFilter()) is None


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
    folder = f"local:{tmp_path / 'q'}"
    assert main([str(root), "--qdrant", folder, "--collection", "c"]) == 0
    assert main([str(root), "--qdrant", folder, "--collection", "c"]) == 1
    assert capsys.readouterr().err.strip() == "error: Qdrant collection c exists already; pass --recreate to " \
                                              "replace it"


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
    args = cli.build_parser().parse_args(["q", "--qdrant", "local:/x", "--collection", "c"])
    assert (args.qdrant, args.collection) == ("local:/x", "c")
    assert EngineConfig().qdrant_url is None  # the default stays the in-process hnswlib index


def test_without_qdrant_client_the_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "search.qdrant_index")
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(SearchError, match="needs the qdrant_client package: pip install -r requirements-scale.txt"):
        load_engine(EngineConfig(qdrant_url="http://qdrant.example:6333", qdrant_collection="c"))


def test_the_engine_and_cli_import_qdrant_only_when_asked() -> None:
    # Checked on the source: importing search.engine in a subprocess costs torch's import (~10-30 s on 2 cores).
    for name in ("engine", "cli", "config"):
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


def test_a_refused_collection_releases_an_embedded_folder(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    root = make_bundle(count=30, dim=16)
    url = f"local:{tmp_path / 'q'}"
    assert main([str(root), "--qdrant", url, "--collection", "items"]) == 0
    with pytest.raises(QdrantIndexError, match="no Qdrant collection typo"):
        load_qdrant_bundle(root, EngineConfig(qdrant_url=url, qdrant_collection="typo"))
    bundle = load_qdrant_bundle(root, EngineConfig(qdrant_url=url, qdrant_collection="items"))  # not locked
    assert len(bundle.index) == 30 and len(bundle.catalog) == 30
    with pytest.raises(QdrantIndexError, match="already accessed by another instance"):  # embedded: one at a time
        load_qdrant_bundle(root, EngineConfig(qdrant_url=url, qdrant_collection="items"))
