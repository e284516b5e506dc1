"""Build an index bundle from Unsplash Lite, local parquet files or an image folder; resume, rebuild, publish.

    python build_index.py --out unsplash-index                       # 1aurent/unsplash-lite, ViT-B-32
    python build_index.py --images-dir photos/ --out idx --model local-dir:assets/demo/model
    python build_index.py --from idx --out idx --rebuild-index --hnsw-m 16
    python build_index.py --out unsplash-index --push-to me/unsplash-clip
    python build_index.py --out unsplash-index --ray                 # as a Ray Data job (local Ray instance)
    python build_index.py --images-dir photos/ --out idx --ocr       # also the words in each picture (OCR)
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import NoReturn

from search.build.fetch import FetchConfig
from search.build.sources import DEFAULT_DATASET, SourceConfig
from search.config import DEFAULT_MODEL, EncoderSpec, HnswParams
from search.errors import SearchError

LOCAL_RAY = "local"  # --ray without an address
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
DEFAULTS_HNSW, DEFAULTS_FETCH = HnswParams(), FetchConfig()


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _device(text: str) -> str:
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = OneLineParser(prog="build_index.py", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("source (default: the Hub data set)").add_mutually_exclusive_group()
    source.add_argument("--dataset", default=DEFAULT_DATASET, help=f"Hub data set (default {DEFAULT_DATASET})")
    source.add_argument("--data-files", metavar="PATH_OR_GLOB", help="local parquet files with the same schema")
    source.add_argument("--images-dir", type=Path, metavar="DIR", help="a folder of images, searched recursively")
    parser.add_argument("--revision", help="pin the Hub data set to a branch, tag or commit")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (resumed if present)")
    parser.add_argument("--from", dest="base", metavar="DIR|OWNER/NAME[@REV]",
                        help="start from this bundle: keep its items and add new ones, or --rebuild-index")
    parser.add_argument("--rebuild-index", action="store_true",
                        help="with --from: rebuild only the hnswlib index from the stored embeddings")
    parser.add_argument("--retry-failed", action="store_true", help="on resume, try failed items again")
    model = parser.add_argument_group("model")
    model.add_argument("--model", help="open_clip name, hf-hub:ID or local-dir:DIR (default ViT-B-32)")
    model.add_argument("--pretrained", help="pretrained tag or weights file; '' or none for random weights")
    model.add_argument("--device", type=_device, default="auto", help="auto (CUDA when present), cpu, cuda")
    model.add_argument("--batch-size", type=_positive, default=32)
    model.add_argument("--precision", choices=("fp32", "int8"), default="fp32",
                       help="int8: the image tower on int8 weights (~2x faster on CPU) once the first pictures show "
                            "it ranks them as fp32 does (image-to-image recall@10 >= 0.99), else the build stops "
                            "with the figure (docs/building.md)")
    parser.add_argument("--ocr", action="store_true",
                        help="also read the words in each picture (OCR: ~1-3x the time of embedding it with ViT-B-32 "
                             "on CPU) into the bundle: text queries match them, a filter keeps pictures with words "
                             "(pip install -r requirements-ocr.txt)")
    _add_tuning(parser)
    hub = parser.add_argument_group("publishing")
    hub.add_argument("--push-to", metavar="OWNER/NAME", help="upload the bundle to this Hub dataset repo")
    hub.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every failure to stderr")
    return parser


def _add_tuning(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("throughput and checkpoints")
    run.add_argument("--limit", type=_positive, help="only the first N items of the source")
    run.add_argument("--workers", type=_positive, default=8, help="download/decode threads (default 8)")
    run.add_argument("--shard-size", type=_positive, default=512, help="items per checkpoint shard")
    run.add_argument("--image-width", type=int, default=DEFAULTS_FETCH.width,
                     help="CDN rendition width in px (Unsplash ?w=); 0 for the original")
    run.add_argument("--timeout", type=float, default=DEFAULTS_FETCH.timeout_s, help="seconds per request")
    run.add_argument("--retries", type=int, default=DEFAULTS_FETCH.retries, help="retries on 429/5xx/timeouts")
    run.add_argument("--max-bytes", type=_positive, default=DEFAULTS_FETCH.max_bytes, help="largest download")
    run.add_argument("--allow-private-hosts", action="store_true",
                     help="allow downloads from loopback and private addresses (for local mirrors)")
    scale = parser.add_argument_group("Ray Data (pip install -r requirements-scale.txt)")
    scale.add_argument("--ray", nargs="?", const=LOCAL_RAY, metavar="ADDRESS",
                       help="run fetch and embedding as a Ray Data job: on a local Ray instance, or on the cluster "
                            "at ADDRESS (auto, HOST:6379 or ray://HOST:10001)")
    scale.add_argument("--ray-window", type=_positive, default=50_000, metavar="N",
                       help="items per Ray Data job (default 50000); each job loads the model on its workers")
    ann = parser.add_argument_group("hnswlib index")
    ann.add_argument("--hnsw-m", type=_positive, default=DEFAULTS_HNSW.m)
    ann.add_argument("--ef-construction", type=_positive, default=DEFAULTS_HNSW.ef_construction)
    ann.add_argument("--ef-search", type=_positive, default=DEFAULTS_HNSW.ef_search)


def encoder_spec(args: argparse.Namespace) -> EncoderSpec | None:
    """The model flags as a spec; None when neither is given (the default model, or the --from bundle's)."""
    if args.model is None and args.pretrained is None:
        return None
    model = args.model or DEFAULT_MODEL
    pretrained = args.pretrained
    if pretrained is None and Path(model).expanduser().is_dir():  # a folder named without its prefix
        raise SearchError(f"--model {model} is a folder: name it --model local-dir:{model} "
                          "(a folder with open_clip_config.json and its weights)")
    if pretrained is None and not model.startswith(("hf-hub:", "local-dir:")):
        # A silent random-weights index would look fine and search badly: make the user say so.
        raise SearchError(f"--model {model} needs --pretrained TAG (see open_clip.list_pretrained()), "
                          "or --pretrained none for random weights (speed tests only)")
    if pretrained is not None and pretrained.strip().lower() in ("", "none"):
        pretrained = None
    return EncoderSpec(model, pretrained)


def build_config(args: argparse.Namespace):  # -> BuildConfig; imported lazily so --help stays fast
    """The BuildConfig the arguments describe."""
    from search.build.pipeline import BuildConfig

    source = SourceConfig(args.dataset, args.revision, args.data_files, args.images_dir)
    fetch = FetchConfig(args.image_width or None, args.timeout, args.retries, DEFAULTS_FETCH.backoff_s,
                        args.max_bytes, allow_private_hosts=args.allow_private_hosts)
    return BuildConfig(args.out, source, encoder_spec(args), args.device, args.batch_size, args.shard_size,
                       args.workers, args.limit, HnswParams(args.hnsw_m, args.ef_construction, args.ef_search),
                       fetch, args.base, args.retry_failed, not args.no_progress, args.precision, args.ocr)


def run(args: argparse.Namespace) -> None:
    """Build, rebuild or extend the bundle, then publish it when asked."""
    if args.rebuild_index:
        if not args.base:
            raise SearchError("--rebuild-index needs --from DIR|OWNER/NAME[@REV] (the bundle to re-index)")
        if args.ray:
            raise SearchError("--rebuild-index embeds nothing, so it runs without Ray: leave out --ray")
        if args.ocr:
            raise SearchError("--rebuild-index reads no pictures, so it runs without --ocr: leave out --ocr")
        from search.build.finalize import rebuild_index

        manifest = rebuild_index(args.base, args.out, HnswParams(args.hnsw_m, args.ef_construction, args.ef_search))
    elif args.ray:
        if args.precision != "fp32":
            raise SearchError("--precision int8 runs without Ray: leave out --ray or --precision")
        from search.build.ray_build import RayOptions, build_bundle_on_ray

        address = None if args.ray == LOCAL_RAY else args.ray
        manifest = build_bundle_on_ray(build_config(args), RayOptions(address, args.ray_window))
    else:
        from search.build.pipeline import build_bundle

        manifest = build_bundle(build_config(args))
    print(f"bundle {args.out}: {manifest.count} items, {manifest.info.failures} failures")
    if args.push_to:
        from search.build.publish import push_bundle

        sha = push_bundle(args.out, args.push_to, private=args.private)
        print(f"pushed to {args.push_to}; pin it as {args.push_to}@{sha}")


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    # Libraries (open_clip logs on the root logger) stay at WARNING; our own lines at INFO or DEBUG.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("search").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        run(args)
    except SearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
