"""The sync of one location on the fakes: creates, skips, owner references, pod volume
backups, failures, the status patch (worker.sync.sync_location)."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from typing import Any

import pytest

from harness.velero_docs import gzip_json, stored_backup, stored_pvb
from tests.unit.fakes import FakeCluster
from tests.unit.helpers import (
    FUTURE,
    NOW,
    NOW_STAMP,
    NS,
    PAST,
    Env,
    cluster_backup,
    fail_first_backup_list,
)
from worker.errors import AlreadyExists, ClusterError, StoreError
from worker.logs import TextFormatter
from worker.pool import bounded_map
from worker.report import (
    SKIP_ALREADY_EXISTS,
    SKIP_NO_METADATA,
    SKIP_NOT_EXPIRED,
    ItemFailure,
    LocationReport,
)
from worker.storage.layout import BackupStore
from worker.sync import SyncOptions, sync_location
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION, POD_VOLUME_BACKUP, SCHEDULE, Kind

Obj = dict[str, Any]


def schedule(name: str, uid: str) -> Obj:
    return {
        "apiVersion": "velero.io/v1",
        "kind": "Schedule",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
    }


def schedule_ref(name: str, uid: str) -> Obj:
    return {"apiVersion": "velero.io/v1", "kind": "Schedule", "name": name, "uid": uid}


# -- the happy path ------------------------------------------------------------------------------


def test_creates_missing_backups_and_counts() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_backup("b2")
    env.bucket.put_backup("already")
    env.cluster.add(BACKUP, cluster_backup("already", "default"))

    report = env.sync()

    assert report.listed == 3
    assert report.in_cluster == 1
    assert report.to_sync == 2
    assert report.created == 2
    assert report.errors == []
    assert sorted(env.creates("backups")) == ["b1", "b2"]
    # nothing read for the backup that is already in the cluster
    assert not [k for k in env.store.gets if "/already/" in k]


def test_created_backup_is_rewritten() -> None:
    env = Env(location_name="secondary")
    stored = stored_backup("b1", labels={"app": "x"})
    env.bucket.put_backup(stored)

    env.sync()

    created = env.backups()["b1"]
    meta = created["metadata"]
    assert stored["metadata"]["namespace"] != NS
    assert meta["namespace"] == NS
    assert meta["labels"] == {"velero.io/storage-location": "secondary", "app": "x"}
    assert created["spec"]["storageLocation"] == "secondary"
    for key in ("resourceVersion", "creationTimestamp", "generation", "managedFields"):
        assert key in stored["metadata"]
        assert key not in meta
    assert meta["uid"] != stored["metadata"]["uid"]  # assigned by the cluster
    assert "ownerReferences" not in meta
    assert created["status"]["phase"] == "Completed"


def test_long_location_name_labels_created_backup_with_valid_label() -> None:
    name = "a-very-long-backup-storage-location-name-that-exceeds-sixty-three-chars"
    assert len(name) > 63
    env = Env(location_name=name)
    env.bucket.put_backup("b1")

    env.sync()

    label = name[:57] + hashlib.sha256(name.encode()).hexdigest()[:6]
    assert env.backups()["b1"]["metadata"]["labels"]["velero.io/storage-location"] == label
    assert env.backups()["b1"]["spec"]["storageLocation"] == name


def test_prefix_is_honoured() -> None:
    env = Env(prefix="cluster-a/velero")
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])

    env.sync()

    assert env.creates() == ["b1", "p1"]
    assert "cluster-a/velero/backups/b1/velero-backup.json" in env.store.gets


def test_empty_store_and_cluster() -> None:
    env = Env()
    report = env.sync()
    assert (report.listed, report.created, report.to_sync) == (0, 0, 0)
    assert env.creates() == []
    assert report.status_patched is True


# -- velero-backup.json problems -----------------------------------------------------------------


def test_missing_metadata_is_skipped_with_reason() -> None:
    env = Env()
    env.bucket.put_raw("orphan-folder", "orphan-folder-logs.gz", b"x")
    env.bucket.put_backup("b2")

    report = env.sync()

    assert report.skipped == {SKIP_NO_METADATA: 1}
    assert report.errors == []
    assert env.creates("backups") == ["b2"]
    # no PVB read for a skipped backup
    assert "backups/orphan-folder/orphan-folder-podvolumebackups.json.gz" not in env.store.gets


def test_corrupt_metadata_is_item_error_and_others_still_created() -> None:
    env = Env()
    env.bucket.put_raw("bad", "velero-backup.json", b"{corrupt")
    env.bucket.put_backup("good1")
    env.bucket.put_backup("good2")

    report = env.sync()

    assert sorted(env.creates("backups")) == ["good1", "good2"]
    assert report.created == 2
    assert len(report.errors) == 1
    assert report.errors[0].object == f"Backup {NS}/bad"
    assert "backups/bad/velero-backup.json" in report.errors[0].reason
    assert "not valid JSON" in report.errors[0].reason
    assert report.status_patched is True


def test_wrong_kind_is_item_error() -> None:
    env = Env()
    obj = stored_backup("b1")
    obj["kind"] = "Restore"
    env.bucket.put_backup(obj)
    env.bucket.put_backup("b2")

    report = env.sync()

    assert env.creates("backups") == ["b2"]
    assert [e.object for e in report.errors] == [f"Backup {NS}/b1"]
    assert "kind 'Restore'" in report.errors[0].reason


def test_wrong_api_version_is_item_error() -> None:
    env = Env()
    obj = stored_backup("b1")
    obj["apiVersion"] = "velero.io/v2"
    env.bucket.put_backup(obj)

    report = env.sync()

    assert env.creates("backups") == []
    assert [e.object for e in report.errors] == [f"Backup {NS}/b1"]
    assert "velero.io/v2" in report.errors[0].reason


def test_metadata_name_not_matching_folder_is_item_error() -> None:
    env = Env()
    obj = stored_backup("other-name")
    env.bucket.put_raw("folder", "velero-backup.json", json.dumps(obj).encode())

    report = env.sync()

    assert env.creates() == []
    assert report.errors == [
        ItemFailure(
            f"Backup {NS}/folder", "metadata.name 'other-name' does not match its folder 'folder'"
        )
    ]


def test_an_item_failure_is_logged_with_its_location_and_backup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "another-backup")])
    caplog.set_level(logging.ERROR, logger="worker.backup_sync")

    report = env.sync()

    (record,) = caplog.records
    context = vars(record)
    assert (context["location"], context["backup"]) == ("default", "b1")
    assert context["object"] == f"PodVolumeBackup {NS}/p1"
    assert report.errors == [ItemFailure(f"PodVolumeBackup {NS}/p1", context["error"])]


def test_a_folder_name_no_backup_can_have_is_logged_quoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = Env()
    env.bucket.put_backup(stored_backup("a\nb"))
    caplog.set_level(logging.ERROR, logger="worker.backup_sync")

    report = env.sync()

    (record,) = caplog.records
    line = TextFormatter().format(record)
    assert "\n" not in line  # one line: a name cannot forge log lines of its own
    assert "backup='a\\nb'" in line
    assert [e.object for e in report.errors] == ["backup folder 'a\\nb'"]


def test_metadata_without_name_is_item_error() -> None:
    env = Env()
    obj = stored_backup("b1")
    del obj["metadata"]["name"]
    env.bucket.put_raw("b1", "velero-backup.json", json.dumps(obj).encode())

    report = env.sync()

    assert env.creates() == []
    assert [e.object for e in report.errors] == [f"Backup {NS}/b1"]


def test_metadata_too_large_is_item_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.storage import layout

    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_backup(stored_backup("b2", labels={"pad": "x" * 400}))
    small = len(env.store.objects[env.bucket.key("b1", "velero-backup.json")])
    monkeypatch.setattr(layout, "MAX_METADATA_BYTES", small)

    report = env.sync()

    assert env.creates("backups") == ["b1"]
    assert [e.object for e in report.errors] == [f"Backup {NS}/b2"]
    assert "larger than" in report.errors[0].reason


def test_store_get_failure_is_item_error() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_backup("b2")
    env.store.fail_get[env.bucket.key("b1", "velero-backup.json")] = StoreError("503 SlowDown")

    report = env.sync()

    assert env.creates("backups") == ["b2"]
    assert report.errors == [ItemFailure(f"Backup {NS}/b1", "503 SlowDown")]


# -- waiting / finalizing phases ------------------------------------------------------------------

WAITING = [
    "WaitingForPluginOperations",
    "WaitingForPluginOperationsPartiallyFailed",
    "Finalizing",
    "FinalizingPartiallyFailed",
]


@pytest.mark.parametrize("phase", WAITING)
def test_expired_waiting_backup_created_partially_failed(phase: str) -> None:
    env = Env()
    env.bucket.put_backup(stored_backup("b1", phase=phase, expiration=PAST))

    report = env.sync()

    assert report.created == 1
    assert report.skipped == {}
    assert env.backups()["b1"]["status"]["phase"] == "PartiallyFailed"


@pytest.mark.parametrize("phase", WAITING)
@pytest.mark.parametrize("expiration", [None, FUTURE])
def test_unexpired_waiting_backup_skipped(phase: str, expiration: str | None) -> None:
    env = Env()
    env.bucket.put_backup(stored_backup("b1", phase=phase, expiration=expiration), pvbs=[])

    report = env.sync()

    assert report.created == 0
    assert report.skipped == {SKIP_NOT_EXPIRED: 1}
    assert report.errors == []
    assert env.creates() == []
    assert not [k for k in env.store.gets if k.endswith(".json.gz")]


# -- owner references ---------------------------------------------------------------------------


def test_schedule_ref_with_same_uid_kept() -> None:
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "sched-uid"))
    ref = schedule_ref("daily", "sched-uid")
    env.bucket.put_backup(stored_backup("b1", owner_refs=[ref]))

    env.sync()

    assert env.backups()["b1"]["metadata"]["ownerReferences"] == [ref]


def test_schedule_ref_with_other_uid_dropped() -> None:
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "new-uid"))
    env.bucket.put_backup(stored_backup("b1", owner_refs=[schedule_ref("daily", "old-uid")]))

    env.sync()

    assert "ownerReferences" not in env.backups()["b1"]["metadata"]


def test_schedule_ref_to_missing_schedule_dropped() -> None:
    env = Env()
    env.bucket.put_backup(stored_backup("b1", owner_refs=[schedule_ref("gone", "u")]))

    report = env.sync()

    assert report.created == 1
    assert "ownerReferences" not in env.backups()["b1"]["metadata"]


def test_schedule_lookup_error_keeps_ref() -> None:
    """A transient error says nothing about the Schedule: the reference stays (Velero main
    #10161; 1.15-1.18.3 drop it through their UID comparison)."""
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "sched-uid"))
    env.cluster.fail_on[("get", "daily")] = ClusterError("500 boom", 500)
    env.bucket.put_backup(stored_backup("b1", owner_refs=[schedule_ref("daily", "sched-uid")]))

    report = env.sync()

    assert report.created == 1
    assert report.errors == []
    assert env.backups()["b1"]["metadata"]["ownerReferences"] == [
        schedule_ref("daily", "sched-uid")
    ]


