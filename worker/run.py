"""One run: list the locations, order them default-first, keep the selected and due ones,
sync each through the storage and cluster ports, and collect the report.

``Run`` holds what a run is made of (settings, the cluster, the store opener, the clock,
progress and shutdown): production builds it from the settings alone; tests hand it fakes."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker import velero
from worker.cluster import ClientOptions, Cluster, KubeCluster, PlanningCluster
from worker.errors import ClusterError, ConfigError, LocationError
from worker.events import record_location_events
from worker.explain import Explainer, Explanation
from worker.locations import (
    Location,
    due_check,
    in_shard,
    name_of,
    order_default_first,
    selected,
)
from worker.metrics import Pushgateway
from worker.profile import AUTO, VeleroProfile, detect, explicit
from worker.progress import Progress, ProgressFactory
from worker.report import EXIT_CONFIG, EXIT_LOCATION_FAILED, LocationReport, Outcome, RunReport
from worker.settings import Settings
from worker.shutdown import NEVER, Shutdown
from worker.storage.bsl import StoreOptions, open_backup_store, store_settings
from worker.storage.credentials import ReadSecret, secret_reader
from worker.storage.layout import BackupStore
from worker.sync import SyncOptions, new_run_id, sync_location
from worker.velero import BACKUP_STORAGE_LOCATION, DEPLOYMENT

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Warn = Callable[[str], None]
# (location, read_secret, workdir, settings, profile, warn) -> the opened store (close it)
StoreOpener = Callable[
    [dict[str, Any], ReadSecret, Path, Settings, VeleroProfile, Warn],
    BackupStore,
]


def open_location_store(
    location: dict[str, Any],
    read_secret: ReadSecret,
    workdir: Path,
    settings: Settings,
    profile: VeleroProfile,
    warn: Warn,
) -> BackupStore:
    """The real opener: the provider registry. Raises ConfigError, StoreError."""
    options = StoreOptions(
        timeout=settings.request_timeout,
        max_connections=settings.concurrency + 4,
        retry=settings.retry,
        profile=profile,
        credentials_dir=settings.credentials_dir,
        warn=warn,
    )
    store_cfg, prefix = store_settings(location, read_secret, workdir, options)
    return open_backup_store(store_cfg, prefix)


def utc_now() -> datetime:
    return datetime.now(UTC)


def velero_profile(settings: Settings, cluster: Cluster) -> VeleroProfile:
    """The profile of --velero-version, or for ``auto`` the version of the Velero
    Deployment's image (worker.profile.detect)."""
    if settings.velero_version != AUTO:
        return explicit(settings.velero_version)
    name, namespace = settings.velero_deployment, settings.namespace
    return detect(lambda: cluster.get(DEPLOYMENT, name, namespace), name, namespace)


def run(
    settings: Settings,
    cluster: Cluster | None = None,
    open_store: StoreOpener = open_location_store,
    now: Clock = utc_now,
    shutdown: Shutdown = NEVER,
) -> RunReport:
    """One sync run with these parts (the others as in production); see ``Run.sync``."""
    return Run(settings, cluster, open_store, now, shutdown=shutdown).sync()


def explain(
    settings: Settings, name: str, open_store: StoreOpener = open_location_store
) -> Explanation:
    """``backup-sync explain NAME``: the reads of a dry run, nothing written. Raises
    ConfigError, ClusterError."""
    return Run(settings, open_store=open_store).explain(name)


