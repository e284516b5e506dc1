"""Command line: `python -m search "QUERY" [--image PATH]... [--not TEXT]... [--index DIR] ...`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from dataclasses import replace
from typing import NoReturn

from search.config import EngineConfig
from search.errors import SearchError
from search.query.engine import MAX_TOP_K, Query, SearchEngine, Term, load_engine
from search.query.option_spec import OPTIONS
from search.query.options import SearchOptions
from search.query.understand import with_readings
from search.types import Hit


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    parser = OneLineParser(prog="python -m search", description="Search an image index by text and/or images.")
    parser.add_argument("query", nargs="?", help="text describing the pictures you want")
    parser.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="an example image (repeatable; combined with the text)")
    parser.add_argument("--not", dest="negatives", action="append", default=[], metavar="TEXT",
                        help="text to steer away from (repeatable)")
    parser.add_argument("--index", help="bundle folder or Hub repo owner/name[@rev] "
                        "(default: $SEARCH_INDEX, else the bundled demo)")
    parser.add_argument("--top-k", type=int, default=10, help=f"most hits to return, 0..{MAX_TOP_K} (default 10)")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="lowest cosine similarity to keep, -1..1 (default 0.0)")
    add_option_arguments(parser)
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: $SEARCH_DEVICE, else cpu)")
    parser.add_argument("--qdrant", metavar="URL", help="serve vectors from a Qdrant server (http://host:6333) "
                        "loaded by `python -m search.build.qdrant_load`, or from :memory: (qdrant-client's embedded "
                        "mode, loaded from the bundle) (default: $SEARCH_QDRANT_URL)")
    parser.add_argument("--collection", metavar="NAME",
                        help="the Qdrant collection (default: $SEARCH_QDRANT_COLLECTION)")
    parser.add_argument("--json", action="store_true", help="print the hits as a JSON array")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """A flag per search option (search/query/option_spec.py), its earlier names too; values are checked by
    SearchOptions.from_params, not here."""
    group = parser.add_argument_group("filters and result options (see docs/search-options.md)")
    for spec in OPTIONS:
        aliases = ["--" + alias.replace("_", "-") for alias in spec.aliases]
        shown = f"{spec.help} (default {spec.default})" if spec.default not in ("", None) else spec.help
        group.add_argument(spec.flag, *aliases, dest=spec.name, metavar=spec.metavar or spec.name.upper(),
                           help=shown.replace("%", "%%"))


def options_from_args(args: argparse.Namespace) -> SearchOptions:
    """The SearchOptions the flags describe (BadQueryError for a bad value)."""
    return SearchOptions.from_params({name: value for name, value in vars(args).items() if value is not None})


def query_from_args(args: argparse.Namespace) -> Query:
    """The combined query the arguments describe (validated later by the engine)."""
    terms = [Term(text=args.query)] if args.query is not None else []
    terms += [Term(image=path) for path in args.image]
    return Query(tuple(terms), tuple(args.negatives))


SORT_COLUMNS = {"date": "date", "popularity": "downloads"}
"""The field a sort orders by, shown as a column when the hits are sorted by it."""
MAX_DESCRIPTION = 60  # terminal columns; a longer description is cut with an ellipsis


def text_width(text: str) -> int:
    """Terminal columns `text` takes: wide (CJK, emoji) characters two, combining marks and controls none."""
    return sum(0 if unicodedata.combining(char) or unicodedata.category(char) in ("Cc", "Cf", "Mn", "Me")
               else 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1 for char in text)


def fitted(text: str, width: int) -> str:
    """`text` on one line, cut to `width` columns with an ellipsis, padded to exactly `width` columns."""
    text = " ".join(text.split())
    if text_width(text) > width:
        while text and text_width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - text_width(text))


def format_table(hits: list[Hit], sort: str = "relevance") -> str:
    """Hits as aligned columns, best first: score in full (6 decimals, the number --threshold compares), the sort's
    own field when sorted by one (date, downloads), id, description, picture."""
    key = SORT_COLUMNS.get(sort)
    rows = [[f"{hit.score:9.6f}", *([str(getattr(hit, key) or "-")] if key else []), hit.id,
             hit.description or "", hit.image + (f"  (+{hit.duplicates} near-duplicates)" if hit.duplicates else "")]
            for hit in hits]
    widths = [min(max(text_width(" ".join(row[col].split())) for row in rows), MAX_DESCRIPTION)
              for col in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(fitted(cell, width) for cell, width in zip(row, widths, strict=False)), row[-1]])
                     for row in rows)


def nothing_found(engine: SearchEngine, query: Query, options: SearchOptions) -> str:
    """Why no hit came back: the filters keep no item at all, or every kept item scores under --threshold."""
    if options.filters.active and not engine.search(query, top_k=1, threshold=-1.0,
                                                    options=replace(options, cutoff="flat", offset=0)):
        return "no item passes the filters; loosen or drop them"
    return "no results above the threshold; lower --threshold"


def main(argv: list[str] | None = None) -> int:
    """Run one search and print the hits; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("huggingface_hub").propagate = False  # it prints its own warnings; not twice
    query = query_from_args(args)
    try:
        config = EngineConfig.from_env()
        config = replace(config, index=args.index or config.index, device=args.device or config.device)
        config = replace(config, qdrant_url=args.qdrant or config.qdrant_url,
                         qdrant_collection=args.collection or config.qdrant_collection)
        options = options_from_args(args)
        if options.like and not args.image and not (args.query or "").strip():  # "more like these" alone
            query = Query((), query.negatives)
        if not query.positives and not options.like:
            raise SearchError("give a text QUERY and/or --image PATH, or --like ID,ID (see --help)")
        engine = load_engine(config)
        hits = engine.search(query, top_k=args.top_k, threshold=args.threshold, options=options)
        readings = engine.understood(query, options)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if readings:  # on stderr: the hits on stdout stay a table or JSON to pipe on
        print("read from the query: " + "; ".join(f"{reading.kind} {reading.label}" for reading in readings)
              + " (--not-understood KINDS or --understand false to search the words only)", file=sys.stderr)
    if args.json:
        print(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2))
    else:  # "no item passes the filters" counts the filters read from the query too
        print(format_table(hits, options.sort) if hits else nothing_found(engine, query,
                                                                            with_readings(options, readings)))
    return 0
