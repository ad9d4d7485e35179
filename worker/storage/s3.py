"""Amazon S3 and S3-compatible stores (Velero provider ``aws``), through botocore.

Mirrors velero-plugin-for-aws v1.11.1 ``Init``: the same config keys and validation, the
credentials file used as both shared credentials and shared config, region auto-detection
by an unsigned HeadBucket, ``s3Url``/``s3ForcePathStyle``/``insecureSkipTLSVerify``, the
SSE-C customer key, and the Go SDK's choice between virtual-hosted and path-style requests.
Retries live in ``worker.retry``; botocore's own are switched off.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import platform
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Literal

import botocore
import botocore.parsers
import botocore.session
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpchecksum import handle_checksum_body, resolve_response_checksum_algorithms
from botocore.response import StreamingBody

from worker import __version__, retry
from worker.errors import ConfigError, StoreError
from worker.storage import ObjectStore, StoreSettings, parse_bool, sdk

log = logging.getLogger(__name__)

# velero-plugin-for-aws v1.11.1 object_store.go Init (providers.md §2.1). Most write-side
# keys are accepted (and some validated) although a read-only sync never uses them, so a BSL
# that Velero accepts is accepted here too.
CONFIG_KEYS = frozenset(
    {
        "region",
        "s3Url",
        "publicUrl",
        "kmsKeyId",
        "customerKeyEncryptionFile",
        "s3ForcePathStyle",
        "signatureVersion",
        "credentialsFile",
        "profile",
        "serverSideEncryption",
        "insecureSkipTLSVerify",
        "enableSharedConfig",
        "tagging",
        "checksumAlgorithm",
    }
)

# v1.11.1 validChecksumAlg: an explicit list, not the SDK enum.
_CHECKSUM_ALGORITHMS = frozenset({"", "CRC32", "CRC32C", "SHA1", "SHA256"})
_SSE_C_KEY_BYTES = 32
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_READ_CHUNK = 64 * 1024
_ERROR_BODY_BYTES = 64 * 1024  # an S3 error document is a few hundred bytes
# The keys the direct read serves: those the sync builds (a cleaned prefix, a Kubernetes
# name, Velero's file names), which need no escaping in a URL path.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*")
_PROBE_KEY = "backup-sync-probe"
_HOST_LABEL = re.compile(r"[0-9a-z-]+")
USER_AGENT = (
    f"backup-sync/{__version__} botocore/{botocore.__version__} Python/{platform.python_version()}"
)


class S3Store(sdk.GuardedStore):
    """One S3 bucket, read-only. botocore clients are thread-safe, so is this."""

    def __init__(
        self,
        client: Any,
        settings: StoreSettings,
        sse_c_key: bytes | None,
        direct: DirectGet | None = None,
    ) -> None:
        super().__init__(settings)
        self._client = client
        self._bucket = settings.bucket
        self._sse: dict[str, Any] = (
            {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": sse_c_key} if sse_c_key else {}
        )
        self._direct = direct

    def where(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def list_page(
        self, prefix: str, delimiter: str, token: str | None
    ) -> tuple[list[str], str | None]:
        kwargs: dict[str, Any] = {
            "Bucket": self._bucket,
            "Prefix": prefix,
            "Delimiter": delimiter,
            "MaxKeys": self.settings.page_size,
        }
        if token:
            kwargs["ContinuationToken"] = token
        page = self._client.list_objects_v2(**kwargs)
        prefixes = [common["Prefix"] for common in page.get("CommonPrefixes") or ()]
        if not page.get("IsTruncated"):
            return prefixes, None
        next_token: str | None = page.get("NextContinuationToken")
        if not next_token:
            raise StoreError(
                f"list {self.where(prefix)}: truncated page without a continuation token"
            )
        return prefixes, next_token

    def get_once(self, key: str, max_bytes: int) -> bytes | None:
        """GetObject; NoSuchKey is None, NoSuchBucket an error. A plain key is read
        directly (``DirectGet``); what that cannot settle is asked again through the SDK."""
        if self._direct is not None and self._direct.serves(key):
            found = self._direct.get(key, max_bytes, self.where(key))
            if found is not ASK_SDK:
                return found
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key, **self._sse)
        except ClientError as exc:
            if retry.error_code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        return _read_capped(
            response["Body"], response.get("ContentLength"), max_bytes, self.where(key)
        )


class Unsettled(enum.Enum):
    ASK_SDK = "ask the SDK"  # DirectGet.get: not settled there; the SDK's GetObject decides


ASK_SDK = Unsettled.ASK_SDK


class DirectGet:
    """GetObject as one signed request on the S3 client's own connection pool, without
    botocore's per-call pipeline (parameter validation, serialization, endpoint rules,
    event hooks): half the CPU of ``client.get_object``, and the two reads per backup are
    most of a full sync's own CPU (docs/performance.md).

    Nothing of the protocol is re-implemented: the URL is the one the client builds (taken
    once from a presigned URL: addressing style, endpoint and region as configured), the
    signature is botocore's SigV4 signer with the client's credentials (refreshed as the
    client's are), the request goes through the client's HTTP session (TLS, CA bundle,
    proxies, timeouts and the connection errors the retry policy knows), and an error
    answer is parsed by botocore's own parser into the ClientError the SDK would raise.
    It settles a 200 (the body, capped), a 404 NoSuchKey (absent), and throttling and
    server errors (429, 5xx: the retry policy backs off, honouring Retry-After). Anything
    else (a region redirect, a denial, a missing bucket) it answers ``ASK_SDK``, and the
    SDK's GetObject asks again with everything the SDK does about it. Not used with an
    SSE-C key, an ARN bucket or without credentials."""

    def __init__(self, client: Any, http: Any, base_url: str, credentials: Any) -> None:
        self._client = client
        self._http = http
        self._base_url = base_url
        self._credentials = credentials
        self._region = client.meta.region_name
        self._parser = botocore.parsers.create_parser("rest-xml")
        self._operation = client.meta.service_model.operation_model("GetObject")
        # The response checksums botocore validates (its default, when_supported): the
        # algorithms it can compute, in its order of preference.
        request: dict[str, Any] = {"context": {}}
        resolve_response_checksum_algorithms(request, self._operation, {"ChecksumMode": "ENABLED"})
        self._checksums = request["context"].get("checksum", {})

    @classmethod
    def of(cls, client: Any, bucket: str, credentials: Any) -> DirectGet | None:
        """The direct read for ``client``'s bucket, or None where it does not apply."""
        if credentials is None or ":" in bucket:
            return None
        http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        if http is None:  # a botocore without it: every read goes through the SDK
            return None
        try:
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": _PROBE_KEY}
            )
        except BotoCoreError:
            return None
        base, _, _ = url.partition("?")
        if not base.endswith("/" + _PROBE_KEY):
            return None
        return cls(client, http, base.removesuffix(_PROBE_KEY), credentials)

    @staticmethod
    def serves(key: str) -> bool:
        """A key of plain segments (none is ``.`` or ``..``): its URL path is the key."""
        return _PLAIN_KEY.fullmatch(key) is not None

    def get(self, key: str, max_bytes: int, where: str) -> bytes | Unsettled | None:
        request = AWSRequest(
            method="GET",
            url=self._base_url + key,
            # As the SDK asks by default: the stored checksum, to validate the body with.
            headers={"User-Agent": USER_AGENT, "x-amz-checksum-mode": "ENABLED"},
            stream_output=True,
        )
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(
            request
        )
        response = self._http.send(request.prepare())
        status, length = response.status_code, response.headers.get("content-length")
        if status == 200:
            size = int(length) if length and length.isdigit() else None
            return _read_capped(self._body(response), size, max_bytes, where)
        body = StreamingBody(response.raw, None)
        try:
            text = body.read(_ERROR_BODY_BYTES)
        finally:
            body.close()
        if status not in (404, 429) and status < 500:
            return ASK_SDK
        error = self._error(status, response.headers, text)
        if status == 404:
            return None if retry.error_code(error) in _NOT_FOUND_CODES else ASK_SDK
        raise error

    def _body(self, response: Any) -> StreamingBody:
        """The body, checked at its end against the stored checksum as botocore checks it
        (a mismatch is its FlexibleChecksumError: a StoreError naming the object)."""
        answer = {"headers": response.headers, "context": {}, "body": None}
        context = {"checksum": self._checksums}
        handle_checksum_body(response, answer, context, self._operation)
        checked: StreamingBody | None = answer["body"]
        return checked or StreamingBody(response.raw, response.headers.get("content-length"))

    def _error(self, status: int, headers: Any, body: bytes) -> ClientError:
        """The ClientError botocore raises for this answer (its parser, its classes)."""
        answer = {"status_code": status, "headers": headers, "body": body}
        parsed = self._parser.parse(answer, self._operation.output_shape)
        code = str((parsed.get("Error") or {}).get("Code") or status)
        error: ClientError = self._client.exceptions.from_code(code)(parsed, "GetObject")
        return error


