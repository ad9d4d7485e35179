"""``backup-sync explain NAME`` on the real control plane and an S3 emulator: one verdict per
location first, the evidence after it, nothing written, exit 0 when the backup was found
somewhere and 4 when nowhere."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import SeedBackup, backup_document
from tests.integration.env import CLI, SyncEnv

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


def explain(env: SyncEnv, name: str, *args: str) -> tuple[int, Obj]:
    argv = [
        CLI,
        "explain",
        name,
        "--kubeconfig",
        str(env.cp.kubeconfig),
        "--namespace",
        env.namespace,
        "--log-format",
        "json",
        *args,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def verdict(result: Obj, location: str = "default") -> str:
    [finding] = [f for f in result["locations"] if f["location"] == location]
    return str(finding["verdict"])


def evidence(result: Obj, location: str = "default") -> str:
    [finding] = [f for f in result["locations"] if f["location"] == location]
    return "\n".join(finding["evidence"])


@pytest.fixture
def env(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> SyncEnv:
    """One location "default" (never synced) with a bucket of every kind of case, and the
    cluster side of some of them."""
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.seed(
        SeedBackup("new-1", pod_volume_backups=2),
        SeedBackup("synced-1"),
        SeedBackup("running-1", phase="InProgress"),
        SeedBackup("waiting-1", phase="WaitingForPluginOperations"),
        SeedBackup("scheduled-1", schedule=("nightly", "uid-elsewhere")),
    )
    env.put("backups/no-metadata-1/no-metadata-1-logs.gz", gzip.compress(b"log"))
    env.put("backups/corrupt-1/velero-backup.json", b"{not json")
    env.add_backup("synced-1", "default")
    env.add_backup("orphan-1", "default")
    env.add_backup("failed-orphan-1", "default", phase="Failed")
    return env


def test_a_backup_the_next_run_would_create(env: SyncEnv) -> None:
    before = env.snapshot()

    code, result = explain(env, "new-1")

    assert code == 0 and result["found"] is True
    assert verdict(result) == "would be created on the next run of location default"
    said = evidence(result)
    assert "read backups/new-1/velero-backup.json: a Backup, phase Completed" in said
    assert "pod volume backups: 2" in said
    assert "location: never synced" in said
    assert env.snapshot() == before  # nothing written


def test_a_synced_backup(env: SyncEnv) -> None:
    code, result = explain(env, "synced-1")
    assert code == 0
    assert verdict(result) == "in the cluster, synced by location default"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("no-metadata-1", "will not sync: no velero-backup.json in backups/no-metadata-1/"),
        ("running-1", "will not sync: phase InProgress in the store"),
        ("waiting-1", "will not sync: phase WaitingForPluginOperations until it expires"),
        ("corrupt-1", "will not sync: its velero-backup.json cannot be used"),
    ],
)
def test_backups_that_will_not_sync(env: SyncEnv, name: str, says: str) -> None:
    code, result = explain(env, name)
    assert code == 0
    assert verdict(result).startswith(says), verdict(result)


def test_an_orphan_the_next_run_would_delete(env: SyncEnv) -> None:
    code, result = explain(env, "orphan-1")
    assert code == 0
    assert verdict(result) == "would be deleted as an orphan on the next run of location default"
    assert "no folder backups/orphan-1/" in evidence(result)


def test_an_orphan_in_a_phase_never_deleted(env: SyncEnv) -> None:
    code, result = explain(env, "failed-orphan-1")
    assert code == 0
    assert "kept: phase Failed is never deleted" in verdict(result)


def test_an_orphan_the_guard_would_keep(env: SyncEnv) -> None:
    for i in range(10):
        env.add_backup(f"gone-{i}", "default")

    code, result = explain(env, "gone-0")

    assert code == 0
    assert "the mass-deletion guard keeps it" in verdict(result)
    # orphan-1 and the ten, of the thirteen Backups labelled default (failed-orphan-1 too)
    assert "11 of 13 Backups" in verdict(result)


def test_a_schedule_owner_is_checked_as_the_sync_would(env: SyncEnv) -> None:
    code, result = explain(env, "scheduled-1")
    assert code == 0
    assert "owner Schedule nightly: dropped (no such Schedule here)" in evidence(result)


def test_a_backup_found_nowhere_exits_4(env: SyncEnv) -> None:
    code, result = explain(env, "nowhere-1")
    assert code == 4 and result["found"] is False
    assert verdict(result) == "not in location default"


def test_a_location_that_is_not_due_or_disabled_says_so(env: SyncEnv) -> None:
    location = env.location("default")
    location["status"] = {"lastSyncedTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    location["spec"]["backupSyncPeriod"] = "1h"
    env.ok("PUT", env.path("backupstoragelocations", "default"), location)

    _, result = explain(env, "new-1")
    assert verdict(result).startswith("would be created on the next run of location default")
    assert "; but location default is not due until" in verdict(result)

    location = env.location("default")
    location["spec"]["backupSyncPeriod"] = "0s"
    env.ok("PUT", env.path("backupstoragelocations", "default"), location)
    _, result = explain(env, "new-1")
    assert "; but location default is disabled (backupSyncPeriod 0)" in verdict(result)


def test_a_location_that_is_not_available_under_the_1_17_profile(env: SyncEnv) -> None:
    _, result = explain(env, "new-1", "--velero-version", "1.17.0")
    assert "is not Available" in verdict(result) and "Velero 1.17.0 skips it" in verdict(result)
    assert result["veleroProfile"]["version"] == "1.17.0"


def test_a_backup_of_another_location(env: SyncEnv) -> None:
    env.add_location("other")
    env.put(
        "backups/elsewhere-1/velero-backup.json",
        json.dumps(backup_document(SeedBackup("elsewhere-1"), datetime.now(UTC))).encode(),
    )
    env.add_backup("elsewhere-1", "other")

    code, result = explain(env, "elsewhere-1", "--location", "default")

    assert code == 0
    assert [f["location"] for f in result["locations"]] == ["default"]
    assert verdict(result) == "in the cluster already, from location other: skipped here"


def test_a_backup_whose_dependents_are_pending(env: SyncEnv) -> None:
    env.ok(
        "PATCH",
        env.path("backups", "synced-1"),
        {"metadata": {"annotations": {"backup-sync.io/dependents-pending": "true"}}},
        content_type="application/merge-patch+json",
    )
    _, result = explain(env, "synced-1")
    assert verdict(result) == (
        "in the cluster, synced by location default; its dependents are completed on its next run"
    )


def test_text_output_leads_with_the_verdict(env: SyncEnv) -> None:
    argv = [
        CLI,
        "explain",
        "new-1",
        "--kubeconfig",
        str(env.cp.kubeconfig),
        "--namespace",
        env.namespace,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("backup new-1 (Velero 1.15.0 profile)")
    assert lines[1] == "location default: would be created on the next run of location default"
    assert lines[2].startswith("  location: ")
