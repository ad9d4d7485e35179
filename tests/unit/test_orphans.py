"""Deleting Backups whose folder is gone from the store (Velero's deleteOrphanedBackups)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from harness.velero_docs import snapshot_content, volume_snapshot
from tests.unit.helpers import (
    NS,
    Env,
    cluster_backup,
    fail_first_backup_list,
)
from worker.cluster_backups import ClusterBackup
from worker.errors import ClusterError, NotFound
from worker.orphans import orphans_of
from worker.profile import VeleroProfile
from worker.report import ItemFailure
from worker.velero import BACKUP, VOLUME_SNAPSHOT, VOLUME_SNAPSHOT_CONTENT, Kind

Obj = dict[str, Any]

LONG = "primary-backup-storage-location-in-the-eu-west-1-region-of-aws-cloud"
LONG_LABEL = LONG[:57] + hashlib.sha256(LONG.encode()).hexdigest()[:6]


# -- the pure rule --------------------------------------------------------------------------------


def test_orphans_of_rule() -> None:
    existing = [
        ClusterBackup("done", "loc", "Completed"),
        ClusterBackup("partial", "loc", "PartiallyFailed"),
        ClusterBackup("in-store", "loc", "Completed"),
        ClusterBackup("failed", "loc", "Failed"),
        ClusterBackup("running", "loc", "InProgress"),
        ClusterBackup("deleting", "loc", "Deleting"),
        ClusterBackup("new", "loc", "New"),
        ClusterBackup("nophase", "loc", ""),
        ClusterBackup("elsewhere", "other", "Completed"),
        ClusterBackup("unlabelled", None, "Completed"),
    ]
    assert orphans_of("loc", existing, {"in-store"}) == ["done", "partial"]


def test_orphans_of_long_location_uses_valid_label() -> None:
    existing = [
        ClusterBackup("hashed", LONG_LABEL, "Completed"),
        ClusterBackup("raw", LONG, "Completed"),  # a label can never hold this, but be exact
        ClusterBackup("truncated", LONG[:63], "Completed"),
    ]
    assert orphans_of(LONG, existing, set()) == ["hashed"]


# -- through sync_location -------------------------------------------------------------------------


def test_orphan_deleted() -> None:
    env = Env()
    env.bucket.put_backup("kept")
    env.cluster.add(BACKUP, cluster_backup("kept", "default"))
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.cluster.add(BACKUP, cluster_backup("orphan-pf", "default", phase="PartiallyFailed"))

    report = env.sync()

    assert sorted(env.deletes("backups")) == ["orphan", "orphan-pf"]
    assert set(env.backups()) == {"kept"}
    assert report.orphans_deleted == 2
    assert report.errors == []


@pytest.mark.parametrize(
    "phase", ["InProgress", "Failed", "Deleting", "New", "FailedValidation", "Finalizing", ""]
)
def test_orphan_with_other_phase_kept(phase: str) -> None:
    env = Env()
    env.cluster.add(BACKUP, cluster_backup("b", "default", phase=phase))

    report = env.sync()

    assert env.deletes() == []
    assert "b" in env.backups()
    assert report.orphans_deleted == 0


def test_backup_of_other_location_kept() -> None:
    env = Env()
    env.cluster.add(BACKUP, cluster_backup("b", "secondary"))
    env.cluster.add(BACKUP, cluster_backup("unlabelled", None))

    env.sync()

    assert env.deletes() == []
    assert set(env.backups()) == {"b", "unlabelled"}


def test_backup_present_in_store_kept() -> None:
    env = Env()
    env.bucket.put_backup("b")
    env.cluster.add(BACKUP, cluster_backup("b", "default"))

    env.sync()

    assert env.deletes() == []


def test_backup_present_in_store_without_metadata_kept() -> None:
    # The folder is listed, so the backup is not an orphan even if its metadata is gone.
    env = Env()
    env.bucket.put_raw("b", "b-logs.gz", b"x")
    env.cluster.add(BACKUP, cluster_backup("b", "default"))

    env.sync()

    assert env.deletes() == []


def test_backup_in_other_namespace_never_touched() -> None:
    env = Env()
    env.cluster.add(BACKUP, cluster_backup("b", "default", namespace="other-ns"))

    env.sync()

    assert env.deletes() == []


def test_long_location_name_orphans_selected_by_hashed_label() -> None:
    env = Env(location_name=LONG)
    env.cluster.add(BACKUP, cluster_backup("orphan", LONG_LABEL))
    env.cluster.add(BACKUP, cluster_backup("not-ours", LONG[:63]))

    env.sync()

    assert env.deletes() == ["orphan"]


def test_long_location_name_relist_uses_hashed_label_selector() -> None:
    env = Env(location_name=LONG)
    selectors = fail_first_backup_list(env.cluster)
    env.cluster.add(BACKUP, cluster_backup("orphan", LONG_LABEL))

    env.sync()

    assert selectors == [None, f"velero.io/storage-location={LONG_LABEL}"]
    assert env.deletes() == ["orphan"]


def test_orphan_delete_not_found_is_not_an_error() -> None:
    env = Env()
    env.cluster.add(BACKUP, cluster_backup("gone", "default"))
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.cluster.fail_on[("delete", "gone")] = NotFound("gone", 404)

    report = env.sync(csi=True)

    assert report.errors == []
    assert env.deletes("backups") == ["orphan"]
    assert report.orphans_deleted == 1
    # nothing CSI-related for a backup someone else deleted
    assert env.cluster.calls.count(("list", "volumesnapshots")) == 1


def test_orphan_delete_error_reported_others_deleted() -> None:
    env = Env()
    env.cluster.add(BACKUP, cluster_backup("a", "default"))
    env.cluster.add(BACKUP, cluster_backup("b", "default"))
    env.cluster.fail_on[("delete", "a")] = ClusterError("delete: 500", 500)

    report = env.sync()

    assert env.deletes() == ["b"]
    assert report.orphans_deleted == 1
    assert report.errors == [ItemFailure(f"Backup {NS}/a", "delete: 500")]
    assert report.status_patched is True


# -- CSI cleanup after orphan deletes -----------------------------------------------------------
# Velero 1.15-1.17 (profiles below 1.18): after an orphan's delete, its VolumeSnapshots in the
# Velero namespace (the only namespace its manager cache sees) and its VolumeSnapshotContents,
# except one that a live VolumeSnapshot outside the Velero namespace is bound to. Velero's
# restore labels the snapshots it restores with velero.io/backup-name too: those are data.


def csi_env(backup: str = "orphan") -> Env:
    """An orphan Backup with a VolumeSnapshot in the Velero namespace and a restored one in an
    application namespace, contents bound to each and to a placeholder, plus snapshot
    objects of another backup that must survive."""
    env = Env()
    env.cluster.add(BACKUP, cluster_backup(backup, "default"))
    label = backup
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-a", NS, label))
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-b", NS, label))
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-restored", "app-b", label))
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-other", NS, "other-backup"))
    env.cluster.add(VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-1", label, (NS, "vs-a")))
    env.cluster.add(
        VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-static", label, ("ns-u1", "name-u1"))
    )
    env.cluster.add(
        VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-restored", label, ("app-b", "vs-restored"))
    )
    env.cluster.add(VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-other", "other-backup"))
    return env


def test_csi_snapshots_deleted_after_orphan_delete_only_in_the_velero_namespace() -> None:
    env = csi_env()

    report = env.sync(csi=True)

    assert env.deletes("backups") == ["orphan"]
    assert sorted(env.deletes("volumesnapshots")) == ["vs-a", "vs-b"]
    assert sorted(env.deletes("volumesnapshotcontents")) == ["vsc-1", "vsc-static"]
    assert set(env.cluster.of(VOLUME_SNAPSHOT)) == {"vs-other", "vs-restored"}
    # bound to a live VolumeSnapshot in an application namespace: with deletionPolicy
    # Delete, deleting it would delete the cloud snapshot the application restored
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"vsc-other", "vsc-restored"}
    assert report.errors == []


def test_a_content_whose_application_snapshot_is_gone_is_deleted() -> None:
    env = csi_env()
    del env.cluster.objects[("volumesnapshots", "app-b", "vs-restored")]

    env.sync(csi=True)

    assert sorted(env.deletes("volumesnapshotcontents")) == ["vsc-1", "vsc-restored", "vsc-static"]


def test_a_content_whose_binding_cannot_be_checked_is_kept() -> None:
    env = csi_env()
    env.cluster.fail_on[("get", "vs-restored")] = ClusterError("get vs: 503", 503)

    report = env.sync(csi=True)

    assert "vsc-restored" in env.cluster.of(VOLUME_SNAPSHOT_CONTENT)
    assert [e.object for e in report.errors] == ["VolumeSnapshotContent vsc-restored"]
    assert "kept" in report.errors[0].reason


def test_no_csi_clean_up_from_the_velero_1_18_profile_on() -> None:
    env = csi_env()

    report = env.sync(csi=True, profile=VeleroProfile((1, 18, 0)))

    assert env.deletes() == ["orphan"]
    assert report.orphans_deleted == 1
    assert not [c for c in env.cluster.calls if c[1].startswith("volumesnapshot")]


def test_csi_snapshots_untouched_without_csi_feature() -> None:
    env = csi_env()

    env.sync(csi=False)

    assert env.deletes() == ["orphan"]
    assert len(env.cluster.of(VOLUME_SNAPSHOT)) == 4
    assert not [c for c in env.cluster.calls if c[1].startswith("volumesnapshot")]


def test_csi_snapshots_kept_when_orphan_delete_failed() -> None:
    env = csi_env()
    env.cluster.fail_on[("delete", "orphan")] = ClusterError("delete: 500", 500)

    report = env.sync(csi=True)

    assert env.deletes() == []
    assert len(env.cluster.of(VOLUME_SNAPSHOT)) == 4
    assert len(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == 4
    assert not [c for c in env.cluster.calls if c[1].startswith("volumesnapshot")]
    assert [e.object for e in report.errors] == [f"Backup {NS}/orphan"]


def test_csi_cleanup_uses_valid_label_of_long_backup_name() -> None:
    name = "b" * 70
    label = "b" * 57 + hashlib.sha256(name.encode()).hexdigest()[:6]
    env = Env()
    lists: list[tuple[str, str | None, str | None]] = []

    def record(kind: Kind, namespace: str | None, label_selector: str | None) -> None:
        lists.append((kind.plural, namespace, label_selector))

    env.cluster.before("list", None, record)
    env.cluster.add(BACKUP, cluster_backup(name, "default"))
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-1", NS, label))
    env.cluster.add(VOLUME_SNAPSHOT, volume_snapshot("vs-2", "ns-2", label))
    env.cluster.add(VOLUME_SNAPSHOT_CONTENT, snapshot_content("vsc-1", label))

    env.sync(csi=True)

    selector = f"velero.io/backup-name={label}"
    assert ("volumesnapshots", NS, selector) in lists
    assert ("volumesnapshotcontents", None, selector) in lists
    assert env.deletes("volumesnapshots") == ["vs-1"]
    assert env.deletes("volumesnapshotcontents") == ["vsc-1"]


def test_csi_snapshot_delete_not_found_is_not_an_error() -> None:
    env = csi_env()
    env.cluster.fail_on[("delete", "vs-a")] = NotFound("vs-a", 404)

    report = env.sync(csi=True)

    assert report.errors == []
    assert env.deletes("volumesnapshots") == ["vs-b"]
    assert sorted(env.deletes("volumesnapshotcontents")) == ["vsc-1", "vsc-static"]


def test_csi_snapshot_delete_error_reported_contents_still_deleted() -> None:
    env = csi_env()
    env.cluster.fail_on[("delete", "vs-a")] = ClusterError("500", 500)

    report = env.sync(csi=True)

    assert report.errors == [ItemFailure(f"VolumeSnapshot {NS}/vs-a", "500")]
    assert env.deletes("volumesnapshots") == ["vs-b"]
    assert sorted(env.deletes("volumesnapshotcontents")) == ["vsc-1", "vsc-static"]


def test_csi_snapshot_list_error_reported_contents_still_deleted() -> None:
    env = csi_env()
    env.cluster.fail_on[("list", "volumesnapshots")] = ClusterError("list vs: 500", 500)

    report = env.sync(csi=True)

    assert report.errors == [ItemFailure("VolumeSnapshots of orphan", "list vs: 500")]
    assert env.deletes("volumesnapshots") == []
    assert sorted(env.deletes("volumesnapshotcontents")) == ["vsc-1", "vsc-static"]


def test_csi_content_list_error_reported() -> None:
    env = csi_env()
    env.cluster.fail_on[("list", "volumesnapshotcontents")] = ClusterError("x", 500)

    report = env.sync(csi=True)

    assert report.errors == [ItemFailure("VolumeSnapshotContents of orphan", "x")]
    assert sorted(env.deletes("volumesnapshots")) == ["vs-a", "vs-b"]
    assert env.deletes("volumesnapshotcontents") == []
    assert report.orphans_deleted == 1


def test_csi_content_delete_error_reported_others_deleted() -> None:
    env = csi_env()
    env.cluster.fail_on[("delete", "vsc-1")] = ClusterError("y", 500)

    report = env.sync(csi=True)

    assert report.errors == [ItemFailure("VolumeSnapshotContent vsc-1", "y")]
    assert env.deletes("volumesnapshotcontents") == ["vsc-static"]
