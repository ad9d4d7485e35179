"""Progress of a long location sync: a periodic log line (done/total, rate, ETA) and, on a
terminal, a live status line that log records scroll above.

``Progress`` is fed by the loop that folds per-backup outcomes (one thread), so it needs
no lock; ``StatusLine`` is shared with the log handler, so it has one.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0  # seconds between progress log lines
REDRAW_INTERVAL = 0.25  # seconds between redraws of the live line

_CLEAR_LINE = "\r\x1b[K"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m07s``, ``1h02m``: short, for ETAs."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate_and_eta(done: int, total: int, elapsed: float) -> tuple[float, float | None]:
    """Items per second so far, and seconds left at that rate (None while unknown)."""
    if done <= 0 or elapsed <= 0:
        return 0.0, None
    rate = done / elapsed
    return rate, max(0, total - done) / rate


class StatusLine:
    """One line at the bottom of a terminal. Text written through ``write`` (the log
    handler's stream) appears above it; the line is redrawn below."""

    def __init__(self, stream: TextIO, width: Callable[[], int] | None = None) -> None:
        self._stream = stream
        self._width = width or (lambda: shutil.get_terminal_size().columns)
        self._text = ""
        self._lock = threading.Lock()

    def show(self, text: str) -> None:
        with self._lock:
            self._text = text[: max(1, self._width() - 1)]
            self._stream.write(_CLEAR_LINE + self._text)
            self._stream.flush()

    def clear(self) -> None:
        with self._lock:
            if self._text:
                self._stream.write(_CLEAR_LINE)
                self._stream.flush()
            self._text = ""

    # The file-like side, for logging.StreamHandler.
    def write(self, data: str) -> int:
        with self._lock:
            if self._text:
                self._stream.write(_CLEAR_LINE)
            self._stream.write(data)
            if self._text and data.endswith("\n"):
                self._stream.write(self._text)
        return len(data)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()


class Progress:
    """Done/total of one location's backups to sync. Logs every ``log_interval`` seconds
    (never for a run shorter than that) and redraws ``status`` when there is one."""

    def __init__(
        self,
        location: str,
        total: int,
        *,
        status: StatusLine | None = None,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = LOG_INTERVAL,
        redraw_interval: float = REDRAW_INTERVAL,
    ) -> None:
        self.location = location
        self.total = total
        self.done = 0
        self._status = status
        self._clock = clock
        self._log_interval = log_interval
        self._redraw_interval = redraw_interval
        self._started = clock()
        self._next_log = self._started + log_interval
        self._next_redraw = self._started

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + self._log_interval
            self._log(now)
        if self._status is not None and now >= self._next_redraw:
            self._next_redraw = now + self._redraw_interval
            self._status.show(self.line(now))

    def finish(self) -> None:
        """Remove the live line; the caller logs the location's result."""
        if self._status is not None:
            self._status.clear()

    def line(self, now: float | None = None) -> str:
        """``default: 1200/5000 backups (24%), 310/s, ETA 12s``."""
        elapsed = (self._clock() if now is None else now) - self._started
        rate, eta = rate_and_eta(self.done, self.total, elapsed)
        percent = 100 * self.done // self.total if self.total else 100
        text = f"{self.location}: {self.done}/{self.total} backups ({percent}%), {rate:.0f}/s"
        return text + (f", ETA {format_duration(eta)}" if eta is not None else "")

    def _log(self, now: float) -> None:
        rate, eta = rate_and_eta(self.done, self.total, now - self._started)
        log.info(
            "sync progress",
            extra={
                "location": self.location,
                "done": self.done,
                "total": self.total,
                "rate": round(rate, 1),
                "eta": format_duration(eta) if eta is not None else "unknown",
            },
        )


ProgressFactory = Callable[[str, int], Progress]


def factory(status: StatusLine | None = None) -> ProgressFactory:
    """A ``Progress`` per location, all drawing on the same status line (if any)."""

    def make(location: str, total: int) -> Progress:
        return Progress(location, total, status=status)

    return make
