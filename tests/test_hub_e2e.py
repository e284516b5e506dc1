"""End to end through a real Hub-protocol server on loopback: olah 0.5.4 (tests/hub_server.py) serving the git
repos of scripts/hub_fixtures.py, with HF_ENDPOINT pointing at it and empty caches, as a Space starts.

What runs over HTTP here, with huggingface_hub 2.4, datasets 5.2 and open_clip 3.3: `datasets` streaming the
parquet files of `1aurent/unsplash-lite` at a pinned commit (the rows' pictures come from a loopback CDN twin),
open_clip fetching `hf-hub:fixtures/demo-clip`, and `snapshot_download` of `fixtures/demo-bundle` at a commit
(`--from` add and `--rebuild-index`, the CLI's `--index`, and `SEARCH_INDEX=... python app.py`). A missing
revision, a missing repo and a server that dies mid-download are clear one-line errors, and the app serves the
demo with the reason. olah has no upload routes, so `--push-to` is shown to fail clearly against it; the upload
itself stays tested against an injected HfApi-like object (tests/test_publish.py).
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from scripts.hub_fixtures import (
    BUNDLE_REPO,
    DATASET_REPO,
    MODEL_REPO,
    NO_WEIGHTS_REPO,
    FixtureRepos,
    dataset_photos,
    write_fixture_repos,
)
from search.config import REPO_ROOT
from tests.hub_server import DyingProxy, HubServerError, OlahServer, free_port, hub_env
from tests.loopback import LoopbackServer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")]

MISSING_COMMIT = "0123456789abcdef0123456789abcdef01234567"
DEMO_IMAGES = REPO_ROOT / "assets" / "demo" / "index" / "images"
SMALL_IDS = [f"shape-{n:03d}" for n in range(20)]  # the bundle repo's first commit; main has 40 items
BLUE_CIRCLE = "shape-008"  # the only blue circle among them


@pytest.fixture(scope="session")
def cdn() -> Iterator[LoopbackServer]:
    """The CDN twin serving every fixture row's picture."""
    with LoopbackServer() as server:
        for pictures in dataset_photos().values():
            for photo in pictures:
                server.add(photo.name, photo.jpeg)
        yield server


@pytest.fixture(scope="session")
def repos(tmp_path_factory: pytest.TempPathFactory, cdn: LoopbackServer) -> FixtureRepos:
    """The fixture repos, their image URLs on the CDN twin."""
    return write_fixture_repos(tmp_path_factory.mktemp("hub") / "mirror", cdn.base_url)


@pytest.fixture(scope="session")
def hub(repos: FixtureRepos) -> Iterator[OlahServer]:
    """olah serving the fixture repos; a missing package index is a failure with the reason, never a skip."""
    server = OlahServer(repos.root, repos.root.parent / "olah")
    try:
        server.__enter__()
    except HubServerError as exc:
        pytest.fail(f"the loopback Hub server could not start: {exc}")
    yield server
    server.stop()


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """A command of this repository run with `env`."""
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed on stderr (asserting it is one line and the exit code is 1)."""
    assert done.returncode == 1, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def test_fixture_commits_depend_only_on_the_assets_and_the_cdn(tmp_path: Path, repos: FixtureRepos,
                                                                 cdn: LoopbackServer) -> None:
    same_cdn = write_fixture_repos(tmp_path / "same", cdn.base_url)
    other_cdn = write_fixture_repos(tmp_path / "other", "http://127.0.0.1:1")
    commits = ("dataset_v1", "dataset_v2", "model_commit", "bundle_small", "bundle_large")
    assert [getattr(same_cdn, name) for name in commits] == [getattr(repos, name) for name in commits]
    assert other_cdn.dataset_v1 != repos.dataset_v1  # the rows name the CDN
    assert (other_cdn.model_commit, other_cdn.bundle_small) == (repos.model_commit, repos.bundle_small)


# --- build_index.py through the Hub ---

@pytest.fixture(scope="session")
def built(hub: OlahServer, repos: FixtureRepos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle built from the pinned data set commit with the hf-hub model, everything fetched over HTTP."""
    out = tmp_path_factory.mktemp("built") / "bundle"
    done = run(["build_index.py", "--dataset", DATASET_REPO, "--revision", repos.dataset_v1, "--model",
                f"hf-hub:{MODEL_REPO}", "--out", str(out), "--allow-private-hosts", "--no-progress",
                "--batch-size", "4", "--workers", "2", "--timeout", "5", "--retries", "0"],
               hub_env(hub.endpoint, out.parent))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"bundle {out}: 8 items, 1 failures"
    return out


