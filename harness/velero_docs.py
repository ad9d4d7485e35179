"""Velero's documents as a bucket holds them: ``velero-backup.json``, the pod volume backup
and CSI snapshot lists next to it, and the keys they lie under.

The one set of builders behind the unit fakes (``tests/unit/fakes.py``), the seeding of real
buckets (``harness.seed``: integration tests, the demo) and the benchmark. Fields follow what
Velero 1.15 writes. The defaults describe a backup from another cluster: another namespace,
UIDs that say whose they are (``backup-uid-nightly``), fixed times, so a unit test sees every
value the sync must replace; ``harness.seed`` passes real-looking ones (``uuid_uid``, times
relative to now). Independent of ``worker``, like the rest of the harness.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]
UidOf = Callable[[str, str], str]  # (kind, name) -> the UID the source cluster gave it

VELERO_API = "velero.io/v1"
SNAPSHOT_API = "snapshot.storage.k8s.io/v1"
SOURCE_NAMESPACE = "velero-elsewhere"
SOURCE_START = datetime(2026, 1, 1, tzinfo=UTC)
TERMINAL_PHASES = ("Completed", "PartiallyFailed", "Failed")

METADATA_FILE = "velero-backup.json"
# What Velero 1.15 notes on every Backup it writes.
SOURCE_ANNOTATIONS = {
    "velero.io/resource-timeout": "10m0s",
    "velero.io/source-cluster-k8s-gitversion": "v1.30.4",
    "velero.io/source-cluster-k8s-major-version": "1",
    "velero.io/source-cluster-k8s-minor-version": "30",
}


def readable_uid(kind: str, name: str) -> str:
    """A UID that says whose it is, for tests that tell the source's UIDs from new ones."""
    return f"{kind}-uid-{name}"


def uuid_uid(kind: str, name: str) -> str:
    """A real-looking UID, the same for the same object in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{name}"))


def stamp(value: datetime) -> str:
    """A Kubernetes timestamp (RFC 3339, seconds, UTC)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_backup(
    name: str,
    *,
    phase: str = "Completed",
    expiration: str | None = None,
    storage_location: str = "default",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owner_refs: list[Obj] | None = None,
    pod_volume_backups: int = 0,
    csi_snapshots: int = 0,
    started: datetime = SOURCE_START,
    namespace: str = SOURCE_NAMESPACE,
    uid_of: UidOf = readable_uid,
    managed_fields: bool = True,
) -> Obj:
    """A ``velero-backup.json``. ``annotations`` None gives Velero's own; the counts are
    what its status says was backed up, not files written (``backup_files`` writes those);
    ``managed_fields`` adds the source server's field-management record."""
    meta: Obj = {
        "name": name,
        "namespace": namespace,
        "uid": uid_of("backup", name),
        "resourceVersion": "48213",
        "generation": 7,
        "creationTimestamp": stamp(started),
        "labels": {"velero.io/storage-location": storage_location, **(labels or {})},
        "annotations": dict(SOURCE_ANNOTATIONS if annotations is None else annotations),
    }
    if managed_fields:
        meta["managedFields"] = [
            {
                "manager": "velero-server",
                "operation": "Update",
                "apiVersion": VELERO_API,
                "time": stamp(started),
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:phase": {}}},
            }
        ]
    if owner_refs is not None:
        meta["ownerReferences"] = owner_refs
    status: Obj = {
        "formatVersion": "1.1.0",
        "phase": phase,
        "startTimestamp": stamp(started),
        "version": 1,
        "hookStatus": {},
        "progress": {"itemsBackedUp": 143, "totalItems": 143},
    }
    if phase in TERMINAL_PHASES:
        status["completionTimestamp"] = stamp(started + timedelta(minutes=3))
    if expiration is not None:
        status["expiration"] = expiration
    if pod_volume_backups:
        status["volumeSnapshotsAttempted"] = 0
    if csi_snapshots:
        status["csiVolumeSnapshotsAttempted"] = csi_snapshots
        status["csiVolumeSnapshotsCompleted"] = csi_snapshots
    return {
        "kind": "Backup",
        "apiVersion": VELERO_API,
        "metadata": meta,
        "spec": {
            "metadata": {},
            "includedNamespaces": ["*"],
            "ttl": "720h0m0s",
            "hooks": {},
            "storageLocation": storage_location,
            "volumeSnapshotLocations": ["default"],
            "defaultVolumesToFsBackup": pod_volume_backups > 0,
            "csiSnapshotTimeout": "10m0s",
            "itemOperationTimeout": "4h0m0s",
            "snapshotMoveData": False,
        },
        "status": status,
    }


