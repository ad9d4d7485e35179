"""One run: list the locations, order them default-first, keep the selected and due ones,
sync each through the storage and cluster ports, and collect the report."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.cluster import (
    BACKUP_STORAGE_LOCATION,
    DEPLOYMENT,
    ClientOptions,
    Cluster,
    KubeCluster,
    PlanningCluster,
)
from worker.errors import ClusterError, ConfigError, LocationError, NotFound
from worker.events import record_location_events
from worker.explain import Explainer, Explanation
from worker.locations import due_check, in_shard, name_of, order_default_first, selected
from worker.metrics import push_metrics, push_run_start
from worker.profile import AUTO, VeleroProfile, detect, explicit
from worker.progress import Progress, ProgressFactory
from worker.report import EXIT_CONFIG, EXIT_LOCATION_FAILED, LocationReport, Outcome, RunReport
from worker.settings import Settings
from worker.shutdown import NEVER, Shutdown
from worker.storage import ObjectStore
from worker.storage.bsl import ReadSecret, StoreOptions, open_backup_store, store_settings
from worker.storage.layout import BackupStore
from worker.sync import SyncOptions, new_run_id, sync_location

log = logging.getLogger(__name__)

Warn = Callable[[str], None]
# (location, read_secret, workdir, settings, profile, warn)
#   -> (Velero-layout store, the store to close)
StoreOpener = Callable[
    [dict[str, Any], ReadSecret, Path, Settings, VeleroProfile, Warn],
    tuple[BackupStore, ObjectStore],
]


def open_location_store(
    location: dict[str, Any],
    read_secret: ReadSecret,
    workdir: Path,
    settings: Settings,
    profile: VeleroProfile,
    warn: Warn,
) -> tuple[BackupStore, ObjectStore]:
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


def secret_reader(settings: Settings, cluster: Cluster) -> ReadSecret:
    """Secrets a location names, from the Velero namespace; a missing or forbidden one is
    a configuration error (exit 2): retrying the job cannot help, fixing it can."""

    def read_secret(name: str, key: str) -> bytes:
        try:
            return cluster.read_secret(settings.namespace, name, key)
        except NotFound:
            raise ConfigError(
                f"Secret {name!r} not found in namespace {settings.namespace}"
            ) from None
        except ClusterError as exc:
            if exc.status != 403:
                raise
            raise ConfigError(
                f"not allowed to read Secret {name!r} in namespace {settings.namespace} (the "
                f"chart grants it when the Secret is listed in credentials.locationSecrets)"
            ) from None

    return read_secret


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
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: ProgressFactory = Progress,
    shutdown: Shutdown = NEVER,
    report: RunReport | None = None,
) -> RunReport:
    """One sync run; never raises for expected failures, they end up in the report (pass
    ``report`` to watch it fill from another thread). After a termination request
    (``shutdown``) it ends early, with the location it was syncing and those after it
    reported as interrupted."""
    started = time.monotonic()
    if report is None:
        report = RunReport(namespace=settings.namespace, dry_run=settings.dry_run)
    report.shard = settings.shard  # before the start push: the run's metrics group names it
    pushgateway = None if settings.dry_run else settings.pushgateway_url
    if pushgateway:
        push_run_start(pushgateway, report, now().timestamp(), settings.request_timeout)
    owned: KubeCluster | None = None
    try:
        if cluster is None:
            owned = _connect(settings)
            cluster = owned
            report.rate_limit = owned.rate_limit
            if owned.rate_limit is not None:
                log.info("API rate limit", extra={"limit": owned.rate_limit.text()})
        _run_locations(settings, cluster, report, open_store, now, progress, shutdown)
    except ConfigError as exc:
        report.error, report.error_exit_code = str(exc), EXIT_CONFIG
    except ClusterError as exc:
        report.error, report.error_exit_code = str(exc), EXIT_LOCATION_FAILED
    finally:
        if owned is not None:
            owned.close()
        report.seconds = time.monotonic() - started
    if pushgateway:
        push_metrics(pushgateway, report, now().timestamp(), settings.request_timeout)
    return report


def explain(
    settings: Settings,
    name: str,
    open_store: StoreOpener = open_location_store,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Explanation:
    """``backup-sync explain NAME``: the reads of a dry run, nothing written. Raises
    ConfigError, ClusterError."""
    cluster = _connect(settings)
    try:
        locations = list(cluster.list(BACKUP_STORAGE_LOCATION, settings.namespace))
        missing = sorted(settings.locations - {name_of(loc) for loc in locations})
        if missing:
            raise ConfigError(
                f"--location names no BackupStorageLocation in {settings.namespace}: {missing}"
            )
        profile = velero_profile(settings, cluster)
        read_secret = secret_reader(settings, cluster)
        with tempfile.TemporaryDirectory(prefix="backup-sync-") as workdir:
            explainer = Explainer(
                settings,
                cluster,
                lambda location: open_store(
                    location, read_secret, Path(workdir), settings, profile, _ignore
                ),
                profile,
                now(),
            )
            return explainer.explain(name, locations)
    finally:
        cluster.close()


def _ignore(_message: str) -> None:
    """Warnings of opening a store: a run's summary shows them, explain does not."""


def _connect(settings: Settings) -> KubeCluster:
    return KubeCluster.connect(
        ClientOptions(
            settings.kubeconfig,
            settings.context,
            qps=settings.kube_qps,
            burst=settings.kube_burst,
            timeout=settings.request_timeout,
            pool_size=settings.concurrency + 4,
            policy=settings.retry,
        )
    )


