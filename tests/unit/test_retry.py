"""The retry policy on real SDK exception classes, with a fake sleep: worker.retry."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import requests
import urllib3
from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.storage.blob._shared.response_handlers import process_storage_error
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from google.api_core import exceptions as gexc
from google.auth.exceptions import TransportError
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from worker import retry
from worker.errors import ClusterError, NotFound
from worker.retry import RetryPolicy, is_transient

# -- building real exceptions -------------------------------------------------------------------


def kube_error(status: int, headers: dict[str, str] | None = None) -> ApiException:
    response = urllib3.HTTPResponse(
        body=b'{"kind":"Status","message":"m"}',
        status=status,
        reason="Reason",
        headers=headers or {},
    )
    return ApiException(http_resp=response)


def s3_error(
    code: str, status: int, headers: dict[str, str] | None = None, op: str = "GetObject"
) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "message"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        },
        op,
    )


class _AzureResponse:
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.headers = headers
        self.reason = "Reason"
        self.request = HttpRequest("GET", "https://account.blob.core.windows.net/c/k")
        self.content_type = "application/xml"

    def text(self, encoding: str | None = None) -> str:
        return ""

    def body(self) -> bytes:
        return b""


def azure_error(status: int, code: str, headers: dict[str, str] | None = None) -> Exception:
    """The exception azure-storage-blob raises for a failed call (typed, with error_code)."""
    base = HttpResponseError(
        response=_AzureResponse(status, {"x-ms-error-code": code, **(headers or {})})
    )
    try:
        process_storage_error(base)
    except Exception as exc:  # the SDK picks the class
        return exc
    raise AssertionError("process_storage_error did not raise")


def google_error(status: int, headers: dict[str, str] | None = None) -> gexc.GoogleAPICallError:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    return gexc.from_http_status(status, "message", response=response)


# -- is_transient ---------------------------------------------------------------------------------

TRANSIENT = [
    # Kubernetes
    pytest.param(kube_error(429), id="kube-429"),
    pytest.param(kube_error(500), id="kube-500"),
    pytest.param(kube_error(502), id="kube-502"),
    pytest.param(kube_error(503), id="kube-503"),
    pytest.param(kube_error(504), id="kube-504"),
    pytest.param(kube_error(408), id="kube-408"),
    # S3
    pytest.param(s3_error("SlowDown", 503), id="s3-SlowDown"),
    pytest.param(s3_error("InternalError", 500), id="s3-InternalError"),
    pytest.param(s3_error("RequestTimeout", 400), id="s3-RequestTimeout-400"),
    pytest.param(s3_error("ServiceUnavailable", 503), id="s3-ServiceUnavailable"),
    pytest.param(s3_error("Throttling", 400), id="s3-Throttling-400"),
    pytest.param(s3_error("SomethingNew", 502), id="s3-unknown-502"),
    pytest.param(EndpointConnectionError(endpoint_url="http://s3"), id="boto-endpoint"),
    pytest.param(ReadTimeoutError(endpoint_url="http://s3"), id="boto-read-timeout"),
    pytest.param(ConnectTimeoutError(endpoint_url="http://s3"), id="boto-connect-timeout"),
    pytest.param(ConnectionClosedError(endpoint_url="http://s3"), id="boto-closed"),
    # Azure
    pytest.param(azure_error(503, "ServerBusy"), id="azure-ServerBusy"),
    pytest.param(azure_error(500, "OperationTimedOut"), id="azure-OperationTimedOut"),
    pytest.param(azure_error(500, "InternalError"), id="azure-500"),
    pytest.param(ServiceRequestError("connection refused"), id="azure-request-error"),
    pytest.param(ServiceResponseError("connection reset"), id="azure-response-error"),
    # Google
    pytest.param(gexc.ServiceUnavailable("m"), id="gcs-503"),
    pytest.param(gexc.TooManyRequests("m"), id="gcs-429"),
    pytest.param(gexc.InternalServerError("m"), id="gcs-500"),
    pytest.param(gexc.BadGateway("m"), id="gcs-502"),
    pytest.param(gexc.GatewayTimeout("m"), id="gcs-504"),
    pytest.param(google_error(503), id="gcs-from-status-503"),
    pytest.param(TransportError("dns"), id="google-auth-transport"),
    # transports
    pytest.param(ProtocolError("Connection aborted."), id="urllib3-protocol"),
    pytest.param(NewConnectionError(None, "refused"), id="urllib3-new-connection"),  # type: ignore[arg-type]
    pytest.param(MaxRetryError(None, "/x", reason=None), id="urllib3-max-retry"),  # type: ignore[arg-type]
    pytest.param(
        urllib3.exceptions.ReadTimeoutError(None, "/x", "timed out"),  # type: ignore[arg-type]
        id="urllib3-read-timeout",
    ),
    pytest.param(requests.exceptions.ConnectionError("refused"), id="requests-connection"),
    pytest.param(requests.exceptions.ReadTimeout("slow"), id="requests-read-timeout"),
    pytest.param(requests.exceptions.ChunkedEncodingError("cut"), id="requests-chunked"),
    pytest.param(ConnectionResetError(), id="builtin-reset"),
    pytest.param(ConnectionRefusedError(), id="builtin-refused"),
    pytest.param(TimeoutError(), id="builtin-timeout"),
    pytest.param(ClusterError("503", 503), id="cluster-error-503"),
]

PERMANENT = [
    pytest.param(kube_error(404), id="kube-404"),
    pytest.param(kube_error(409), id="kube-409"),
    pytest.param(kube_error(403), id="kube-403"),
    pytest.param(kube_error(401), id="kube-401"),
    pytest.param(kube_error(422), id="kube-422"),
    pytest.param(kube_error(400), id="kube-400"),
    pytest.param(s3_error("NoSuchKey", 404), id="s3-NoSuchKey"),
    pytest.param(s3_error("NoSuchBucket", 404), id="s3-NoSuchBucket"),
    pytest.param(s3_error("AccessDenied", 403), id="s3-AccessDenied"),
    pytest.param(s3_error("InvalidAccessKeyId", 403), id="s3-InvalidAccessKeyId"),
    pytest.param(s3_error("PermanentRedirect", 301), id="s3-redirect"),
    pytest.param(NoCredentialsError(), id="boto-no-credentials"),
    pytest.param(ParamValidationError(report="bad"), id="boto-param-validation"),
    pytest.param(azure_error(404, "BlobNotFound"), id="azure-404"),
    pytest.param(azure_error(403, "AuthorizationFailure"), id="azure-403"),
    pytest.param(azure_error(409, "ContainerBeingDeleted"), id="azure-409"),
    pytest.param(gexc.NotFound("m"), id="gcs-404"),
    pytest.param(gexc.Forbidden("m"), id="gcs-403"),
    pytest.param(gexc.Conflict("m"), id="gcs-409"),
    pytest.param(gexc.PreconditionFailed("m"), id="gcs-412"),
    pytest.param(gexc.Unauthorized("m"), id="gcs-401"),
    pytest.param(NotFound("gone", 404), id="not-found"),
    pytest.param(ValueError("bug"), id="value-error"),
    pytest.param(KeyError("bug"), id="key-error"),
    pytest.param(FileNotFoundError("x"), id="file-not-found"),
    pytest.param(ssl.SSLCertVerificationError("bad cert"), id="ssl-cert"),
]


@pytest.mark.parametrize("exc", TRANSIENT)
def test_transient(exc: BaseException) -> None:
    assert is_transient(exc) is True


@pytest.mark.parametrize("exc", PERMANENT)
def test_permanent(exc: BaseException) -> None:
    assert is_transient(exc) is False


def test_http_status_and_code_extraction() -> None:
    assert retry.http_status(kube_error(503)) == 503
    assert retry.http_status(s3_error("SlowDown", 503)) == 503
    assert retry.http_status(azure_error(503, "ServerBusy")) == 503
    assert retry.http_status(gexc.ServiceUnavailable("m")) == 503
    assert retry.http_status(ValueError()) is None
    assert retry.error_code(s3_error("SlowDown", 503)) == "SlowDown"
    assert retry.error_code(azure_error(503, "ServerBusy")) == "ServerBusy"
    assert retry.error_code(ValueError()) is None


@pytest.mark.parametrize(
    ("exc", "seconds"),
    [
        pytest.param(kube_error(429, {"Retry-After": "3"}), 3.0, id="kube"),
        pytest.param(s3_error("SlowDown", 503, {"retry-after": "2"}), 2.0, id="s3"),
        pytest.param(azure_error(503, "ServerBusy", {"Retry-After": "4"}), 4.0, id="azure"),
        pytest.param(google_error(429, {"Retry-After": "5"}), 5.0, id="gcs"),
        pytest.param(kube_error(429, {"Retry-After": "-3"}), 0.0, id="negative"),
        pytest.param(kube_error(429, {"Retry-After": "1.5"}), 1.5, id="fraction"),
        pytest.param(
            kube_error(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None, id="date"
        ),
        pytest.param(kube_error(429), None, id="absent"),
        pytest.param(ValueError(), None, id="no-headers"),
    ],
)
def test_retry_after(exc: BaseException, seconds: float | None) -> None:
    assert retry.retry_after(exc) == seconds


def test_describe_is_one_line_without_secrets() -> None:
    assert retry.describe(s3_error("SlowDown", 503)) == "ClientError 503 SlowDown"
    assert retry.describe(kube_error(503)) == "ApiException 503 Reason"
    assert retry.describe(None) == ""
    assert retry.describe(ValueError("line one\nline two")) == "ValueError line one"


# -- call: retries with a fake sleep ------------------------------------------------------------


class Flaky:
    """Raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


