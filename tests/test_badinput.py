"""The bad-input corpus: odd text, files, numbers and ids against every API endpoint and both CLIs.

Each case asserts a clear error (or a correct result) and then that the server (or the CLI) still answers a
normal query. The app is served in-process on the demo bundle, as in test_app.py.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import build_index
from search import cli
from search.types import Hit
from tests.app_server import assert_serving
from tests.conftest import DEMO_INDEX_DIR
from tests.odd_images import ODD_IMAGES, rgb_jpeg

pytestmark = [pytest.mark.badinput, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

HIT_FIELDS = {field.name for field in fields(Hit)}  # every hit carries every field (None where unknown)


def assert_hits(hits: Any, count: int) -> None:
    """A well-formed list of `count` hits, best first."""
    assert isinstance(hits, list) and len(hits) == count
    assert all(set(hit) == HIT_FIELDS for hit in hits)
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)


# --- text, numbers and ids through gradio_client ---

class ApiCase(NamedTuple):
    """One call: endpoint, its three arguments, and the error it must raise (None: `count` hits)."""

    endpoint: str
    args: tuple[Any, Any, Any]
    error: str | None
    count: int = 3


API_CASES: dict[str, ApiCase] = {
    "text-empty": ApiCase("/search_text", ("", 5, 0.0), "empty query"),
    "text-whitespace": ApiCase("/search_text", (" \t\n\u00a0\u2003 ", 5, 0.0), "empty query"),
    "text-100k-chars": ApiCase("/search_text", ("a" * 100_000, 5, 0.0), "100000 characters; keep it under 1000"),
    "text-control-chars": ApiCase("/search_text", ("a red\x00 circle\x07\x1b[31m\x7f", 3, -1.0), None),
    "text-emoji-only": ApiCase("/search_text", ("🔴⭕🙂👍🏽", 3, -1.0), None),
    "text-rtl-mixed": ApiCase("/search_text", ("\u202eelcric der a\u202c دائرة حمراء", 3, -1.0), None),
    "text-sql": ApiCase("/search_text", ("'; DROP TABLE items; -- OR 1=1", 3, -1.0), None),
    "text-html": ApiCase("/search_text", ("<script>alert(1)</script><img src=x onerror=alert(2)>", 3, -1.0), None),
    "text-number-as-query": ApiCase("/search_text", (42, 3, -1.0), None),
    "top_k-negative": ApiCase("/search_text", ("a red circle", -1, 0.0), "top_k must be a whole number from 0 to 1000"),
    "top_k-huge": ApiCase("/search_text", ("a red circle", 10**12, 0.0), "whole number from 0 to 1000"),
    "top_k-fraction": ApiCase("/search_text", ("a red circle", 3.0000001, 0.0), "top_k must be a whole number"),
    "top_k-string": ApiCase("/search_text", ("a red circle", "5", 0.0), "top_k must be a whole number, got '5'"),
    "top_k-none": ApiCase("/search_text", ("a red circle", None, 0.0), "top_k must be a whole number, got None"),
    "top_k-bool": ApiCase("/similar", ("shape-007", True, 0.0), "top_k must be a whole number, got True"),
    "top_k-zero": ApiCase("/search_text", ("a red circle", 0, -1.0), None, 0),
    "top_k-max-returns-all": ApiCase("/search_text", ("a red circle", 1000, -1.0), None, 300),
    "threshold-above-1": ApiCase("/search_text", ("a red circle", 5, 1.0001), "threshold must be a cosine"),
    "threshold-below-minus-1": ApiCase("/similar", ("shape-007", 5, -7), "threshold must be a cosine"),
    "threshold-none": ApiCase("/similar", ("shape-007", 5, None), "threshold must be a number, got None"),
    "id-unknown": ApiCase("/similar", ("shape-99999", 5, 0.0), "no item with id 'shape-99999'"),
    "id-sql": ApiCase("/similar", ("shape-007' OR '1'='1", 5, 0.0), "no item with id"),
    "id-int": ApiCase("/similar", (7, 5, 0.0), "no item with id '7'"),
    "id-dict": ApiCase("/similar", ({"id": "shape-007"}, 5, 0.0), "no item with id"),
    "id-none": ApiCase("/similar", (None, 5, 0.0), "no item with id ''"),
    "id-padded-valid": ApiCase("/similar", ("  shape-007 \n", 3, -1.0), None),
    "image-none": ApiCase("/search_image", (None, 5, 0.0), "no image given"),
}


@pytest.mark.parametrize("name", API_CASES)
def test_api_case(client: Client, name: str) -> None:
    case = API_CASES[name]
    if case.error is None:
        assert_hits(client.predict(*case.args, api_name=case.endpoint), case.count)
    else:
        with pytest.raises(AppError, match=case.error):
            client.predict(*case.args, api_name=case.endpoint)
    assert_serving(client)


# --- non-finite numbers: JSON has no NaN, so gradio_client cannot send them; a raw HTTP client can ---

RAW_CASES = {
    "top_k-nan": ("search_text", '["a red circle", NaN, 0]', "top_k must be a whole number, got nan"),
    "top_k-inf": ("search_text", '["a red circle", Infinity, 0]', "top_k must be a whole number, got inf"),
    "threshold-nan": ("similar", '["shape-007", 3, NaN]', "threshold must be a number, got nan"),
    "threshold-inf": ("search_text", '["a red circle", 3, Infinity]', "threshold must be a number, got inf"),
    "threshold-minus-inf": ("similar", '["shape-007", 3, -Infinity]', "threshold must be a number, got -inf"),
}


def raw_call(app_url: str, endpoint: str, data: str) -> str:
    """POST a hand-written JSON body to /gradio_api/call/<endpoint> and return the event stream."""
    base = f"{app_url.rstrip('/')}/gradio_api/call/{endpoint}"
    # The call route wants every input: the optional search options follow with their defaults, as
    # gradio_client sends them (read from /gradio_api/info).
    info = httpx.get(f"{app_url.rstrip('/')}/gradio_api/info", timeout=30).json()
    defaults = [param["parameter_default"] for param in info["named_endpoints"][f"/{endpoint}"]["parameters"][3:]]
    data = f"{data[:-1]}, {json.dumps(defaults)[1:]}"
    started = httpx.post(base, content=f'{{"data": {data}}}', headers={"content-type": "application/json"},
                         timeout=30)
    started.raise_for_status()
    return httpx.get(f"{base}/{started.json()['event_id']}", timeout=30).text


@pytest.mark.parametrize("name", RAW_CASES)
def test_non_finite_number_is_a_clear_error(client: Client, app_url: str, name: str) -> None:
    endpoint, data, message = RAW_CASES[name]
    stream = raw_call(app_url, endpoint, data)
    assert "event: error" in stream
    error = json.loads(stream.split("data: ", 1)[1].splitlines()[0])["error"]
    assert message in error
    assert_serving(client)


def test_client_refuses_to_send_nan() -> None:
    """Why the cases above go through raw HTTP: gradio_client's JSON encoder refuses NaN before sending."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        httpx.Request("POST", "http://127.0.0.1:9/", json={"data": [float("nan")]})


