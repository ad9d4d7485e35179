"""CSI objects synced with a backup under the EnableCSI feature."""

from __future__ import annotations

from harness.velero_docs import gzip_json, stored_pvb, stored_vsclass, stored_vscontent
from tests.unit.helpers import Env
from worker.errors import ClusterError, StoreError
from worker.report import ItemFailure
from worker.velero import VOLUME_SNAPSHOT_CLASS, VOLUME_SNAPSHOT_CONTENT


def csi_bucket(env: Env) -> None:
    env.bucket.put_backup(
        "b1",
        pvbs=[stored_pvb("p1", "b1")],
        vsclasses=[stored_vsclass("class-a"), stored_vsclass("class-b")],
        vscontents=[
            stored_vscontent("content-1", "b1", handle="snap-1"),
            stored_vscontent("content-2", "b1", handle="snap-2"),
        ],
    )


def test_csi_off_reads_and_writes_no_csi_objects() -> None:
    env = Env()
    csi_bucket(env)

    report = env.sync(csi=False)

    assert env.store.gets == [
        "backups/b1/velero-backup.json",
        "backups/b1/b1-podvolumebackups.json.gz",
    ]
    assert not [k for k in env.store.gets if "csi" in k]
    assert env.cluster.of(VOLUME_SNAPSHOT_CLASS) == {}
    assert env.cluster.of(VOLUME_SNAPSHOT_CONTENT) == {}
    assert (report.csi_snapshot_classes, report.csi_snapshot_contents) == (0, 0)
    assert report.created == 1
    assert report.pod_volume_backups == 1


def test_csi_on_creates_classes_and_static_contents() -> None:
    env = Env()
    csi_bucket(env)

    report = env.sync(csi=True)

    assert env.store.gets == [
        "backups/b1/velero-backup.json",
        "backups/b1/b1-podvolumebackups.json.gz",
        "backups/b1/b1-csi-volumesnapshotclasses.json.gz",
        "backups/b1/b1-csi-volumesnapshotcontents.json.gz",
    ]
    assert report.csi_snapshot_classes == 2
    assert report.csi_snapshot_contents == 2
    assert report.errors == []

    classes = env.cluster.of(VOLUME_SNAPSHOT_CLASS)
    assert set(classes) == {"class-a", "class-b"}
    assert classes["class-a"]["driver"] == "ebs.csi.aws.com"
    assert "resourceVersion" not in classes["class-a"]["metadata"]
    assert classes["class-a"]["metadata"]["uid"] != "vsclass-uid-class-a"

    contents = env.cluster.of(VOLUME_SNAPSHOT_CONTENT)
    assert set(contents) == {"content-1", "content-2"}
    c1 = contents["content-1"]
    assert c1["spec"]["source"] == {"snapshotHandle": "snap-1"}
    # the placeholder reference is built from the file's own uid, not the new one
    assert c1["spec"]["volumeSnapshotRef"] == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "namespace": "ns-vsc-uid-content-1",
        "name": "name-vsc-uid-content-1",
    }
    assert c1["metadata"]["uid"] != "vsc-uid-content-1"
    assert "resourceVersion" not in c1["metadata"]
    assert contents["content-2"]["spec"]["source"] == {"snapshotHandle": "snap-2"}
    assert contents["content-2"]["spec"]["volumeSnapshotRef"]["name"] == "name-vsc-uid-content-2"


def test_content_without_snapshot_handle_is_item_error_others_created() -> None:
    env = Env()
    env.bucket.put_backup(
        "b1",
        vsclasses=[],
        vscontents=[
            stored_vscontent("no-handle", "b1", handle=None),
            stored_vscontent("ok", "b1", handle="snap-ok"),
        ],
    )

    report = env.sync(csi=True)

    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"ok"}
    assert report.csi_snapshot_contents == 1
    assert report.errors == [
        ItemFailure("VolumeSnapshotContent no-handle", "has no status.snapshotHandle")
    ]


def test_csi_class_already_exists_is_fine() -> None:
    env = Env()
    env.cluster.add(VOLUME_SNAPSHOT_CLASS, {"metadata": {"name": "class-a"}, "driver": "x"})
    csi_bucket(env)

    report = env.sync(csi=True)

    assert report.errors == []
    assert report.csi_snapshot_classes == 1
    assert env.cluster.of(VOLUME_SNAPSHOT_CLASS)["class-a"]["driver"] == "x"  # untouched


def test_csi_create_error_is_item_error_others_created() -> None:
    env = Env()
    env.cluster.fail_on[("create", "class-a")] = ClusterError("403", 403)
    env.cluster.fail_on[("create", "content-1")] = ClusterError("422", 422)
    csi_bucket(env)

    report = env.sync(csi=True)

    assert set(env.cluster.of(VOLUME_SNAPSHOT_CLASS)) == {"class-b"}
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"content-2"}
    assert report.errors == [
        ItemFailure("VolumeSnapshotClass class-a", "403"),
        ItemFailure("VolumeSnapshotContent content-1", "422"),
    ]


def test_corrupt_class_file_still_syncs_contents() -> None:
    env = Env()
    env.bucket.put_backup("b1", vscontents=[stored_vscontent("content-1", "b1")])
    env.bucket.put_raw("b1", "b1-csi-volumesnapshotclasses.json.gz", b"not gzip")

    report = env.sync(csi=True)

    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"content-1"}
    assert [e.object for e in report.errors] == ["CSI snapshot classes of b1"]
    assert "b1-csi-volumesnapshotclasses.json.gz" in report.errors[0].reason


def test_corrupt_content_file_is_item_error() -> None:
    env = Env()
    env.bucket.put_backup("b1", vsclasses=[stored_vsclass("class-a")])
    env.bucket.put_raw("b1", "b1-csi-volumesnapshotcontents.json.gz", gzip_json({"x": 1}))

    report = env.sync(csi=True)

    assert set(env.cluster.of(VOLUME_SNAPSHOT_CLASS)) == {"class-a"}
    assert [e.object for e in report.errors] == ["CSI snapshot contents of b1"]


def test_csi_store_read_error_is_item_error() -> None:
    env = Env()
    csi_bucket(env)
    key = env.bucket.key("b1", "b1-csi-volumesnapshotcontents.json.gz")
    env.store.fail_get[key] = StoreError("timeout")

    report = env.sync(csi=True)

    assert report.errors == [ItemFailure("CSI snapshot contents of b1", "timeout")]
    assert report.csi_snapshot_classes == 2


def test_absent_csi_files_are_empty() -> None:
    env = Env()
    env.bucket.put_backup("b1")

    report = env.sync(csi=True)

    assert report.errors == []
    assert report.created == 1
    assert (report.csi_snapshot_classes, report.csi_snapshot_contents) == (0, 0)
