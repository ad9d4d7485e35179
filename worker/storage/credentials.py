"""Credentials: the Secrets a location names, read from the Velero namespace, and the files
the providers read (a Secret's credentials and a CA bundle).

Velero hands its plugins file paths, not bytes (``credentialsFile``, ``caCert`` as PEM);
the SDKs want paths too. These helpers write such files into a private per-run directory
that the caller creates (and removes) with ``tempfile.mkdtemp``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import certifi
from cryptography import x509

from worker.cluster import Cluster
from worker.errors import ClusterError, ConfigError, NotFound

_FORBIDDEN_IN_NAMES = ("/", "\\", "\0")

ReadSecret = Callable[[str, str], bytes]  # (secret name, key) -> value, in Velero's namespace


def secret_reader(cluster: Cluster, namespace: str) -> ReadSecret:
    """Secrets a location names, from the Velero namespace; a missing or forbidden one is
    a configuration error (exit 2): retrying the job cannot help, fixing it can."""

    def read_secret(name: str, key: str) -> bytes:
        try:
            return cluster.read_secret(namespace, name, key)
        except NotFound:
            raise ConfigError(f"Secret {name!r} not found in namespace {namespace}") from None
        except ClusterError as exc:
            if exc.status != 403:
                raise
            raise ConfigError(
                f"not allowed to read Secret {name!r} in namespace {namespace} (the chart "
                f"grants it when the Secret is listed in credentials.locationSecrets)"
            ) from None

    return read_secret


def write_credentials_file(data: bytes, directory: Path, name: str, key: str) -> Path:
    """Write a Secret value to ``<directory>/<name>-<key>`` (mode 0600), as Velero does.

    ``name`` and ``key`` come from the BSL's ``spec.credential``; they must not contain
    path separators, so the file cannot land outside ``directory``.
    """
    for label, value in (("secret name", name), ("secret key", key)):
        if not value or value in (".", "..") or any(c in value for c in _FORBIDDEN_IN_NAMES):
            raise ConfigError(f"invalid {label} {value!r} in spec.credential")
    _ensure_private_dir(directory)
    path = directory / f"{name}-{key}"
    _write_private(path, data)
    return path


def ca_bundle(ca_cert_pem: bytes, directory: Path, *, source: str = "objectStorage.caCert") -> Path:
    """Write a CA bundle: certifi's CAs, the system default CA file, then ``ca_cert_pem``.

    The SDKs' ``verify=<path>`` replaces their default trust store, while Velero appends
    ``caCert`` to the system pool; concatenating keeps both. Raises ConfigError naming
    ``source`` (the field the PEM came from) when the PEM holds no certificate.
    """
    try:
        certs = x509.load_pem_x509_certificates(ca_cert_pem)
    except ValueError as exc:
        raise ConfigError(f"{source} is not a valid PEM certificate: {exc}") from None
    if not certs:
        raise ConfigError(f"{source} holds no PEM certificate")

    parts = [Path(certifi.where()).read_bytes()]
    system = ssl.get_default_verify_paths().cafile
    if system and os.path.isfile(system):
        # An unreadable system bundle is not ours to fix; certifi still applies.
        with contextlib.suppress(OSError):
            parts.append(Path(system).read_bytes())
    parts.append(ca_cert_pem)
    bundle = b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n"

    _ensure_private_dir(directory)
    # Named by content: two locations with the same caCert share one file, different
    # caCerts never overwrite each other.
    digest = hashlib.sha256(ca_cert_pem).hexdigest()[:16]
    path = directory / f"ca-bundle-{digest}.pem"
    _write_private(path, bundle)
    return path


def _ensure_private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    # O_NOFOLLOW: never write through a symlink someone planted in the directory.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with wider permissions
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
    finally:
        os.close(fd)
