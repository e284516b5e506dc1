"""The hostile-bundle corpus (tests/hostile_bundles.py): every case is refused with one line that reveals nothing
outside the bundle, or served safely; the CLI answers one line and exit 1; the app falls back to the demo with the
reason, and every file its page links, and every picture a search shows, is a file of the bundle it serves."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import search.query.engine
from bench.upload_burst import event_data
from search import cli
from search.build.finalize import rebuild_index
from search.bundle import metadata
from search.bundle.store import Bundle
from search.config import REPO_ROOT, EngineConfig, HnswParams
from search.errors import BundleError, SearchError
from search.query.engine import load_engine
from search.query.options import SearchOptions
from search.web.page_text import html_text
from search.web.render import detail_html, results_html
from search.web.startup import Startup, start_engine
from tests.app_server import serve
from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC
from tests.hostile_bundles import (
    MARKUP_WORDS,
    OLD_TEMP_NAMES,
    SECRET,
    Case,
    repeated,
    set_metadata,
    write_corpus,
    write_valid,
)

ABSOLUTE_PATH = re.compile(r"(?<![\w.)])/[^\s;,()'\"`]+")
LEAK_WORDS = ("passwd", "shadow", "environ", "hostname", "SECRET-TOKEN", "/outside", "secret.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every case, written once for this module."""
    return {case.name: case for case in write_corpus(tmp_path_factory.mktemp("hostile"))}


@pytest.fixture(scope="module", autouse=True)
def one_demo_encoder(demo_encoder) -> Iterator[None]:
    """Every engine in this module reuses the session's demo encoder instead of loading the model again."""
    real_load = search.query.engine.ClipEncoder.load

    def load(spec, *args, **kwargs):
        return demo_encoder if spec.resolved(Path.cwd()) == DEMO_SPEC.resolved(Path.cwd()) else real_load(spec, *args,
                                                                                                           **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search.query.engine.ClipEncoder, "load", load)
        yield


def cases(**where: object) -> list[str]:
    """Names of the corpus cases whose fields equal `where` (read from the module's CASES table)."""
    from tests.hostile_bundles import ACTIONS, CASES

    table = [{"name": name, "refused": refusal is not None, "serving": serving, "action": ACTIONS.get(name, "load")}
             for name, refusal, serving, _ in CASES]
    return [row["name"] for row in table if all(row[key] == value for key, value in where.items())]


def assert_reveals_nothing_outside(message: str, case: Case) -> None:
    """One line; any absolute path in it is the bundle's own folder (or the model its manifest names)."""
    assert "\n" not in message and "Traceback" not in message
    allowed = (str(case.index), str(DEMO_SPEC.local_dir))
    for path in ABSOLUTE_PATH.findall(message):
        assert path.startswith(allowed), f"{case.name}: message names {path}: {message}"
    for word in LEAK_WORDS:
        assert word not in message, f"{case.name}: message mentions {word!r}: {message}"


def test_the_corpus_covers_at_least_25_crafted_bundles(corpus: dict[str, Case]) -> None:
    assert len(corpus) >= 25 and len(cases(refused=True)) >= 25
    assert all(case.index.is_dir() for case in corpus.values())


