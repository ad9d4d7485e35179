"""Velero's object-store layout and the reads the sync needs, with size caps.

This is the only module that knows key names (Velero ``object_store_layout.go``) and how
Velero encodes its files. Bucket contents are untrusted: every read is capped, gzip is
decompressed with a bound, and anything malformed becomes an ItemError naming the key.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

from worker.errors import ItemError
from worker.storage import ObjectStore

Obj = dict[str, Any]

MiB = 1024 * 1024
MAX_METADATA_BYTES = 8 * MiB  # velero-backup.json; real ones are a few KiB
MAX_GZIP_BYTES = 32 * MiB  # a compressed list as stored
MAX_DECOMPRESSED_BYTES = 128 * MiB  # the same list decompressed (gzip bombs stop here)
# Python's parse of JSON costs ~100 bytes per object or array whatever their size, so a
# byte cap alone does not bound memory: 128 MiB of "[{},{},…]" would take gigabytes. Real
# files hold ~10 containers per item (a pod volume backup) or ~50 (a Backup).
MAX_JSON_CONTAINERS = 1_000_000
MAX_LIST_ITEMS = 100_000  # items in one list file: each is an API create
MAX_GZIP_MEMBERS = 100  # Velero writes one; thousands of tiny members only burn CPU
_GZIP_CHUNK = 64 * 1024

BACKUP_API_VERSION = "velero.io/v1"


class BackupStore:
    """Velero-aware reads from one location's bucket and prefix."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        prefix = prefix.strip("/")
        self._root = f"{prefix}/" if prefix else ""

    @property
    def backups_dir(self) -> str:
        return f"{self._root}backups/"

    def metadata_key(self, name: str) -> str:
        return f"{self.backups_dir}{name}/velero-backup.json"

    def _file_key(self, name: str, suffix: str) -> str:
        return f"{self.backups_dir}{name}/{name}-{suffix}"

    def list_backups(self) -> Iterator[str]:
        """Backup names: the sub-folders of ``<prefix>/backups/``, lazily, page by page."""
        base = self.backups_dir
        for common in self._store.list_common_prefixes(base, "/"):
            name = common[len(base) :] if common.startswith(base) else common
            name = name.rstrip("/")
            if name:
                yield name

    def backup_metadata(self, name: str) -> Obj | None:
        """The stored Backup, or None when ``velero-backup.json`` is absent (one GET).

        Raises ItemError when it is too large, not JSON, or not a velero.io/v1 Backup.
        """
        key = self.metadata_key(name)
        data = self._store.get(key, MAX_METADATA_BYTES)
        if data is None:
            return None
        _check_containers(data, key)
        try:
            backup = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ItemError(f"{key}: not valid JSON: {exc}") from None
        except RecursionError:
            raise ItemError(f"{key}: JSON nested too deeply") from None
        if not isinstance(backup, dict):
            raise ItemError(f"{key}: expected a JSON object, got {type(backup).__name__}")
        kind, api_version = backup.get("kind"), backup.get("apiVersion")
        if kind != "Backup" or api_version != BACKUP_API_VERSION:
            raise ItemError(
                f"{key}: expected apiVersion {BACKUP_API_VERSION} kind Backup, "
                f"got apiVersion {api_version!r} kind {kind!r}"
            )
        if not isinstance(backup.get("metadata"), dict):
            raise ItemError(f"{key}: metadata is missing or not an object")
        return backup

    def pod_volume_backups(self, name: str) -> list[Obj]:
        return self._gzipped_list(self._file_key(name, "podvolumebackups.json.gz"))

    def csi_volume_snapshot_classes(self, name: str) -> list[Obj]:
        return self._gzipped_list(self._file_key(name, "csi-volumesnapshotclasses.json.gz"))

    def csi_volume_snapshot_contents(self, name: str) -> list[Obj]:
        return self._gzipped_list(self._file_key(name, "csi-volumesnapshotcontents.json.gz"))

    def _gzipped_list(self, key: str) -> list[Obj]:
        """A gzip'd JSON list as Velero writes it; an absent file or ``null`` is empty.
        Like Go's json.Decoder, only the first JSON value counts."""
        data = self._store.get(key, MAX_GZIP_BYTES)
        if data is None:
            return []
        text = gunzip(data, MAX_DECOMPRESSED_BYTES, key)
        _check_containers(text, key)
        try:
            value, _ = json.JSONDecoder().raw_decode(text.decode("utf-8").lstrip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ItemError(f"{key}: not valid JSON: {exc}") from None
        except RecursionError:
            raise ItemError(f"{key}: JSON nested too deeply") from None
        if value is None:
            return []
        if not isinstance(value, list):
            raise ItemError(f"{key}: expected a JSON list, got {type(value).__name__}")
        if len(value) > MAX_LIST_ITEMS:
            raise ItemError(f"{key}: more than {MAX_LIST_ITEMS} items ({len(value)})")
        for index, item in enumerate(value):
            if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
                raise ItemError(f"{key}: item {index} is not an object with metadata")
        return value


def _check_containers(data: bytes, key: str) -> None:
    """Refuse, before parsing, JSON with more objects and arrays than MAX_JSON_CONTAINERS
    (an upper bound: brackets inside strings count too)."""
    containers = data.count(b"{") + data.count(b"[")
    if containers > MAX_JSON_CONTAINERS:
        raise ItemError(
            f"{key}: more than {MAX_JSON_CONTAINERS} JSON objects and arrays ({containers})"
        )


def gunzip(data: bytes, limit: int, key: str) -> bytes:
    """Decompress gzip (several members, as Go's gzip reader does, up to MAX_GZIP_MEMBERS)
    up to ``limit`` bytes. Input goes in by chunks, so what is left after a member is never
    the whole rest of a large file (copying it for each of many members is quadratic).

    Raises ItemError when the data is not gzip, is truncated, or inflates beyond the limit.
    """
    out = bytearray()
    view = memoryview(data)
    pos = 0
    tail = b""  # input read past the end of the previous member
    inflater: Any = None
    members = 0
    while tail or pos < len(view):
        if inflater is None:
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise ItemError(f"{key}: more than {MAX_GZIP_MEMBERS} gzip members")
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if tail:
            chunk: bytes | memoryview = tail
            tail = b""
        else:
            chunk = view[pos : pos + _GZIP_CHUNK]
            pos += len(chunk)
        try:
            piece = inflater.decompress(chunk, limit + 1 - len(out))
        except zlib.error as exc:
            raise ItemError(f"{key}: not valid gzip: {exc}") from None
        out += piece
        if len(out) > limit or inflater.unconsumed_tail:
            raise ItemError(f"{key}: decompresses to more than {limit} bytes")
        if inflater.eof:
            tail = inflater.unused_data
            inflater = None
    if inflater is not None:
        raise ItemError(f"{key}: truncated gzip data")
    return bytes(out)
