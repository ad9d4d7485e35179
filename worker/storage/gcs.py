"""Google Cloud Storage (Velero provider ``gcp``), through google-cloud-storage.

Mirrors velero-plugin-for-gcp ``Init``: a JSON credentials file when given, else Application
Default Credentials, the read-write scope, and ``serviceAccount`` required when the
credentials carry no JSON (metadata server, GKE Workload Identity). ``storeEndpoint`` and
``universeDomain`` are the plugin's (>= v1.12/v1.13) keys. ``STORAGE_EMULATOR_HOST`` (the
library's emulator convention) switches to anonymous credentials when no file is given.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import google.auth
import google.auth.exceptions
import requests
from google.api_core.exceptions import NotFound
from google.auth import compute_engine
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession, Request
from google.cloud import storage

from worker import retry
from worker.errors import ConfigError, ObjectTooLarge, StoreError
from worker.storage import ObjectStore, StoreSettings, paged

log = logging.getLogger(__name__)

T = TypeVar("T")

CONFIG_KEYS = frozenset(
    {"credentialsFile", "serviceAccount", "kmsKeyName", "storeEndpoint", "universeDomain"}
)

_JSON_API_PATH = "/storage/v1"

# storage.ScopeReadWrite, as the plugin asks for (it also writes backups).
READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


class _TooLarge(Exception):
    """Raised from inside the download to stop it at the cap."""


class _CappedSink:
    """A write-only file object that refuses to grow beyond ``max_bytes``. The library
    writes 8 KiB chunks, so at most one chunk past the cap is read off the wire."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        if self._size > self._max:
            raise _TooLarge
        self._chunks.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