def test_build_streams_the_pinned_commit_of_the_hub_data_set(built: Path, repos: FixtureRepos,
                                                              cdn: LoopbackServer) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["source"] == {"name": DATASET_REPO, "revision": repos.dataset_v1}
    assert manifest["encoder"] == {"model": f"hf-hub:{MODEL_REPO}", "pretrained": None}
    metadata = pq.read_table(built / "metadata.parquet").to_pylist()
    v1 = dataset_photos()["v1"]
    assert [row["id"] for row in metadata] == [photo.id for photo in v1[:8]]  # not main's rows (v2)
    assert [row["description"] for row in metadata] == [photo.caption for photo in v1[:8]]
    assert all(row["image"] == cdn.url(photo.name) for row, photo in zip(metadata, v1, strict=False))
    failures = pq.read_table(built / "failures.parquet").to_pylist()
    assert [row["id"] for row in failures] == [v1[8].id] and "404" in failures[0]["reason"]


def test_the_hf_hub_model_is_the_demo_model(built: Path, demo_encoder) -> None:
    from PIL import Image

    expected = demo_encoder.encode_images([Image.open(_jpeg(photo.jpeg)).convert("RGB")
                                           for photo in dataset_photos()["v1"][:8]])
    # Same weights and pixels; batches of 4 against one batch of 8 may differ in the last float bits.
    np.testing.assert_allclose(np.load(built / "embeddings.npy"), expected, atol=1e-4)


def _jpeg(data: bytes):
    import io

    return io.BytesIO(data)