def _read_capped(body: Any, length: object, max_bytes: int, where: str) -> bytes:
    """A response body, closed after: ObjectTooLarge beyond ``max_bytes`` (by its length,
    else after reading one byte more)."""
    try:
        if isinstance(length, int):
            sdk.check_size(length, max_bytes, where)
        data = _read_at_most(body.read, max_bytes + 1)
    finally:
        body.close()
    sdk.check_size(len(data), max_bytes, where)
    return data


def _read_at_most(read: Callable[[int], bytes], limit: int) -> bytes:
    """Read a stream to its end or to ``limit`` bytes, whichever comes first."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = read(min(_READ_CHUNK, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def open_store(settings: StoreSettings) -> ObjectStore:
    """Validate the config like the plugin's Init and open the bucket."""
    config = settings.config
    s3_url = config.get("s3Url", "")
    path_style = parse_bool(config, "s3ForcePathStyle")
    insecure = parse_bool(config, "insecureSkipTLSVerify")
    if s3_url and urllib.parse.urlsplit(s3_url).scheme not in ("http", "https"):
        raise ConfigError("s3Url must be a URL with scheme http or https")
    sse_c_key = _static_checks(config)

    verify: bool | str | None = None  # botocore default: AWS_CA_BUNDLE, else certifi
    if insecure:
        verify = False
    elif settings.ca_bundle:
        verify = settings.ca_bundle

    session = _session(settings)
    # Always explicit: botocore's own default is path style for every custom endpoint.
    style = addressing_style(s3_url or None, settings.bucket, force_path_style=path_style)
    addressing: dict[str, str] = {"addressing_style": style}

    region = config.get("region", "")
    if not region and not s3_url:
        region = _detect_region(session, settings, verify, addressing)
    if not region:
        # Go SDK order: AWS_REGION, AWS_DEFAULT_REGION, then the profile's region. An
        # S3-compatible endpoint with no region at all still needs one to sign with.
        region = (
            os.environ.get("AWS_REGION") or session.get_config_variable("region") or "us-east-1"
        )

    try:
        client = session.create_client(
            "s3",
            region_name=region,
            endpoint_url=s3_url or None,
            verify=verify,
            config=_client_config(settings, addressing),
        )
    except BotoCoreError as exc:  # no network here: configuration trouble
        raise ConfigError(f"cannot configure the S3 client: {retry.describe(exc)}") from None
    direct = None if sse_c_key else DirectGet.of(client, settings.bucket, session.get_credentials())
    return S3Store(client, settings, sse_c_key, direct)


