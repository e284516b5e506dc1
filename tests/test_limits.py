"""WorkLimiter.run: model work on the limiter's own threads, at most `slots` at once, busy after `wait_s`."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from search.model.limits import BusyError, WorkLimiter


def test_work_from_many_threads_runs_on_the_limiters_threads_at_most_slots_at_once() -> None:
    limiter = WorkLimiter(slots=2, wait_s=30)
    lock, running, most, names = threading.Lock(), [0], [0], set()

    def work(number: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            names.add(threading.current_thread().name)
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return number * 2

    with ThreadPoolExecutor(16) as callers:  # as the server's request threads
        results = list(callers.map(lambda number: limiter.run(lambda: work(number)), range(64)))
    assert results == [number * 2 for number in range(64)]
    assert most[0] == 2 and len(names) == 2 and all(name.startswith("model-work") for name in names)


def test_a_failure_reaches_the_caller_and_frees_the_slot() -> None:
    limiter = WorkLimiter(slots=1, wait_s=1)

    def fail() -> None:
        raise ValueError("bad picture")

    with pytest.raises(ValueError, match="bad picture"):
        limiter.run(fail)
    assert limiter.run(lambda: "next") == "next"


def test_busy_when_no_slot_frees_in_time() -> None:
    limiter = WorkLimiter(slots=1, wait_s=0.1)
    with limiter.slot(), pytest.raises(BusyError, match="busy"):
        limiter.run(lambda: "never")


def test_work_on_every_thread_runs_once_on_each_of_them() -> None:
    limiter = WorkLimiter(slots=3, wait_s=1)
    names: list[str] = []
    lock = threading.Lock()

    def record() -> None:
        with lock:
            names.append(threading.current_thread().name)

    limiter.on_every_thread(record)
    assert len(names) == 3 and len(set(names)) == 3 and all(name.startswith("model-work") for name in names)


def test_calls_on_every_thread_at_the_same_time_all_finish() -> None:
    limiter, done = WorkLimiter(slots=2, wait_s=1), []

    def warm() -> None:
        for _ in range(300):
            limiter.on_every_thread(lambda: None)
        done.append(True)

    callers = [threading.Thread(target=warm, daemon=True) for _ in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so two calls' submissions interleave
    try:
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(timeout=10)
    finally:
        sys.setswitchinterval(interval)
    assert len(done) == 4  # two calls' barrier tasks, one thread each, used to wait for each other for ever


def test_a_caller_that_already_waited_elsewhere_waits_only_what_is_left() -> None:
    limiter = WorkLimiter(slots=1, wait_s=30)
    with limiter.slot():
        start = time.perf_counter()
        with pytest.raises(BusyError, match="busy: 1 searches have been running for over 30 s"):
            limiter.run(lambda: "never", wait_s=0.05)
        assert time.perf_counter() - start < 5