@pytest.mark.parametrize(
    "ref",
    [
        {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "t-uid"},
        {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system", "uid": "n"},
        {"apiVersion": "apps/v1", "kind": "Schedule", "name": "daily", "uid": "sched-uid"},
    ],
)
def test_non_schedule_ref_dropped_without_lookup(ref: dict[str, Any]) -> None:
    # Deviation from Velero, which keeps references it cannot check.
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "sched-uid"))
    env.bucket.put_backup(stored_backup("b1", owner_refs=[ref]))

    report = env.sync()

    assert report.created == 1
    assert "ownerReferences" not in env.backups()["b1"]["metadata"]
    assert ("get", "schedules") not in env.cluster.calls


def test_mixed_refs_filtered_individually_in_order() -> None:
    env = Env()
    env.cluster.add(SCHEDULE, schedule("keep", "k"))
    env.cluster.add(SCHEDULE, schedule("stale", "new"))
    thing = {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "t"}
    refs = [
        schedule_ref("stale", "old"),
        thing,
        schedule_ref("missing", "m"),
        schedule_ref("keep", "k"),
    ]
    env.bucket.put_backup(stored_backup("b1", owner_refs=refs))

    env.sync()

    assert env.backups()["b1"]["metadata"]["ownerReferences"] == [schedule_ref("keep", "k")]


