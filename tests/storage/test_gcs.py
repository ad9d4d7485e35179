"""GCS provider against fake-gcs-server (and two tiny local HTTP stubs), through
google-cloud-storage: what is GCS's own (the port's cases, the same on every provider, are
in test_contract.py).

fake-gcs-server neither paginates common prefixes nor checks credentials, so two stubs fill
the gaps: a JSON-API listing endpoint that pages (and fails once, to test resuming), and an
OAuth token endpoint that a service-account key really exchanges a signed JWT with.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import google.auth
import pytest
from google.auth import compute_engine

from harness.objectstores import FakeGCS, GoogleTokenServer
from tests.storage.conftest import FAST_RETRY
from worker.errors import ConfigError, StoreError
from worker.storage import ObjectStore, StoreSettings, open_store
from worker.storage.credentials import ca_bundle
from worker.storage.gcs import READ_WRITE_SCOPE


def settings(endpoint: str, bucket: str, **kwargs: Any) -> StoreSettings:
    config = {"storeEndpoint": endpoint, **kwargs.pop("config", {})}
    args: dict[str, Any] = {"page_size": 1, "timeout": 5.0, "retry": FAST_RETRY, **kwargs}
    return StoreSettings(provider="gcp", bucket=bucket, config=config, **args)


@pytest.fixture
def emulator_env(fake_gcs: FakeGCS, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's emulator convention: anonymous credentials, no ADC lookup."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.endpoint)


@pytest.fixture
def bucket(fake_gcs: FakeGCS, bucket_name: str) -> str:
    fake_gcs.create_bucket(bucket_name)
    return bucket_name


def sent_requests(store: ObjectStore) -> list[Any]:
    """Record every request the store's HTTP session completes."""
    seen: list[Any] = []
    session = store._client._http  # type: ignore[attr-defined]
    session.hooks["response"].append(lambda response, *a, **k: seen.append(response.request))
    return seen


def test_an_absent_object_is_told_from_a_missing_bucket_once(
    fake_gcs: FakeGCS, bucket: str, emulator_env: None
) -> None:
    # A download's 404 reads the same for a missing object and a missing bucket: before any
    # listing, the first one costs one listing of the bucket; later ones are one request.
    store = open_store(settings(fake_gcs.endpoint, bucket))
    requests = sent_requests(store)
    assert store.get("a", 10) is None
    assert store.get("b", 10) is None
    assert [urllib.parse.urlsplit(r.url).path for r in requests] == [
        f"/download/storage/v1/b/{bucket}/o/a",
        f"/storage/v1/b/{bucket}/o",
        f"/download/storage/v1/b/{bucket}/o/b",
    ]


def test_emulator_host_alone_is_enough(fake_gcs: FakeGCS, bucket: str, emulator_env: None) -> None:
    fake_gcs.put(bucket, "backups/b1/velero-backup.json", b"{}")
    store = open_store(StoreSettings(provider="gcp", bucket=bucket, retry=FAST_RETRY))
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]


def test_store_endpoint_without_scheme_gets_https(emulator_env: None) -> None:
    store = open_store(settings("storage-example.p.googleapis.com", "b"))
    assert store._client._connection.API_BASE_URL == (  # type: ignore[attr-defined]
        "https://storage-example.p.googleapis.com"
    )


@pytest.mark.parametrize("suffix", ["/storage/v1/", "/storage/v1", "", "/"])
def test_store_endpoint_as_a_full_url(
    fake_gcs: FakeGCS, bucket: str, emulator_env: None, suffix: str
) -> None:
    # The Go client takes a value with "://" verbatim as its JSON API base
    # (https://host/storage/v1/); the Python client appends /storage/v1 itself.
    fake_gcs.put(bucket, "backups/b1/velero-backup.json", b"{}")
    store = open_store(settings(fake_gcs.endpoint + suffix, bucket))
    requests = sent_requests(store)
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert store.get("backups/b1/velero-backup.json", 10) == b"{}"
    assert [urllib.parse.urlsplit(r.url).path for r in requests] == [
        f"/storage/v1/b/{bucket}/o",
        f"/download/storage/v1/b/{bucket}/o/backups%2Fb1%2Fvelero-backup.json",
    ]


@pytest.mark.parametrize("suffix", ["", "/storage/v1/"])
def test_store_endpoint_as_a_bare_authority_is_https(
    fake_gcs_tls: FakeGCS,
    bucket_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suffix: str,
) -> None:
    assert fake_gcs_tls.tls is not None
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_tls.endpoint)
    fake_gcs_tls.create_bucket(bucket_name)
    fake_gcs_tls.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    bundle = ca_bundle(fake_gcs_tls.tls.ca_pem, tmp_path / "ca")
    authority = fake_gcs_tls.endpoint.removeprefix("https://")  # 127.0.0.1:<port>
    store = open_store(settings(authority + suffix, bucket_name, ca_bundle=str(bundle)))
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert store.get("backups/b1/velero-backup.json", 10) == b"{}"


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"type": "something_else"}',
        b'{"type": "service_account", "client_email": "a@b.c", "token_uri": "https://t"}',
    ],
)
def test_unusable_credentials_file_is_a_config_error(
    content: bytes, write_file: Callable[[str, bytes], Path]
) -> None:
    path = write_file("cloud", content)
    with pytest.raises(ConfigError, match="cannot load GCP credentials"):
        open_store(settings("http://127.0.0.1:1", "b", credentials_file=str(path)))