def addressing_style(
    endpoint: str | None, bucket: str, *, force_path_style: bool
) -> Literal["virtual", "path"]:
    """``"virtual"`` or ``"path"``: the choice aws-sdk-go-v2 (the plugin's SDK) makes for
    ``endpoint`` (``s3Url``; None for AWS's own endpoints).

    The S3 endpoint rules (service/s3 ``endpoints.go``, identical in v1.48.0 of the Velero
    1.15 line and v1.101.0 of plugin v1.14), for a bucket that is no ARN:
    ``s3ForcePathStyle`` means path; a bucket that is one DNS label of 3 to 63 lowercase
    characters is virtual-hosted unless the endpoint host is an IP literal; over plain
    http a bucket of such labels joined by dots is virtual-hosted too (no IP check on
    that branch); everything else is path style. botocore instead uses path style for
    any custom endpoint, which stores such as Alibaba OSS and Tencent COS refuse.

    botocore's copy of the same rules then builds the URL. It differs only for bucket
    names that S3 forbids anyway (a label that starts or ends with ``-``: the SDK
    virtual-hosts them, botocore falls back to path style).
    """
    if force_path_style:
        return "path"
    if _virtual_hostable(bucket, allow_dots=False):
        if endpoint is not None and _host_is_ip(endpoint):
            return "path"
        return "virtual"
    over_http = endpoint is not None and urllib.parse.urlsplit(endpoint).scheme == "http"
    if over_http and _virtual_hostable(bucket, allow_dots=True):
        return "virtual"
    return "path"