def test_schedule_lookups_cached_per_location() -> None:
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "d"))
    for i in range(5):
        env.bucket.put_backup(stored_backup(f"b{i}", owner_refs=[schedule_ref("daily", "d")]))
    env.bucket.put_backup(stored_backup("x1", owner_refs=[schedule_ref("gone", "g")]))
    env.bucket.put_backup(stored_backup("x2", owner_refs=[schedule_ref("gone", "g")]))

    env.sync()

    assert env.cluster.calls.count(("get", "schedules")) == 2
    assert all(
        b["metadata"].get("ownerReferences") == [schedule_ref("daily", "d")]
        for n, b in env.backups().items()
        if n.startswith("b")
    )


def test_schedule_lookup_error_cached_too() -> None:
    env = Env()
    env.cluster.fail_on[("get", "daily")] = ClusterError("500", 500)
    for i in range(3):
        env.bucket.put_backup(stored_backup(f"b{i}", owner_refs=[schedule_ref("daily", "d")]))

    env.sync()

    assert env.cluster.calls.count(("get", "schedules")) == 1


def test_schedule_lookups_cached_under_concurrency() -> None:
    env = Env()
    # wide enough for every worker to ask at once
    env.cluster.before("get", SCHEDULE, lambda *_call: time.sleep(0.05))
    env.cluster.add(SCHEDULE, schedule("daily", "d"))
    for i in range(16):
        env.bucket.put_backup(stored_backup(f"b{i:02}", owner_refs=[schedule_ref("daily", "d")]))

    report = env.sync(concurrency=8)

    assert report.created == 16
    assert env.cluster.calls.count(("get", "schedules")) == 1


