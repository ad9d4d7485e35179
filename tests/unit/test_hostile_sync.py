"""Hostile bucket contents through sync_location: refused per item, the rest synced."""

from __future__ import annotations

from harness.velero_docs import stored_backup, stored_pvb, stored_vsclass, stored_vscontent
from tests.unit.helpers import NS, Env
from worker.velero import POD_VOLUME_BACKUP, VOLUME_SNAPSHOT_CLASS, VOLUME_SNAPSHOT_CONTENT


def test_invalid_folder_names_are_never_read() -> None:
    env = Env()
    env.bucket.put_backup("good")
    for odd in ("Upper", "with space", "a\nb", "x" * 300):
        backup = stored_backup(odd)
        env.bucket.put_backup(backup)

    report = env.sync()

    assert report.created == 1 and env.creates() == ["good"]
    assert len(report.errors) == 4
    assert all(e.object.startswith("backup folder '") for e in report.errors)
    assert all("folder name" in e.reason for e in report.errors)
    assert all(len(e.object) < 120 for e in report.errors)
    read = {key.split("/")[1] for key in env.store.gets}
    assert read == {"good"}


def test_backup_in_a_phase_velero_never_stores_is_refused() -> None:
    env = Env()
    env.bucket.put_backup("good")
    env.bucket.put_backup(stored_backup("would-run", phase="New"))
    no_status = stored_backup("no-status")
    del no_status["status"]
    env.bucket.put_backup(no_status)

    report = env.sync()

    assert env.creates() == ["good"]
    assert {e.object: "status.phase" in e.reason for e in report.errors} == {
        f"Backup {NS}/would-run": True,
        f"Backup {NS}/no-status": True,
    }


def test_pvb_of_another_backup_is_an_item_error_and_the_rest_goes_in() -> None:
    env = Env()
    mine = stored_pvb("mine", "b1")
    theirs = stored_pvb("theirs", "b1")
    theirs["metadata"]["labels"]["velero.io/backup-name"] = "other"
    env.bucket.put_backup("b1", pvbs=[mine, theirs])

    report = env.sync()

    assert report.created == 1 and report.pod_volume_backups == 1
    assert set(env.cluster.of(POD_VOLUME_BACKUP, NS)) == {"mine"}
    assert [(e.object, e.reason) for e in report.errors] == [
        (
            f"PodVolumeBackup {NS}/theirs",
            "belongs to backup 'other' (label velero.io/backup-name), not 'b1'",
        )
    ]


def test_hostile_csi_objects() -> None:
    env = Env()
    vsclass = stored_vsclass("cls")
    vsclass["metadata"]["annotations"] = {"snapshot.storage.kubernetes.io/is-default-class": "true"}
    nameless = stored_vsclass("x")
    del nameless["metadata"]["name"]
    foreign = stored_vscontent("foreign", "other")
    good = stored_vscontent("good", "b1")
    good["metadata"]["finalizers"] = ["example.com/block"]
    env.bucket.put_backup("b1", vsclasses=[vsclass, nameless], vscontents=[foreign, good])

    report = env.sync(csi=True)

    classes = env.cluster.of(VOLUME_SNAPSHOT_CLASS)
    assert set(classes) == {"cls"}
    assert (
        "annotations" not in classes["cls"]["metadata"]
        or not classes["cls"]["metadata"]["annotations"]
    )
    contents = env.cluster.of(VOLUME_SNAPSHOT_CONTENT)
    assert set(contents) == {"good"}
    assert "finalizers" not in contents["good"]["metadata"]
    assert sorted(e.object for e in report.errors) == [
        "VolumeSnapshotClass None",
        "VolumeSnapshotContent foreign",
    ]


def test_unexpected_shapes_never_become_unexpected_errors() -> None:
    env = Env()
    odd = stored_backup("odd")
    odd["metadata"]["ownerReferences"] = 5
    odd["metadata"]["labels"] = None
    odd["metadata"]["finalizers"] = ["example.com/block"]
    odd["metadata"]["namespace"] = "kube-system"
    odd["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    odd["spec"] = None
    env.bucket.put_backup(odd)

    report = env.sync()

    assert report.errors == []
    created = env.backups()["odd"]
    assert created["metadata"]["namespace"] == NS
    assert "finalizers" not in created["metadata"]
    assert "deletionTimestamp" not in created["metadata"]
    assert "ownerReferences" not in created["metadata"]
    assert created["spec"] == {"storageLocation": "default"}
