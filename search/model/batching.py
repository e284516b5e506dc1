"""Model work batched under load: concurrent encodes of one kind run as one model call, a lone one at once.

"Natural batching": nothing waits for a window. A request runs at once while fewer batches of its kind than the
limiter has slots are running; requests that arrive meanwhile queue, and the next batch takes all of them (up to
`max_batch`). A lone visitor pays no wait; under load the model sees batches as large as the load makes them,
and a text query costs ~11 ms of CPU in a batch of 8 against ~17 ms alone (docs/performance.md, Batching).

Every batch runs through the WorkLimiter, in one slot, on one of its threads: the slots still bound model work and
its memory, and a request that waits longer than the limiter's `wait_s`, for a batch or a slot, gets BusyError.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from search.model.limits import BusyError, WorkLimiter

T = TypeVar("T")
R = TypeVar("R")

MAX_TEXT_BATCH = 16  # per text query, 10.7 ms at 16 against 11.1 at 8 (issue 24): little gain beyond
MAX_PICTURE_BATCH = 8  # a batch of preprocessed pictures is ~0.6 MB each; the decode stays one per slot


class _Pending(Generic[T, R]):
    """One request's item, and its answer once its batch ran."""

    __slots__ = ("done", "error", "item", "result", "taken")

    def __init__(self, item: T) -> None:
        self.item, self.taken, self.done = item, False, threading.Event()
        self.result: R | None = None
        self.error: BaseException | None = None

    def answer(self) -> R:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class Batcher(Generic[T, R]):
    """`batcher(item)`: `encode([item, ...])[i]` for this item, computed in one call with the items of other threads
    that asked meanwhile. `encode` returns one answer per item, in order."""

    def __init__(self, encode: Callable[[list[T]], Sequence[R]], limiter: WorkLimiter, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.encode, self.limiter, self.max_batch = encode, limiter, max_batch
        self._changed = threading.Condition()
        self._queue: deque[_Pending[T, R]] = deque()
        self._leading = 0  # callers running a batch or waiting for a slot to run one

    def __call__(self, item: T) -> R:
        pending: _Pending[T, R] = _Pending(item)
        deadline = time.monotonic() + self.limiter.wait_s
        with self._changed:
            self._queue.append(pending)
            lead = self._await_turn(pending, deadline)
        if lead:
            self._lead(pending, deadline)
        return pending.answer()

    def _await_turn(self, pending: _Pending[T, R], deadline: float) -> bool:
        """Under the lock: True when this caller is to run a batch, False once another caller's batch took its
        item; BusyError when neither happened by `deadline`."""
        while not pending.taken:
            if self._leading < self.limiter.slots:  # a batch more could get a slot: run one now, no window
                self._leading += 1
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._queue.remove(pending)
                raise self.limiter.busy_error()
            self._changed.wait(remaining)
        return False

    def _lead(self, own: _Pending[T, R], deadline: float) -> None:
        """Run a batch holding `own` and what else is queued once a slot is free; `own` is answered after."""
        try:
            self.limiter.run(lambda: self._run_batch(own), wait_s=deadline - time.monotonic())
        except BusyError:
            with self._changed:
                if not own.taken:  # another batch may have taken it while this caller waited for the slot
                    self._queue.remove(own)
                    raise
        finally:
            with self._changed:
                self._leading -= 1
                self._changed.notify_all()  # a waiting caller may lead the next batch

    def _run_batch(self, own: _Pending[T, R]) -> None:
        with self._changed:
            batch = self._take(own)
            self._changed.notify_all()  # their callers stop waiting for a turn and wait for the answer
        if not batch:  # another caller's batch took `own` while this one waited for a slot
            return
        try:
            self._answer(batch)
        finally:  # whatever stopped the batch (even a BaseException), no batch-mate waits on it for ever
            for pending in batch:
                if not pending.done.is_set():
                    pending.error = RuntimeError("the model work this request was batched with stopped")
                    pending.done.set()

    def _take(self, own: _Pending[T, R]) -> list[_Pending[T, R]]:
        """Under the lock: `own` (unless a batch already took it) and the oldest queued items, up to max_batch."""
        batch = []
        if not own.taken:
            self._queue.remove(own)
            batch.append(own)
        while self._queue and len(batch) < self.max_batch:
            batch.append(self._queue.popleft())
        for pending in batch:
            pending.taken = True
        return batch

    def _answer(self, batch: list[_Pending[T, R]]) -> None:
        """Encode the batch; when that fails, each item alone, so one bad item fails only its own request."""
        try:
            results = self.encode([pending.item for pending in batch])
            if len(results) != len(batch):
                raise ValueError(f"a batch of {len(batch)} items gave {len(results)} answers")
        except Exception as exc:  # handed to its request (or, in a batch, each item retried alone): never dropped
            if len(batch) > 1:
                for pending in batch:
                    self._answer([pending])
                return
            batch[0].error = exc
            batch[0].done.set()
            return
        for pending, result in zip(batch, results, strict=True):
            pending.result = result
            pending.done.set()


class Unbatched(Generic[T, R]):
    """`unbatched(item)`: `encode([item])[0]` in a slot of the limiter; what SEARCH_BATCH=off runs."""

    def __init__(self, encode: Callable[[list[T]], Sequence[R]], limiter: WorkLimiter) -> None:
        self.encode, self.limiter = encode, limiter

    def __call__(self, item: T) -> R:
        return self.limiter.run(lambda: self.encode([item])[0])


def model_work(encode: Callable[[list[T]], Sequence[R]], limiter: WorkLimiter, max_batch: int,
               batched: bool) -> Callable[[T], R]:
    """A Batcher over `encode` when `batched`, else one model call per item; either runs in the limiter's slots."""
    return Batcher(encode, limiter, max_batch) if batched else Unbatched(encode, limiter)
