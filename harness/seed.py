"""Write Velero-layout backups into a bucket, as Velero 1.15 itself would have written them.

Independent of ``worker``: tests, the demo and the benchmark all seed through this, with any
``put(key, data)`` callable (the object-store harness provides one per emulator).
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]
Put = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class SeedBackup:
    """One backup to write. ``expires_in`` None means no ``status.expiration``."""

    name: str
    phase: str = "Completed"
    expires_in: timedelta | None = timedelta(days=30)
    pod_volume_backups: int = 0
    csi_snapshots: int = 0
    schedule: tuple[str, str] | None = None  # (schedule name, schedule uid) in the source
    source_location: str = "default"
    uid: str = ""

    def backup_uid(self) -> str:
        return self.uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"backup/{self.name}"))


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_document(seed: SeedBackup, now: datetime) -> Obj:
    """A realistic ``velero-backup.json`` (fields as written by Velero 1.15)."""
    started = now - timedelta(hours=1)
    labels = {"velero.io/storage-location": seed.source_location}
    meta: Obj = {
        "name": seed.name,
        "namespace": "velero",
        "uid": seed.backup_uid(),
        "resourceVersion": "48213",
        "generation": 7,
        "creationTimestamp": _stamp(started),
        "labels": labels,
        "annotations": {
            "velero.io/resource-timeout": "10m0s",
            "velero.io/source-cluster-k8s-gitversion": "v1.30.4",
            "velero.io/source-cluster-k8s-major-version": "1",
            "velero.io/source-cluster-k8s-minor-version": "30",
        },
    }
    if seed.schedule is not None:
        schedule_name, schedule_uid = seed.schedule
        labels["velero.io/schedule-name"] = schedule_name
        meta["ownerReferences"] = [
            {
                "apiVersion": "velero.io/v1",
                "controller": True,
                "kind": "Schedule",
                "name": schedule_name,
                "uid": schedule_uid,
            }
        ]
    status: Obj = {
        "formatVersion": "1.1.0",
        "phase": seed.phase,
        "startTimestamp": _stamp(started),
        "version": 1,
        "hookStatus": {},
        "progress": {"itemsBackedUp": 143, "totalItems": 143},
    }
    if seed.phase in ("Completed", "PartiallyFailed", "Failed"):
        status["completionTimestamp"] = _stamp(started + timedelta(minutes=3))
    if seed.expires_in is not None:
        status["expiration"] = _stamp(now + seed.expires_in)
    if seed.pod_volume_backups:
        status["volumeSnapshotsAttempted"] = 0
    if seed.csi_snapshots:
        status["csiVolumeSnapshotsAttempted"] = seed.csi_snapshots
        status["csiVolumeSnapshotsCompleted"] = seed.csi_snapshots
    return {
        "kind": "Backup",
        "apiVersion": "velero.io/v1",
        "metadata": meta,
        "spec": {
            "metadata": {},
            "includedNamespaces": ["*"],
            "ttl": "720h0m0s",
            "hooks": {},
            "storageLocation": seed.source_location,
            "volumeSnapshotLocations": ["default"],
            "defaultVolumesToFsBackup": seed.pod_volume_backups > 0,
            "csiSnapshotTimeout": "10m0s",
            "itemOperationTimeout": "4h0m0s",
            "snapshotMoveData": False,
        },
        "status": status,
    }


def pod_volume_backup_documents(seed: SeedBackup) -> list[Obj]:
    """Completed kopia pod volume backups owned by the backup (source-cluster UIDs)."""
    uid = seed.backup_uid()
    docs = []
    for index in range(seed.pod_volume_backups):
        name = f"{seed.name}-pvb-{index}"
        docs.append(
            {
                "kind": "PodVolumeBackup",
                "apiVersion": "velero.io/v1",
                "metadata": {
                    "name": name,
                    "generateName": f"{seed.name}-",
                    "namespace": "velero",
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pvb/{name}")),
                    "resourceVersion": "48190",
                    "generation": 4,
                    "labels": {
                        "velero.io/backup-name": seed.name,
                        "velero.io/backup-uid": uid,
                        "velero.io/pvc-uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pvc/{name}")),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "velero.io/v1",
                            "controller": True,
                            "kind": "Backup",
                            "name": seed.name,
                            "uid": uid,
                        }
                    ],
                },
                "spec": {
                    "node": "worker-1",
                    "pod": {"kind": "Pod", "namespace": "shop", "name": f"db-{index}", "uid": "p"},
                    "volume": "data",
                    "backupStorageLocation": seed.source_location,
                    "repoIdentifier": "",
                    "uploaderType": "kopia",
                    "tags": {
                        "backup": seed.name,
                        "backup-uid": uid,
                        "ns": "shop",
                        "pod": f"db-{index}",
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
        )
    return docs


def csi_documents(seed: SeedBackup) -> tuple[list[Obj], list[Obj]]:
    """One VolumeSnapshotClass and ``csi_snapshots`` VolumeSnapshotContents."""
    classes: list[Obj] = []
    contents: list[Obj] = []
    if not seed.csi_snapshots:
        return classes, contents
    classes.append(
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {
                "name": "csi-snapclass",
                "uid": "4b1a7c3e-0000-4000-8000-000000000001",
                "resourceVersion": "311",
                "labels": {"velero.io/csi-volumesnapshot-class": "true"},
            },
            "driver": "ebs.csi.aws.com",
            "deletionPolicy": "Retain",
        }
    )
    for index in range(seed.csi_snapshots):
        name = f"snapcontent-{seed.name}-{index}"
        contents.append(
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotContent",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vsc/{name}")),
                    "resourceVersion": "48201",
                    "labels": {"velero.io/backup-name": seed.name},
                },
                "spec": {
                    "deletionPolicy": "Retain",
                    "driver": "ebs.csi.aws.com",
                    "source": {"volumeHandle": f"vol-0{index:07x}"},
                    "volumeSnapshotClassName": "csi-snapclass",
                    "volumeSnapshotRef": {
                        "apiVersion": "snapshot.storage.k8s.io/v1",
                        "kind": "VolumeSnapshot",
                        "namespace": "shop",
                        "name": f"velero-data-{index}",
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"vs/{name}")),
                    },
                },
                "status": {
                    "creationTime": 1767225600000000000,
                    "readyToUse": True,
                    "restoreSize": 10737418240,
                    "snapshotHandle": f"snap-0{index:016x}",
                },
            }
        )
    return classes, contents


def gzip_json(value: Any) -> bytes:
    """Velero's encode.ToJSONGzip: gzip of json.Encoder output (the value and a newline)."""
    return gzip.compress((json.dumps(value) + "\n").encode())


