"""Chart and image fixtures: the pinned ``helm`` (built from its Go module), and the real
control plane of the integration suite.

``helm`` comes from ``HELM_BIN``, else the versioned cache that
``hack/build-chart-tools.sh`` fills. Outside CI a missing build is built once, before the
first test (a cold build takes minutes), and the tests are skipped if that fails. Under
``CI=true`` nothing is built here and a missing helm is a hard failure: ``make test`` builds
it first (the ``tools`` target).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chart.chart import Helm, HelmUnavailable, resolve_helm
from tests.conftest import in_ci

_helm: dict[str, Any] = {}


def _resolve() -> None:
    try:
        _helm["path"] = resolve_helm(build=not in_ci())
    except HelmUnavailable as exc:
        _helm["error"] = exc


def pytest_collection_finish(session: pytest.Session) -> None:
    """Find (outside CI: build) helm before any test runs, if a test needs it."""
    if any("helm" in getattr(item, "fixturenames", ()) for item in session.items):
        _resolve()


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    """The pinned helm, with its config, cache and data dirs in a temp dir."""
    if not _helm:
        _resolve()
    if "path" not in _helm:
        message = f"helm unavailable: {_helm['error']}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield Helm(Path(_helm["path"]), tmp_path_factory.mktemp("helm-home"))
