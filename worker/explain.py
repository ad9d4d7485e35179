"""``backup-sync explain NAME``: why a backup is, or is not, in the cluster.

Read-only, with the reads of a dry run: per location (default first), the location's own
state, what its store holds under that name (the exact keys read), what the cluster holds,
and what the next run would do with it. One verdict first, the evidence after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker import rewrite, velero
from worker.cluster import Cluster
from worker.cluster_backups import summarize
from worker.errors import ClusterError, ConfigError, ItemError, LocationError
from worker.locations import due_check, name_of, order_default_first, selected
from worker.orphans import orphan_plan
from worker.profile import VeleroProfile
from worker.settings import Settings
from worker.storage.layout import MAX_METADATA_BYTES, BackupStore
from worker.velero import BACKUP, SCHEDULE, Obj, phase_of

# (location) -> the opened store (close it); raises ConfigError, LocationError
OpenStore = Callable[[Obj], BackupStore]

EXIT_NOT_FOUND = 4


@dataclass(slots=True)
class Finding:
    """What one location says about the backup."""

    location: str
    verdict: str = ""
    found: bool = False  # in this location's store or as a Backup of this location
    evidence: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        self.evidence.append(line)


@dataclass(slots=True)
class Explanation:
    backup: str
    profile: VeleroProfile
    in_cluster: Obj | None  # the Backup of that name in the Velero namespace
    findings: list[Finding] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.in_cluster is not None or any(f.found for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 0 if self.found else EXIT_NOT_FOUND

    def render(self, fmt: str) -> str:
        if fmt == "json":
            return json.dumps(
                {
                    "backup": self.backup,
                    "found": self.found,
                    "veleroProfile": {"version": self.profile.name, "source": self.profile.source},
                    "locations": [
                        {"location": f.location, "verdict": f.verdict, "evidence": f.evidence}
                        for f in self.findings
                    ],
                }
            )
        lines = [f"backup {self.backup} (Velero {self.profile.name} profile)"]
        if not self.findings:
            lines.append("no backup storage location to look in")
        for finding in self.findings:
            lines.append(f"location {finding.location}: {finding.verdict}")
            lines += [f"  {line}" for line in finding.evidence]
        if not self.found:
            lines.append(f"{self.backup} was found in no location and not in the cluster")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Explainer:
    """The reads behind ``explain``: the cluster, a store opener, the profile, the clock."""

    settings: Settings
    cluster: Cluster
    open_store: OpenStore
    profile: VeleroProfile
    now: datetime

    def explain(self, name: str, locations: list[Obj]) -> Explanation:
        namespace = self.settings.namespace
        backup = self.cluster.get(BACKUP, name, namespace)
        result = Explanation(name, self.profile, backup)
        for location in order_default_first(selected(locations, self.settings.locations)):
            result.findings.append(self._location(name, location, backup))
        return result

    def _location(self, name: str, location: Obj, backup: Obj | None) -> Finding:
        finding = Finding(name_of(location))
        state = self._location_state(location, finding)
        try:
            store = self.open_store(location)
        except (ConfigError, LocationError, ClusterError) as exc:
            finding.verdict = f"cannot tell: the location's store cannot be opened: {exc}"
            return finding
        try:
            in_store = self._store_side(name, store, finding)
        except LocationError as exc:
            finding.verdict = f"cannot tell: the store cannot be read: {exc}"
            return finding
        finally:
            store.close()
        finding.found = in_store is not None or _ours(backup, location)
        if backup is not None:
            finding.note(
                f"a Backup {name} is in the cluster, labelled for location "
                f"{_label(backup) or '(none)'}, phase {phase_of(backup) or '(none)'}"
            )
        finding.verdict = self._verdict(location, state, in_store, backup, store)
        return finding

    def _location_state(self, location: Obj, finding: Finding) -> str:
        """Why the location would not run now ("" when it would), noted as evidence."""
        try:
            due = due_check(location, self.settings.default_sync_period, self.now, False)
        except ConfigError as exc:
            finding.note(f"location: {exc}")
            return f"location {finding.location} has a configuration error"
        finding.note(f"location: {due.reason}")
        if due.disabled:
            return f"location {finding.location} is disabled (backupSyncPeriod 0)"
        phase = velero.status(location).get("phase") or ""
        if self.profile.requires_available_location and phase != velero.LOCATION_PHASE_AVAILABLE:
            finding.note(f"location: status.phase {phase!r}")
            return (
                f"location {finding.location} is not Available (phase {phase!r}) and Velero "
                f"{self.profile.name} skips it"
            )
        return "" if due.due else f"location {finding.location} is {due.reason}"

    def _store_side(self, name: str, store: BackupStore, finding: Finding) -> Obj | str | None:
        """The stored Backup; a string saying why it cannot be used; None when the store has
        no folder of that name. Raises LocationError when the store cannot be listed."""
        folder = store.backups_dir + name + "/"
        if not store.has_folder(name):
            finding.note(f"store: no folder {folder}")
            return None
        key = store.metadata_key(name)
        try:
            stored = store.backup_metadata(name)
        except ItemError as exc:
            finding.note(f"store: read {key}: {exc} (cap {MAX_METADATA_BYTES} bytes)")
            return f"its velero-backup.json cannot be used: {exc}"
        if stored is None:
            finding.note(f"store: folder {folder} has no {key}")
            return f"no velero-backup.json in {folder}"
        finding.note(f"store: read {key}: a Backup, phase {phase_of(stored) or '(none)'}")
        self._dependents(name, store, finding)
        self._owners(stored, finding)
        return stored

    def _dependents(self, name: str, store: BackupStore, finding: Finding) -> None:
        reads: list[tuple[str, Callable[[str], Any]]] = [
            ("pod volume backups", store.pod_volume_backups)
        ]
        if self.settings.csi_enabled and self.profile.syncs_snapshot_classes:
            reads.append(("CSI snapshot classes", store.csi_volume_snapshot_classes))
        if self.settings.csi_enabled and self.profile.syncs_snapshot_contents:
            reads.append(("CSI snapshot contents", store.csi_volume_snapshot_contents))
        for what, read in reads:
            try:
                finding.note(f"store: {what}: {sum(1 for _ in read(name))}")
            except (ItemError, LocationError) as exc:
                finding.note(f"store: {what} cannot be read: {exc}")

    def _owners(self, stored: Obj, finding: Finding) -> None:
        refs = velero.metadata(stored).get("ownerReferences")
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, dict) or ref.get("kind") != SCHEDULE.kind:
                finding.note(f"owner {ref!r}: dropped (only a Schedule may own a Backup)")
                continue
            schedule = str(ref.get("name", ""))
            try:
                found = self.cluster.get(SCHEDULE, schedule, self.settings.namespace)
            except ClusterError as exc:
                finding.note(f"owner Schedule {schedule}: kept (cannot look it up: {exc})")
                continue
            if found is None:
                finding.note(f"owner Schedule {schedule}: dropped (no such Schedule here)")
            elif velero.metadata(found).get("uid") != ref.get("uid"):
                finding.note(f"owner Schedule {schedule}: dropped (another UID here)")
            else:
                finding.note(f"owner Schedule {schedule}: kept (same UID here)")

    def _verdict(
        self,
        location: Obj,
        state: str,
        in_store: Obj | str | None,
        backup: Obj | None,
        store: BackupStore,
    ) -> str:
        where = f"location {name_of(location)}"
        ours = _ours(backup, location)
        if isinstance(in_store, str):
            return f"will not sync: {in_store}"
        if in_store is not None:
            if backup is not None:
                return _present(backup, ours, where, location)
            problem = self._why_not(in_store)
            if problem:
                return f"will not sync: {problem}"
            verdict = f"would be created on the next run of {where}"
            return verdict + (f"; but {state}" if state else "")
        if backup is None or not ours:
            return f"not in {where}"
        return self._orphan(backup, state, location, store)

    def _why_not(self, stored: Obj) -> str:
        phase = phase_of(stored)
        problem = rewrite.backup_problem(stored)
        if problem:
            return f"phase {phase or '(none)'} in the store ({problem})"
        if rewrite.waiting_and_unexpired(stored, self.now):
            expiration = velero.status(stored).get("expiration") or "unset"
            return f"phase {phase} until it expires (expiration {expiration})"
        return ""

    def _orphan(self, backup: Obj, state: str, location: Obj, store: BackupStore) -> str:
        """The sync's own orphan plan (worker.orphans), for this one Backup of ours."""
        where = f"location {name_of(location)}"
        phase = phase_of(backup)
        if phase not in velero.ORPHAN_PHASES:
            return f"not in {where}'s store, but kept: phase {phase or '(none)'} is never deleted"
        listed = set(store.list_backups())
        selector = f"{_SELECTOR}={_label(backup)}"
        backups = [
            summarize(b) for b in self.cluster.list(BACKUP, self.settings.namespace, selector)
        ]
        plan = orphan_plan(backups, listed, name_of(location), self.settings.guard)
        if plan.why:
            return (
                f"absent from {where}'s store: an orphan, but the mass-deletion guard keeps it "
                f"({len(plan.blocked)} of {plan.location_backups} Backups of the location are "
                "orphans)"
            )
        verdict = f"would be deleted as an orphan on the next run of {where}"
        return verdict + (f"; but {state}" if state else "")


def _present(backup: Obj, ours: bool, where: str, location: Obj) -> str:
    if not ours:
        return f"in the cluster already, from location {_label(backup) or '(none)'}: skipped here"
    stamp = velero.annotations_of(location).get(velero.COMPLETE_THROUGH_ANNOTATION, "")
    if summarize(backup).pending(str(stamp), ""):
        return f"in the cluster, synced by {where}; its dependents are completed on its next run"
    return f"in the cluster, synced by {where}"


_SELECTOR = velero.STORAGE_LOCATION_LABEL


def _ours(backup: Obj | None, location: Obj) -> bool:
    """The Backup in the cluster is labelled for this location."""
    return backup is not None and _label(backup) == rewrite.valid_label(name_of(location))


def _label(backup: Obj) -> str:
    return str(velero.labels_of(backup).get(_SELECTOR) or "")
