"""Peers side by side: our text-query path against rclip's and clip-retrieval's, same model, same items.

    python bench/peers.py                         # 25 000 and 1 000 000 items (bundles: bench/bundles.py)
    python bench/peers.py --n 25000 --rounds 2

The peers run their own code, installed from PyPI into virtual environments of their own under
~/.cache/clip-search-bench/peers-venv (PEER_SETUP below; never in requirements files: their pins clash with
ours, e.g. clip-retrieval wants numpy < 2 and pyarrow < 16). Every path gets the same random-weight ViT-B-32
(one safetensors file), the same 20 queries and the same items (the bundle's embeddings.npy), k = 10:

- ours: `SearchEngine.search_text` as the app runs it: the text tower on ONNX Runtime over the query's own
  tokens, hnswlib (M 32, ef_search 128), hits built from the catalog; query cache off.
- rclip 3.3.0: `rclip.model.Model.compute_similarities_to_text` (its ONNX text tower at the full 77-token
  context, a brute-force matmul over every item, Python's `sorted` over every (score, row) pair), then the top
  10 as `RClip.search` takes them. Its session is pointed at an ONNX export of our model's full text tower
  (input "input", int64 (batch, 77), as rclip's own textual.onnx) through RCLIP_DATADIR, so nothing is
  downloaded. Not timed: `RClip.search` first reads every vector from its SQLite database on each query,
  which would only add to its time.
- clip-retrieval 2.45.0: its back end's `KnnService.query` (open_clip `encode_text` at 77 tokens, faiss
  `search_and_reconstruct` on a flat inner-product index, its `ParquetMetadataProvider` over our
  metadata.parquet). Installed with --no-deps plus the packages clip_back.py imports; torch and open_clip come
  from our environment (their pin wants open_clip < 3: `encode_text` is the same call). clip_back.py is
  imported without running the package's __init__, which imports every other tool of theirs (wandb,
  sentence-transformers, all_clip, ...) and none of the query path.

Each path runs in its own process (ours in this one), in alternating blocks of all queries: a ratio is a
peer's median over ours, measured in one run. Every path's top 10 is compared with an exact search (recall@10).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common
from bench.bundles import CACHE, cached_bundle, cached_weights

VENVS = CACHE / "peers-venv"
K = 10
PEER_SETUP = {
    "rclip": [["pip", "install", "rclip==3.3.0"]],
    "clip-retrieval": [
        ["pip", "install", "--no-deps", "clip-retrieval==2.45.0"],
        ["pip", "install", "numpy<2", "faiss-cpu<2", "flask>=3,<4", "flask_restful<1", "flask_cors>=4,<5",
         "fire>=0.4,<0.6", "pandas<3", "pyarrow<16", "fsspec", "h5py<4", "prometheus-client<1", "tqdm"],
    ],
}
RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"  # rclip.model_download.MODEL_SUBDIR

WORKER_LOOP = r"""
import json, sys, time
queries = json.loads(sys.argv[-1])
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() != "block":
        break
    search(queries[0]); search(queries[0])  # warm-up, as every block of the other paths
    times, tops = [], []
    for query in queries:
        start = time.perf_counter()
        rows = search(query)
        times.append((time.perf_counter() - start) * 1000)
        tops.append([int(row) for row in rows])
    print(json.dumps({"times": times, "tops": tops}), flush=True)
"""

RCLIP_WORKER = r"""
import itertools, os, sys
import numpy as np
os.environ["RCLIP_DATADIR"] = sys.argv[2]
from rclip.model import Model
features = np.load(sys.argv[1], mmap_mode=None)
model = Model()
def search(query):
    similarities = model.compute_similarities_to_text(features, [query], [])
    return [row for _, row in itertools.islice(similarities, 10)]
""" + WORKER_LOOP

CLIP_RETRIEVAL_WORKER = r"""
import importlib.util, sys, types
# The package's __init__ imports every tool (inference, filter, front, end2end: wandb, sentence-transformers,
# all_clip, ...); the back end needs none of them, so clip_back.py is imported as it is, without that __init__.
package = types.ModuleType("clip_retrieval")
package.__path__ = list(importlib.util.find_spec("clip_retrieval").submodule_search_locations)
sys.modules["clip_retrieval"] = package
import faiss, numpy as np, open_clip, torch
from clip_retrieval.clip_back import ClipResource, KnnService, ParquetMetadataProvider
model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=sys.argv[2])
model.eval()
embeddings = np.load(sys.argv[1])
index = faiss.IndexFlatIP(embeddings.shape[1])
index.add(embeddings)
del embeddings
resource = ClipResource(device="cpu", model=model, preprocess=preprocess,
                        tokenizer=open_clip.get_tokenizer("ViT-B-32"), model_txt_mclip=None, safety_model=None,
                        violence_detector=None, metadata_provider=ParquetMetadataProvider(sys.argv[3]),
                        image_index=index, text_index=None, ivf_old_to_new_mapping=None,
                        columns_to_return=["id", "image", "page_url", "description", "photographer"],
                        metadata_is_ordered_by_ivf=False, aesthetic_embeddings=None)
