"""What a Velero namespace holds after a sync, reduced to what must not depend on how the
sync got there: two namespaces synced from the same bucket (or from buckets seeded with the
same ``now``), one undisturbed and one through crashes, signals, races or faults, must
compare equal.

Per-namespace identity (namespace, uid, resourceVersion, creationTimestamp, generation,
managedFields) is dropped; the UIDs that point from a PodVolumeBackup at its Backup are
checked separately, against the Backup of that name in the same namespace. Of a
BackupStorageLocation only what the worker writes counts: whether ``lastSyncedTime`` is
stamped (its value is a time; its spec points at a bucket and an endpoint, which differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.integration.env import SyncEnv

Obj = dict[str, Any]

# The worker's crash-safety annotations (the contract in worker/rewrite.py, spelled out here
# so a renamed constant cannot make these tests agree with it by accident): the pending mark
# after a failure, the run (and batch) that created a Backup with dependents, and the run
# (and batch) a location's Backups are complete through.
MARK = "backup-sync.io/dependents-pending"
RUN = "backup-sync.io/run"
COMPLETE_THROUGH = "backup-sync.io/dependents-complete-through"
RUN_ID = "<run id>"
BACKUP_UID_LABEL = "velero.io/backup-uid"
SAME_NAMESPACE_UID = "<uid of the Backup of this name in this namespace>"


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def normalized_backup(backup: Obj) -> Obj:
    """A run id differs from run to run: only its presence counts (``marked`` checks it)."""
    meta = _meta(backup)
    annotations = dict(meta.get("annotations") or {})
    if RUN in annotations:
        annotations[RUN] = RUN_ID
    return {
        "labels": meta.get("labels") or {},
        "annotations": annotations,
        "ownerReferences": meta.get("ownerReferences") or [],
        "finalizers": meta.get("finalizers") or [],
        "spec": backup.get("spec") or {},
        "status": backup.get("status") or {},
    }


def normalized_pod_volume_backup(pvb: Obj) -> Obj:
    """The UIDs that name its Backup become a placeholder (``uid_problems`` checks them)."""
    meta = _meta(pvb)
    labels = dict(meta.get("labels") or {})
    if BACKUP_UID_LABEL in labels:
        labels[BACKUP_UID_LABEL] = SAME_NAMESPACE_UID
    owners = [
        {**ref, "uid": SAME_NAMESPACE_UID} if ref.get("kind") == "Backup" else ref
        for ref in meta.get("ownerReferences") or []
    ]
    return {
        "labels": labels,
        "annotations": meta.get("annotations") or {},
        "ownerReferences": owners,
        "spec": pvb.get("spec") or {},
        "status": pvb.get("status") or {},
    }


def last_synced_time(location: Obj) -> str | None:
    status = location.get("status")
    return status.get("lastSyncedTime") if isinstance(status, dict) else None


def normalized_location(location: Obj) -> Obj:
    return {"lastSyncedTime stamped": last_synced_time(location) is not None}


KINDS = ("backups", "podvolumebackups", "backupstoragelocations")


@dataclass(frozen=True, slots=True)
class ClusterState:
    """The Backups, PodVolumeBackups and BackupStorageLocations of one namespace, by name, as
    the API returned them."""

    namespace: str
    backups: dict[str, Obj]
    pod_volume_backups: dict[str, Obj]
    locations: dict[str, Obj] = field(default_factory=dict)

    def normalized(self) -> Obj:
        return {
            "backups": {n: normalized_backup(b) for n, b in self.backups.items()},
            "podvolumebackups": {
                n: normalized_pod_volume_backup(p) for n, p in self.pod_volume_backups.items()
            },
            "backupstoragelocations": {
                n: normalized_location(loc) for n, loc in self.locations.items()
            },
        }

    def last_synced(self, location: str) -> str | None:
        return last_synced_time(self.locations[location])

    def marked(self) -> list[str]:
        """Backups a later run would still complete: carrying the pending mark, or created
        by a run (batch) later than their location's complete-through stamp."""
        stamps = {
            name: str((_meta(loc).get("annotations") or {}).get(COMPLETE_THROUGH) or "")
            for name, loc in self.locations.items()
        }
        marked = []
        for name, backup in self.backups.items():
            annotations = _meta(backup).get("annotations") or {}
            location = (_meta(backup).get("labels") or {}).get("velero.io/storage-location")
            run = str(annotations.get(RUN) or "")
            if MARK in annotations or (run and run > stamps.get(str(location), "")):
                marked.append(name)
        return sorted(marked)

    def uid_problems(self) -> list[str]:
        """PodVolumeBackups whose Backup owner reference or ``velero.io/backup-uid`` label
        is not the UID of the Backup of that name in this namespace."""
        problems = []
        for name, pvb in sorted(self.pod_volume_backups.items()):
            meta = _meta(pvb)
            owners = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Backup"]
            if not owners:
                problems.append(f"{name}: no Backup owner reference")
            for ref in owners:
                backup = self.backups.get(str(ref.get("name")))
                if backup is None:
                    problems.append(f"{name}: owner Backup {ref.get('name')} is not here")
                    continue
                uid = _meta(backup).get("uid")
                if ref.get("uid") != uid:
                    problems.append(f"{name}: ownerReference uid {ref.get('uid')} != {uid}")
                label = (meta.get("labels") or {}).get(BACKUP_UID_LABEL)
                if label != uid:
                    problems.append(f"{name}: label {BACKUP_UID_LABEL} {label} != {uid}")
        return problems


