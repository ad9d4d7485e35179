"""From a BackupStorageLocation's spec to an open BackupStore (Velero's backup-store getter):
provider, bucket and prefix, ``spec.config``, ``spec.credential`` and the CA
(``objectStorage.caCertRef``, ``objectStorage.caCert``, ``spec.config.caCert``)."""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker import velero
from worker.errors import ConfigError
from worker.profile import VeleroProfile
from worker.retry import RetryPolicy
from worker.storage import (
    StoreSettings,
    normalize_provider,
    open_store,
)
from worker.storage.credentials import ReadSecret, ca_bundle, write_credentials_file
from worker.storage.layout import BackupStore

log = logging.getLogger(__name__)


# Config keys that name a file the provider reads and whose content leaves the pod.
_FILE_KEYS = ("credentialsFile", "customerKeyEncryptionFile")

# The plugins that read a PEM ``caCert`` from their config (providers.md §2.4, §4.5); the
# GCP plugin never looks at it.
_CONFIG_CA_CERT_PROVIDERS = frozenset({"aws", "azure"})


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """What the stores of every location share in one run."""

    timeout: float  # seconds, for connect and for each read
    max_connections: int  # HTTP pool size
    retry: RetryPolicy
    profile: VeleroProfile  # the Velero version whose behaviour to follow
    credentials_dir: str  # the only folder spec.config may name a file in
    warn: Callable[[str], None]  # for the run summary (a deprecation); also logged here


def store_settings(
    location: Mapping[str, Any], read_secret: ReadSecret, workdir: Path, options: StoreOptions
) -> tuple[StoreSettings, str]:
    """The provider settings and the prefix for a location. Raises ConfigError.

    ``read_secret`` reads the Velero namespace, which is also the location's; files the
    location's Secrets hold are written under ``workdir``."""
    spec = velero.spec(location)
    provider = spec.get("provider")
    if not provider:
        raise ConfigError("spec.provider is empty")
    provider = normalize_provider(str(provider))
    storage = spec.get("objectStorage")
    if not isinstance(storage, Mapping):
        raise ConfigError("spec.objectStorage is missing")
    bucket = str(storage.get("bucket") or "").strip("/")
    if not bucket:
        raise ConfigError("spec.objectStorage.bucket is empty")
    if "/" in bucket:
        raise ConfigError(
            f"bucket {bucket!r} must not contain a '/' (put the rest in objectStorage.prefix)"
        )
    prefix = str(storage.get("prefix") or "").strip("/")
    raw_config = spec.get("config") or {}
    if not isinstance(raw_config, Mapping):
        raise ConfigError("spec.config must be a map of strings")
    config = {str(k): str(v) for k, v in raw_config.items()}

    credentials_file = _credentials_file(spec.get("credential"), config, read_secret, workdir)
    for key in _FILE_KEYS:
        if key in config:
            config[key] = _file_inside(key, config[key], options.credentials_dir)

    def warn_and_log(message: str) -> None:
        log.warning(message, extra={"location": _name_of(location)})
        options.warn(message)

    pem, source = _ca_cert(provider, storage, config, read_secret, options.profile, warn_and_log)
    bundle = str(ca_bundle(pem, workdir, source=source)) if pem else None

    settings = StoreSettings(
        provider,
        bucket,
        config,
        credentials_file,
        bundle,
        timeout=options.timeout,
        max_connections=options.max_connections,
        retry=options.retry,
        profile=options.profile,
        warn=options.warn,
    )
    return settings, prefix


def _credentials_file(
    credential: Any, config: dict[str, str], read_secret: ReadSecret, workdir: Path
) -> str | None:
    """The file written from ``spec.credential``'s Secret key, or None without one."""
    if not isinstance(credential, Mapping) or not credential.get("name"):
        return None
    name, key = str(credential["name"]), str(credential.get("key") or "")
    if not key:
        raise ConfigError(f"spec.credential of secret {name!r} names no key")
    # Velero overwrites config credentialsFile with the Secret's file: the location's own
    # value is never read, so it is not checked either, only dropped.
    config.pop("credentialsFile", None)
    try:
        data = read_secret(name, key)
    except ConfigError as exc:
        raise ConfigError(f"spec.credential: {exc}") from None
    return str(write_credentials_file(data, workdir, name, key))


def _file_inside(key: str, path: str, credentials_dir: str) -> str:
    """``spec.config.<key>``, a file path, resolved, if it lies inside ``credentials_dir``.

    Whoever may write a BSL could otherwise make the worker read any file of its pod (the
    ServiceAccount token included) and send it to an endpoint of their choosing: the
    credentials file signs requests, the SSE-C key file is sent as a header. Velero main
    drops credentialsFile for the same reason. Both sides are resolved (``..``, symlinks)
    without opening anything, and the resolved path is what the provider then reads.
    """
    folder = os.path.realpath(credentials_dir)
    resolved = os.path.realpath(path)
    if resolved == folder or os.path.commonpath([resolved, folder]) != folder:
        raise ConfigError(
            f"spec.config.{key} {path!r} is outside the credentials folder "
            f"{credentials_dir} (after resolving '..' and symlinks): only files mounted "
            "there may be read; use spec.credential to name a Secret instead"
        )
    return resolved


def _ca_cert(
    provider: str,
    storage: Mapping[str, Any],
    config: Mapping[str, str],
    read_secret: ReadSecret,
    profile: VeleroProfile,
    warn: Callable[[str], None],
) -> tuple[bytes | None, str]:
    """The PEM to trust and the field it came from, in Velero's order: caCertRef (1.18),
    else objectStorage.caCert (Velero writes it over config caCert), else config caCert for
    the plugins that read it."""
    ref = storage.get("caCertRef")
    inline = storage.get("caCert")
    if ref is not None:
        if not profile.honours_ca_cert_ref:
            warn(
                f"objectStorage.caCertRef is ignored: Velero {profile.name} does not know "
                "the field (it came with Velero 1.18); use objectStorage.caCert"
            )
        elif inline:
            # Velero 1.18's BackupStorageLocation.Validate.
            raise ConfigError(
                "cannot specify both caCert and caCertRef in objectStorage; "
                "remove objectStorage.caCert"
            )
        else:
            return _ca_cert_from_secret(ref, read_secret), "objectStorage.caCertRef"
    if inline:
        try:
            return base64.b64decode(str(inline), validate=True), "objectStorage.caCert"
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("objectStorage.caCert is not valid base64") from exc
    if provider in _CONFIG_CA_CERT_PROVIDERS and config.get("caCert"):
        return config["caCert"].encode(), "spec.config.caCert"
    return None, ""


def _ca_cert_from_secret(ref: Any, read_secret: ReadSecret) -> bytes:
    if not isinstance(ref, Mapping):
        raise ConfigError("objectStorage.caCertRef must be a Secret key selector {name, key}")
    name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
    if not name:
        raise ConfigError("objectStorage.caCertRef names no Secret (name is empty)")
    if not key:
        raise ConfigError(f"objectStorage.caCertRef of secret {name!r} names no key")
    try:
        return read_secret(name, key)
    except ConfigError as exc:
        raise ConfigError(f"objectStorage.caCertRef: {exc}") from None


def _name_of(location: Mapping[str, Any]) -> str:
    return str(velero.metadata(location).get("name") or "")


def open_backup_store(settings: StoreSettings, prefix: str) -> BackupStore:
    """Open the provider and wrap it in the Velero layout. Raises ConfigError, StoreError."""
    return BackupStore(open_store(settings), prefix)