@dataclass(frozen=True, slots=True)
class Run:
    """What one run is made of. ``cluster`` None: connect with the settings (and close it
    at the end)."""

    settings: Settings
    cluster: Cluster | None = None
    open_store: StoreOpener = open_location_store
    now: Clock = utc_now
    progress: ProgressFactory = Progress
    shutdown: Shutdown = NEVER

    def sync(self, report: RunReport | None = None) -> RunReport:
        """One sync run; never raises for expected failures, they end up in the report (pass
        ``report`` to watch it fill from another thread). After a termination request it
        ends early, with the location it was syncing and those after it reported as
        interrupted."""
        settings = self.settings
        started = time.monotonic()
        if report is None:
            report = RunReport(namespace=settings.namespace, dry_run=settings.dry_run)
        report.shard = settings.shard  # before the start push: the run's metrics group names it
        url = None if settings.dry_run else settings.pushgateway_url
        gateway = Pushgateway(url, settings.request_timeout) if url else None
        if gateway:
            gateway.run_started(report, self.now().timestamp())
        try:
            with self._connected() as cluster:
                if isinstance(cluster, KubeCluster) and cluster.rate_limit is not None:
                    report.rate_limit = cluster.rate_limit
                    log.info("API rate limit", extra={"limit": cluster.rate_limit.text()})
                _Pass(self, cluster, report).sync_locations()
        except ConfigError as exc:
            report.error, report.error_exit_code = str(exc), EXIT_CONFIG
        except ClusterError as exc:
            report.error, report.error_exit_code = str(exc), EXIT_LOCATION_FAILED
        finally:
            report.seconds = time.monotonic() - started
        if gateway:
            gateway.run_ended(report, self.now().timestamp())
        return report

    def explain(self, name: str) -> Explanation:
        """Where NAME is, and why (worker.explain). Raises ConfigError, ClusterError."""
        with self._connected() as cluster:
            locations = self._locations(cluster)
            profile = velero_profile(self.settings, cluster)
            read_secret = secret_reader(cluster, self.settings.namespace)
            with tempfile.TemporaryDirectory(prefix="backup-sync-") as workdir:
                explainer = Explainer(
                    self.settings,
                    cluster,
                    lambda location: self.open_store(
                        location, read_secret, Path(workdir), self.settings, profile, _ignore
                    ),
                    profile,
                    self.now(),
                )
                return explainer.explain(name, locations)

    @contextlib.contextmanager
    def _connected(self) -> Iterator[Cluster]:
        if self.cluster is not None:
            yield self.cluster
            return
        settings = self.settings
        options = ClientOptions(
            settings.kubeconfig,
            settings.context,
            qps=settings.kube_qps,
            burst=settings.kube_burst,
            timeout=settings.request_timeout,
            pool_size=settings.concurrency + 4,
            policy=settings.retry,
        )
        cluster = KubeCluster.connect(options)
        try:
            yield cluster
        finally:
            cluster.close()

    def _locations(self, cluster: Cluster) -> list[Location]:
        """Every location in the Velero namespace; ConfigError when --location names one
        that is not there."""
        namespace = self.settings.namespace
        locations = list(cluster.list(BACKUP_STORAGE_LOCATION, namespace))
        missing = sorted(self.settings.locations - {name_of(loc) for loc in locations})
        if missing:
            raise ConfigError(
                f"--location names no BackupStorageLocation in {namespace}: {missing}"
            )
        return locations


def _ignore(_message: str) -> None:
    """Warnings of opening a store: a run's summary shows them, explain does not."""


