"""Storage fixtures: a fresh bucket per test, dead endpoints, files (the emulators
themselves are session fixtures in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.objectstores import (
    free_port,
)
from worker.retry import RetryPolicy

# Enough to see a retry happen, short enough that a dead endpoint fails within seconds.
FAST_RETRY = RetryPolicy(attempts=2, max_seconds=3.0, initial_wait=0.05, max_wait=0.2)


@pytest.fixture
def bucket_name() -> str:
    """A fresh bucket/container name (valid for S3, GCS and Azure)."""
    return f"t{uuid.uuid4().hex[:20]}"


@pytest.fixture
def dead_endpoint() -> str:
    """An http URL on a loopback port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str, bytes], Path]:
    """Write bytes to a file under the test's tmp dir and return its path."""

    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return write
