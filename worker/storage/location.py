"""From a BackupStorageLocation's spec to an open BackupStore (Velero's backup-store getter):
provider, bucket and prefix, ``spec.config``, ``spec.credential`` and ``objectStorage.caCert``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from worker.errors import ConfigError
from worker.retry import RetryPolicy
from worker.storage import ObjectStore, StoreSettings, normalize_provider, open_store
from worker.storage.credentials import ca_bundle, write_credentials_file
from worker.storage.layout import BackupStore

ReadSecret = Callable[[str, str], bytes]  # (secret name, key) -> value, in Velero's namespace


def store_settings(
    location: Mapping[str, Any],
    read_secret: ReadSecret,
    workdir: Path,
    *,
    timeout: float,
    max_connections: int,
    retry: RetryPolicy,
) -> tuple[StoreSettings, str]:
    """The provider settings and the prefix for a location. Raises ConfigError."""
    spec = location.get("spec") or {}
    provider = spec.get("provider")
    if not provider:
        raise ConfigError("spec.provider is empty")
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
    config = spec.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError("spec.config must be a map of strings")

    bundle: str | None = None
    if storage.get("caCert"):
        try:
            pem = base64.b64decode(str(storage["caCert"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError("objectStorage.caCert is not valid base64") from exc
        bundle = str(ca_bundle(pem, workdir))

    credentials_file: str | None = None
    credential = spec.get("credential")
    if isinstance(credential, Mapping) and credential.get("name"):
        name, key = str(credential["name"]), str(credential.get("key") or "")
        if not key:
            raise ConfigError(f"spec.credential of secret {name!r} names no key")
        data = read_secret(name, key)
        credentials_file = str(write_credentials_file(data, workdir, name, key))

    settings = StoreSettings(
        provider=normalize_provider(str(provider)),
        bucket=bucket,
        config={str(k): str(v) for k, v in config.items()},
        credentials_file=credentials_file,
        ca_bundle=bundle,
        timeout=timeout,
        max_connections=max_connections,
        retry=retry,
    )
    return settings, prefix


def open_backup_store(settings: StoreSettings, prefix: str) -> tuple[BackupStore, ObjectStore]:
    """Open the provider and wrap it in the Velero layout. Raises ConfigError, StoreError."""
    store = open_store(settings)
    return BackupStore(store, prefix), store
