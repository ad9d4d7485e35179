"""Credentials files and CA bundles written for the SDKs."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import certifi
import pytest

from harness.objectstores import TestCA
from worker.errors import ConfigError
from worker.storage.credentials import ca_bundle, write_credentials_file


def test_credentials_file_is_private_and_named_like_velero(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    path = write_credentials_file(b"[default]\n", directory, "cloud-credentials", "cloud")
    assert path == directory / "cloud-credentials-cloud"
    assert path.read_bytes() == b"[default]\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_credentials_file_is_rewritten_and_tightened(tmp_path: Path) -> None:
    path = tmp_path / "s-k"
    path.write_bytes(b"old and longer")
    path.chmod(0o644)
    write_credentials_file(b"new", tmp_path, "s", "k")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_credentials_file_refuses_symlinks(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"keep")
    (tmp_path / "s-k").symlink_to(target)
    with pytest.raises(OSError):
        write_credentials_file(b"new", tmp_path, "s", "k")
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("name", "key"),
    [("../etc", "k"), ("s", "a/b"), ("s", "..\\x"), ("", "k"), ("s", ""), ("..", "k"), ("s", "\0")],
)
def test_credentials_file_refuses_path_tricks(tmp_path: Path, name: str, key: str) -> None:
    with pytest.raises(ConfigError, match=r"spec\.credential"):
        write_credentials_file(b"x", tmp_path, name, key)
    assert list(tmp_path.iterdir()) == []


def test_ca_bundle_keeps_public_roots_and_adds_the_ca(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    bundle = ca_bundle(ca.ca_pem, tmp_path / "run")
    data = bundle.read_bytes()
    assert data.startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    assert ca.ca_pem in data
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    ssl.create_default_context(cafile=str(bundle))  # loads as a trust store
    # Same PEM, same file; another PEM, another file.
    assert ca_bundle(ca.ca_pem, tmp_path / "run") == bundle
    other = TestCA(tmp_path / "other")
    assert ca_bundle(other.ca_pem, tmp_path / "run") != bundle


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ],
)
def test_ca_bundle_rejects_what_is_not_a_certificate(tmp_path: Path, pem: bytes) -> None:
    with pytest.raises(ConfigError, match="caCert"):
        ca_bundle(pem, tmp_path)
