"""Whole runs on the fakes: location selection and order, exit codes, dry-run, the summary."""

from __future__ import annotations

import copy
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.velero_docs import stored_pvb, stored_vscontent
from tests.unit.fakes import MemoryStore
from tests.unit.helpers import NOW, NOW_STAMP, NS, PAST, World, bsl, cluster_backup
from worker.errors import ClusterError, ConfigError, StoreError
from worker.locations import Shard
from worker.report import SKIPPED_NAMES, Outcome
from worker.run import open_location_store
from worker.settings import Settings
from worker.velero import (
    BACKUP,
    DEPLOYMENT,
    POD_VOLUME_BACKUP,
    VOLUME_SNAPSHOT,
    VOLUME_SNAPSHOT_CONTENT,
)

Obj = dict[str, Any]


# -- ordering and selection -------------------------------------------------------------------


def test_locations_synced_default_first_then_api_order() -> None:
    world = World(bsl("a"), bsl("b"), bsl("main", default=True), bsl("c"))

    report = world.run()

    assert world.opened == ["main", "a", "b", "c"]
    assert [loc.name for loc in report.locations] == ["main", "a", "b", "c"]
    assert report.exit_code == 0


def test_locations_in_api_order_without_default() -> None:
    world = World(bsl("c"), bsl("a"), bsl("b"))
    world.run()
    assert world.opened == ["c", "a", "b"]


def test_location_flag_restricts() -> None:
    world = World(bsl("a"), bsl("b"), bsl("c"))
    world.bucket("b").put_backup("b-only")
    world.bucket("a").put_backup("a-only")

    report = world.run(locations=frozenset({"b"}))

    assert world.opened == ["b"]
    assert [loc.name for loc in report.locations] == ["b"]
    assert set(world.cluster.of(BACKUP, NS)) == {"b-only"}
    assert world.last_synced("a") is None
    assert world.last_synced("b") == NOW_STAMP


def test_unknown_location_is_exit_2_and_nothing_runs() -> None:
    world = World(bsl("a"))

    report = world.run(locations=frozenset({"a", "nope"}))

    assert report.exit_code == 2
    assert "nope" in report.error
    assert world.opened == []
    assert world.cluster.writes == []


