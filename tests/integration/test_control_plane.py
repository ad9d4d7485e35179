"""The test control plane itself: CRDs as Velero v1.15 / CSI snapshotter ship them, RBAC on."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from harness.controlplane import (
    BSL_CRD,
    BSL_CRD_STATUS_VARIANT,
    CRD_DIR,
    ControlPlane,
    read_versions,
)

pytestmark = pytest.mark.integration

VELERO = ("velero.io", "v1")
SYNCED_AT = "2025-01-02T03:04:05Z"


def _bsl(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": name},
        "spec": {"provider": "aws", "objectStorage": {"bucket": "bucket", "prefix": "p"}, **spec},
    }


@pytest.fixture
def objects(kube_api_client: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api_client)


def _get_bsl(objects: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    got = objects.get_namespaced_custom_object(*VELERO, namespace, "backupstoragelocations", name)
    assert isinstance(got, dict)
    return got


@pytest.fixture
def bsl_status_subresource(control_plane: ControlPlane) -> Iterator[None]:
    """The BSL CRD variant with a status subresource, for one test; restored afterwards."""
    control_plane.replace_bsl_crd(status_subresource=True)
    try:
        yield
    finally:
        control_plane.replace_bsl_crd(status_subresource=False)


def test_crds_are_established_with_the_real_scopes_and_subresources(
    control_plane: ControlPlane,
) -> None:
    expected = {
        # name: (scope, has status subresource) — as in Velero v1.15 / external-snapshotter v8
        "backupstoragelocations.velero.io": ("Namespaced", False),
        "backups.velero.io": ("Namespaced", False),
        "podvolumebackups.velero.io": ("Namespaced", False),
        "schedules.velero.io": ("Namespaced", False),
        "volumesnapshotclasses.snapshot.storage.k8s.io": ("Cluster", False),
        "volumesnapshotcontents.snapshot.storage.k8s.io": ("Cluster", True),
        "volumesnapshots.snapshot.storage.k8s.io": ("Namespaced", True),
    }
    status, crds = control_plane.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    )
    assert status == 200
    found = {crd["metadata"]["name"]: crd for crd in crds["items"]}
    assert expected.keys() <= found.keys()
    for name, (scope, has_status) in expected.items():
        crd = found[name]
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NamesAccepted") == "True", name
        assert conditions.get("NonStructuralSchema") != "True", name
        assert crd["spec"]["scope"] == scope, name
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert ("status" in (version.get("subresources") or {})) is has_status, name


def test_bsl_variant_differs_from_the_real_crd_only_by_the_status_subresource() -> None:
    real = yaml.safe_load(BSL_CRD.read_text())
    variant = yaml.safe_load(BSL_CRD_STATUS_VARIANT.read_text())
    assert real["spec"]["versions"][0]["subresources"] == {}
    expected = copy.deepcopy(real)
    expected["spec"]["versions"][0]["subresources"] = {"status": {}}
    assert variant == expected
    assert BSL_CRD.parent == CRD_DIR


def test_versions_file_pins_kubernetes_and_etcd() -> None:
    versions = read_versions()
    assert versions["KUBERNETES_VERSION"].startswith("v1.")
    assert versions["ETCD_VERSION"].startswith("v3.")


def test_bsl_has_no_status_subresource_so_a_merge_patch_of_status_sticks(
    control_plane: ControlPlane, objects: client.CustomObjectsApi, velero_namespace: str
) -> None:
    assert not control_plane.bsl_has_status_subresource()
    bsl = _bsl("default", default=True)
    bsl["status"] = {"phase": "Available"}
    objects.create_namespaced_custom_object(
        *VELERO, velero_namespace, "backupstoragelocations", bsl
    )

    objects.patch_namespaced_custom_object(
        *VELERO,
        velero_namespace,
        "backupstoragelocations",
        "default",
        {"status": {"lastSyncedTime": SYNCED_AT}},
    )
    got = _get_bsl(objects, velero_namespace, "default")
    assert got["status"] == {"phase": "Available", "lastSyncedTime": SYNCED_AT}

    with pytest.raises(ApiException) as err:
        objects.patch_namespaced_custom_object_status(
            *VELERO,
            velero_namespace,
            "backupstoragelocations",
            "default",
            {"status": {"lastSyncedTime": SYNCED_AT}},
        )
    assert err.value.status == 404


@pytest.mark.usefixtures("bsl_status_subresource")
def test_bsl_variant_with_status_subresource_takes_status_only_through_status(
    control_plane: ControlPlane, objects: client.CustomObjectsApi, velero_namespace: str
) -> None:
    assert control_plane.bsl_has_status_subresource()
    objects.create_namespaced_custom_object(
        *VELERO, velero_namespace, "backupstoragelocations", _bsl("default")
    )
    patch = {"status": {"lastSyncedTime": SYNCED_AT}}

    objects.patch_namespaced_custom_object(
        *VELERO, velero_namespace, "backupstoragelocations", "default", patch
    )
    got = _get_bsl(objects, velero_namespace, "default")
    assert "lastSyncedTime" not in got.get("status", {})

    objects.patch_namespaced_custom_object_status(
        *VELERO, velero_namespace, "backupstoragelocations", "default", patch
    )
    got = _get_bsl(objects, velero_namespace, "default")
    assert got["status"]["lastSyncedTime"] == SYNCED_AT


def test_bsl_schema_is_validated(objects: client.CustomObjectsApi, velero_namespace: str) -> None:
    invalid: dict[str, dict[str, Any]] = {
        "missing provider": {"objectStorage": {"bucket": "b"}},
        "missing bucket": {"provider": "aws", "objectStorage": {}},
        "caCert not base64": {
            "provider": "aws",
            "objectStorage": {"bucket": "b", "caCert": "not base64 !"},
        },
        "accessMode not in enum": {
            "provider": "aws",
            "objectStorage": {"bucket": "b"},
            "accessMode": "WriteOnly",
        },
    }
    for i, (why, spec) in enumerate(invalid.items()):
        body = {**_bsl(f"bad-{i}"), "spec": spec}
        with pytest.raises(ApiException) as err:
            objects.create_namespaced_custom_object(
                *VELERO, velero_namespace, "backupstoragelocations", body
            )
        assert err.value.status == 422, why

    ok = _bsl("ok", accessMode="ReadOnly", backupSyncPeriod=None)
    ok["spec"]["objectStorage"]["caCert"] = "LS0tLS1CRUdJTg=="
    ok["status"] = {"lastSyncedTime": None}
    objects.create_namespaced_custom_object(*VELERO, velero_namespace, "backupstoragelocations", ok)


def test_created_backup_keeps_its_status(
    objects: client.CustomObjectsApi, velero_namespace: str
) -> None:
    backup: dict[str, Any] = {
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {"name": "nightly-1", "labels": {"velero.io/storage-location": "default"}},
        "spec": {"storageLocation": "default", "ttl": "720h0m0s", "includedNamespaces": ["*"]},
        "status": {
            "phase": "Completed",
            "version": 1,
            "formatVersion": "1.1.0",
            "startTimestamp": "2025-01-01T00:00:00Z",
            "completionTimestamp": "2025-01-01T00:01:00Z",
            "expiration": "2025-01-31T00:00:00Z",
            "progress": {"totalItems": 3, "itemsBackedUp": 3},
        },
    }
    objects.create_namespaced_custom_object(*VELERO, velero_namespace, "backups", backup)
    got = objects.get_namespaced_custom_object(*VELERO, velero_namespace, "backups", "nightly-1")
    assert isinstance(got, dict)
    assert got["status"] == backup["status"]

    backup["metadata"]["name"] = "bad-phase"
    backup["status"]["phase"] = "Exploded"
    with pytest.raises(ApiException) as err:
        objects.create_namespaced_custom_object(*VELERO, velero_namespace, "backups", backup)
    assert err.value.status == 422


def test_volume_snapshot_content_cel_rules_are_enforced(
    objects: client.CustomObjectsApi, velero_namespace: str
) -> None:
    vsc: dict[str, Any] = {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": f"vsc-{velero_namespace}"},
        "spec": {
            "deletionPolicy": "Retain",
            "driver": "hostpath.csi.k8s.io",
            "source": {"snapshotHandle": "snap-1"},
            "volumeSnapshotRef": {"name": "vs-1"},  # namespace missing
            "volumeSnapshotClassName": "csi-class",
        },
    }
    group = ("snapshot.storage.k8s.io", "v1")
    with pytest.raises(ApiException) as err:
        objects.create_cluster_custom_object(*group, "volumesnapshotcontents", vsc)
    assert err.value.status == 422
    assert "volumeSnapshotRef.namespace must be set" in str(err.value.body)

    vsc["spec"]["volumeSnapshotRef"]["namespace"] = velero_namespace
    objects.create_cluster_custom_object(*group, "volumesnapshotcontents", vsc)


def test_service_account_is_authenticated_but_rbac_forbids_secrets(
    control_plane: ControlPlane, velero_namespace: str
) -> None:
    kubeconfig = control_plane.service_account_kubeconfig(velero_namespace, "backup-sync")
    sa_client = control_plane.api_client(kubeconfig)

    review = client.AuthenticationV1Api(sa_client).create_self_subject_review(
        client.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
    )
    assert review.status is not None and review.status.user_info is not None
    assert review.status.user_info.username == (
        f"system:serviceaccount:{velero_namespace}:backup-sync"
    )

    with pytest.raises(ApiException) as err:
        client.CoreV1Api(sa_client).list_namespaced_secret(velero_namespace)
    assert err.value.status == 403

    # Asking again reuses the ServiceAccount and mints a new token.
    again = control_plane.service_account_kubeconfig(velero_namespace, "backup-sync")
    assert again != kubeconfig


def test_namespace_deletion_removes_the_namespace_and_its_objects(
    control_plane: ControlPlane, objects: client.CustomObjectsApi
) -> None:
    ns = "velero-deletion-check"
    control_plane.create_namespace(ns)
    objects.create_namespaced_custom_object(*VELERO, ns, "backupstoragelocations", _bsl("x"))
    control_plane.delete_namespace(ns)
    assert control_plane.request("GET", f"/api/v1/namespaces/{ns}")[0] == 404
    path = f"/apis/velero.io/v1/namespaces/{ns}/backupstoragelocations/x"
    assert control_plane.request("GET", path)[0] == 404