FAST = RetryPolicy(attempts=5, max_seconds=60, initial_wait=0.2, max_wait=10)


def call(fn: Any, policy: RetryPolicy = FAST) -> tuple[Any, list[float]]:
    sleeps: list[float] = []
    return retry.call(fn, what="test call", policy=policy, sleep=sleeps.append), sleeps


def test_transient_failures_are_retried_until_success() -> None:
    fn = Flaky(kube_error(503), s3_error("SlowDown", 503))
    result, sleeps = call(fn)
    assert result == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "exc",
    [
        kube_error(404),
        kube_error(409),
        kube_error(403),
        kube_error(422),
        s3_error("NoSuchKey", 404),
    ],
    ids=["404", "409", "403", "422", "s3-404"],
)
def test_permanent_failures_are_not_retried(exc: BaseException) -> None:
    fn = Flaky(exc)
    sleeps: list[float] = []
    with pytest.raises(type(exc)) as info:
        retry.call(fn, what="x", policy=FAST, sleep=sleeps.append)
    assert info.value is exc
    assert fn.calls == 1
    assert sleeps == []


def test_attempts_are_capped_and_last_error_reraised() -> None:
    errors = [kube_error(503) for _ in range(10)]
    fn = Flaky(*errors)
    sleeps: list[float] = []
    with pytest.raises(ApiException) as info:
        retry.call(fn, what="x", policy=RetryPolicy(attempts=4), sleep=sleeps.append)
    assert fn.calls == 4
    assert len(sleeps) == 3
    assert info.value is errors[3]


