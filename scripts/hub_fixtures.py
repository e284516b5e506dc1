"""Fixture Hub repos for a loopback Hub server (olah's mirror mode): plain git repos at reproducible commits.

    python scripts/hub_fixtures.py OUT --cdn http://127.0.0.1:PORT   # prints the repos and commits as JSON

Writes, under OUT (olah's `mirrors-path` layout `OUT/{models,datasets}/ORG/NAME`, branch `main`):
- `datasets/1aurent/unsplash-lite`: laid out like the real data set (README with `dataset_info` and `configs`,
  `data/train-0000N-of-00003.parquet` in its nested schema). Commit `v1`: 9 rows of synthetic shapes whose
  `image_url`s are on the CDN twin (`CDN/ok/NAME`; the last row's is `CDN/404/NAME`, a photo that is gone);
  commit `v2` (main) replaces them with other rows, so a build pinned to `v1` is told apart from one at main.
- `models/fixtures/demo-clip`: the demo CLIP in open_clip's hf-hub layout (open_clip_config.json + safetensors);
  `models/fixtures/no-weights-clip`: the same config without the weights file.
- `datasets/fixtures/demo-bundle`: commit `small`: the first 20 demo items as an index bundle whose manifest names
  `hf-hub:fixtures/demo-clip`; commit `large` (main): the first 40.

Every commit has fixed author, committer and dates, and every file is written byte for byte the same from the
same inputs (the hnswlib graph is built on one thread, `created` is fixed), so the commit SHAs depend only on
the repository's assets and the CDN address (which is in the data set rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as `python scripts/...` from anywhere
from scripts.synthetic_shapes import ShapeSpec, render
from search.bundle.manifest import INDEX_FILE, MANIFEST_FILE
from search.bundle.store import BundleInfo, sha256_of, write_bundle
from search.config import REPO_ROOT, EncoderSpec, HnswParams
from tests.test_sources import UNSPLASH_SCHEMA, unsplash_row

DATASET_REPO = "1aurent/unsplash-lite"
MODEL_REPO = "fixtures/demo-clip"
NO_WEIGHTS_REPO = "fixtures/no-weights-clip"  # a model repo whose weights file is missing
BUNDLE_REPO = "fixtures/demo-bundle"
DEMO_MODEL_DIR = REPO_ROOT / "assets" / "demo" / "model"
DEMO_INDEX_DIR = REPO_ROOT / "assets" / "demo" / "index"
FIXED_CREATED = "2026-01-01T00:00:00+00:00"
PARQUET_FILES = 3
GONE_ROW = 8  # this row's image URL answers 404: the build records one failure
# Chosen so that a few plain queries have exactly one right answer among the rows of each commit.
V1_SPECS = [("red", "circle", "light"), ("blue", "square", "dark"), ("green", "triangle", "light"),
            ("yellow", "star", "dark"), ("purple", "circle", "light"), ("orange", "square", "dark"),
            ("red", "star", "light"), ("blue", "circle", "dark"), ("green", "square", "light")]
V2_SPECS = [("orange", "circle", "light"), ("purple", "star", "dark"), ("yellow", "triangle", "light")]


@dataclasses.dataclass(frozen=True, slots=True)
class Photo:
    """One data set row's picture: its id, caption and JPEG bytes (served by the CDN twin under `name`)."""

    id: str
    caption: str
    jpeg: bytes

    @property
    def name(self) -> str:
        """The file name on the CDN twin."""
        return f"{self.id}.jpg"


@dataclasses.dataclass(frozen=True, slots=True)
class FixtureRepos:
    """What `write_fixture_repos` made: the mirror folder and the commit SHAs tests pin."""

    root: Path
    dataset_v1: str
    dataset_v2: str
    model_commit: str
    bundle_small: str
    bundle_large: str

    def as_json(self) -> dict[str, Any]:
        """The repos and commits, for the command line."""
        return {"root": str(self.root), "dataset": DATASET_REPO, "model": MODEL_REPO, "bundle": BUNDLE_REPO,
                **{key: value for key, value in dataclasses.asdict(self).items() if key != "root"}}


