"""Gradio's upload cache holds at most UPLOAD_SPACE_BYTES: uploads past it are refused (507) before or while they
stream, whatever they hold, and accepted again once deletions free room; URL downloads share the budget."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from search.web import uploads as web_uploads
from search.web.disk_budget import StorageFullError
from tests.app_server import serve
from tests.test_storage import du_bytes
from tests.test_uploads_hostile import MULTIPART, PART_HEAD, connect, files_under, head, status_of, wait_for

BUDGET = 2 * 1024 * 1024
PIECE = 256 * 1024


@pytest.fixture(scope="module")
def budget_app(demo_startup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, upload folder) of the app with a 2 MiB upload budget."""
    uploads = tmp_path_factory.mktemp("budget-uploads")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(uploads))
        patch.setattr(web_uploads, "UPLOAD_SPACE_BYTES", BUDGET)
        with serve(demo_startup) as url:
            yield url.rstrip("/"), uploads


def post(url: str, payload: bytes) -> httpx.Response:
    return httpx.post(f"{url}/gradio_api/upload", files={"files": ("noise.png", payload)}, timeout=30)


def noise(seed: int) -> bytes:
    """PIECE bytes of noise, not a picture (uploads are stored whatever they hold); distinct per seed, as gradio
    stores identical files once."""
    return np.random.default_rng(seed).bytes(PIECE)


def test_uploads_stop_at_the_budget_and_start_again_once_deleted(budget_app: tuple[str, Path]) -> None:
    url, uploads = budget_app
    stored, answers = [], []
    for seed in range(40):  # 10 MiB offered, 5 times the budget
        answers.append(post(url, noise(seed)))
        stored += answers[-1].json() if answers[-1].status_code == 200 else []
    statuses = [answer.status_code for answer in answers]
    assert statuses[:4] == [200] * 4 and statuses.count(200) == len(stored) <= BUDGET // PIECE
    assert set(statuses[len(stored):]) == {507}  # once full, every later upload (before any deletion)
    message = answers[-1].json()["detail"]
    assert message.startswith("the server holds as many recent uploads as it may (2 MiB)") and "\n" not in message
    assert du_bytes(uploads) <= BUDGET
    for path in stored:  # as gradio's cache deletion does: the files go, their folders stay
        os.remove(path)
    assert wait_for(lambda: post(url, noise(1000)).status_code == 200)
    assert du_bytes(uploads) <= BUDGET


def test_a_body_declared_past_the_budget_is_refused_unread(budget_app: tuple[str, Path]) -> None:
    url, uploads = budget_app
    before = files_under(uploads)
    with connect(url) as sock:
        start = time.perf_counter()
        sock.sendall(head("/gradio_api/upload", BUDGET + 1, MULTIPART) + PART_HEAD + b"\x00" * 1000)
        assert status_of(sock) == 507
        assert time.perf_counter() - start < 1.0
    assert files_under(uploads) == before


def test_a_chunked_upload_is_refused_once_it_passes_the_budget(budget_app: tuple[str, Path]) -> None:
    url, uploads = budget_app
    before = files_under(uploads)
    chunk = b"\x00" * 65536
    with connect(url) as sock:
        sock.sendall(head("/gradio_api/upload", None, MULTIPART) + f"{len(PART_HEAD):x}\r\n".encode() + PART_HEAD
                     + b"\r\n")
        try:
            for _ in range(48):  # 3 MiB, over the budget (under the 11 MiB body limit); stop once answered
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert status_of(sock) == 507
    assert wait_for(lambda: files_under(uploads) == before)  # the partial file is deleted
    assert du_bytes(uploads) <= BUDGET


def test_a_url_download_past_the_budget_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_uploads, "UPLOAD_SPACE_BYTES", 3 * PIECE)
    kept = Path(web_uploads.save_download(tmp_path, "https://example.com/a.png", noise(1)))
    assert kept.read_bytes() == noise(1)
    with pytest.raises(StorageFullError):
        web_uploads.save_download(tmp_path, "https://example.com/b.png", noise(2) * 2)
    assert files_under(tmp_path) == {kept}


def test_a_picture_gradio_wrote_into_its_cache_is_deleted_with_the_uploads(tmp_path: Path) -> None:
    """Gradio's MCP layer writes a base64 picture into the cache unannounced: the input registers it for deletion."""
    import gradio as gr
    from gradio.data_classes import FileData

    from search.web.url_fetches import url_inputs_for_the_handler

    component = url_inputs_for_the_handler(gr.File(type="filepath"))
    cached = Path(component.GRADIO_CACHE) / f"mcp-{tmp_path.name}" / "picture.png"
    cached.parent.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "example.png"
    for path in (cached, outside):
        path.write_bytes(noise(1)[:64])
        component.preprocess(FileData(path=str(path)))
    try:
        assert str(cached) in component.temp_files and str(outside) not in component.temp_files
    finally:
        shutil.rmtree(cached.parent)
