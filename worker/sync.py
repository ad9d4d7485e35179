"""The sync of one backup storage location: Velero's backup sync, written only against the
Cluster port and the BackupStore, so it runs the same on in-memory fakes and real servers.

Per location: snapshot the Backups in the cluster, list the backups in the store, create
what the cluster lacks (with pod volume backups and, with EnableCSI, CSI objects), complete
the Backups an interrupted run left with the in-progress mark, merge-patch
``status.lastSyncedTime``, then delete orphans. A store failure fails the location before
anything is written; one bad backup never stops the others; a failed status patch or a
termination request fails the location before any orphan is deleted.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from worker import rewrite
from worker.cluster import (
    BACKUP,
    BACKUP_STORAGE_LOCATION,
    POD_VOLUME_BACKUP,
    SCHEDULE,
    VOLUME_SNAPSHOT,
    VOLUME_SNAPSHOT_CLASS,
    VOLUME_SNAPSHOT_CONTENT,
    Cluster,
)
from worker.errors import (
    AlreadyExists,
    ClusterError,
    Interrupted,
    ItemError,
    NotFound,
    StoreError,
)
from worker.guard import DEFAULT_GUARD, MassDeletionGuard
from worker.locations import name_of
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.progress import Progress, ProgressFactory
from worker.report import (
    SKIP_ALREADY_EXISTS,
    SKIP_INTERRUPTED,
    SKIP_NO_METADATA,
    SKIP_NOT_EXPIRED,
    ItemFailure,
    LocationReport,
)
from worker.rewrite import ORPHAN_PHASES
from worker.shutdown import NEVER, Shutdown
from worker.storage.layout import BackupStore, StreamedList

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class SyncOptions:
    namespace: str
    csi: bool
    concurrency: int
    now: Callable[[], datetime]
    guard: MassDeletionGuard = DEFAULT_GUARD
    progress: ProgressFactory = Progress
    shutdown: Shutdown = NEVER
    profile: VeleroProfile = DEFAULT_PROFILE
    run_id: str = ""  # new_run_id(); "" makes one per location


@dataclass(slots=True)
class BackupOutcome:
    """What happened to one backup; folded into the LocationReport by the caller."""

    name: str
    index: int = 0  # its place in the location's work order
    created: bool = False
    resumed: bool = False
    skipped: str = ""
    pod_volume_backups: int = 0
    csi_snapshot_classes: int = 0
    csi_snapshot_contents: int = 0
    errors: list[ItemFailure] = field(default_factory=list)
    # Its dependents failed and the pending annotation could not be set: the location's
    # complete-through stamp must not move past this run.
    blocks_stamp: bool = False


_RUN_SEQUENCE = itertools.count()


def new_run_id(now: datetime) -> str:
    """A run id that sorts by start time (then by start order within one process, for
    clocks that stand still in tests)."""
    return f"{now.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}-{next(_RUN_SEQUENCE):06d}"


@dataclass(frozen=True, slots=True)
class ClusterBackup:
    """The fields of an existing Backup that the sync looks at."""

    name: str
    location_label: str | None
    phase: str
    uid: str = ""
    dependents_pending: bool = False  # its dependents failed: complete them
    run: str = ""  # the run that created it with dependents (rewrite.RUN_ANNOTATION)

    def pending(self, complete_through: str, this_run: str) -> bool:
        """Its dependents may be incomplete: they failed, or the run that created it did
        not finish its location (its id is later than the location's stamp)."""
        return self.dependents_pending or (
            bool(self.run) and self.run > complete_through and self.run != this_run
        )


@dataclass(slots=True)
class _Dependents:
    """What a backup's folder holds besides its metadata, read before the Backup is created
    so that a Backup known to have none never needs the in-progress mark."""

    pod_volume_backups: list[Obj] | StreamedList = field(default_factory=list)
    snapshot_classes: list[Obj] | StreamedList = field(default_factory=list)
    snapshot_contents: list[Obj] | StreamedList = field(default_factory=list)
    unreadable: bool = False  # a file could not be read: the mark has to stay

    @property
    def none(self) -> bool:
        lists = (self.pod_volume_backups, self.snapshot_classes, self.snapshot_contents)
        # A StreamedList only exists for a file too large to hold, so it is never empty.
        return not self.unreadable and all(isinstance(x, list) and not x for x in lists)


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
    location_name = name_of(location)
    ctx = {"location": location_name}
    run_id = options.run_id or new_run_id(options.now())
    annotations = (location.get("metadata") or {}).get("annotations") or {}
    complete_through = str(annotations.get(rewrite.COMPLETE_THROUGH_ANNOTATION) or "")

    existing = _cluster_backups(cluster, options.namespace, ctx)
    in_cluster = {b.name for b in existing} if existing is not None else set()
    report.in_cluster = len(in_cluster)

    in_store = set(store.list_backups())  # StoreError propagates: the location fails
    report.listed = len(in_store)
    label = rewrite.valid_label(location_name)
    if not in_store:
        _warn_if_listing_looks_wrong(store, existing or [], label, report)
    to_sync = sorted(in_store - in_cluster)
    report.to_sync = len(to_sync)
    if to_sync:
        log.info("backups to sync into the cluster", extra={**ctx, "count": len(to_sync)})
    # Only this location's pending Backups: another location listing the same name would
    # give the dependents the wrong location and read them from the wrong bucket.
    pending = [
        b
        for b in existing or ()
        if b.location_label == label and b.pending(complete_through, run_id)
    ]
    to_complete = sorted((b for b in pending if b.name in in_store), key=lambda b: b.name)
    if to_complete:
        log.info(
            "backups an earlier run left without all their dependents",
            extra={**ctx, "count": len(to_complete)},
        )

    total = len(to_sync) + len(to_complete)
    _check_interrupted(options.shutdown, 0, total)
    stamps = _Stamps(run_id, total, pending=len(to_complete))
    syncer = _BackupSyncer(location_name, store, cluster, options, stamps, complete_through)
    # Unknown Backups (the listing failed) may include unfinished ones: no stamp then.
    if existing is None or not syncer.keep_pending(
        [b for b in pending if b.name not in in_store and not b.dependents_pending], report
    ):
        stamps.hold()
    progress = options.progress(location_name, total)
    done = 0
    # Pending Backups first: a job killed again and again must not let them pile up.
    items: Iterator[str | ClusterBackup] = itertools.chain(to_complete, to_sync)
    work = enumerate(items)
    for outcome in bounded_map(syncer.handle, work, options.concurrency, options.shutdown):
        _fold(report, outcome)
        reached = stamps.finished(outcome.index, outcome.blocks_stamp)
        if reached is not None and stamps.used:
            _stamp_batches(cluster, location_name, options.namespace, reached)
        progress.advance()
        done += 1
    progress.finish()
    _check_interrupted(options.shutdown, done, total)

    # The status patch comes before the orphan deletions (Velero: after), so that a location
    # whose patch fails has deleted nothing. It also stamps this whole run as complete for
    # the location, so that its Backups never need a write of their own to say so.
    stamp = options.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    # A run that marked and completed nothing has nothing to stamp (steady state).
    through = stamps.final() if stamps.used else None
    patch_last_synced(cluster, location_name, options.namespace, stamp, through)
    report.status_patched = True

    _delete_orphans(location_name, existing, in_store, cluster, options, report)


# Backups are stamped complete in batches of this many, in work order: a run killed at any
# point leaves at most its unfinished batch and the work in flight (2 * concurrency) for
# the next run to check (plus the earlier pending Backups, when killed while re-checking
# them), for one extra write per BATCH Backups (docs/operations.md).
STAMP_BATCH = 100


class _Stamps:
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


def _stamp_batches(cluster: Cluster, location: str, namespace: str, through: str) -> None:
    """Best effort: a failed intermediate stamp only leaves more for a later run to check."""
    try:
        _stamp(cluster, location, namespace, through, {})
    except ClusterError as exc:
        log.warning(
            "cannot stamp finished backups complete",
            extra={"location": location, "error": str(exc)},
        )


def _warn_if_listing_looks_wrong(
    store: BackupStore, existing: list[ClusterBackup], label: str, report: LocationReport
) -> None:
    """An empty listing while the cluster holds this location's finished Backups usually
    means a bucket or prefix that points elsewhere: say which prefix was listed."""
    synced = sum(1 for b in existing if b.location_label == label and b.phase in ORPHAN_PHASES)
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


def _cluster_backups(
    cluster: Cluster, namespace: str, ctx: dict[str, str]
) -> list[ClusterBackup] | None:
    """One paginated list of the namespace's Backups, reduced to what the sync needs.
    None when listing failed: the sync goes on as if the cluster had none (Velero does)."""
    try:
        return [summarize(b) for b in cluster.list(BACKUP, namespace)]
    except ClusterError as exc:
        log.error(
            "cannot list Backups in the cluster; syncing as if it had none",
            extra={**ctx, "error": str(exc)},
        )
        return None


def summarize(backup: Obj) -> ClusterBackup:
    """The fields of a Backup from the API that the sync (and explain) look at."""
    meta = backup.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    return ClusterBackup(
        name=str(meta.get("name", "")),
        location_label=labels.get(rewrite.STORAGE_LOCATION_LABEL),
        phase=rewrite.phase_of(backup),
        uid=str(meta.get("uid", "")),
        dependents_pending=rewrite.DEPENDENTS_PENDING_ANNOTATION in annotations,
        run=str(annotations.get(rewrite.RUN_ANNOTATION) or ""),
    )


# The UID of a Schedule that could not be looked up (compared by identity).
_UNKNOWN = "<lookup failed>"


class _BackupSyncer:
    """Creates one backup and its dependents, or completes the dependents of a Backup an
    interrupted run created. ``handle`` never raises."""

    def __init__(
        self,
        location: str,
        store: BackupStore,
        cluster: Cluster,
        options: SyncOptions,
        stamps: _Stamps,
        complete_through: str,
    ) -> None:
        self._location = location
        self._store = store
        self._cluster = cluster
        self._options = options
        self._stamps = stamps
        self._complete_through = complete_through
        self._schedules: dict[str, str | None] = {}
        self._schedules_lock = threading.Lock()
        self._schedule_locks: dict[str, threading.Lock] = {}

    def handle(self, work: tuple[int, str | ClusterBackup]) -> BackupOutcome:
        """A folder name: sync that backup; a marked Backup: complete its dependents.
        ``work`` is the item with its place in the location's work order."""
        index, item = work
        name = item if isinstance(item, str) else item.name
        outcome = BackupOutcome(name, index=index)
        ctx = {"location": self._location, "backup": name}
        try:
            if isinstance(item, str):
                self._sync(name, outcome, ctx, self._stamps.mark(index))
            else:
                self._complete(item, outcome, ctx)
        except Exception as exc:  # a bug must cost one backup, not the run
            log.exception("unexpected error syncing backup", extra=ctx)
            outcome.errors.append(ItemFailure(self._ref(name), f"unexpected error: {exc!r}"))
        return outcome

    def _ref(self, name: str) -> str:
        return f"Backup {self._options.namespace}/{name}"

    def _sync(self, name: str, outcome: BackupOutcome, ctx: dict[str, str], run_mark: str) -> None:
        problem = rewrite.invalid_name(name)
        if problem:  # never read, let alone create, what no Backup can be named
            outcome.errors.append(
                ItemFailure(f"backup folder {rewrite.shown(name)}", f"folder name {problem}")
            )
            return
        try:
            stored = self._store.backup_metadata(name)
        except (ItemError, StoreError) as exc:
            log.error("cannot read backup metadata", extra={**ctx, "error": str(exc)})
            outcome.errors.append(ItemFailure(self._ref(name), str(exc)))
            return
        if stored is None:
            log.debug("no velero-backup.json, skipping", extra=ctx)
            outcome.skipped = SKIP_NO_METADATA
            return
        stored_name = stored["metadata"].get("name")
        if stored_name != name:
            # Velero would create a Backup under another name, which the next run would
            # then see as an orphan of this folder; refuse instead.
            outcome.errors.append(
                ItemFailure(
                    self._ref(name),
                    f"metadata.name {stored_name!r} does not match its folder {name!r}",
                )
            )
            return
        problem = rewrite.backup_problem(stored)
        if problem:
            outcome.errors.append(ItemFailure(self._ref(name), problem))
            return
        now = self._options.now()
        if rewrite.waiting_and_unexpired(stored, now):
            log.debug("incomplete backup not expired yet, skipping", extra=ctx)
            outcome.skipped = SKIP_NOT_EXPIRED
            return

        if self._options.shutdown.requested:  # create nothing new once asked to stop
            outcome.skipped = SKIP_INTERRUPTED
            return

        dependents = self._read_dependents(name, outcome, ctx)
        backup = rewrite.backup_for_cluster(
            stored,
            self._options.namespace,
            self._location,
            now,
            clear_hooks=self._options.profile.clears_hooks,
        )
        backup["metadata"]["ownerReferences"] = self._owner_references(backup, ctx)
        if not backup["metadata"]["ownerReferences"]:
            del backup["metadata"]["ownerReferences"]
        if not dependents.none:
            annotations = backup["metadata"].get("annotations")
            if not isinstance(annotations, dict):
                annotations = backup["metadata"]["annotations"] = {}
            annotations[rewrite.RUN_ANNOTATION] = run_mark
            self._stamps.used = True
        try:
            created = self._cluster.create(BACKUP, backup)
        except AlreadyExists:
            log.debug("backup already exists in the cluster", extra=ctx)
            outcome.skipped = SKIP_ALREADY_EXISTS
            if not dependents.none:
                self._complete_if_marked(name, dependents, outcome, ctx)
            return
        except ClusterError as exc:
            log.error("cannot create backup", extra={**ctx, "error": str(exc)})
            outcome.errors.append(ItemFailure(self._ref(name), str(exc)))
            return
        outcome.created = True
        log.info("synced backup into the cluster", extra=ctx)
        uid = str((created.get("metadata") or {}).get("uid", ""))
        if not dependents.none:
            self._create_dependents(name, uid, dependents, outcome, ctx, marked=False)

    def _complete(self, backup: ClusterBackup, outcome: BackupOutcome, ctx: dict[str, str]) -> None:
        """The Backup is pending: an earlier run was stopped (or failed) between creating it
        and creating all its dependents. Create them with its real UID."""
        log.info("completing the dependents of a backup created by an earlier run", extra=ctx)
        dependents = self._read_dependents(backup.name, outcome, ctx)
        self._create_dependents(
            backup.name, backup.uid, dependents, outcome, ctx, marked=backup.dependents_pending
        )
        outcome.resumed = not outcome.errors

    def _complete_if_marked(
        self, name: str, dependents: _Dependents, outcome: BackupOutcome, ctx: dict[str, str]
    ) -> None:
        """The create said AlreadyExists. When the Backup carries the mark, it is ours (a
        create whose answer was lost and whose retry found it) or a racing run's; either
        way its dependents are due now, not a run later."""
        try:
            existing = self._cluster.get(BACKUP, name, self._options.namespace)
        except ClusterError as exc:
            log.error("cannot read the existing backup", extra={**ctx, "error": str(exc)})
            outcome.errors.append(ItemFailure(self._ref(name), str(exc)))
            return
        if existing is None:
            return  # deleted meanwhile
        found = summarize(existing)
        # This run's own id counts here: a create of ours whose answer was lost.
        if not found.pending(self._complete_through, "") or found.location_label != (
            rewrite.valid_label(self._location)
        ):
            return  # complete, or another location's to complete
        outcome.skipped = ""
        self._create_dependents(
            name, found.uid, dependents, outcome, ctx, marked=found.dependents_pending
        )
        outcome.resumed = not outcome.errors

    def _read_dependents(
        self, name: str, outcome: BackupOutcome, ctx: dict[str, str]
    ) -> _Dependents:
        """Every dependent file of the folder; a file that cannot be read is an item error
        (and keeps the mark, so the next run tries it again)."""
        found = _Dependents()

        Read = Callable[[str], list[Obj] | StreamedList]

        def read(what: str, get: Read) -> list[Obj] | StreamedList:
            try:
                return get(name)
            except (ItemError, StoreError) as exc:
                log.error(f"cannot read {what}", extra={**ctx, "error": str(exc)})
                outcome.errors.append(ItemFailure(f"{what} of {name}", str(exc)))
                found.unreadable = True
                return []

        found.pod_volume_backups = read("pod volume backups", self._store.pod_volume_backups)
        store, profile = self._store, self._options.profile
        if self._options.csi and profile.syncs_snapshot_classes:
            found.snapshot_classes = read("CSI snapshot classes", store.csi_volume_snapshot_classes)
        if self._options.csi and profile.syncs_snapshot_contents:
            found.snapshot_contents = read(
                "CSI snapshot contents", store.csi_volume_snapshot_contents
            )
        return found

    def _create_dependents(
        self,
        name: str,
        uid: str,
        dependents: _Dependents,
        outcome: BackupOutcome,
        ctx: dict[str, str],
        *,
        marked: bool,
    ) -> None:
        """Create the dependents. When some fail, the Backup gets the pending annotation (a
        later run completes it); when all are in, a ``marked`` Backup loses it."""
        self._pod_volume_backups(name, uid, dependents.pod_volume_backups, outcome, ctx)
        if self._options.csi:
            self._csi_objects(dependents, outcome, ctx)
        if outcome.errors:
            if not marked and not self._mark_pending(name, outcome, ctx):
                outcome.blocks_stamp = True
            return
        if marked:  # else the location's stamp says it, no write of its own
            self._set_pending(name, None, outcome, ctx)

    def _mark_pending(self, name: str, outcome: BackupOutcome, ctx: dict[str, str]) -> bool:
        """Set the pending annotation; False when that failed (an item error too)."""
        return self._set_pending(name, "true", outcome, ctx)

    def _set_pending(
        self, name: str, value: str | None, outcome: BackupOutcome, ctx: dict[str, str]
    ) -> bool:
        """Merge-patch the pending annotation to ``value`` (None removes it); False when the
        patch failed, which is an item error (a Backup deleted meanwhile is not)."""
        key = rewrite.DEPENDENTS_PENDING_ANNOTATION
        patch = {"metadata": {"annotations": {key: value}}}
        try:
            self._cluster.patch_merge(BACKUP, name, self._options.namespace, patch)
        except NotFound:
            log.debug("backup deleted before its pending annotation changed", extra=ctx)
        except ClusterError as exc:
            what = "set" if value else "remove"
            log.error(f"cannot {what} the pending annotation", extra={**ctx, "error": str(exc)})
            consequence = (
                "this run will not be stamped complete, so the next one completes it"
                if value
                else "the next run tries again"
            )
            outcome.errors.append(
                ItemFailure(
                    self._ref(name), f"cannot {what} annotation {key} ({consequence}): {exc}"
                )
            )
            return False
        return True

    def keep_pending(self, backups: list[ClusterBackup], report: LocationReport) -> bool:
        """Backups an unfinished run created whose folders have left the store cannot be
        completed now; they get the pending annotation so that this run's stamp does not
        declare them complete. False when one could not be marked."""
        kept = True
        for backup in backups:
            outcome = BackupOutcome(backup.name)
            ctx = {"location": self._location, "backup": backup.name}
            if not self._mark_pending(backup.name, outcome, ctx):
                kept = False
            report.errors.extend(outcome.errors)
        return kept

    def _owner_references(self, backup: Obj, ctx: dict[str, str]) -> list[Obj]:
        """Keep a Schedule reference when that Schedule exists here with the same UID, or
        when it cannot be looked up (a transient error says nothing about it: Velero main
        keeps it too, #10161). References to other kinds are dropped: Velero keeps them, but
        nothing but a Schedule owns a Backup, and a foreign owner would let the garbage
        collector delete it or block its owner."""
        kept: list[Obj] = []
        refs = backup["metadata"].get("ownerReferences")
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, dict):
                continue
            if ref.get("kind") != "Schedule" or ref.get("apiVersion") != rewrite.VELERO_API_VERSION:
                log.warning(
                    "removing owner reference of a kind that cannot own a Backup",
                    extra={
                        **ctx,
                        "kind": str(ref.get("kind")),
                        "apiVersion": str(ref.get("apiVersion")),
                    },
                )
                continue
            actual = self._schedule_uid(str(ref.get("name", "")), ctx)
            if actual is _UNKNOWN:
                kept.append(ref)
            elif actual is None:
                log.warning(
                    "removing owner reference to missing schedule",
                    extra={**ctx, "schedule": str(ref.get("name"))},
                )
            elif actual != ref.get("uid"):
                log.warning(
                    "removing owner reference to schedule with another UID",
                    extra={**ctx, "schedule": str(ref.get("name")), "uid": actual},
                )
            else:
                kept.append(ref)
        return kept

    def _schedule_uid(self, name: str, ctx: dict[str, str]) -> str | None:
        """The Schedule's UID, _UNKNOWN on lookup error, None when missing; cached per location.
        One lookup per name even when many workers ask at once (a per-name lock)."""
        with self._schedules_lock:
            if name in self._schedules:
                return self._schedules[name]
            name_lock = self._schedule_locks.setdefault(name, threading.Lock())
        with name_lock:
            with self._schedules_lock:
                if name in self._schedules:
                    return self._schedules[name]
            uid: str | None
            try:
                schedule = self._cluster.get(SCHEDULE, name, self._options.namespace)
                uid = None if schedule is None else str(schedule["metadata"].get("uid", ""))
            except ClusterError as exc:
                log.error(
                    "cannot look up schedule of owner reference; keeping the reference",
                    extra={**ctx, "schedule": name, "error": str(exc)},
                )
                uid = _UNKNOWN
            with self._schedules_lock:
                self._schedules[name] = uid
            return uid

    def _pod_volume_backups(
        self,
        name: str,
        uid: str,
        stored: Iterable[Obj],
        outcome: BackupOutcome,
        ctx: dict[str, str],
    ) -> None:
        for pvb in stored:
            pvb_name = rewrite.shown(pvb["metadata"].get("name"))
            ref = f"PodVolumeBackup {self._options.namespace}/{pvb_name}"
            try:
                obj = rewrite.pod_volume_backup_for_cluster(
                    pvb, name, uid, self._options.namespace, self._location
                )
            except ValueError as exc:
                log.error(
                    "refusing pod volume backup", extra={**ctx, "object": ref, "error": str(exc)}
                )
                outcome.errors.append(ItemFailure(ref, str(exc)))
                continue
            if self._create(POD_VOLUME_BACKUP, obj, ref, outcome, ctx):
                outcome.pod_volume_backups += 1

    def _csi_objects(
        self, dependents: _Dependents, outcome: BackupOutcome, ctx: dict[str, str]
    ) -> None:
        name = outcome.name
        for vsclass in dependents.snapshot_classes:
            ref = f"VolumeSnapshotClass {rewrite.shown(vsclass['metadata'].get('name'))}"
            try:
                obj = rewrite.snapshot_class_for_cluster(vsclass)
            except ValueError as exc:
                outcome.errors.append(ItemFailure(ref, str(exc)))
                continue
            if self._create(VOLUME_SNAPSHOT_CLASS, obj, ref, outcome, ctx):
                outcome.csi_snapshot_classes += 1
        for content in dependents.snapshot_contents:
            ref = f"VolumeSnapshotContent {rewrite.shown(content['metadata'].get('name'))}"
            try:
                obj = rewrite.static_snapshot_content(content, name)
            except ValueError as exc:
                outcome.errors.append(ItemFailure(ref, str(exc)))
                continue
            if self._create(VOLUME_SNAPSHOT_CONTENT, obj, ref, outcome, ctx):
                outcome.csi_snapshot_contents += 1

    def _create(
        self, kind: Any, obj: Obj, ref: str, outcome: BackupOutcome, ctx: dict[str, str]
    ) -> bool:
        """Create a dependent object; AlreadyExists is fine. True when created."""
        try:
            self._cluster.create(kind, obj)
            return True
        except AlreadyExists:
            log.debug("already exists in the cluster", extra={**ctx, "object": ref})
            return False
        except ClusterError as exc:
            log.error("cannot create object", extra={**ctx, "object": ref, "error": str(exc)})
            outcome.errors.append(ItemFailure(ref, str(exc)))
            return False


