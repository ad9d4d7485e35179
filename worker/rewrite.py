"""Pure transformations of objects read from a bucket into objects for this cluster.

Objects stay plain dicts so fields unknown to us survive the round trip. Each function
returns a new dict and never mutates its input.
"""

from __future__ import annotations

import copy
import hashlib
import re
from datetime import datetime

from worker import velero
from worker.locations import parse_time
from worker.velero import (
    BACKUP,
    BACKUP_NAME_LABEL,
    BACKUP_UID_LABEL,
    DEFAULT_SNAPSHOT_CLASS_ANNOTATION,
    DEPENDENTS_PENDING_ANNOTATION,
    PHASE_PARTIALLY_FAILED,
    RUN_ANNOTATION,
    SNAPSHOT_API_VERSION,
    STORAGE_LOCATION_LABEL,
    STORED_PHASES,
    VELERO_API_VERSION,
    VOLUME_SNAPSHOT,
    WAITING_PHASES,
    Obj,
    phase_of,
)

# Only this worker's own writes set these; a bucket's copies are dropped.
_OWN_ANNOTATIONS = (RUN_ANNOTATION, DEPENDENTS_PENDING_ANNOTATION)

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

DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


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
    # A finalizer from the bucket would block the deletion of the object here forever (no
    # controller in this cluster owns it); Velero keeps them, this worker does not.
    meta.pop("finalizers", None)


def invalid_name(name: object) -> str:
    """Why ``name`` cannot name a Kubernetes object (a DNS-1123 subdomain), or ""."""
    if name is None or name == "":
        return "is missing"
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if len(name) > DNS1123_SUBDOMAIN_MAX:
        return f"is longer than {DNS1123_SUBDOMAIN_MAX} characters"
    if not _DNS1123_SUBDOMAIN.fullmatch(name):
        return (
            f"{name!r} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit)"
        )
    return ""


def shown(name: object, limit: int = 80) -> str:
    """A name as it may appear in a summary or log line: as is when valid, else quoted and
    cut (a hostile name can hold newlines or megabytes)."""
    if isinstance(name, str) and not invalid_name(name):
        return name
    text = repr(name)
    return text if len(text) <= limit else text[:limit] + "…"


def _require_name(meta: Obj) -> None:
    """Dependents need their own name: a ``generateName`` alone would make the server invent
    a new object on every attempt."""
    problem = invalid_name(meta.get("name"))
    if problem:
        raise ValueError(f"metadata.name {problem}")


def backup_problem(backup: Obj) -> str:
    """Why a Backup read from a bucket must not be created in this cluster, or ""."""
    phase = phase_of(backup)
    if phase not in STORED_PHASES:
        return (
            f"status.phase {phase!r} is not a phase Velero stores in a bucket "
            f"({', '.join(sorted(STORED_PHASES))}); refusing to create it"
        )
    return ""


def waiting_and_unexpired(backup: Obj, now: datetime) -> bool:
    """A backup still waiting for plugin operations or finalizing, whose expiration is unset
    or in the future: Velero leaves it alone until it expires."""
    if phase_of(backup) not in WAITING_PHASES:
        return False
    expiration = velero.status(backup).get("expiration")
    if not expiration:
        return True
    try:
        return parse_time(str(expiration)) > now
    except ValueError:
        return True  # unreadable expiration: treat like unset, as nothing says it expired


def backup_for_cluster(
    backup: Obj, namespace: str, location: str, now: datetime, *, clear_hooks: bool = False
) -> Obj:
    """The Backup to create: our namespace, no server-owned fields, this location in
    ``spec.storageLocation`` and its label; an expired waiting/finalizing backup becomes
    ``PartiallyFailed`` so Velero's GC can collect it. With ``clear_hooks`` (Velero 1.18.3)
    ``spec.hooks`` is emptied as Velero empties it (``BackupHooks{}``, i.e. ``{}``): a
    synced Backup is a record, not a backup to run. Owner references are filtered
    separately (they need cluster lookups)."""
    out = copy.deepcopy(backup)
    meta = _metadata(out)
    meta["namespace"] = namespace
    _clear_server_fields(meta)
    spec = _section(out, "spec")
    spec["storageLocation"] = location
    if clear_hooks:
        spec["hooks"] = {}
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
        meta["labels"] = labels
    labels[STORAGE_LOCATION_LABEL] = valid_label(location)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):  # only this worker's own writes set them
        for key in _OWN_ANNOTATIONS:
            annotations.pop(key, None)
    if phase_of(out) in WAITING_PHASES and not waiting_and_unexpired(out, now):
        _section(out, "status")["phase"] = PHASE_PARTIALLY_FAILED
    return out


# The in-progress mark, set and removed (the bucket's own copies are dropped above).


