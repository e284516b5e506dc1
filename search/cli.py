"""Command line: `python -m search "QUERY" [--image PATH]... [--not TEXT]... [--index DIR] ...`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import NoReturn

from search.config import EngineConfig
from search.errors import SearchError
from search.query.engine import MAX_TOP_K, Query, Term, load_engine
from search.query.option_spec import OPTIONS
from search.query.options import SearchOptions
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


def format_table(hits: list[Hit]) -> str:
    """Hits as aligned text lines, best first; scores in full (6 decimals), the number --threshold compares."""
    if not hits:
        return "no results above the threshold; lower --threshold"
    return "\n".join(f"{hit.score:9.6f}  {hit.id}  {hit.description}  {hit.image}"
                     + (f"  (+{hit.duplicates} near-duplicates)" if hit.duplicates else "") for hit in hits)


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
        if not query.positives:
            raise SearchError("give a text QUERY and/or --image PATH (see --help)")
        options = options_from_args(args)
        engine = load_engine(config)
        hits = engine.search(query, top_k=args.top_k, threshold=args.threshold, options=options)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2))
    else:
        print(format_table(hits))
    return 0
