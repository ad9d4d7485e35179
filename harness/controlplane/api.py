"""The running API as its admin: raw requests, namespaces, ServiceAccount tokens and the
project's CRDs (``harness/crds``)."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane.errors import ControlPlaneError

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
BSL_CRD = CRD_DIR / "velero.io_backupstoragelocations.yaml"
BSL_CRD_STATUS_VARIANT = (
    CRD_DIR / "variants" / "velero.io_backupstoragelocations-status-subresource.yaml"
)
BSL_CRD_NAME = "backupstoragelocations.velero.io"

Obj = dict[str, Any]


class AdminApi:
    """Calls to the running apiserver with the admin's client certificate. A base of
    ``ControlPlane``, which says where the apiserver is (``_admin_connection``)."""

    def __init__(self) -> None:
        self._discovery: list[str] | None = None

    def _admin_connection(self) -> tuple[int, ssl.SSLContext]:
        """The apiserver's port on 127.0.0.1 and a TLS context that presents the admin
        certificate; ControlPlaneError when it is not running."""
        raise NotImplementedError

    # -- raw requests

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Obj]:
        """One admin HTTPS request; returns (status, decoded JSON body or ``{}``)."""
        port, context = self._admin_connection()
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
        try:
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"raw": raw.decode(errors="replace")}
        return resp.status, decoded if isinstance(decoded, dict) else {"items": decoded}

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
        status, obj = self.request(method, path, body, **kw)
        if status >= 300:
            raise ControlPlaneError(f"{method} {path} -> {status}: {obj.get('message', obj)}")
        return obj

    # -- namespaces

    def create_namespace(self, name: str) -> None:
        """Create a namespace (no-op if it exists)."""
        status, obj = self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"create namespace {name} -> {status}: {obj.get('message')}")

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and everything in it, as the namespace controller would.

        There is no controller-manager, so this deletes the namespaced objects itself,
        clears the ``kubernetes`` finalizer and waits until the namespace is gone. Also
        removes VolumeSnapshotContents bound to VolumeSnapshots of that namespace.
        """
        for path in self._namespaced_collections():
            self.request("DELETE", path.format(namespace=name))
        self._delete_snapshot_contents_of(name)
        status, _ = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if status == 404:
            return
        status, ns = self.request("GET", f"/api/v1/namespaces/{name}")
        if status == 200:
            ns.setdefault("spec", {})["finalizers"] = []
            self.request("PUT", f"/api/v1/namespaces/{name}/finalize", ns)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.request("GET", f"/api/v1/namespaces/{name}")[0] == 404:
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"namespace {name} was not deleted")

    def _delete_snapshot_contents_of(self, namespace: str) -> None:
        base = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
        status, vscs = self.request("GET", base)
        for vsc in vscs.get("items", []) if status == 200 else []:
            if vsc.get("spec", {}).get("volumeSnapshotRef", {}).get("namespace") == namespace:
                self.request("DELETE", f"{base}/{vsc['metadata']['name']}")

    def _namespaced_collections(self) -> list[str]:
        """``…/namespaces/{namespace}/<resource>`` paths of every deletable namespaced resource."""
        if self._discovery is not None:
            return self._discovery
        group_versions = ["/api/v1"]
        for group in self._ok("GET", "/apis").get("groups", []):
            group_versions.append(f"/apis/{group['preferredVersion']['groupVersion']}")
        paths = []
        for gv in group_versions:
            status, resources = self.request("GET", gv)
            if status != 200:
                continue
            for r in resources.get("resources", []):
                if (
                    r.get("namespaced")
                    and "/" not in r["name"]
                    and "deletecollection" in r.get("verbs", [])
                ):
                    paths.append(f"{gv}/namespaces/{{namespace}}/{r['name']}")
        self._discovery = paths
        return paths

    # -- ServiceAccounts

    def _service_account_token(self, namespace: str, name: str, expiration_seconds: int) -> str:
        """A token for ServiceAccount ``namespace/name`` (created if missing) from the
        TokenRequest API (no token Secrets, no token controller)."""
        self.create_namespace(namespace)
        status, obj = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(
                f"create serviceaccount {namespace}/{name} -> {status}: {obj.get('message')}"
            )
        token: str = self._ok(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )["status"]["token"]
        return token

    # -- CRDs

    def apply_crds(self, bsl_status_subresource: bool = False) -> list[str]:
        """Create or update every CRD in ``harness/crds``; wait until each is served.

        ``bsl_status_subresource`` picks the BSL variant with a status subresource (the real
        Velero v1.15 CRD has none). Returns the CRD names.
        """
        names = []
        for path in sorted(CRD_DIR.glob("*.yaml")):
            if path == BSL_CRD and bsl_status_subresource:
                path = BSL_CRD_STATUS_VARIANT
            for crd in _load_crds(path):
                self._put_crd(crd)
                names.append(crd["metadata"]["name"])
        for name in names:
            self.wait_crd_established(name)
        self._wait_bsl_status_routing(bsl_status_subresource)
        return names

    def replace_bsl_crd(self, status_subresource: bool) -> None:
        """Switch the BSL CRD to the variant with a status subresource, or back to the real one."""
        path = BSL_CRD_STATUS_VARIANT if status_subresource else BSL_CRD
        for crd in _load_crds(path):
            self._put_crd(crd)
        self.wait_crd_established(BSL_CRD_NAME)
        self._wait_bsl_status_routing(status_subresource)

    def bsl_has_status_subresource(self) -> bool:
        """Whether the installed BSL CRD declares a status subresource."""
        crd = self._ok(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{BSL_CRD_NAME}"
        )
        return any(
            "status" in (v.get("subresources") or {})
            for v in crd["spec"]["versions"]
            if v.get("storage")
        )

    def _put_crd(self, crd: Obj) -> None:
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        name = crd["metadata"]["name"]
        for _attempt in range(5):
            status, current = self.request("GET", f"{base}/{name}")
            if status == 404:
                status, obj = self.request("POST", base, crd)
            else:
                body = json.loads(json.dumps(crd))
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                status, obj = self.request("PUT", f"{base}/{name}", body)
            if status in (200, 201):
                return
            if status != 409:
                break
        raise ControlPlaneError(f"apply CRD {name} -> {status}: {obj.get('message', obj)}")

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        """Wait until CRD ``name`` is Established and its resource answers a list. (A CRD just
        created can report ``"conditions": null`` for a moment: that counts as not yet.)"""
        deadline = time.monotonic() + timeout
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        while time.monotonic() < deadline:
            status, crd = self.request("GET", path)
            conditions = {
                c.get("type"): c.get("status")
                for c in ((crd.get("status") or {}).get("conditions") or [])
                if isinstance(c, dict)
            }
            if status == 200 and conditions.get("Established") == "True":
                spec = crd["spec"]
                version = next(v["name"] for v in spec["versions"] if v.get("storage"))
                list_path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1"
                if self.request("GET", list_path)[0] == 200:
                    return
            time.sleep(0.1)
        raise ControlPlaneError(f"CRD {name} not established within {timeout:.0f}s")

    def _wait_bsl_status_routing(self, status_subresource: bool, timeout: float = 30.0) -> None:
        # After a CRD update the apiserver swaps its handler asynchronously; probe with a
        # throwaway BSL until a write to /status behaves as the new CRD says.
        ns = "default"
        probe = f"backup-sync-crd-probe-{uuid.uuid4().hex[:8]}"
        base = f"/apis/velero.io/v1/namespaces/{ns}/backupstoragelocations"
        bsl = {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": probe},
            "spec": {"provider": "aws", "objectStorage": {"bucket": "probe"}},
        }
        self._ok("POST", base, bsl)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status, _ = self.request(
                    "PATCH",
                    f"{base}/{probe}/status",
                    {"status": {"phase": "Available"}},
                    content_type="application/merge-patch+json",
                )
                if (status == 200) == status_subresource and status in (200, 404):
                    return
                time.sleep(0.1)
            raise ControlPlaneError(
                f"BSL status subresource={status_subresource} not in effect after {timeout:.0f}s"
            )
        finally:
            self.request("DELETE", f"{base}/{probe}")


def _load_crds(path: Path) -> Iterator[Obj]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            yield doc
