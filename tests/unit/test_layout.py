"""Velero's bucket layout and the capped, validated reads: worker.storage.layout. (Decoding
the bytes it reads, gzip and JSON with their bounds, is tested in test_decode.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from harness.velero_docs import gzip_json, stored_backup, stored_pvb
from tests.unit.fakes import Bucket, MemoryStore
from worker.errors import ItemError, ObjectTooLarge
from worker.storage import layout
from worker.storage.layout import BackupStore


def make(prefix: str = "") -> tuple[MemoryStore, Bucket, BackupStore]:
    store = MemoryStore()
    return store, Bucket(store, prefix), BackupStore(store, prefix)


# -- keys and listing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "root"),
    [
        ("", ""),
        ("velero", "velero/"),
        ("/a/b/", "a/b/"),
        ("a/b", "a/b/"),
        # Velero builds every key with Go's path.Join, which cleans the path.
        ("team//prod", "team/prod/"),
        ("team//prod/", "team/prod/"),
        ("/team/prod/", "team/prod/"),
        ("a/./b", "a/b/"),
        ("a/../b", "b/"),
        (".", ""),
        ("a/..", ""),
        ("..", "../"),
        ("a/../../b", "../b/"),
        ("///", ""),
    ],
)
def test_keys(prefix: str, root: str) -> None:
    bs = BackupStore(MemoryStore(), prefix)
    assert bs.backups_dir == f"{root}backups/"
    assert bs.metadata_key("n") == f"{root}backups/n/velero-backup.json"
    assert bs.pod_volume_backups_key("n") == f"{root}backups/n/n-podvolumebackups.json.gz"


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("a", "b"), "a/b"),
        (("a/", "b"), "a/b"),
        (("", "b"), "b"),
        (("", ""), ""),
        (("a//b/", "./c"), "a/b/c"),
        (("/a/../..", "b"), "/b"),
        (("a", "../../b"), "../b"),
        ((".",), "."),
    ],
)
def test_go_path_join(parts: tuple[str, ...], joined: str) -> None:
    """Go's path.Join: empty parts dropped, the result cleaned, "" for nothing at all."""
    assert layout.go_path_join(*parts) == joined


def test_a_doubled_slash_in_the_prefix_lists_where_velero_wrote() -> None:
    store = MemoryStore()
    Bucket(store, "team/prod").put_backup("b1")
    assert list(BackupStore(store, "team//prod/").list_backups()) == ["b1"]


def test_list_backups_uses_common_prefixes_under_prefix() -> None:
    store, bucket, bs = make("team/velero")
    bucket.put_backup("b1")
    bucket.put_backup("b2")
    bucket.put_raw("b3", "b3-logs.gz", b"x")  # a folder without metadata is still listed
    store.objects["team/velero/restores/r1/restore-r1-logs.gz"] = b"x"
    store.objects["other/backups/b9/velero-backup.json"] = b"{}"
    store.objects["team/velero/backups/stray-file"] = b"x"  # not a folder
    assert sorted(bs.list_backups()) == ["b1", "b2", "b3"]


def test_list_backups_is_lazy() -> None:
    _, bucket, bs = make()
    bucket.put_backup("b1")
    listing = bs.list_backups()
    assert next(listing) == "b1"


# -- velero-backup.json ----------------------------------------------------------------------


def test_backup_metadata_decodes_one_get() -> None:
    store, bucket, bs = make("p")
    bucket.put_backup(stored_backup("b1"))
    assert bs.backup_metadata("b1") == stored_backup("b1")
    assert store.gets == ["p/backups/b1/velero-backup.json"]


def test_missing_metadata_is_none() -> None:
    store, _, bs = make()
    assert bs.backup_metadata("nope") is None
    assert store.gets == ["backups/nope/velero-backup.json"]


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("velero.io/v2", "Backup"),
        ("v1", "Backup"),
        ("velero.io/v1", "Restore"),
        ("velero.io/v1", "backup"),
        (None, "Backup"),
        ("velero.io/v1", None),
    ],
)
def test_wrong_kind_or_api_version_is_item_error(api_version: str | None, kind: str | None) -> None:
    _, bucket, bs = make()
    obj = stored_backup("b1")
    obj["apiVersion"] = api_version
    obj["kind"] = kind
    bucket.put_raw("b1", "velero-backup.json", json.dumps(obj).encode())
    with pytest.raises(ItemError, match=r"expected apiVersion velero\.io/v1 kind Backup"):
        bs.backup_metadata("b1")


