"""Write Velero-layout backups into a bucket, as Velero 1.15 itself would have written them.

Independent of ``worker``: tests, the demo and the benchmark all seed through this, with any
``put(key, data)`` callable (the object-store harness provides one per emulator). The
documents come from ``harness.velero_docs``, with real-looking UIDs and times.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from harness.velero_docs import (
    VELERO_API,
    Obj,
    backup_files,
    backup_key,
    gzip_json,
    stamp,
    stored_backup,
    stored_pvb,
    stored_vsclass,
    stored_vscontent,
    uuid_uid,
)

# gzip_json: the encoding of the lists, for tests that write their own (test_hostile_bucket).
__all__ = [
    "SeedBackup",
    "backup_document",
    "backup_objects",
    "csi_documents",
    "gzip_json",
    "pod_volume_backup_documents",
    "seed",
]

Put = Callable[[str, bytes], None]
NAMESPACE = "velero"  # the source cluster's Velero namespace
SNAPSHOT_CLASS = "csi-snapclass"


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


def backup_document(seed: SeedBackup, now: datetime) -> Obj:
    """A realistic ``velero-backup.json``, started an hour before ``now``."""
    labels: dict[str, str] = {}
    owner_refs = None
    if seed.schedule is not None:
        schedule_name, schedule_uid = seed.schedule
        labels["velero.io/schedule-name"] = schedule_name
        owner_refs = [
            {
                "apiVersion": VELERO_API,
                "controller": True,
                "kind": "Schedule",
                "name": schedule_name,
                "uid": schedule_uid,
            }
        ]
    return stored_backup(
        seed.name,
        phase=seed.phase,
        expiration=None if seed.expires_in is None else stamp(now + seed.expires_in),
        storage_location=seed.source_location,
        labels=labels,
        owner_refs=owner_refs,
        pod_volume_backups=seed.pod_volume_backups,
        csi_snapshots=seed.csi_snapshots,
        started=now - timedelta(hours=1),
        namespace=NAMESPACE,
        uid_of=uuid_uid,
        # Without: the seeded bytes, and so every benchmark's input, stay as measured in
        # docs/benchmark.md.
        managed_fields=False,
    )


def pod_volume_backup_documents(seed: SeedBackup) -> list[Obj]:
    """Completed kopia pod volume backups owned by the backup (source-cluster UIDs)."""
    docs = []
    for index in range(seed.pod_volume_backups):
        name = f"{seed.name}-pvb-{index}"
        pvc = {"velero.io/pvc-uid": uuid_uid("pvc", name)}
        docs.append(
            stored_pvb(
                name,
                seed.name,
                index=index,
                labels=pvc,
                location=seed.source_location,
                namespace=NAMESPACE,
                uid_of=uuid_uid,
            )
        )
    return docs


def csi_documents(seed: SeedBackup) -> tuple[list[Obj], list[Obj]]:
    """One VolumeSnapshotClass and ``csi_snapshots`` VolumeSnapshotContents."""
    if not seed.csi_snapshots:
        return [], []
    selected = {"velero.io/csi-volumesnapshot-class": "true"}
    classes = [stored_vsclass(SNAPSHOT_CLASS, labels=selected, uid_of=uuid_uid)]
    contents = [
        stored_vscontent(
            f"snapcontent-{seed.name}-{index}",
            seed.name,
            handle=f"snap-0{index:016x}",
            index=index,
            snapshot_class=SNAPSHOT_CLASS,
            deletion_policy="Retain",
            uid_of=uuid_uid,
        )
        for index in range(seed.csi_snapshots)
    ]
    return classes, contents


def backup_objects(
    seed: SeedBackup, prefix: str, now: datetime, extras: bool = True
) -> dict[str, bytes]:
    """Every object of one backup, keyed by its path in the bucket. ``extras`` adds the
    files the sync never reads (logs, tarball), as a real bucket has them."""
    classes, contents = csi_documents(seed)
    files = backup_files(
        backup_document(seed, now),
        pvbs=pod_volume_backup_documents(seed) if seed.pod_volume_backups else None,
        vsclasses=classes if seed.csi_snapshots else None,
        vscontents=contents if seed.csi_snapshots else None,
    )
    if extras:
        files[f"{seed.name}-logs.gz"] = gzip.compress(b"level=info msg=done\n")
        files[f"{seed.name}.tar.gz"] = gzip.compress(b"")
    return {backup_key(prefix, seed.name, file): data for file, data in files.items()}


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
