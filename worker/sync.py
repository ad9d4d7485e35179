"""The sync of one backup storage location: Velero's backup sync, written only against the
Cluster port and the BackupStore, so it runs the same on in-memory fakes and real servers.

Per location: snapshot the Backups in the cluster, list the backups in the store, create
what the cluster lacks (with pod volume backups and, with EnableCSI, CSI objects), complete
the Backups an interrupted run left with the in-progress mark, merge-patch
``status.lastSyncedTime``, then delete orphans. A store failure fails the location before
anything is written; one bad backup never stops the others; a failed status patch or a
termination request fails the location before any orphan is deleted.

Each backup is synced by ``backup_sync``, on the bounded pool of ``pool``; ``stamps`` keeps
the run stamps that declare its Backups complete; ``orphans`` decides and deletes orphans.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from worker import rewrite
from worker.backup_sync import BackupOutcome, BackupSyncer
from worker.cluster import Cluster
from worker.cluster_backups import ClusterBackup, cluster_backups
from worker.errors import Interrupted
from worker.locations import name_of
from worker.orphans import delete_orphans, orphans_of
from worker.pool import bounded_map
from worker.report import LocationReport
from worker.shutdown import Shutdown
from worker.stamps import Stamps, complete_through, patch_last_synced, stamp_batches
from worker.storage.layout import BackupStore
from worker.sync_options import SyncOptions
from worker.velero import Obj

__all__ = ["SyncOptions", "new_run_id", "sync_location"]

log = logging.getLogger(__name__)


_RUN_SEQUENCE = itertools.count()


def new_run_id(now: datetime) -> str:
    """A run id that sorts by start time (then by start order within one process, for
    clocks that stand still in tests)."""
    return f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}-{next(_RUN_SEQUENCE):06d}"


def sync_location(
    location: Obj,
    store: BackupStore,
    cluster: Cluster,
    options: SyncOptions,
    report: LocationReport,
) -> None:
    """Sync one location into the cluster, filling ``report``.

    Raises StoreError when the store listing fails (nothing has been written then),
    ClusterError when the status patch fails and Interrupted after a termination request
    (no orphan deleted in either case).
    """
    name = name_of(location)
    run_id = options.run_id or new_run_id(options.now())
    through = complete_through(location)
    existing = cluster_backups(cluster, options.namespace, name)
    report.in_cluster = len({b.name for b in existing or ()})
    in_store = set(store.list_backups())  # StoreError propagates: the location fails
    report.listed = len(in_store)
    if not in_store:
        _warn_if_listing_looks_wrong(store, existing or [], name, report)
    work = _work_of(name, existing or [], in_store, through, run_id)
    report.to_sync = len(work.to_sync)

    _check_interrupted(options.shutdown, 0, work.total)
    stamps = Stamps(run_id, work.total, pending=len(work.to_complete))
    syncer = BackupSyncer(name, store, cluster, options, stamps, through)
    # Unknown Backups (the listing failed) may include unfinished ones: no stamp then.
    if existing is None or not syncer.keep_pending(work.to_mark, report):
        stamps.hold()
    progress = options.progress(name, work.total)
    done = 0
    for outcome in bounded_map(_run, work.jobs(syncer), options.concurrency, options.shutdown):
        _fold(report, outcome)
        reached = stamps.finished(outcome.index, outcome.blocks_stamp)
        if reached is not None and stamps.used:
            stamp_batches(cluster, name, options.namespace, reached)
        progress.advance()
        done += 1
    progress.finish()
    _check_interrupted(options.shutdown, done, work.total)

    # The status patch comes before the orphan deletions (Velero: after), so that a location
    # whose patch fails has deleted nothing. It also stamps this whole run as complete for
    # the location, so that its Backups never need a write of their own to say so.
    stamp = options.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    # A run that marked and completed nothing has nothing to stamp (steady state).
    final = stamps.final() if stamps.used else None
    patch_last_synced(cluster, name, options.namespace, stamp, final)
    report.status_patched = True

    delete_orphans(cluster, options, name, existing, in_store, report)


_Job = Callable[[], BackupOutcome]


@dataclass(frozen=True, slots=True)
class _Work:
    """A location's backups to sync, and the pending ones that cannot be completed now."""

    to_complete: list[ClusterBackup]  # pending, their folders still in the store
    to_sync: list[str]  # folders without a Backup in the cluster
    to_mark: list[ClusterBackup]  # pending by their run only, their folders gone

    @property
    def total(self) -> int:
        return len(self.to_complete) + len(self.to_sync)

    def jobs(self, syncer: BackupSyncer) -> Iterator[_Job]:
        """One job per backup, numbered in work order. Pending Backups first: a job killed
        again and again must not let them pile up."""
        for index, backup in enumerate(self.to_complete):
            yield partial(syncer.complete, index, backup)
        for index, folder in enumerate(self.to_sync, start=len(self.to_complete)):
            yield partial(syncer.sync, index, folder)


def _run(job: _Job) -> BackupOutcome:
    return job()


def _work_of(
    location: str,
    existing: list[ClusterBackup],
    in_store: set[str],
    complete_through: str,
    run_id: str,
) -> _Work:
    """What the location's sync has to do (and, in the log, how much)."""
    ctx = {"location": location}
    to_sync = sorted(in_store - {b.name for b in existing})
    if to_sync:
        log.info("backups to sync into the cluster", extra={**ctx, "count": len(to_sync)})
    # Only this location's pending Backups: another location listing the same name would
    # give the dependents the wrong location and read them from the wrong bucket.
    label = rewrite.valid_label(location)
    pending = [
        b for b in existing if b.location_label == label and b.pending(complete_through, run_id)
    ]
    to_complete = sorted((b for b in pending if b.name in in_store), key=lambda b: b.name)
    if to_complete:
        log.info(
            "backups an earlier run left without all their dependents",
            extra={**ctx, "count": len(to_complete)},
        )
    # Not those already carrying the pending annotation: it says so already.
    to_mark = [b for b in pending if b.name not in in_store and not b.dependents_pending]
    return _Work(to_complete, to_sync, to_mark)


def _warn_if_listing_looks_wrong(
    store: BackupStore, existing: list[ClusterBackup], location: str, report: LocationReport
) -> None:
    """An empty listing while the cluster holds this location's finished Backups usually
    means a bucket or prefix that points elsewhere: say which prefix was listed."""
    synced = len(orphans_of(location, existing, ()))  # all of them, were the listing right
    if not synced:
        return
    message = (
        f"the store listed nothing under {store.backups_dir or '(bucket root)'} although the "
        f"cluster holds {synced} Completed or PartiallyFailed Backups of this location; "
        f"check objectStorage.bucket and prefix"
    )
    log.warning(message, extra={"location": report.name, "prefix": store.backups_dir})
    report.warn(message)


def _check_interrupted(shutdown: Shutdown, done: int, total: int) -> None:
    if shutdown.requested:
        raise Interrupted(
            f"{shutdown.reason} after {done} of {total} backups; orphans not deleted, "
            f"lastSyncedTime not patched"
        )


def _fold(report: LocationReport, outcome: BackupOutcome) -> None:
    report.created += outcome.created
    report.resumed += outcome.resumed
    if outcome.skipped:
        report.skip(outcome.skipped, outcome.name)
    report.pod_volume_backups += outcome.pod_volume_backups
    report.csi_snapshot_classes += outcome.csi_snapshot_classes
    report.csi_snapshot_contents += outcome.csi_snapshot_contents
    report.errors.extend(outcome.errors)