def _virtual_hostable(bucket: str, *, allow_dots: bool) -> bool:
    """aws-sdk-go-v2 ``awsrulesfn.IsVirtualHostableS3Bucket``: not an IP address, and each
    label 3 to 63 of [0-9a-z-] (hyphens anywhere, unlike RFC 1123)."""
    if _is_ip(bucket):
        return False
    labels = bucket.split(".") if allow_dots else [bucket]
    return all(3 <= len(label) <= 63 and _HOST_LABEL.fullmatch(label) for label in labels)


def _host_is_ip(endpoint: str) -> bool:
    """smithy-go ``rulesfn.ParseURL`` ``IsIp``: the host, without an IPv6 zone, parses as
    an IP address."""
    host = urllib.parse.urlsplit(endpoint).hostname or ""
    return _is_ip(host.split("%", 1)[0])


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _static_checks(config: Mapping[str, str]) -> bytes | None:
    """Init-time checks that need no network; returns the SSE-C key, if any."""
    if config.get("kmsKeyId"):
        # v1.11.1 quirk (providers.md §2.1): with kmsKeyId set, Init returns early through
        # errors.Wrapf(nil, ...) == nil, so the customer key is never loaded and tagging and
        # checksum are not validated. Objects Velero wrote then are KMS-encrypted and read
        # without SSE-C headers, so doing the same keeps such locations readable.
        return None
    sse_c_key = None
    key_file = config.get("customerKeyEncryptionFile", "")
    if key_file:
        sse_c_key = _read_customer_key(key_file)
    tagging = config.get("tagging", "")
    if tagging:
        _check_tags(tagging)
    if config.get("checksumAlgorithm", "") not in _CHECKSUM_ALGORITHMS:
        valid = ", ".join(sorted(a for a in _CHECKSUM_ALGORITHMS if a))
        raise ConfigError(f"invalid checksum algorithm; valid: {valid} or empty")
    return sse_c_key