def test_build_from_a_hub_bundle_adds_new_items_with_its_model(hub: OlahServer, repos: FixtureRepos,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "grown"
    done = run(["build_index.py", "--from", f"{BUNDLE_REPO}@{repos.bundle_small}", "--dataset", DATASET_REPO,
                "--revision", repos.dataset_v1, "--limit", "3", "--out", str(out), "--allow-private-hosts",
                "--no-progress", "--workers", "2"], hub_env(hub.endpoint, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"bundle {out}: 23 items, 0 failures"
    ids = pq.read_table(out / "metadata.parquet").column("id").to_pylist()
    assert ids == SMALL_IDS + [photo.id for photo in dataset_photos()["v1"][:3]]
    demo = np.load(REPO_ROOT / "assets" / "demo" / "index" / "embeddings.npy")
    np.testing.assert_array_equal(np.load(out / "embeddings.npy")[:20], demo[:20])  # kept as they were
    assert json.loads((out / "manifest.json").read_text())["encoder"]["model"] == f"hf-hub:{MODEL_REPO}"
    assert (out / "images" / "shape-019.jpg").read_bytes() == (DEMO_IMAGES / "shape-019.jpg").read_bytes()


def test_rebuild_index_of_a_pinned_hub_bundle(hub: OlahServer, repos: FixtureRepos, tmp_path: Path) -> None:
    out = tmp_path / "rebuilt"
    done = run(["build_index.py", "--from", f"{BUNDLE_REPO}@{repos.bundle_small}", "--out", str(out),
                "--rebuild-index", "--hnsw-m", "8", "--ef-construction", "50"], hub_env(hub.endpoint, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"bundle {out}: 20 items, 0 failures"  # the pinned commit, not main's 40
    assert json.loads((out / "manifest.json").read_text())["hnsw"] == {"m": 8, "ef_construction": 50,
                                                                       "ef_search": 128}


# --- searching a Hub bundle: CLI and app ---

def test_cli_searches_a_pinned_hub_bundle(hub: OlahServer, repos: FixtureRepos, tmp_path: Path) -> None:
    done = run(["-m", "search", "a blue circle", "--index", f"{BUNDLE_REPO}@{repos.bundle_small}", "--top-k",
                "100", "--threshold", "-1", "--json"], hub_env(hub.endpoint, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    hits = json.loads(done.stdout)
    assert sorted(hit["id"] for hit in hits) == SMALL_IDS  # the pinned commit's 20, not main's 40
    assert hits[0]["id"] == BLUE_CIRCLE


def test_app_started_as_a_space_serves_the_pinned_hub_bundle(hub: OlahServer, repos: FixtureRepos,
                                                             tmp_path: Path) -> None:
    from tests.test_app import wait_for_client

    port = free_port()
    env = {**hub_env(hub.endpoint, tmp_path), "SEARCH_INDEX": f"{BUNDLE_REPO}@{repos.bundle_small}",
           "GRADIO_SERVER_PORT": str(port), "SEARCH_ONNX_TEXT": "0"}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        client = wait_for_client(f"http://127.0.0.1:{port}/", process)
        hits = client.predict("a blue circle", 100, -1.0, api_name="/search_text")
        similar = client.predict(hits[0]["id"], 3, -1.0, api_name="/similar")
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert sorted(hit["id"] for hit in hits) == SMALL_IDS, output[-2000:]
    assert hits[0]["id"] == BLUE_CIRCLE and len(similar) == 3 and BLUE_CIRCLE not in {hit["id"] for hit in similar}
    assert "serving the demo" not in output


# --- failures: clear, one line; the app falls back to the demo with the reason ---

# olah answers a commit it does not have with HTTP 500 or 404 "Entry Not Found" (the Hub: 404 RevisionNotFound),
# and a branch it does not have as a missing repo (401), so the missing revision gets the generic advice here.
FAST_FAILURES = {
    "missing revision": (f"{BUNDLE_REPO}@{MISSING_COMMIT}", "check the repo id, the revision and the network"),
    "missing repo": ("fixtures/no-such-bundle@main", "the dataset repo fixtures/no-such-bundle does not exist"),
}
GONE = "the hub at {endpoint} could not be reached or broke off the download"

LOAD_MODEL = """
import logging, sys
logging.disable(logging.WARNING)  # open_clip's own download warnings; the refusal is what is checked
from search.config import EncoderSpec
from search.model.encoder import ClipEncoder
from search.errors import EncoderLoadError
try:
    ClipEncoder.load(EncoderSpec(sys.argv[1]))
except EncoderLoadError as exc:
    sys.exit(f"error: {exc}")
"""


# Runs that only fail: started side by side once (one of them is ~25 s of huggingface_hub's retry back-off, idle
# time the others' start-up fills), each with its own empty caches under its folder.
FAILING_RUNS = {
    **{case: ["-m", "search", "a red circle", "--index", source] for case, (source, _) in FAST_FAILURES.items()},
    # A branch name: olah answers an unknown commit with HTTP 500, which huggingface_hub retries for ~25 s.
    "missing data set revision": ["build_index.py", "--dataset", DATASET_REPO, "--revision", "no-such-branch",
                                  "--model", f"hf-hub:{MODEL_REPO}", "--out", "{home}/out", "--no-progress"],
    "model without weights": ["-c", LOAD_MODEL, f"hf-hub:{NO_WEIGHTS_REPO}"],
}


@pytest.fixture(scope="module")
def failing_runs(hub: OlahServer, tmp_path_factory: pytest.TempPathFactory,
                 ) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Each of FAILING_RUNS run once against the hub, all at the same time, with the folder of its caches."""
    def one(name: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        home = tmp_path_factory.mktemp(name.replace(" ", "-"))
        return run([arg.replace("{home}", str(home)) for arg in FAILING_RUNS[name]], hub_env(hub.endpoint, home)), home

    with ThreadPoolExecutor(max_workers=len(FAILING_RUNS)) as pool:
        return dict(zip(FAILING_RUNS, pool.map(one, FAILING_RUNS), strict=True))


@pytest.mark.parametrize("case", sorted(FAST_FAILURES))
def test_cli_reports_a_hub_failure_in_one_line(case: str, failing_runs) -> None:
    source, reason = FAST_FAILURES[case]
    done, home = failing_runs[case]
    line = error_line(done)
    assert line.startswith(f"error: cannot download index bundle {source} from the Hub: ")
    assert reason in line.lower() and str(home) not in line  # no cache path


def test_the_real_hubs_missing_revision_answer_is_explained() -> None:
    # olah cannot give it (see FAST_FAILURES): the Hub's 404 with X-Error-Code RevisionNotFound, as
    # huggingface_hub classifies it.
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    from search.bundle.hub import download_failure

    request = httpx2.Request("GET", f"https://huggingface.co/api/datasets/me/index/revision/{MISSING_COMMIT}")
    with pytest.raises(OSError) as info:
        hf_raise_for_status(httpx2.Response(404, headers={"X-Error-Code": "RevisionNotFound"}, request=request))
    assert download_failure(info.value, "me/index", MISSING_COMMIT) == (
        f"me/index has no revision '{MISSING_COMMIT}'. Pin an existing commit, branch or tag (build_index.py "
        "--push-to prints the commit to pin).")


APP_STARTS = """
import json, sys
from search.config import EngineConfig
from search.web.startup import start_engine
for source in sys.argv[1:]:
    startup = start_engine(EngineConfig(index=source, onnx_text=False))
    print(json.dumps({"demo": startup.is_demo, "items": len(startup.engine.bundle.catalog),
                      "notice": startup.notice}), flush=True)
"""


def test_a_server_gone_mid_download_is_a_clear_error_and_the_app_serves_the_demo(
        hub: OlahServer, repos: FixtureRepos, tmp_path: Path) -> None:
    # huggingface_hub retries a vanished server for ~25 s (5 tries, backoff 1-8 s), so both run at once.
    good = f"{BUNDLE_REPO}@{repos.bundle_small}"
    sources = [FAST_FAILURES["missing revision"][0], FAST_FAILURES["missing repo"][0], good]
    with DyingProxy(hub.endpoint) as for_cli, DyingProxy(hub.endpoint) as for_app:
        cli = _start(["-m", "search", "a red circle", "--index", good], hub_env(for_cli.endpoint, tmp_path / "cli"))
        # The app's first two sources fail on lookups that pass through; the third one's download kills it.
        app = _start(["-c", APP_STARTS, *sources], hub_env(for_app.endpoint, tmp_path / "app"))
        (cli_out, cli_err), (app_out, app_err) = cli.communicate(timeout=180), app.communicate(timeout=180)
        assert for_cli.died.is_set() and for_app.died.is_set()
    assert cli.returncode == 1 and not cli_out and "Traceback" not in cli_err, cli_err[-3000:]
    line = cli_err.strip().splitlines()[-1]  # after huggingface_hub's own retry warnings
    assert line.startswith(f"error: cannot download index bundle {good} from the Hub: ")
    assert GONE.format(endpoint=for_cli.endpoint) in line.lower()
    assert app.returncode == 0, app_err[-3000:]
    startups = [json.loads(text) for text in app_out.splitlines()]
    reasons = [FAST_FAILURES["missing revision"][1], FAST_FAILURES["missing repo"][1],
               GONE.format(endpoint=for_app.endpoint)]
    assert len(startups) == 3
    for source, startup, reason in zip(sources, startups, reasons, strict=True):
        assert startup["demo"] and startup["items"] == 300
        notice = html.unescape(startup["notice"])  # the names and the reason are escaped for Markdown
        assert f"Could not load the index {source}**" in notice
        shown = notice.split("Reason: ", 1)[1].split("\n", 1)[0]
        assert shown.startswith(f"cannot download index bundle {source} from the Hub: ") and reason in shown.lower()


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_missing_data_set_revision_is_one_line(failing_runs) -> None:
    done, _ = failing_runs["missing data set revision"]
    assert done.returncode == 1, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]  # after the log line of the model loaded first
    assert line.startswith(f"error: cannot stream {DATASET_REPO}: ") and "--revision" in line


def test_an_hf_hub_model_whose_weights_cannot_be_had_is_refused(failing_runs) -> None:
    line = error_line(failing_runs["model without weights"][0])
    assert line.startswith(f"error: cannot load CLIP model hf-hub:{NO_WEIGHTS_REPO}") and "weights" in line


# --- publishing: olah has no upload routes ---

def test_push_to_olah_fails_clearly(hub: OlahServer, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    from search.build.publish import PublishError, push_bundle
    from tests.test_app import small_demo_bundle

    api = HfApi(endpoint=hub.endpoint, token="hf_test_not_a_real_token")
    with pytest.raises(PublishError, match=r"^cannot push to fixtures/new-index: .*hf auth login") as info:
        push_bundle(small_demo_bundle(tmp_path), "fixtures/new-index", api=api)
    assert "\n" not in str(info.value) and "hf_test_not_a_real_token" not in str(info.value)