service = KnnService(clip_resources={"bundle": resource})
def search(query):
    results = service.query(text_input=query, modality="image", num_images=10, num_result_ids=10,
                            deduplicate=False)
    return [result["id"] for result in results]
""" + WORKER_LOOP


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[25_000, 1_000_000], help="bundle sizes")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks of all queries per path")
    parser.add_argument("--peers", nargs="+", default=list(PEER_SETUP), choices=list(PEER_SETUP))
    return parser.parse_args(argv)


def peer_python(name: str) -> Path:
    """The peer's virtual environment (created and filled from PyPI on first use); its python."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        for command in PEER_SETUP[name]:
            subprocess.run([str(python), "-m", *command], check=True)
        if name == "clip-retrieval":  # torch and open_clip from our environment, after its own packages
            site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
            (Path(site) / "zz-main-venv.pth").write_text(_our_site_packages() + "\n")
    return python


def _our_site_packages() -> str:
    import sysconfig

    return sysconfig.get_paths()["purelib"]


def rclip_data_dir(encoder: Any) -> Path:
    """RCLIP_DATADIR laid out as rclip's download leaves it: our full 77-token text tower as its textual.onnx,
    open_clip's BPE vocabulary (the one rclip ships a copy of) as its tokenizer."""
    import open_clip

    folder = CACHE / "peers" / "rclip-data"
    model_file = folder / RCLIP_MODEL_DIR / "textual.onnx"
    if not model_file.is_file():
        export_full_text_tower(encoder, model_file)
    vocab = folder / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    if not vocab.is_file():
        vocab.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(open_clip.__file__).parent / vocab.name, vocab)
    return folder


def export_full_text_tower(encoder: Any, path: Path) -> None:
    """open_clip `encode_text` at the full context as ONNX, rclip's interface: int64 "input" (batch, 77)."""
    import numpy as np
    import onnxruntime
    import torch

    class FullTextTower(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(tokens)

    tokens = encoder.tokenizer(["a photo of a dog", "snow"])  # batch 2: torch.export specialises a batch of 1
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".partial.onnx")
    torch.onnx.export(FullTextTower(encoder.model).eval(), (tokens,), str(partial), input_names=["input"],
                      output_names=["output"], dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                      external_data=False, verbose=False)
    with torch.no_grad():
        expected = encoder.model.encode_text(tokens[:1]).numpy()
    got = onnxruntime.InferenceSession(str(partial)).run(None, {"input": tokens[:1].numpy()})[0]
    if not np.allclose(got, expected, atol=1e-4):
        raise SystemExit(f"the ONNX export for rclip differs from open_clip by {np.abs(got - expected).max()}")
    partial.rename(path)


