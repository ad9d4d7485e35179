"""The object-store port's contract: the same cases on every provider, each against its
emulator (moto for aws, fake-gcs-server for gcp, Azurite for azure).

A store lists common prefixes page by page, lazily; reads an object whole in one round trip,
or None when it is absent; refuses an object beyond the cap; fails fast, with a StoreError
naming the bucket, when the endpoint is unreachable; and rejects an unknown config key
naming the valid ones. A missing bucket is an error, never an empty or absent one: a run
then fails the location and deletes nothing (an empty listing would make every Backup of
the location an orphan).

Provider-specific behaviour (credentials, endpoints, resuming a failed page, TLS) is tested
beside each provider, in test_s3.py, test_gcs.py and test_azure.py.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.httpsession
import pytest
import requests

from harness.objectstores import ObjectStoreServer
from tests.storage.conftest import FAST_RETRY
from tests.unit.fakes import FakeCluster
from tests.unit.helpers import NOW, NS, bsl, cluster_backup, settings
from worker.errors import ConfigError, ObjectTooLarge, StoreError
from worker.report import Outcome
from worker.run import open_location_store, run
from worker.storage import ObjectStore, StoreSettings, open_store
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION


@dataclass(frozen=True)
class Provider:
    """One emulator and the little that differs between providers."""

    server: ObjectStoreServer
    page_query: str  # the page size in a listing URL, for page_size=2
    pages_prefixes: bool  # fake-gcs-server answers every common prefix in one page
    wrong_key: str  # a plausible key the provider's plugin does not accept
    valid_keys: tuple[str, str]  # two of those it does, which the error must name

    @property
    def name(self) -> str:
        return self.server.provider

    def settings(self, bucket: str, credentials: Path, **overrides: Any) -> StoreSettings:
        args: dict[str, Any] = {
            "config": self.server.location_config(bucket),
            "page_size": 2,
            "timeout": 5.0,
            "retry": FAST_RETRY,
        }
        return StoreSettings(
            self.name, bucket, credentials_file=str(credentials), **{**args, **overrides}
        )


SERVERS = {"aws": "moto", "gcp": "fake_gcs", "azure": "azurite"}  # tests/conftest.py fixtures
TRAITS: dict[str, dict[str, Any]] = {
    "aws": {
        "page_query": "max-keys=2",
        "pages_prefixes": True,
        "wrong_key": "customerKeyEncryptionSecret",
        "valid_keys": ("s3Url", "region"),
    },
    "gcp": {
        "page_query": "maxResults=2",
        "pages_prefixes": False,
        "wrong_key": "insecureSkipTLSVerify",
        "valid_keys": ("storeEndpoint", "serviceAccount"),
    },
    "azure": {
        "page_query": "maxresults=2",
        "pages_prefixes": True,
        "wrong_key": "caCertEncoded",
        "valid_keys": ("storageAccount", "useAAD"),
    },
}


@pytest.fixture(params=sorted(SERVERS))
def provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Provider:
    # Every provider signs in with its credentials file, none through an emulator shortcut.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    server = request.getfixturevalue(SERVERS[request.param])
    return Provider(server, **TRAITS[request.param])


@pytest.fixture
def credentials(provider: Provider, write_file: Callable[[str, bytes], Path]) -> Path:
    data = provider.server.credentials()
    assert data is not None
    return write_file("cloud", data)


@pytest.fixture
def bucket(provider: Provider, bucket_name: str) -> str:
    provider.server.create_bucket(bucket_name)
    return bucket_name


@pytest.fixture
def store(provider: Provider, bucket: str, credentials: Path) -> Iterator[ObjectStore]:
    opened = open_store(provider.settings(bucket, credentials))
    yield opened
    opened.close()


@pytest.fixture
def sent(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URLs of the requests sent to the emulator (not to a token endpoint), whichever
    HTTP stack the provider's SDK uses; seeding the emulator is recorded too."""
    netloc = urllib.parse.urlsplit(provider.server.endpoint).netloc
    urls: list[str] = []

    def recording(send: Any) -> Any:
        def record(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            if urllib.parse.urlsplit(request.url).netloc == netloc:
                urls.append(request.url)
            return send(self, request, *args, **kwargs)

        return record

    for cls in (requests.adapters.HTTPAdapter, botocore.httpsession.URLLib3Session):
        monkeypatch.setattr(cls, "send", recording(cls.send))
    return urls


def test_lists_common_prefixes_page_by_page_and_lazily(
    provider: Provider, bucket: str, store: ObjectStore, sent: list[str]
) -> None:
    for name in ("b1", "b2", "b3", "b4", "b5"):
        provider.server.put(bucket, f"velero/backups/{name}/velero-backup.json", b"{}")
    provider.server.put(bucket, "velero/backups/stray-file", b"x")
    provider.server.put(bucket, "other/x", b"x")
    sent.clear()  # the seeding's own requests

    listed = store.list_common_prefixes("velero/backups/", "/")
    assert next(listed) == "velero/backups/b1/"
    assert len(sent) == 1  # lazy: the first page is enough
    assert list(listed) == [f"velero/backups/{n}/" for n in ("b2", "b3", "b4", "b5")]
    assert provider.page_query in sent[0]
    if provider.pages_prefixes:
        assert len(sent) >= 3  # page_size=2 and six entries

    assert list(store.list_common_prefixes("", "/")) == ["other/", "velero/"]
    assert list(store.list_common_prefixes("nothing/here/", "/")) == []


def test_get_returns_the_bytes_or_none_when_absent(
    provider: Provider, bucket: str, store: ObjectStore, sent: list[str]
) -> None:
    payload = bytes(range(256)) * 4
    provider.server.put(bucket, "backups/b1/b1-podvolumebackups.json.gz", payload)
    provider.server.put(bucket, "empty", b"")
    list(store.list_common_prefixes("backups/", "/"))  # as every sync starts
    sent.clear()

    assert store.get("backups/b1/b1-podvolumebackups.json.gz", 1024) == payload
    assert store.get("backups/b1/missing.json", 1024) is None
    assert store.get("empty", 1024) == b""
    assert len(sent) == 3  # one round trip each


def test_get_enforces_the_size_cap(provider: Provider, bucket: str, store: ObjectStore) -> None:
    provider.server.put(bucket, "big", b"x" * 100_000)
    assert store.get("big", 100_000) == b"x" * 100_000
    with pytest.raises(ObjectTooLarge, match=rf"{bucket}/big .*99999-byte cap"):
        store.get("big", 99_999)


def test_unreachable_endpoint_fails_fast(
    provider: Provider, bucket_name: str, credentials: Path, dead_endpoint: str
) -> None:
    live = urllib.parse.urlsplit(provider.server.endpoint).netloc
    dead = urllib.parse.urlsplit(dead_endpoint).netloc
    config = {
        k: v.replace(live, dead) for k, v in provider.server.location_config(bucket_name).items()
    }
    store = open_store(provider.settings(bucket_name, credentials, config=config, timeout=1.0))
    started = time.monotonic()
    with pytest.raises(StoreError, match=bucket_name):
        list(store.list_common_prefixes("backups/", "/"))
    with pytest.raises(StoreError, match=f"{bucket_name}/k"):
        store.get("k", 10)
    assert time.monotonic() - started < 6
    store.close()


def test_unknown_config_key_names_the_valid_ones(
    provider: Provider, bucket_name: str, credentials: Path
) -> None:
    config = {**provider.server.location_config(bucket_name), provider.wrong_key: "x"}
    with pytest.raises(ConfigError) as caught:
        open_store(provider.settings(bucket_name, credentials, config=config))
    message = str(caught.value)
    assert provider.wrong_key in message
    assert all(key in message for key in provider.valid_keys)


def test_a_missing_bucket_is_an_error_not_an_empty_one(
    provider: Provider, bucket_name: str, credentials: Path
) -> None:
    store = open_store(provider.settings(bucket_name, credentials))  # never created
    with pytest.raises(StoreError, match=bucket_name):
        list(store.list_common_prefixes("backups/", "/"))
    with pytest.raises(StoreError, match=bucket_name):
        store.get("backups/b1/velero-backup.json", 100)
    store.close()


def test_a_missing_bucket_fails_the_location_and_deletes_nothing(
    provider: Provider, bucket_name: str
) -> None:
    """The whole run, with the real provider on a fake cluster: the location's Backup would
    be an orphan if the missing bucket read as empty."""
    location = bsl("gone", provider=f"velero.io/{provider.name}", bucket=bucket_name)
    location["spec"]["config"] = provider.server.location_config(bucket_name)
    location["spec"]["credential"] = {"name": "cloud-credentials", "key": "cloud"}
    cluster = FakeCluster()
    cluster.add(BACKUP_STORAGE_LOCATION, location)
    cluster.add(BACKUP, cluster_backup("nightly-1", "gone"))
    credentials = provider.server.credentials()
    assert credentials is not None
    cluster.secrets[(NS, "cloud-credentials")] = {"cloud": credentials}

    report = run(settings(), cluster, open_location_store, now=lambda: NOW)

    assert report.exit_code == 1
    [result] = report.locations
    assert result.outcome == Outcome.FAILED
    assert bucket_name in result.reason
    assert cluster.writes == []
    assert "nightly-1" in cluster.of(BACKUP, NS)
