"""Which locations a run syncs, and in what order. Pure functions over BSL dicts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker import velero
from worker.durations import parse_go_duration
from worker.errors import ConfigError

Location = dict[str, Any]


def name_of(location: Location) -> str:
    return str(location.get("metadata", {}).get("name", ""))


def order_default_first(locations: Sequence[Location]) -> list[Location]:
    """The default location first, then the others in API order (Velero's
    backupSyncSourceOrderFunc: those before the default, then those after)."""
    for index, location in enumerate(locations):
        if velero.spec(location).get("default") is True:
            return [location, *locations[:index], *locations[index + 1 :]]
    return list(locations)


def _configured_period(location: Location, default: timedelta) -> timedelta:
    """``spec.backupSyncPeriod`` when set, else the default; not yet corrected."""
    raw = velero.spec(location).get("backupSyncPeriod")
    return default if raw is None else parse_go_duration(str(raw))


def parse_time(value: str) -> datetime:
    """RFC 3339 as written by the API server (``2024-01-02T03:04:05Z``). A time without an
    offset (which the API server's date-time format also accepts) is taken as UTC, so that
    it compares with aware datetimes instead of raising TypeError."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Due:
    """Whether a location is due, and why (for the summary)."""

    due: bool
    reason: str
    period: timedelta  # the effective backupSyncPeriod (0: sync disabled)

    @property
    def disabled(self) -> bool:
        """``backupSyncPeriod: 0``: never synced, not even with --force."""
        return self.period == timedelta(0)


def due_check(location: Location, default: timedelta, now: datetime, force: bool) -> Due:
    """Velero's locationFilterFunc: a period of 0 never syncs (even with --force); a negative
    one means the default (checked after the zero rule, as Velero does, so a negative
    period with a zero default syncs every run); due when never synced or
    ``now >= lastSyncedTime + period``; --force skips the time check."""
    try:
        period = _configured_period(location, default)
    except ConfigError as exc:
        raise ConfigError(f"location {name_of(location)!r}: backupSyncPeriod: {exc}") from exc
    if period == timedelta(0):
        return Due(False, "sync disabled (backupSyncPeriod is 0)", period)
    if period < timedelta(0):
        period = default
    if force:
        return Due(True, "forced", period)
    last = velero.status(location).get("lastSyncedTime")
    if not last:
        return Due(True, "never synced", period)
    try:
        last_synced = parse_time(str(last))
    except ValueError:
        return Due(True, f"unreadable status.lastSyncedTime {last!r}", period)
    next_sync = last_synced + period
    if now < next_sync:
        return Due(False, f"not due until {next_sync.isoformat()}", period)
    return Due(True, "period elapsed", period)


def selected(locations: Iterable[Location], names: frozenset[str]) -> list[Location]:
    """Restrict to ``--location`` names (all when empty)."""
    return [loc for loc in locations if not names or name_of(loc) in names]


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``: the locations whose name hashes to ``index``."""

    index: int
    count: int

    @staticmethod
    def of(name: str, count: int) -> int:
        """The shard of a location name: SHA-256, so every pod of an Indexed Job agrees
        (Python's hash() is salted per process)."""
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 0 <= I < N. Raises ConfigError."""
        index, _, count = text.partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
        if not 0 <= shard.index < shard.count:
            raise ConfigError(f"--shard {text!r}: need 0 <= I < N")
        return shard

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def in_shard(locations: Iterable[Location], shard: Shard | None) -> list[Location]:
    """The locations of ``shard`` (all without one), in their order."""
    if shard is None:
        return list(locations)
    return [loc for loc in locations if Shard.of(name_of(loc), shard.count) == shard.index]
