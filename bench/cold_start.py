"""Cold start of a Space through a real Hub protocol server: process start to first answer, from an empty cache.

    python bench/cold_start.py                  # a 25 000-item bundle and a ViT-B-32 (random weights, 578 MB)
    python bench/cold_start.py --demo           # the test fixtures: 20 demo items, the 3.5 MB demo model

The bundle and the model are git repos served by olah on loopback (tests/hub_server.py; its virtual environment
is created on first use), with HF_ENDPOINT pointing at it: the same HTTP conversation as with the Hub, minus the
network's bandwidth and latency. Each run is a fresh process doing what app.py does at start-up
(`SEARCH_INDEX=OWNER/NAME@COMMIT`), in timed parts: import, the bundle's download (`fetch_bundle`), the model's
files (open_clip's hf-hub download), loading both (`start_engine`, from the cache without asking the server
again), building the UI, one text query.

- cold: an empty HF cache (a Space's first start, or any start without persistent storage);
- warm: the same cache again (the files are there; huggingface_hub still asks the server about each);
- offline: the same cache with HF_HUB_OFFLINE=1 (no request at all): the floor that preloading everything
  (`preload_from_hub`, which only takes model repos: docs/performance.md, Cold start of a Space) could approach.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python bench/...` from anywhere
from bench import common

MODEL_REPO, BUNDLE_REPO = "bench/vit-b-32", "bench/unsplash-index"

CHILD = """
import json, sys, time
t0 = time.perf_counter()
import app
from search.web.startup import start_engine
from search.config import EngineConfig
from search.bundle.hub import fetch_bundle
from search.bundle.store import read_manifest
t1 = time.perf_counter()
folder = fetch_bundle(sys.argv[1])
t2 = time.perf_counter()
model = read_manifest(folder).info.encoder.model
if model.startswith("hf-hub:"):
    from open_clip.pretrained import download_pretrained_from_hf
    download_pretrained_from_hf(model.removeprefix("hf-hub:"), filename="open_clip_config.json")
    download_pretrained_from_hf(model.removeprefix("hf-hub:"))
t3 = time.perf_counter()
import huggingface_hub.constants
huggingface_hub.constants.HF_HUB_OFFLINE = True  # everything is cached now: time the load alone, asking no one
startup = start_engine(EngineConfig(index=sys.argv[1], onnx_text=False))
assert not startup.is_demo, startup.notice
t4 = time.perf_counter()
app.build_app(startup)
t5 = time.perf_counter()
assert len(startup.engine.search_text("a foggy forest at dawn", 10, -1.0)) == 10
t6 = time.perf_counter()
print(json.dumps({"answered": time.time(), "import": t1 - t0, "bundle_download": t2 - t1,
                  "model_download": t3 - t2, "load": t4 - t3, "build_ui": t5 - t4, "first_query": t6 - t5}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="the small test fixtures instead of real sizes")
    parser.add_argument("--n", type=int, default=25_000, help="items in the bundle (real sizes)")
    parser.add_argument("--runs", type=int, default=1, help="cold/warm/offline rounds; medians are reported")
    return parser.parse_args(argv)


def real_size_repos(root: Path, n: int) -> str:
    """A ViT-B-32 model repo (random weights, safetensors) and an n-item bundle repo naming it; the index pin."""
    from scripts.hub_fixtures import git_commit

    model = root / "models" / MODEL_REPO
    model.mkdir(parents=True)
    write_vit_b32_repo(model)
    git_commit(model, "ViT-B-32, random weights", day=1)
    bundle = root / "datasets" / BUNDLE_REPO
    write_index(bundle, n)
    return f"{BUNDLE_REPO}@{git_commit(bundle, f'Index bundle: {n} items', day=1)}"


def write_vit_b32_repo(folder: Path) -> None:
    """open_clip's hf-hub layout: open_clip_config.json and open_clip_model.safetensors."""
    import open_clip
    from safetensors.torch import save_file

    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"),
              "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                 "std": list(open_clip.OPENAI_DATASET_STD)}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = common.random_vit_b32().model.state_dict()
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, folder / "open_clip_model.safetensors")


