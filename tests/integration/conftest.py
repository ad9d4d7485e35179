"""Integration fixtures: a real Kubernetes control plane per session, a fresh namespace per test.

Binaries: ``BACKUP_SYNC_BIN_DIR``, ``KUBEBUILDER_ASSETS`` or the versioned cache of
``hack/build-control-plane.sh``. Outside CI a missing build is built once, before the first
test (a cold build takes minutes, longer than a test's timeout), and tests are skipped if
that fails. Under ``CI=true`` nothing is built here and a missing binary is a hard failure:
``.ci/run`` must run ``hack/build-control-plane.sh`` first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.controlplane import BinariesNotFound, ControlPlane, resolve_bin_dir
from tests.conftest import in_ci

_binaries: dict[str, Any] = {}


def _resolve_binaries() -> None:
    try:
        _binaries["dir"] = resolve_bin_dir(build=not in_ci())
    except BinariesNotFound as exc:
        _binaries["error"] = exc


def pytest_collection_finish(session: pytest.Session) -> None:
    """Find (outside CI: build) the binaries before any test runs, if a test needs them."""
    if any("control_plane" in getattr(item, "fixturenames", ()) for item in session.items):
        _resolve_binaries()


def _bin_dir() -> Path:
    if not _binaries:
        _resolve_binaries()
    if "dir" in _binaries:
        return Path(_binaries["dir"])
    message = f"Kubernetes control plane binaries unavailable: {_binaries['error']}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running etcd + kube-apiserver with the project's CRDs applied (BSL without /status)."""
    cp = ControlPlane(_bin_dir())
    try:
        cp.start()
        cp.apply_crds()
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kube_api_client(control_plane: ControlPlane) -> Any:
    """A ``kubernetes.client.ApiClient`` authenticated as cluster admin."""
    return control_plane.api_client()


@pytest.fixture
def velero_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace (``velero-<random>``) for one test; deleted with its contents after."""
    name = f"velero-{uuid.uuid4().hex[:10]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.delete_namespace(name)