class _Pass:
    """One pass over the locations of a run, with what they share: the cluster, the Velero
    profile, the run id (worker.stamps) and a private directory for credential files."""

    def __init__(self, run: Run, cluster: Cluster, report: RunReport) -> None:
        self.run, self.settings, self.cluster, self.report = run, run.settings, cluster, report
        self.profile = report.profile = velero_profile(self.settings, cluster)
        self.started = run.now()
        self.run_id = new_run_id(self.started)
        self.read_secret = secret_reader(cluster, self.settings.namespace)
        self.workdir = Path()

    def sync_locations(self) -> None:
        log.info(
            "syncing the way this Velero version does",
            extra={"veleroVersion": self.profile.name, "source": self.profile.source},
        )
        locations = self.run._locations(self.cluster)
        log.info(
            "backup storage locations found",
            extra={"count": len(locations), "namespace": self.settings.namespace},
        )
        mine = in_shard(selected(locations, self.settings.locations), self.settings.shard)
        with tempfile.TemporaryDirectory(prefix="backup-sync-") as workdir:
            self.workdir = Path(workdir)
            for location in order_default_first(mine):
                report = LocationReport(name=name_of(location), provider=provider_of(location))
                self.report.locations.append(report)
                if self._due(location, report):
                    self._sync(location, report)
                    self._record_events(location, report)

    def _due(self, location: Location, report: LocationReport) -> bool:
        """Whether to sync the location now; if not, its report says why."""
        settings = self.settings
        try:
            due = due_check(location, settings.default_sync_period, self.started, settings.force)
        except ConfigError as exc:
            report.set_outcome(Outcome.CONFIG_ERROR, str(exc))
            self._record_events(location, report)
            return False
        report.sync_period = due.period
        if not due.due:
            report.set_outcome(Outcome.DISABLED if due.disabled else Outcome.NOT_DUE, due.reason)
        elif unavailable := _unavailable(location, self.profile):
            report.set_outcome(Outcome.UNAVAILABLE, unavailable)
        elif self.run.shutdown.requested:
            why = f"{self.run.shutdown.reason} before this location started"
            report.set_outcome(Outcome.FAILED, why)
            return False
        else:
            return True
        log.info("location skipped", extra={"location": report.name, "why": report.reason})
        return False

    def _sync(self, location: Location, report: LocationReport) -> None:
        started = time.monotonic()
        ctx = {"location": report.name}
        try:
            backup_store = self.run.open_store(
                location, self.read_secret, self.workdir, self.settings, self.profile, report.warn
            )
        except ConfigError as exc:
            log.error("location configuration error", extra={**ctx, "error": str(exc)})
            report.set_outcome(Outcome.CONFIG_ERROR, str(exc))
            return
        except (LocationError, ClusterError) as exc:
            log.error("cannot open backup store", extra={**ctx, "error": str(exc)})
            report.set_outcome(Outcome.FAILED, f"cannot open backup store: {exc}")
            return
        target = PlanningCluster(self.cluster) if self.settings.dry_run else self.cluster
        try:
            sync_location(location, backup_store, target, self._options(), report)
        except LocationError as exc:
            log.error("location failed", extra={**ctx, "error": str(exc)})
            report.set_outcome(Outcome.FAILED, str(exc))
        except ClusterError as exc:
            log.error("location failed", extra={**ctx, "error": str(exc)})
            report.set_outcome(Outcome.FAILED, f"cluster: {exc}")
        finally:
            backup_store.close()
            if isinstance(target, PlanningCluster):
                report.plan = target.actions
            report.seconds = time.monotonic() - started
        log.info(
            "location done",
            extra={**ctx, "outcome": report.outcome.value, "seconds": round(report.seconds, 3)},
        )

    def _options(self) -> SyncOptions:
        settings, run = self.settings, self.run
        return SyncOptions(
            namespace=settings.namespace,
            csi=settings.csi_enabled,
            concurrency=settings.concurrency,
            now=run.now,
            progress=run.progress,
            shutdown=run.shutdown,
            profile=self.profile,
            run_id=self.run_id,
            guard=settings.guard,
        )

    def _record_events(self, location: Location, report: LocationReport) -> None:
        """Events on the location, except in a dry run: it writes nothing, and its plan is
        about Velero's objects."""
        if not self.settings.dry_run:
            record_location_events(self.cluster, location, report)


def provider_of(location: Location) -> str:
    return str(velero.spec(location).get("provider"))


def _unavailable(location: Location, profile: VeleroProfile) -> str:
    """Why Velero of this profile would not sync the location now, or "" (from 1.16.2 a
    location whose status.phase is not exactly Available is left alone)."""
    if not profile.requires_available_location:
        return ""
    phase = velero.status(location).get("phase") or ""
    if phase == velero.LOCATION_PHASE_AVAILABLE:
        return ""
    return (
        f"status.phase is {phase!r}, not Available: Velero {profile.name} skips it "
        f"(nothing listed, deleted or patched)"
    )
