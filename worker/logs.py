"""Logging: stdlib ``logging`` to stderr, context (location, backup) on every line, text or
JSON lines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Protocol

# Attributes every LogRecord has; anything else came in through ``extra=`` and is context.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _context(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ctx = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()}"
        if ctx:
            line += f" {ctx}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(
            {
                k: v if isinstance(v, str | int | float | bool) else str(v)
                for k, v in _context(record).items()
            }
        )
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class Stream(Protocol):
    def write(self, data: str, /) -> int: ...
    def flush(self) -> None: ...


def configure(level: str, fmt: str, stream: Stream | None = None) -> None:
    """Log to ``stream`` (default stderr; a ``progress.StatusLine`` on a terminal)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The SDKs are chatty at debug; their details are not this tool's story.
    for noisy in ("botocore", "boto3", "urllib3", "azure", "google", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