@pytest.mark.parametrize("metadata", [None, "b1", ["b1"]])
def test_metadata_not_an_object_is_item_error(metadata: object) -> None:
    _, bucket, bs = make()
    obj = stored_backup("b1")
    obj["metadata"] = metadata
    bucket.put_raw("b1", "velero-backup.json", json.dumps(obj).encode())
    with pytest.raises(ItemError, match="metadata is missing"):
        bs.backup_metadata("b1")


def test_metadata_read_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    _, bucket, bs = make()
    bucket.put_backup(stored_backup("b1"))
    size = len(bucket.store.objects[bucket.key("b1", "velero-backup.json")])
    monkeypatch.setattr(layout, "MAX_METADATA_BYTES", size - 1)
    with pytest.raises(ObjectTooLarge):
        bs.backup_metadata("b1")
    monkeypatch.setattr(layout, "MAX_METADATA_BYTES", size)
    assert bs.backup_metadata("b1") is not None


def test_metadata_cap_passed_to_store() -> None:
    class Spy(MemoryStore):
        caps: list[int]

        def get(self, key: str, max_bytes: int) -> bytes | None:
            self.caps = [*getattr(self, "caps", []), max_bytes]
            return super().get(key, max_bytes)

    spy = Spy()
    Bucket(spy).put_backup("b1", pvbs=[])
    bs = BackupStore(spy, "")
    bs.backup_metadata("b1")
    bs.pod_volume_backups("b1")
    assert spy.caps == [layout.MAX_METADATA_BYTES, layout.MAX_GZIP_BYTES]


# -- gzip'd lists ---------------------------------------------------------------------------------


def test_pod_volume_backups_decoded() -> None:
    store, bucket, bs = make("p")
    pvbs = [stored_pvb("a", "b1"), stored_pvb("b", "b1")]
    bucket.put_backup("b1", pvbs=pvbs)
    assert bs.pod_volume_backups("b1") == pvbs
    assert store.gets == ["p/backups/b1/b1-podvolumebackups.json.gz"]


def test_csi_keys() -> None:
    store, bucket, bs = make()
    bucket.put_backup("b1", vsclasses=[], vscontents=[])
    assert bs.csi_volume_snapshot_classes("b1") == []
    assert bs.csi_volume_snapshot_contents("b1") == []
    assert store.gets == [
        "backups/b1/b1-csi-volumesnapshotclasses.json.gz",
        "backups/b1/b1-csi-volumesnapshotcontents.json.gz",
    ]


def test_absent_list_is_empty() -> None:
    _, _, bs = make()
    assert bs.pod_volume_backups("b1") == []


def valid_pvb_gz() -> bytes:
    return gzip_json([stored_pvb("a", "b1")])


def test_compressed_object_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    _, bucket, bs = make()
    data = valid_pvb_gz()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", data)
    monkeypatch.setattr(layout, "MAX_GZIP_BYTES", len(data) - 1)
    with pytest.raises(ObjectTooLarge):
        bs.pod_volume_backups("b1")


@pytest.mark.parametrize(
    ("filename", "data", "read"),
    [
        ("velero-backup.json", b"{not json", BackupStore.backup_metadata),
        ("b1-podvolumebackups.json.gz", valid_pvb_gz()[:-12], BackupStore.pod_volume_backups),
        (
            "b1-csi-volumesnapshotcontents.json.gz",
            gzip_json({"items": []}),
            BackupStore.csi_volume_snapshot_contents,
        ),
    ],
)
def test_a_corrupt_file_is_an_item_error_naming_its_key(
    filename: str, data: bytes, read: Callable[[BackupStore, str], object]
) -> None:
    _, bucket, bs = make("p")
    bucket.put_raw("b1", filename, data)
    with pytest.raises(ItemError) as info:
        read(bs, "b1")
    assert f"p/backups/b1/{filename}" in str(info.value)
