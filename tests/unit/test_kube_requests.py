"""The requests KubeCluster sends through the client's generic call path: paths (quoted),
query parameters, bodies, and how answers map to worker.errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from worker.cluster import ClientOptions, KubeCluster
from worker.errors import AlreadyExists, ConfigError
from worker.ratelimit import TokenBucket, choose_rate_limit
from worker.retry import RetryPolicy
from worker.stamps import patch_last_synced
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION, VOLUME_SNAPSHOT_CLASS

Obj = dict[str, Any]


class _Urllib3Response:
    def __init__(self, status: int, data: bytes) -> None:
        self.status = status
        self.reason = "reason"
        self.data = data
        self.headers: dict[str, str] = {}


class _Response:
    def __init__(self, status: int, body: Obj) -> None:
        self.status = status
        self.reason = "reason"
        self.response = _Urllib3Response(status, json.dumps(body).encode())
        self.data: bytes | None = None

    def read(self) -> bytes:
        self.data = self.response.data
        return self.data

    @property
    def headers(self) -> dict[str, str]:
        return self.response.headers

    def getheaders(self) -> dict[str, str]:
        return self.response.headers


class FakeApiServer:
    """Answers ``call_api`` from a queue of (status, body); records every request."""

    def __init__(self, *answers: tuple[int, Obj]) -> None:
        self.answers = list(answers)
        self.headers: dict[str, str] = {}  # on every answer
        self.requests: list[tuple[str, str, dict[str, str], list[tuple[str, str]], Any]] = []
        self.timeouts: list[Any] = []  # of every request

    def call_api(
        self, method: str, url: str, headers: Any, body: Any, post: Any, **kwargs: Any
    ) -> _Response:
        parts = urlsplit(url)
        self.requests.append((method, parts.path, dict(headers), parse_qsl(parts.query), body))
        self.timeouts.append(kwargs.get("_request_timeout"))
        status, answer = self.answers.pop(0)
        response = _Response(status, answer)
        response.response.headers = dict(self.headers)
        return response


def _api(server: FakeApiServer) -> Any:
    from kubernetes import client

    api = client.ApiClient()
    api.call_api = server.call_api  # type: ignore[method-assign]
    return api


def kube(server: FakeApiServer) -> KubeCluster:
    return KubeCluster(_api(server), TokenBucket(0, 1), 5.0, RetryPolicy(attempts=1))


def test_list_follows_continue_tokens_with_a_page_limit() -> None:
    server = FakeApiServer(
        (200, {"items": [{"metadata": {"name": "a"}}], "metadata": {"continue": "tok/1"}}),
        (200, {"items": [{"metadata": {"name": "b"}}], "metadata": {}}),
    )
    names = [o["metadata"]["name"] for o in kube(server).list(BACKUP, "velero", "x=y")]
    assert names == ["a", "b"]
    (m1, p1, _, q1, _), (m2, p2, _, q2, _) = server.requests
    assert (m1, p1) == (m2, p2) == ("GET", "/apis/velero.io/v1/namespaces/velero/backups")
    assert dict(q1) == {"limit": "500", "labelSelector": "x=y"}
    assert dict(q2) == {"limit": "500", "labelSelector": "x=y", "continue": "tok/1"}


def test_cluster_scoped_kinds_have_no_namespace_in_the_path() -> None:
    server = FakeApiServer((200, {"items": []}))
    assert list(kube(server).list(VOLUME_SNAPSHOT_CLASS, "velero")) == []
    assert server.requests[0][1] == "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses"


def test_create_posts_the_object_with_its_kind() -> None:
    server = FakeApiServer((201, {"metadata": {"name": "b1", "uid": "u-1"}}))
    created = kube(server).create(BACKUP, {"metadata": {"name": "b1", "namespace": "velero"}})
    assert created["metadata"]["uid"] == "u-1"
    method, path, headers, _, body = server.requests[0]
    assert (method, path) == ("POST", "/apis/velero.io/v1/namespaces/velero/backups")
    assert headers["Content-Type"] == "application/json"
    assert body["apiVersion"] == "velero.io/v1" and body["kind"] == "Backup"


def test_already_exists_is_mapped() -> None:
    server = FakeApiServer((409, {"reason": "AlreadyExists", "message": "exists"}))
    with pytest.raises(AlreadyExists):
        kube(server).create(BACKUP, {"metadata": {"name": "b1", "namespace": "velero"}})


def test_get_of_a_missing_object_is_none() -> None:
    server = FakeApiServer((404, {"reason": "NotFound"}))
    assert kube(server).get(BACKUP, "gone", "velero") is None


def test_names_are_quoted_so_they_cannot_address_anything_else() -> None:
    server = FakeApiServer((404, {}))
    kube(server).get(BACKUP, "a/../../secrets?x=1", "velero")
    _, path, _, query, _ = server.requests[0]
    assert path == "/apis/velero.io/v1/namespaces/velero/backups/a%2F..%2F..%2Fsecrets%3Fx%3D1"
    assert query == []


def test_read_secret_uses_the_core_api_path() -> None:
    server = FakeApiServer((200, {"data": {"cloud": "c2VjcmV0"}}))
    assert kube(server).read_secret("velero", "creds", "cloud") == b"secret"
    assert server.requests[0][:2] == ("GET", "/api/v1/namespaces/velero/secrets/creds")


def test_merge_patch_of_the_status_subresource() -> None:
    server = FakeApiServer((200, {"status": {"lastSyncedTime": "t"}}))
    kube(server).patch_merge(BACKUP_STORAGE_LOCATION, "default", "velero", {"s": 1}, "status")
    method, path, headers, _, body = server.requests[0]
    assert method == "PATCH"
    assert path == "/apis/velero.io/v1/namespaces/velero/backupstoragelocations/default/status"
    assert headers["Content-Type"] == "application/merge-patch+json"
    assert body == {"s": 1}


@pytest.mark.parametrize("keeps_status", [True, False], ids=["no-subresource", "subresource"])
def test_last_synced_time_is_one_merge_patch_and_the_status_subresource_if_ignored(
    keeps_status: bool,
) -> None:
    patch = {"status": {"lastSyncedTime": "2026-03-01T12:00:00Z"}}
    # With a status subresource the main resource drops status from the patch.
    ignored: tuple[int, Obj] = (200, {"status": {}})
    server = FakeApiServer(*([] if keeps_status else [ignored]), (200, patch))

    patch_last_synced(kube(server), "default", "velero", "2026-03-01T12:00:00Z")

    path = "/apis/velero.io/v1/namespaces/velero/backupstoragelocations/default"
    expected = [path] + ([] if keeps_status else [f"{path}/status"])
    assert [requested for _, requested, *_ in server.requests] == expected
    for method, _, headers, _, body in server.requests:
        assert method == "PATCH"
        assert headers["Content-Type"] == "application/merge-patch+json"
        assert body == patch
    assert server.timeouts == [5.0] * len(expected)


def test_connect_pins_the_environment_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token refresh hook re-assigns `host` before every request; with the proxy pinned,
    that no longer re-reads the environment (and the proxy found at start-up stays)."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    cluster = KubeCluster.connect(
        ClientOptions(str(kubeconfig), None, 5, 10, 5.0, 8, RetryPolicy())
    )
    configuration = cluster._api.configuration
    assert configuration.proxy == "http://proxy.example:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://other.example:3128")
    configuration.host = "https://10.0.0.1:6443"  # what the refresh hook does
    assert configuration.proxy == "http://proxy.example:3128"
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer t0ken"
    cluster.close()


def test_connect_without_any_config_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError):
        KubeCluster.connect(
            ClientOptions(str(tmp_path / "missing"), None, 5, 10, 5.0, 8, RetryPolicy())
        )


def test_the_priority_and_fairness_probe_reads_the_headers_of_version() -> None:
    server = FakeApiServer((200, {}))
    server.headers = {"X-Kubernetes-PF-FlowSchema-UID": "uid-1"}
    assert kube(server).priority_and_fairness() == "X-Kubernetes-PF-FlowSchema-UID"
    assert server.requests[0][:2] == ("GET", "/version")


def test_no_priority_and_fairness_headers() -> None:
    assert kube(FakeApiServer((200, {}))).priority_and_fairness() == ""


def test_the_probe_is_one_attempt_and_a_failure_means_velero_s_limits() -> None:
    server = FakeApiServer((503, {"message": "busy"}), (200, {}))
    cluster = KubeCluster(
        _api(server), TokenBucket(0, 1), 5.0, RetryPolicy(attempts=5, max_seconds=1)
    )

    limit = choose_rate_limit(None, None, cluster.priority_and_fairness)

    assert len(server.requests) == 1
    assert (limit.qps, limit.burst) == (100.0, 100)
    assert "503" in limit.why