def test_schedule_cache_is_per_location_run() -> None:
    env = Env()
    env.cluster.add(SCHEDULE, schedule("daily", "d"))
    env.bucket.put_backup(stored_backup("b1", owner_refs=[schedule_ref("daily", "d")]))
    env.sync()
    env.bucket.put_backup(stored_backup("b2", owner_refs=[schedule_ref("daily", "d")]))
    env.sync()
    assert env.cluster.calls.count(("get", "schedules")) == 2


# -- create outcomes ---------------------------------------------------------------------------


def lose_race(kind: Kind, obj: Obj) -> None:
    """A Backup appears between the list and the create (another syncer won the race)."""
    if obj["metadata"]["name"] == "raced":
        raise AlreadyExists("backups raced already exists", 409)


def test_already_exists_skips_pvbs() -> None:
    env = Env()
    env.cluster.before("create", BACKUP, lose_race)
    env.bucket.put_backup("raced", pvbs=[stored_pvb("p1", "raced")])
    env.bucket.put_backup("b2", pvbs=[stored_pvb("p2", "b2")])

    report = env.sync()

    assert report.skipped == {SKIP_ALREADY_EXISTS: 1}
    assert report.errors == []
    assert report.created == 1
    assert env.creates(POD_VOLUME_BACKUP.plural) == ["p2"]
    assert env.cluster.calls.count(("create", "podvolumebackups")) == 1
    # The winner of the race owns the Backup's dependents and its mark.
    assert ("patch", "backups", "raced") not in env.cluster.writes


def test_create_error_is_item_error_and_skips_pvbs() -> None:
    env = Env()
    env.cluster.fail_on[("create", "b1")] = ClusterError("create Backup b1: 422 Invalid", 422)
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    env.bucket.put_backup("b2")

    report = env.sync()

    assert env.creates() == ["b2"]
    assert report.errors == [ItemFailure(f"Backup {NS}/b1", "create Backup b1: 422 Invalid")]
    assert ("create", "podvolumebackups") not in env.cluster.calls


def test_unexpected_error_costs_one_backup() -> None:
    def explode(kind: Kind, obj: Obj) -> None:
        if obj["metadata"]["name"] == "boom":
            raise RuntimeError("bug")

    env = Env()
    env.cluster.before("create", None, explode)
    env.bucket.put_backup("boom")
    env.bucket.put_backup("fine")

    report = env.sync()

    assert env.creates("backups") == ["fine"]
    assert [e.object for e in report.errors] == [f"Backup {NS}/boom"]
    assert "unexpected error" in report.errors[0].reason
    assert report.status_patched is True


