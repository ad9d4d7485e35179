"""A client-side token bucket towards the API server (client-go's QPS/burst), and the choice
of the limit in force."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.errors import ClusterError


class TokenBucket:
    """``qps`` tokens per second, at most ``burst`` banked. Thread-safe; ``acquire`` blocks.

    ``qps <= 0`` disables limiting.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._qps = qps
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if self._qps <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            self._tokens -= 1.0  # reserve now; a negative balance is our place in the queue
            wait = -self._tokens / self._qps if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


# Velero's own client limits (its server's --client-qps / --client-burst defaults).
VELERO_QPS = 100.0
VELERO_BURST = 100


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The client-side limit in force towards the API server, and why."""

    qps: float  # <= 0: none
    burst: int
    why: str

    def text(self) -> str:
        if self.qps <= 0:
            return f"unlimited ({self.why})"
        return f"{self.qps:g} QPS, burst {self.burst} ({self.why})"


def choose_rate_limit(
    qps: float | None, burst: int | None, priority_and_fairness: Callable[[], str]
) -> RateLimit:
    """Explicit ``--kube-qps``/``--kube-burst`` win. Otherwise the server decides, as
    client-go's consumers now do (controller-runtime, Flux, cert-manager): with API Priority
    and Fairness (``priority_and_fairness()`` names the header it answered with) it protects
    itself and answers 429 with Retry-After, which worker.retry honours, so no client-side
    limit; without it, or when that cannot be known (ClusterError), Velero's own 100/100."""
    burst_value = VELERO_BURST if burst is None else burst
    if qps is not None:
        return RateLimit(qps, burst_value, "--kube-qps/--kube-burst")
    try:
        header = priority_and_fairness()
    except ClusterError as exc:
        return RateLimit(
            VELERO_QPS,
            burst_value,
            f"Velero's limits: cannot probe for API Priority and Fairness: {exc}",
        )
    if header:
        return RateLimit(
            0.0,
            burst_value,
            f"the API server has API Priority and Fairness ({header} on /version) and "
            "answers 429 with Retry-After when busy",
        )
    return RateLimit(
        VELERO_QPS,
        burst_value,
        "Velero's limits: no API Priority and Fairness headers on /version",
    )