def photos(specs: list[tuple[str, str, str]], prefix: str, seed: int) -> list[Photo]:
    """Rendered pictures of `specs` (96 px JPEGs, deterministic for the seed)."""
    rng = random.Random(seed)
    result = []
    for number, (colour, shape, background) in enumerate(specs):
        spec = ShapeSpec(colour, shape, background)
        buffer = io.BytesIO()
        render(spec, rng, 96).save(buffer, "JPEG", quality=90)
        result.append(Photo(f"{prefix}-{number:03d}", spec.caption, buffer.getvalue()))
    return result


def dataset_photos() -> dict[str, list[Photo]]:
    """The pictures of each data set commit, by commit name."""
    return {"v1": photos(V1_SPECS, "fx1", seed=1), "v2": photos(V2_SPECS, "fx2", seed=2)}


def git_commit(repo: Path, message: str, day: int) -> str:
    """Commit everything in `repo` (created on first use, branch main) at a fixed date; returns the SHA."""
    stamp = f"2026-01-{day:02d}T12:00:00+00:00"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Fixture", "GIT_AUTHOR_EMAIL": "fixture@example.invalid",
           "GIT_COMMITTER_NAME": "Fixture", "GIT_COMMITTER_EMAIL": "fixture@example.invalid",
           "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    if not (repo / ".git").exists():
        git("init", "-q", "-b", "main")
    git("add", "-A", ".")
    git("commit", "-q", "--no-gpg-sign", "-m", message)
    return git("rev-parse", "HEAD")


def _clear_worktree(repo: Path) -> None:
    for path in repo.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def dataset_card(rows: int) -> str:
    """The README of the data set repo: `dataset_info` (features, split size) and `configs`, as the Hub writes them."""
    from datasets import DatasetInfo, Features
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    info = DatasetInfo(features=Features.from_arrow_schema(UNSPLASH_SCHEMA),
                       splits=[{"name": "train", "num_bytes": 0, "num_examples": rows}])
    card = DatasetCardData(license="other", configs=[{"config_name": "default",
                                                      "data_files": [{"split": "train", "path": "data/train-*"}]}])
    DatasetInfosDict({"default": info}).to_dataset_card_data(card)
    return f"---\n{card.to_yaml()}\n---\n\n# Unsplash Lite (test fixture)\n\nSynthetic rows in the real schema.\n"