def with_run_mark(backup: Obj, run_mark: str) -> Obj:
    """The Backup to create, carrying the run (and batch) that creates it: set in the create
    itself, so a Backup with dependents needs no write of its own."""
    meta = backup.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    annotations = meta.get("annotations")
    meta["annotations"] = {
        **(annotations if isinstance(annotations, dict) else {}),
        RUN_ANNOTATION: run_mark,
    }
    return {**backup, "metadata": meta}


def pending_mark_patch(pending: bool) -> Obj:
    """The merge patch that sets the dependents-pending mark (``pending``) or removes it."""
    value = "true" if pending else None
    return {"metadata": {"annotations": {DEPENDENTS_PENDING_ANNOTATION: value}}}


def pod_volume_backup_for_cluster(
    pvb: Obj, backup_name: str, backup_uid: str, namespace: str, location: str
) -> Obj:
    """A PodVolumeBackup re-pointed at the Backup just created: its owner references of kind
    Backup get its new UID, and so does the ``velero.io/backup-uid`` label when present.
    Owner references of other kinds are dropped (Velero keeps them).

    Raises ValueError when it has no valid name, or when its ``velero.io/backup-name`` label
    or a Backup owner reference names another backup (Velero would create it, and restores
    of that other backup would then pick it up)."""
    out = copy.deepcopy(pvb)
    meta = _metadata(out)
    _require_name(meta)
    labels = meta.get("labels")
    owner = labels.get(BACKUP_NAME_LABEL) if isinstance(labels, dict) else None
    if owner is not None and owner != valid_label(backup_name):
        raise ValueError(
            f"belongs to backup {owner!r} (label {BACKUP_NAME_LABEL}), not {backup_name!r}"
        )
    refs = meta.get("ownerReferences")
    kept: list[Obj] = []
    for ref in refs if isinstance(refs, list) else []:
        if not (
            isinstance(ref, dict)
            and ref.get("apiVersion") == VELERO_API_VERSION
            and ref.get("kind") == BACKUP.kind
        ):
            continue
        if ref.get("name") != backup_name:
            raise ValueError(
                f"belongs to backup {ref.get('name')!r} (ownerReferences), not {backup_name!r}"
            )
        ref["uid"] = backup_uid
        kept.append(ref)
    if kept:
        meta["ownerReferences"] = kept
    else:
        meta.pop("ownerReferences", None)
    if isinstance(labels, dict) and BACKUP_UID_LABEL in labels:
        labels[BACKUP_UID_LABEL] = backup_uid
    meta["namespace"] = namespace
    _clear_server_fields(meta)
    _section(out, "spec")["backupStorageLocation"] = location
    return out


def snapshot_class_for_cluster(vsclass: Obj) -> Obj:
    """A VolumeSnapshotClass as stored, minus server-owned fields, owner references and the
    default-class annotation (cluster-scoped). Raises ValueError without a valid name."""
    out = copy.deepcopy(vsclass)
    meta = _metadata(out)
    _require_name(meta)
    meta.pop("namespace", None)
    meta.pop("ownerReferences", None)
    _clear_server_fields(meta)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(DEFAULT_SNAPSHOT_CLASS_ANNOTATION, None)
    return out


def static_snapshot_content(content: Obj, backup_name: str | None = None) -> Obj:
    """A VolumeSnapshotContent made static: its source is the snapshot handle, and its
    VolumeSnapshot reference points at a placeholder that does not exist (``ns-<uid>`` /
    ``name-<uid>``), so external-snapshotter treats it as deletable by its policy.

    Raises ValueError when the stored object has no valid name, no ``status.snapshotHandle``
    or uid, or (given ``backup_name``) is labelled with another backup.
    """
    out = copy.deepcopy(content)
    meta = _metadata(out)
    _require_name(meta)
    owner = velero.labels_of(out).get(BACKUP_NAME_LABEL)
    if backup_name is not None and owner is not None and owner != valid_label(backup_name):
        raise ValueError(
            f"belongs to backup {owner!r} (label {BACKUP_NAME_LABEL}), not {backup_name!r}"
        )
    uid = meta.get("uid")
    handle = velero.status(out).get("snapshotHandle")
    if not handle:
        raise ValueError("has no status.snapshotHandle")
    if not uid or not isinstance(uid, str):
        raise ValueError("has no metadata.uid")
    spec = _section(out, "spec")
    spec["source"] = {"snapshotHandle": handle}
    spec["volumeSnapshotRef"] = {
        "apiVersion": SNAPSHOT_API_VERSION,
        "kind": VOLUME_SNAPSHOT.kind,
        "namespace": f"ns-{uid}",
        "name": f"name-{uid}",
    }
    meta.pop("namespace", None)
    meta.pop("ownerReferences", None)
    _clear_server_fields(meta)
    return out
