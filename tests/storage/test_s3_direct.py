"""The S3 store's direct read (``worker.storage.s3.DirectGet``) against MinIO, which checks
every SigV4 signature: plain keys are read in one signed request without the SDK's
GetObject; whatever the direct read cannot settle is left to the SDK, whose errors are what
a user sees.

The contract test (test_contract.py) runs the rest of the read's cases on moto through the
same path: bytes or absent, the size cap, an unreachable endpoint, a missing bucket.
"""

from __future__ import annotations

import base64
import io
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from harness.minio import MinIO
from tests.storage.conftest import FAST_RETRY
from worker.errors import ObjectTooLarge, StoreError
from worker.retry import RetryPolicy
from worker.storage import StoreSettings, open_store
from worker.storage.s3 import DirectGet, S3Store

BUCKET = "direct"


@pytest.fixture(scope="module")
def minio() -> Iterator[MinIO]:
    # make test builds MinIO first (make bench-tools); elsewhere it is built here.
    server = MinIO(build=os.environ.get("CI") != "true").start()
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def _open(
    minio: MinIO, creds: Path, bucket: str = BUCKET, policy: RetryPolicy = FAST_RETRY
) -> S3Store:
    store = open_store(
        StoreSettings(
            provider="aws",
            bucket=bucket,
            config=minio.location_config(bucket),
            credentials_file=str(creds),
            timeout=5.0,
            retry=policy,
        )
    )
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def creds(minio: MinIO, write_file: Callable[[str, bytes], Path]) -> Path:
    return write_file("cloud", minio.credentials())


class _SdkCalls:
    """Counts the SDK's GetObject calls of a store (the direct read makes none)."""

    def __init__(self, store: S3Store) -> None:
        self.keys: list[str] = []
        client = store._client
        real = client.get_object

        def get_object(**kwargs: Any) -> Any:
            self.keys.append(kwargs["Key"])
            return real(**kwargs)

        client.get_object = get_object


def test_plain_keys_are_read_directly_and_signed_right(minio: MinIO, creds: Path) -> None:
    minio.put(BUCKET, "team/prod/backups/b-1/velero-backup.json", b'{"kind": "Backup"}')
    store = _open(minio, creds)
    sdk = _SdkCalls(store)
    try:
        assert store.get("team/prod/backups/b-1/velero-backup.json", 100) == b'{"kind": "Backup"}'
        assert store.get("team/prod/backups/b-1/b-1-podvolumebackups.json.gz", 100) is None
        with pytest.raises(ObjectTooLarge, match=r"b-1/velero-backup\.json is larger than"):
            store.get("team/prod/backups/b-1/velero-backup.json", 5)
    finally:
        store.close()
    assert sdk.keys == []


def test_other_keys_go_through_the_sdk(minio: MinIO, creds: Path) -> None:
    key = "backups/b 1/velero-backup.json"  # a space: no plain key
    minio.put(BUCKET, key, b"{}")
    store = _open(minio, creds)
    sdk = _SdkCalls(store)
    try:
        assert store.get(key, 100) == b"{}"
    finally:
        store.close()
    assert sdk.keys == [key]


def test_what_it_cannot_settle_is_the_sdks_error(
    minio: MinIO, write_file: Callable[[str, bytes], Path]
) -> None:
    # A missing bucket: 404 NoSuchBucket is no absent object.
    store = _open(minio, write_file("cloud", minio.credentials()), bucket="no-such-bucket")
    sdk = _SdkCalls(store)
    with pytest.raises(StoreError, match=r"s3://no-such-bucket/k.*NoSuchBucket"):
        store.get("k", 100)
    assert sdk.keys == ["k"]  # asked again once, by the SDK (a missing bucket is not retried)
    # Wrong credentials: 403 from the direct read, the SDK's InvalidAccessKeyId for the user.
    bad = b"[default]\naws_access_key_id = NOBODY\naws_secret_access_key = wrong\n"
    store = _open(minio, write_file("bad", bad))
    sdk = _SdkCalls(store)
    with pytest.raises(StoreError, match=f"s3://{BUCKET}/k.*InvalidAccessKeyId"):
        store.get("k", 100)
    assert sdk.keys == ["k"]  # a denial is left to the SDK