# -- pod volume backups --------------------------------------------------------------------------


def test_pvbs_rewritten_to_new_backup_uid() -> None:
    env = Env(location_name="secondary")
    other_ref = {"apiVersion": "example.com/v1", "kind": "Thing", "name": "t", "uid": "t-uid"}
    p1 = stored_pvb("p1", "b1")
    p2 = stored_pvb("p2", "b1", with_uid_label=False)
    p2["metadata"]["ownerReferences"].append(other_ref)
    env.bucket.put_backup("b1", pvbs=[p1, p2])

    report = env.sync()

    assert report.pod_volume_backups == 2
    new_uid = env.backups()["b1"]["metadata"]["uid"]
    assert new_uid and new_uid != p1["metadata"]["labels"]["velero.io/backup-uid"]
    pvbs = env.cluster.of(POD_VOLUME_BACKUP, NS)
    assert set(pvbs) == {"p1", "p2"}
    for pvb in pvbs.values():
        meta = pvb["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"][0]["uid"] == new_uid
        assert meta["ownerReferences"][0]["name"] == "b1"
        assert "resourceVersion" not in meta
        assert meta["uid"] != stored_pvb(meta["name"], "b1")["metadata"]["uid"]
        assert pvb["spec"]["backupStorageLocation"] == "secondary"
    assert pvbs["p1"]["metadata"]["labels"]["velero.io/backup-uid"] == new_uid
    assert "velero.io/backup-uid" not in pvbs["p2"]["metadata"]["labels"]
    assert pvbs["p2"]["metadata"]["ownerReferences"] == [
        pvbs["p1"]["metadata"]["ownerReferences"][0]
    ]


def test_pvbs_of_each_backup_get_their_own_backup_uid() -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    env.bucket.put_backup("b2", pvbs=[stored_pvb("p2", "b2")])

    env.sync(concurrency=4)

    backups = env.backups()
    pvbs = env.cluster.of(POD_VOLUME_BACKUP, NS)
    assert backups["b1"]["metadata"]["uid"] != backups["b2"]["metadata"]["uid"]
    assert (
        pvbs["p1"]["metadata"]["labels"]["velero.io/backup-uid"]
        == (backups["b1"]["metadata"]["uid"])
    )
    assert (
        pvbs["p2"]["metadata"]["labels"]["velero.io/backup-uid"]
        == (backups["b2"]["metadata"]["uid"])
    )


def test_pvb_already_exists_is_fine() -> None:
    env = Env()
    env.cluster.add(POD_VOLUME_BACKUP, {"metadata": {"name": "p1", "namespace": NS}})
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])

    report = env.sync()

    assert report.errors == []
    assert report.pod_volume_backups == 1
    assert env.creates("podvolumebackups") == ["p2"]


def test_pvb_create_error_is_item_error_others_created() -> None:
    env = Env()
    env.cluster.fail_on[("create", "p1")] = ClusterError("forbidden", 403)
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])

    report = env.sync()

    assert env.creates("podvolumebackups") == ["p2"]
    assert report.created == 1
    assert report.errors == [ItemFailure(f"PodVolumeBackup {NS}/p1", "forbidden")]


@pytest.mark.parametrize(
    "data",
    [b"gzip garbage", gzip_json([stored_pvb("p1", "b1")])[:-10], gzip_json({"not": "a list"})],
    ids=["garbage", "truncated", "non-list"],
)
def test_corrupt_pvb_file_is_item_error_backup_still_created(data: bytes) -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_raw("b1", "b1-podvolumebackups.json.gz", data)
    env.bucket.put_backup("b2", pvbs=[stored_pvb("p2", "b2")])

    report = env.sync()

    assert sorted(env.creates("backups")) == ["b1", "b2"]
    assert env.creates("podvolumebackups") == ["p2"]
    assert len(report.errors) == 1
    assert report.errors[0].object == "pod volume backups of b1"
    assert "backups/b1/b1-podvolumebackups.json.gz" in report.errors[0].reason


def test_null_pvb_file_is_empty() -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=None)
    env.bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(None))

    report = env.sync()

    assert report.errors == []
    assert report.created == 1
    assert report.pod_volume_backups == 0