def _run_locations(
    settings: Settings,
    cluster: Cluster,
    report: RunReport,
    open_store: StoreOpener,
    now: Callable[[], datetime],
    progress: ProgressFactory,
    shutdown: Shutdown,
) -> None:
    profile = report.profile = velero_profile(settings, cluster)
    log.info(
        "syncing the way this Velero version does",
        extra={"veleroVersion": profile.name, "source": profile.source},
    )
    locations = list(cluster.list(BACKUP_STORAGE_LOCATION, settings.namespace))
    missing = sorted(settings.locations - {name_of(loc) for loc in locations})
    if missing:
        raise ConfigError(
            f"--location names no BackupStorageLocation in {settings.namespace}: {missing}"
        )
    log.info(
        "backup storage locations found",
        extra={"count": len(locations), "namespace": settings.namespace},
    )
    started = now()
    run_id = new_run_id(started)
    with tempfile.TemporaryDirectory(prefix="backup-sync-") as workdir:
        mine = in_shard(selected(locations, settings.locations), settings.shard)
        for location in order_default_first(mine):
            loc_report = LocationReport(
                name=name_of(location), provider=str((location.get("spec") or {}).get("provider"))
            )
            report.locations.append(loc_report)
            try:
                due = due_check(location, settings.default_sync_period, started, settings.force)
                loc_report.sync_period = due.period
            except ConfigError as exc:
                loc_report.set_outcome(Outcome.CONFIG_ERROR, str(exc))
                _record_events(settings, cluster, location, loc_report)
                continue
            if not due.due:
                outcome = Outcome.DISABLED if due.disabled else Outcome.NOT_DUE
                loc_report.set_outcome(outcome, due.reason)
                log.info("location skipped", extra={"location": loc_report.name, "why": due.reason})
                continue
            unavailable = _unavailable(location, profile)
            if unavailable:
                loc_report.set_outcome(Outcome.UNAVAILABLE, unavailable)
                log.info(
                    "location skipped", extra={"location": loc_report.name, "why": unavailable}
                )
                continue
            if shutdown.requested:
                loc_report.set_outcome(
                    Outcome.FAILED, f"{shutdown.reason} before this location started"
                )
                continue
            _sync_one(
                settings,
                cluster,
                location,
                loc_report,
                Path(workdir),
                open_store,
                now,
                progress,
                shutdown,
                profile,
                run_id,
            )
            _record_events(settings, cluster, location, loc_report)


def _unavailable(location: dict[str, Any], profile: VeleroProfile) -> str:
    """Why Velero of this profile would not sync the location now, or "" (from 1.16.2 a
    location whose status.phase is not exactly Available is left alone)."""
    if not profile.requires_available_location:
        return ""
    phase = (location.get("status") or {}).get("phase") or ""
    if phase == "Available":
        return ""
    return (
        f"status.phase is {phase!r}, not Available: Velero {profile.name} skips it "
        f"(nothing listed, deleted or patched)"
    )


def _record_events(
    settings: Settings, cluster: Cluster, location: dict[str, Any], report: LocationReport
) -> None:
    """Events on the location, except in a dry run: it writes nothing, and its plan is
    about Velero's objects."""
    if not settings.dry_run:
        record_location_events(cluster, location, report)


def _sync_one(
    settings: Settings,
    cluster: Cluster,
    location: dict[str, Any],
    report: LocationReport,
    workdir: Path,
    open_store: StoreOpener,
    now: Callable[[], datetime],
    progress: ProgressFactory,
    shutdown: Shutdown,
    profile: VeleroProfile,
    run_id: str,
) -> None:
    started = time.monotonic()
    ctx = {"location": report.name}
    target: Cluster = PlanningCluster(cluster) if settings.dry_run else cluster

    read_secret = secret_reader(settings, cluster)
    try:
        backup_store, store = open_store(
            location, read_secret, workdir, settings, profile, report.warn
        )
    except ConfigError as exc:
        log.error("location configuration error", extra={**ctx, "error": str(exc)})
        report.set_outcome(Outcome.CONFIG_ERROR, str(exc))
        return
    except (LocationError, ClusterError) as exc:
        log.error("cannot open backup store", extra={**ctx, "error": str(exc)})
        report.set_outcome(Outcome.FAILED, f"cannot open backup store: {exc}")
        return
    options = SyncOptions(
        namespace=settings.namespace,
        csi=settings.csi_enabled,
        concurrency=settings.concurrency,
        now=now,
        progress=progress,
        shutdown=shutdown,
        profile=profile,
        run_id=run_id,
        guard=settings.guard,
    )
    try:
        sync_location(location, backup_store, target, options, report)
    except LocationError as exc:
        log.error("location failed", extra={**ctx, "error": str(exc)})
        report.set_outcome(Outcome.FAILED, str(exc))
    except ClusterError as exc:
        log.error("location failed", extra={**ctx, "error": str(exc)})
        report.set_outcome(Outcome.FAILED, f"cluster: {exc}")
    finally:
        store.close()
        if isinstance(target, PlanningCluster):
            report.plan = target.actions
        report.seconds = time.monotonic() - started
    log.info(
        "location done",
        extra={**ctx, "outcome": report.outcome.value, "seconds": round(report.seconds, 3)},
    )