def _fold(report: LocationReport, outcome: BackupOutcome) -> None:
    report.created += outcome.created
    report.resumed += outcome.resumed
    if outcome.skipped:
        report.skip(outcome.skipped, outcome.name)
    report.pod_volume_backups += outcome.pod_volume_backups
    report.csi_snapshot_classes += outcome.csi_snapshot_classes
    report.csi_snapshot_contents += outcome.csi_snapshot_contents
    report.errors.extend(outcome.errors)


def orphans_of(location: str, existing: Iterable[ClusterBackup], in_store: set[str]) -> list[str]:
    """Backups labelled with this location, Completed or PartiallyFailed, and absent from
    the store listing."""
    label = rewrite.valid_label(location)
    return sorted(
        b.name
        for b in existing
        if b.location_label == label and b.phase in ORPHAN_PHASES and b.name not in in_store
    )


def _delete_orphans(
    location: str,
    existing: list[ClusterBackup] | None,
    in_store: set[str],
    cluster: Cluster,
    options: SyncOptions,
    report: LocationReport,
) -> None:
    ctx = {"location": location}
    if existing is None:
        # The first listing failed; list this location's Backups as Velero does.
        selector = f"{rewrite.STORAGE_LOCATION_LABEL}={rewrite.valid_label(location)}"
        try:
            existing = [summarize(b) for b in cluster.list(BACKUP, options.namespace, selector)]
        except ClusterError as exc:
            log.error("cannot list Backups; deleting no orphans", extra={**ctx, "error": str(exc)})
            report.errors.append(ItemFailure(f"Backups of location {location}", str(exc)))
            return
    orphans = orphans_of(location, existing, in_store)
    if _mass_deletion_blocked(location, existing, orphans, options.guard, report):
        return
    for name in orphans:
        bctx = {**ctx, "backup": name}
        try:
            cluster.delete(BACKUP, name, options.namespace)
        except NotFound:
            continue  # someone else deleted it first
        except ClusterError as exc:
            log.error("cannot delete orphaned backup", extra={**bctx, "error": str(exc)})
            report.errors.append(ItemFailure(f"Backup {options.namespace}/{name}", str(exc)))
            continue
        report.orphans_deleted += 1
        log.info("deleted orphaned backup (not in the backup store)", extra=bctx)
        if options.csi and options.profile.cleans_up_csi_of_orphans:
            _delete_csi_snapshots(name, cluster, options.namespace, report, bctx)


