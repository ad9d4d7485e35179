"""One backup of a location at a time (on the pool's threads): create the Backup from its
folder in the store with its dependents (pod volume backups and, per profile, CSI objects),
or complete the dependents of a Backup an earlier run left pending. Everything that happens
to a backup lands in its BackupOutcome: the entry points never raise."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker import rewrite, velero
from worker.cluster import Cluster
from worker.cluster_backups import ClusterBackup, summarize
from worker.errors import AlreadyExists, ClusterError, ItemError, NotFound, StoreError
from worker.report import (
    SKIP_ALREADY_EXISTS,
    SKIP_INTERRUPTED,
    SKIP_NO_METADATA,
    SKIP_NOT_EXPIRED,
    ItemFailure,
    LocationReport,
)
from worker.stamps import Stamps
from worker.storage.layout import BackupStore, StreamedList
from worker.sync_options import SyncOptions
from worker.velero import (
    BACKUP,
    DEPENDENTS_PENDING_ANNOTATION,
    POD_VOLUME_BACKUP,
    SCHEDULE,
    VELERO_API_VERSION,
    VOLUME_SNAPSHOT_CLASS,
    VOLUME_SNAPSHOT_CONTENT,
    Kind,
    Obj,
)

log = logging.getLogger(__name__)

# The UID of a Schedule that could not be looked up (compared by identity).
_UNKNOWN = "<lookup failed>"


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


class _ContextLog(logging.LoggerAdapter[logging.Logger]):
    """Adds its context to every line, before the line's own ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class _Task:
    """One backup being synced: its outcome, a log that names it, and ``error()``."""

    __slots__ = ("log", "name", "outcome", "ref")

    def __init__(self, location: str, namespace: str, name: str, index: int = 0) -> None:
        self.name = name
        self.outcome = BackupOutcome(name, index=index)
        # shown(): a folder name no Backup can have may hold newlines or megabytes.
        self.log = _ContextLog(log, {"location": location, "backup": rewrite.shown(name)})
        self.ref = f"Backup {namespace}/{name}"

    def error(self, message: str, reason: object, ref: str = "") -> None:
        """Log ``message`` and record an item failure of ``ref`` (default: this Backup)."""
        context = {"object": ref} if ref else {}
        self.log.error(message, extra={**context, "error": str(reason)})
        self.outcome.errors.append(ItemFailure(ref or self.ref, str(reason)))


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