def test_gzip_bomb_pvb_file_is_item_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from worker.storage import decode

    monkeypatch.setattr(decode, "MAX_DECOMPRESSED_BYTES", 4096)
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip.compress(b" " * 1_000_000))

    report = env.sync()

    assert report.created == 1
    assert [e.object for e in report.errors] == ["pod volume backups of b1"]
    assert "decompresses to more than 4096 bytes" in report.errors[0].reason


# -- listing failures ------------------------------------------------------------------------


def test_store_listing_error_fails_location_before_any_write() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.store.fail_list = StoreError("list backups/: 503")
    before = copy.deepcopy(env.cluster.objects)

    with pytest.raises(StoreError, match="503"):
        env.sync()

    assert env.cluster.writes == []
    assert env.cluster.objects == before
    assert ("patch", "backupstoragelocations") not in env.cluster.calls


class FailingMidListStore:
    """A listing that fails on its second page."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def list_common_prefixes(self, prefix: str, delimiter: str = "/") -> Any:
        yield from list(self.inner.list_common_prefixes(prefix, delimiter))[:1]
        raise StoreError("page 2: connection reset")

    def get(self, key: str, max_bytes: int) -> bytes | None:
        return self.inner.get(key, max_bytes)  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


def test_incomplete_store_listing_deletes_nothing() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_backup("b2")
    env.cluster.add(BACKUP, cluster_backup("b2", "default"))  # would be an orphan on page 1 only

    with pytest.raises(StoreError):
        sync_location(
            env.location,
            BackupStore(FailingMidListStore(env.store), ""),
            env.cluster,
            SyncOptions(namespace=NS, csi=False, concurrency=1, now=lambda: NOW),
            LocationReport(name="default"),
        )

    assert env.cluster.writes == []


def test_cluster_backup_listing_error_sync_continues() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_backup("exists")
    env.cluster.add(BACKUP, cluster_backup("exists", "default"))
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.cluster.fail_on[("list", "backups")] = ClusterError("list: 500", 500)

    report = env.sync()

    # creates were attempted for everything in the store
    assert env.cluster.calls.count(("create", "backups")) == 2
    assert report.to_sync == 2
    assert report.in_cluster == 0
    assert report.skipped == {SKIP_ALREADY_EXISTS: 1}
    assert report.created == 1
    # the orphan relist failed too (same fail_on), so nothing was deleted
    assert env.deletes() == []
    assert "orphan" in env.backups()
    assert [e.object for e in report.errors] == ["Backups of location default"]
    assert report.status_patched is True


def test_cluster_listing_error_orphans_from_label_selected_relist() -> None:
    env = Env()
    selectors = fail_first_backup_list(env.cluster)
    env.bucket.put_backup("b1")
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.cluster.add(BACKUP, cluster_backup("other-loc-orphan", "elsewhere"))
    env.cluster.add(BACKUP, cluster_backup("running", "default", phase="InProgress"))

    report = env.sync()

    assert selectors == [None, "velero.io/storage-location=default"]
    assert env.deletes() == ["orphan"]
    assert report.orphans_deleted == 1
    assert report.created == 1
    assert report.errors == []


# -- status patch ------------------------------------------------------------------------------


def test_status_patch_merges_last_synced_time() -> None:
    env = Env()
    env.location["status"] = {"phase": "Available"}
    env.cluster.objects[("backupstoragelocations", NS, "default")]["status"] = {
        "phase": "Available"
    }

    report = env.sync()

    bsl = env.cluster.of(BACKUP_STORAGE_LOCATION, NS)["default"]
    assert bsl["status"] == {"phase": "Available", "lastSyncedTime": NOW_STAMP}
    assert NOW_STAMP == "2026-03-01T12:00:00Z"
    assert ("patch", "backupstoragelocations", "default") in env.cluster.writes
    assert report.status_patched is True


# The one patch of a location with nothing to sync: lastSyncedTime only (no stamp: the run
# marked nothing).
STATUS_PATCH = {"status": {"lastSyncedTime": NOW_STAMP}}


def recorded_patches(env: Env) -> list[tuple[str, str, str | None, Obj, str]]:
    """Every patch sent to the cluster from now on, as sent."""
    patches: list[tuple[str, str, str | None, Obj, str]] = []

    def record(kind: Kind, name: str, namespace: str | None, patch: Obj, subresource: str) -> None:
        patches.append((kind.plural, name, namespace, copy.deepcopy(patch), subresource))

    env.cluster.before("patch", None, record)
    return patches


def test_status_patch_is_one_merge_patch_of_the_main_resource() -> None:
    env = Env()
    patches = recorded_patches(env)
    env.sync()
    assert patches == [("backupstoragelocations", "default", NS, STATUS_PATCH, "")]


def test_status_subresource_is_patched_too() -> None:
    env = Env()
    patches = recorded_patches(env)
    env.cluster.status_subresource = True

    report = env.sync()

    assert patches == [
        ("backupstoragelocations", "default", NS, STATUS_PATCH, ""),
        ("backupstoragelocations", "default", NS, STATUS_PATCH, "status"),
    ]
    bsl = env.cluster.of(BACKUP_STORAGE_LOCATION, NS)["default"]
    assert bsl["status"]["lastSyncedTime"] == NOW_STAMP
    assert report.status_patched is True


def test_status_patch_failure_raises_after_sync() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.cluster.fail_on[("patch", "backupstoragelocations")] = ClusterError("patch: 403", 403)

    report = LocationReport(name="default")
    with pytest.raises(ClusterError, match="403"):
        sync_location(
            env.location,
            env.backup_store(),
            env.cluster,
            SyncOptions(namespace=NS, csi=False, concurrency=1, now=lambda: NOW),
            report,
        )
    assert env.creates("backups") == ["b1"]
    assert report.status_patched is False


# -- concurrency ---------------------------------------------------------------------------------


class CreatesInFlight:
    """Holds each create on ``cluster`` a little, and counts the most in flight at once."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0
        cluster.before("create", None, self._create)

    def _create(self, *_call: Any) -> None:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.01)
        with self._lock:
            self.active -= 1