def test_authorized_user_credentials_file_is_accepted(
    write_file: Callable[[str, bytes], Path],
) -> None:
    info = {
        "type": "authorized_user",
        "client_id": "id",
        "client_secret": "secret",
        "refresh_token": "refresh",
        "quota_project_id": "proj",
    }
    path = write_file("cloud", json.dumps(info).encode())
    store = open_store(settings("http://127.0.0.1:1", "b", credentials_file=str(path)))
    assert store._client.project == "proj"  # type: ignore[attr-defined]
    store.close()


def test_metadata_server_credentials_need_service_account(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    # A universe domain given up front keeps the client from asking the metadata server.
    metadata_credentials = compute_engine.Credentials(  # type: ignore[no-untyped-call]
        universe_domain="googleapis.com"
    )
    monkeypatch.setattr(google.auth, "default", lambda **_: (metadata_credentials, "proj"))
    with pytest.raises(ConfigError, match="serviceAccount is expected"):
        open_store(settings("http://127.0.0.1:1", "b"))
    store = open_store(
        settings(
            "http://127.0.0.1:1", "b", config={"serviceAccount": "sa@p.iam.gserviceaccount.com"}
        )
    )
    store.close()


def test_ca_bundle_over_https(
    fake_gcs_tls: FakeGCS, bucket_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert fake_gcs_tls.tls is not None
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_tls.endpoint)
    fake_gcs_tls.create_bucket(bucket_name)
    fake_gcs_tls.put(bucket_name, "k", b"v")
    bundle = ca_bundle(fake_gcs_tls.tls.ca_pem, tmp_path / "ca")

    trusted = open_store(settings(fake_gcs_tls.endpoint, bucket_name, ca_bundle=str(bundle)))
    assert trusted.get("k", 10) == b"v"
    untrusted = open_store(settings(fake_gcs_tls.endpoint, bucket_name))
    with pytest.raises(StoreError, match="SSL"):
        untrusted.get("k", 10)


# -- paging and resuming, against a JSON-API stub that pages common prefixes


class _PagingStub(BaseHTTPRequestHandler):
    prefixes = [f"backups/b{n}/" for n in range(5)]
    seen: list[str] = []
    failed: list[str] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        token = query.get("pageToken", ["0"])[0]
        if token != "0" and not self.failed:
            type(self).failed.append(self.path)
            self._json(503, {"error": {"code": 503, "message": "backend unavailable"}})
            return
        size = int(query["maxResults"][0])
        start = int(token)
        body: dict[str, Any] = {
            "kind": "storage#objects",
            "prefixes": self.prefixes[start : start + size],
        }
        if start + size < len(self.prefixes):
            body["nextPageToken"] = str(start + size)
        self._json(200, body)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_listing_pages_and_resumes_from_the_page_token(monkeypatch: pytest.MonkeyPatch) -> None:
    _PagingStub.seen, _PagingStub.failed = [], []
    with serve(_PagingStub) as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        store = open_store(settings(endpoint, "bkt", page_size=2))
        listed = store.list_common_prefixes("backups/", "/")
        assert next(listed) == "backups/b0/"
        assert len(_PagingStub.seen) == 1  # lazy
        assert list(listed) == [f"backups/b{n}/" for n in range(1, 5)]
    # Three pages, the second one tried twice (503, then OK) with its token.
    assert len(_PagingStub.seen) == 4
    assert _PagingStub.seen.count(_PagingStub.failed[0]) == 2
    assert "pageToken=2" in _PagingStub.failed[0]


# -- a service-account key exchanging a real JWT for an access token


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[tuple[GoogleTokenServer, Path]]:
    server = GoogleTokenServer().start()
    path = tmp_path / "gcp-credentials.json"
    path.write_text(json.dumps(server.service_account_info()))
    try:
        yield server, path
    finally:
        server.stop()


@pytest.mark.parametrize("source", ["credentials_file", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_service_account_key_is_exchanged_for_a_token(
    source: str,
    fake_gcs: FakeGCS,
    bucket: str,
    token_server: tuple[GoogleTokenServer, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, path = token_server
    token_uri = server.token_uri
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    fake_gcs.put(bucket, "backups/b1/velero-backup.json", b"{}")
    if source == "credentials_file":
        store = open_store(settings(fake_gcs.endpoint, bucket, credentials_file=str(path)))
    else:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        store = open_store(settings(fake_gcs.endpoint, bucket))
    requests = sent_requests(store)

    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert store.get("backups/b1/velero-backup.json", 10) == b"{}"

    [grant] = server.grants  # one exchange, the token is reused
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    # google-auth always addresses the grant to Google's token URI; it posts it to ours.
    assert grant["aud"] in (token_uri, "https://oauth2.googleapis.com/token")
    assert grant["iss"] == GoogleTokenServer.CLIENT_EMAIL
    assert grant["scope"] == READ_WRITE_SCOPE
    bearer = f"Bearer {GoogleTokenServer.ACCESS_TOKEN}"
    assert all(r.headers["Authorization"] == bearer for r in requests)
    assert len(requests) == 2
