"""Batcher: concurrent encodes share a model call, a lone one runs at once, one bad item fails only itself."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from search.bundle.store import Bundle
from search.config import DEMO_INDEX_DIR, EngineConfig
from search.errors import SearchError
from search.model.batching import Batcher, Unbatched
from search.model.images import load_image
from search.model.limits import BusyError, WorkLimiter
from search.query.engine import SearchEngine


class GatedModel:
    """A model that records each call's batch and holds every call until `release` is set."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.release, self.fail_on = threading.Event(), fail_on

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.release.wait(10)
        if self.fail_on in items:
            raise ValueError(f"cannot encode {self.fail_on}")
        return [item.upper() for item in items]


def burst(call: Callable[[str], str], items: Sequence[str], model: GatedModel) -> list[object]:
    """`call(item)` for every item from threads of their own while the model holds its first call; the answers
    (or the errors) in item order."""
    def one(item: str) -> object:
        try:
            return call(item)
        except Exception as exc:  # the test compares errors as answers
            return exc

    with ThreadPoolExecutor(len(items)) as callers:
        futures = [callers.submit(one, items[0])]
        while not model.calls:  # the first call is running: the others arrive while it runs
            time.sleep(0.001)
        futures += [callers.submit(one, item) for item in items[1:]]
        time.sleep(0.3)
        model.release.set()
        return [future.result() for future in futures]


def test_requests_arriving_while_a_batch_runs_are_encoded_together() -> None:
    model, items = GatedModel(), [f"text {number}" for number in range(17)]
    answers = burst(Batcher(model, WorkLimiter(slots=1, wait_s=10), max_batch=16), items, model)
    assert answers == [item.upper() for item in items]
    assert [len(call) for call in model.calls] == [1, 16]  # the lone first at once, the 16 that queued as one


def test_batches_stop_at_max_batch_and_use_every_slot() -> None:
    model, items = GatedModel(), [f"text {number}" for number in range(12)]
    answers = burst(Batcher(model, WorkLimiter(slots=2, wait_s=10), max_batch=4), items, model)
    assert answers == [item.upper() for item in items]
    sizes = [len(call) for call in model.calls]
    assert sum(sizes) == 12 and max(sizes) == 4 and len(sizes) <= 6


def test_one_failing_item_fails_only_its_own_request() -> None:
    model, items = GatedModel(fail_on="bad"), ["first", "a", "bad", "b", "c"]
    answers = burst(Batcher(model, WorkLimiter(slots=1, wait_s=10), max_batch=8), items, model)
    assert answers[:2] == ["FIRST", "A"] and answers[3:] == ["B", "C"]
    assert isinstance(answers[2], ValueError) and "cannot encode bad" in str(answers[2])
    assert ["a", "b", "bad", "c"] in map(sorted, model.calls)  # it did fail as a batch, then each ran alone


class Stop(BaseException):
    """Not an Exception (as KeyboardInterrupt or SystemExit are not): the batch cannot hand it to each item."""


def test_a_batch_stopped_by_a_base_exception_leaves_no_batch_mate_waiting() -> None:
    def model(items: list[str]) -> list[str]:
        gate.calls.append(list(items))
        gate.release.wait(10)
        if "bad" in items:
            raise Stop
        return [item.upper() for item in items]

    def one(item: str) -> object:
        try:
            return batcher(item)
        except BaseException as exc:  # the test compares what each caller got
            return exc

    gate, batcher = GatedModel(), None
    batcher = Batcher(model, WorkLimiter(slots=1, wait_s=10), max_batch=8)
    with ThreadPoolExecutor(4) as callers:
        futures = [callers.submit(one, "first")]
        while not gate.calls:
            time.sleep(0.001)
        futures += [callers.submit(one, item) for item in ("a", "bad", "b")]
        time.sleep(0.3)
        gate.release.set()
        answers = [future.result(timeout=5) for future in futures]  # before the fix: the batch-mates never answer
    assert answers[0] == "FIRST"
    assert sum(isinstance(answer, Stop) for answer in answers[1:]) == 1  # the caller that ran the batch
    assert sum(isinstance(answer, RuntimeError) for answer in answers[1:]) == 2


