"""The Cluster port (what the sync needs from Kubernetes) and its implementations.

``KubeCluster`` speaks to the API server through the official ``kubernetes`` client, with the
retry policy, a QPS/burst token bucket and a timeout on every call; API failures are mapped
to the few errors of ``worker.errors`` here, so the algorithm says ``except AlreadyExists``.
``PlanningCluster`` wraps another cluster for ``--dry-run``: reads pass through, writes are
recorded as a plan and never sent.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import quote

from worker import retry, velero
from worker.errors import AlreadyExists, ClusterError, ConfigError, NotFound
from worker.ratelimit import RateLimit, TokenBucket, choose_rate_limit
from worker.retry import RetryPolicy
from worker.velero import SECRET, Kind, Obj

LIST_PAGE_SIZE = 500
# Set on every answer of a server with API Priority and Fairness (on since 1.20, GA in 1.29).
_APF_HEADERS = ("X-Kubernetes-PF-FlowSchema-UID", "X-Kubernetes-PF-PriorityLevel-UID")
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class Cluster(Protocol):
    """What the sync needs from the Kubernetes API. ``namespace`` is ignored for
    cluster-scoped kinds; ``None`` on a namespaced list means all namespaces."""

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[Obj]:
        """All objects, fetched page by page (``limit``/``continue``)."""
        ...

    def get(self, kind: Kind, name: str, namespace: str | None) -> Obj | None:
        """The object, or None when it does not exist."""
        ...

    def create(self, kind: Kind, obj: Obj) -> Obj:
        """Create and return the stored object (with its uid). Raises AlreadyExists."""
        ...

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        """Delete one object. Raises NotFound."""
        ...

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        """JSON merge patch (RFC 7386) of the object or of its ``subresource``."""
        ...

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        """The decoded value of one key of a Secret. Raises NotFound, ConfigError."""
        ...

    def create_event(self, body: Obj) -> None:
        """Create an events.k8s.io/v1 Event (worker.events builds it) in its namespace.
        Raises ClusterError; callers treat events as best effort."""
        ...


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        SERVICE_ACCOUNT_NAMESPACE_FILE
    )


def pod_namespace() -> str | None:
    """The namespace this pod runs in, when running in a pod."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _secret_value(secret: Obj, name: str, key: str) -> bytes:
    data = secret.get("data") or {}
    if key not in data:
        raise ConfigError(f'"{name}" secret is missing data for key "{key}"')
    try:
        return base64.b64decode(data[key], validate=True)
    except ValueError as exc:
        raise ConfigError(f'"{name}" secret key "{key}" is not valid base64') from exc


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How to reach the API server: a kubeconfig and context (both None: in-cluster in a
    pod), the client-side limit (None: chosen by worker.ratelimit), the timeout of one call,
    the connection pool size and the retries."""

    kubeconfig: str | None
    context: str | None
    qps: float | None
    burst: int | None
    timeout: float
    pool_size: int
    policy: RetryPolicy


class KubeCluster:
    """The Cluster port on the official kubernetes client."""

    def __init__(
        self,
        api_client: Any,
        limiter: TokenBucket,
        timeout: float,
        policy: RetryPolicy,
    ) -> None:
        self._api = api_client
        self._limiter = limiter
        self._timeout = timeout
        self._policy = policy
        self.rate_limit: RateLimit | None = None  # set by connect()

    @classmethod
    def connect(cls, options: ClientOptions) -> KubeCluster:
        """In-cluster config in a pod (unless a kubeconfig is given), kubeconfig otherwise.
        ``options.qps``/``burst`` None: chosen by worker.ratelimit.choose_rate_limit (one
        probe of the server). Raises ConfigError when no configuration is usable."""
        import urllib3
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if options.kubeconfig is None and options.context is None and in_cluster():
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=options.kubeconfig,
                    context=options.context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot load Kubernetes client configuration: {exc}") from exc
        # The token refresh hooks of both loaders re-assign `host` before every request, and
        # while the proxy "comes from the environment" that setter re-reads every environment
        # variable (getproxies): ~0.3 ms per request (docs/benchmark.md). Pinning the proxy
        # the loader just resolved keeps it and skips that.
        configuration.proxy = configuration.proxy
        configuration.connection_pool_maxsize = max(4, options.pool_size)
        # Retries belong to worker.retry; urllib3 must not retry behind its back.
        configuration.retries = urllib3.Retry(total=0, read=False, redirect=0)
        api = client.ApiClient(configuration)
        cluster = cls(api, TokenBucket(0, 1), options.timeout, options.policy)
        cluster.rate_limit = choose_rate_limit(
            options.qps, options.burst, cluster.priority_and_fairness
        )
        cluster._limiter = TokenBucket(cluster.rate_limit.qps, cluster.rate_limit.burst)
        return cluster

    def close(self) -> None:
        self._api.close()

    def priority_and_fairness(self) -> str:
        """The API Priority and Fairness header the server answers a cheap request with, or
        "" without APF. Raises ClusterError. ``/version``: every authenticated identity may
        read it (system:public-info-viewer), unlike ``/livez/ping``, which default RBAC
        denies to ServiceAccounts."""
        from kubernetes.client.exceptions import ApiException

        def ping() -> Any:
            request = self._api.param_serialize(
                method="GET",
                resource_path="/version",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(*request, _request_timeout=self._timeout)
            response.read()
            if not 200 <= response.status <= 299:
                raise ApiException.from_response(http_resp=response, body=None, data=None)
            return response

        # One attempt, no retries: a server that cannot answer it gets Velero's limits, and a
        # black-holed server costs one timeout here, not a retry budget.
        try:
            response = ping()
        except ApiException as exc:
            raise _translate(exc, "probe /version") from None
        except Exception as exc:  # whatever it is, the first real call meets it too
            raise ClusterError(f"probe /version: {retry.describe(exc)}") from None
        headers = {str(k).lower() for k in (response.getheaders() or {})}
        for header in _APF_HEADERS:
            if header.lower() in headers:
                return header
        return ""

    # -- plumbing -----------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], Any]) -> Obj:
        """Rate-limit, retry, decode; map API failures to worker.errors."""
        from kubernetes.client.exceptions import ApiException

        def attempt() -> Any:
            self._limiter.acquire()
            return fn()

        try:
            response = retry.call(attempt, what=what, policy=self._policy)
        except ApiException as exc:
            raise _translate(exc, what) from None
        except Exception as exc:
            if retry.is_transient(exc):
                raise ClusterError(f"{what}: {retry.describe(exc)}") from None
            raise
        data = response.data if hasattr(response, "data") else response
        if not data:
            return {}
        decoded: Obj = json.loads(data)
        return decoded

    def _opts(self) -> dict[str, Any]:
        return {"_preload_content": False, "_request_timeout": self._timeout}

    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str | int]] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> bytes:
        """One request through the client's generic ``param_serialize``/``call_api`` (its
        configuration, auth refresh, TLS and pool), not through a generated operation: those
        validate every argument with pydantic and import hundreds of models (CoreV1Api alone
        adds ~1 s to start-up), and a sync makes thousands of calls (docs/benchmark.md)."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*request, _request_timeout=self._timeout)
        data: bytes = response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return data

    @staticmethod
    def _path(kind: Kind, namespace: str | None, name: str = "", subresource: str = "") -> str:
        """The REST path of a kind's collection or of one object; every segment quoted, so
        a name from the bucket can never address anything else."""
        base = "/apis/" if kind.group else "/api/"
        parts = [kind.api_version]
        if kind.namespaced and namespace:
            parts += ["namespaces", quote(namespace, safe="")]
        parts.append(kind.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return base + "/".join(parts)

    # -- the port -----------------------------------------------------------------------

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[Obj]:
        token: str | None = None
        while True:
            page = self._list_page(kind, namespace, label_selector, token)
            yield from page.get("items") or []
            token = velero.metadata(page).get("continue") or None
            if not token:
                return

    def _list_page(
        self, kind: Kind, namespace: str | None, selector: str | None, token: str | None
    ) -> Obj:
        query: list[tuple[str, str | int]] = [("limit", LIST_PAGE_SIZE)]
        if selector:
            query.append(("labelSelector", selector))
        if token:
            query.append(("continue", token))
        what = f"list {kind.plural}" + (f" in {namespace}" if namespace else "")
        path = self._path(kind, namespace if kind.namespaced else None)
        return self._call(what, lambda: self._request("GET", path, query))

    def get(self, kind: Kind, name: str, namespace: str | None) -> Obj | None:
        if kind.namespaced:
            assert namespace is not None
        path = self._path(kind, namespace, name)
        try:
            return self._call(f"get {kind.kind} {name}", lambda: self._request("GET", path))
        except NotFound:
            return None

    def create(self, kind: Kind, obj: Obj) -> Obj:
        meta = velero.metadata(obj)
        body = {**obj, "apiVersion": kind.api_version, "kind": kind.kind}
        namespace = str(meta.get("namespace")) if kind.namespaced else None
        path = self._path(kind, namespace)
        return self._call(
            f"create {kind.kind} {meta.get('name')}",
            lambda: self._request("POST", path, body=body),
        )

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        if kind.namespaced:
            assert namespace is not None
        path = self._path(kind, namespace, name)
        self._call(f"delete {kind.kind} {name}", lambda: self._request("DELETE", path))

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        what = f"patch {kind.kind} {name}" + (f"/{subresource}" if subresource else "")
        if not kind.namespaced or namespace is None:
            raise ValueError("only namespaced objects are patched")
        path = self._path(kind, namespace, name, subresource)
        return self._call(
            what,
            lambda: self._request(
                "PATCH", path, body=patch, content_type="application/merge-patch+json"
            ),
        )

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        secret = self._call(
            f"get Secret {name}", lambda: self._request("GET", self._path(SECRET, namespace, name))
        )
        return _secret_value(secret, name, key)

    def create_event(self, body: Obj) -> None:
        # One attempt, no retries: an event is not worth delaying the run for.
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        namespace = body["metadata"]["namespace"]
        what = f"create Event {body.get('reason')} in {namespace}"
        try:
            self._limiter.acquire()
            events = client.EventsV1Api(self._api)
            events.create_namespaced_event(namespace, cast(Any, body), **self._opts())
        except ApiException as exc:
            raise _translate(exc, what) from None
        except Exception as exc:
            raise ClusterError(f"{what}: {retry.describe(exc)}") from None


def _translate(exc: Any, what: str) -> ClusterError:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", "") or ""
    message = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = ""
    text = f"{what}: {status} {reason}".strip() + (f": {message}" if message else "")
    if status == 404:
        return NotFound(text, status)
    if status == 409 and body and "AlreadyExists" in str(body):
        return AlreadyExists(text, status)
    return ClusterError(text, status)  # a 409 Conflict too: nothing here handles it apart


class PlanningCluster:
    """``--dry-run``: reads go to the real cluster, writes are recorded and not sent."""

    DRY_RUN_UID = "00000000-0000-0000-0000-000000000000"

    def __init__(self, inner: Cluster) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.actions: list[str] = []

    def _record(self, action: str) -> None:
        with self._lock:
            self.actions.append(action)

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[Obj]:
        return self._inner.list(kind, namespace, label_selector)

    def get(self, kind: Kind, name: str, namespace: str | None) -> Obj | None:
        return self._inner.get(kind, name, namespace)

    def create(self, kind: Kind, obj: Obj) -> Obj:
        meta = velero.metadata(obj)
        where = f"{meta.get('namespace')}/" if kind.namespaced else ""
        self._record(f"would create {kind.kind} {where}{meta.get('name')}")
        created = copy.deepcopy(obj)
        created.setdefault("metadata", {})["uid"] = self.DRY_RUN_UID
        return created

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        where = f"{namespace}/" if kind.namespaced else ""
        self._record(f"would delete {kind.kind} {where}{name}")

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        self._record(f"would patch {kind.kind} {namespace}/{name} with {json.dumps(patch)}")
        return copy.deepcopy(patch)

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        return self._inner.read_secret(namespace, name, key)

    def create_event(self, body: Obj) -> None:
        regarding = body.get("regarding") or {}
        self._record(
            f"would record {body.get('type')} event {body.get('reason')} on "
            f"{regarding.get('kind')} {regarding.get('namespace')}/{regarding.get('name')}"
        )
