"""Velero's object-store layout and the reads the sync needs, with size caps.

This is the only module that knows key names (Velero ``object_store_layout.go``) and what
Velero's files hold. Bucket contents are untrusted: every read is capped, and its bytes are
decoded by ``decode.py`` (gzip and JSON with bounds); anything malformed becomes an
ItemError naming the key.
"""

from __future__ import annotations

from collections.abc import Iterator

from worker.errors import ItemError
from worker.storage import ObjectStore
from worker.storage.decode import MiB, StreamedList, gzipped_json_list, json_object
from worker.velero import BACKUP, VELERO_API_VERSION, Obj

# StreamedList is what the list reads may return, so it belongs to this module's interface.
__all__ = [
    "MAX_GZIP_BYTES",
    "MAX_METADATA_BYTES",
    "BackupStore",
    "StreamedList",
    "go_path_clean",
    "go_path_join",
]

MAX_METADATA_BYTES = 8 * MiB  # velero-backup.json; real ones are a few KiB
MAX_GZIP_BYTES = 32 * MiB  # a compressed list as stored


def go_path_clean(path: str) -> str:
    """Go's ``path.Clean``: one slash between elements, ``.`` dropped, ``..`` resolved
    against the element before it (kept at the start of a relative path, dropped at the
    root); ``"."`` for an empty result."""
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append(part)
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_path_join(*parts: str) -> str:
    """Go's ``path.Join``: the non-empty parts joined with ``/`` and cleaned; ``""`` when
    every part is empty."""
    kept = [part for part in parts if part]
    return go_path_clean("/".join(kept)) if kept else ""


class BackupStore:
    """Velero-aware reads from one location's bucket and prefix.

    Keys are built as Velero's ``ObjectStoreLayout`` builds them, with Go's ``path.Join``:
    a prefix ``team//prod/`` or ``a/./b`` names the same keys as ``team/prod`` or ``a/b``.
    Listing the uncleaned prefix would find nothing where Velero wrote, and every synced
    Backup of the location would look orphaned."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        # Velero trims "/" from the prefix, adds one, then path.Join(prefix, "backups") + "/".
        prefix = prefix.strip("/")
        self._backups_dir = go_path_join(f"{prefix}/" if prefix else "", "backups") + "/"

    @property
    def backups_dir(self) -> str:
        return self._backups_dir

    def close(self) -> None:
        """Close the store underneath (its connection pool)."""
        self._store.close()

    def metadata_key(self, name: str) -> str:
        return go_path_join(self._backups_dir, name, "velero-backup.json")

    def pod_volume_backups_key(self, name: str) -> str:
        return self._file_key(name, "podvolumebackups.json.gz")

    def _file_key(self, name: str, suffix: str) -> str:
        return go_path_join(self._backups_dir, name, f"{name}-{suffix}")

    def has_folder(self, name: str) -> bool:
        """Whether ``<prefix>/backups/<name>/`` holds anything (one listing request)."""
        folder = f"{self._backups_dir}{name}/"
        return any(p == folder for p in self._store.list_common_prefixes(folder[:-1], "/"))

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
        backup = json_object(data, key)
        kind, api_version = backup.get("kind"), backup.get("apiVersion")
        if kind != BACKUP.kind or api_version != VELERO_API_VERSION:
            raise ItemError(
                f"{key}: expected apiVersion {VELERO_API_VERSION} kind {BACKUP.kind}, "
                f"got apiVersion {api_version!r} kind {kind!r}"
            )
        if not isinstance(backup.get("metadata"), dict):
            raise ItemError(f"{key}: metadata is missing or not an object")
        return backup

    def pod_volume_backups(self, name: str) -> list[Obj] | StreamedList:
        return self._gzipped_list(self.pod_volume_backups_key(name))

    def csi_volume_snapshot_classes(self, name: str) -> list[Obj] | StreamedList:
        return self._gzipped_list(self._file_key(name, "csi-volumesnapshotclasses.json.gz"))

    def csi_volume_snapshot_contents(self, name: str) -> list[Obj] | StreamedList:
        return self._gzipped_list(self._file_key(name, "csi-volumesnapshotcontents.json.gz"))

    def _gzipped_list(self, key: str) -> list[Obj] | StreamedList:
        """A gzip'd JSON list as Velero writes it (``decode.gzipped_json_list``); an absent
        file is empty."""
        data = self._store.get(key, MAX_GZIP_BYTES)
        return [] if data is None else gzipped_json_list(data, key)
