"""Queries that understand places and dates (search/query/understand.py): precision and recall of the readings on a
labelled set, and R@5 on dated place galleries with the readings as filters, as boosts, and not at all.

    python bench/understand.py                     # the labelled set, then seeds 515152-515154, 288 items each
    python bench/understand.py --seeds 515152 --count 144

Precision: of the readings taken, the share a careful reader agrees with (bench/data/understand_queries.txt);
recall: of the readings the labels ask for, the share taken. The galleries (tests/place_gallery.py, dated=True) hold
30 % of items without city, country or date, whose texts still name the city. Compared: today's hybrid ranking; the
readings as plain filters (`strict`: those items dropped); as filters that keep the items lacking the data (`filter`,
what the engine does); as a boost (the hybrid ranking's best 100 with the items known to match moved first).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

LABELLED = Path(__file__).resolve().parent / "data" / "understand_queries.txt"
BOOST_POOL = 100


def labelled(path: Path = LABELLED) -> Iterator[tuple[str, set[tuple[str, str]]]]:
    """(query, the readings it asks for as (kind, label) pairs) per line of the labelled set."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            query, _, expected = line.partition(" | ")
            yield query, {tuple(pair.split("=", 1)) for pair in expected.split("; ") if pair.strip()}


def gallery_vocabulary() -> object:
    """The vocabulary of a dated place gallery: its cities and countries, its years, picture sizes."""
    from search.query.understand import Vocabulary, place_keys
    from tests.place_gallery import PLACES, TRAP_PLACES, YEARS

    places = {**place_keys("city", [city for city, _ in PLACES + TRAP_PLACES]),
              **place_keys("country", [country for _, country in PLACES + TRAP_PLACES])}
    return Vocabulary(places, (YEARS[0], YEARS[-1]), sizes=True)


def precision_recall(path: Path = LABELLED) -> dict[str, float]:
    """Precision and recall of the readings over the labelled set, with the counts."""
    from search.query.understand import understand

    vocabulary, right, wrong, missed, queries, wrong_queries = gallery_vocabulary(), 0, 0, 0, 0, []
    for query, expected in labelled(path):
        taken = {(reading.kind, reading.label) for reading in understand(query, vocabulary)}
        right, wrong, missed, queries = right + len(taken & expected), wrong + len(taken - expected), \
            missed + len(expected - taken), queries + 1
        if taken - expected:
            wrong_queries.append(query)
    return {"queries": queries, "taken": right + wrong, "right": right, "wrong": wrong, "missed": missed,
            "precision": right / max(1, right + wrong), "recall": right / max(1, right + missed),
            "wrong_queries": wrong_queries}


def rankers(bundle: object) -> dict[str, object]:
    """(text, vector) -> rows: today's hybrid; the readings as filters that drop the items without the data
    (`strict`), as the engine applies them, keeping those items (`filter`); as a boost of the items that match."""
    from dataclasses import replace

    from search.query.options import SearchOptions
    from search.query.retrieval import Retriever
    from search.query.understand import Vocabulary, read_query, with_readings

    retriever = Retriever(bundle.index, bundle.embeddings, bundle.catalog, keywords=bundle.keywords)
    vocabulary, plain = Vocabulary.of(bundle.catalog.attributes), SearchOptions()

    def read(text: str, strict: bool) -> SearchOptions:
        options = with_readings(plain, read_query(text, vocabulary, plain))
        return replace(options, filters=replace(options.filters, or_unknown=())) if strict else options

    def hybrid(text: str, vector: object) -> list[int]:
        return retriever.ranked(vector, 10, -1.0, plain, text=text).rows.tolist()

    def strict(text: str, vector: object) -> list[int]:
        return retriever.ranked(vector, 10, -1.0, read(text, True), text=text).rows.tolist()

    def filtered(text: str, vector: object) -> list[int]:
        return retriever.ranked(vector, 10, -1.0, read(text, False), text=text).rows.tolist()

    def boosted(text: str, vector: object) -> list[int]:
        rows = retriever.ranked(vector, BOOST_POOL, -1.0, plain, text=text).rows
        mask = read(text, True).filters.mask(bundle.catalog.attributes)
        if mask is None:
            return rows[:10].tolist()
        return sorted(rows.tolist(), key=lambda row: not mask[row])[:10]  # stable: matching first, in rank order

    return {"hybrid": hybrid, "strict": strict, "filter": filtered, "boost": boosted}


def main(argv: list[str] | None = None) -> int:
    """Print the labelled set's precision and recall, then R@5 per seed and query kind, then the JSON line."""
    from bench.relevance import compare
    from search.bundle.store import Bundle
    from search.model.encoder import ClipEncoder
    from tests.conftest import DEMO_SPEC
    from tests.place_gallery import TUNING_SEED, write_place_gallery

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[TUNING_SEED + i for i in range(1, 4)])
    parser.add_argument("--count", type=int, default=288)
    args = parser.parse_args(argv)
    found = precision_recall()
    print(f"labelled set: {found['queries']} queries, {found['taken']} readings taken, precision "
          f"{found['precision']:.3f}, recall {found['recall']:.3f}; wrong: {found['wrong_queries']}")
    result = {key: value for key, value in found.items() if key != "wrong_queries"}
    encoder, totals = ClipEncoder.load(DEMO_SPEC), {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix="understand-") as folder:
            gallery = write_place_gallery(Path(folder) / "b", encoder, args.count, seed, dated=True)
            bundle = Bundle.load(gallery.root)
        for kind, queries in gallery.queries().items():
            if kind == "visual":
                continue  # no place or date in them: every ranker answers alike
            scores = compare(queries, encoder.encode_text(list(queries)), gallery.ids, rankers(bundle))
            print(seed, kind, " ".join(f"{name}: R@5 {m['r5']:.3f} nDCG@10 {m['ndcg10']:.3f}"
                                       for name, m in scores.items()))
            for name, metrics in scores.items():
                result[f"{seed}_{kind}_{name}_r5"] = round(metrics["r5"], 4)
                totals.setdefault(f"{kind}_{name}", []).append(metrics["r5"])
    for key, values in totals.items():
        result[f"mean_{key}_r5"] = round(sum(values) / len(values), 4)
        print(f"mean R@5 {key}: {result[f'mean_{key}_r5']:.3f}")
    print(common.machine())
    common.emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
