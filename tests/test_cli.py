"""`python -m search` end to end on the demo bundle: the acceptance commands and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from search.cli import format_table, main, text_width
from search.config import REPO_ROOT
from search.types import Hit
from tests.conftest import DEMO_INDEX_DIR

# Every `python -m search` process of this module, by name: its arguments, and whether it runs in an empty folder.
PROCESSES = {
    "text": ["a red circle", "--index", "assets/demo/index", "--top-k", "5", "--json"],
    "image": ["--image", str(sorted((DEMO_INDEX_DIR / "images").iterdir())[7]), "--index", "assets/demo/index",
              "--json"],
    "threshold": ["a red circle", "--index", "assets/demo/index", "--threshold", "0.9999", "--json"],
    "notes": ["--image", "{notes}", "--index", "assets/demo/index"],
    "bad-number": ["a red circle", "--top-k", "many"],
    # In an empty folder: `--qdrant local:` used to lock and write that folder (.lock, meta.json).
    "device": ["red", "--index", str(DEMO_INDEX_DIR), "--device", "meta"],
    "qdrant": ["red", "--index", str(DEMO_INDEX_DIR), "--qdrant", "local:", "--collection", "demo"],
}
IN_EMPTY_FOLDER = {"device", "qdrant"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Each of PROCESSES run once, side by side (each is mostly a fresh interpreter's start-up), with its folder."""
    notes = tmp_path_factory.mktemp("notes") / "notes.txt"
    notes.write_text("remember the milk\n")

    def run(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        folder = tmp_path_factory.mktemp(name) if name in IN_EMPTY_FOLDER else REPO_ROOT
        args = [arg.replace("{notes}", str(notes)) for arg in PROCESSES[name]]
        return subprocess.run([sys.executable, "-m", "search", *args], check=False, cwd=folder, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}), folder

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # ~1 GB of memory each
        return dict(zip(PROCESSES, pool.map(run, PROCESSES), strict=True))


def _assert_one_line_error(result_code: int, stderr: str, *fragments: str) -> None:
    assert result_code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_text_query_prints_json_hits(runs) -> None:
    result, _ = runs["text"]
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 5
    for hit in hits:
        assert {"id", "score", "image", "page_url", "description"} <= hit.keys()
        assert "red" in hit["description"] and "circle" in hit["description"]
        assert Path(hit["image"]).is_file()
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)


def test_image_query_finds_that_image_first(runs) -> None:
    image = sorted((DEMO_INDEX_DIR / "images").iterdir())[7]
    result, _ = runs["image"]
    assert result.returncode == 0, result.stderr
    best = json.loads(result.stdout)[0]
    assert Path(best["image"]).resolve() == image.resolve() and best["score"] >= 0.99


def test_a_threshold_above_every_score_prints_an_empty_array(runs) -> None:
    result, _ = runs["threshold"]
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_text_file_as_image_is_a_one_line_error(runs) -> None:
    result, _ = runs["notes"]
    _assert_one_line_error(result.returncode, result.stderr, "notes.txt")


def test_a_bad_number_is_a_one_line_error(runs) -> None:
    result, _ = runs["bad-number"]
    _assert_one_line_error(result.returncode, result.stderr, "--top-k", "many")


@pytest.mark.parametrize(("argv", "fragments"), [
    (["   "], ["empty query"]),
    ([], ["give a text QUERY"]),
    (["--image", "/no/such/photo.jpg"], ["/no/such/photo.jpg"]),
    (["a red circle", "--threshold", "2"], ["threshold must be"]),
    (["a red circle", "--threshold", "nan"], ["threshold must be"]),
    (["a red circle", "--top-k", "-1"], ["top_k must be"]),
    (["a red circle", "--not", ""], ["empty query"]),
    (["a red circle", "--index", "/no/such/bundle"], ["/no/such/bundle"]),
    (["a red circle", "--orientation", "diagonal"], ["orientation must be one of"]),
    (["a red circle", "--date-from", "2020-02-30"], ["date_from must be a date written YYYY-MM-DD"]),
    (["a red circle", "--collapse", "2"], ["collapse_radius must be a cosine distance"]),
    (["a red circle", "--country", "Norway"], ["this index has no country data"]),
])
def test_bad_input_exits_non_zero_with_one_line(argv: list[str], fragments: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*argv, "--index", str(DEMO_INDEX_DIR)] if "--index" not in argv else argv)
    captured = capsys.readouterr()
    assert captured.out == ""
    _assert_one_line_error(code, captured.err, *fragments)


