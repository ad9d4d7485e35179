"""Google Cloud Storage (Velero provider ``gcp``), through google-cloud-storage.

Mirrors velero-plugin-for-gcp ``Init``: a JSON credentials file when given, else Application
Default Credentials, the read-write scope, and ``serviceAccount`` required when the
credentials carry no JSON (metadata server, GKE Workload Identity). ``storeEndpoint`` and
``universeDomain`` are the plugin's (>= v1.12/v1.13) keys. ``STORAGE_EMULATOR_HOST`` (the
library's emulator convention) switches to anonymous credentials when no file is given.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

import google.auth
import google.auth.exceptions
import requests
from google.api_core.exceptions import NotFound
from google.auth import compute_engine
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession, Request
from google.cloud import storage

from worker import retry
from worker.errors import ConfigError, StoreError
from worker.storage import ObjectStore, StoreSettings, sdk

log = logging.getLogger(__name__)

CONFIG_KEYS = frozenset(
    {"credentialsFile", "serviceAccount", "kmsKeyName", "storeEndpoint", "universeDomain"}
)

_JSON_API_PATH = "/storage/v1"

# storage.ScopeReadWrite, as the plugin asks for (it also writes backups).
READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


class _CappedSink:
    """A write-only file object that refuses to grow beyond ``max_bytes``. The library
    writes 8 KiB chunks, so at most one chunk past the cap is read off the wire."""

    def __init__(self, max_bytes: int, where: str) -> None:
        self._max = max_bytes
        self._where = where
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        sdk.check_size(self._size, self._max, self._where)
        self._chunks.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


class GCSStore(sdk.GuardedStore):
    """One GCS bucket, read-only. The storage client and its session are thread-safe for
    the calls used here (one HTTP request each)."""

    def __init__(
        self, client: Any, sessions: list[requests.Session], settings: StoreSettings
    ) -> None:
        super().__init__(settings)
        self._client = client
        self._sessions = sessions
        self._bucket_name = settings.bucket
        self._bucket = client.bucket(settings.bucket)
        self._bucket_exists = False  # known once a listing of it has answered

    def where(self, key: str) -> str:
        return f"gs://{self._bucket_name}/{key}"

    def close(self) -> None:
        """Release connections."""
        for session in self._sessions:
            session.close()

    def list_page(
        self, prefix: str, delimiter: str, token: str | None
    ) -> tuple[list[str], str | None]:
        iterator = self._client.list_blobs(
            self._bucket_name,
            prefix=prefix or None,
            delimiter=delimiter,
            page_size=self.settings.page_size,
            page_token=token,
            timeout=self.settings.timeout,
            retry=None,
        )
        page = next(iterator.pages, None)
        self._bucket_exists = True
        prefixes = list(getattr(page, "prefixes", ())) if page is not None else []
        next_token: str | None = iterator.next_page_token
        return prefixes, next_token

    def get_once(self, key: str, max_bytes: int) -> bytes | None:
        """One media download; NotFound is None if the bucket exists."""
        sink = _CappedSink(max_bytes, self.where(key))  # fresh per attempt: from byte 0
        try:
            self._bucket.blob(key).download_to_file(sink, timeout=self.settings.timeout, retry=None)
        except NotFound:
            self._check_bucket(key)
            return None
        return sink.getvalue()

    def _check_bucket(self, key: str) -> None:
        """A download's 404 does not say whether the object or the bucket is missing, and a
        missing bucket must fail the location, never read as absent. The sync lists the
        bucket before it reads, so this costs a request only to a read that comes first."""
        if self._bucket_exists:
            return
        try:
            self.list_page("", "/", None)
        except NotFound:
            raise StoreError(f"get {self.where(key)}: the bucket does not exist") from None


def open_store(settings: StoreSettings) -> ObjectStore:
    """Resolve credentials like the plugin's Init and open the bucket."""
    config = settings.config
    credentials, project = _credentials(settings)

    # Token refreshes get the same pool limits and trust as the data path. caCert is an
    # extension here: the Go plugin ignores it for GCS (providers.md §3.4).
    auth_session = sdk.pooled(requests.Session(), settings)
    session = sdk.pooled(
        AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials,
            refresh_timeout=settings.timeout,
            auth_request=Request(session=auth_session),
        ),
        settings,
    )

    client_options: dict[str, str] = {}
    endpoint = config.get("storeEndpoint", "")
    if endpoint:
        client_options["api_endpoint"] = api_endpoint(endpoint)
    if config.get("universeDomain"):
        client_options["universe_domain"] = config["universeDomain"]

    def new_client() -> Any:
        try:
            return storage.Client(
                project=project,
                credentials=credentials,
                client_options=client_options or None,
                _http=session,
            )
        except ValueError as exc:  # e.g. universe domain of client and credentials differ
            raise ConfigError(f"GCS client: {exc}") from None

    # Network: metadata-server credentials fetch their universe domain here.
    client = sdk.guarded(new_client, f"open gs://{settings.bucket}", settings.retry)
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
