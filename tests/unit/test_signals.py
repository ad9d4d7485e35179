"""Operator signals: Events on the BackupStorageLocation and Pushgateway metrics."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from harness.velero_docs import stored_backup
from tests.pushgateway import Gateway
from tests.unit.fakes import FakeCluster, MemoryStore
from tests.unit.helpers import NOW, NS, World, bsl, cluster_backup, opener, settings
from worker import rewrite
from worker.cluster import PlanningCluster
from worker.errors import ClusterError, StoreError
from worker.events import NOTE_MAX_BYTES, EventSpec, event_body, location_events
from worker.locations import Shard
from worker.metrics import Pushgateway
from worker.report import ItemFailure, LocationReport, Outcome, RunReport
from worker.run import run
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION

Obj = dict[str, Any]


def two_locations() -> World:
    """``main`` (the default) and ``other``."""
    return World(bsl("main", default=True), bsl("other"))


# -- which events -----------------------------------------------------------------------------


def test_quiet_run_records_nothing() -> None:
    world = two_locations()
    report = world.run()
    assert report.exit_code == 0
    assert world.cluster.events == []


def test_the_story_of_a_run_on_the_location() -> None:
    world = two_locations()
    world.bucket("main").put_backup("b1")
    world.bucket("main").put_raw("broken", "velero-backup.json", b"{not json")
    world.cluster.add(BACKUP, cluster_backup("gone", "main"))
    for i in range(12):
        world.cluster.add(BACKUP, cluster_backup(f"o{i:02}", "other"))

    report = world.run()

    assert report.exit_code == 3
    assert world.reasons("main") == ["BackupsSynced", "ItemsFailed", "OrphansDeleted"]
    assert world.reasons("other") == ["MassDeletionBlocked"]
    synced, failed, deleted = world.events("main")
    assert synced["type"] == "Normal" and "created 1 Backups" in synced["note"]
    assert failed["type"] == "Warning"
    assert f"1 items failed to sync: Backup {NS}/broken: " in failed["note"]
    assert "not valid JSON" in failed["note"]
    assert deleted["type"] == "Normal" and "deleted 1 Backups" in deleted["note"]
    blocked = world.events("other")[0]
    assert blocked["type"] == "Warning" and blocked["action"] == "DeleteOrphans"
    assert "12 of the 12 Backups" in blocked["note"]
    for event in world.cluster.events:
        assert event["metadata"]["namespace"] == NS
        assert event["regarding"]["kind"] == "BackupStorageLocation"
        assert event["regarding"]["apiVersion"] == "velero.io/v1"
        assert event["regarding"]["uid"].startswith("uid-")  # kubectl describe matches on it
        assert event["reportingController"] == "backup-sync"


def test_failed_location_event() -> None:
    world = two_locations()
    world.stores["main"][0].fail_list = StoreError("list s3://bucket/backups/: AccessDenied")
    report = world.run()
    assert report.exit_code == 1
    [event] = world.events("main")
    assert (event["type"], event["reason"]) == ("Warning", "SyncFailed")
    assert "AccessDenied" in event["note"]


def test_invalid_configuration_event() -> None:
    world = two_locations()
    world.cluster.objects[("backupstoragelocations", NS, "other")]["spec"]["backupSyncPeriod"] = (
        "soon"
    )
    report = world.run()
    assert report.exit_code == 2
    [event] = world.events("other")
    assert event["reason"] == "InvalidConfiguration" and "soon" in event["note"]


def test_not_due_location_records_nothing() -> None:
    world = two_locations()
    loc = world.cluster.objects[("backupstoragelocations", NS, "other")]
    loc["status"] = {"lastSyncedTime": "2026-03-01T11:59:59Z"}
    world.run()
    assert world.events("other") == []


@pytest.mark.parametrize(
    "error", [ClusterError("403 Forbidden: cannot create events", 403), RuntimeError("bug")]
)
def test_event_failures_never_fail_the_run(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    world = two_locations()
    world.bucket("main").put_backup("b1")
    world.cluster.fail_on[("create", "events")] = error  # type: ignore[assignment]

    with caplog.at_level(logging.WARNING):
        report = world.run()

    assert report.exit_code == 0
    assert report.locations[0].created == 1
    assert "cannot record event" in caplog.text


def test_dry_run_records_no_events() -> None:
    world = two_locations()
    world.bucket("main").put_backup("b1")
    report = world.run(dry_run=True)
    assert world.cluster.events == []
    assert not [p for p in report.locations[0].plan if "event" in p]


def test_planning_cluster_plans_an_event() -> None:
    planner = PlanningCluster(FakeCluster())
    spec = EventSpec("Warning", "ItemsFailed", "Sync", "x")
    planner.create_event(event_body(bsl("main"), spec, NOW, "i"))
    assert planner.actions == [
        f"would record Warning event ItemsFailed on BackupStorageLocation {NS}/main"
    ]


def test_items_note_names_three_and_counts_the_rest() -> None:
    report = LocationReport(name="main")
    report.errors = [ItemFailure(f"Backup velero/b{i}", "broken") for i in range(5)]
    [event] = location_events(report)
    assert event.note.count("broken") == 3
    assert event.note.endswith("and 2 more (see the job's summary)")


def test_event_body_within_api_limits() -> None:
    regarding = bsl("main")
    regarding["metadata"]["uid"] = "u-1"
    spec = EventSpec("Warning", "R" * 300, "A" * 300, "é" * 5000)
    body = event_body(regarding, spec, NOW, "i" * 300)
    assert len(body["note"].encode()) <= NOTE_MAX_BYTES
    assert len(body["reason"]) == len(body["action"]) == len(body["reportingInstance"]) == 128
    assert body["eventTime"] == "2026-03-01T12:00:00.000000Z"
    assert body["metadata"]["namespace"] == NS
    assert re.fullmatch(r"main\.[0-9a-f]+", body["metadata"]["name"])
    assert not rewrite.invalid_name(body["metadata"]["name"])
    assert body["regarding"]["uid"] == "u-1"


def test_outcomes_map_to_events() -> None:
    for outcome in (Outcome.NOT_DUE, Outcome.DISABLED):
        report = LocationReport(name="x", outcome=outcome)
        assert location_events(report) == []


# -- metrics ------------------------------------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as gw:
        yield gw


def test_metrics_pushed_per_location_and_per_run(gateway: Gateway) -> None:
    world = two_locations()
    world.bucket("main").put_backup("b1")
    world.bucket("main").put_backup("b2")
    world.bucket("main").put_backup(stored_backup("bad", phase="New"))
    world.cluster.add(BACKUP, cluster_backup("gone", "main"))
    world.stores["other"][0].fail_list = StoreError("list: boom")

    report = world.run(pushgateway_url=gateway.url)

    assert report.exit_code == 1
    main = gateway.group(f"/metrics/job/backup-sync/location/main/namespace/{NS}")
    assert main["backup_sync_backups_created"] == 2
    assert main["backup_sync_backups_deleted"] == 1
    assert main["backup_sync_backups_failed"] == 1
    assert main["backup_sync_orphans_blocked"] == 0
    assert main["backup_sync_location_last_run_success"] == 0  # an item failed
    assert main["backup_sync_location_last_success_timestamp_seconds"] > 1.7e9
    other = gateway.group(f"/metrics/job/backup-sync/location/other/namespace/{NS}")
    assert other["backup_sync_location_last_run_success"] == 0
    # a failed location pushes no success time: the gateway keeps the previous one
    assert "backup_sync_location_last_success_timestamp_seconds" not in other
    whole = gateway.group(f"/metrics/job/backup-sync/namespace/{NS}")
    assert whole["backup_sync_last_run_exit_code"] == 1
    assert whole["backup_sync_run_duration_seconds"] == pytest.approx(report.seconds, abs=0.01)
    assert len(gateway.pushes) == 4  # the run's start, two locations, the run's end


def test_no_push_without_url_or_in_dry_run(gateway: Gateway) -> None:
    two_locations().run()
    two_locations().run(dry_run=True, pushgateway_url=gateway.url)
    assert gateway.pushes == []


def test_push_failures_never_fail_the_run(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.status = 500
    world = two_locations()
    world.bucket("main").put_backup("b1")
    with caplog.at_level(logging.WARNING):
        report = world.run(pushgateway_url=gateway.url)
    assert report.exit_code == 0
    assert "cannot push metrics" in caplog.text


def test_unreachable_gateway_is_logged() -> None:
    report = RunReport(namespace=NS)
    assert Pushgateway("http://127.0.0.1:9", timeout=2).run_ended(report, 0.0) is False


def test_location_name_with_a_slash_survives_the_grouping_key(gateway: Gateway) -> None:
    report = RunReport(namespace=NS)
    report.locations.append(LocationReport(name="a/b", created=3))
    assert Pushgateway(gateway.url, timeout=5).run_ended(report, 1.0) is True
    paths = [p[1] for p in gateway.pushes]
    assert f"/metrics/job/backup-sync/location@base64/YS9i/namespace/{NS}" in paths


def test_run_start_pushed_first_and_apart_from_the_end(gateway: Gateway) -> None:
    """The start alone, before anything else, and the end without it: with POST semantics
    neither push erases the other, so a start newer than the end is an unfinished run."""
    world = two_locations()
    clock = [NOW]
    open_store = opener(world.stores)

    def open_slowly(*args: Any) -> Any:
        clock[0] = NOW + timedelta(seconds=42)  # the run takes a while
        return open_store(*args)

    report = run(
        settings(pushgateway_url=gateway.url), world.cluster, open_slowly, now=lambda: clock[0]
    )
    assert report.exit_code == 0
    start, end = gateway.pushes_to(f"/metrics/job/backup-sync/namespace/{NS}")
    assert gateway.pushes[0][1] == f"/metrics/job/backup-sync/namespace/{NS}"
    assert start == {"backup_sync_last_run_start_timestamp_seconds": NOW.timestamp()}
    assert "backup_sync_last_run_start_timestamp_seconds" not in end
    assert end["backup_sync_last_run_timestamp_seconds"] == NOW.timestamp() + 42


def test_a_run_that_dies_leaves_only_its_start(gateway: Gateway) -> None:
    class Killed(BaseException):
        pass

    def die(*_args: Any) -> Any:
        raise Killed

    world = two_locations()
    with pytest.raises(Killed):
        run(settings(pushgateway_url=gateway.url), world.cluster, die, now=lambda: NOW)
    [(_, path, _, body)] = gateway.pushes
    assert path == f"/metrics/job/backup-sync/namespace/{NS}"
    assert "backup_sync_last_run_start_timestamp_seconds" in body


def test_each_location_pushes_its_effective_period(gateway: Gateway) -> None:
    world = two_locations()
    locations = world.cluster.of(BACKUP_STORAGE_LOCATION, NS)
    locations["main"]["spec"]["backupSyncPeriod"] = "1h30m"
    locations["other"]["spec"]["backupSyncPeriod"] = "-1s"  # negative: the default
    world.cluster.add(BACKUP_STORAGE_LOCATION, bsl("off", period="0s"))
    world.cluster.add(BACKUP_STORAGE_LOCATION, bsl("bad", period="soon"))
    world.stores["off"] = world.stores["bad"] = (MemoryStore(), "")

    world.run(pushgateway_url=gateway.url, default_sync_period=timedelta(minutes=2))

    def group(location: str) -> dict[str, float]:
        return gateway.group(f"/metrics/job/backup-sync/location/{location}/namespace/{NS}")

    assert group("main")["backup_sync_location_sync_period_seconds"] == 5400
    assert group("other")["backup_sync_location_sync_period_seconds"] == 120
    # disabled: its 0 alone, so the staleness alert leaves it be and nothing else moves
    assert group("off") == {"backup_sync_location_sync_period_seconds": 0}
    # a period that does not parse: the group keeps the one it had
    assert "backup_sync_location_sync_period_seconds" not in group("bad")
    assert group("bad")["backup_sync_location_last_run_success"] == 0


def test_not_due_location_pushes_nothing(gateway: Gateway) -> None:
    world = two_locations()
    loc = world.cluster.objects[("backupstoragelocations", NS, "other")]
    loc["status"] = {"lastSyncedTime": "2026-03-01T11:59:59Z"}
    world.run(pushgateway_url=gateway.url)
    assert not [p for p in gateway.pushes if "/location/other/" in p[1]]


def test_a_shard_is_a_run_group_of_its_own_even_when_the_run_fails_early(
    gateway: Gateway,
) -> None:
    """Pods of an Indexed Job run side by side: one shared group would let one pod's end
    hide another's missing one. A run that cannot even list its locations ends in the group
    it started in."""
    world = two_locations()
    world.cluster.fail_on[("list", "backupstoragelocations")] = ClusterError("refused")
    report = world.run(pushgateway_url=gateway.url, shard=Shard(2, 4))
    assert report.exit_code == 1
    paths = [p[1] for p in gateway.pushes]
    assert paths == [f"/metrics/job/backup-sync/namespace/{NS}/shard/2"] * 2