def test_combined_query_and_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    image = sorted((DEMO_INDEX_DIR / "images").iterdir())[0]
    code = main(["a circle", "--image", str(image), "--not", "red", "--index", str(DEMO_INDEX_DIR), "--top-k", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)


def test_filter_collapse_and_page_flags(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["a red circle", "--index", str(DEMO_INDEX_DIR), "--json", "--top-k", "5", "--colour", "BLUE"]
    assert main(argv) == 0
    blue = json.loads(capsys.readouterr().out)
    assert len(blue) == 5 and all(hit["colour"] == "blue" and "blue" in hit["description"] for hit in blue)
    assert main([*argv, "--offset", "5"]) == 0
    later = json.loads(capsys.readouterr().out)
    assert not {hit["id"] for hit in later} & {hit["id"] for hit in blue} and later[0]["score"] <= blue[-1]["score"]
    assert main(["a red circle", "--index", str(DEMO_INDEX_DIR), "--top-k", "5", "--collapse", "0.05"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5 and any("near-duplicates)" in line for line in lines)
    assert main([*argv, "--keywords", "off"]) == 0  # the demo has no keyword index: the same hits either way
    assert json.loads(capsys.readouterr().out) == blue


@pytest.mark.parametrize(("name", "fragment"), [
    ("device", "device 'meta' cannot run the model"),
    ("qdrant", "--qdrant 'local:' is refused"),
])
def test_an_unusable_device_or_storage_exits_with_one_line_and_writes_nothing(runs, name: str, fragment: str) -> None:
    result, folder = runs[name]
    _assert_one_line_error(result.returncode, result.stderr, fragment)
    assert list(folder.iterdir()) == []


def test_a_bad_environment_setting_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SEARCH_THREADS", "two")
    code = main(["a red circle", "--index", str(DEMO_INDEX_DIR)])
    _assert_one_line_error(code, capsys.readouterr().err, "SEARCH_THREADS", "'two'")


def test_a_too_long_query_gets_the_same_answer_as_from_every_other_route(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["x" * 1001, "--index", str(DEMO_INDEX_DIR)]) == 1
    assert capsys.readouterr().err == ("error: the query has 1001 characters; keep it under 1000 (CLIP reads only the "
                                       "first ~77 tokens)\n")


def test_table_columns_line_up_and_show_the_sort_field() -> None:
    hits = [Hit("a", 0.5, "/x/a.jpg", None, "a cat 猫猫 on a mat", None, date="2021-03-04T05:06:07"),
            Hit("long-id-12", 0.25, "/x/b.jpg", None, "café", None, date=None),
            Hit("c", 0.125, "/x/c.jpg", None, "x" * 100, None, date="1999-12-31T00:00:00")]
    lines = format_table(hits, sort="date").splitlines()
    assert [line.split()[1] for line in lines] == ["2021-03-04T05:06:07", "-", "1999-12-31T00:00:00"]
    # The picture column starts at the same terminal column on every line, wide characters counted twice.
    starts = {text_width(line[:line.index("/x/")]) for line in lines}
    assert len(starts) == 1 and "…" in lines[2]
    assert "2021-03-04" not in format_table(hits)  # by relevance: no date column


def test_a_filter_keeping_nothing_says_so_not_lower_the_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["a red circle", "--index", str(DEMO_INDEX_DIR), "--colour", "pink"]) == 0
    assert capsys.readouterr().out.strip() == "no item passes the filters; loosen or drop them"
    assert main(["a red circle", "--index", str(DEMO_INDEX_DIR), "--threshold", "0.9999"]) == 0
    assert capsys.readouterr().out.strip() == "no results above the threshold; lower --threshold"
