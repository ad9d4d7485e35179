"""The run summary (worker.report)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator

import pytest

from worker.report import LocationReport, RunReport


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("eager_thread_switches")
def test_summary_is_a_snapshot_while_an_abandoned_run_still_writes() -> None:
    # After the grace period the summary is printed while the run's thread may still be
    # recording skips: what is printed must be one consistent state, not a mix of two.
    report = RunReport(namespace="velero")
    loc = LocationReport(name="default")
    report.locations.append(loc)
    stop = threading.Event()

    def keep_skipping() -> None:
        n = 0
        while not stop.is_set():
            loc.skip(f"reason {n % 7}", f"b{n}")
            n += 1

    writer = threading.Thread(target=keep_skipping)
    writer.start()
    try:
        for _ in range(2000):
            [summary] = json.loads(report.render("json"))["locations"]
            for reason, count in summary["skipped"].items():
                assert summary["skippedBackups"][reason]["count"] == count
            report.render("text")
    finally:
        stop.set()
        writer.join()