def write_index(folder: Path, n: int) -> None:
    """An n-item bundle of CLIP-like vectors with Unsplash-like rows, naming the hf-hub ViT-B-32."""
    import pyarrow as pa

    from search.bundle.store import BundleInfo, write_bundle
    from search.config import EncoderSpec

    ids = [f"photo-{row:07d}" for row in range(n)]
    metadata = pa.table({"id": ids, "image": [f"https://images.example/{i}.jpg?w=480" for i in ids],
                         "page_url": [f"https://unsplash.com/photos/{i}" for i in ids],
                         "description": [f"synthetic picture {row}" for row in range(n)],
                         "photographer": [f"Person {row % 997}" for row in range(n)]})
    write_bundle(folder, common.clip_like_vectors(n), metadata,
                 BundleInfo(EncoderSpec(f"hf-hub:{MODEL_REPO}", None), source="synthetic"))


def one_run(index: str, env: dict[str, str]) -> dict[str, float]:
    """A fresh process starting like app.py; the wall time includes interpreter start."""
    start = time.time()
    done = subprocess.run([sys.executable, "-c", CHILD, index], cwd=common.REPO_ROOT, capture_output=True,
                          text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"start-up run failed:\n{done.stderr[-3000:]}")
    parts = json.loads(done.stdout.strip().splitlines()[-1])
    return {"ready_s": parts.pop("answered") - start, **parts}


def size_mb(folder: Path) -> float:
    """Bytes of the files under `folder` (git's own folder left out), in MB."""
    files = [path for path in folder.rglob("*") if path.is_file() and ".git" not in path.parts]
    return sum(path.stat().st_size for path in files) / 1e6


def main(argv: list[str] | None = None) -> int:
    """Write the repos, serve them, time cold, warm and offline starts; print the table and the JSON line."""
    from tests.hub_server import OlahServer, hub_env

    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mirror"
        if args.demo:
            from scripts.hub_fixtures import BUNDLE_REPO as DEMO_BUNDLE
            from scripts.hub_fixtures import write_fixture_repos

            index = f"{DEMO_BUNDLE}@{write_fixture_repos(root, 'http://127.0.0.1:9').bundle_small}"
        else:
            index = real_size_repos(root, args.n)
        bundle_mb, model_mb = size_mb(root / "datasets" / index.split("@")[0]), size_mb(root / "models")
        rows = []
        with OlahServer(root, Path(tmp) / "olah") as hub:
            for round_ in range(args.runs):
                env = hub_env(hub.endpoint, Path(tmp) / f"home-{round_}")
                rows += [("cold", one_run(index, env)), ("warm", one_run(index, env)),
                         ("offline", one_run(index, {**env, "HF_HUB_OFFLINE": "1"}))]
    what = "demo fixtures" if args.demo else f"{args.n}-item bundle, ViT-B-32"
    print(f"start-up through olah on loopback, {what} (bundle {bundle_mb:.1f} MB, model files {model_mb:.1f} MB); "
          f"{common.machine()}")
    keys = ["ready_s", "import", "bundle_download", "model_download", "load", "build_ui", "first_query"]
    common.print_table(["cache", *keys], [[name, *(run[key] for key in keys)] for name, run in rows])
    print("ready_s: process start to first answer; then its parts, in seconds (the downloads in a warm or offline "
          "run are huggingface_hub's cache checks)")
    result = {"bundle_mb": round(bundle_mb, 1), "model_mb": round(model_mb, 1)}
    for name in ("cold", "warm", "offline"):
        runs = [run for kind, run in rows if kind == name]
        result |= {f"{name}_s": round(common.p50([run["ready_s"] for run in runs]), 2),
                   f"{name}_downloads_s": round(common.p50([run["bundle_download"] + run["model_download"]
                                                           for run in runs]), 2)}
    common.emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
