"""Progress of a location sync: periodic log lines, the live status line, on a fake clock."""

from __future__ import annotations

import io
import logging

import pytest

from worker.progress import (
    Progress,
    StatusLine,
    factory,
    format_duration,
    rate_and_eta,
)

CLEAR = "\r\x1b[K"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.4, "0s"), (59.6, "1m00s"), (61, "1m01s"), (3599, "59m59s"), (3720, "1h02m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_rate_and_eta() -> None:
    assert rate_and_eta(0, 100, 5.0) == (0.0, None)
    assert rate_and_eta(10, 100, 0.0) == (0.0, None)
    assert rate_and_eta(25, 100, 5.0) == (5.0, 15.0)
    assert rate_and_eta(100, 100, 4.0) == (25.0, 0.0)


def test_logs_every_interval_with_done_total_rate_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("default", 1000, clock=clock, log_interval=10.0)
    caplog.set_level(logging.INFO, logger="worker.progress")
    for _ in range(79):
        clock.now += 0.125
        progress.advance()
    assert caplog.records == []  # 9.875 s: not yet
    clock.now += 0.125
    progress.advance()
    (record,) = caplog.records
    assert record.getMessage() == "sync progress"
    assert vars(record)["location"] == "default"
    assert (vars(record)["done"], vars(record)["total"]) == (80, 1000)
    assert vars(record)["rate"] == 8.0
    assert vars(record)["eta"] == "1m55s"
    for _ in range(40):
        clock.now += 0.125
        progress.advance()
    assert len(caplog.records) == 1  # the next one is 10 s after the first
    for _ in range(40):
        clock.now += 0.125
        progress.advance()
    assert len(caplog.records) == 2
    assert vars(caplog.records[1])["done"] == 160


def test_a_short_sync_logs_no_progress(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="worker.progress")
    progress = Progress("default", 3, clock=clock)
    for _ in range(3):
        clock.now += 0.5
        progress.advance()
    progress.finish()
    assert caplog.records == []


def test_line_text() -> None:
    clock = FakeClock()
    progress = Progress("primary", 5000, clock=clock)
    assert progress.line() == "primary: 0/5000 backups (0%), 0/s"
    clock.now += 4.0
    progress.advance(1200)
    assert progress.line() == "primary: 1200/5000 backups (24%), 300/s, ETA 13s"
    assert Progress("empty", 0, clock=clock).line() == "empty: 0/0 backups (100%), 0/s"


def test_live_line_redrawn_at_most_every_redraw_interval_and_cleared() -> None:
    clock = FakeClock()
    out = io.StringIO()
    status = StatusLine(out, width=lambda: 200)
    progress = Progress("default", 10, status=status, clock=clock, redraw_interval=0.25)
    clock.now += 1.0
    progress.advance()  # drawn
    clock.now += 0.1
    progress.advance()  # too soon
    clock.now += 0.2
    progress.advance()  # drawn
    assert out.getvalue() == (
        CLEAR
        + "default: 1/10 backups (10%), 1/s, ETA 9s"
        + CLEAR
        + "default: 3/10 backups (30%), 2/s, ETA 3s"
    )
    progress.finish()
    assert out.getvalue().endswith(CLEAR)


def test_log_records_scroll_above_the_live_line() -> None:
    out = io.StringIO()
    status = StatusLine(out, width=lambda: 200)
    status.show("default: 1/10")
    status.write("a log line\n")
    status.flush()
    assert out.getvalue() == CLEAR + "default: 1/10" + CLEAR + "a log line\n" + "default: 1/10"
    status.clear()
    status.write("after\n")
    assert out.getvalue().endswith(CLEAR + "after\n")


def test_live_line_fits_the_terminal() -> None:
    out = io.StringIO()
    StatusLine(out, width=lambda: 10).show("0123456789abcdef")
    assert out.getvalue() == CLEAR + "012345678"


def test_without_a_terminal_nothing_is_drawn(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    progress = Progress("default", 2, clock=clock)  # no status line
    clock.now += 1
    progress.advance(2)
    progress.finish()
    assert progress.done == 2


def test_factory_shares_one_status_line() -> None:
    out = io.StringIO()
    status = StatusLine(out, width=lambda: 200)
    make = factory(status)
    first, second = make("a", 1), make("b", 2)
    assert (first.location, first.total, second.location, second.total) == ("a", 1, "b", 2)
    first.advance()
    second.advance()
    assert "a: 1/1" in out.getvalue() and "b: 1/2" in out.getvalue()