def test_not_due_location_is_skipped_exit_0() -> None:
    recent = (NOW - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world = World(bsl("a", last_synced=recent), bsl("b", last_synced=PAST))

    report = world.run()

    assert world.opened == ["b"]
    assert [(loc.name, loc.outcome) for loc in report.locations] == [
        ("a", Outcome.NOT_DUE),
        ("b", Outcome.SYNCED),
    ]
    assert report.exit_code == 0
    assert world.last_synced("a") == recent


def test_force_syncs_not_due_location_but_not_disabled() -> None:
    recent = (NOW - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world = World(bsl("a", last_synced=recent), bsl("off", period="0s"))

    report = world.run(force=True)

    assert world.opened == ["a"]
    assert [loc.outcome for loc in report.locations] == [Outcome.SYNCED, Outcome.DISABLED]
    assert report.exit_code == 0


def test_disabled_location_only_is_exit_0_without_writes() -> None:
    world = World(bsl("off", period="0"))
    world.bucket("off").put_backup("b1")

    report = world.run()

    assert report.exit_code == 0
    assert world.opened == []
    assert world.cluster.writes == []
    assert report.locations[0].outcome == Outcome.DISABLED


def test_default_sync_period_setting_is_used() -> None:
    half_hour_ago = (NOW - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    world = World(bsl("a", last_synced=half_hour_ago))
    assert world.run(default_sync_period=timedelta(hours=1)).locations[0].outcome == (
        Outcome.NOT_DUE
    )
    assert world.run(default_sync_period=timedelta(minutes=10)).locations[0].outcome == (
        Outcome.SYNCED
    )


def test_no_locations_is_exit_0() -> None:
    report = World().run()
    assert report.exit_code == 0
    assert report.locations == []
    assert "no backup storage locations to sync" in report.render("text")


# -- exit codes ----------------------------------------------------------------------------------


def test_exit_0_when_everything_synced() -> None:
    world = World(bsl("a", default=True))
    world.bucket("a").put_backup("b1", pvbs=[stored_pvb("p1", "b1")])

    report = world.run()

    assert report.exit_code == 0
    assert set(world.cluster.of(BACKUP, NS)) == {"b1"}
    assert set(world.cluster.of(POD_VOLUME_BACKUP, NS)) == {"p1"}
    assert world.last_synced("a") == NOW_STAMP


def test_exit_3_when_items_failed() -> None:
    world = World(bsl("a"))
    world.bucket("a").put_backup("good")
    world.bucket("a").put_raw("bad", "velero-backup.json", b"][")

    report = world.run()

    assert report.exit_code == 3
    assert report.locations[0].outcome == Outcome.SYNCED
    assert world.last_synced("a") == NOW_STAMP
    assert set(world.cluster.of(BACKUP, NS)) == {"good"}


def test_exit_1_when_store_listing_fails_and_nothing_written() -> None:
    world = World(bsl("a"))
    world.bucket("a").put_backup("b1")
    world.cluster.add(BACKUP, cluster_backup("orphan", "a"))
    world.stores["a"][0].fail_list = StoreError("list: connection refused")

    report = world.run()

    assert report.exit_code == 1
    loc = report.locations[0]
    assert loc.outcome == Outcome.FAILED
    assert "connection refused" in loc.reason
    assert loc.status_patched is False
    assert world.cluster.writes == []
    assert world.last_synced("a") is None


def test_exit_1_when_status_patch_fails() -> None:
    world = World(bsl("a"))
    world.bucket("a").put_backup("b1")
    world.cluster.fail_on[("patch", "backupstoragelocations")] = ClusterError("patch: 500", 500)

    report = world.run()

    assert report.exit_code == 1
    assert report.locations[0].outcome == Outcome.FAILED
    assert "patch: 500" in report.locations[0].reason
    assert report.locations[0].status_patched is False


def test_exit_1_when_store_cannot_be_opened() -> None:
    world = World(bsl("a"), bsl("b"))
    world.bucket("b").put_backup("b1")

    def open_store(loc: Obj, read_secret: Any, workdir: Path, s: Settings, *_: Any) -> Any:
        if loc["metadata"]["name"] == "a":
            raise StoreError("cannot reach endpoint")
        return world.open_store(loc, read_secret, workdir, s)

    report = world.run(open_store=open_store)

    assert report.exit_code == 1
    assert [loc.outcome for loc in report.locations] == [Outcome.FAILED, Outcome.SYNCED]
    assert "cannot reach endpoint" in report.locations[0].reason
    assert set(world.cluster.of(BACKUP, NS)) == {"b1"}  # the other location still synced
    assert world.last_synced("a") is None


def test_exit_1_when_bsl_listing_fails() -> None:
    world = World(bsl("a"))
    world.cluster.fail_on[("list", "backupstoragelocations")] = ClusterError("unreachable")

    report = world.run()

    assert report.exit_code == 1
    assert report.error == "unreachable"
    assert world.opened == []


def test_exit_2_when_location_config_error() -> None:
    world = World(bsl("a"), bsl("b"))

    def open_store(loc: Obj, read_secret: Any, workdir: Path, s: Settings, *_: Any) -> Any:
        if loc["metadata"]["name"] == "a":
            raise ConfigError("config has invalid keys ['regoin']")
        return world.open_store(loc, read_secret, workdir, s)

    report = world.run(open_store=open_store)

    assert report.exit_code == 2
    assert report.locations[0].outcome == Outcome.CONFIG_ERROR
    assert "regoin" in report.locations[0].reason
    assert report.locations[1].outcome == Outcome.SYNCED
    assert world.last_synced("a") is None
    assert world.last_synced("b") == NOW_STAMP


def test_exit_2_when_location_period_unparsable() -> None:
    world = World(bsl("a", period="1x"), bsl("b"))

    report = world.run()

    assert report.exit_code == 2
    assert report.locations[0].outcome == Outcome.CONFIG_ERROR
    assert world.opened == ["b"]


def test_failed_location_outranks_config_error_and_item_errors() -> None:
    world = World(bsl("cfg", period="1x"), bsl("fail"), bsl("items"))
    world.stores["fail"][0].fail_list = StoreError("down")
    world.bucket("items").put_raw("bad", "velero-backup.json", b"{")

    report = world.run()

    assert report.exit_code == 1


def test_config_error_outranks_item_errors() -> None:
    world = World(bsl("cfg", period="1x"), bsl("items"))
    world.bucket("items").put_raw("bad", "velero-backup.json", b"{")
    assert world.run().exit_code == 2


def credential_world() -> World:
    """One location whose credential is key "cloud" of the Secret "cloud-credentials"."""
    loc = bsl("a")
    loc["spec"]["credential"] = {"name": "cloud-credentials", "key": "cloud"}
    return World(loc)


def test_missing_credential_secret_is_config_error() -> None:
    world = credential_world()

    report = world.run(open_store=open_location_store)

    assert report.exit_code == 2
    assert report.locations[0].outcome == Outcome.CONFIG_ERROR
    assert "cloud-credentials" in report.locations[0].reason
    assert world.cluster.writes == []


def test_credential_secret_without_the_key_is_config_error() -> None:
    world = credential_world()
    world.cluster.secrets[(NS, "cloud-credentials")] = {"other": b"x"}

    report = world.run(open_store=open_location_store)

    assert report.exit_code == 2
    assert "missing data for key" in report.locations[0].reason


def test_unknown_provider_is_config_error() -> None:
    world = World(bsl("a", provider="velero.io/openstack"))

    report = world.run(open_store=open_location_store)

    assert report.exit_code == 2
    assert "openstack" in report.locations[0].reason


def test_store_is_closed_after_each_location() -> None:
    closed: list[str] = []

    class Closing(MemoryStore):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    world = World(bsl("a"), bsl("b"))
    world.stores.update(a=(Closing("a"), ""), b=(Closing("b"), ""))
    world.stores["b"][0].fail_list = StoreError("down")

    world.run()

    assert closed == ["a", "b"]


def test_csi_feature_setting_reaches_the_sync() -> None:
    world = World(bsl("a"))
    world.bucket("a").put_backup(
        "b1", vsclasses=[], vscontents=[stored_vscontent("c1", "b1", handle="h")]
    )
    world.run()
    assert world.cluster.of(VOLUME_SNAPSHOT_CONTENT) == {}
    world.cluster.objects = {
        k: v for k, v in world.cluster.objects.items() if k[0] == "backupstoragelocations"
    }
    world.run(features=frozenset({"EnableCSI"}), force=True)
    assert set(world.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"c1"}


# -- dry run ---------------------------------------------------------------------------------------


def dry_run_world() -> World:
    world = World(bsl("a", default=True))
    bucket = world.bucket("a")
    bucket.put_backup("new", pvbs=[stored_pvb("p1", "new")])
    bucket.put_backup("kept")
    world.cluster.add(BACKUP, cluster_backup("kept", "a"))
    world.cluster.add(BACKUP, cluster_backup("orphan", "a"))
    labels = {"velero.io/backup-name": "orphan"}
    world.cluster.add(
        VOLUME_SNAPSHOT, {"metadata": {"name": "vs", "namespace": NS, "labels": labels}}
    )
    world.cluster.add(VOLUME_SNAPSHOT_CONTENT, {"metadata": {"name": "vsc", "labels": labels}})
    return world


def test_dry_run_writes_nothing_and_plans_everything() -> None:
    world = dry_run_world()
    before = copy.deepcopy(world.cluster.objects)

    report = world.run(dry_run=True, features=frozenset({"EnableCSI"}))

    assert world.cluster.writes == []
    assert world.cluster.objects == before
    assert report.exit_code == 0
    plan = report.locations[0].plan
    run_id = re.search(r'"backup-sync.io/dependents-complete-through": "([^"]+)"', plan[2])
    assert run_id is not None
    assert plan == [
        "would create Backup velero/new",
        "would create PodVolumeBackup velero/p1",
        'would patch BackupStorageLocation velero/a with {"status": {"lastSyncedTime": '
        f'"{NOW_STAMP}"}}, "metadata": {{"annotations": '
        f'{{"backup-sync.io/dependents-complete-through": "{run_id[1]}"}}}}}}',
        "would delete Backup velero/orphan",
        "would delete VolumeSnapshot velero/vs",
        "would delete VolumeSnapshotContent vsc",
    ]
    text = report.render("text")
    assert "(dry run: nothing written)" in text
    for line in plan:
        assert f"  plan: {line}" in text
    assert "would create 1" in text
    assert "orphans to delete 1" in text


def test_dry_run_plan_in_json() -> None:
    world = dry_run_world()
    doc = json.loads(world.run(dry_run=True).render("json"))
    assert doc["dryRun"] is True
    assert doc["locations"][0]["plan"][0] == "would create Backup velero/new"
    assert any(p.startswith("would patch") for p in doc["locations"][0]["plan"])


def test_dry_run_with_status_subresource_still_writes_nothing() -> None:
    world = dry_run_world()
    world.cluster.status_subresource = True
    world.run(dry_run=True)
    assert world.cluster.writes == []


# -- summary -------------------------------------------------------------------------------


def summary_world() -> World:
    world = World(bsl("main", default=True), bsl("second"), bsl("off", period="0s"))
    world.bucket("main").put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])
    world.bucket("main").put_backup("b2")
    world.bucket("main").put_raw("nometa", "nometa-logs.gz", b"x")
    world.bucket("main").put_raw("corrupt", "velero-backup.json", b"not json")
    world.bucket("second").put_backup("s1")
    world.cluster.add(BACKUP, cluster_backup("gone", "second"))
    return world


def test_text_summary_has_one_line_per_location_with_counts() -> None:
    report = summary_world().run()
    text = report.render("text")
    lines = text.splitlines()

    assert lines[0] == "backup-sync summary for namespace velero"
    location_lines = [line for line in lines if line.startswith("location ")]
    assert len(location_lines) == 3
    main, second, off = location_lines
    assert main.startswith("location main: synced: ")
    assert "listed 4" in main
    assert "in cluster 1" in main  # every Backup of the namespace, any location
    assert "created 2" in main
    assert "skipped 1 (no velero-backup.json 1)" in main
    assert "pod volume backups 2" in main
    assert "orphans deleted 0" in main
    assert "errors 1" in main
    assert second.startswith("location second: synced: ")
    assert "created 1" in second
    assert "orphans deleted 1" in second
    assert "errors 0" in second
    assert off == "location off: disabled (sync disabled (backupSyncPeriod is 0))"
    error_lines = [line for line in lines if line.startswith("  error: ")]
    assert len(error_lines) == 1
    assert error_lines[0].startswith("  error: Backup velero/corrupt: ")
    assert lines[-1].startswith("exit code 3 in ")


def test_json_summary_is_one_document_with_counts_skips_and_errors() -> None:
    out = summary_world().run().render("json")

    assert "\n" not in out
    doc = json.loads(out)
    assert doc["namespace"] == NS
    assert doc["exitCode"] == 3
    assert doc["dryRun"] is False
    assert doc["error"] == ""
    locs = {loc["location"]: loc for loc in doc["locations"]}
    assert [loc["location"] for loc in doc["locations"]] == ["main", "second", "off"]
    main = locs["main"]
    assert main["outcome"] == "synced"
    assert main["provider"] == "aws"
    assert (main["listed"], main["toSync"], main["created"]) == (4, 4, 2)
    assert main["skipped"] == {"no velero-backup.json": 1}
    assert main["podVolumeBackupsCreated"] == 2
    assert main["statusPatched"] is True
    assert len(main["errors"]) == 1
    assert main["errors"][0]["object"] == "Backup velero/corrupt"
    assert "backups/corrupt/velero-backup.json" in main["errors"][0]["reason"]
    assert locs["second"]["orphansDeleted"] == 1
    assert locs["off"]["outcome"] == "disabled"
    assert locs["off"]["statusPatched"] is False


def test_summary_of_failed_location_names_the_failure() -> None:
    world = World(bsl("a"))
    world.stores["a"][0].fail_list = StoreError("list backups/: 403 AccessDenied")
    report = world.run()
    text = report.render("text")
    assert "location a: failed (list backups/: 403 AccessDenied)" in text
    doc = json.loads(report.render("json"))
    assert doc["locations"][0]["outcome"] == "failed"
    assert doc["locations"][0]["reason"] == "list backups/: 403 AccessDenied"
    assert doc["exitCode"] == 1


def test_summary_of_run_level_error() -> None:
    world = World(bsl("a"))
    report = world.run(locations=frozenset({"zzz"}))
    text = report.render("text")
    assert "run failed: " in text
    assert "zzz" in text
    assert text.splitlines()[-1].startswith("exit code 2")
    assert json.loads(report.render("json"))["exitCode"] == 2


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_summary_of_not_due_location(fmt: str) -> None:
    recent = (NOW - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = World(bsl("a", last_synced=recent)).run().render(fmt)
    assert "not due until 2026-03-01T12:00:59+00:00" in out


def test_concurrency_setting_runs_a_location_in_parallel() -> None:
    world = World(bsl("a"))
    for i in range(20):
        world.bucket("a").put_backup(f"b{i:02}", pvbs=[stored_pvb(f"p{i:02}", f"b{i:02}")])
    report = world.run(concurrency=4)
    assert report.exit_code == 0
    assert len(world.cluster.of(BACKUP, NS)) == 20
    assert len(world.cluster.of(POD_VOLUME_BACKUP, NS)) == 20


def test_forbidden_credential_secret_is_config_error_naming_the_fix() -> None:
    world = credential_world()
    world.cluster.fail_on[("get", "cloud-credentials")] = ClusterError("forbidden", 403)

    report = world.run(open_store=open_location_store)

    assert report.exit_code == 2
    assert report.locations[0].outcome == Outcome.CONFIG_ERROR
    assert "not allowed to read Secret 'cloud-credentials'" in report.locations[0].reason


def test_unavailable_credential_secret_fails_the_location() -> None:
    world = credential_world()
    world.cluster.fail_on[("get", "cloud-credentials")] = ClusterError("unavailable", 503)

    report = world.run(open_store=open_location_store)

    assert report.exit_code == 1
    assert report.locations[0].outcome == Outcome.FAILED


# -- Velero version profiles -----------------------------------------------------------------


def velero_deployment(image: str) -> Obj:
    return {
        "metadata": {"name": "velero", "namespace": NS},
        "spec": {"template": {"spec": {"containers": [{"name": "velero", "image": image}]}}},
    }


def test_the_profile_in_force_is_in_the_summary() -> None:
    world = World(bsl("a"))
    world.cluster.add(DEPLOYMENT, velero_deployment("velero/velero:v1.17.1"))

    report = world.run()

    assert report.profile.version == (1, 17, 1)
    doc = json.loads(report.render("json"))
    assert doc["veleroProfile"]["version"] == "1.17.1"
    assert "velero/velero:v1.17.1" in doc["veleroProfile"]["source"]
    assert "Velero 1.17.1 profile" in report.render("text")


def test_an_explicit_version_wins_over_the_deployment() -> None:
    world = World(bsl("a"))
    world.cluster.add(DEPLOYMENT, velero_deployment("velero/velero:v1.17.1"))

    report = world.run(velero_version="1.15.2")

    assert report.profile.version == (1, 15, 2)
    assert report.profile.source == "--velero-version"
    assert ("get", "deployments") not in world.cluster.calls


def test_auto_without_a_deployment_says_it_fell_back() -> None:
    report = World(bsl("a")).run()
    assert report.profile.version == (1, 15, 0)
    assert "no Deployment velero/velero" in report.render("text")


def unavailable_world(phase: str | None) -> World:
    location = bsl("a", last_synced=PAST)
    if phase is not None:
        location["status"]["phase"] = phase
    world = World(location)
    world.bucket("a").put_backup("new")
    world.cluster.add(BACKUP, cluster_backup("orphan", "a"))
    return world


@pytest.mark.parametrize("phase", ["Unavailable", "", None])
def test_from_1_16_2_a_location_that_is_not_available_is_left_alone(phase: str | None) -> None:
    world = unavailable_world(phase)

    report = world.run(velero_version="1.16.2")

    loc = report.locations[0]
    assert loc.outcome == Outcome.UNAVAILABLE
    assert "not Available" in loc.reason
    assert report.exit_code == 0
    assert world.opened == []  # nothing listed
    assert world.cluster.writes == []  # nothing created, deleted or patched
    assert world.last_synced("a") == PAST


@pytest.mark.parametrize("version", ["1.15.2", "1.16.1"])
def test_before_1_16_2_an_unavailable_location_is_synced(version: str) -> None:
    world = unavailable_world("Unavailable")

    report = world.run(velero_version=version)

    assert report.locations[0].outcome == Outcome.SYNCED
    assert report.locations[0].created == 1 and report.locations[0].orphans_deleted == 1


def test_an_available_location_is_synced_from_1_16_2() -> None:
    world = unavailable_world("Available")
    assert world.run(velero_version="1.18.3").locations[0].created == 1


def test_an_empty_listing_with_synced_backups_of_the_location_warns_naming_the_prefix() -> None:
    world = World(bsl("a"))
    world.stores["a"] = (MemoryStore(), "team//prod")
    world.cluster.add(BACKUP, cluster_backup("synced-1", "a"))

    report = world.run()

    [warning] = report.locations[0].warnings
    assert "listed nothing under team/prod/backups/" in warning
    assert "1 Completed or PartiallyFailed" in warning
    assert f"  warning: {warning}" in report.render("text")
    assert json.loads(report.render("json"))["locations"][0]["warnings"] == [warning]


def test_the_json_summary_names_the_first_skipped_backups_per_reason() -> None:
    world = World(bsl("a"))
    for i in range(SKIPPED_NAMES + 5):
        world.bucket("a").put_raw(f"no-meta-{i:03d}", f"no-meta-{i:03d}-logs.gz", b"x")

    doc = json.loads(world.run().render("json"))

    skipped = doc["locations"][0]["skippedBackups"]["no velero-backup.json"]
    assert skipped["count"] == SKIPPED_NAMES + 5
    assert len(skipped["first"]) == SKIPPED_NAMES
    assert skipped["first"][0] == "no-meta-000"


def test_a_shard_syncs_only_its_locations_default_first() -> None:
    names = [f"tenant-{i:02d}" for i in range(12)]
    world = World(*(bsl(n, default=n == "tenant-07") for n in names))
    shard = Shard(Shard.of("tenant-07", 3), 3)

    report = world.run(shard=shard)

    mine = [n for n in names if Shard.of(n, 3) == shard.index]
    assert world.opened == ["tenant-07", *(n for n in mine if n != "tenant-07")]
    assert json.loads(report.render("json"))["shard"] == {"index": shard.index, "count": 3}