def write_dataset_commit(repo: Path, pictures: list[Photo], cdn: str) -> None:
    """The data set files for one commit: README and the rows split over three parquet files."""
    _clear_worktree(repo)
    rows = []
    for number, photo in enumerate(pictures):
        fault = "404" if photo.id.startswith("fx1") and number == GONE_ROW else "ok"
        rows.append(unsplash_row(photo.id, f"{cdn}/{fault}/{photo.name}", number + 1,
                                 photo={"description": photo.caption}))
    (repo / "data").mkdir()
    per_file = -(-len(rows) // PARQUET_FILES)
    for part in range(PARQUET_FILES):
        chunk = rows[part * per_file:(part + 1) * per_file]
        path = repo / "data" / f"train-{part:05d}-of-{PARQUET_FILES:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=UNSPLASH_SCHEMA), path)
    (repo / "README.md").write_text(dataset_card(len(rows)), encoding="utf-8")


def write_model_repo(repo: Path, weights: bool = True) -> None:
    """The demo CLIP's files as an open_clip hf-hub repo (without its weights file unless `weights`)."""
    repo.mkdir(parents=True)
    for name in ("open_clip_config.json", "open_clip_model.safetensors")[:2 if weights else 1]:
        shutil.copyfile(DEMO_MODEL_DIR / name, repo / name)
    (repo / "README.md").write_text("---\nlibrary_name: open_clip\nlicense: mit\n---\n\n"
                                    "# demo-clip (test fixture)\n\nThe tiny CLIP of assets/demo/model.\n")


def write_bundle_commit(repo: Path, count: int) -> None:
    """The first `count` demo items as a bundle naming the hf-hub model, written reproducibly."""
    _clear_worktree(repo)
    table = pq.read_table(DEMO_INDEX_DIR / "metadata.parquet").slice(0, count)
    embeddings = np.load(DEMO_INDEX_DIR / "embeddings.npy")[:count]
    for image in table.column("image").to_pylist():
        (repo / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_INDEX_DIR / image, repo / image)
    info = BundleInfo(EncoderSpec(f"hf-hub:{MODEL_REPO}", None), HnswParams(m=16, ef_construction=100, ef_search=64),
                      source="synthetic-shapes", source_revision="seed=2000")
    manifest = write_bundle(repo, embeddings, table, info)
    _single_threaded_graph(repo / INDEX_FILE, embeddings, info.hnsw)
    files = {**manifest.files, INDEX_FILE: sha256_of(repo / INDEX_FILE)}
    fixed = dataclasses.replace(manifest, created=FIXED_CREATED, files=files)
    text = json.dumps(fixed.to_json(), indent=2, ensure_ascii=False) + "\n"
    (repo / MANIFEST_FILE).write_text(text, encoding="utf-8")
    (repo / "README.md").write_text(f"# demo-bundle (test fixture)\n\n{count} demo items.\n", encoding="utf-8")


def _single_threaded_graph(path: Path, embeddings: np.ndarray, params: HnswParams) -> None:
    # hnswlib inserts on several threads, so the graph's bytes (and the commit) would vary from run to run.
    graph = hnswlib.Index(space="cosine", dim=embeddings.shape[1])
    graph.init_index(max_elements=len(embeddings), ef_construction=params.ef_construction, M=params.m,
                     random_seed=100)
    graph.add_items(embeddings, np.arange(len(embeddings)), num_threads=1)
    graph.save_index(str(path))


def write_fixture_repos(root: Path, cdn: str) -> FixtureRepos:
    """Write every fixture repo under `root` (which must not exist yet); image URLs point at `cdn`."""
    root.mkdir(parents=True)
    dataset = root / "datasets" / DATASET_REPO
    dataset.mkdir(parents=True)
    pictures = dataset_photos()
    write_dataset_commit(dataset, pictures["v1"], cdn.rstrip("/"))
    dataset_v1 = git_commit(dataset, "Add Unsplash Lite fixture rows (v1)", day=1)
    write_dataset_commit(dataset, pictures["v2"], cdn.rstrip("/"))
    dataset_v2 = git_commit(dataset, "Replace the rows (v2)", day=2)
    model = root / "models" / MODEL_REPO
    write_model_repo(model)
    model_sha = git_commit(model, "Add the demo CLIP", day=1)
    no_weights = root / "models" / NO_WEIGHTS_REPO
    write_model_repo(no_weights, weights=False)
    git_commit(no_weights, "Add the config (the weights were forgotten)", day=1)
    bundle = root / "datasets" / BUNDLE_REPO
    bundle.mkdir(parents=True)
    write_bundle_commit(bundle, 20)
    small = git_commit(bundle, "Index bundle: 20 items", day=1)
    write_bundle_commit(bundle, 40)
    large = git_commit(bundle, "Index bundle: 40 items", day=2)
    return FixtureRepos(root, dataset_v1, dataset_v2, model_sha, small, large)


def main(argv: list[str] | None = None) -> int:
    """Write the repos and print their commits as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the mirror folder to create (olah's mirrors-path)")
    parser.add_argument("--cdn", default="http://127.0.0.1:8000", help="base URL of the picture server")
    args = parser.parse_args(argv)
    print(json.dumps(write_fixture_repos(args.out, args.cdn).as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
