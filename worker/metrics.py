"""Run metrics pushed to a Prometheus Pushgateway at the end of a run (``--pushgateway-url``).

A CronJob lives too briefly to be scraped, so it pushes. Each location is its own group
(``job="backup-sync", namespace, location``), pushed with POST: a location that was not
due, or failed, keeps the ``last success`` its group already holds, and one location's push
never erases another's. The run itself is the group ``job, namespace`` (and ``shard`` when
sharded: each pod of an Indexed Job is a run of its own). All values are gauges of the last
run, as the Pushgateway documentation advises for batch jobs.

The run group gets two pushes: its start when the run begins and the rest when it ends. POST
replaces only the metrics it carries, so a start newer than the end is a run that has not
finished (or was killed), which the chart's ``BackupSyncRunNotFinished`` alert watches.

A push that fails is logged and never changes the outcome of the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

from worker.locations import Shard
from worker.report import LocationReport, Outcome, RunReport

log = logging.getLogger(__name__)

JOB = "backup-sync"
Push = Callable[..., None]


def location_registry(loc: LocationReport, now: float) -> CollectorRegistry:
    """The gauges of one location that ran (synced, failed or misconfigured), or only its
    period when it is disabled."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    if loc.sync_period is not None:
        # A disabled location pushes its 0 too: the staleness alert skips a period of 0,
        # and would otherwise fire for ever on the period its group held before.
        gauge(
            "backup_sync_location_sync_period_seconds",
            "The location's effective backupSyncPeriod (0: sync disabled).",
            loc.sync_period.total_seconds(),
        )
    if loc.outcome == Outcome.DISABLED:
        return registry
    synced = loc.outcome == Outcome.SYNCED
    gauge(
        "backup_sync_location_last_run_timestamp_seconds",
        "When the last run that was due for this location ended (Unix time).",
        now,
    )
    gauge(
        "backup_sync_location_last_run_success",
        "1 when the last run synced this location with no failed items and no blocked "
        "deletion, else 0.",
        1 if synced and not loc.items_failed else 0,
    )
    if synced:  # absent otherwise: the group keeps the previous success (POST semantics)
        gauge(
            "backup_sync_location_last_success_timestamp_seconds",
            "When this location was last synced (status.lastSyncedTime stamped; Unix time).",
            now,
        )
    gauge("backup_sync_backups_created", "Backups created by the last run.", loc.created)
    gauge(
        "backup_sync_backups_deleted",
        "Orphaned Backups deleted by the last run.",
        loc.orphans_deleted,
    )
    gauge(
        "backup_sync_backups_failed",
        "Items (backups, pod volume backups, CSI objects) that failed in the last run.",
        len(loc.errors),
    )
    gauge(
        "backup_sync_orphans_blocked",
        "Orphaned Backups the mass-deletion guard kept in the last run.",
        loc.orphans_blocked,
    )
    return registry


def run_group(namespace: str, shard: Shard | None) -> dict[str, str]:
    """The run's grouping key (besides ``job``)."""
    return {"namespace": namespace} | ({} if shard is None else {"shard": str(shard.index)})


def run_registry(report: RunReport, now: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Gauge("backup_sync_run_duration_seconds", "How long the last run took.", registry=registry).set(
        report.seconds
    )
    Gauge(
        "backup_sync_last_run_timestamp_seconds",
        "When the last run ended (Unix time).",
        registry=registry,
    ).set(now)
    Gauge(
        "backup_sync_last_run_exit_code", "The exit code of the last run.", registry=registry
    ).set(report.exit_code)
    return registry


@dataclass(frozen=True, slots=True)
class Pushgateway:
    """Where a run pushes its metrics (--pushgateway-url), with POST (``pushadd``), each
    push within ``timeout``. A push never raises: a failure is logged, and False."""

    url: str
    timeout: float
    push: Push = pushadd_to_gateway

    def run_started(self, report: RunReport, now: float) -> bool:
        """The start of the run, into its group beside the last run's end."""
        registry = CollectorRegistry()
        Gauge(
            "backup_sync_last_run_start_timestamp_seconds",
            "When the last run started (Unix time); newer than "
            "backup_sync_last_run_timestamp_seconds while a run is going, or when it never "
            "finished.",
            registry=registry,
        ).set(now)
        return self._push([(run_group(report.namespace, report.shard), registry)])

    def run_ended(self, report: RunReport, now: float) -> bool:
        """The run's gauges and each location's; True when all went."""
        groups: list[tuple[dict[str, str], CollectorRegistry]] = [
            ({"namespace": report.namespace, "location": loc.name}, location_registry(loc, now))
            for loc in report.locations
            if loc.ran or loc.outcome in (Outcome.CONFIG_ERROR, Outcome.DISABLED)
        ]
        groups.append((run_group(report.namespace, report.shard), run_registry(report, now)))
        return self._push(groups)

    def _push(self, groups: list[tuple[dict[str, str], CollectorRegistry]]) -> bool:
        ok = True
        for grouping_key, registry in groups:
            try:
                self.push(
                    self.url,
                    job=JOB,
                    registry=registry,
                    grouping_key=grouping_key,
                    timeout=self.timeout,
                )
            except Exception as exc:  # metrics are never worth failing the run for
                ok = False
                log.warning(
                    "cannot push metrics to the Pushgateway",
                    extra={**grouping_key, "error": str(exc)},
                )
        return ok
