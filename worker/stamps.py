"""The run stamps of a location (docs/operations.md, "The in-progress mark in depth"): which
mark each Backup of this run carries, when a batch of them may be declared complete, and the
patches that write the stamp on the BackupStorageLocation, together with
``status.lastSyncedTime``."""

from __future__ import annotations

import copy
import logging
from collections import Counter

from worker import velero
from worker.cluster import Cluster
from worker.errors import ClusterError
from worker.velero import BACKUP_STORAGE_LOCATION, COMPLETE_THROUGH_ANNOTATION, Obj

log = logging.getLogger(__name__)

# Backups are stamped complete in batches of this many, in work order: a run killed at any
# point leaves at most its unfinished batch and the work in flight (2 * concurrency) for
# the next run to check (plus the earlier pending Backups, when killed while re-checking
# them), for one extra write per BATCH Backups (docs/operations.md).
STAMP_BATCH = 100

_STAMP_ATTEMPTS = 3


class Stamps:
    """The run marks of one location's work and the stamps that declare them complete.

    The work order is the ``pending`` Backups of earlier runs first, then this run's own.
    A stamp of this run covers every earlier run's marks, so the pending Backups are one
    batch (0), stamped only once every one of them is complete; this run's own items follow
    in batches of STAMP_BATCH. Item ``i`` carries the mark ``<run id>/<its batch>``; once
    every item of the batches up to ``b`` has finished (and none blocks), the location may
    be stamped ``<run id>/<b>``; once all have, ``<run id>/~``. A blocked item holds back
    its batch and every later one."""

    def __init__(self, run_id: str, total: int, pending: int = 0) -> None:
        self._run_id = run_id
        self._pending = pending
        self._batches = self._batch(total - 1) + 1 if total else 0
        self._sizes = Counter(self._batch(i) for i in range(total))
        self._done: Counter[int] = Counter()
        self._next = 0  # the lowest batch not yet complete
        self._held = False
        # Whether a stamp means anything: pending Backups were completed or a Backup was
        # created with a mark (set from the pool's threads; it only ever becomes True).
        self.used = pending > 0

    def _batch(self, index: int) -> int:
        if index < self._pending:
            return 0
        own = index - self._pending
        return own // STAMP_BATCH + (1 if self._pending else 0)

    def mark(self, index: int) -> str:
        return f"{self._run_id}/{self._batch(index):06d}"

    def hold(self) -> None:
        """No stamp for this run at all."""
        self._held = True

    def finished(self, index: int, blocks: bool) -> str | None:
        """Record that item ``index`` finished; a new intermediate stamp, or None."""
        if self._held:
            return None
        if blocks:
            self._held = True
            return None
        self._done[self._batch(index)] += 1
        before = self._next
        while self._next < self._batches and self._done[self._next] == self._sizes[self._next]:
            self._next += 1
        if self._next == before or self._next == self._batches:
            return None  # nothing new, or the final stamp (with lastSyncedTime) says it
        return f"{self._run_id}/{self._next - 1:06d}"

    def final(self) -> str | None:
        """The stamp for a run that finished its location, or None when held."""
        return None if self._held else f"{self._run_id}/~"


def complete_through(location: Obj) -> str:
    """The run id the location's Backups are complete through ("" when never stamped)."""
    return str(velero.annotations_of(location).get(COMPLETE_THROUGH_ANNOTATION) or "")


def stamp_batches(cluster: Cluster, location: str, namespace: str, through: str) -> None:
    """Best effort: a failed intermediate stamp only leaves more for a later run to check."""
    try:
        _stamp(cluster, location, namespace, through, {})
    except ClusterError as exc:
        log.warning(
            "cannot stamp finished backups complete",
            extra={"location": location, "error": str(exc)},
        )


def patch_last_synced(
    cluster: Cluster, name: str, namespace: str, stamp: str, complete_through: str | None = None
) -> None:
    """Merge-patch ``status.lastSyncedTime`` (and, given ``complete_through``, the run id
    that the location's Backups are complete through). Velero's BSL CRD has no status
    subresource, so the main resource takes it; when a CRD has one, the server drops the
    status part of that patch, and the /status subresource gets it instead."""
    status: Obj = {"status": {"lastSyncedTime": stamp}}
    patched = _stamp(cluster, name, namespace, complete_through, status)
    if velero.status(patched).get("lastSyncedTime") != stamp:
        cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, status, subresource="status")


def _stamp(cluster: Cluster, name: str, namespace: str, through: str | None, rest: Obj) -> Obj:
    """Merge-patch ``rest`` and, when ``through`` is later than the location's current
    stamp, the stamp with it. The stamp never moves back: a run finishing after a later
    one (two runs at once) would otherwise make that one's Backups look pending. The
    location is read first and the patch carries its resourceVersion, so a stamp written
    in between makes the server answer 409 and the check runs again."""
    for _attempt in range(_STAMP_ATTEMPTS):
        patch = copy.deepcopy(rest)
        if through is not None:
            current = cluster.get(BACKUP_STORAGE_LOCATION, name, namespace) or {}
            if complete_through(current) >= through:
                through = None  # a later run got there first
            else:
                patch["metadata"] = _stamp_metadata(current, through)
        if not patch:
            return {}
        try:
            return cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, patch)
        except ClusterError as exc:
            if exc.status != 409 or through is None:
                raise
    # Still racing: the status, without a stamp (a later run checks those Backups again).
    return cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, rest) if rest else {}


def _stamp_metadata(current: Obj, through: str) -> Obj:
    """The stamp, guarded by the resourceVersion of the location it was checked against."""
    version = velero.metadata(current).get("resourceVersion")
    return {
        "annotations": {COMPLETE_THROUGH_ANNOTATION: through},
        **({"resourceVersion": version} if version else {}),
    }
