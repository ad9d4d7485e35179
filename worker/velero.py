"""Velero's vocabulary: the kinds this worker reads and writes, their API versions, the
labels, annotations and phases it looks at, and small read accessors for the objects.

Objects stay plain dicts, so fields unknown to us survive the round trip. The accessors
only read: a section that is missing or not a map reads as an empty one, which is fresh
and not part of the object, so code that writes a section gets it from the object itself
(``rewrite.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """A resource type, addressed the way the REST API addresses it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BACKUP_STORAGE_LOCATION = Kind("velero.io", "v1", "backupstoragelocations", "BackupStorageLocation")
BACKUP = Kind("velero.io", "v1", "backups", "Backup")
POD_VOLUME_BACKUP = Kind("velero.io", "v1", "podvolumebackups", "PodVolumeBackup")
SCHEDULE = Kind("velero.io", "v1", "schedules", "Schedule")
VOLUME_SNAPSHOT = Kind("snapshot.storage.k8s.io", "v1", "volumesnapshots", "VolumeSnapshot")
VOLUME_SNAPSHOT_CLASS = Kind(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotclasses", "VolumeSnapshotClass", False
)
VOLUME_SNAPSHOT_CONTENT = Kind(
    "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", "VolumeSnapshotContent", False
)
SECRET = Kind("", "v1", "secrets", "Secret")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")  # Velero's, for its version
EVENT = Kind("events.k8s.io", "v1", "events", "Event")  # on a location (worker.events)

VELERO_API_VERSION = BACKUP.api_version
SNAPSHOT_API_VERSION = VOLUME_SNAPSHOT.api_version

# The container of Velero's Deployment whose image tag tells its version.
VELERO_CONTAINER = "velero"
# Velero registers its object-store plugins under this prefix (sanitizeName), so a location
# may name a provider with or without it.
PROVIDER_PREFIX = "velero.io/"

STORAGE_LOCATION_LABEL = "velero.io/storage-location"
BACKUP_NAME_LABEL = "velero.io/backup-name"
BACKUP_UID_LABEL = "velero.io/backup-uid"

# Crash safety without a write per backup (docs/operations.md, "The in-progress mark"):
# - a Backup created with dependents (pod volume backups, CSI objects) carries the id of the
#   run that created it (RUN_ANNOTATION), set in the create itself;
# - a run that completes a location stamps its own id on the BackupStorageLocation
#   (COMPLETE_THROUGH_ANNOTATION) in the same patch as status.lastSyncedTime;
# - a Backup whose run id is later than its location's stamp was created by a run that did
#   not finish (killed, interrupted, failed): the next run completes its dependents;
# - a Backup whose dependents failed carries DEPENDENTS_PENDING_ANNOTATION until a run
#   completes them (a write only on that failure path).
RUN_ANNOTATION = "backup-sync.io/run"
COMPLETE_THROUGH_ANNOTATION = "backup-sync.io/dependents-complete-through"
DEPENDENTS_PENDING_ANNOTATION = "backup-sync.io/dependents-pending"
# Makes a VolumeSnapshotClass the cluster's default for every new VolumeSnapshot: not a
# decision a bucket gets to make.
DEFAULT_SNAPSHOT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"

PHASE_COMPLETED = "Completed"
PHASE_PARTIALLY_FAILED = "PartiallyFailed"
PHASE_FAILED = "Failed"
WAITING_PHASES = frozenset(
    {
        "WaitingForPluginOperations",
        "WaitingForPluginOperationsPartiallyFailed",
        "Finalizing",
        "FinalizingPartiallyFailed",
    }
)
ORPHAN_PHASES = frozenset({PHASE_COMPLETED, PHASE_PARTIALLY_FAILED})
# The phases in which Velero uploads velero-backup.json. Any other phase in a bucket was not
# written by Velero and would mislead this cluster's Velero: New (or no phase at all) makes
# its backup controller *run* the Backup, InProgress gets it marked Failed, Deleting and
# FailedValidation describe things that never happened here.
STORED_PHASES = frozenset({PHASE_COMPLETED, PHASE_PARTIALLY_FAILED, PHASE_FAILED}) | WAITING_PHASES
# A BackupStorageLocation's phase once Velero has validated its store.
LOCATION_PHASE_AVAILABLE = "Available"


def _section(obj: Mapping[str, Any], key: str) -> Obj:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def metadata(obj: Mapping[str, Any]) -> Obj:
    """``metadata``, or an empty map."""
    return _section(obj, "metadata")


def spec(obj: Mapping[str, Any]) -> Obj:
    """``spec``, or an empty map."""
    return _section(obj, "spec")


def status(obj: Mapping[str, Any]) -> Obj:
    """``status``, or an empty map."""
    return _section(obj, "status")


def labels_of(obj: Mapping[str, Any]) -> Obj:
    """``metadata.labels``, or an empty map."""
    return _section(metadata(obj), "labels")


def annotations_of(obj: Mapping[str, Any]) -> Obj:
    """``metadata.annotations``, or an empty map."""
    return _section(metadata(obj), "annotations")


def phase_of(obj: Mapping[str, Any]) -> str:
    """``status.phase`` as text ("" when there is none)."""
    return str(status(obj).get("phase", ""))
