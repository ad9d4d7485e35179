"""S3 provider against moto's server, through botocore: what is S3's own (the port's cases,
the same on every provider, are in test_contract.py)."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.httpsession
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError

from harness.objectstores import MotoS3
from tests.storage.conftest import FAST_RETRY
from worker.errors import ConfigError, StoreError
from worker.storage import ObjectStore, StoreSettings, open_store
from worker.storage.credentials import ca_bundle
from worker.storage.s3 import addressing_style

CREDS = b"[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = secret\n"


def settings(
    moto: MotoS3, bucket: str, credentials_file: Path | None = None, **config: str
) -> StoreSettings:
    base = {"region": "us-east-1", "s3Url": moto.endpoint, "s3ForcePathStyle": "true"}
    return StoreSettings(
        provider="aws",
        bucket=bucket,
        config={**base, **config},
        credentials_file=str(credentials_file) if credentials_file else None,
        page_size=2,
        timeout=5.0,
        retry=FAST_RETRY,
    )


@pytest.fixture
def creds_file(write_file: Callable[[str, bytes], Path]) -> Path:
    return write_file("cloud", CREDS)


@pytest.fixture
def bucket(moto: MotoS3, bucket_name: str) -> str:
    moto.create_bucket(bucket_name)
    return bucket_name


@pytest.fixture
def store(moto: MotoS3, bucket: str, creds_file: Path) -> Iterator[ObjectStore]:
    opened = open_store(settings(moto, bucket, creds_file))
    yield opened
    opened.close()


def sent_requests(store: ObjectStore) -> list[Any]:
    """Record every HTTP request the store sends: through the botocore client, and its
    direct reads (which send on the client's HTTP session)."""
    seen: list[Any] = []
    client = store._client  # type: ignore[attr-defined]
    client.meta.events.register("before-send.s3", lambda request, **_: seen.append(request))
    direct = store._direct  # type: ignore[attr-defined]
    if direct is not None:
        http = direct._http

        class Recording:
            def send(self, request: Any) -> Any:
                seen.append(request)
                return http.send(request)

        direct._http = Recording()
    return seen


def test_listing_resumes_from_the_continuation_token(
    moto: MotoS3, bucket: str, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        moto.put(bucket, f"backups/b{n}/velero-backup.json", b"{}")
    urls: list[str] = []
    real_send = botocore.httpsession.URLLib3Session.send
    failed: list[str] = []

    def flaky_send(self: Any, request: Any) -> Any:
        urls.append(request.url)
        if "continuation-token" in request.url and not failed:
            failed.append(request.url)
            raise EndpointConnectionError(endpoint_url=request.url)
        return real_send(self, request)

    monkeypatch.setattr(botocore.httpsession.URLLib3Session, "send", flaky_send)
    assert list(store.list_common_prefixes("backups/", "/")) == [f"backups/b{n}/" for n in range(5)]
    # The retry repeated the failed page, not the listing from its start.
    assert urls.count(failed[0]) == 2
    assert sum("continuation-token" not in u for u in urls) == 1


def test_credentials_file_with_a_named_profile(
    moto: MotoS3, bucket: str, write_file: Callable[[str, bytes], Path]
) -> None:
    path = write_file(
        "cloud",
        CREDS + b"\n[backup]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s2\n",
    )
    store = open_store(settings(moto, bucket, path, profile="backup"))
    requests = sent_requests(store)
    assert list(store.list_common_prefixes("", "/")) == []
    assert "Credential=AKIDPROFILE/" in _text(requests[0].headers["Authorization"])

    default = open_store(settings(moto, bucket, path))
    requests = sent_requests(default)
    assert default.get("nothing", 10) is None
    assert "Credential=AKIDDEFAULT/" in _text(requests[0].headers["Authorization"])


def test_credentials_file_from_the_environment(
    moto: MotoS3, bucket: str, creds_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds_file))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    store = open_store(settings(moto, bucket))
    requests = sent_requests(store)
    assert store.get("nothing", 10) is None
    assert "Credential=AKIDDEFAULT/" in _text(requests[0].headers["Authorization"])


def test_credentials_file_wins_over_irsa_env(
    moto: MotoS3,
    bucket: str,
    creds_file: Path,
    write_file: Callable[[str, bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The plugin blanks the IRSA variables when a file is given; here they are ignored
    # (an STS call would fail: there is no network).
    token = write_file("token", b"eyJhbGciOi.fake.token")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/velero")
    store = open_store(settings(moto, bucket, creds_file))
    requests = sent_requests(store)
    assert store.get("nothing", 10) is None
    assert "Credential=AKIDDEFAULT/" in _text(requests[0].headers["Authorization"])


def test_bad_credentials_file_or_profile_is_a_config_error(
    moto: MotoS3, bucket: str, creds_file: Path
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_store(settings(moto, bucket, creds_file.with_name("missing")))
    with pytest.raises(ConfigError, match="nope") as caught:
        open_store(settings(moto, bucket, creds_file, profile="nope"))
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("s3ForcePathStyle", "yes", "s3ForcePathStyle"),
        ("insecureSkipTLSVerify", "on", "insecureSkipTLSVerify"),
        ("s3Url", "ftp://127.0.0.1:1", "http or https"),
        ("s3Url", "127.0.0.1:9000", "http or https"),
        ("checksumAlgorithm", "MD5", "checksum"),
        ("tagging", "a=b", "separated"),
        ("tagging", "a=b&c", "invalid tags"),
        ("tagging", "&".join(f"k{i}=v" for i in range(11)), "ten tags"),
        ("tagging", "a=b&" + "k" * 129 + "=v", "128"),
        ("tagging", "a=b&k=" + "v" * 249, "256"),
    ],
)
def test_invalid_values_are_config_errors(
    moto: MotoS3, bucket: str, key: str, value: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        open_store(settings(moto, bucket, **{key: value}))


def test_values_the_plugin_accepts(moto: MotoS3, bucket: str, creds_file: Path) -> None:
    store = open_store(
        settings(
            moto,
            bucket,
            creds_file,
            s3ForcePathStyle="T",
            insecureSkipTLSVerify="0",
            checksumAlgorithm="",
            tagging="a=b&c=d",
            signatureVersion="4",
            enableSharedConfig="true",
            publicUrl="https://example.com",
            serverSideEncryption="AES256",
        )
    )
    assert list(store.list_common_prefixes("", "/")) == []


def test_region_is_detected_when_neither_region_nor_s3url_is_set(
    moto: MotoS3, bucket_name: str, creds_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto.create_bucket(bucket_name, region="eu-west-1")
    moto.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    # The SDKs' standard endpoint override stands in for AWS, so s3Url stays empty.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    store = open_store(
        StoreSettings(
            provider="aws",
            bucket=bucket_name,
            config={"s3ForcePathStyle": "true"},
            credentials_file=str(creds_file),
            retry=FAST_RETRY,
        )
    )
    assert store._client.meta.region_name == "eu-west-1"  # type: ignore[attr-defined]
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]

    with pytest.raises(StoreError, match="bucket not found"):
        open_store(
            StoreSettings(
                provider="aws",
                bucket="no-such-bucket-anywhere",
                config={"s3ForcePathStyle": "true"},
                credentials_file=str(creds_file),
                retry=FAST_RETRY,
            )
        )


def test_s3url_without_region_signs_with_us_east_1(
    moto: MotoS3, bucket: str, creds_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    store = open_store(
        StoreSettings(
            provider="aws",
            bucket=bucket,
            config={"s3Url": moto.endpoint},
            credentials_file=str(creds_file),
            retry=FAST_RETRY,
        )
    )
    assert store._client.meta.region_name == "us-east-1"  # type: ignore[attr-defined]
    assert store.get("nothing", 1) is None


def test_sse_c_customer_key_is_sent_on_get(
    moto: MotoS3, bucket: str, creds_file: Path, write_file: Callable[[str, bytes], Path]
) -> None:
    key = bytes(range(32))
    # The plugin reads the first 32 bytes; the rest of the file is ignored.
    key_file = write_file("sse-c.key", key + b"trailing bytes")
    moto.put(
        bucket,
        "backups/b1/velero-backup.json",
        b'{"kind": "Backup"}',
        SSECustomerAlgorithm="AES256",
        SSECustomerKey=key,
    )
    store = open_store(settings(moto, bucket, creds_file, customerKeyEncryptionFile=str(key_file)))
    requests = sent_requests(store)
    assert store.get("backups/b1/velero-backup.json", 1024) == b'{"kind": "Backup"}'
    headers = requests[0].headers
    assert headers["x-amz-server-side-encryption-customer-algorithm"] == b"AES256"
    assert headers["x-amz-server-side-encryption-customer-key"] == base64.b64encode(key)
    assert headers["x-amz-server-side-encryption-customer-key-MD5"] == base64.b64encode(
        hashlib.md5(key).digest()
    )


def test_sse_c_key_file_must_hold_32_bytes(
    moto: MotoS3, bucket: str, write_file: Callable[[str, bytes], Path]
) -> None:
    short = write_file("short.key", b"k" * 31)
    with pytest.raises(ConfigError, match="32 bytes"):
        open_store(settings(moto, bucket, customerKeyEncryptionFile=str(short)))
    with pytest.raises(ConfigError, match="does not exist"):
        open_store(settings(moto, bucket, customerKeyEncryptionFile=str(short) + ".missing"))


def test_kms_key_disables_the_customer_key_as_in_the_plugin(
    moto: MotoS3, bucket: str, creds_file: Path
) -> None:
    # v1.11.1 returns from Init before loading the customer key when kmsKeyId is set.
    store = open_store(
        settings(moto, bucket, creds_file, kmsKeyId="alias/k", customerKeyEncryptionFile="/nope")
    )
    requests = sent_requests(store)
    assert store.get("nothing", 1) is None
    assert "x-amz-server-side-encryption-customer-key" not in requests[0].headers


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_ca_bundle_and_insecure_skip_verify_over_https(
    moto_tls: MotoS3, bucket_name: str, creds_file: Path, tmp_path: Path
) -> None:
    assert moto_tls._tls is not None
    moto_tls.create_bucket(bucket_name)
    moto_tls.put(bucket_name, "k", b"v")
    bundle = ca_bundle(moto_tls._tls.ca_pem, tmp_path / "ca")

    trusted = open_store(
        StoreSettings(**{**_tls_args(moto_tls, bucket_name, creds_file), "ca_bundle": str(bundle)})
    )
    assert trusted.get("k", 10) == b"v"

    untrusted = open_store(StoreSettings(**_tls_args(moto_tls, bucket_name, creds_file)))
    with pytest.raises(StoreError, match="SSL"):
        untrusted.get("k", 10)

    args = _tls_args(moto_tls, bucket_name, creds_file)
    args["config"] = {**args["config"], "insecureSkipTLSVerify": "true"}
    assert open_store(StoreSettings(**args)).get("k", 10) == b"v"


def _tls_args(server: MotoS3, bucket: str, creds_file: Path) -> dict[str, Any]:
    return {
        "provider": "aws",
        "bucket": bucket,
        "config": {"region": "us-east-1", "s3Url": server.endpoint, "s3ForcePathStyle": "true"},
        "credentials_file": str(creds_file),
        "retry": FAST_RETRY,
    }


# -- addressing: virtual-hosted or path style, as aws-sdk-go-v2 chooses for the plugin


def _text(header: str | bytes) -> str:
    """A header as signed: botocore's handlers leave bytes, the direct read text."""
    return header.decode() if isinstance(header, bytes) else header


class _Body(io.BytesIO):
    """A raw response body for botocore (what urllib3 would hand it)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def _answer_not_found(request: Any, **_: Any) -> AWSResponse:
    """Answer every request with NoSuchKey without sending it: the URL is what we check."""
    body = b"<Error><Code>NoSuchKey</Code><Message>no</Message></Error>"
    return AWSResponse(request.url, 404, {"Content-Type": "application/xml"}, _Body(body))


@pytest.mark.parametrize(
    ("s3_url", "bucket", "force", "expected"),
    [
        # A host name and a DNS-compatible bucket: virtual-hosted (Alibaba OSS refuses path).
        (
            "https://oss-cn-hangzhou.aliyuncs.com",
            "velero",
            "",
            "https://velero.oss-cn-hangzhou.aliyuncs.com/k",
        ),
        (
            "https://cos.ap-guangzhou.myqcloud.com",
            "b-1250000000",
            "false",
            "https://b-1250000000.cos.ap-guangzhou.myqcloud.com/k",
        ),
        (
            "https://s3.example.com:9000/base",
            "velero",
            "",
            "https://velero.s3.example.com:9000/base/k",
        ),
        # localhost is a name, not an IP literal: virtual-hosted, as in the SDK.
        ("http://localhost:9000", "velero", "", "http://velero.localhost:9000/k"),
        # IP literals: path style.
        ("http://127.0.0.1:9000", "velero", "", "http://127.0.0.1:9000/velero/k"),
        ("https://[::1]:9000", "velero", "", "https://[::1]:9000/velero/k"),
        # Buckets that are no DNS label: path style.
        ("https://s3.example.com", "Velero", "", "https://s3.example.com/Velero/k"),
        ("https://s3.example.com", "velero_backups", "", "https://s3.example.com/velero_backups/k"),
        ("https://s3.example.com", "ab", "", "https://s3.example.com/ab/k"),
        # Dots: labels are allowed over http only (a TLS wildcard covers one label).
        (
            "https://s3.example.com",
            "velero.backups.abc",
            "",
            "https://s3.example.com/velero.backups.abc/k",
        ),
        (
            "http://s3.example.com",
            "velero.backups.abc",
            "",
            "http://velero.backups.abc.s3.example.com/k",
        ),
        ("http://s3.example.com", "velero.ab.abc", "", "http://s3.example.com/velero.ab.abc/k"),
        # That rule has no IP check: the SDK virtual-hosts a dotted bucket even here.
        (
            "http://127.0.0.1:9000",
            "velero.backups.abc",
            "",
            "http://velero.backups.abc.127.0.0.1:9000/k",
        ),
        # s3ForcePathStyle wins over everything.
        (
            "https://oss-cn-hangzhou.aliyuncs.com",
            "velero",
            "true",
            "https://oss-cn-hangzhou.aliyuncs.com/velero/k",
        ),
        (
            "http://s3.example.com",
            "velero.backups.abc",
            "1",
            "http://s3.example.com/velero.backups.abc/k",
        ),
    ],
)
def test_addressing_follows_the_go_sdk(
    s3_url: str, bucket: str, force: str, expected: str, creds_file: Path
) -> None:
    config = {"region": "us-east-1", "s3Url": s3_url}
    if force:
        config["s3ForcePathStyle"] = force
    store = open_store(
        StoreSettings(
            provider="aws",
            bucket=bucket,
            config=config,
            credentials_file=str(creds_file),
            retry=FAST_RETRY,
        )
    )
    urls: list[str] = []

    def record(request: Any, **kwargs: Any) -> AWSResponse:
        urls.append(request.url)
        return _answer_not_found(request, **kwargs)

    direct_urls: list[str] = []

    class NotFound:  # the direct read's HTTP session, answering as the hook does
        def send(self, request: Any) -> AWSResponse:
            direct_urls.append(request.url)
            return _answer_not_found(request)

    store._direct._http = NotFound()  # type: ignore[attr-defined]
    assert store.get("k", 10) is None
    assert direct_urls == [expected]
    # The SDK's own GetObject, which the direct read leaves everything else to, agrees.
    client = store._client  # type: ignore[attr-defined]
    client.meta.events.register("before-send.s3", record)
    with pytest.raises(ClientError, match="NoSuchKey"):
        client.get_object(Bucket=bucket, Key="k")
    assert urls == [expected]


@pytest.mark.parametrize(
    ("endpoint", "bucket", "force", "style"),
    [
        (None, "velero", False, "virtual"),
        (None, "velero.backups.abc", False, "path"),
        (None, "Velero", False, "path"),
        (None, "velero", True, "path"),
        ("https://s3.example.com", "velero", False, "virtual"),
        ("https://s3.example.com", "a" * 63, False, "virtual"),
        ("https://s3.example.com", "a" * 64, False, "path"),
        ("https://s3.example.com", "192.168.1.1", False, "path"),
        ("http://127.0.0.1:9000", "velero", False, "path"),
        ("http://[fe80::1%25eth0]:9000", "velero", False, "path"),
        ("http://localhost", "velero", False, "virtual"),
        # The SDK checks neither IP literal nor scheme-only rules here: a dotted bucket over
        # http is virtual-hosted even in front of an IP (so is botocore's ruleset).
        ("http://127.0.0.1:9000", "velero.backups.abc", False, "virtual"),
        ("https://127.0.0.1:9000", "velero.backups.abc", False, "path"),
    ],
)
def test_addressing_style_rule(endpoint: str | None, bucket: str, force: bool, style: str) -> None:
    assert addressing_style(endpoint, bucket, force_path_style=force) == style


def test_moto_on_an_ip_literal_is_served_path_style(
    moto: MotoS3, bucket: str, creds_file: Path
) -> None:
    # No s3ForcePathStyle: 127.0.0.1 is an IP literal, so the SDK (and we) use path style.
    moto.put(bucket, "backups/b1/velero-backup.json", b"{}")
    store = open_store(
        StoreSettings(
            provider="aws",
            bucket=bucket,
            config={"region": "us-east-1", "s3Url": moto.endpoint},
            credentials_file=str(creds_file),
            retry=FAST_RETRY,
        )
    )
    requests = sent_requests(store)
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert requests[0].url.startswith(f"{moto.endpoint}/{bucket}?")