def read(env: SyncEnv) -> ClusterState:
    return ClusterState(
        env.namespace,
        env.list("backups"),
        env.list("podvolumebackups"),
        env.list("backupstoragelocations"),
    )


def last_synced(env: SyncEnv, location: str) -> str | None:
    """The location's ``status.lastSyncedTime`` as the API has it now."""
    return last_synced_time(env.location(location))


def assert_sound(state: ClusterState, what: str = "") -> None:
    """Every PodVolumeBackup names its own Backup's UID, and no Backup carries the mark."""
    prefix = f"{what}: " if what else ""
    problems = state.uid_problems()
    assert not problems, prefix + "\n".join(problems[:10])
    assert state.marked() == [], f"{prefix}still marked {MARK}: {state.marked()[:10]}"


def assert_converged(state: ClusterState, expected: ClusterState, what: str = "") -> None:
    """``state`` equals ``expected`` (what an undisturbed run leaves) once normalized, and
    is sound."""
    diff = "\n".join(differences(state, expected))
    prefix = f"{what}: " if what else ""
    assert not diff, f"{prefix}namespace differs from the undisturbed reference:\n{diff}"
    assert_sound(state, what)


def differences(actual: ClusterState, expected: ClusterState, limit: int = 8) -> list[str]:
    """Where ``actual`` differs from ``expected`` after normalization, one line per object
    (at most ``limit`` per kind, then a count), so a failure over thousands of objects
    stays readable. Empty when they are equal."""
    lines: list[str] = []
    got, want = actual.normalized(), expected.normalized()
    for kind in KINDS:
        mine, theirs = got[kind], want[kind]
        found = [f"{kind} missing: {n}" for n in sorted(theirs.keys() - mine.keys())]
        found += [f"{kind} extra: {n}" for n in sorted(mine.keys() - theirs.keys())]
        for name in sorted(mine.keys() & theirs.keys()):
            if mine[name] != theirs[name]:
                fields = sorted(
                    k
                    for k in mine[name].keys() | theirs[name].keys()
                    if mine[name].get(k) != theirs[name].get(k)
                )
                detail = "; ".join(
                    f"{k}: {mine[name].get(k)!r} != {theirs[name].get(k)!r}" for k in fields
                )
                found.append(f"{kind} {name} differs: {detail}")
        lines += found[:limit]
        if len(found) > limit:
            lines.append(f"... and {len(found) - limit} more {kind} differences")
    return lines
