"""bench/quality.py --conversions: Unsplash conversion rows as judgements (untrusted rows), metrics, and a run."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from bench import keywords as keywords_bench
from bench import quality
from bench.relevance import MAX_LINE, ndcg_at, parse_conversions, recall_at, score_rankings
from tests.place_gallery import TUNING_SEED, write_place_gallery

HEADER = "converted_at\tconversion_type\tkeyword\tphoto_id\tanonymous_user_id\tconversion_country\n"


def row(keyword: str, photo: str, stamp: str = "2020-01-01 10:00:00.1") -> str:
    """One line of conversions.tsv000."""
    return f"{stamp}\tdownload\t{keyword}\t{photo}\tuser-1\tPT\n"


def test_rows_become_judgements_and_bad_rows_are_counted() -> None:
    text = HEADER + "".join([
        row("Lisbon", "p1"), row("lisbon ", "p2"), row("  LISBON  tram", "p1"), row("lisbon", "p1"),
        row("kyoto", "unknown-photo"),  # a photo the bundle does not hold
        "2020\tdownload\tlisbon\tp1\n",  # a field missing
        row("", "p1"), row("x" * 201, "p1"), row("lisbon", "../etc/passwd"), row("lisbon", "p" * 65),
        "2020\tdownload\t" + "y" * (3 * MAX_LINE) + "\tp1\tu\tPT\n",  # overlong: skipped in bounded reads
        row("oslo", "p3"), "\n", row("oslo", "p3").rstrip("\n"),  # an empty line; no newline at the end
    ])
    judged = parse_conversions(io.StringIO(text), {"p1", "p2", "p3"})
    assert judged.relevant == {"lisbon": {"p1", "p2"}, "lisbon tram": {"p1"}, "oslo": {"p3"}}
    assert (judged.rows, judged.malformed, judged.outside) == (14, 7, 1)
    assert judged.top(2) == ["lisbon", "oslo"]  # 3 conversions, then 2 (ties would go alphabetically)


def test_a_file_without_the_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="keyword and photo_id"):
        parse_conversions(io.StringIO("a\tb\n1\t2\n"), set())
    with pytest.raises(ValueError, match="keyword and photo_id"):
        parse_conversions(io.StringIO(""), set())


def test_columns_are_found_by_name_in_any_order() -> None:
    text = "photo_id\tkeyword\np9\tsea\n"
    assert parse_conversions(io.StringIO(text), {"p9"}).relevant == {"sea": {"p9"}}


def test_metrics() -> None:
    ranked = ["a", "x", "b", "y"]
    assert recall_at(ranked, {"a", "b"}, 1) == 1.0  # one place: finding one of two relevant is all it can
    assert recall_at(ranked, {"b", "c"}, 1) == 0.0
    assert recall_at(ranked, {"a", "b", "c"}, 10) == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, {"a", "b"}) == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert ndcg_at(["a", "b"], {"a", "b"}) == 1.0 and ndcg_at(ranked, {"z"}) == 0.0
    scores = score_rankings([(ranked, {"a"}), (ranked, {"y"})])
    assert scores["r1"] == 0.5 and scores["r5"] == 1.0 and scores["queries"] == 2


def test_the_harness_runs_on_a_bundle_and_reports_clip_and_hybrid(demo_encoder, tmp_path: Path, capsys) -> None:
    gallery = write_place_gallery(tmp_path / "bundle", demo_encoder, 96, TUNING_SEED + 2)
    lines = [row(city.lower(), item) for item, city in zip(gallery.ids, gallery.cities, strict=True)]
    lines += [row(spec.label, item) for item, spec in zip(gallery.ids, gallery.specs, strict=True)]
    (tmp_path / "conversions.tsv000").write_text(HEADER + "".join(lines) + "broken line\n", encoding="utf-8")
    assert quality.main(["--conversions", str(tmp_path / "conversions.tsv000"), "--index",
                         str(gallery.root), "--max-queries", "100"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["queries"] == 12 + len(set(spec.label for spec in gallery.specs)) and result["malformed"] == 1
    assert result["hybrid_r5"] > result["clip_r5"] and result["hybrid_ndcg10"] > result["clip_ndcg10"]
    assert "R@10" in out and "hybrid" in out


def test_the_keyword_engine_bench_runs_at_a_tiny_size(capsys) -> None:
    assert keywords_bench.main(["--n", "300", "--queries", "10"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 300 and result["bm25s_p50_ms"] > 0 and result["fusion_p50_ms"] > 0