def _mass_deletion_blocked(
    location: str,
    existing: list[ClusterBackup],
    orphans: list[str],
    guard: MassDeletionGuard,
    report: LocationReport,
) -> bool:
    """Apply the mass-deletion guard to this location's orphans; True when it blocks."""
    label = rewrite.valid_label(location)
    location_backups = sum(1 for b in existing if b.location_label == label)
    ctx = {"location": location, "orphans": len(orphans), "locationBackups": location_backups}
    reason = guard.blocked_reason(len(orphans), location_backups)
    if reason:
        log.error("mass deletion guard: deleting no orphaned backups", extra={**ctx, "why": reason})
        report.orphans_blocked = len(orphans)
        report.mass_deletion_blocked = reason
        return True
    if guard.trips(len(orphans), location_backups):
        log.warning("deleting a mass of orphaned backups, as allowed by the operator", extra=ctx)
    return False


def _delete_csi_snapshots(
    backup: str, cluster: Cluster, namespace: str, report: LocationReport, ctx: dict[str, str]
) -> None:
    """The orphan's VolumeSnapshots in the Velero namespace, then its VolumeSnapshotContents
    that no live VolumeSnapshot outside that namespace is bound to.

    Velero's manager cache sees only its own namespace, so a running Velero never deletes
    snapshots elsewhere; and its restore labels the snapshots it restores into application
    namespaces with the same backup name. A content bound to one of those is the
    application's data: with ``deletionPolicy: Delete`` its deletion deletes the cloud
    snapshot."""
    selector = f"{rewrite.BACKUP_NAME_LABEL}={rewrite.valid_label(backup)}"
    try:
        snapshots = list(cluster.list(VOLUME_SNAPSHOT, namespace, selector))
    except ClusterError as exc:
        report.errors.append(ItemFailure(f"VolumeSnapshots of {backup}", str(exc)))
        snapshots = []
    for vs in snapshots:
        name = str((vs.get("metadata") or {}).get("name"))
        try:
            cluster.delete(VOLUME_SNAPSHOT, name, namespace)
        except NotFound:
            pass
        except ClusterError as exc:
            report.errors.append(ItemFailure(f"VolumeSnapshot {namespace}/{name}", str(exc)))
    try:
        contents = list(cluster.list(VOLUME_SNAPSHOT_CONTENT, None, selector))
    except ClusterError as exc:
        log.warning("cannot list snapshot contents", extra={**ctx, "error": str(exc)})
        report.errors.append(ItemFailure(f"VolumeSnapshotContents of {backup}", str(exc)))
        return
    for content in contents:
        name = str((content.get("metadata") or {}).get("name"))
        ref = f"VolumeSnapshotContent {name}"
        try:
            bound = _bound_outside(content, namespace, cluster)
        except ClusterError as exc:
            report.errors.append(
                ItemFailure(ref, f"kept: cannot check the VolumeSnapshot bound to it: {exc}")
            )
            continue
        if bound:
            log.info(
                "keeping snapshot content bound to a live VolumeSnapshot outside the Velero "
                "namespace",
                extra={**ctx, "object": ref, "volumeSnapshot": bound},
            )
            continue
        try:
            cluster.delete(VOLUME_SNAPSHOT_CONTENT, name, None)
        except NotFound:
            pass
        except ClusterError as exc:
            log.warning("cannot delete snapshot content", extra={**ctx, "error": str(exc)})
            report.errors.append(ItemFailure(ref, str(exc)))


