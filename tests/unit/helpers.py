"""Builders shared by the unit tests: locations, one location's sync (``Env``), whole runs
(``World``), a fixed clock, canned cluster faults, and a stand-in for the CLI's run."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.unit.fakes import Bucket, FakeCluster, MemoryStore
from worker import cli
from worker.errors import ClusterError
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.report import LocationReport, RunReport
from worker.run import run
from worker.settings import Settings
from worker.shutdown import NEVER, Shutdown
from worker.storage.layout import BackupStore
from worker.sync import SyncOptions, sync_location
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION, Kind
from worker.velero import COMPLETE_THROUGH_ANNOTATION as COMPLETE_THROUGH

Obj = dict[str, Any]

NS = "velero"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_STAMP = "2026-03-01T12:00:00Z"
PAST = "2026-02-01T00:00:00Z"  # before NOW
FUTURE = "2026-04-01T00:00:00Z"  # after NOW


def bsl(
    name: str,
    *,
    default: bool = False,
    period: str | None = None,
    last_synced: str | None = None,
    provider: str = "aws",
    bucket: str = "bucket",
    prefix: str = "",
) -> Obj:
    """A BackupStorageLocation as the API returns it."""
    spec: Obj = {"provider": provider, "objectStorage": {"bucket": bucket, "prefix": prefix}}
    if default:
        spec["default"] = True
    if period is not None:
        spec["backupSyncPeriod"] = period
    obj: Obj = {
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }
    if last_synced is not None:
        obj["status"] = {"lastSyncedTime": last_synced}
    return obj


def cluster_backup(
    name: str, location: str | None, phase: str = "Completed", namespace: str = NS
) -> Obj:
    """A Backup already in the cluster, labelled (or not) with a location label value."""
    labels = {} if location is None else {"velero.io/storage-location": location}
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"storageLocation": location or ""},
        "status": {"phase": phase},
    }


@dataclass
class Env:
    """One location on the fakes: a cluster holding its BSL, and its bucket."""

    location_name: str = "default"
    prefix: str = ""
    cluster: FakeCluster = field(default_factory=FakeCluster)
    store: MemoryStore = field(default_factory=MemoryStore)

    def __post_init__(self) -> None:
        self.bucket = Bucket(self.store, self.prefix)
        self.location = self.cluster.add(
            BACKUP_STORAGE_LOCATION, bsl(self.location_name, prefix=self.prefix)
        )

    def backup_store(self) -> BackupStore:
        return BackupStore(self.store, self.prefix)

    def sync(
        self,
        *,
        csi: bool = False,
        concurrency: int = 1,
        cluster: Any = None,
        shutdown: Shutdown = NEVER,
        profile: VeleroProfile = DEFAULT_PROFILE,
    ) -> LocationReport:
        report = LocationReport(name=self.location_name)
        target = cluster if cluster is not None else self.cluster
        # The location as the cluster has it now (earlier syncs stamped it).
        location = target.of(BACKUP_STORAGE_LOCATION, NS).get(self.location_name, self.location)
        options = SyncOptions(
            namespace=NS,
            csi=csi,
            concurrency=concurrency,
            now=lambda: NOW,
            shutdown=shutdown,
            profile=profile,
        )
        sync_location(copy.deepcopy(location), self.backup_store(), target, options, report)
        return report

    def stamp(self) -> str | None:
        """The run id the location's Backups are complete through."""
        location = self.cluster.of(BACKUP_STORAGE_LOCATION, NS)[self.location_name]
        return (location["metadata"].get("annotations") or {}).get(COMPLETE_THROUGH)

    def backups(self) -> dict[str, Obj]:
        return self.cluster.of(BACKUP, NS)

    def creates(self, plural: str | None = None) -> list[str]:
        return [
            name
            for verb, kind, name in self.cluster.writes
            if verb == "create" and (plural is None or kind == plural)
        ]

    def deletes(self, plural: str | None = None) -> list[str]:
        return [
            name
            for verb, kind, name in self.cluster.writes
            if verb == "delete" and (plural is None or kind == plural)
        ]


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"namespace": NS, "concurrency": 1}
    values.update(overrides)
    return Settings(**values)


