"""The mass-deletion guard: too many orphans at once delete nothing, say why, exit 3."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.velero_docs import snapshot_content
from tests.unit.fakes import FakeCluster
from tests.unit.helpers import (
    NOW,
    NS,
    Env,
    Recorder,
    World,
    bsl,
    cluster_backup,
    parsed,
)
from worker import cli
from worker.guard import DEFAULT_FLOOR, DEFAULT_SHARE, MassDeletionGuard
from worker.report import EXIT_ITEMS_FAILED, EXIT_OK, LocationReport, RunReport
from worker.sync import SyncOptions, sync_location
from worker.velero import BACKUP, VOLUME_SNAPSHOT_CONTENT

# -- the pure rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("orphans", "total", "trips"),
    [
        (0, 0, False),
        (9, 9, False),  # under the floor, even at 100%
        (10, 10, True),  # an emptied bucket
        (10, 19, True),  # more than half
        (10, 20, False),  # exactly half is not more than half
        (10, 30, False),  # a third: retention catching up after a pause
        (500, 1000, False),
        (501, 1000, True),
    ],
)
def test_default_rule(orphans: int, total: int, trips: bool) -> None:
    guard = MassDeletionGuard()
    assert (guard.share, guard.floor) == (DEFAULT_SHARE, DEFAULT_FLOOR) == (0.5, 10)
    assert guard.trips(orphans, total) is trips
    assert bool(guard.blocked_reason(orphans, total)) is trips


def test_allow_overrides_but_still_trips() -> None:
    guard = MassDeletionGuard(allow=True)
    assert guard.trips(20, 20) is True
    assert guard.blocked_reason(20, 20) == ""


def test_share_one_disables_and_floor_zero_keeps_the_share() -> None:
    assert MassDeletionGuard(share=1.0).trips(100, 100) is False
    assert MassDeletionGuard(floor=0).trips(1, 1) is True
    assert MassDeletionGuard(floor=0).trips(0, 5) is False
    assert MassDeletionGuard(share=0.0, floor=3).trips(3, 1000) is True


def test_reason_names_the_numbers_and_the_way_out() -> None:
    reason = MassDeletionGuard().blocked_reason(12, 12)
    assert "12 of the 12 Backups" in reason
    assert "50%" in reason and "at least 10" in reason
    assert "--allow-mass-orphan-deletion" in reason


# -- through sync_location ----------------------------------------------------------------------


def emptied(count: int, location: str = "default") -> Env:
    """A location whose Backups are in the cluster while its bucket lists nothing."""
    env = Env(location_name=location)
    for i in range(count):
        env.cluster.add(BACKUP, cluster_backup(f"b{i:02}", location))
    return env


def sync_with(env: Env, guard: MassDeletionGuard, csi: bool = False) -> LocationReport:
    report = LocationReport(name=env.location_name)
    options = SyncOptions(namespace=NS, csi=csi, concurrency=1, now=lambda: NOW, guard=guard)
    sync_location(env.location, env.backup_store(), env.cluster, options, report)
    return report


def test_emptied_bucket_deletes_nothing_and_says_why() -> None:
    env = emptied(12)

    report = env.sync()

    assert env.deletes() == []
    assert len(env.backups()) == 12
    assert report.orphans_deleted == 0
    assert report.orphans_blocked == 12
    assert "12 of the 12 Backups" in report.mass_deletion_blocked
    assert report.errors == []
    assert report.items_failed is True
    assert report.status_patched is True  # the creates of this run stand; the guard re-checks


def test_override_deletes_them_all() -> None:
    env = emptied(12)

    report = sync_with(env, MassDeletionGuard(allow=True))

    assert sorted(env.deletes("backups")) == [f"b{i:02}" for i in range(12)]
    assert report.orphans_deleted == 12
    assert report.mass_deletion_blocked == ""
    assert env.backups() == {}


def test_small_location_under_the_floor_is_not_guarded() -> None:
    env = emptied(9)
    report = env.sync()
    assert report.orphans_deleted == 9
    assert not report.items_failed


def test_normal_retention_is_not_guarded() -> None:
    env = emptied(0)
    for i in range(30):
        env.cluster.add(BACKUP, cluster_backup(f"kept{i:02}", "default"))
        if i >= 10:
            env.bucket.put_backup(f"kept{i:02}")
    report = env.sync()
    assert report.orphans_deleted == 10
    assert report.mass_deletion_blocked == ""


def test_share_counts_only_this_locations_backups() -> None:
    env = emptied(10)
    for i in range(100):  # another location's Backups do not dilute the share
        env.cluster.add(BACKUP, cluster_backup(f"other{i:03}", "elsewhere"))
    report = env.sync()
    assert report.orphans_blocked == 10
    assert env.deletes() == []


def test_blocked_location_keeps_its_csi_snapshots() -> None:
    env = emptied(10)
    env.cluster.add(VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-b00", "b00"))
    report = sync_with(env, MassDeletionGuard(), csi=True)
    assert report.orphans_blocked == 10
    assert "vsc-b00" in env.cluster.of(VOLUME_SNAPSHOT_CONTENT)
    assert env.deletes() == []


def test_custom_thresholds() -> None:
    env = emptied(3)
    report = sync_with(env, MassDeletionGuard(share=0.5, floor=3))
    assert report.orphans_blocked == 3
    env2 = emptied(3)
    report2 = sync_with(env2, MassDeletionGuard(share=0.5, floor=4))
    assert report2.orphans_deleted == 3


# -- whole runs: exit code, summary, dry run, flags ------------------------------------------------


def run_world(**overrides: Any) -> tuple[FakeCluster, RunReport]:
    world = World(bsl("default", default=True), bsl("fine"))
    for i in range(15):
        world.cluster.add(BACKUP, cluster_backup(f"b{i:02}", "default"))
    return world.cluster, world.run(**overrides)


def test_run_exits_3_and_the_summary_tells() -> None:
    cluster, report = run_world()
    assert report.exit_code == EXIT_ITEMS_FAILED
    assert len(cluster.of(BACKUP, NS)) == 15
    text = report.render("text")
    assert "orphans blocked 15" in text
    assert "  blocked: mass deletion blocked: 15 of the 15 Backups" in text
    doc = json.loads(report.render("json"))
    default = doc["locations"][0]
    assert default["orphansBlocked"] == 15 and default["orphansDeleted"] == 0
    assert default["massDeletionBlocked"].startswith("mass deletion blocked")
    assert doc["locations"][1]["massDeletionBlocked"] == ""
    assert doc["exitCode"] == 3


def test_run_with_override_exits_0() -> None:
    cluster, report = run_world(allow_mass_orphan_deletion=True)
    assert report.exit_code == EXIT_OK
    assert cluster.of(BACKUP, NS) == {}


def test_run_with_thresholds_from_settings() -> None:
    cluster, report = run_world(mass_orphan_floor=16)
    assert report.exit_code == EXIT_OK
    assert cluster.of(BACKUP, NS) == {}


def test_dry_run_is_guarded_too() -> None:
    _, report = run_world(dry_run=True)
    assert report.exit_code == EXIT_ITEMS_FAILED
    plan = report.locations[0].plan
    assert not [p for p in plan if p.startswith("would delete")]


def test_flags_defaults(rec: Recorder) -> None:
    s = parsed(rec)
    assert (s.mass_orphan_share, s.mass_orphan_floor) == (0.5, 10)
    assert s.allow_mass_orphan_deletion is False
    assert s.pushgateway_url is None


def test_flags_set(rec: Recorder) -> None:
    s = parsed(
        rec,
        "--mass-orphan-share",
        "0.25",
        "--mass-orphan-floor",
        "3",
        "--allow-mass-orphan-deletion",
        "--pushgateway-url",
        "http://pgw:9091",
    )
    assert (s.mass_orphan_share, s.mass_orphan_floor) == (0.25, 3)
    assert s.allow_mass_orphan_deletion is True
    assert s.pushgateway_url == "http://pgw:9091"


@pytest.mark.parametrize(
    "argv",
    [
        ["--mass-orphan-share", "1.5"],
        ["--mass-orphan-share", "-0.1"],
        ["--mass-orphan-share", "half"],
        ["--mass-orphan-floor", "-1"],
        ["--mass-orphan-floor", "2.5"],
    ],
)
def test_bad_guard_flags_exit_2(rec: Recorder, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert rec.settings == []


def test_help_documents_the_guard(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for flag in (
        "--mass-orphan-share",
        "--mass-orphan-floor",
        "--allow-mass-orphan-deletion",
        "--pushgateway-url",
    ):
        assert flag in out
    assert "mass-deletion guard kept" in out
