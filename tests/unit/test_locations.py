"""Which locations a run syncs and in what order: worker.locations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.unit.helpers import NOW, bsl
from worker.errors import ConfigError
from worker.locations import (
    Shard,
    due_check,
    in_shard,
    name_of,
    order_default_first,
    parse_time,
    selected,
)

MINUTE = timedelta(minutes=1)


def names(locations: list[dict[str, Any]]) -> list[str]:
    return [name_of(loc) for loc in locations]


# -- ordering -------------------------------------------------------------------------------


def test_default_in_the_middle_goes_first_then_those_before_then_those_after() -> None:
    locs = [bsl("a"), bsl("b"), bsl("dflt", default=True), bsl("c"), bsl("d")]
    assert names(order_default_first(locs)) == ["dflt", "a", "b", "c", "d"]


def test_default_last_goes_first() -> None:
    locs = [bsl("a"), bsl("b"), bsl("dflt", default=True)]
    assert names(order_default_first(locs)) == ["dflt", "a", "b"]


def test_default_first_stays_first() -> None:
    locs = [bsl("dflt", default=True), bsl("a"), bsl("b")]
    assert names(order_default_first(locs)) == ["dflt", "a", "b"]


def test_no_default_keeps_api_order() -> None:
    locs = [bsl("c"), bsl("a"), bsl("b")]
    assert names(order_default_first(locs)) == ["c", "a", "b"]


def test_default_false_is_not_default() -> None:
    locs = [bsl("a"), {**bsl("b"), "spec": {"default": False}}]
    assert names(order_default_first(locs)) == ["a", "b"]


def test_empty_list() -> None:
    assert order_default_first([]) == []


def test_ordering_does_not_mutate_input() -> None:
    locs = [bsl("a"), bsl("dflt", default=True)]
    order_default_first(locs)
    assert names(locs) == ["a", "dflt"]


# -- --location ------------------------------------------------------------------------------


def test_selected_restricts_and_keeps_order() -> None:
    locs = [bsl("a"), bsl("b"), bsl("c")]
    assert names(selected(locs, frozenset({"c", "a"}))) == ["a", "c"]
    assert names(selected(locs, frozenset())) == ["a", "b", "c"]


# -- due check (the period rules too) ----------------------------------------------------


def stamp(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_never_synced_is_due() -> None:
    due = due_check(bsl("a"), MINUTE, NOW, force=False)
    assert due.due is True
    assert due.reason == "never synced"


def test_unset_period_elapsed_is_due() -> None:
    due = due_check(bsl("a", last_synced=stamp(-timedelta(minutes=2))), MINUTE, NOW, False)
    assert due.due is True
    assert due.reason == "period elapsed"


def test_unset_period_not_elapsed_is_not_due() -> None:
    due = due_check(bsl("a", last_synced=stamp(-timedelta(seconds=30))), MINUTE, NOW, False)
    assert due.due is False
    assert due.reason.startswith("not due until")


def test_exactly_at_next_sync_is_due() -> None:
    # Go: due unless now.Before(lastSynced + period).
    due = due_check(bsl("a", last_synced=stamp(-MINUTE)), MINUTE, NOW, False)
    assert due.due is True


def test_one_second_before_next_sync_is_not_due() -> None:
    due = due_check(bsl("a", last_synced=stamp(-timedelta(seconds=59))), MINUTE, NOW, False)
    assert due.due is False


def test_location_period_overrides_default() -> None:
    loc = bsl("a", period="1h", last_synced=stamp(-timedelta(minutes=30)))
    assert due_check(loc, MINUTE, NOW, False).due is False
    loc = bsl("a", period="10s", last_synced=stamp(-timedelta(seconds=30)))
    assert due_check(loc, timedelta(hours=1), NOW, False).due is True


def test_negative_period_falls_back_to_default() -> None:
    loc = bsl("a", period="-1s", last_synced=stamp(-timedelta(minutes=30)))
    assert due_check(loc, timedelta(hours=1), NOW, False).due is False
    assert due_check(loc, timedelta(minutes=10), NOW, False).due is True


def test_zero_period_is_never_due() -> None:
    due = due_check(bsl("a", period="0s"), MINUTE, NOW, force=False)
    assert due.due is False
    assert due.reason.startswith("sync disabled")


@pytest.mark.parametrize("zero", ["0", "0s", "0m0s", "-0"])
def test_force_never_overrides_zero_period(zero: str) -> None:
    due = due_check(bsl("a", period=zero), MINUTE, NOW, force=True)
    assert due.due is False
    assert due.reason.startswith("sync disabled")


def test_zero_default_period_disables_locations_without_their_own() -> None:
    assert due_check(bsl("a"), timedelta(0), NOW, force=True).due is False


def test_force_overrides_not_elapsed() -> None:
    loc = bsl("a", last_synced=stamp(-timedelta(seconds=1)))
    assert due_check(loc, MINUTE, NOW, force=False).due is False
    due = due_check(loc, MINUTE, NOW, force=True)
    assert due.due is True
    assert due.reason == "forced"


def test_last_synced_in_the_future_is_not_due() -> None:
    assert due_check(bsl("a", last_synced=stamp(MINUTE)), MINUTE, NOW, False).due is False


def test_fractional_and_offset_last_synced_times() -> None:
    loc = bsl("a", last_synced="2026-03-01T11:59:30.5+00:00")
    assert due_check(loc, MINUTE, NOW, False).due is False
    loc = bsl("a", last_synced="2026-03-01T12:58:00+01:00")  # 11:58 UTC
    assert due_check(loc, MINUTE, NOW, False).due is True


def test_last_synced_without_offset_is_utc_not_a_crash() -> None:
    assert parse_time("2026-03-01T11:59:30") == parse_time("2026-03-01T11:59:30Z")
    loc = bsl("a", last_synced="2026-03-01T11:59:30")
    assert due_check(loc, MINUTE, NOW, False).due is False


def test_unreadable_last_synced_is_due() -> None:
    due = due_check(bsl("a", last_synced="yesterday"), MINUTE, NOW, False)
    assert due.due is True
    assert "yesterday" in due.reason


def test_bad_period_is_config_error_naming_the_location() -> None:
    with pytest.raises(ConfigError, match=r"'east'.*backupSyncPeriod"):
        due_check(bsl("east", period="1"), MINUTE, NOW, False)


def test_negative_period_with_zero_default_syncs_every_run() -> None:
    # Velero checks the zero rule before substituting the default for a negative period,
    # so -1s with a default of 0 is due (not disabled), even right after a sync.
    location = bsl("a", period="-1s", last_synced=stamp(timedelta(0)))
    due = due_check(location, timedelta(0), NOW, force=False)
    assert due.due


def test_unset_period_with_zero_default_is_disabled() -> None:
    due = due_check(bsl("a"), timedelta(0), NOW, force=True)
    assert not due.due
    assert "disabled" in due.reason


# -- shards -----------------------------------------------------------------------------------


def test_every_location_belongs_to_exactly_one_shard() -> None:
    locs = [bsl(f"tenant-{i:02d}") for i in range(40)]
    shards = [names(in_shard(locs, Shard(i, 4))) for i in range(4)]
    assert sorted(n for shard in shards for n in shard) == sorted(names(locs))
    assert all(shard for shard in shards)  # 40 names spread over all four


def test_the_shard_of_a_name_is_stable() -> None:
    """A stable hash (not Python's salted hash()): every pod agrees, run after run."""
    assert Shard.of("default", 4) == Shard.of("default", 4) == 1


def test_shard_parsing() -> None:
    assert Shard.parse("2/4") == Shard(2, 4)
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b"):
        with pytest.raises(ConfigError, match="--shard"):
            Shard.parse(bad)
