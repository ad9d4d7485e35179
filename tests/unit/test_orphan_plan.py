"""The orphan plan, pure: which of a location's Backups are orphans, and whether the
mass-deletion guard lets them be deleted (worker.orphans.orphan_plan). No cluster, no fakes:
Backups in, a plan out."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from worker.cluster_backups import ClusterBackup
from worker.guard import MassDeletionGuard
from worker.orphans import OrphanPlan, orphan_plan

GUARD = MassDeletionGuard()  # more than half and at least 10


def completed(count: int, location: str | None = "loc", prefix: str = "b") -> list[ClusterBackup]:
    return [ClusterBackup(f"{prefix}{i:03}", location, "Completed") for i in range(count)]


def names(count: int, prefix: str = "b") -> set[str]:
    return {f"{prefix}{i:03}" for i in range(count)}


def test_no_orphans_is_an_empty_plan() -> None:
    existing = completed(20)
    plan = orphan_plan(existing, names(20), "loc", GUARD)
    assert plan == OrphanPlan(location_backups=20)


def test_orphans_to_delete_in_name_order_and_only_those_absent_from_the_store() -> None:
    existing = [
        ClusterBackup("zeta", "loc", "Completed"),
        ClusterBackup("alpha", "loc", "PartiallyFailed"),
        ClusterBackup("kept", "loc", "Completed"),
    ]
    plan = orphan_plan(existing, {"kept"}, "loc", MassDeletionGuard(floor=10))
    assert plan.delete == ("alpha", "zeta")
    assert (plan.blocked, plan.why, plan.mass) == ((), "", False)


@pytest.mark.parametrize(
    "phase", ["InProgress", "Failed", "Deleting", "New", "FailedValidation", "Finalizing", ""]
)
def test_only_completed_and_partially_failed_backups_are_orphans(phase: str) -> None:
    plan = orphan_plan([ClusterBackup("b", "loc", phase)], set(), "loc", GUARD)
    assert plan.delete == () and plan.blocked == ()
    assert plan.location_backups == 1  # still one of the location's Backups


def test_backups_of_another_location_or_unlabelled_are_never_orphans_here() -> None:
    existing = [
        ClusterBackup("elsewhere", "other", "Completed"),
        ClusterBackup("unlabelled", None, "Completed"),
        ClusterBackup("ours", "loc", "Completed"),
    ]
    plan = orphan_plan(existing, set(), "loc", GUARD)
    assert plan.delete == ("ours",)
    assert plan.location_backups == 1


def test_a_long_location_name_matches_by_its_hashed_label_only() -> None:
    location = "primary-backup-storage-location-in-the-eu-west-1-region-of-aws-cloud"
    label = location[:57] + hashlib.sha256(location.encode()).hexdigest()[:6]
    existing = [
        ClusterBackup("hashed", label, "Completed"),
        ClusterBackup("raw", location, "Completed"),
        ClusterBackup("truncated", location[:63], "Completed"),
    ]
    plan = orphan_plan(existing, set(), location, GUARD)
    assert plan.delete == ("hashed",)
    assert plan.location_backups == 1


def test_an_emptied_bucket_is_blocked_and_says_why() -> None:
    plan = orphan_plan(completed(12), set(), "loc", GUARD)
    assert plan.delete == ()
    assert plan.blocked == tuple(sorted(names(12)))
    assert "12 of the 12 Backups" in plan.why
    assert "--allow-mass-orphan-deletion" in plan.why
    assert plan.location_backups == 12


@pytest.mark.parametrize(
    ("orphans", "kept", "blocked"),
    [
        (9, 0, False),  # under the floor, even at 100%
        (10, 0, True),  # at the floor, all of them
        (10, 9, True),  # 10 of 19: more than half
        (10, 10, False),  # 10 of 20: exactly half is not more than half
        (10, 20, False),  # a third: retention catching up after a pause
    ],
)
def test_default_thresholds(orphans: int, kept: int, blocked: bool) -> None:
    existing = completed(orphans, prefix="gone") + completed(kept, prefix="kept")
    plan = orphan_plan(existing, names(kept, prefix="kept"), "loc", GUARD)
    assert bool(plan.why) is blocked
    assert len(plan.blocked if blocked else plan.delete) == orphans
    assert (plan.delete if blocked else plan.blocked) == ()


def test_every_backup_of_the_location_counts_toward_the_share_whatever_its_phase() -> None:
    # 10 orphans of 20 Backups: half, not more; the InProgress ones cannot be orphans, but
    # they are the location's Backups all the same.
    existing = completed(10) + [ClusterBackup(f"r{i}", "loc", "InProgress") for i in range(10)]
    plan = orphan_plan(existing, set(), "loc", GUARD)
    assert len(plan.delete) == 10
    assert plan.location_backups == 20


def test_another_locations_backups_do_not_dilute_the_share() -> None:
    existing = completed(10) + completed(100, location="elsewhere", prefix="other")
    plan = orphan_plan(existing, set(), "loc", GUARD)
    assert len(plan.blocked) == 10
    assert plan.location_backups == 10


def test_the_operators_override_deletes_the_mass_and_says_it_was_one() -> None:
    plan = orphan_plan(completed(12), set(), "loc", MassDeletionGuard(allow=True))
    assert len(plan.delete) == 12
    assert (plan.blocked, plan.why, plan.mass) == ((), "", True)


def test_a_deletion_under_the_thresholds_is_not_a_mass() -> None:
    plan = orphan_plan(completed(9), set(), "loc", MassDeletionGuard(allow=True))
    assert len(plan.delete) == 9
    assert plan.mass is False


@pytest.mark.parametrize(
    ("guard", "blocked"),
    [
        (MassDeletionGuard(share=0.5, floor=3), True),
        (MassDeletionGuard(share=0.5, floor=4), False),
        (MassDeletionGuard(share=1.0, floor=0), False),  # share 1: the guard is off
    ],
)
def test_custom_thresholds(guard: MassDeletionGuard, blocked: bool) -> None:
    plan = orphan_plan(completed(3), set(), "loc", guard)
    assert bool(plan.blocked) is blocked
    assert len(plan.delete) == (0 if blocked else 3)


def test_the_plan_is_a_value() -> None:
    plan = orphan_plan(completed(2), set(), "loc", GUARD)
    assert plan == orphan_plan(completed(2), set(), "loc", GUARD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.delete = ()  # type: ignore[misc]
