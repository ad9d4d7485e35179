"""The Backups already in the cluster, reduced to the fields the sync (and explain) look at."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker import velero
from worker.cluster import Cluster
from worker.errors import ClusterError
from worker.velero import Obj

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterBackup:
    """The fields of an existing Backup that the sync looks at."""

    name: str
    location_label: str | None
    phase: str
    uid: str = ""
    dependents_pending: bool = False  # its dependents failed: complete them
    run: str = ""  # the run that created it with dependents (RUN_ANNOTATION)

    def pending(self, complete_through: str, this_run: str) -> bool:
        """Its dependents may be incomplete: they failed, or the run that created it did
        not finish its location (its id is later than the location's stamp)."""
        return self.dependents_pending or (
            bool(self.run) and self.run > complete_through and self.run != this_run
        )


def summarize(backup: Obj) -> ClusterBackup:
    """The fields of a Backup from the API that the sync (and explain) look at."""
    meta = velero.metadata(backup)
    labels = velero.labels_of(backup)
    annotations = velero.annotations_of(backup)
    return ClusterBackup(
        name=str(meta.get("name", "")),
        location_label=labels.get(velero.STORAGE_LOCATION_LABEL),
        phase=velero.phase_of(backup),
        uid=str(meta.get("uid", "")),
        dependents_pending=velero.DEPENDENTS_PENDING_ANNOTATION in annotations,
        run=str(annotations.get(velero.RUN_ANNOTATION) or ""),
    )


def cluster_backups(cluster: Cluster, namespace: str, location: str) -> list[ClusterBackup] | None:
    """One paginated list of the namespace's Backups, reduced to what the sync needs.
    None when listing failed: the sync goes on as if the cluster had none (Velero does)."""
    try:
        return [summarize(b) for b in cluster.list(velero.BACKUP, namespace)]
    except ClusterError as exc:
        log.error(
            "cannot list Backups in the cluster; syncing as if it had none",
            extra={"location": location, "error": str(exc)},
        )
        return None