def stored_pvb(
    name: str,
    backup: str,
    *,
    index: int = 0,
    with_uid_label: bool = True,
    labels: dict[str, str] | None = None,
    location: str = "default",
    namespace: str = SOURCE_NAMESPACE,
    uid_of: UidOf = readable_uid,
) -> Obj:
    """A completed kopia pod volume backup of ``backup``, the ``index``-th of its list."""
    backup_uid = uid_of("backup", backup)
    all_labels = {"velero.io/backup-name": backup}
    if with_uid_label:
        all_labels["velero.io/backup-uid"] = backup_uid
    pod = f"db-{index}"
    return {
        "kind": "PodVolumeBackup",
        "apiVersion": VELERO_API,
        "metadata": {
            "name": name,
            "generateName": f"{backup}-",
            "namespace": namespace,
            "uid": uid_of("pvb", name),
            "resourceVersion": "48190",
            "generation": 4,
            "labels": {**all_labels, **(labels or {})},
            "ownerReferences": [
                {
                    "apiVersion": VELERO_API,
                    "controller": True,
                    "kind": "Backup",
                    "name": backup,
                    "uid": backup_uid,
                }
            ],
        },
        "spec": {
            "node": "worker-1",
            "pod": {"kind": "Pod", "namespace": "shop", "name": pod, "uid": "p"},
            "volume": "data",
            "backupStorageLocation": location,
            "repoIdentifier": "",
            "uploaderType": "kopia",
            "tags": {
                "backup": backup,
                "backup-uid": backup_uid,
                "ns": "shop",
                "pod": pod,
                "volume": "data",
            },
        },
        "status": {
            "phase": "Completed",
            "path": f"/host_pods/p/volumes/kubernetes.io~csi/pvc-{index}/mount",
            "snapshotID": f"{index:08x}deadbeef",
            "progress": {"totalBytes": 104857600, "bytesDone": 104857600},
        },
    }


def stored_vsclass(
    name: str, *, labels: dict[str, str] | None = None, uid_of: UidOf = readable_uid
) -> Obj:
    """A VolumeSnapshotClass as the CSI feature stores it with a backup."""
    meta: Obj = {"name": name, "uid": uid_of("vsclass", name), "resourceVersion": "311"}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshotClass",
        "metadata": meta,
        "driver": "ebs.csi.aws.com",
        "deletionPolicy": "Retain",
    }


def stored_vscontent(
    name: str,
    backup: str,
    *,
    handle: str | None = "snap-0123",
    index: int = 0,
    snapshot_class: str = "csi-snapclass",
    deletion_policy: str = "Delete",
    uid_of: UidOf = readable_uid,
) -> Obj:
    """A VolumeSnapshotContent of ``backup``, bound to the ``index``-th VolumeSnapshot it
    took; ``handle`` None leaves out ``status.snapshotHandle``."""
    status: Obj = {
        "creationTime": 1767225600000000000,
        "readyToUse": True,
        "restoreSize": 10737418240,
    }
    if handle is not None:
        status["snapshotHandle"] = handle
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshotContent",
        "metadata": {
            "name": name,
            "uid": uid_of("vsc", name),
            "resourceVersion": "48201",
            "labels": {"velero.io/backup-name": backup},
        },
        "spec": {
            "deletionPolicy": deletion_policy,
            "driver": "ebs.csi.aws.com",
            "source": {"volumeHandle": f"vol-0{index:07x}"},
            "volumeSnapshotClassName": snapshot_class,
            "volumeSnapshotRef": {
                "apiVersion": SNAPSHOT_API,
                "kind": "VolumeSnapshot",
                "namespace": "shop",
                "name": f"velero-data-{index}",
                "uid": uid_of("vs", name),
            },
        },
        "status": status,
    }


# -- objects a cluster holds: the CSI snapshots of a backup, as CSI (or a restore) made them --


def volume_snapshot(name: str, namespace: str, backup: str) -> Obj:
    """A VolumeSnapshot labelled with a backup (Velero's, or one its restore made)."""
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"velero.io/backup-name": backup},
        },
        "spec": {"source": {"volumeSnapshotContentName": f"{name}-content"}},
    }


def snapshot_content(name: str, backup: str, bound_to: tuple[str, str] = ("ns-u", "name-u")) -> Obj:
    """A VolumeSnapshotContent labelled with a backup, bound to (namespace, VolumeSnapshot)."""
    namespace, snapshot = bound_to
    return {
        "apiVersion": SNAPSHOT_API,
        "kind": "VolumeSnapshotContent",
        "metadata": {"name": name, "labels": {"velero.io/backup-name": backup}},
        "spec": {
            "deletionPolicy": "Delete",
            "driver": "ebs.csi.aws.com",
            "source": {"snapshotHandle": f"snap-{name}"},
            "volumeSnapshotRef": {
                "apiVersion": SNAPSHOT_API,
                "kind": "VolumeSnapshot",
                "namespace": namespace,
                "name": snapshot,
            },
        },
    }


def gzip_json(value: Any) -> bytes:
    """Velero's encode.ToJSONGzip: gzip of json.Encoder output (the value and a newline)."""
    return gzip.compress((json.dumps(value) + "\n").encode())


def backup_key(prefix: str, backup: str, file: str) -> str:
    """Where ``file`` of ``backup`` lies under a location's ``prefix``."""
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    return f"{root}backups/{backup}/{file}"


def backup_files(
    backup: Obj,
    pvbs: list[Obj] | None = None,
    vsclasses: list[Obj] | None = None,
    vscontents: list[Obj] | None = None,
) -> dict[str, bytes]:
    """The files Velero writes for ``backup``, by file name; a list left None is a file
    not written (an empty list is an empty file)."""
    name = backup["metadata"]["name"]
    files = {METADATA_FILE: json.dumps(backup, indent=2).encode()}
    lists = {
        f"{name}-podvolumebackups.json.gz": pvbs,
        f"{name}-csi-volumesnapshotclasses.json.gz": vsclasses,
        f"{name}-csi-volumesnapshotcontents.json.gz": vscontents,
    }
    files.update({file: gzip_json(docs) for file, docs in lists.items() if docs is not None})
    return files
