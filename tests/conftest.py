"""Fixtures shared by every suite: one object-store emulator of each kind per session.

Outside CI a missing emulator (package or binary not installed) skips its tests; under
``CI=true`` it is a hard failure, so a broken install can never pass as green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

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