def test_throttling_is_settled_with_the_sdks_error_and_retry_after(
    minio: MinIO, creds: Path
) -> None:
    """A 503 SlowDown is raised as the SDK's ClientError (its code and headers),
    so the retry policy backs off as asked, without a second request through the SDK."""
    patient = RetryPolicy(attempts=2, max_seconds=5.0, initial_wait=0.05, max_wait=2.0)
    store = _open(minio, creds, policy=patient)
    sdk = _SdkCalls(store)
    direct = store._direct
    assert direct is not None
    sent: list[float] = []
    body = (
        b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    )

    class Throttled:
        def send(self, request: Any) -> AWSResponse:
            sent.append(time.monotonic())
            headers = HTTPHeaders()  # as urllib3's answer reaches botocore
            headers["Content-Type"], headers["Retry-After"] = "application/xml", "1"
            return AWSResponse(request.url, 503, headers, _Raw(body))

    direct._http = Throttled()
    with pytest.raises(StoreError, match=r"ClientError 503 SlowDown"):
        store.get("backups/b-1/velero-backup.json", 100)
    assert len(sent) == patient.attempts and sdk.keys == []
    assert sent[1] - sent[0] >= 0.95  # Retry-After: 1, not the policy's own 0.05 s


def test_a_redirect_is_left_to_the_sdk(minio: MinIO, creds: Path) -> None:
    """A 301 (a bucket in another region) is no error of the direct read: the SDK's
    GetObject asks again, with whatever it does about redirects, and its answer counts."""
    key = "backups/b-2/velero-backup.json"
    minio.put(BUCKET, key, b"{}")
    store = _open(minio, creds)
    sdk = _SdkCalls(store)
    direct = store._direct
    assert direct is not None
    body = b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>"

    class Moved:
        def send(self, request: Any) -> AWSResponse:
            headers = HTTPHeaders()
            headers["x-amz-bucket-region"] = "eu-west-1"
            return AWSResponse(request.url, 301, headers, _Raw(body))

    direct._http = Moved()
    assert store.get(key, 100) == b"{}"
    assert sdk.keys == [key]


@pytest.mark.parametrize("stored", ["right", "wrong"])
def test_the_body_is_checked_against_its_stored_checksum(
    minio: MinIO, creds: Path, stored: str
) -> None:
    """As botocore does by default: the request asks for the stored checksum, and a body
    that does not match it is an error, never data."""
    store = _open(minio, creds)
    direct = store._direct
    assert direct is not None
    data = b'{"kind": "Backup"}'
    crc = zlib.crc32(data if stored == "right" else b"other").to_bytes(4, "big")
    asked: list[str] = []

    class Answer:
        def send(self, request: Any) -> AWSResponse:
            asked.append(request.headers["x-amz-checksum-mode"])
            headers = HTTPHeaders()
            headers["Content-Length"] = str(len(data))
            headers["x-amz-checksum-crc32"] = base64.b64encode(crc).decode()
            return AWSResponse(request.url, 200, headers, _Raw(data))

    direct._http = Answer()
    if stored == "right":
        assert store.get("backups/b-1/velero-backup.json", 100) == data
    else:
        with pytest.raises(StoreError, match=r"velero-backup\.json.*checksum"):
            store.get("backups/b-1/velero-backup.json", 100)
    assert asked[0] == "ENABLED"


class _Raw(io.BytesIO):
    """A raw body as urllib3 hands it to botocore."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


@pytest.mark.parametrize(
    ("key", "plain"),
    [
        ("backups/b-1/velero-backup.json", True),
        ("team/prod/backups/nightly-20260101000000/x.json.gz", True),
        ("a_b~c/D.E", True),
        ("a/../b", False),
        ("./a", False),
        ("a/.", False),
        ("a//b", False),
        ("/a", False),
        ("a/", False),
        ("a b", False),
        ("a+b", False),
        ("a%2Fb", False),
        ("ü", False),
        ("", False),
    ],
)
def test_plain_keys(key: str, plain: bool) -> None:
    assert DirectGet.serves(key) is plain


def test_no_direct_read_with_an_sse_c_key_or_without_credentials(
    minio: MinIO, creds: Path, write_file: Callable[[str, bytes], Path]
) -> None:
    key_file = write_file("sse-c", b"k" * 32)
    config = {**minio.location_config(BUCKET), "customerKeyEncryptionFile": str(key_file)}
    store = open_store(
        StoreSettings(provider="aws", bucket=BUCKET, config=config, credentials_file=str(creds))
    )
    assert isinstance(store, S3Store) and store._direct is None
    store.close()
    plain = _open(minio, creds)
    assert DirectGet.of(plain._client, BUCKET, None) is None
    plain.close()