def _bound_outside(content: Obj, namespace: str, cluster: Cluster) -> str:
    """``ns/name`` of the live VolumeSnapshot outside ``namespace`` that the content's
    ``spec.volumeSnapshotRef`` names, or "" when there is none. Raises ClusterError when
    that cannot be known."""
    spec = content.get("spec")
    ref = spec.get("volumeSnapshotRef") if isinstance(spec, dict) else None
    if not isinstance(ref, dict):
        return ""
    ref_ns, ref_name = ref.get("namespace"), ref.get("name")
    if not ref_ns or not ref_name or ref_ns == namespace:
        return ""
    if cluster.get(VOLUME_SNAPSHOT, str(ref_name), str(ref_ns)) is None:
        return ""
    return f"{ref_ns}/{ref_name}"


def patch_last_synced(
    cluster: Cluster, name: str, namespace: str, stamp: str, complete_through: str | None = None
) -> None:
    """Merge-patch ``status.lastSyncedTime`` (and, given ``complete_through``, the run id
    that the location's Backups are complete through). Velero's BSL CRD has no status
    subresource, so the main resource takes it; when a CRD has one, the server drops the
    status part of that patch, and the /status subresource gets it instead."""
    status: Obj = {"status": {"lastSyncedTime": stamp}}
    patched = _stamp(cluster, name, namespace, complete_through, status)
    if (patched.get("status") or {}).get("lastSyncedTime") != stamp:
        cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, status, subresource="status")


