"""Bucket files shaped to exhaust memory or CPU, read through the bucket layout: each is an
item error, found fast (gzip itself, members and bombs, in test_decode.py)."""

from __future__ import annotations

import gzip
import json

import pytest

from harness.velero_docs import gzip_json, stored_backup, stored_pvb
from tests.unit.fakes import Bucket, MemoryStore
from worker.errors import ItemError
from worker.storage import decode
from worker.storage.layout import BackupStore


def make() -> tuple[Bucket, BackupStore]:
    store = MemoryStore()
    return Bucket(store), BackupStore(store, "")


def test_deeply_nested_metadata_is_an_item_error() -> None:
    bucket, bs = make()
    bucket.put_raw("b1", "velero-backup.json", b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ItemError, match="nested too deeply"):
        bs.backup_metadata("b1")


def test_deeply_nested_list_is_an_item_error() -> None:
    bucket, bs = make()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip.compress(b"[" * 100_000))
    with pytest.raises(ItemError, match="nested too deeply"):
        bs.pod_volume_backups("b1")


def test_dense_containers_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_JSON_CONTAINERS", 1000)
    bucket, bs = make()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json([{}] * 1001))
    parsed: list[object] = []
    real = decode.json.JSONDecoder

    class Spy(real):  # type: ignore[misc, valid-type]
        def raw_decode(self, s: str, idx: int = 0) -> tuple[object, int]:
            parsed.append(s)
            return super().raw_decode(s, idx)  # type: ignore[no-any-return]

    monkeypatch.setattr(decode.json, "JSONDecoder", Spy)
    with pytest.raises(ItemError, match="more than 1000 JSON objects and arrays"):
        bs.pod_volume_backups("b1")
    assert parsed == []  # refused on a byte count, never parsed


def test_dense_metadata_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_JSON_CONTAINERS", 100)
    bucket, bs = make()
    backup = stored_backup("b1")
    backup["spec"]["junk"] = [[] for _ in range(200)]
    bucket.put_backup(backup)
    with pytest.raises(ItemError, match="JSON objects and arrays"):
        bs.backup_metadata("b1")


def test_real_files_are_far_below_the_container_cap() -> None:
    per_pvb = json.dumps(stored_pvb("p", "b")).count("{")
    per_backup = json.dumps(stored_backup("b")).count("{")
    assert per_pvb * decode.MAX_LIST_ITEMS <= decode.MAX_JSON_CONTAINERS
    assert per_backup < 100


def test_too_many_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_LIST_ITEMS", 3)
    bucket, bs = make()
    pvbs = [stored_pvb(f"p{i}", "b1") for i in range(4)]
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(pvbs))
    with pytest.raises(ItemError, match="more than 3 items"):
        bs.pod_volume_backups("b1")
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(pvbs[:3]))
    assert len(bs.pod_volume_backups("b1")) == 3