def backup_objects(
    seed: SeedBackup, prefix: str, now: datetime, extras: bool = True
) -> dict[str, bytes]:
    """Every object of one backup, keyed by its path in the bucket. ``extras`` adds the
    files the sync never reads (logs, tarball), as a real bucket has them."""
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    base = f"{root}backups/{seed.name}/"
    objects = {
        f"{base}velero-backup.json": json.dumps(backup_document(seed, now), indent=2).encode()
    }
    if seed.pod_volume_backups:
        objects[f"{base}{seed.name}-podvolumebackups.json.gz"] = gzip_json(
            pod_volume_backup_documents(seed)
        )
    if seed.csi_snapshots:
        classes, contents = csi_documents(seed)
        objects[f"{base}{seed.name}-csi-volumesnapshotclasses.json.gz"] = gzip_json(classes)
        objects[f"{base}{seed.name}-csi-volumesnapshotcontents.json.gz"] = gzip_json(contents)
    if extras:
        objects[f"{base}{seed.name}-logs.gz"] = gzip.compress(b"level=info msg=done\n")
        objects[f"{base}{seed.name}.tar.gz"] = gzip.compress(b"")
    return objects


def seed(
    put: Put,
    prefix: str,
    backups: Iterable[SeedBackup],
    now: datetime | None = None,
    extras: bool = True,
) -> int:
    """Write the backups through ``put``; returns the number of objects written."""
    now = now or datetime.now(UTC)
    count = 0
    for backup in backups:
        for key, data in backup_objects(backup, prefix, now, extras).items():
            put(key, data)
            count += 1
    return count