def _read_customer_key(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            key = fh.read(_SSE_C_KEY_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"provided customerKeyEncryptionFile does not exist: {path}") from None
    except OSError as exc:
        raise ConfigError(
            f"could not read customerKeyEncryptionFile {path}: {exc.strerror}"
        ) from None
    if len(key) != _SSE_C_KEY_BYTES:
        raise ConfigError(f"contents of customerKeyEncryptionFile ({path}) are not 32 bytes")
    return key


def _check_tags(tagging: str) -> None:
    """velero-plugin-for-aws v1.11.1 ``CheckTags``, limits and all."""
    tags = tagging.split("&")
    if len(tags) == 1:
        raise ConfigError("tagging: tags are not separated with an &")
    for index, tag in enumerate(tags):
        if index > 9:
            raise ConfigError("tagging: AWS S3 allows only ten tags per object")
        parts = tag.split("=")
        if len(parts) != 2:
            raise ConfigError("tagging: invalid tags provided")
        if len(parts[0]) > 128:
            raise ConfigError("tagging: an S3 tag key can not be more than 128 characters")
        if len(parts[1]) > 248:  # sic: the plugin's limit, although its message says 256
            raise ConfigError("tagging: an S3 tag value can not be more than 256 characters")


def _session(settings: StoreSettings) -> Any:
    """A private botocore session: the credentials file is both the shared credentials and
    the shared config file, as in the plugin, without touching os.environ."""
    config = settings.config
    path = (
        settings.credentials_file
        or config.get("credentialsFile")
        or os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    )
    if path and not os.path.isfile(path):
        raise ConfigError(f"AWS credentials file {path} does not exist")
    profile = config.get("profile", "")
    try:
        session = botocore.session.Session()
        # Timestamps in responses (LastModified ...) are never used here; parsing them into
        # datetimes is ~20% of botocore's CPU per GetObject (docs/benchmark.md). The AWS
        # CLI keeps them as text the same way.
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_timestamp_as_text
        )
        if path:
            session.set_config_variable("credentials_file", path)
            session.set_config_variable("config_file", path)
        if profile:
            # An explicit profile also makes botocore ignore the static env keys, as the Go
            # SDK does for a programmatically chosen profile.
            session.set_config_variable("profile", profile)
        if path:
            _ignore_env_web_identity(session)
            # The plugin fetches credentials eagerly: a bad file fails Init.
            if session.get_credentials() is None:
                raise ConfigError(
                    f"no AWS credentials in {path} for profile {profile or 'default'!r}"
                )
        # Resolved now so that a missing profile fails here, not on the first call.
        session.get_scoped_config()
    except BotoCoreError as exc:  # no network here: profile or file trouble
        raise ConfigError(
            f"cannot load AWS credentials or profile {profile or 'default'!r}: "
            f"{retry.describe(exc)}"
        ) from None
    return session


def _timestamp_as_text(value: str) -> str:
    return value


def _ignore_env_web_identity(session: Any) -> None:
    """The plugin blanks AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN when a credentials file is
    given, so IRSA cannot take over. Here the env stays as is; the web-identity provider is
    told to read only the profile."""
    resolver = session.get_component("credential_provider")
    try:
        provider = resolver.get_provider("assume-role-with-web-identity")
    except Exception:  # no such provider in this botocore: nothing to switch off
        return
    if hasattr(provider, "_disable_env_vars"):
        provider._disable_env_vars = True


def _client_config(settings: StoreSettings, addressing: dict[str, str]) -> Config:
    return Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        max_pool_connections=settings.max_connections,
        retries={"total_max_attempts": 1, "mode": "standard"},
        s3=addressing,
        # A fixed User-Agent: botocore otherwise rebuilds and sanitizes its composite one
        # twice per request, ~10% of its CPU per GetObject (docs/benchmark.md); this one
        # also names the tool in the bucket's access logs.
        user_agent=USER_AGENT,
    )


def _detect_region(
    session: Any,
    settings: StoreSettings,
    verify: bool | str | None,
    addressing: dict[str, str],
) -> str:
    """The bucket's region from an unsigned HeadBucket (aws-sdk-go-v2 GetBucketRegion):
    ``x-amz-bucket-region`` is read from the answer even when the call itself fails."""
    config = _client_config(settings, addressing).merge(Config(signature_version=UNSIGNED))
    client = session.create_client("s3", region_name="us-east-1", verify=verify, config=config)
    bucket = settings.bucket
    what = f"detect region of s3://{bucket}"

    def head() -> Mapping[str, str]:
        try:
            response = client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            headers = (exc.response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
            if headers.get("x-amz-bucket-region"):
                return dict(headers)
            if retry.http_status(exc) == 404:
                raise StoreError(f"{what}: bucket not found") from exc
            raise
        return dict(response["ResponseMetadata"]["HTTPHeaders"])

    try:
        headers = sdk.guarded(head, what, settings.retry)
    finally:
        client.close()
    region = headers.get("x-amz-bucket-region", "")
    if not region:
        raise StoreError(f"{what}: unable to determine bucket's region")
    log.debug("detected bucket region", extra={"bucket": bucket, "region": region})
    return region
