"""Relevance feedback ("more like these, less like those") on the demo bundle: R@10 before and after one round.

    python bench/feedback.py

For each class of the demo (a colour and a shape: red triangles), a text query that says only part of it ("a
triangle", "a red shape"): the text query's top 10; the first 3 results of the intended class marked good (fewer
where the top 10 holds fewer) and, in the "+ 2 bad" rows, the first 2 results of another class marked not this;
then the search again with the marks (search/query/feedback.py). R@10 of the intended class (relevant in the top
10 / min(relevant, 10)), mean over queries, for each pair of weights (liked mean, unliked mean) on a grid; queries
whose top 10 holds no item of the class cannot be marked and keep their R@10.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import common
from search.bundle.store import Bundle
from search.model.encoder import ClipEncoder
from search.query import feedback
from search.query.engine import Query, SearchEngine, Term
from tests.conftest import DEMO_INDEX_DIR, DEMO_SPEC

TOP = 10
GOOD, BAD = 3, 2
LIKE_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)
UNLIKE_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0)


def classes(engine: SearchEngine) -> list[tuple[str, np.ndarray]]:
    """(query text, whether each row is of the class meant) for every colour x shape of the demo: the text names
    only the shape ("a triangle", meant: red triangles) or only the colour ("a red shape"), as a first query often
    says less than is meant; the marks carry the rest."""
    table = pq.read_table(engine.bundle.root / "metadata.parquet", columns=["colour", "shape"])
    colours, shapes = (np.asarray(table.column(name).to_pylist()) for name in ("colour", "shape"))
    found = []
    for colour, shape in sorted(set(zip(colours, shapes, strict=True))):
        meant = (colours == colour) & (shapes == shape)
        found += [(f"a {shape}", meant), (f"a {colour} shape", meant)]
    return found


def recall(rows: np.ndarray, relevant: np.ndarray) -> float:
    """Relevant rows among `rows` over min(relevant, len(rows))."""
    return float(relevant[rows].sum()) / min(int(relevant.sum()), len(rows))


def rounds(engine: SearchEngine, queries: list[tuple[str, np.ndarray]], with_bad: bool
           ) -> list[tuple[float, list[float]]]:
    """Per query: R@10 of the text query, and after marking, per weight pair (the grid's order)."""
    embeddings, results = engine.bundle.embeddings, []
    grid = list(itertools.product(LIKE_WEIGHTS, UNLIKE_WEIGHTS if with_bad else (0.0,)))
    for text, relevant in queries:
        base = engine.query_vector(Query((Term(text=text),)))
        rows, _ = engine.bundle.index.query(base, TOP)
        good = [row for row in rows if relevant[row]][:GOOD]
        bad = [row for row in rows if not relevant[row]][:BAD] if with_bad else []
        before = recall(rows, relevant)
        if not good:
            results.append((before, [before] * len(grid)))
            continue
        after = [recall(engine.bundle.index.query(feedback.moved(base, embeddings[good], embeddings[bad], weights),
                                                  TOP)[0], relevant) for weights in grid]
        results.append((before, after))
    return results


def main() -> int:
    """Print R@10 before and after, per weight pair, with and without marked-bad results."""
    print(common.machine())
    engine = SearchEngine(ClipEncoder.load(DEMO_SPEC), Bundle.load(DEMO_INDEX_DIR))
    queries = classes(engine)
    print(f"{len(queries)} class queries on the demo ({len(engine.bundle.catalog)} items); marks: the first "
          f"{GOOD} of the class in the text query's top {TOP}, and the first {BAD} of other classes as bad")
    rows = []
    for with_bad in (False, True):
        results = rounds(engine, queries, with_bad)
        if not with_bad:
            markable = sum(before > 0 for before, _ in results)
            print(f"{markable} of {len(results)} queries had an item of the class in their top {TOP} to mark; the "
                  "others keep their R@10")
            shipped = list(itertools.product(LIKE_WEIGHTS, (0.0,))).index((feedback.LIKE_WEIGHT, 0.0))
            marked = [(before, afters[shipped]) for before, afters in results if before > 0]
            print(f"those {markable}, shipped like weight, {GOOD} good: R@10 {np.mean([b for b, _ in marked]):.3f} "
                  f"-> {np.mean([a for _, a in marked]):.3f}")
        before = float(np.mean([pair[0] for pair in results]))
        grid = list(itertools.product(LIKE_WEIGHTS, UNLIKE_WEIGHTS if with_bad else (0.0,)))
        for at, (like, unlike) in enumerate(grid):
            after = [pair[1][at] for pair in results]
            worse = sum(a < b - 1e-9 for a, (b, _) in zip(after, results, strict=True))
            rows.append([f"{GOOD} good" + (f" + {BAD} bad" if with_bad else ""), like, unlike, before,
                         float(np.mean(after)), worse])
    common.print_table(["marks", "like weight", "unlike weight", "R@10 text", "R@10 after", "queries worse"], rows)
    print(f"shipped: like weight {feedback.LIKE_WEIGHT}, unlike weight {feedback.UNLIKE_WEIGHT}")
    shipped = {tuple(row[:3]): row for row in rows}
    good = shipped[(f"{GOOD} good", feedback.LIKE_WEIGHT, 0.0)]
    both = shipped[(f"{GOOD} good + {BAD} bad", feedback.LIKE_WEIGHT, feedback.UNLIKE_WEIGHT)]
    common.emit_json({"queries": len(queries), "r10_text": good[3], "r10_good": good[4], "r10_good_bad": both[4]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
