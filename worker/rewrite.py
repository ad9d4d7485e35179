"""Pure transformations of objects read from a bucket into objects for this cluster.

Objects stay plain dicts so fields unknown to us survive the round trip. Each function
returns a new dict and never mutates its input.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime
from typing import Any

from worker.locations import parse_time

Obj = dict[str, Any]

VELERO_API_VERSION = "velero.io/v1"
SNAPSHOT_API_VERSION = "snapshot.storage.k8s.io/v1"
STORAGE_LOCATION_LABEL = "velero.io/storage-location"
BACKUP_NAME_LABEL = "velero.io/backup-name"
BACKUP_UID_LABEL = "velero.io/backup-uid"

DNS1035_LABEL_MAX = 63

# Set by the API server; a create carrying them is rejected or misleading.
SERVER_OWNED_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

WAITING_PHASES = frozenset(
    {
        "WaitingForPluginOperations",
        "WaitingForPluginOperationsPartiallyFailed",
        "Finalizing",
        "FinalizingPartiallyFailed",
    }
)
ORPHAN_PHASES = frozenset({"Completed", "PartiallyFailed"})


def valid_label(value: str) -> str:
    """Velero's label.GetValidName: values over 63 characters become their first 57
    characters followed by the first 6 hex digits of the SHA-256 of the whole value."""
    if len(value) <= DNS1035_LABEL_MAX:
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()
    return value[: DNS1035_LABEL_MAX - 6] + digest[:6]


def _metadata(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _section(obj: Obj, key: str) -> Obj:
    value = obj.get(key)
    if not isinstance(value, dict):
        value = {}
        obj[key] = value
    return value


def _clear_server_fields(meta: Obj) -> None:
    for key in SERVER_OWNED_METADATA:
        meta.pop(key, None)


def phase_of(obj: Obj) -> str:
    status = obj.get("status")
    return str(status.get("phase", "")) if isinstance(status, dict) else ""


def waiting_and_unexpired(backup: Obj, now: datetime) -> bool:
    """A backup still waiting for plugin operations or finalizing, whose expiration is unset
    or in the future: Velero leaves it alone until it expires."""
    if phase_of(backup) not in WAITING_PHASES:
        return False
    expiration = (backup.get("status") or {}).get("expiration")
    if not expiration:
        return True
    try:
        return parse_time(str(expiration)) > now
    except ValueError:
        return True  # unreadable expiration: treat like unset, as nothing says it expired


def backup_for_cluster(backup: Obj, namespace: str, location: str, now: datetime) -> Obj:
    """The Backup to create: our namespace, no server-owned fields, this location in
    ``spec.storageLocation`` and its label; an expired waiting/finalizing backup becomes
    ``PartiallyFailed`` so Velero's GC can collect it. Owner references are filtered
    separately (they need cluster lookups)."""
    out = copy.deepcopy(backup)
    meta = _metadata(out)
    meta["namespace"] = namespace
    _clear_server_fields(meta)
    _section(out, "spec")["storageLocation"] = location
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
        meta["labels"] = labels
    labels[STORAGE_LOCATION_LABEL] = valid_label(location)
    if phase_of(out) in WAITING_PHASES and not waiting_and_unexpired(out, now):
        _section(out, "status")["phase"] = "PartiallyFailed"
    return out


def pod_volume_backup_for_cluster(
    pvb: Obj, backup_name: str, backup_uid: str, namespace: str, location: str
) -> Obj:
    """A PodVolumeBackup re-pointed at the Backup just created: owner references of kind
    Backup with its name get its new UID, and so does the ``velero.io/backup-uid`` label
    when present."""
    out = copy.deepcopy(pvb)
    meta = _metadata(out)
    refs = meta.get("ownerReferences")
    if isinstance(refs, list):
        for ref in refs:
            if (
                isinstance(ref, dict)
                and ref.get("apiVersion") == VELERO_API_VERSION
                and ref.get("kind") == "Backup"
                and ref.get("name") == backup_name
            ):
                ref["uid"] = backup_uid
    labels = meta.get("labels")
    if isinstance(labels, dict) and BACKUP_UID_LABEL in labels:
        labels[BACKUP_UID_LABEL] = backup_uid
    meta["namespace"] = namespace
    _clear_server_fields(meta)
    _section(out, "spec")["backupStorageLocation"] = location
    return out


def snapshot_class_for_cluster(vsclass: Obj) -> Obj:
    """A VolumeSnapshotClass as stored, minus server-owned fields (cluster-scoped)."""
    out = copy.deepcopy(vsclass)
    meta = _metadata(out)
    meta.pop("namespace", None)
    _clear_server_fields(meta)
    return out


def static_snapshot_content(content: Obj) -> Obj:
    """A VolumeSnapshotContent made static: its source is the snapshot handle, and its
    VolumeSnapshot reference points at a placeholder that does not exist (``ns-<uid>`` /
    ``name-<uid>``), so external-snapshotter treats it as deletable by its policy.

    Raises ValueError when the stored object has no ``status.snapshotHandle`` or uid.
    """
    out = copy.deepcopy(content)
    meta = _metadata(out)
    uid = meta.get("uid")
    handle = (out.get("status") or {}).get("snapshotHandle")
    if not handle:
        raise ValueError("has no status.snapshotHandle")
    if not uid:
        raise ValueError("has no metadata.uid")
    spec = _section(out, "spec")
    spec["source"] = {"snapshotHandle": handle}
    spec["volumeSnapshotRef"] = {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": "VolumeSnapshot",
        "namespace": f"ns-{uid}",
        "name": f"name-{uid}",
    }
    meta.pop("namespace", None)
    _clear_server_fields(meta)
    return out