class GCSStore:
    """One GCS bucket, read-only. The storage client and its session are thread-safe for
    the calls used here (one HTTP request each)."""

    def __init__(
        self, client: Any, sessions: list[requests.Session], settings: StoreSettings
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._bucket_name = settings.bucket
        self._bucket = client.bucket(settings.bucket)
        self._settings = settings

    def list_common_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """Yield prefixes page by page; a failed page is retried from its page token."""
        return paged(
            lambda token: self._call(
                functools.partial(self._list_page, prefix, delimiter, token),
                f"list gs://{self._bucket_name}/{prefix}",
            )
        )

    def get(self, key: str, max_bytes: int) -> bytes | None:
        """One media download; NotFound (object or bucket) is None."""
        return self._call(
            functools.partial(self._get_once, key, max_bytes),
            f"get gs://{self._bucket_name}/{key}",
        )

    def close(self) -> None:
        """Release connections."""
        for session in self._sessions:
            session.close()

    def _list_page(
        self, prefix: str, delimiter: str, token: str | None
    ) -> tuple[list[str], str | None]:
        iterator = self._client.list_blobs(
            self._bucket_name,
            prefix=prefix or None,
            delimiter=delimiter,
            page_size=self._settings.page_size,
            page_token=token,
            timeout=self._settings.timeout,
            retry=None,
        )
        page = next(iterator.pages, None)
        prefixes = list(getattr(page, "prefixes", ())) if page is not None else []
        next_token: str | None = iterator.next_page_token
        return prefixes, next_token

    def _get_once(self, key: str, max_bytes: int) -> bytes | None:
        sink = _CappedSink(max_bytes)  # fresh per attempt: a retry starts from byte 0
        try:
            self._bucket.blob(key).download_to_file(
                sink, timeout=self._settings.timeout, retry=None
            )
        except NotFound:
            return None
        except _TooLarge:
            raise ObjectTooLarge(
                f"gs://{self._bucket_name}/{key} is larger than the {max_bytes}-byte cap"
            ) from None
        return sink.getvalue()

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return retry.call(fn, what=what, policy=self._settings.retry)
        except (ObjectTooLarge, StoreError):
            raise
        except Exception as exc:
            raise StoreError(f"{what}: {retry.describe(exc)}") from exc


def open_store(settings: StoreSettings) -> ObjectStore:
    """Resolve credentials like the plugin's Init and open the bucket."""
    config = settings.config
    credentials, project = _credentials(settings)

    auth_session = _http_session(settings)
    session = AuthorizedSession(  # type: ignore[no-untyped-call]
        credentials,
        refresh_timeout=settings.timeout,
        auth_request=Request(session=auth_session),
    )
    # caCert is an extension here: the Go plugin ignores it for GCS (providers.md §3.4).
    _mount_pool(session, settings)

    client_options: dict[str, str] = {}
    endpoint = config.get("storeEndpoint", "")
    if endpoint:
        client_options["api_endpoint"] = api_endpoint(endpoint)
    if config.get("universeDomain"):
        client_options["universe_domain"] = config["universeDomain"]
    what = f"open gs://{settings.bucket}"
    try:
        # Network: metadata-server credentials fetch their universe domain here.
        client = retry.call(
            lambda: storage.Client(
                project=project,
                credentials=credentials,
                client_options=client_options or None,
                _http=session,
            ),
            what=what,
            policy=settings.retry,
        )
    except ValueError as exc:  # e.g. universe domain of client and credentials differ
        raise ConfigError(f"GCS client: {exc}") from None
    except Exception as exc:
        raise StoreError(f"{what}: {retry.describe(exc)}") from exc
    # The library fetches bucket metadata in background threads for tracing attributes:
    # extra GETs per bucket (and on every 404) that need storage.buckets.get, which a
    # read-only identity may lack. Nothing here uses them.
    client._bucket_metadata_cache = None
    return GCSStore(client, [session, auth_session], settings)


def api_endpoint(store_endpoint: str) -> str:
    """The Python client's ``api_endpoint`` for the plugin's ``storeEndpoint``.

    The Go client uses a value with ``://`` verbatim as its JSON API base, so the working
    full form is ``https://host/storage/v1/``; the Python client appends ``/storage/v1``
    itself, so that suffix is dropped (kept, it doubled every path). A bare
    ``host[:port]``, as in the plugin's docs, is an authority reached over https.
    """
    url = store_endpoint if "://" in store_endpoint else f"https://{store_endpoint}"
    base = url.rstrip("/")
    return base.removesuffix(_JSON_API_PATH).rstrip("/")


def _credentials(settings: StoreSettings) -> tuple[Any, str | None]:
    config = settings.config
    path = settings.credentials_file or config.get("credentialsFile")
    if path:
        try:
            return _credentials_from_file(path)
        except (google.auth.exceptions.GoogleAuthError, OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cannot load GCP credentials from {path}: {retry.describe(exc)}"
            ) from None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return AnonymousCredentials(), None  # type: ignore[no-untyped-call]
    try:
        credentials, project = google.auth.default(scopes=[READ_WRITE_SCOPE])
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigError(f"no GCP credentials found: {retry.describe(exc)}") from None
    if isinstance(credentials, compute_engine.Credentials) and not config.get("serviceAccount"):
        # The plugin needs a service account e-mail to sign URLs when the credentials
        # carry no JSON key; its Init refuses the location without it.
        raise ConfigError(
            "serviceAccount is expected to be provided as an item in BackupStorageLocation's config"
        )
    return credentials, project


def _credentials_from_file(path: str) -> tuple[Any, str | None]:
    """Credentials of the JSON types the Go plugin's ``google.CredentialsFromJSON`` takes,
    built with each type's own loader (google-auth deprecates the generic one, which would
    accept any type from any source)."""
    from google.auth import (
        aws,
        external_account_authorized_user,
        identity_pool,
        impersonated_credentials,
        pluggable,
    )
    from google.oauth2 import credentials, service_account

    with open(path, "rb") as fh:
        info = json.load(fh)
    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    kind = info.get("type")
    scoped = {"scopes": [READ_WRITE_SCOPE]}
    project = None
    # Typed as Callable: google-auth's loaders carry no annotations.
    loader: Callable[..., Any]
    if kind == "service_account":
        loader, project = (
            service_account.Credentials.from_service_account_info,
            info.get("project_id"),
        )
    elif kind == "authorized_user":
        loader = credentials.Credentials.from_authorized_user_info
        project = info.get("quota_project_id")
    elif kind == "impersonated_service_account":
        loader = impersonated_credentials.Credentials.from_impersonated_service_account_info
    elif kind == "external_account_authorized_user":
        loader, scoped = external_account_authorized_user.Credentials.from_info, {}
    elif kind == "external_account":
        # Workload Identity Federation, dispatched as google.auth.default does.
        source = info.get("credential_source") or {}
        if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
            loader = aws.Credentials.from_info
        elif source.get("executable") is not None:
            loader = pluggable.Credentials.from_info
        else:
            loader = identity_pool.Credentials.from_info
    else:
        raise ValueError(f"unsupported credentials type {kind!r}")
    return loader(info, **scoped), project


def _http_session(settings: StoreSettings) -> requests.Session:
    """The session used for token refreshes: same pool limits and trust as the data path."""
    session = requests.Session()
    _mount_pool(session, settings)
    return session


class _Adapter(requests.adapters.HTTPAdapter):
    """An adapter that pins certificate verification to our CA bundle.

    ``Session.verify`` is not enough: with ``trust_env`` (needed for proxies) requests lets
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override it for every request."""

    def __init__(self, verify: str, **kwargs: Any) -> None:
        self._verify = verify
        super().__init__(**kwargs)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._verify
        return super().send(request, *args, **kwargs)


def _mount_pool(session: requests.Session, settings: StoreSettings) -> None:
    # max_retries=0: retries belong to worker.retry, not to urllib3.
    pool: dict[str, Any] = {
        "pool_connections": 1,
        "pool_maxsize": settings.max_connections,
        "max_retries": 0,
    }
    adapter = (
        _Adapter(settings.ca_bundle, **pool)
        if settings.ca_bundle
        else requests.adapters.HTTPAdapter(**pool)
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
