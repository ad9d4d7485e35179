"""The chart's RBAC, asked of the real API server with SubjectAccessReviews: the worker's
ServiceAccount can make each call the worker makes, and nothing around them.

Four releases: "full" (EnableCSI, one credential Secret named), "minimal" (the defaults:
veleroVersion auto), "renamed" (auto reading a Deployment of another name) and "pinned" (an
explicit veleroVersion, so no Deployment is read).
That the allowed calls are enough for a whole sync is shown by test_cluster.py, which runs
the worker with the ServiceAccount's token.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from harness.controlplane import ControlPlane
from tests.chart.chart import CSI_RULES, Helm, can, role_rules, service_account_user

pytestmark = pytest.mark.integration

VELERO = "{velero}"  # the release's Velero namespace
OTHER = "{other}"  # any other namespace
ALL = ""  # all namespaces (a list or watch across the cluster)
CLUSTER = None  # a cluster-scoped resource


class Check(NamedTuple):
    release: str
    verb: str
    resource: str  # "group/resource[/subresource]"; "" group as "core"
    namespace: str | None
    name: str
    allowed: bool

    def attributes(self, namespaces: dict[str, str]) -> dict[str, str]:
        group, _, rest = self.resource.partition("/")
        resource, _, subresource = rest.partition("/")
        attrs = {
            "verb": self.verb,
            "group": "" if group == "core" else group,
            "resource": resource,
        }
        if subresource:
            attrs["subresource"] = subresource
        if self.name:
            attrs["name"] = self.name
        if self.namespace is not None:
            attrs["namespace"] = self.namespace.format(**namespaces)
        return attrs

    def __str__(self) -> str:
        where = {VELERO: "velero-ns", OTHER: "other-ns", ALL: "all-ns", CLUSTER: "cluster"}
        named = f" {self.name}" if self.name else ""
        verdict = "allowed" if self.allowed else "denied"
        place = where[self.namespace]
        return f"{self.release}: {self.verb} {self.resource}{named} @{place} -> {verdict}"


def allow(release: str, verb: str, resource: str, ns: str | None, name: str = "") -> Check:
    return Check(release, verb, resource, ns, name, True)


def deny(release: str, verb: str, resource: str, ns: str | None, name: str = "") -> Check:
    return Check(release, verb, resource, ns, name, False)


V = "velero.io"
S = "snapshot.storage.k8s.io"
RBAC = "rbac.authorization.k8s.io"

MATRIX: list[Check] = [
    # --- what the worker does: each call, allowed ---
    allow("full", "list", f"{V}/backupstoragelocations", VELERO),
    allow("full", "patch", f"{V}/backupstoragelocations", VELERO, "default"),
    allow("full", "get", f"{V}/backupstoragelocations", VELERO, "default"),
    allow("full", "patch", f"{V}/backupstoragelocations/status", VELERO, "default"),
    allow("full", "list", f"{V}/backups", VELERO),
    allow("full", "create", f"{V}/backups", VELERO),
    allow("full", "delete", f"{V}/backups", VELERO, "nightly-1"),
    allow("full", "patch", f"{V}/backups", VELERO, "nightly-1"),
    allow("full", "create", f"{V}/podvolumebackups", VELERO),
    allow("full", "get", f"{V}/schedules", VELERO, "nightly"),
    allow("full", "create", "events.k8s.io/events", VELERO),
    allow("full", "get", "core/secrets", VELERO, "default-credentials"),
    allow("full", "get", "apps/deployments", VELERO, "velero"),
    allow("full", "create", f"{S}/volumesnapshotclasses", CLUSTER),
    allow("full", "create", f"{S}/volumesnapshotcontents", CLUSTER),
    allow("full", "list", f"{S}/volumesnapshotcontents", CLUSTER),
    allow("full", "delete", f"{S}/volumesnapshotcontents", CLUSTER, "vsc-1"),
    allow("full", "list", f"{S}/volumesnapshots", VELERO),
    allow("full", "delete", f"{S}/volumesnapshots", VELERO, "vs-1"),
    allow("full", "get", f"{S}/volumesnapshots", OTHER, "vs-1"),
    allow("full", "get", f"{S}/volumesnapshots", VELERO, "vs-1"),
    allow("minimal", "list", f"{V}/backupstoragelocations", VELERO),
    allow("minimal", "create", f"{V}/backups", VELERO),
    allow("minimal", "get", "apps/deployments", VELERO, "velero"),
    allow("renamed", "get", "apps/deployments", VELERO, "velero-server"),
    allow("pinned", "list", f"{V}/backupstoragelocations", VELERO),
    allow("pinned", "create", f"{V}/backups", VELERO),
    # --- Secrets: only the named credential Secret, only get, only there ---
    deny("full", "get", "core/secrets", VELERO, "unrelated"),
    deny("full", "get", "core/secrets", VELERO, "cloud-credentials"),
    deny("full", "get", "core/secrets", VELERO),
    deny("full", "list", "core/secrets", VELERO),
    deny("full", "watch", "core/secrets", VELERO),
    deny("full", "list", "core/secrets", ALL),
    deny("full", "get", "core/secrets", OTHER, "default-credentials"),
    deny("full", "create", "core/secrets", VELERO),
    deny("full", "update", "core/secrets", VELERO, "default-credentials"),
    deny("full", "patch", "core/secrets", VELERO, "default-credentials"),
    deny("full", "delete", "core/secrets", VELERO, "default-credentials"),
    deny("minimal", "get", "core/secrets", VELERO, "default-credentials"),
    deny("minimal", "get", "core/secrets", VELERO),
    deny("minimal", "list", "core/secrets", VELERO),
    # --- nothing written or read outside the Velero namespace ---
    deny("full", "create", f"{V}/backups", OTHER),
    deny("full", "delete", f"{V}/backups", OTHER, "nightly-1"),
    deny("full", "patch", f"{V}/backups", OTHER, "nightly-1"),
    deny("full", "list", f"{V}/backups", OTHER),
    deny("full", "list", f"{V}/backups", ALL),
    deny("full", "list", f"{V}/backupstoragelocations", OTHER),
    deny("full", "patch", f"{V}/backupstoragelocations", OTHER, "default"),
    deny("full", "patch", f"{V}/backupstoragelocations/status", OTHER, "default"),
    deny("full", "create", f"{V}/podvolumebackups", OTHER),
    deny("full", "get", f"{V}/schedules", OTHER, "nightly"),
    deny("full", "create", "events.k8s.io/events", OTHER),
    # --- in the Velero namespace, nothing beyond those calls ---
    deny("full", "get", f"{V}/backupstoragelocations", OTHER, "default"),
    deny("full", "watch", f"{V}/backupstoragelocations", VELERO),
    deny("full", "create", f"{V}/backupstoragelocations", VELERO),
    deny("full", "update", f"{V}/backupstoragelocations", VELERO, "default"),
    deny("full", "delete", f"{V}/backupstoragelocations", VELERO, "default"),
    deny("full", "get", f"{V}/backups", VELERO, "nightly-1"),
    deny("full", "update", f"{V}/backups", VELERO, "nightly-1"),
    deny("full", "deletecollection", f"{V}/backups", VELERO),
    deny("full", "list", f"{V}/podvolumebackups", VELERO),
    deny("full", "delete", f"{V}/podvolumebackups", VELERO, "pvb-1"),
    deny("full", "list", f"{V}/schedules", VELERO),
    deny("full", "create", f"{V}/schedules", VELERO),
    deny("full", "delete", f"{V}/schedules", VELERO, "nightly"),
    deny("full", "create", f"{V}/deletebackuprequests", VELERO),
    deny("full", "create", f"{V}/downloadrequests", VELERO),
    deny("full", "create", f"{V}/podvolumerestores", VELERO),
    deny("full", "list", "core/events", VELERO),
    deny("full", "create", "core/events", VELERO),
    deny("full", "update", "events.k8s.io/events", VELERO, "e-1"),
    # --- Restores and workloads ---
    deny("full", "create", f"{V}/restores", VELERO),
    deny("full", "get", f"{V}/restores", VELERO, "r-1"),
    deny("full", "list", f"{V}/restores", VELERO),
    deny("full", "delete", f"{V}/restores", VELERO, "r-1"),
    deny("full", "create", "apps/deployments", VELERO),
    deny("full", "patch", "apps/deployments", VELERO, "velero"),
    deny("full", "delete", "apps/deployments", VELERO, "velero"),
    deny("full", "create", "apps/deployments", OTHER),
    deny("full", "create", "core/pods", VELERO),
    deny("full", "create", "core/pods/exec", VELERO, "velero-0"),
    deny("full", "get", "core/configmaps", VELERO, "velero"),
    deny("full", "create", "batch/jobs", VELERO),
    deny("full", "patch", "batch/cronjobs", VELERO, "full-backup-sync"),
    # --- escalation ---
    deny("full", "create", f"{RBAC}/roles", VELERO),
    deny("full", "update", f"{RBAC}/roles", VELERO, "full-backup-sync"),
    deny("full", "escalate", f"{RBAC}/roles", VELERO, "full-backup-sync"),
    deny("full", "create", f"{RBAC}/rolebindings", VELERO),
    deny("full", "bind", f"{RBAC}/clusterroles", CLUSTER, "cluster-admin"),
    deny("full", "create", f"{RBAC}/clusterroles", CLUSTER),
    deny("full", "create", f"{RBAC}/clusterrolebindings", CLUSTER),
    deny("full", "impersonate", "core/users", CLUSTER, "admin"),
    deny("full", "impersonate", "core/groups", CLUSTER, "system:masters"),
    deny("full", "impersonate", "core/serviceaccounts", VELERO, "velero"),
    deny("full", "create", "core/serviceaccounts", VELERO),
    deny("full", "create", "core/serviceaccounts/token", VELERO, "velero"),
    deny("full", "create", "certificates.k8s.io/certificatesigningrequests", CLUSTER),
    deny("full", "create", "core/namespaces", CLUSTER),
    deny("full", "delete", "core/namespaces", CLUSTER, "kube-system"),
    deny("full", "create", "apiextensions.k8s.io/customresourcedefinitions", CLUSTER),
    # --- the Velero Deployment (veleroVersion auto): get that one, by name, nothing else ---
    deny("full", "get", "apps/deployments", VELERO, "other-name"),
    deny("full", "get", "apps/deployments", VELERO),
    deny("full", "list", "apps/deployments", VELERO),
    deny("full", "watch", "apps/deployments", VELERO, "velero"),
    deny("full", "get", "apps/deployments", OTHER, "velero"),
    deny("full", "list", "apps/deployments", ALL),
    deny("full", "get", "apps/deployments/scale", VELERO, "velero"),
    deny("full", "update", "apps/deployments", VELERO, "velero"),
    deny("full", "get", "apps/replicasets", VELERO),
    deny("full", "get", "apps/daemonsets", VELERO, "velero"),
    deny("minimal", "get", "apps/deployments", VELERO, "other-name"),
    deny("renamed", "get", "apps/deployments", VELERO, "velero"),
    deny("renamed", "get", "apps/deployments", VELERO),
    deny("pinned", "get", "apps/deployments", VELERO, "velero"),
    deny("pinned", "get", "apps/deployments", VELERO),
    # --- CSI: only the calls made, and nothing without EnableCSI ---
    deny("full", "get", f"{S}/volumesnapshotcontents", CLUSTER, "vsc-1"),
    deny("full", "watch", f"{S}/volumesnapshotcontents", CLUSTER),
    deny("full", "deletecollection", f"{S}/volumesnapshotcontents", CLUSTER),
    deny("full", "update", f"{S}/volumesnapshotcontents", CLUSTER, "vsc-1"),
    deny("full", "patch", f"{S}/volumesnapshotcontents", CLUSTER, "vsc-1"),
    deny("full", "patch", f"{S}/volumesnapshotcontents/status", CLUSTER, "vsc-1"),
    deny("full", "delete", f"{S}/volumesnapshotclasses", CLUSTER, "csi-snapclass"),
    deny("full", "list", f"{S}/volumesnapshotclasses", CLUSTER),
    # VolumeSnapshots outside the Velero namespace: read one by name, never list or delete.
    deny("full", "delete", f"{S}/volumesnapshots", OTHER, "vs-1"),
    deny("full", "list", f"{S}/volumesnapshots", OTHER),
    deny("full", "list", f"{S}/volumesnapshots", ALL),
    deny("full", "watch", f"{S}/volumesnapshots", ALL),
    deny("full", "deletecollection", f"{S}/volumesnapshots", OTHER),
    deny("full", "deletecollection", f"{S}/volumesnapshots", VELERO),
    deny("full", "create", f"{S}/volumesnapshots", OTHER),
    deny("full", "create", f"{S}/volumesnapshots", VELERO),
    deny("full", "update", f"{S}/volumesnapshots", VELERO, "vs-1"),
    deny("full", "patch", f"{S}/volumesnapshots", OTHER, "vs-1"),
    deny("full", "create", "core/persistentvolumes", CLUSTER),
    deny("full", "delete", "core/persistentvolumeclaims", OTHER, "data"),
    deny("minimal", "create", f"{S}/volumesnapshotclasses", CLUSTER),
    deny("minimal", "create", f"{S}/volumesnapshotcontents", CLUSTER),
    deny("minimal", "list", f"{S}/volumesnapshotcontents", CLUSTER),
    deny("minimal", "delete", f"{S}/volumesnapshotcontents", CLUSTER, "vsc-1"),
    deny("minimal", "list", f"{S}/volumesnapshots", VELERO),
    deny("minimal", "delete", f"{S}/volumesnapshots", VELERO, "vs-1"),
    deny("minimal", "get", f"{S}/volumesnapshots", OTHER, "vs-1"),
]

RELEASES = {
    "full": {
        "features": ["EnableCSI"],
        "credentials": {"locationSecrets": ["default-credentials"]},
    },
    "minimal": {},
    "renamed": {"veleroDeployment": "velero-server"},
    "pinned": {"veleroVersion": "1.17.2"},
}


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, helm: Helm) -> Iterator[dict[str, dict[str, str]]]:
    """Each release helm-installed in its own namespace: name -> namespaces and user."""
    out: dict[str, dict[str, str]] = {}
    other = f"other-{uuid.uuid4().hex[:8]}"
    control_plane.create_namespace(other)
    try:
        for release, values in RELEASES.items():
            namespace = f"rbac-{release}-{uuid.uuid4().hex[:8]}"
            control_plane.create_namespace(namespace)
            helm.install(control_plane, values, release=release, namespace=namespace)
            out[release] = {"velero": namespace, "other": other}
        yield out
    finally:
        for release, namespaces in out.items():
            helm.uninstall(control_plane, release=release, namespace=namespaces["velero"])
            control_plane.delete_namespace(namespaces["velero"])
        control_plane.delete_namespace(other)


@pytest.mark.parametrize("check", MATRIX, ids=str)
def test_access(
    control_plane: ControlPlane, installed: dict[str, dict[str, str]], check: Check
) -> None:
    namespaces = installed[check.release]
    user = service_account_user(namespaces["velero"], f"{check.release}-backup-sync")
    assert can(control_plane, user, check.attributes(namespaces)) is check.allowed, str(check)


def test_the_matrix_covers_every_rule_of_the_chart() -> None:
    """Every (resource, verb) the "full" release grants appears as an allowed check: the
    Role's in the Velero namespace, the ClusterRole's outside it; and each release's
    values are what the matrix says of it."""
    full = [c for c in MATRIX if c.allowed and c.release == "full"]
    allowed = {(c.resource.replace("core/", "/"), c.verb, c.namespace != VELERO) for c in full}
    role = role_rules(csi=True, secrets=["default-credentials"])
    for rules, outside in ((role, False), (CSI_RULES, True)):
        for rule in rules:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (f"{rule['apiGroups'][0]}/{resource}", verb, outside) in allowed
    assert RELEASES["full"]["features"] == ["EnableCSI"]
    assert RELEASES["renamed"]["veleroDeployment"] == "velero-server"
    assert RELEASES["pinned"]["veleroVersion"] != "auto"