def opener(stores: dict[str, tuple[MemoryStore, str]]) -> Any:
    """A run()'s open_store over MemoryStores keyed by location name (prefix per location);
    records the names it was asked to open in ``opener.opened``."""
    opened: list[str] = []

    def open_store(
        location: Obj, read_secret: Any, workdir: Path, settings: Settings, *_more: Any
    ) -> BackupStore:
        name = location["metadata"]["name"]
        opened.append(name)
        memstore, prefix = stores[name]
        return BackupStore(memstore, prefix)

    open_store.opened = opened  # type: ignore[attr-defined]
    return open_store


class World:
    """Whole runs: a cluster holding these BackupStorageLocations, and an empty MemoryStore
    (no prefix) for each."""

    def __init__(self, *locations: Obj) -> None:
        self.cluster = FakeCluster()
        self.stores: dict[str, tuple[MemoryStore, str]] = {}
        for loc in locations:
            self.cluster.add(BACKUP_STORAGE_LOCATION, loc)
            self.stores[loc["metadata"]["name"]] = (MemoryStore(), "")
        self.open_store = opener(self.stores)

    def bucket(self, location: str) -> Bucket:
        return Bucket(self.stores[location][0])

    def run(
        self, *, open_store: Any = None, shutdown: Shutdown = NEVER, **overrides: Any
    ) -> RunReport:
        """A run at NOW with ``settings(**overrides)``, opening the stores with
        ``open_store`` (default: this world's)."""
        store_opener = open_store or self.open_store
        return run(
            settings(**overrides), self.cluster, store_opener, lambda: NOW, shutdown=shutdown
        )

    @property
    def opened(self) -> list[str]:
        """The locations whose stores this world's opener opened, in order."""
        return self.open_store.opened  # type: ignore[no-any-return]

    def last_synced(self, location: str) -> str | None:
        obj = self.cluster.of(BACKUP_STORAGE_LOCATION, NS)[location]
        return (obj.get("status") or {}).get("lastSyncedTime")

    def events(self, location: str) -> list[Obj]:
        return [e for e in self.cluster.events if e["regarding"]["name"] == location]

    def reasons(self, location: str) -> list[str]:
        return [e["reason"] for e in self.events(location)]


def fail_first_backup_list(cluster: FakeCluster) -> list[str | None]:
    """The namespace-wide Backup list fails, a label-selected relist works; returns the
    label selector of every Backup list, as they come."""
    selectors: list[str | None] = []

    def list_backups(kind: Kind, namespace: str | None, label_selector: str | None) -> None:
        selectors.append(label_selector)
        if label_selector is None:
            raise ClusterError("list backups: 500", 500)

    cluster.before("list", BACKUP, list_backups)
    return selectors


class Recorder:
    """Stands in for worker.cli.sync_run and the logging setup; never touches a cluster.
    The ``rec`` fixture (conftest.py) puts one in place."""

    def __init__(self, report: RunReport | None = None) -> None:
        self.settings: list[Settings] = []
        self.logging: list[tuple[str, str]] = []
        self.report = report or RunReport(namespace="velero")

    def run(
        self, settings: Settings, *, report: RunReport | None = None, **_wiring: Any
    ) -> RunReport:
        """Fills the report the CLI passes in (its summary comes from that one)."""
        self.settings.append(settings)
        self.report.namespace = settings.namespace
        if report is not None:
            for f in fields(RunReport):
                setattr(report, f.name, getattr(self.report, f.name))
        return self.report

    def configure(self, level: str, fmt: str, stream: object = None) -> None:
        self.logging.append((level, fmt))


def parsed(rec: Recorder, *argv: str) -> Settings:
    """The Settings the CLI runs with for ``argv``."""
    assert cli.main(list(argv)) == 0
    assert len(rec.settings) == 1
    return rec.settings[0]
