"""Fixtures shared by the unit tests (plain builders are in helpers.py)."""

from __future__ import annotations

import pytest

from tests.unit.helpers import Recorder
from worker import cli


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The CLI with a Recorder in place of its run and logging setup."""
    recorder = Recorder()
    monkeypatch.setattr(cli, "sync_run", recorder.run)
    monkeypatch.setattr(cli, "configure_logging", recorder.configure)
    monkeypatch.setattr(cli, "pod_namespace", lambda: None)
    monkeypatch.delenv("VELERO_NAMESPACE", raising=False)
    return recorder
