"""A bounded thread pool over a lazy source: the sync's per-backup work, and the benchmark's
seeding, without one future per item."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from worker.shutdown import NEVER, Shutdown

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_POLL_SECONDS = 0.2


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, shutdown: Shutdown = NEVER
) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads, with at most 2*workers in flight, so
    100,000 backups never mean 100,000 futures. Results come in completion order.

    Once termination is requested no new item is started; the running ones get until the
    grace period ends, and whatever is still running then is abandoned (the caller sees
    fewer results than items)."""
    iterator = iter(items)
    if workers <= 1:
        for item in iterator:
            if shutdown.requested:
                return
            yield fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync")
    pending: set[Future[R]] = set()
    try:
        while not shutdown.requested:
            # Wait for a free slot before taking the next item, so a lazy source is never
            # read more than 2*workers ahead of the results.
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, _POLL_SECONDS, FIRST_COMPLETED)
                yield from _results(done)
                continue
            try:
                item = next(iterator)
            except StopIteration:
                break
            pending.add(pool.submit(fn, item))
        while pending:
            if shutdown.requested:
                for future in pending:
                    future.cancel()  # queued, not started: never start it
                if shutdown.remaining() <= 0:
                    log.warning(
                        "grace period over: abandoning work in flight",
                        extra={"inFlight": sum(not f.done() for f in pending)},
                    )
                    return
            timeout = min(_POLL_SECONDS, shutdown.remaining())
            done, pending = wait(pending, timeout, FIRST_COMPLETED)
            yield from _results(done)
    finally:
        # After an abandon the threads are left running; the process exits without them.
        pool.shutdown(wait=not pending, cancel_futures=True)


def _results(done: Iterable[Future[R]]) -> Iterator[R]:
    return (f.result() for f in done if not f.cancelled())
