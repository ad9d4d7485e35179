"""The client-side token bucket (QPS/burst) on a fake clock."""

from __future__ import annotations

import threading

import pytest

from worker.errors import ClusterError
from worker.ratelimit import VELERO_BURST, VELERO_QPS, TokenBucket, choose_rate_limit


class FakeTime:
    """A clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self, advance_on_sleep: bool = True) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.advance_on_sleep = advance_on_sleep
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if self.advance_on_sleep:
                self.now += seconds


def bucket(qps: float, burst: int, t: FakeTime) -> TokenBucket:
    return TokenBucket(qps, burst, clock=t.clock, sleep=t.sleep)


def test_burst_is_free_then_one_token_per_interval() -> None:
    t = FakeTime()
    b = bucket(10, 3, t)
    for _ in range(3):
        b.acquire()
    assert t.sleeps == []
    for _ in range(4):
        b.acquire()
    assert t.sleeps == pytest.approx([0.1, 0.1, 0.1, 0.1])
    assert t.now == pytest.approx(1000.4)


def test_sustained_rate_matches_qps() -> None:
    t = FakeTime()
    b = bucket(5, 1, t)
    for _ in range(51):
        b.acquire()
    # the first call is the burst; 50 more at 5 per second take 10 seconds
    assert t.now - 1000.0 == pytest.approx(10.0)


def test_idle_time_refills_up_to_burst_only() -> None:
    t = FakeTime()
    b = bucket(10, 3, t)
    for _ in range(3):
        b.acquire()
    t.now += 3600  # an hour idle banks at most `burst` tokens
    for _ in range(3):
        b.acquire()
    assert t.sleeps == []
    b.acquire()
    assert t.sleeps == pytest.approx([0.1])


def test_partial_refill() -> None:
    t = FakeTime()
    b = bucket(10, 1, t)
    b.acquire()
    t.now += 0.05  # half a token back
    b.acquire()
    assert t.sleeps == pytest.approx([0.05])


def test_waiters_queue_behind_each_other() -> None:
    # No time passes: each caller reserves a token and waits for its place in the queue.
    t = FakeTime(advance_on_sleep=False)
    b = bucket(10, 2, t)
    for _ in range(5):
        b.acquire()
    assert t.sleeps == pytest.approx([0.1, 0.2, 0.3])


def test_concurrent_callers_are_spread_out() -> None:
    t = FakeTime(advance_on_sleep=False)
    b = bucket(100, 1, t)
    threads = [threading.Thread(target=b.acquire) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(t.sleeps) == pytest.approx([i / 100 for i in range(1, 20)])


@pytest.mark.parametrize("qps", [0, -1])
def test_zero_or_negative_qps_is_unlimited(qps: float) -> None:
    t = FakeTime()
    b = bucket(qps, 1, t)
    for _ in range(1000):
        b.acquire()
    assert t.sleeps == []


def test_burst_below_one_is_one() -> None:
    t = FakeTime()
    b = bucket(10, 0, t)
    b.acquire()
    assert t.sleeps == []
    b.acquire()
    assert t.sleeps == pytest.approx([0.1])


# -- which limit: explicit flags, else none with API Priority and Fairness, else Velero's -------


def test_explicit_flags_win_and_nothing_is_probed() -> None:
    def probe() -> str:
        raise AssertionError("no probe with explicit flags")

    limit = choose_rate_limit(50.0, 80, probe)
    assert (limit.qps, limit.burst) == (50.0, 80)
    assert "--kube-qps" in limit.why


def test_with_priority_and_fairness_there_is_no_client_side_limit() -> None:
    limit = choose_rate_limit(None, None, lambda: "X-Kubernetes-PF-FlowSchema-UID")
    assert limit.qps == 0
    assert "API Priority and Fairness" in limit.why
    assert "X-Kubernetes-PF-FlowSchema-UID" in limit.why


def test_without_priority_and_fairness_velero_s_own_limits() -> None:
    limit = choose_rate_limit(None, None, lambda: "")
    assert (limit.qps, limit.burst) == (VELERO_QPS, VELERO_BURST) == (100.0, 100)
    assert "no API Priority and Fairness" in limit.why


def test_a_failed_probe_means_velero_s_own_limits() -> None:
    def probe() -> str:
        raise ClusterError("get /version: 403 Forbidden", 403)

    limit = choose_rate_limit(None, None, probe)
    assert (limit.qps, limit.burst) == (100.0, 100)
    assert "403" in limit.why


def test_an_explicit_burst_alone_keeps_the_automatic_qps() -> None:
    limit = choose_rate_limit(None, 7, lambda: "")
    assert (limit.qps, limit.burst) == (100.0, 7)


def test_an_explicit_qps_alone_takes_velero_s_burst() -> None:
    limit = choose_rate_limit(0.0, None, lambda: "")
    assert (limit.qps, limit.burst) == (0.0, 100)
    assert "unlimited" in limit.text()
