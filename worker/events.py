"""Kubernetes Events (events.k8s.io/v1) on a BackupStorageLocation, so that
``kubectl describe bsl`` tells what the last runs did: the location failed, items failed,
orphans were deleted, a mass deletion was blocked, backups were synced.

Events are a courtesy to the operator: a failure to record one is logged and never changes
the outcome of the run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from worker import velero
from worker.cluster import Cluster
from worker.report import LocationReport, Outcome
from worker.velero import BACKUP_STORAGE_LOCATION, EVENT, Obj

log = logging.getLogger(__name__)

REPORTING_CONTROLLER = "backup-sync"
NORMAL = "Normal"
WARNING = "Warning"
# events.k8s.io/v1 validation limits
NOTE_MAX_BYTES = 1024
FIELD_MAX = 128
ITEMS_IN_NOTE = 3


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str  # CamelCase, what happened
    action: str  # what the worker was doing
    note: str  # human-readable detail


def location_events(report: LocationReport) -> list[EventSpec]:
    """The Events that tell what happened to one location in this run (none when the
    location was not due or is disabled)."""
    if report.outcome == Outcome.CONFIG_ERROR:
        return [EventSpec(WARNING, "InvalidConfiguration", "Sync", report.reason)]
    if report.outcome == Outcome.FAILED:
        return [EventSpec(WARNING, "SyncFailed", "Sync", report.reason)]
    if report.outcome != Outcome.SYNCED:
        return []
    events: list[EventSpec] = []
    if report.created:
        events.append(
            EventSpec(
                NORMAL,
                "BackupsSynced",
                "Sync",
                f"created {report.created} Backups from the backup store "
                f"({report.pod_volume_backups} pod volume backups)",
            )
        )
    if report.errors:
        shown = "; ".join(f"{e.object}: {e.reason}" for e in report.errors[:ITEMS_IN_NOTE])
        more = len(report.errors) - ITEMS_IN_NOTE
        events.append(
            EventSpec(
                WARNING,
                "ItemsFailed",
                "Sync",
                f"{len(report.errors)} items failed to sync: {shown}"
                + (f"; and {more} more (see the job's summary)" if more > 0 else ""),
            )
        )
    if report.mass_deletion_blocked:
        events.append(
            EventSpec(WARNING, "MassDeletionBlocked", "DeleteOrphans", report.mass_deletion_blocked)
        )
    if report.orphans_deleted:
        events.append(
            EventSpec(
                NORMAL,
                "OrphansDeleted",
                "DeleteOrphans",
                f"deleted {report.orphans_deleted} Backups whose folders are gone from the "
                f"backup store",
            )
        )
    return events


def record_location_events(cluster: Cluster, location: Obj, report: LocationReport) -> None:
    """Record this run's Events on the location; never raises."""
    instance = reporting_instance()
    for spec in location_events(report):
        try:
            cluster.create_event(event_body(location, spec, datetime.now(UTC), instance))
        except Exception as exc:  # an event is never worth failing the run for
            log.warning(
                "cannot record event",
                extra={"location": report.name, "reason": spec.reason, "error": str(exc)},
            )


def reporting_instance() -> str:
    """This pod's name in a cluster (HOSTNAME), else the host name."""
    return (os.environ.get("HOSTNAME") or socket.gethostname() or "backup-sync")[:FIELD_MAX]


def _cut(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - len("…".encode())].decode(errors="ignore") + "…"


def event_body(regarding: Obj, spec: EventSpec, now: datetime, instance: str) -> Obj:
    """An events.k8s.io/v1 Event about ``regarding``, in its namespace, within the API's
    length limits."""
    meta = velero.metadata(regarding)
    name = str(meta.get("name", ""))
    namespace = str(meta.get("namespace", ""))
    ref: Obj = {
        "apiVersion": str(regarding.get("apiVersion", BACKUP_STORAGE_LOCATION.api_version)),
        "kind": str(regarding.get("kind", BACKUP_STORAGE_LOCATION.kind)),
        "name": name,
        "namespace": namespace,
    }
    for key in ("uid", "resourceVersion"):
        if meta.get(key):
            ref[key] = str(meta[key])
    return {
        "apiVersion": EVENT.api_version,
        "kind": EVENT.kind,
        # Named as client-go names events: the object's name and a hex timestamp (plus a
        # little randomness: several events per object come within one microsecond here).
        "metadata": {
            "name": f"{name[:200]}.{int(now.timestamp() * 1e6):x}{secrets.token_hex(3)}",
            "namespace": namespace,
        },
        "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance[:FIELD_MAX],
        "action": spec.action[:FIELD_MAX],
        "reason": spec.reason[:FIELD_MAX],
        "type": spec.type,
        "note": _cut(spec.note, NOTE_MAX_BYTES),
        "regarding": ref,
    }
