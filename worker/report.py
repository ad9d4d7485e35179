"""What a run did, per location: counts, skips with reasons, failures, the dry-run plan;
rendered as one text line per location or one JSON document; and the exit code."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from worker.locations import Shard
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.ratelimit import RateLimit

EXIT_OK = 0
EXIT_LOCATION_FAILED = 1
EXIT_CONFIG = 2
EXIT_ITEMS_FAILED = 3


class Outcome(StrEnum):
    SYNCED = "synced"
    FAILED = "failed"  # store/listing/cluster failure: exit 1
    CONFIG_ERROR = "config-error"  # this location's configuration is wrong: exit 2
    NOT_DUE = "not-due"
    DISABLED = "disabled"  # backupSyncPeriod 0
    # Velero >= 1.16.2 skips a location whose status.phase is not Available: its own verdict
    # on the location, not a failure of this run (exit 0).
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One object that could not be synced, and why."""

    object: str  # e.g. "Backup velero/nightly-1" or a bucket key
    reason: str


SKIPPED_NAMES = 100

# The summary may be printed while an abandoned run's thread still records skips (after
# the grace period): a skip is two writes, and the summary is rendered from one snapshot
# taken under this lock, never from a state halfway between. One lock for all reports:
# each write under it is a few dict operations.
_SNAPSHOT = threading.Lock()

# Skip reasons, as they appear in summaries.
SKIP_ALREADY_EXISTS = "already exists"
SKIP_NO_METADATA = "no velero-backup.json"
SKIP_NOT_EXPIRED = "waiting or finalizing, not expired"
SKIP_INTERRUPTED = "interrupted"


@dataclass(slots=True)
class LocationReport:
    name: str
    provider: str = ""
    # The effective backupSyncPeriod (0: sync disabled); None when it does not parse.
    sync_period: timedelta | None = None
    outcome: Outcome = Outcome.SYNCED
    reason: str = ""
    listed: int = 0
    in_cluster: int = 0
    to_sync: int = 0
    created: int = 0
    resumed: int = 0  # Backups found carrying the in-progress mark, now with their dependents
    skipped: Counter[str] = field(default_factory=Counter)
    # The first SKIPPED_NAMES backups per skip reason, so a user finds one without debug logs.
    skipped_names: dict[str, list[str]] = field(default_factory=dict)
    pod_volume_backups: int = 0
    csi_snapshot_classes: int = 0
    csi_snapshot_contents: int = 0
    orphans_deleted: int = 0
    orphans_blocked: int = 0  # orphans left in place by the mass-deletion guard
    mass_deletion_blocked: str = ""  # the guard's reason, "" when it did not trip
    errors: list[ItemFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # worth a look, not a failure
    plan: list[str] = field(default_factory=list)
    status_patched: bool = False
    seconds: float = 0.0

    @property
    def items_failed(self) -> bool:
        """Something within a synced location needs attention (exit 3)."""
        return bool(self.errors or self.mass_deletion_blocked)

    @property
    def ran(self) -> bool:
        return self.outcome in (Outcome.SYNCED, Outcome.FAILED)

    def set_outcome(self, outcome: Outcome, reason: str) -> None:
        """Failed, misconfigured, or not run (not due, disabled, unavailable), and why."""
        self.outcome = outcome
        self.reason = reason

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def skip(self, reason: str, backup: str) -> None:
        with _SNAPSHOT:
            self.skipped[reason] += 1
            names = self.skipped_names.setdefault(reason, [])
            if len(names) < SKIPPED_NAMES:
                names.append(backup)

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.name,
            "provider": self.provider,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "listed": self.listed,
            "inCluster": self.in_cluster,
            "toSync": self.to_sync,
            "created": self.created,
            "resumed": self.resumed,
            "skipped": dict(sorted(self.skipped.items())),
            "skippedBackups": {
                reason: {"count": self.skipped[reason], "first": list(names)}
                for reason, names in sorted(self.skipped_names.items())
            },
            "podVolumeBackupsCreated": self.pod_volume_backups,
            "csiVolumeSnapshotClassesCreated": self.csi_snapshot_classes,
            "csiVolumeSnapshotContentsCreated": self.csi_snapshot_contents,
            "orphansDeleted": self.orphans_deleted,
            "orphansBlocked": self.orphans_blocked,
            "massDeletionBlocked": self.mass_deletion_blocked,
            "errors": [{"object": e.object, "reason": e.reason} for e in self.errors],
            "warnings": self.warnings,
            "statusPatched": self.status_patched,
            "plan": self.plan,
            "seconds": round(self.seconds, 3),
        }

    def text(self, dry_run: bool) -> str:
        head = f"location {self.name}: {self.outcome.value}"
        if self.reason:
            head += f" ({self.reason})"
        warnings = [f"  warning: {w}" for w in self.warnings]
        if not self.ran:
            return "\n".join([head, *warnings])
        skipped = sum(self.skipped.values())
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        verb = "would create" if dry_run else "created"
        parts = [
            f"listed {self.listed}",
            f"in cluster {self.in_cluster}",
            f"{verb} {self.created}",
            *([f"resumed {self.resumed}"] if self.resumed else []),
            f"skipped {skipped}" + (f" ({why})" if why else ""),
            f"pod volume backups {self.pod_volume_backups}",
            f"CSI classes {self.csi_snapshot_classes}",
            f"CSI contents {self.csi_snapshot_contents}",
            f"orphans {'to delete' if dry_run else 'deleted'} {self.orphans_deleted}",
            *([f"orphans blocked {self.orphans_blocked}"] if self.mass_deletion_blocked else []),
            f"errors {len(self.errors)}",
            f"{self.seconds:.2f}s",
        ]
        lines = [f"{head}: " + ", ".join(parts)]
        lines += warnings
        if self.mass_deletion_blocked:
            lines.append(f"  blocked: {self.mass_deletion_blocked}")
        lines += [f"  error: {e.object}: {e.reason}" for e in self.errors]
        lines += [f"  plan: {action}" for action in self.plan]
        return "\n".join(lines)