def test_concurrent_sync_creates_everything_within_the_worker_bound() -> None:
    env = Env()
    in_flight = CreatesInFlight(env.cluster)
    for i in range(40):
        env.bucket.put_backup(f"b{i:02}", pvbs=[stored_pvb(f"p{i:02}", f"b{i:02}")])

    report = env.sync(concurrency=4)

    assert report.created == 40
    assert report.pod_volume_backups == 40
    assert len(env.backups()) == 40
    assert 1 < in_flight.peak <= 4


# -- bounded_map ---------------------------------------------------------------------------------


class CountingSource:
    """An iterable that counts how far it has been consumed."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.consumed = 0

    def __iter__(self) -> Any:
        for i in range(self.n):
            self.consumed += 1
            yield i


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_bounded_map_never_reads_more_than_2x_workers_ahead(workers: int) -> None:
    source = CountingSource(100)
    received = 0
    ahead: list[int] = []

    def fn(i: int) -> int:
        ahead.append(source.consumed - received)
        time.sleep(0.001)
        return i * 10

    results = []
    for result in bounded_map(fn, source, workers):
        received += 1
        ahead.append(source.consumed - received)
        results.append(result)

    assert sorted(results) == [i * 10 for i in range(100)]
    assert max(ahead) <= 2 * workers


def test_bounded_map_stops_consuming_while_workers_are_blocked() -> None:
    workers = 3
    source = CountingSource(50)
    release = threading.Event()
    results: list[int] = []

    def fn(i: int) -> int:
        release.wait(5)
        return i

    consumer = threading.Thread(target=lambda: results.extend(bounded_map(fn, source, workers)))
    consumer.start()
    deadline = time.monotonic() + 2
    while source.consumed < 2 * workers and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)  # give it every chance to read further
    assert source.consumed == 2 * workers
    release.set()
    consumer.join(5)
    assert sorted(results) == list(range(50))


def test_bounded_map_single_worker_is_lazy_and_in_order() -> None:
    source = CountingSource(5)
    seen = []
    for result in bounded_map(lambda i: i + 1, source, 1):
        seen.append((result, source.consumed))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]


def test_bounded_map_empty() -> None:
    assert list(bounded_map(lambda i: i, [], 4)) == []
