"""The benchmark's backups: names, and seeding a bucket with many of them in parallel.

Every backup is what ``harness.seed`` writes for a Completed Velero 1.15 backup: a realistic
``velero-backup.json`` and a pod volume backup file with ``pod_volume_backups`` entries
(and, with ``extras``, the log and tarball objects a real bucket holds next to them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from harness.seed import SeedBackup, backup_objects
from worker.pool import bounded_map

Put = Callable[[str, bytes], None]


def backup_name(index: int) -> str:
    return f"backup-{index:06d}"


def seed_backup(index: int, pod_volume_backups: int = 2) -> SeedBackup:
    return SeedBackup(backup_name(index), pod_volume_backups=pod_volume_backups)


def seed_bucket(
    put: Put,
    prefix: str,
    indexes: Iterable[int],
    *,
    pod_volume_backups: int = 2,
    extras: bool = True,
    metadata_only: bool = False,
    threads: int = 16,
) -> int:
    """Write the backups through ``put`` on ``threads`` threads; the number of objects.
    ``metadata_only`` writes just ``velero-backup.json`` (enough for listing-only runs)."""
    now = datetime.now(UTC)
    count = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal count
        objects = backup_objects(seed_backup(index, pod_volume_backups), prefix, now, extras)
        if metadata_only:
            objects = {k: v for k, v in objects.items() if k.endswith("/velero-backup.json")}
        for key, data in objects.items():
            put(key, data)
        with lock:
            count += len(objects)

    for _ in bounded_map(one, indexes, threads):
        pass
    return count