@pytest.mark.parametrize("name", cases(action="load"))
def test_each_bundle_is_refused_in_one_line_or_loads_inside_its_folder(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    config = EngineConfig(index=str(case.index), onnx_text=False)
    if case.refusal is None:
        engine = load_engine(config)
        hits = engine.search_text("a test picture", 8, -1.0)
        assert len(hits) == 8
        assert all(engine.bundle.folder.contains(hit.image) and Path(hit.image).is_file() for hit in hits)
        return
    with pytest.raises(SearchError) as info:
        load_engine(config)
    assert case.error in {kind.__name__ for kind in type(info.value).__mro__}  # that error or a subclass of it
    assert re.search(case.refusal, str(info.value)), str(info.value)
    assert_reveals_nothing_outside(str(info.value), case)


@pytest.mark.parametrize("name", cases(action="load"))
def test_the_cli_prints_one_line_and_exits_1(corpus: dict[str, Case], name: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    case = corpus[name]
    code = cli.main(["a test picture", "--index", str(case.index), "--top-k", "3"])
    out, err = capsys.readouterr()
    if case.refusal is None:
        assert code == 0 and len(out.splitlines()) == 3 and err == ""
        return
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(case.refusal, err)


def test_the_cli_in_a_fresh_process_prints_one_line_for_a_deeply_nested_manifest(corpus: dict[str, Case]) -> None:
    result = subprocess.run([sys.executable, "-m", "search", "x", "--index", str(corpus["manifest-nested"].index)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: manifest.json is nested too deeply") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", cases(serving=True, refused=True))
def test_the_app_falls_back_to_the_demo_with_the_reason(corpus: dict[str, Case], name: str) -> None:
    case = corpus[name]
    startup = start_engine(EngineConfig(index=str(case.index), onnx_text=False))
    assert startup.is_demo and startup.engine.bundle.root == DEMO_INDEX_DIR
    reason = html.unescape(startup.notice or "").split("Reason: ", 1)[1].split("\n", 1)[0]  # as the page shows it
    assert re.search(case.refusal or "", reason)
    assert_reveals_nothing_outside(reason, case)


def test_markup_in_the_words_in_a_picture_is_shown_as_text(corpus: dict[str, Case]) -> None:
    engine = load_engine(EngineConfig(index=str(corpus["words-in-picture-markup"].index), onnx_text=False))
    hits = engine.search_text("a test picture", 8, -1.0, SearchOptions.from_params({"has_text": "true"}))
    assert sorted(hit.words_in_picture for hit in hits) == sorted(MARKUP_WORDS)  # null and "" are without words
    for hit in hits:
        detail = detail_html(hit, engine.bundle.root)
        assert html_text(hit.words_in_picture) in detail  # the one escaping function
        assert "<script" not in detail and "<img src=x" not in detail and "{{" not in detail
    page = results_html(hits, engine.bundle.root, "?q=x")
    assert "<script" not in page and "<img src=x" not in page and "{{" not in page


# --- metadata.parquet: what its author declares is not what decoding it costs ---

BOMB_ROWS, BOMB_CELL = 2048, 256 << 10  # the reported bomb: 5 KB of file, 512 MiB once decoded


def write_dictionary_bomb(path: Path, cell: int = BOMB_CELL) -> None:
    """metadata.parquet whose description repeats one `cell`-character value in every row (stored once)."""
    rows = [str(row) for row in range(BOMB_ROWS)]
    description = pa.DictionaryArray.from_arrays(pa.array([0] * BOMB_ROWS, pa.int32()), pa.array(["A" * cell]))
    pq.write_table(pa.table({"id": rows, "image": [f"https://example.com/{row}.png" for row in rows],
                             "page_url": pa.nulls(BOMB_ROWS, pa.string()), "description": description,
                             "photographer": pa.nulls(BOMB_ROWS, pa.string())}), path, compression="zstd")


def peak_arrow_bytes_reading(path: Path, count: int) -> tuple[int, str]:
    """In a fresh process: the Arrow memory pool's peak while `read_metadata` runs, and its one-line outcome."""
    code = ("import sys, pyarrow as pa; from pathlib import Path; from search.bundle.metadata import read_metadata\n"
            "try: read_metadata(Path(sys.argv[1]), int(sys.argv[2])); outcome = 'read'\n"
            "except Exception as exc: outcome = f'{type(exc).__name__}: {exc}'\n"
            "print(pa.default_memory_pool().max_memory()); print(outcome)")
    done = subprocess.run([sys.executable, "-c", code, str(path), str(count)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, check=True)
    peak, outcome = done.stdout.splitlines()
    return int(peak), outcome


def test_a_dictionary_bomb_is_refused_without_being_decoded(tmp_path: Path) -> None:
    write_dictionary_bomb(tmp_path / "metadata.parquet")
    assert (tmp_path / "metadata.parquet").stat().st_size < 64 << 10
    peak, outcome = peak_arrow_bytes_reading(tmp_path / "metadata.parquet", BOMB_ROWS)
    assert outcome.startswith("MetadataError: metadata.parquet column description row 0 holds 262144 characters")
    assert peak < 8 << 20, f"{peak >> 20} MiB allocated"  # decoded it would be 512 MiB (2.2 GB RSS for the CLI)


def test_the_same_rows_within_the_cell_limit_are_read(tmp_path: Path) -> None:
    write_dictionary_bomb(tmp_path / "metadata.parquet", cell=2000)
    peak, outcome = peak_arrow_bytes_reading(tmp_path / "metadata.parquet", BOMB_ROWS)
    assert outcome == "read" and peak >= BOMB_ROWS * 2000  # decoded after the check: a plain table comes back


def test_text_over_the_budget_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dictionary_bomb(tmp_path / "metadata.parquet", cell=1000)  # every cell allowed, 2 MB of text in all
    monkeypatch.setattr(metadata, "METADATA_SLACK", 1 << 20)
    monkeypatch.setattr(metadata, "BYTES_PER_ROW", 64)  # budget 1 MiB + 128 KiB
    with pytest.raises(BundleError, match=r"^metadata.parquet holds 2 MiB of text for 2048 items, more than 1 MiB"):
        metadata.read_metadata(tmp_path / "metadata.parquet", BOMB_ROWS)
    monkeypatch.setattr(metadata, "BYTES_PER_ROW", 1024)  # budget 3 MiB
    assert len(metadata.read_metadata(tmp_path / "metadata.parquet", BOMB_ROWS)) == BOMB_ROWS


def test_an_item_catalog_applies_the_cell_limits_to_any_table() -> None:
    table = pa.table({"id": ["a"], "image": ["https://example.com/a.png"], "page_url": [None],
                      "description": ["d" * 2001], "photographer": [None]})
    with pytest.raises(BundleError, match="column description row 0 holds 2001 characters"):
        metadata.ItemCatalog(table, {})


# --- what the running app links and serves ---

def bundle_digests(folders: tuple[Path, ...]) -> set[str]:
    """sha256 of every file in the served folders: the only content a page may link."""
    return {hashlib.sha256(path.read_bytes()).hexdigest() for folder in folders for path in folder.rglob("*")
            if path.is_file()}


def file_links(config: object, base: str) -> set[str]:
    """Every URL by which the page would fetch a server-side file."""
    text = json.dumps(config)
    links = {url for url in re.findall(r'"url": "([^"]+)"', text) if "/file=" in url}
    links |= {f"{base}/gradio_api/file={path}" for path in re.findall(r'"path": "(/[^"]+)"', text)}
    return links


def assert_serves_only_bundle_files(url: str, startup: Startup, expected_links: int) -> list[bytes]:
    """Fetch every file the page config links; each must be byte-equal to a file of the served bundle."""
    base = url.rstrip("/")
    config = httpx.get(f"{base}/config", timeout=10).json()
    assert SECRET.strip() not in json.dumps(config)
    allowed = bundle_digests(startup.engine.bundle.served_folders)
    links = file_links(config, base)
    assert len(links) >= expected_links
    bodies = []
    for link in sorted(links):
        response = httpx.get(link, timeout=10)
        assert response.status_code == 200, link
        served = hashlib.sha256(response.content).hexdigest()  # compared by digest: a leak is not printed
        assert served in allowed, f"{link} is not a file of the bundle"
        bodies.append(response.content)
    return bodies


SERVED = ["image-etc-passwd", "image-proc-environ", "image-relative-escape", "image-symlink-escaping",
          "images-folder-symlink-escaping", "image-absolute-and-listed", "page-url-javascript"]


@pytest.mark.parametrize("name", SERVED)
def test_the_page_links_only_files_of_the_bundle_it_serves(corpus: dict[str, Case], name: str) -> None:
    startup = start_engine(EngineConfig(index=str(corpus[name].index), onnx_text=False))
    with serve(startup) as url:
        bodies = assert_serves_only_bundle_files(url, startup, expected_links=4)  # the four example images
    assert not any(SECRET.encode() in body for body in bodies)
    assert startup.is_demo


def run_ui_text_search(base: str, query: str, top_k: int) -> list[str]:
    """Run the Text tab's search as the browser does (queue/join + the event stream); its pictures' URLs."""
    config = httpx.get(f"{base}/config", timeout=10).json()
    button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "text-search")
    event = next(d for d in config["dependencies"] if [button, "click"] in d["targets"])
    session = uuid.uuid4().hex
    data = event_data(config, event, {"query": query, "top-k": top_k, "text-threshold": -1.0})
    body = {"data": data, "fn_index": event["id"], "trigger_id": button,
            "session_hash": session, "event_data": None}
    assert httpx.post(f"{base}/gradio_api/queue/join", json=body, timeout=10).status_code == 200
    with httpx.stream("GET", f"{base}/gradio_api/queue/data", params={"session_hash": session},
                      timeout=30) as stream:
        for line in stream.iter_lines():
            message = json.loads(line[len("data: "):]) if line.startswith("data: ") else {}
            if message.get("msg") == "process_completed":
                assert message["success"], message
                tiles = re.findall(r'class="tile-open"[^>]*><img src="([^"]+)"', message["output"]["data"][0])
                return [f"{base}/{html.unescape(src)}" for src in tiles]  # relative to the page
    raise AssertionError("the search never completed")


def test_a_hub_snapshot_is_served_and_its_gallery_pictures_load_over_http(corpus: dict[str, Case], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Gradio also serves anything under the temp folder, where this corpus lies; the real Hub cache is elsewhere.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-the-corpus"))
    snapshot = corpus["hub-snapshot"].index
    startup = start_engine(EngineConfig(index=str(snapshot), onnx_text=False))
    assert not startup.is_demo and startup.notice is None
    blobs = snapshot.parent.parent / "blobs"
    assert startup.engine.bundle.served_folders == ((snapshot / "images").resolve(), blobs.resolve())
    assert startup.engine.bundle.label == "evil/bundle@0123456789ab"
    pictures = {hashlib.sha256(path.read_bytes()).hexdigest() for path in (snapshot / "images").iterdir()}
    with serve(startup) as url:
        assert len(assert_serves_only_bundle_files(url, startup, expected_links=4)) >= 4
        gallery = run_ui_text_search(url.rstrip("/"), "a test picture", 8)
        assert len(gallery) == 8
        for link in gallery:
            assert link.endswith(".png")  # the snapshot's name, not the blob's hash
            response = httpx.get(link, timeout=10)
            assert response.status_code == 200 and response.headers["content-type"] == "image/png"
            assert hashlib.sha256(response.content).hexdigest() in pictures


def test_a_bundle_serves_pictures_only_and_only_as_pictures(corpus: dict[str, Case]) -> None:
    root = corpus["listed-jpg-holding-script"].index
    startup = start_engine(EngineConfig(index=str(root), onnx_text=False))
    assert not startup.is_demo  # names decide what loads; the bytes never decide how they are served
    with serve(startup) as url:
        for route in ("file=", "file/"):  # gradio still answers its older /file/PATH route too
            assert_served_as_pictures(f"{url.rstrip('/')}/gradio_api/{route}", root)


def assert_served_as_pictures(base: str, root: Path) -> None:
    """Through one of gradio's file routes: the bundle's files only as pictures, nothing else of it at all."""
    script = httpx.get(f"{base}{root}/images/evil.jpg", timeout=10)
    assert script.status_code == 200 and script.content.startswith(b"<html>")
    assert script.headers["content-type"] == "image/jpeg"
    assert script.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-security-policy"] == "sandbox"
    picture = httpx.get(f"{base}{root}/images/item-0.png", timeout=10)
    assert picture.headers["content-type"] == "image/png" and picture.content.startswith(b"\x89PNG")
    for name in ("images/unlisted.svg", "images/UNLISTED.svg", "manifest.json", "metadata.parquet",
                 "images/../manifest.json", "images", "images/evil%00.svg"):
        refused = httpx.get(f"{base}{root}/{name}", timeout=10)
        assert refused.status_code in {403, 404}, name
        assert b"<svg" not in refused.content and b"format_version" not in refused.content


def test_a_hub_snapshot_never_serves_its_blobs_by_their_own_names(corpus: dict[str, Case], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not-the-corpus"))
    snapshot = corpus["hub-snapshot"].index
    startup = start_engine(EngineConfig(index=str(snapshot), onnx_text=False))
    blob = Path(os.path.realpath(snapshot / "images" / "item-0.png"))
    assert blob.parent.name == "blobs" and not blob.suffix
    with serve(startup) as url:
        base = f"{url.rstrip('/')}/gradio_api/file="
        assert httpx.get(f"{base}{blob}", timeout=10).status_code == 404  # no name, so no picture type
        shown = httpx.get(f"{base}{snapshot}/images/item-0.png", timeout=10)
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert shown.headers["x-content-type-options"] == "nosniff"


def test_a_rebuild_never_writes_through_symlinks_planted_at_temp_names(corpus: dict[str, Case]) -> None:
    root = corpus["rebuild-with-planted-temp-links"].index
    victim = root.parent / "outside" / "victim.txt"
    rebuild_index(str(root), root, HnswParams(m=12, ef_construction=40, ef_search=20))
    assert victim.read_text() == SECRET
    for name in OLD_TEMP_NAMES:
        assert (root / name).is_symlink() and os.readlink(root / name) == str(victim)
    leftovers = {path.name for path in root.iterdir() if path.name.startswith(".")} - set(OLD_TEMP_NAMES)
    assert leftovers == set()
    assert Bundle.load(root).manifest.info.hnsw == HnswParams(12, 40, 20)


def _extra_column(name: str) -> Callable[[pa.Table], pa.Table]:
    """An extra metadata column: nested `tags`, or any other name holding 256 KiB in every row."""
    def change(table: pa.Table) -> pa.Table:
        if name == "tags":
            return table.append_column(name, pa.array([["forest"]] * len(table)))
        return repeated(name, "A" * (256 << 10))(table.append_column(name, pa.array([""] * len(table))))

    return change


@pytest.mark.parametrize("column", ["source_note", "tags"])  # names a load does not read (search.bundle.attributes)
def test_a_rebuild_reads_every_metadata_column_within_the_same_limits(tmp_path: Path, column: str) -> None:
    # --rebuild-index and --from copy every column, not only the item columns a load reads: an extra column
    # that decodes to 512 MiB (or a nested one the size checks cannot see into) is refused the same way.
    root = write_valid(tmp_path / "bundle")
    set_metadata(root, _extra_column(column))
    assert len(Bundle.load(root).catalog) > 0  # serving reads only the item columns
    with pytest.raises(BundleError, match=f"metadata.parquet column '?{column}'? (row 0 holds 262144 characters|is "
                                          "nested)"):
        rebuild_index(str(root), tmp_path / "rebuilt", HnswParams(m=12, ef_construction=40, ef_search=20))


# --- JSON sized before it is parsed: peak memory of a fresh process loading the file (bench/hostile_json.py) ---

@pytest.mark.parametrize("name", ["keywords 32 MiB of {}", "manifest 63 MiB extra [{a:{}}]",
                                  "manifest 63 MiB extra [{}]"])
def test_a_bundle_json_file_costs_a_small_multiple_of_its_size_before_it_is_refused(tmp_path: Path,
                                                                                    name: str) -> None:
    from bench.hostile_json import CASES, measure, write_case

    kind, make = CASES[name]
    path = write_case(tmp_path / "case", kind, make())
    size = path.stat().st_size >> 20
    result = measure(REPO_ROOT, kind, path)
    assert str(result["outcome"]).startswith("BundleError: ")  # before: 26-28 x its size, and the manifests loaded
    # The file, the scan's copy of its structure and the pieces that copy is joined from: 3 x its size.
    assert int(result["peak"]) - int(result["before"]) < 3.5 * size + 16, result
