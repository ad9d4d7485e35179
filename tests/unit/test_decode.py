"""Untrusted bucket bytes decoded with bounds: worker.storage.decode. Gzip is inflated piece
by piece up to its caps, JSON is refused when malformed or not the expected shape, and every
failure is an ItemError naming the key. (Through the bucket layout: the hostile corpus in
test_hostile_layout.py, large lists in test_streamed_lists.py.)"""

from __future__ import annotations

import gzip
import json
import os
import time
import zlib

import pytest

from harness.velero_docs import gzip_json, stored_pvb
from tests.unit.test_layout import valid_pvb_gz
from worker.errors import ItemError
from worker.storage import decode
from worker.storage.decode import gunzip_pieces, gzipped_json_list, json_object

LIST_KEY = "backups/b1/b1-podvolumebackups.json.gz"


def gunzip(data: bytes, limit: int) -> bytes:
    return b"".join(gunzip_pieces(data, limit, "k"))


# -- JSON objects ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b"null", "expected a JSON object, got NoneType"),
        (b'"Backup"', "expected a JSON object, got str"),
    ],
)
def test_corrupt_object_is_item_error_naming_the_key(data: bytes, match: str) -> None:
    with pytest.raises(ItemError, match=match) as info:
        json_object(data, "backups/b1/velero-backup.json")
    assert "backups/b1/velero-backup.json" in str(info.value)


# -- gzip'd lists ---------------------------------------------------------------------------


def test_null_list_is_empty() -> None:
    assert gzipped_json_list(gzip.compress(b"null\n"), LIST_KEY) == []


def test_only_first_json_value_counts() -> None:
    pvb = stored_pvb("a", "b1")
    data = gzip.compress((json.dumps([pvb]) + "\n" + "trailing garbage").encode())
    assert gzipped_json_list(data, LIST_KEY) == [pvb]


def test_multi_member_gzip_is_read_whole() -> None:
    pvb = stored_pvb("a", "b1")
    text = json.dumps([pvb]).encode()
    data = gzip.compress(text[:10]) + gzip.compress(text[10:])
    assert gzipped_json_list(data, LIST_KEY) == [pvb]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"this is not gzip at all", "not valid gzip"),
        (valid_pvb_gz()[:-12], "truncated gzip"),
        (valid_pvb_gz()[:5], "truncated gzip"),
        (valid_pvb_gz() + b"junk-after-member", "not valid gzip"),
        (gzip_json({"items": []}), "expected a JSON list, got dict"),
        (gzip_json("text"), "expected a JSON list, got str"),
        (gzip_json(42), "expected a JSON list, got int"),
        (gzip.compress(b"[{"), "not valid JSON"),
        (gzip.compress(b"\xff\xfe"), "not valid JSON"),
        (gzip.compress(b""), "not valid JSON"),
        (gzip_json([1]), "item 0 is not an object with metadata"),
        (
            gzip_json([{"metadata": {"name": "a"}}, {"kind": "X"}]),
            "item 1 is not an object with metadata",
        ),
        (gzip_json([{"metadata": "a"}]), "item 0 is not an object with metadata"),
    ],
)
def test_corrupt_lists_are_item_errors_naming_the_key(data: bytes, match: str) -> None:
    with pytest.raises(ItemError, match=match) as info:
        gzipped_json_list(data, LIST_KEY)
    assert LIST_KEY in str(info.value)


# -- gzip ----------------------------------------------------------------------------------------


def test_gzip_bomb_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    limit = 64 * 1024
    monkeypatch.setattr(decode, "MAX_DECOMPRESSED_BYTES", limit)
    bomb = gzip.compress(b"[" + b" " * (50 * limit) + b"]")  # inflates to 50x the limit
    assert len(bomb) < limit // 8

    inflated: list[int] = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self._d = real(*args, **kwargs)  # type: ignore[arg-type]

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._d.decompress(data, max_length)
            inflated.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._d, name)

    monkeypatch.setattr(decode.zlib, "decompressobj", Counting)
    with pytest.raises(ItemError, match=f"decompresses to more than {limit} bytes"):
        gzipped_json_list(bomb, LIST_KEY)
    assert sum(inflated) <= limit + 1  # never inflated (much) beyond the limit


def test_gzip_bomb_across_members_is_bounded() -> None:
    member = gzip.compress(b" " * 600)
    with pytest.raises(ItemError, match="more than 1000 bytes"):
        gunzip(member * 2, 1000)
    assert gunzip(member, 1000) == b" " * 600


def test_gunzip_exactly_at_limit_is_fine() -> None:
    assert gunzip(gzip.compress(b"x" * 100), 100) == b"x" * 100
    with pytest.raises(ItemError, match="more than 99 bytes"):
        gunzip(gzip.compress(b"x" * 100), 99)


def test_many_gzip_members_refused_quickly() -> None:
    data = gzip.compress(b"") * 200_000  # ~4 MiB of empty members
    started = time.monotonic()
    with pytest.raises(ItemError, match="more than 100 gzip members"):
        gunzip(data, 1024)
    assert time.monotonic() - started < 1.0


def test_members_up_to_the_cap_still_read() -> None:
    text = json.dumps([stored_pvb("p", "b")]).encode()
    pieces = [text[i : i + 10] for i in range(0, len(text), 10)][: decode.MAX_GZIP_MEMBERS]
    joined = b"".join(pieces)
    assert gunzip(b"".join(gzip.compress(p) for p in pieces), 10**6) == joined


def test_member_boundary_across_input_chunks() -> None:
    # members larger than one input chunk, incompressible so the boundary falls mid-chunk
    first, second = os.urandom(100_000), os.urandom(70_000)
    data = gzip.compress(first) + gzip.compress(second)
    assert gunzip(data, 10**6) == first + second
    with pytest.raises(ItemError, match="truncated"):
        gunzip(data[:-3], 10**6)


@pytest.mark.parametrize("size", [0, 1, decode._PIECE_BYTES, 3 * decode._PIECE_BYTES, 10**6 + 7])
def test_pieces_are_bounded_and_complete(size: int) -> None:
    text = b"x" * size  # compresses ~1000:1, so one input chunk holds many pieces
    pieces = list(gunzip_pieces(gzip.compress(text), 10**8, "k"))
    assert b"".join(pieces) == text
    assert all(len(p) <= decode._PIECE_BYTES for p in pieces)
    assert gunzip(gzip.compress(text), size) == text  # exactly at the limit
