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
from typing import Any, Protocol, TypeVar

from worker import retry
from worker.errors import AlreadyExists, ClusterError, ConfigError, Conflict, NotFound
from worker.ratelimit import TokenBucket
from worker.retry import RetryPolicy

Obj = dict[str, Any]
T = TypeVar("T")

LIST_PAGE_SIZE = 500
SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type, addressed the way the REST API addresses it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BACKUP_STORAGE_LOCATION = Kind("velero.io", "v1", "backupstoragelocations", "BackupStorageLocation")
BACKUP = Kind("velero.io", "v1", "backups", "Backup")
POD_VOLUME_BACKUP = Kind("velero.io", "v1", "podvolumebackups", "PodVolumeBackup")
SCHEDULE = Kind("velero.io", "v1", "schedules", "Schedule")
VOLUME_SNAPSHOT = Kind("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot")
VOLUME_SNAPSHOT_CLASS = Kind(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False
)
VOLUME_SNAPSHOT_CONTENT = Kind(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", "VolumeSnapshotContent", False
)


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

    def delete_collection(self, kind: Kind, label_selector: str, namespace: str | None) -> None:
        """Delete every object matching the selector."""
        ...

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        """JSON merge patch (RFC 7386) of the object or of its ``subresource``."""
        ...

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        """The decoded value of one key of a Secret. Raises NotFound, ConfigError."""
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


class KubeCluster:
    """The Cluster port on the official kubernetes client."""

    def __init__(
        self,
        api_client: Any,
        limiter: TokenBucket,
        timeout: float,
        policy: RetryPolicy,
    ) -> None:
        from kubernetes import client

        self._api = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._limiter = limiter
        self._timeout = timeout
        self._policy = policy

    @classmethod
    def connect(
        cls,
        kubeconfig: str | None,
        context: str | None,
        qps: float,
        burst: int,
        timeout: float,
        pool_size: int,
        policy: RetryPolicy,
    ) -> KubeCluster:
        """In-cluster config in a pod (unless a kubeconfig is given), kubeconfig otherwise.
        Raises ConfigError when neither is usable."""
        import urllib3
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if kubeconfig is None and context is None and in_cluster():
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise ConfigError(f"cannot load Kubernetes client configuration: {exc}") from exc
        configuration.connection_pool_maxsize = max(4, pool_size)
        # Retries belong to worker.retry; urllib3 must not retry behind its back.
        configuration.retries = urllib3.Retry(total=0, read=False, redirect=0)
        return cls(client.ApiClient(configuration), TokenBucket(qps, burst), timeout, policy)

    def close(self) -> None:
        self._api.close()

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

    # -- the port -----------------------------------------------------------------------

    def list(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None
    ) -> Iterator[Obj]:
        token: str | None = None
        while True:
            page = self._list_page(kind, namespace, label_selector, token)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def _list_page(
        self, kind: Kind, namespace: str | None, selector: str | None, token: str | None
    ) -> Obj:
        args: dict[str, Any] = {"limit": LIST_PAGE_SIZE, **self._opts()}
        if selector:
            args["label_selector"] = selector
        if token:
            args["_continue"] = token
        what = f"list {kind.plural}" + (f" in {namespace}" if namespace else "")
        if kind.namespaced and namespace:
            return self._call(
                what,
                lambda: self._custom.list_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, **args
                ),
            )
        return self._call(
            what,
            lambda: self._custom.list_cluster_custom_object(
                kind.group, kind.version, kind.plural, **args
            ),
        )

    def get(self, kind: Kind, name: str, namespace: str | None) -> Obj | None:
        what = f"get {kind.kind} {name}"
        try:
            if kind.namespaced:
                assert namespace is not None
                return self._call(
                    what,
                    lambda: self._custom.get_namespaced_custom_object(
                        kind.group, kind.version, namespace, kind.plural, name, **self._opts()
                    ),
                )
            return self._call(
                what,
                lambda: self._custom.get_cluster_custom_object(
                    kind.group, kind.version, kind.plural, name, **self._opts()
                ),
            )
        except NotFound:
            return None

    def create(self, kind: Kind, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        body = {**obj, "apiVersion": kind.api_version, "kind": kind.kind}
        what = f"create {kind.kind} {meta.get('name')}"
        if kind.namespaced:
            namespace = str(meta.get("namespace"))
            return self._call(
                what,
                lambda: self._custom.create_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, body, **self._opts()
                ),
            )
        return self._call(
            what,
            lambda: self._custom.create_cluster_custom_object(
                kind.group, kind.version, kind.plural, body, **self._opts()
            ),
        )

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        what = f"delete {kind.kind} {name}"
        if kind.namespaced:
            assert namespace is not None
            self._call(
                what,
                lambda: self._custom.delete_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, name, **self._opts()
                ),
            )
        else:
            self._call(
                what,
                lambda: self._custom.delete_cluster_custom_object(
                    kind.group, kind.version, kind.plural, name, **self._opts()
                ),
            )

    def delete_collection(self, kind: Kind, label_selector: str, namespace: str | None) -> None:
        what = f"delete {kind.plural} labelled {label_selector}"
        if kind.namespaced and namespace:
            self._call(
                what,
                lambda: self._custom.delete_collection_namespaced_custom_object(
                    kind.group,
                    kind.version,
                    namespace,
                    kind.plural,
                    label_selector=label_selector,
                    **self._opts(),
                ),
            )
        else:
            self._call(
                what,
                lambda: self._custom.delete_collection_cluster_custom_object(
                    kind.group,
                    kind.version,
                    kind.plural,
                    label_selector=label_selector,
                    **self._opts(),
                ),
            )

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        what = f"patch {kind.kind} {name}" + (f"/{subresource}" if subresource else "")
        # The client sends custom-object patches as JSON Patch unless told otherwise.
        opts = {**self._opts(), "_content_type": "application/merge-patch+json"}
        if not kind.namespaced or namespace is None:
            raise ValueError("only namespaced objects are patched")
        method = (
            self._custom.patch_namespaced_custom_object_status
            if subresource == "status"
            else self._custom.patch_namespaced_custom_object
        )
        return self._call(
            what,
            lambda: method(kind.group, kind.version, namespace, kind.plural, name, patch, **opts),
        )

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        secret = self._call(
            f"get Secret {name}",
            lambda: self._core.read_namespaced_secret(name, namespace, **self._opts()),
        )
        return _secret_value(secret, name, key)


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
    if status == 409:
        if getattr(exc, "body", None) and "AlreadyExists" in str(body):
            return AlreadyExists(text, status)
        return Conflict(text, status)
    return ClusterError(text, status)


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
        meta = obj.get("metadata") or {}
        where = f"{meta.get('namespace')}/" if kind.namespaced else ""
        self._record(f"would create {kind.kind} {where}{meta.get('name')}")
        created = copy.deepcopy(obj)
        created.setdefault("metadata", {})["uid"] = self.DRY_RUN_UID
        return created

    def delete(self, kind: Kind, name: str, namespace: str | None) -> None:
        where = f"{namespace}/" if kind.namespaced else ""
        self._record(f"would delete {kind.kind} {where}{name}")

    def delete_collection(self, kind: Kind, label_selector: str, namespace: str | None) -> None:
        self._record(f"would delete {kind.plural} labelled {label_selector}")

    def patch_merge(
        self, kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str = ""
    ) -> Obj:
        self._record(f"would patch {kind.kind} {namespace}/{name} with {json.dumps(patch)}")
        return copy.deepcopy(patch)

    def read_secret(self, namespace: str, name: str, key: str) -> bytes:
        return self._inner.read_secret(namespace, name, key)