_STAMP_ATTEMPTS = 3


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
            meta = current.get("metadata") or {}
            seen = str(
                (meta.get("annotations") or {}).get(rewrite.COMPLETE_THROUGH_ANNOTATION) or ""
            )
            if seen >= through:
                through = None  # a later run got there first
            else:
                patch["metadata"] = {
                    "annotations": {rewrite.COMPLETE_THROUGH_ANNOTATION: through},
                    **(
                        {"resourceVersion": meta["resourceVersion"]}
                        if meta.get("resourceVersion")
                        else {}
                    ),
                }
        if not patch:
            return {}
        try:
            return cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, patch)
        except ClusterError as exc:
            if exc.status != 409 or through is None:
                raise
    # Still racing: the status, without a stamp (a later run checks those Backups again).
    return cluster.patch_merge(BACKUP_STORAGE_LOCATION, name, namespace, rest) if rest else {}


def bounded_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, shutdown: Shutdown = NEVER
) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` threads, with at most 2*workers in flight, so
    100,000 backups never mean 100,000 futures. Results come in completion order.

    Once termination is requested no new item is started; the running ones get until the
    grace period ends, and whatever is still running then is abandoned (the caller sees
    fewer results than items)."""
    iterator = iter(items)
    if workers <= 1:
        for item in iterator:
            if shutdown.requested:
                return
            yield fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync")
    pending: set[Future[R]] = set()
    try:
        while not shutdown.requested:
            # Wait for a free slot before taking the next item, so a lazy source is never
            # read more than 2*workers ahead of the results.
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, _POLL_SECONDS, FIRST_COMPLETED)
                yield from _results(done)
                continue
            try:
                item = next(iterator)
            except StopIteration:
                break
            pending.add(pool.submit(fn, item))
        while pending:
            if shutdown.requested:
                for future in pending:
                    future.cancel()  # queued, not started: never start it
                if shutdown.remaining() <= 0:
                    log.warning(
                        "grace period over: abandoning work in flight",
                        extra={"inFlight": sum(not f.done() for f in pending)},
                    )
                    return
            timeout = min(_POLL_SECONDS, shutdown.remaining())
            done, pending = wait(pending, timeout, FIRST_COMPLETED)
            yield from _results(done)
    finally:
        # After an abandon the threads are left running; the process exits without them.
        pool.shutdown(wait=not pending, cancel_futures=True)


_POLL_SECONDS = 0.2


def _results(done: Iterable[Future[R]]) -> Iterator[R]:
    return (f.result() for f in done if not f.cancelled())