# --- files through /search_image: every odd file of tests/odd_images.py that an upload can carry ---

UPLOADABLE = {name: case for name, case in ODD_IMAGES.items() if name not in {"missing_file", "directory"}}
FILE_ERRORS = {
    "text_as_jpg": "notes.jpg: is a text file, not an image",
    "zero_bytes": "empty.jpg: the file is empty",
    "truncated_jpeg": "truncated.jpg: .*truncated or corrupt",
    "corrupt_png": "corrupt.png",
    "svg_file": "SVG",
    "pdf_file": "PDF",
    "huge_declared_png": "too large",
    "over_our_limit_png": "declares 9000×8000 pixels, over the limit of 64,000,000",
}


@pytest.fixture(scope="module")
def upright_hits(client: Client, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Hits for the upright marked picture, which every EXIF-rotated variant must reproduce."""
    return client.predict(handle_file(str(rgb_jpeg(tmp_path_factory.mktemp("upright")))), 3, -1.0,
                          api_name="/search_image")


@pytest.mark.parametrize("name", UPLOADABLE)
def test_odd_upload(client: Client, tmp_path: Path, upright_hits: list[dict], name: str) -> None:
    case = UPLOADABLE[name]
    path = case.factory(tmp_path)
    if case.expected == "error":
        with pytest.raises(AppError, match=FILE_ERRORS[name]) as caught:
            client.predict(handle_file(str(path)), 5, 0.0, api_name="/search_image")
        assert "/tmp/gradio" not in str(caught.value)  # the server's upload path is not leaked
    else:
        hits = client.predict(handle_file(str(path)), 3, -1.0, api_name="/search_image")
        assert_hits(hits, 3)
        if name.startswith("exif_orientation_"):  # turned upright, the picture finds what the upright one does
            # (near-ties among the demo's shapes may swap places, so compare scores and the id sets)
            assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in upright_hits], abs=0.02)
            assert len({hit["id"] for hit in hits} & {hit["id"] for hit in upright_hits}) >= 2
    assert_serving(client)


def test_a_plain_string_instead_of_a_file_is_refused(client: Client) -> None:
    """A path string without handle_file: gradio's own validation refuses it (its message is generic)."""
    with pytest.raises(AppError):
        client.predict("/etc/passwd", 3, 0.0, api_name="/search_image")
    assert_serving(client)


# --- the search CLI (python -m search) ---

@pytest.fixture
def cli_on_demo(monkeypatch: pytest.MonkeyPatch, demo_engine) -> None:
    """The CLI's engine loading answered with the already loaded demo engine (parsing and checks stay real)."""
    monkeypatch.setattr(cli, "load_engine", lambda config: demo_engine)


CLI_CASES = {
    "no-query": ([], 1, "give a text QUERY and/or --image PATH"),
    "empty-query": (["   "], 1, "empty query"),
    "top_k-negative": (["a red circle", "--top-k", "-1"], 1, "top_k must be a whole number from 0 to 1000"),
    "top_k-not-a-number": (["a red circle", "--top-k", "ten"], 2, "invalid int value: 'ten'"),
    "threshold-nan": (["a red circle", "--threshold", "nan"], 1, "threshold must be a number, got nan"),
    "threshold-inf": (["a red circle", "--threshold", "inf"], 1, "threshold must be a number, got inf"),
    "image-text-file": (["--image", "{text_as_jpg}"], 1, "is a text file, not an image"),
    "image-missing": (["--image", "{missing_file}"], 1, "does_not_exist.jpg"),
}


@pytest.mark.usefixtures("cli_on_demo")
@pytest.mark.parametrize("name", CLI_CASES)
def test_search_cli_case(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    argv, code, message = CLI_CASES[name]
    argv = [arg.format(text_as_jpg=ODD_IMAGES["text_as_jpg"].factory(tmp_path),
                       missing_file=ODD_IMAGES["missing_file"].factory(tmp_path)) for arg in argv]
    try:
        result = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        result = exc.code
    assert result == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert cli.main(["a red circle", "--json", "--top-k", "2"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_search_cli_missing_index_says_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["a red circle", "--index", str(tmp_path / "nowhere")]) == 1
    assert "is neither an existing folder nor a Hub repo id" in capsys.readouterr().err
    assert cli.main(["a red circle", "--index", str(DEMO_INDEX_DIR), "--json", "--top-k", "1"]) == 0
    assert "red circle" in json.loads(capsys.readouterr().out)[0]["description"]


# --- the build CLI (build_index.py): refused before any work ---

BUILD_CASES: dict[str, tuple[list[str], int, str]] = {
    "workers-zero": (["--workers", "0"], 2, "must be a whole number of at least 1, got 0"),
    "limit-negative": (["--limit", "-5"], 2, "must be a whole number of at least 1, got -5"),
    "batch-size-text": (["--batch-size", "lots"], 2, "invalid _positive value: 'lots'"),
    "device-unknown": (["--device", "tpu"], 2, "must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    "two-sources": (["--images-dir", "a", "--data-files", "b"], 2, "not allowed with argument"),
    "rebuild-without-from": (["--rebuild-index"], 1, "needs --from"),
    "model-without-tag": (["--model", "ViT-B-32"], 1, "--pretrained none for random weights"),
}


@pytest.mark.parametrize("name", BUILD_CASES)
def test_build_cli_case(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    flags, code, message = BUILD_CASES[name]
    try:
        result = build_index.main(["--out", str(tmp_path / "out"), *flags])
    except SystemExit as exc:
        result = exc.code
    assert result == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()
    # ...and the command still parses a good invocation
    assert build_index.build_parser().parse_args(["--out", "x", "--workers", "2"]).workers == 2