def test_total_time_is_capped() -> None:
    fn = Flaky(*[kube_error(503) for _ in range(10)])
    with pytest.raises(ApiException):
        call(fn, RetryPolicy(attempts=10, max_seconds=0))
    assert fn.calls == 1


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    fn = Flaky(*[kube_error(503) for _ in range(7)])
    _, sleeps = call(fn, RetryPolicy(attempts=8, max_seconds=60, initial_wait=1, max_wait=5))
    assert len(sleeps) == 7
    assert 1 <= sleeps[0] <= 2  # initial + up to 1s of jitter
    assert 2 <= sleeps[1] <= 3
    assert 4 <= sleeps[2] <= 5
    assert all(s <= 5 for s in sleeps)
    assert sleeps[-1] == 5


@pytest.mark.parametrize(
    "exc",
    [
        kube_error(429, {"Retry-After": "7"}),
        s3_error("SlowDown", 503, {"retry-after": "7"}),
        azure_error(503, "ServerBusy", {"Retry-After": "7"}),
        google_error(429, {"Retry-After": "7"}),
    ],
    ids=["kube", "s3", "azure", "gcs"],
)
def test_retry_after_is_honoured(exc: BaseException) -> None:
    fn = Flaky(exc)
    result, sleeps = call(fn)
    assert result == "ok"
    assert sleeps == [7.0]  # far above the 0.2s (+1s jitter) backoff


def test_retry_after_is_capped_by_max_wait() -> None:
    fn = Flaky(kube_error(429, {"Retry-After": "3600"}))
    _, sleeps = call(fn, RetryPolicy(attempts=3, max_wait=10))
    assert sleeps == [10.0]


def test_retry_after_date_falls_back_to_backoff() -> None:
    fn = Flaky(kube_error(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    _, sleeps = call(fn)
    assert len(sleeps) == 1
    assert 0.2 <= sleeps[0] <= 1.2


def test_retry_after_never_shortens_backoff() -> None:
    errors = [kube_error(503) for _ in range(3)] + [kube_error(429, {"Retry-After": "0"})]
    fn = Flaky(*errors)
    _, sleeps = call(fn, RetryPolicy(attempts=5, initial_wait=2, max_wait=30))
    assert sleeps[3] >= 16  # 2 * 2**3, not the 0 the server allowed


def test_retries_are_logged_with_the_call_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker.retry")
    call(Flaky(s3_error("SlowDown", 503)))
    records = [r for r in caplog.records if r.getMessage() == "transient failure, retrying"]
    assert len(records) == 1
    assert records[0].call == "test call"  # type: ignore[attr-defined]
    assert records[0].error == "ClientError 503 SlowDown"  # type: ignore[attr-defined]


def test_default_sleep_is_tenacitys(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", slept.append)
    assert retry.call(Flaky(kube_error(503)), what="x", policy=FAST) == "ok"
    assert len(slept) == 1


def test_certificate_verification_failure_is_not_transient() -> None:
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    wrapped = MaxRetryError(None, "/", reason=urllib3.exceptions.SSLError(cert))  # type: ignore[arg-type]
    assert not is_transient(wrapped)
    assert not is_transient(requests.exceptions.SSLError(wrapped))
    # A reset during the handshake is still worth another try.
    assert is_transient(MaxRetryError(None, "/", reason=ProtocolError("Connection reset")))  # type: ignore[arg-type]