@dataclass(slots=True)
class RunReport:
    namespace: str
    dry_run: bool = False
    locations: list[LocationReport] = field(default_factory=list)
    error: str = ""  # a run-level failure (cluster unreachable before any location)
    error_exit_code: int = EXIT_OK
    seconds: float = 0.0
    profile: VeleroProfile = DEFAULT_PROFILE  # the Velero version this run syncs like
    rate_limit: RateLimit | None = None  # towards the API server; None: not connected here
    shard: Shard | None = None  # only this shard's locations

    @property
    def exit_code(self) -> int:
        if self.error:
            return self.error_exit_code
        outcomes = {loc.outcome for loc in self.locations}
        if Outcome.FAILED in outcomes:
            return EXIT_LOCATION_FAILED
        if Outcome.CONFIG_ERROR in outcomes:
            return EXIT_CONFIG
        if any(loc.items_failed for loc in self.locations):
            return EXIT_ITEMS_FAILED
        return EXIT_OK

    def abandon(self, reason: str) -> None:
        """The run did not end within the grace period after a termination request: the
        locations still in progress failed, and so did the run."""
        for loc in list(self.locations):
            if loc.outcome is Outcome.SYNCED and not loc.status_patched:
                loc.set_outcome(
                    Outcome.FAILED, f"{reason}: abandoned in flight after the grace period"
                )
        self.error = f"{reason}: the run did not end within the grace period"
        self.error_exit_code = EXIT_LOCATION_FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "dryRun": self.dry_run,
            "exitCode": self.exit_code,
            "error": self.error,
            "veleroProfile": {"version": self.profile.name, "source": self.profile.source},
            "shard": None
            if self.shard is None
            else {"index": self.shard.index, "count": self.shard.count},
            "apiRateLimit": None
            if self.rate_limit is None
            else {
                "qps": self.rate_limit.qps,
                "burst": self.rate_limit.burst,
                "why": self.rate_limit.why,
            },
            "seconds": round(self.seconds, 3),
            "locations": [loc.as_dict() for loc in self.locations],
        }

    def render(self, fmt: str) -> str:
        """The summary, from one snapshot of the report (see _SNAPSHOT)."""
        with _SNAPSHOT:
            if fmt == "json":
                return json.dumps(self.as_dict(), sort_keys=False)
            return self._text()

    def _text(self) -> str:
        mode = " (dry run: nothing written)" if self.dry_run else ""
        lines = [
            f"backup-sync summary for namespace {self.namespace}{mode}",
            f"Velero {self.profile.name} profile ({self.profile.source})",
        ]
        if self.rate_limit is not None:
            lines.append(f"API rate limit: {self.rate_limit.text()}")
        if self.shard is not None:
            lines.append(f"shard {self.shard}: only the locations whose name hashes to it")
        if self.error:
            lines.append(f"run failed: {self.error}")
        if not self.locations and not self.error:
            lines.append("no backup storage locations to sync")
        lines += [loc.text(self.dry_run) for loc in self.locations]
        lines.append(f"exit code {self.exit_code} in {self.seconds:.2f}s")
        return "\n".join(lines)