@dataclass
class BackupSyncer:
    """The backups of one location: ``sync`` one from its folder, ``complete`` one an
    earlier run left pending, ``keep_pending`` those that cannot be completed now."""

    location: str
    store: BackupStore
    cluster: Cluster
    options: SyncOptions
    stamps: Stamps
    complete_through: str  # the run id through which the location's runs completed
    _schedules: dict[str, str | None] = field(default_factory=dict, init=False)
    _schedules_lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _schedule_locks: dict[str, threading.Lock] = field(default_factory=dict, init=False)

    def sync(self, index: int, name: str) -> BackupOutcome:
        """Create the backup of folder ``name`` and its dependents; ``index`` is its place
        in the location's work order."""
        with self._task(index, name) as task:
            self._sync(task, self.stamps.mark(index))
        return task.outcome

    def complete(self, index: int, backup: ClusterBackup) -> BackupOutcome:
        """The Backup is pending: an earlier run was stopped (or failed) between creating it
        and creating all its dependents. Create them with its real UID."""
        with self._task(index, backup.name) as task:
            task.log.info("completing the dependents of a backup created by an earlier run")
            dependents = self._read_dependents(task)
            self._create_dependents(task, backup.uid, dependents, marked=backup.dependents_pending)
            task.outcome.resumed = not task.outcome.errors
        return task.outcome

    def keep_pending(self, backups: list[ClusterBackup], report: LocationReport) -> bool:
        """Backups an unfinished run created whose folders have left the store cannot be
        completed now; they get the pending annotation so that this run's stamp does not
        declare them complete. False when one could not be marked."""
        kept = True
        for backup in backups:
            task = _Task(self.location, self.options.namespace, backup.name)
            if not self._set_pending(task, True):
                kept = False
            report.errors.extend(task.outcome.errors)
        return kept

    @contextmanager
    def _task(self, index: int, name: str) -> Iterator[_Task]:
        """The task of one backup, whatever its work raises."""
        task = _Task(self.location, self.options.namespace, name, index)
        try:
            yield task
        except Exception as exc:  # a bug must cost one backup, not the run
            task.log.exception("unexpected error syncing backup")
            task.outcome.errors.append(ItemFailure(task.ref, f"unexpected error: {exc!r}"))

    def _sync(self, task: _Task, run_mark: str) -> None:
        stored = self._stored_backup(task)
        if stored is None:
            return
        now = self.options.now()
        if rewrite.waiting_and_unexpired(stored, now):
            task.log.debug("incomplete backup not expired yet, skipping")
            task.outcome.skipped = SKIP_NOT_EXPIRED
            return
        if self.options.shutdown.requested:  # create nothing new once asked to stop
            task.outcome.skipped = SKIP_INTERRUPTED
            return
        dependents = self._read_dependents(task)
        backup = self._backup_for_cluster(task, stored, now)
        if not dependents.none:
            backup = rewrite.with_run_mark(backup, run_mark)
            self.stamps.used = True
        self._create_backup(task, backup, dependents)

    def _stored_backup(self, task: _Task) -> Obj | None:
        """The folder's velero-backup.json, or None when there is none to create (the
        outcome says why: a skip or an item error)."""
        name = task.name
        problem = rewrite.invalid_name(name)
        if problem:  # never read, let alone create, what no Backup can be named
            folder = f"backup folder {rewrite.shown(name)}"
            task.error("refusing backup folder", f"folder name {problem}", ref=folder)
            return None
        try:
            stored = self.store.backup_metadata(name)
        except (ItemError, StoreError) as exc:
            task.error("cannot read backup metadata", exc)
            return None
        if stored is None:
            task.log.debug("no velero-backup.json, skipping")
            task.outcome.skipped = SKIP_NO_METADATA
            return None
        stored_name = stored["metadata"].get("name")
        if stored_name != name:
            # Velero would create a Backup under another name, which the next run would
            # then see as an orphan of this folder; refuse instead.
            mismatch = f"metadata.name {stored_name!r} does not match its folder {name!r}"
            task.error("refusing backup", mismatch)
            return None
        problem = rewrite.backup_problem(stored)
        if problem:
            task.error("refusing backup", problem)
            return None
        return stored

    def _backup_for_cluster(self, task: _Task, stored: Obj, now: datetime) -> Obj:
        backup = rewrite.backup_for_cluster(
            stored,
            self.options.namespace,
            self.location,
            now,
            clear_hooks=self.options.profile.clears_hooks,
        )
        refs = self._owner_references(task, backup)
        if refs:
            backup["metadata"]["ownerReferences"] = refs
        else:
            backup["metadata"].pop("ownerReferences", None)
        return backup

    def _create_backup(self, task: _Task, backup: Obj, dependents: _Dependents) -> None:
        try:
            created = self.cluster.create(BACKUP, backup)
        except AlreadyExists:
            task.log.debug("backup already exists in the cluster")
            task.outcome.skipped = SKIP_ALREADY_EXISTS
            if not dependents.none:
                self._complete_if_marked(task, dependents)
            return
        except ClusterError as exc:
            task.error("cannot create backup", exc)
            return
        task.outcome.created = True
        task.log.info("synced backup into the cluster")
        if not dependents.none:
            uid = str(velero.metadata(created).get("uid", ""))
            self._create_dependents(task, uid, dependents, marked=False)

    def _complete_if_marked(self, task: _Task, dependents: _Dependents) -> None:
        """The create said AlreadyExists. When the Backup carries the mark, it is ours (a
        create whose answer was lost and whose retry found it) or a racing run's; either
        way its dependents are due now, not a run later."""
        try:
            existing = self.cluster.get(BACKUP, task.name, self.options.namespace)
        except ClusterError as exc:
            task.error("cannot read the existing backup", exc)
            return
        if existing is None:
            return  # deleted meanwhile
        found = summarize(existing)
        # This run's own id counts here: a create of ours whose answer was lost.
        if not found.pending(self.complete_through, "") or found.location_label != (
            rewrite.valid_label(self.location)
        ):
            return  # complete, or another location's to complete
        task.outcome.skipped = ""
        self._create_dependents(task, found.uid, dependents, marked=found.dependents_pending)
        task.outcome.resumed = not task.outcome.errors

    def _read_dependents(self, task: _Task) -> _Dependents:
        """Every dependent file of the folder; a file that cannot be read is an item error
        (and keeps the mark, so the next run tries it again)."""
        found = _Dependents()

        Read = Callable[[str], list[Obj] | StreamedList]

        def read(what: str, get: Read) -> list[Obj] | StreamedList:
            try:
                return get(task.name)
            except (ItemError, StoreError) as exc:
                task.error(f"cannot read {what}", exc, ref=f"{what} of {task.name}")
                found.unreadable = True
                return []

        found.pod_volume_backups = read("pod volume backups", self.store.pod_volume_backups)
        store, profile = self.store, self.options.profile
        if self.options.csi and profile.syncs_snapshot_classes:
            found.snapshot_classes = read("CSI snapshot classes", store.csi_volume_snapshot_classes)
        if self.options.csi and profile.syncs_snapshot_contents:
            found.snapshot_contents = read(
                "CSI snapshot contents", store.csi_volume_snapshot_contents
            )
        return found

    def _create_dependents(
        self, task: _Task, uid: str, dependents: _Dependents, *, marked: bool
    ) -> None:
        """Create the dependents. When some fail, the Backup gets the pending annotation (a
        later run completes it); when all are in, a ``marked`` Backup loses it."""
        outcome, namespace = task.outcome, self.options.namespace

        def pod_volume_backup(pvb: Obj) -> Obj:
            return rewrite.pod_volume_backup_for_cluster(
                pvb, task.name, uid, namespace, self.location
            )

        def snapshot_content(content: Obj) -> Obj:
            return rewrite.static_snapshot_content(content, task.name)

        pvbs = dependents.pod_volume_backups
        for _ in self._created(task, POD_VOLUME_BACKUP, pvbs, pod_volume_backup):
            outcome.pod_volume_backups += 1
        if self.options.csi:
            classes, contents = dependents.snapshot_classes, dependents.snapshot_contents
            convert = rewrite.snapshot_class_for_cluster
            for _ in self._created(task, VOLUME_SNAPSHOT_CLASS, classes, convert):
                outcome.csi_snapshot_classes += 1
            for _ in self._created(task, VOLUME_SNAPSHOT_CONTENT, contents, snapshot_content):
                outcome.csi_snapshot_contents += 1
        if outcome.errors:
            if not marked and not self._set_pending(task, True):
                outcome.blocks_stamp = True
            return
        if marked:  # else the location's stamp says it, no write of its own
            self._set_pending(task, False)

    def _created(
        self, task: _Task, kind: Kind, stored: Iterable[Obj], rewritten: Callable[[Obj], Obj]
    ) -> Iterator[str]:
        """Create each stored object as ``rewritten`` for this cluster, yielding each one
        created. One it refuses (ValueError) or the cluster fails is an item error."""
        where = f"{self.options.namespace}/" if kind.namespaced else ""
        for obj in stored:
            ref = f"{kind.kind} {where}{rewrite.shown(obj['metadata'].get('name'))}"
            try:
                new = rewritten(obj)
            except ValueError as exc:
                task.error(f"refusing {kind.kind}", exc, ref=ref)
                continue
            if self._create(task, kind, new, ref):
                yield ref

    def _create(self, task: _Task, kind: Kind, obj: Obj, ref: str) -> bool:
        """Create a dependent object; AlreadyExists is fine. True when created."""
        try:
            self.cluster.create(kind, obj)
            return True
        except AlreadyExists:
            task.log.debug("already exists in the cluster", extra={"object": ref})
            return False
        except ClusterError as exc:
            task.error("cannot create object", exc, ref=ref)
            return False

    def _set_pending(self, task: _Task, pending: bool) -> bool:
        """Set (``pending``) or remove the dependents-pending mark; False when the patch
        failed, which is an item error (a Backup deleted meanwhile is not)."""
        patch = rewrite.pending_mark_patch(pending)
        try:
            self.cluster.patch_merge(BACKUP, task.name, self.options.namespace, patch)
        except NotFound:
            task.log.debug("backup deleted before its pending annotation changed")
        except ClusterError as exc:
            what = "set" if pending else "remove"
            consequence = (
                "this run will not be stamped complete, so the next one completes it"
                if pending
                else "the next run tries again"
            )
            key = DEPENDENTS_PENDING_ANNOTATION
            task.error(
                f"cannot {what} the pending annotation",
                f"cannot {what} annotation {key} ({consequence}): {exc}",
            )
            return False
        return True

    def _owner_references(self, task: _Task, backup: Obj) -> list[Obj]:
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
            if ref.get("kind") != SCHEDULE.kind or ref.get("apiVersion") != VELERO_API_VERSION:
                task.log.warning(
                    "removing owner reference of a kind that cannot own a Backup",
                    extra={"kind": str(ref.get("kind")), "apiVersion": str(ref.get("apiVersion"))},
                )
                continue
            actual = self._schedule_uid(task, str(ref.get("name", "")))
            if actual is _UNKNOWN:
                kept.append(ref)
            elif actual is None:
                task.log.warning(
                    "removing owner reference to missing schedule",
                    extra={"schedule": str(ref.get("name"))},
                )
            elif actual != ref.get("uid"):
                task.log.warning(
                    "removing owner reference to schedule with another UID",
                    extra={"schedule": str(ref.get("name")), "uid": actual},
                )
            else:
                kept.append(ref)
        return kept

    def _schedule_uid(self, task: _Task, name: str) -> str | None:
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
                schedule = self.cluster.get(SCHEDULE, name, self.options.namespace)
                uid = None if schedule is None else str(schedule["metadata"].get("uid", ""))
            except ClusterError as exc:
                task.log.error(
                    "cannot look up schedule of owner reference; keeping the reference",
                    extra={"schedule": name, "error": str(exc)},
                )
                uid = _UNKNOWN
            with self._schedules_lock:
                self._schedules[name] = uid
            return uid
