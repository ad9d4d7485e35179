"""Large gzip'd lists are checked in a streaming pass and handed out item by item: the same
answers (and the same errors) as small lists, with memory that does not grow with the file."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest

from harness.velero_docs import gzip_json, stored_pvb
from tests.unit.fakes import Bucket, MemoryStore
from tests.unit.test_layout import valid_pvb_gz
from worker.errors import ItemError
from worker.storage import decode
from worker.storage.layout import BackupStore, StreamedList


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list with more than a few bytes goes the streaming way."""
    monkeypatch.setattr(decode, "STREAM_LIST_BYTES", 16)


def make() -> tuple[Bucket, BackupStore]:
    store = MemoryStore()
    return Bucket(store), BackupStore(store, "")


def test_large_list_is_streamed_and_reiterable(streamed: None) -> None:
    bucket, bs = make()
    pvbs = [stored_pvb(f"p{i}", "b1") for i in range(50)]
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(pvbs))
    got = bs.pod_volume_backups("b1")
    assert isinstance(got, StreamedList)
    assert list(got) == pvbs
    assert list(got) == pvbs  # decoded again, from the compressed bytes


def test_small_list_is_a_plain_list() -> None:
    bucket, bs = make()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json([stored_pvb("p", "b1")]))
    assert isinstance(bs.pod_volume_backups("b1"), list)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"null\n", []),
        (b"  []  ", []),
        (b'[{"metadata": {"name": "a"}} , {"metadata": {"n": [1, -2.5e3, true, null]}}]', 2),
        (b'[{"metadata": {}}]\ntrailing garbage', 1),
    ],
)
def test_streamed_edge_cases(streamed: None, text: bytes, expected: object) -> None:
    bucket, bs = make()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip.compress(text))
    got = list(bs.pod_volume_backups("b1"))
    assert got == expected if isinstance(expected, list) else len(got) == expected


def test_items_split_across_many_pieces(streamed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "_GZIP_CHUNK", 7)  # compressed input fed 7 bytes at a time
    bucket, bs = make()
    pvbs = [stored_pvb(f"p{i}", "b1") for i in range(20)]
    pvbs[3]["metadata"]["annotations"] = {"big": "é" * 5000, "n": 12345678901234567890}
    text = json.dumps(pvbs, ensure_ascii=False).encode()
    members = b"".join(gzip.compress(text[i : i + 900]) for i in range(0, len(text), 900))
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", members)
    assert list(bs.pod_volume_backups("b1")) == pvbs


CORRUPT = [
    (b"this is not gzip at all", "not valid gzip"),
    (valid_pvb_gz()[:-12], "truncated gzip"),
    (valid_pvb_gz() + b"junk-after-member", "not valid gzip"),
    (gzip_json({"items": []}), "expected a JSON list, got dict"),
    (gzip_json("text"), "expected a JSON list, got str"),
    (gzip_json(42), "expected a JSON list, got int"),
    (gzip_json(4.5), "expected a JSON list, got float"),
    (gzip_json(True), "expected a JSON list, got bool"),
    (gzip.compress(b"[{"), "not valid JSON"),
    (gzip.compress(b'[{"metadata": {}} {"metadata": {}}]'), "not valid JSON"),
    (gzip.compress(b"\xff\xfe"), "not valid JSON"),
    (gzip.compress(b""), "not valid JSON"),
    (gzip.compress(b"nope"), "not valid JSON"),
    (gzip_json([1]), "item 0 is not an object with metadata"),
    (
        gzip_json([{"metadata": {"name": "a"}}, {"kind": "X"}]),
        "item 1 is not an object with metadata",
    ),
    (gzip.compress(b"[" * 100_000), "nested too deeply"),
]


@pytest.mark.parametrize(("data", "match"), CORRUPT)
def test_streamed_errors_match_the_small_path(streamed: None, data: bytes, match: str) -> None:
    bucket, bs = make()
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", data)
    with pytest.raises(ItemError, match=match):
        bs.pod_volume_backups("b1")  # found before anything is handed out


def test_streamed_item_cap(streamed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_LIST_ITEMS", 3)
    bucket, bs = make()
    pvbs = [stored_pvb(f"p{i}", "b1") for i in range(4)]
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(pvbs))
    with pytest.raises(ItemError, match="more than 3 items"):
        bs.pod_volume_backups("b1")
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json(pvbs[:3]))
    assert list(bs.pod_volume_backups("b1")) == pvbs[:3]


def test_memory_does_not_grow_with_the_list() -> None:
    """~12 MiB of pod volume backups (compressed to little): holding them decoded takes
    tens of MiB; the streamed list never holds more than a few items and a buffer."""
    bucket, bs = make()
    pvb = stored_pvb("p", "b1")
    count = 12 * 1024 * 1024 // len(json.dumps(pvb))
    bucket.put_raw("b1", "b1-podvolumebackups.json.gz", gzip_json([pvb] * count))
    tracemalloc.start()
    try:
        got = bs.pod_volume_backups("b1")
        seen = sum(1 for _ in got)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(got, StreamedList)
    assert seen == count
    assert peak < 6 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
