"""What every provider module does around its SDK, in one place.

``GuardedStore`` is the ObjectStore port over a provider's two calls (one page of a listing,
one read), each run by ``guarded``: under the retry policy, with whatever escapes turned
into a StoreError. ``check_size`` refuses an object beyond its cap. ``pooled`` gives an SDK
that speaks HTTP through ``requests`` a pool sized to the worker's concurrency, without
urllib3's own retries (``worker.retry`` owns them).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests

from worker import retry
from worker.errors import ConfigError, ItemError, LocationError, ObjectTooLarge, StoreError
from worker.retry import RetryPolicy
from worker.storage import StoreSettings

T = TypeVar("T")
S = TypeVar("S", bound=requests.Session)


def guarded(fn: Callable[[], T], what: str, policy: RetryPolicy) -> T:
    """``fn()`` under ``policy``. The worker's own errors pass through; any other failure
    becomes a StoreError naming ``what`` (a credential-free description; the SDK's error is
    its cause)."""
    try:
        return retry.call(fn, what=what, policy=policy)
    except (ConfigError, ItemError, LocationError):
        raise
    except Exception as exc:
        raise StoreError(f"{what}: {retry.describe(exc)}") from exc


class GuardedStore(ABC):
    """A read-only bucket behind the ObjectStore port: a provider implements one listing
    page, one read attempt, how its messages name a key, and ``close``."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings

    def list_common_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """Every common prefix under ``prefix``, page by page, lazily; a failed page is
        retried from its own token, never from the start."""
        what = f"list {self.where(prefix)}"
        token: str | None = None
        while True:
            page = functools.partial(self.list_page, prefix, delimiter, token)
            items, token = guarded(page, what, self.settings.retry)
            yield from items
            if not token:
                return

    def get(self, key: str, max_bytes: int) -> bytes | None:
        """The whole object, or None when it is absent (see ``get_once``)."""
        read = functools.partial(self.get_once, key, max_bytes)
        return guarded(read, f"get {self.where(key)}", self.settings.retry)

    @abstractmethod
    def where(self, key: str) -> str:
        """``key`` in this bucket as messages name it (``s3://bucket/key``)."""

    @abstractmethod
    def list_page(
        self, prefix: str, delimiter: str, token: str | None
    ) -> tuple[list[str], str | None]:
        """One page of common prefixes from ``token`` on, and the next page's token (None
        after the last page)."""

    @abstractmethod
    def get_once(self, key: str, max_bytes: int) -> bytes | None:
        """One request for the object: None when the object is absent (a missing bucket
        raises), ObjectTooLarge past ``max_bytes`` (the read stops there), SDK errors as
        they come."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


def check_size(size: int, max_bytes: int, where: str) -> None:
    """Raise ObjectTooLarge when ``size`` bytes of the object at ``where`` exceed the cap."""
    if size > max_bytes:
        raise ObjectTooLarge(f"{where} is larger than the {max_bytes}-byte cap")


class _PinnedVerify(requests.adapters.HTTPAdapter):
    """An adapter that pins certificate verification to our CA bundle.

    ``Session.verify`` is not enough: with ``trust_env`` (needed for proxies) requests lets
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override it for every request."""

    def __init__(self, verify: str, **kwargs: Any) -> None:
        self._verify = verify
        super().__init__(**kwargs)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._verify
        return super().send(request, *args, **kwargs)


def pooled(session: S, settings: StoreSettings) -> S:
    """``session`` with one pool of ``settings.max_connections`` connections per scheme,
    no urllib3 retries, and certificates verified against ``settings.ca_bundle`` if set."""
    pool: dict[str, Any] = {
        "pool_connections": 1,
        "pool_maxsize": settings.max_connections,
        "max_retries": 0,
    }
    adapter = (
        _PinnedVerify(settings.ca_bundle, **pool)
        if settings.ca_bundle
        else requests.adapters.HTTPAdapter(**pool)
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
