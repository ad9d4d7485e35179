"""Retry policy for every network call, in one place.

Only transient faults are retried: connection errors, timeouts, HTTP 408/429/500/502/503/504
and the providers' throttling codes (S3 ``SlowDown``, Azure ``ServerBusy`` ...). Semantic 4xx
answers (NotFound, AlreadyExists, Forbidden, Invalid) are never retried. Backoff is
exponential with jitter, capped per wait, in attempts and in total time; a server's
``Retry-After`` is honoured (up to the per-wait cap).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {
        # S3
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "503",
        "500",
        # Azure
        "ServerBusy",
        "OperationTimedOut",
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one call. ``attempts`` counts the first try."""

    attempts: int = 5
    max_seconds: float = 60.0
    initial_wait: float = 0.2
    max_wait: float = 10.0


DEFAULT_POLICY = RetryPolicy()


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an SDK exception carries, whichever SDK raised it."""
    for attr in ("status", "status_code", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):  # botocore ClientError
        meta = response.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def error_code(exc: BaseException) -> str | None:
    """The provider's symbolic error code (S3 ``Error.Code``, Azure ``error_code``)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        return str(code) if code is not None else None
    code = getattr(exc, "error_code", None)
    # azure-storage-blob sets a StorageErrorCode enum, whose str() is "StorageErrorCode.X".
    code = getattr(code, "value", code)
    return str(code) if code is not None else None


def _headers(exc: BaseException) -> Mapping[str, Any]:
    headers = getattr(exc, "headers", None)  # kubernetes ApiException
    if headers is not None:
        return dict(headers)
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):  # botocore
        return (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
    return dict(getattr(response, "headers", None) or {})  # azure-core, requests


def retry_after(exc: BaseException) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` in seconds), if any."""
    for key, value in _headers(exc).items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None  # an HTTP date: fall back to our own backoff
    return None


_TRANSPORT_ERROR_NAMES = frozenset(
    {
        # botocore
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ProxyConnectionError",
        "ResponseStreamingError",
        "IncompleteReadError",
        # azure-core
        "ServiceRequestError",
        "ServiceResponseError",
        # urllib3 / requests / google-auth (requests' ConnectionError and Timeout do not
        # derive from the builtins; GCS and Azure transports raise them)
        "ConnectionError",
        "Timeout",
        "ProtocolError",
        "NewConnectionError",
        "MaxRetryError",
        "ChunkedEncodingError",
        "TransportError",
        "RemoteDisconnected",
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it wraps (causes, contexts, urllib3's ``reason``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        todo += [current.__cause__, current.__context__]
        todo += [reason] if isinstance(reason, BaseException) else []
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]


def is_certificate_error(exc: BaseException) -> bool:
    """A TLS certificate that does not verify: retrying cannot help."""
    return any(
        isinstance(e, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _chain(exc)
    )


def is_transient(exc: BaseException) -> bool:
    """True when trying the same call again may succeed."""
    if is_certificate_error(exc):
        return False
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if any(cls.__name__ in _TRANSPORT_ERROR_NAMES for cls in type(exc).__mro__):
        return True
    if error_code(exc) in TRANSIENT_CODES:
        return True
    status = http_status(exc)
    return status in TRANSIENT_STATUS


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_exponential_jitter(multiplier=policy.initial_wait, max=policy.max_wait)

    def wait(state: tenacity.RetryCallState) -> float:
        delay = backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after(exc) if exc is not None else None
        if asked is not None:
            delay = max(delay, min(asked, policy.max_wait))
        return float(delay)

    return wait


def call(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = tenacity.nap.sleep,
) -> T:
    """Run ``fn`` with the retry policy; ``what`` names the call in log lines. ``sleep`` is
    how backoff waits (tests pass a fake)."""

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "transient failure, retrying",
            extra={"call": what, "attempt": state.attempt_number, "error": describe(exc)},
        )

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_before_delay(policy.max_seconds),
        wait=_wait(policy),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


def describe(exc: BaseException | None) -> str:
    """A one-line, credential-free description of an SDK exception."""
    if exc is None:
        return ""
    status = http_status(exc)
    code = error_code(exc)
    reason = getattr(exc, "reason", None)
    parts = [type(exc).__name__]
    if status is not None:
        parts.append(str(status))
    if code:
        parts.append(code)
    if isinstance(reason, str) and reason:
        parts.append(reason)
    text = str(exc).splitlines()[0] if str(exc) else ""
    if text and len(parts) == 1:
        parts.append(text[:300])
    return " ".join(parts)