class Worker:
    """A peer in its own process: it loads, then answers each "block" line with its timings and top rows."""

    def __init__(self, python: Path, script: str, args: list[str]) -> None:
        self.process = subprocess.Popen([str(python), "-c", script, *args, json.dumps(common.QUERIES)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/tmp")
        for line in self.process.stdout:  # type: ignore[union-attr]
            if line.strip() == "ready":
                return
        raise SystemExit(f"peer {script.split()[1]} did not start (exit {self.process.wait()})")

    def block(self) -> dict[str, list]:
        """Time every query once (after two warm-up calls)."""
        self.process.stdin.write("block\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise SystemExit(f"peer process exited ({self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        """Ask the process to end and wait for it."""
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=60)


def start_peers(names: list[str], bundle: Path, encoder: Any, metadata_dir: Path) -> dict[str, Worker]:
    """One worker per peer over this bundle."""
    workers = {}
    embeddings = str(bundle / "embeddings.npy")
    if "rclip" in names:
        workers["rclip"] = Worker(peer_python("rclip"), RCLIP_WORKER, [embeddings, str(rclip_data_dir(encoder))])
    if "clip-retrieval" in names:
        (metadata_dir / "metadata.parquet").unlink(missing_ok=True)
        (metadata_dir / "metadata.parquet").symlink_to(bundle / "metadata.parquet")
        workers["clip-retrieval"] = Worker(peer_python("clip-retrieval"), CLIP_RETRIEVAL_WORKER,
                                           [embeddings, str(cached_weights()), str(metadata_dir)])
    return workers


def compare(engine: Any, workers: dict[str, Worker], rounds: int) -> dict[str, dict[str, list]]:
    """Alternating blocks: ours, then each peer; timings and top rows per path."""
    def ours(query: str) -> list[int]:
        return [engine.bundle.catalog.row_of(hit.id) for hit in engine.search_text(query, K, -1.0)]

    results: dict[str, dict[str, list]] = {name: {"times": [], "tops": []} for name in ["ours", *workers]}
    results["exact"] = {"times": [], "tops": [exact_top(engine, query) for query in common.QUERIES]}
    for _ in range(rounds):
        results["ours"]["times"] += common.timed_each(ours, common.QUERIES)
        results["ours"]["tops"] = [ours(query) for query in common.QUERIES]
        for name, worker in workers.items():
            block = worker.block()
            results[name]["times"] += block["times"]
            results[name]["tops"] = block["tops"]
    return results


def exact_top(engine: Any, query: str) -> list[int]:
    """The true top-10 rows for our query vector (numpy over every item; not timed)."""
    import numpy as np

    scores = np.asarray(engine.bundle.embeddings) @ engine.encoder.encode_text([query])[0]
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])].tolist()


def our_engine(bundle: Path, encoder: Any) -> Any:
    """The app's engine over this bundle: ONNX text tower, no query cache."""
    from search.bundle.store import Bundle
    from search.query.engine import SearchEngine

    return SearchEngine(encoder, Bundle.load(bundle, cache_dir=CACHE / "peers" / "search-cache"), text_cache_size=0)


def our_encoder(bundle: Path) -> Any:
    """The bundle's ViT-B-32 (the cached random weights) with its text tower on ONNX Runtime."""
    from search.bundle.store import read_manifest
    from search.model.encoder import ClipEncoder
    from search.model.onnx_text import load_onnx_text

    encoder = ClipEncoder.load(read_manifest(bundle).info.encoder.resolved(bundle))
    encoder.onnx_text = load_onnx_text(encoder, CACHE / "peers" / "search-cache")
    return encoder


def report(n: int, results: dict[str, dict[str, list]]) -> list[dict]:
    """Print the table for one size; its rows."""
    exact = results.pop("exact")["tops"]
    ours_p50 = common.p50(results["ours"]["times"])
    rows = []
    for name, result in results.items():
        rows.append({"n": n, "path": name, "p50_ms": round(common.p50(result["times"]), 2),
                     "p95_ms": round(common.pct(result["times"], 95), 2),
                     "ratio_to_ours": round(common.p50(result["times"]) / ours_p50, 2),
                     "top10_vs_exact": _overlap(result["tops"], exact)})
    common.print_table(list(rows[0]), [list(row.values()) for row in rows])
    return rows


def _overlap(tops: list[list[int]], truth: list[list[int]]) -> float:
    """Share of the true top-10 rows found, over all queries (recall@10)."""
    return round(sum(len(set(a) & set(b)) for a, b in zip(tops, truth, strict=True)) / (K * len(truth)), 3)


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the bundles and the peers' environments, time the paths, print tables and the JSON line."""
    import tempfile

    args = parse_args(argv)
    print(f"peers, text query, k = {K}, {len(common.QUERIES)} queries x {args.rounds} rounds; {common.machine()}")
    bundles = {n: cached_bundle(n) for n in args.n}
    encoder = our_encoder(bundles[args.n[0]])
    rows = []
    for n, bundle in bundles.items():
        engine = our_engine(bundle, encoder)
        with tempfile.TemporaryDirectory() as metadata_dir:
            workers = start_peers(args.peers, bundle, encoder, Path(metadata_dir))
            try:
                results = compare(engine, workers, args.rounds)
            finally:
                for worker in workers.values():
                    worker.close()
        print(f"\n{n} items")
        rows += report(n, results)
        del engine
    print("ratio_to_ours: the path's median over ours (above 1: ours is faster); top10_vs_exact: recall@10 against "
          "an exact numpy search with our query vector")
    common.emit_json({"rows": rows, "threads": os.cpu_count()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
