"""Fixtures shared by every suite: one real Kubernetes control plane and one object-store
emulator of each kind per session, a fresh namespace per test.

Outside CI a missing emulator (package or binary not installed) skips its tests; under
``CI=true`` it is a hard failure, so a broken install can never pass as green.

Control-plane binaries: ``BACKUP_SYNC_BIN_DIR``, ``KUBEBUILDER_ASSETS`` or the versioned
cache of ``hack/build-control-plane.sh``. Outside CI a missing build is built once, before
the first test (a cold build takes minutes, longer than a test's timeout), and tests are
skipped if that fails. Under ``CI=true`` nothing is built here and a missing binary is a
hard failure: ``make test`` runs ``hack/build-control-plane.sh`` first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.controlplane import BinariesNotFound, ControlPlane, resolve_bin_dir
from harness.objectstores import Azurite, EmulatorUnavailable, FakeGCS, MotoS3, TestCA

S = TypeVar("S", MotoS3, Azurite, FakeGCS)


def in_ci() -> bool:
    """Under CI a missing binary or emulator is a failure, never a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _serve(server: S) -> Iterator[S]:
    try:
        server.start()
    except EmulatorUnavailable as exc:
        message = f"{type(server).__name__} unavailable: {exc}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """A CA and a 127.0.0.1 server certificate for the HTTPS emulators."""
    return TestCA(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoS3]:
    yield from _serve(MotoS3())


@pytest.fixture(scope="session")
def moto_tls(test_ca: TestCA) -> Iterator[MotoS3]:
    yield from _serve(MotoS3(tls=test_ca))


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    yield from _serve(Azurite())


@pytest.fixture(scope="session")
def azurite_tls(test_ca: TestCA) -> Iterator[Azurite]:
    """HTTPS Azurite that also accepts Azure AD bearer tokens (``--oauth basic``)."""
    yield from _serve(Azurite(tls=test_ca, oauth=True))


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGCS]:
    yield from _serve(FakeGCS())


@pytest.fixture(scope="session")
def fake_gcs_tls(test_ca: TestCA) -> Iterator[FakeGCS]:
    yield from _serve(FakeGCS(tls=test_ca))


# -- the control plane

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
    yield from running_control_plane()


def running_control_plane(apiserver_args: Sequence[str] = ()) -> Iterator[ControlPlane]:
    """Start a control plane with the project's CRDs, yield it, stop it (for fixtures)."""
    cp = ControlPlane(_bin_dir(), apiserver_args=apiserver_args)
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
