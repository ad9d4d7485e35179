"""From a BackupStorageLocation to an open store, against the emulators: the CA a location
names (``spec.config.caCert``, ``objectStorage.caCertRef``) in front of HTTPS emulators
signed by a private CA, and a ``spec.config.credentialsFile`` inside the mounted
credentials folder."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.objectstores import MOTO_ACCESS_KEY, Azurite, MotoS3, TestCA
from tests.storage.conftest import FAST_RETRY
from worker.errors import ConfigError, StoreError
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.storage import ObjectStore, open_store
from worker.storage.bsl import StoreOptions, store_settings

Server = MotoS3 | Azurite
CREDENTIALS = ("cloud-credentials", "cloud")
CA_SECRET = ("bsl-ca", "ca.crt")


def location(
    server: Server, bucket: str, config: dict[str, str] | None = None, **storage: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "default", "namespace": "velero"},
        "spec": {
            "provider": server.provider,
            "objectStorage": {"bucket": bucket, **storage},
            "config": {**server.location_config(bucket), **(config or {})},
            "credential": {"name": CREDENTIALS[0], "key": CREDENTIALS[1]},
        },
    }


class Opened:
    """Opens locations the way the worker does; closes what it opened."""

    def __init__(self, server: Server, workdir: Path, ca: TestCA) -> None:
        self.secrets = {CREDENTIALS: server.credentials(), CA_SECRET: ca.ca_pem}
        self.workdir = workdir
        self.warnings: list[str] = []
        self.stores: list[ObjectStore] = []

    def read_secret(self, name: str, key: str) -> bytes:
        return self.secrets[(name, key)]

    def __call__(
        self,
        loc: dict[str, Any],
        profile: VeleroProfile = DEFAULT_PROFILE,
        credentials_dir: str = "/credentials",
    ) -> ObjectStore:
        options = StoreOptions(
            timeout=5.0,
            max_connections=4,
            retry=FAST_RETRY,
            profile=profile,
            credentials_dir=credentials_dir,
            warn=self.warnings.append,
        )
        settings, _prefix = store_settings(loc, self.read_secret, self.workdir, options)
        store = open_store(settings)
        self.stores.append(store)
        return store

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture(params=["aws", "azure"])
def tls_server(request: pytest.FixtureRequest, bucket_name: str) -> Server:
    """An HTTPS emulator whose certificate only the test CA vouches for, with a bucket
    holding one backup."""
    server: Server = request.getfixturevalue(
        "moto_tls" if request.param == "aws" else "azurite_tls"
    )
    server.create_bucket(bucket_name)
    server.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    return server


@pytest.fixture
def opened(tls_server: Server, tmp_path: Path, test_ca: TestCA) -> Iterator[Opened]:
    opener = Opened(tls_server, tmp_path / "work", test_ca)
    yield opener
    opener.close()


def readable(store: ObjectStore) -> bool:
    try:
        return store.get("backups/b1/velero-backup.json", 10) == b"{}"
    except StoreError as exc:
        assert "SSL" in str(exc) or "certificate" in str(exc), exc
        return False


def test_without_a_ca_the_emulator_is_not_trusted(
    tls_server: Server, bucket_name: str, opened: Opened
) -> None:
    assert not readable(opened(location(tls_server, bucket_name)))


def test_config_ca_cert_is_trusted(
    tls_server: Server, bucket_name: str, opened: Opened, test_ca: TestCA
) -> None:
    # The plugins read a PEM caCert from their config when objectStorage.caCert is unset.
    loc = location(tls_server, bucket_name, {"caCert": test_ca.ca_pem.decode()})
    store = opened(loc)
    assert readable(store)
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]


def test_ca_cert_ref_is_trusted_from_velero_1_18(
    tls_server: Server, bucket_name: str, opened: Opened
) -> None:
    loc = location(tls_server, bucket_name, caCertRef={"name": "bsl-ca", "key": "ca.crt"})
    assert readable(opened(loc, profile=VeleroProfile((1, 18, 0))))
    assert opened.warnings == []


def test_ca_cert_ref_is_ignored_before_velero_1_18(
    tls_server: Server, bucket_name: str, opened: Opened
) -> None:
    loc = location(tls_server, bucket_name, caCertRef={"name": "bsl-ca", "key": "ca.crt"})
    assert not readable(opened(loc, profile=VeleroProfile((1, 15, 0))))
    [warning] = opened.warnings
    assert "caCertRef is ignored" in warning and "1.15.0" in warning


def test_ca_cert_and_ca_cert_ref_together_fail(
    tls_server: Server, bucket_name: str, opened: Opened, test_ca: TestCA
) -> None:
    loc = location(
        tls_server,
        bucket_name,
        caCert=base64.b64encode(test_ca.ca_pem).decode(),
        caCertRef={"name": "bsl-ca", "key": "ca.crt"},
    )
    with pytest.raises(ConfigError, match="cannot specify both caCert and caCertRef"):
        opened(loc, profile=VeleroProfile((1, 18, 3)))
    assert opened.stores == []


def test_credentials_file_inside_the_credentials_folder(
    moto: MotoS3, bucket_name: str, tmp_path: Path, test_ca: TestCA
) -> None:
    moto.create_bucket(bucket_name)
    moto.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    folder = tmp_path / "credentials"
    folder.mkdir()
    (folder / "cloud").write_bytes(moto.credentials())
    loc = location(moto, bucket_name, {"credentialsFile": str(folder / "cloud")})
    del loc["spec"]["credential"]  # the mounted file, not a Secret the worker reads
    opener = Opened(moto, tmp_path / "work", test_ca)
    try:
        store = opener(loc, credentials_dir=str(folder))
        sent: list[Any] = []
        store._client.meta.events.register(  # type: ignore[attr-defined]
            "before-send.s3", lambda request, **_: sent.append(request)
        )
        assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
        authorization = sent[0].headers["Authorization"].decode()
        assert f"Credential={MOTO_ACCESS_KEY}/" in authorization  # the file was read
        with pytest.raises(ConfigError, match="outside the credentials folder"):
            opener(loc, credentials_dir=str(tmp_path / "elsewhere"))
    finally:
        opener.close()