def test_a_caller_whose_item_another_batch_took_while_it_waited_for_a_slot_runs_no_empty_batch() -> None:
    def model(items: list[str]) -> list[str]:
        calls.append(list(items))
        return [item.upper() for item in items]

    def hold(release: threading.Event, held: threading.Event) -> None:
        with limiter.slot():  # other model work (e.g. decoding a picture) in the same limiter
            held.set()
            release.wait(10)

    calls: list[list[str]] = []
    limiter = WorkLimiter(slots=2, wait_s=10)
    batcher = Batcher(model, limiter, max_batch=8)
    releases, helds = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]
    with ThreadPoolExecutor(4) as pool:
        for release, held in zip(releases, helds, strict=True):
            pool.submit(hold, release, held)
            held.wait(5)
        answers = [pool.submit(batcher, item) for item in ("x", "y")]  # both lead, both wait for a slot
        time.sleep(0.3)
        releases[0].set()  # the first to get a slot takes both items
        time.sleep(0.3)
        releases[1].set()  # the other finds its item taken: nothing to run
        assert [answer.result(timeout=5) for answer in answers] == ["X", "Y"]
    assert [sorted(call) for call in calls] == [["x", "y"]]  # one batch, never an empty one


def test_a_lone_request_runs_at_once_with_no_added_wait() -> None:
    limiter = WorkLimiter(slots=2, wait_s=10)
    batched, alone = Batcher(lambda items: items, limiter, max_batch=16), Unbatched(lambda items: items, limiter)

    def median_ms(call: Callable[[int], int]) -> float:
        times = []
        for number in range(300):
            start = time.perf_counter()
            assert call(number) == number
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    median_ms(batched), median_ms(alone)  # threads started, code paths warm
    assert median_ms(batched) < median_ms(alone) + 0.5  # no window: the bound on a lone visitor's p50


def test_busy_when_no_slot_frees_and_the_request_leaves_the_queue() -> None:
    limiter, model = WorkLimiter(slots=1, wait_s=0.1), GatedModel()
    model.release.set()
    batcher = Batcher(model, limiter, max_batch=8)
    with limiter.slot(), pytest.raises(BusyError, match="busy"):
        batcher("never")
    assert batcher("next") == "NEXT" and model.calls == [["next"]]  # the refused one was not encoded later


def test_batched_text_and_pictures_match_one_by_one(demo_encoder) -> None:
    texts = ["a red circle", "a blue square on a white background", "a yellow star", "a green triangle"] * 4
    pictures = [load_image(DEMO_INDEX_DIR / "images" / f"shape-{number:03d}.jpg") for number in range(8)]
    engine = SearchEngine(demo_encoder, Bundle.load(DEMO_INDEX_DIR), text_cache_size=0,
                          limiter=WorkLimiter(slots=1, wait_s=30))
    calls: list[tuple[str, int]] = []
    engine.encoder = CountingEncoder(demo_encoder, calls)
    pixels = [demo_encoder.preprocess_images([picture])[0] for picture in pictures]
    with ThreadPoolExecutor(16) as callers:
        text_vectors = list(callers.map(engine._text_vector, texts))
        picture_vectors = list(callers.map(engine._picture_work, pixels))
    assert max(size for kind, size in calls if kind == "text") > 1  # batches formed with the real model
    assert max(size for kind, size in calls if kind == "pictures") > 1
    for text, vector in zip(texts, text_vectors, strict=True):
        np.testing.assert_allclose(vector, demo_encoder.encode_text([text])[0], atol=1e-5)
    for picture, vector in zip(pictures, picture_vectors, strict=True):
        np.testing.assert_allclose(vector, demo_encoder.encode_images([picture])[0], atol=1e-5)


class CountingEncoder:
    """The demo encoder, recording the batch size of each text and picture model call."""

    def __init__(self, inner, calls: list[tuple[str, int]]) -> None:
        self.inner, self.calls = inner, calls

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode_text(self, texts):
        self.calls.append(("text", len(texts)))
        time.sleep(0.01)  # long enough for the other callers to queue behind it
        return self.inner.encode_text(texts)

    def encode_preprocessed(self, pictures):
        self.calls.append(("pictures", len(pictures)))
        time.sleep(0.01)
        return self.inner.encode_preprocessed(pictures)


def test_search_batch_switch_is_read_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert EngineConfig.from_env().batch is True
    monkeypatch.setenv("SEARCH_BATCH", "off")
    assert EngineConfig.from_env().batch is False
    monkeypatch.setenv("SEARCH_BATCH", "sometimes")
    with pytest.raises(SearchError, match="SEARCH_BATCH must be one of on, off, got 'sometimes'"):
        EngineConfig.from_env()
