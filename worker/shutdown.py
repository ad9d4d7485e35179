"""Termination requests: SIGTERM (pod deletion, ``activeDeadlineSeconds``) and SIGINT.

On the first signal the run stops taking new work and gives the work in flight until the
grace period ends; the location being synced is then reported as interrupted (no orphans
deleted, ``lastSyncedTime`` not patched) and the process exits 1. Work still in flight after
the grace period is abandoned: a Backup created without its dependents keeps its in-progress
mark, and the next run completes it. A second signal ends the grace period at once. Should
the main thread itself be stuck past the grace period (a black-holed connection), a
watchdog ends the process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)

DEFAULT_GRACE_SECONDS = 20.0
# How long past the grace period the main thread gets to print its summary before the
# watchdog ends the process.
WATCHDOG_MARGIN_SECONDS = 5.0


class Shutdown:
    """Whether termination was requested, and until when in-flight work may run."""

    def __init__(
        self, grace: float = DEFAULT_GRACE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.grace = grace
        self._clock = clock
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._deadline = float("inf")
        self.signal_name = ""

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return f"interrupted by {self.signal_name or 'a termination request'}"

    def request(self, signal_name: str = "SIGTERM") -> bool:
        """Ask the run to stop; True for the first request. A second request ends the
        grace period now."""
        with self._lock:
            first = not self._event.is_set()
            if first:
                self.signal_name = signal_name
                self._deadline = self._clock() + self.grace
            else:
                self._deadline = self._clock()
            self._event.set()
        return first

    def remaining(self) -> float:
        """Seconds of grace left (0 once it is over; infinite before any request)."""
        with self._lock:
            return max(0.0, self._deadline - self._clock())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until termination is requested or ``timeout`` passes; True if requested."""
        return self._event.wait(timeout)


NEVER = Shutdown()  # for runs that cannot be interrupted (tests, library use)


def install(shutdown: Shutdown) -> Callable[[], None]:
    """Route SIGTERM and SIGINT to ``shutdown``; call from the main thread. Returns a
    function that puts the previous handlers back."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if shutdown.request(name):
            log.warning(
                "termination requested: taking no new work, finishing the work in flight",
                extra={"signal": name, "graceSeconds": shutdown.grace},
            )
            threading.Thread(
                target=_watchdog, args=(shutdown,), name="shutdown-watchdog", daemon=True
            ).start()
        else:
            log.warning("second termination request: abandoning the work in flight now")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _watchdog(shutdown: Shutdown) -> None:
    while (left := shutdown.remaining()) > 0:
        time.sleep(min(left, 0.5))  # a second signal shortens the grace period
    time.sleep(WATCHDOG_MARGIN_SECONDS)
    log.error("grace period over and the run has not ended; exiting now")
    logging.shutdown()
    os._exit(1)
