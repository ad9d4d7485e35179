"""Pure rewrites of bucket objects into cluster objects: worker.rewrite."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from harness.velero_docs import stored_backup, stored_pvb, stored_vsclass, stored_vscontent
from tests.unit.helpers import FUTURE, NOW, NS, PAST
from worker import rewrite, velero
from worker.rewrite import (
    backup_for_cluster,
    pod_volume_backup_for_cluster,
    snapshot_class_for_cluster,
    static_snapshot_content,
    valid_label,
    waiting_and_unexpired,
)

SERVER_FIELDS = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
)

# -- valid_label -----------------------------------------------------------------------------


def test_valid_label_63_chars_unchanged() -> None:
    value = "a" * 63
    assert valid_label(value) == value


def test_valid_label_short_unchanged() -> None:
    assert valid_label("default") == "default"
    assert valid_label("") == ""


def test_valid_label_64_chars_hashed() -> None:
    value = "a" * 64
    # sha256("a" * 64) = ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb
    assert valid_label(value) == "a" * 57 + "ffe054"
    assert hashlib.sha256(value.encode()).hexdigest()[:6] == "ffe054"
    assert len(valid_label(value)) == 63


def test_valid_label_long_value_is_57_prefix_plus_6_hex_of_whole_value() -> None:
    value = "backup-location-" + "x" * 48  # 64 characters
    assert len(value) == 64
    assert valid_label(value) == value[:57] + "7864d8"
    longer = "z" * 200
    assert valid_label(longer) == "z" * 57 + hashlib.sha256(longer.encode()).hexdigest()[:6]


def test_valid_label_differs_for_values_sharing_57_char_prefix() -> None:
    a, b = "p" * 57 + "-one-xxxxxx", "p" * 57 + "-two-xxxxxx"
    assert valid_label(a) != valid_label(b)


# -- waiting / finalizing phases ---------------------------------------------------------------

WAITING = [
    "WaitingForPluginOperations",
    "WaitingForPluginOperationsPartiallyFailed",
    "Finalizing",
    "FinalizingPartiallyFailed",
]


@pytest.mark.parametrize("phase", WAITING)
def test_waiting_phase_without_expiration_waits(phase: str) -> None:
    assert waiting_and_unexpired(stored_backup("b", phase=phase), NOW) is True


@pytest.mark.parametrize("phase", WAITING)
def test_waiting_phase_with_future_expiration_waits(phase: str) -> None:
    assert waiting_and_unexpired(stored_backup("b", phase=phase, expiration=FUTURE), NOW) is True


@pytest.mark.parametrize("phase", WAITING)
def test_waiting_phase_expired_does_not_wait(phase: str) -> None:
    assert waiting_and_unexpired(stored_backup("b", phase=phase, expiration=PAST), NOW) is False


@pytest.mark.parametrize("phase", ["Completed", "PartiallyFailed", "Failed", "InProgress", ""])
def test_other_phases_never_wait(phase: str) -> None:
    assert waiting_and_unexpired(stored_backup("b", phase=phase), NOW) is False


@pytest.mark.parametrize("phase", WAITING)
def test_expired_waiting_backup_becomes_partially_failed(phase: str) -> None:
    out = backup_for_cluster(stored_backup("b", phase=phase, expiration=PAST), NS, "loc", NOW)
    assert out["status"]["phase"] == "PartiallyFailed"
    assert out["status"]["expiration"] == PAST


@pytest.mark.parametrize("phase", ["Completed", "PartiallyFailed", "Failed"])
def test_other_phases_are_kept(phase: str) -> None:
    out = backup_for_cluster(stored_backup("b", phase=phase, expiration=PAST), NS, "loc", NOW)
    assert out["status"]["phase"] == phase


# -- backup_for_cluster -----------------------------------------------------------------------


def test_backup_rewrite_fields() -> None:
    stored = stored_backup("nightly", labels={"app": "web"})
    stored["metadata"]["selfLink"] = "/apis/velero.io/v1/x"
    stored["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    original = copy.deepcopy(stored)

    out = backup_for_cluster(stored, NS, "secondary", NOW)

    assert stored == original, "input must not be mutated"
    meta = out["metadata"]
    assert meta["namespace"] == NS
    assert meta["name"] == "nightly"
    for key in SERVER_FIELDS:
        assert key not in meta, key
    assert out["spec"]["storageLocation"] == "secondary"
    assert meta["labels"] == {"velero.io/storage-location": "secondary", "app": "web"}
    # unknown and untouched fields survive
    assert out["spec"]["ttl"] == "720h0m0s"
    assert out["spec"]["includedNamespaces"] == ["*"]
    assert out["status"] == original["status"]
    assert out["apiVersion"] == "velero.io/v1"
    assert out["kind"] == "Backup"


def test_backup_rewrite_uses_valid_label_for_long_location() -> None:
    location = "l" * 70
    out = backup_for_cluster(stored_backup("b"), NS, location, NOW)
    assert out["spec"]["storageLocation"] == location
    expected = "l" * 57 + hashlib.sha256(location.encode()).hexdigest()[:6]
    assert out["metadata"]["labels"]["velero.io/storage-location"] == expected


def test_backup_rewrite_adds_labels_when_absent_or_null() -> None:
    stored = stored_backup("b")
    del stored["metadata"]["labels"]
    out = backup_for_cluster(stored, NS, "loc", NOW)
    assert out["metadata"]["labels"] == {"velero.io/storage-location": "loc"}
    stored["metadata"]["labels"] = None
    out = backup_for_cluster(stored, NS, "loc", NOW)
    assert out["metadata"]["labels"] == {"velero.io/storage-location": "loc"}


def test_backup_rewrite_keeps_owner_references_for_later_filtering() -> None:
    refs = [{"apiVersion": "velero.io/v1", "kind": "Schedule", "name": "s", "uid": "u"}]
    out = backup_for_cluster(stored_backup("b", owner_refs=refs), NS, "loc", NOW)
    assert out["metadata"]["ownerReferences"] == refs


# -- the in-progress mark ----------------------------------------------------------------------


def test_the_run_mark_is_added_beside_the_backups_own_annotations() -> None:
    backup = backup_for_cluster(stored_backup("b"), NS, "loc", NOW)
    backup["metadata"]["annotations"] = {"team": "web"}
    original = copy.deepcopy(backup)

    out = rewrite.with_run_mark(backup, "run-1/000000")

    assert backup == original, "input must not be mutated"
    assert out["metadata"]["annotations"] == {"team": "web", velero.RUN_ANNOTATION: "run-1/000000"}
    assert {k: v for k, v in out.items() if k != "metadata"} == {
        k: v for k, v in original.items() if k != "metadata"
    }


@pytest.mark.parametrize("annotations", [None, "not a map", ["x"]])
def test_the_run_mark_replaces_annotations_that_are_not_a_map(annotations: object) -> None:
    backup = backup_for_cluster(stored_backup("b"), NS, "loc", NOW)
    backup["metadata"]["annotations"] = annotations
    out = rewrite.with_run_mark(backup, "r/~")
    assert out["metadata"]["annotations"] == {velero.RUN_ANNOTATION: "r/~"}


def test_the_pending_mark_is_set_and_removed_by_one_merge_patch() -> None:
    key = velero.DEPENDENTS_PENDING_ANNOTATION
    assert rewrite.pending_mark_patch(True) == {"metadata": {"annotations": {key: "true"}}}
    # null in a merge patch deletes the key
    assert rewrite.pending_mark_patch(False) == {"metadata": {"annotations": {key: None}}}


# -- pod volume backups ----------------------------------------------------------------------


def test_pvb_rewrite_points_at_new_backup() -> None:
    stored = stored_pvb("pvb-1", "nightly")
    original = copy.deepcopy(stored)

    out = pod_volume_backup_for_cluster(stored, "nightly", "new-uid", NS, "secondary")

    assert stored == original
    meta = out["metadata"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "name": "nightly",
            "uid": "new-uid",
            "controller": True,
        }
    ]
    assert meta["labels"] == {"velero.io/backup-name": "nightly", "velero.io/backup-uid": "new-uid"}
    assert meta["namespace"] == NS
    for key in SERVER_FIELDS:
        assert key not in meta, key
    assert out["spec"]["backupStorageLocation"] == "secondary"
    assert out["spec"]["pod"] == original["spec"]["pod"]
    assert out["status"] == original["status"]


def test_pvb_uid_label_not_added_when_absent() -> None:
    out = pod_volume_backup_for_cluster(
        stored_pvb("p", "nightly", with_uid_label=False), "nightly", "new-uid", NS, "loc"
    )
    assert out["metadata"]["labels"] == {"velero.io/backup-name": "nightly"}
    assert velero.BACKUP_UID_LABEL not in out["metadata"]["labels"]


def test_pvb_owner_refs_of_other_kinds_dropped() -> None:
    # Deviation from Velero, which keeps them: nothing but its Backup owns a PVB.
    stored = stored_pvb("p", "nightly")
    other_group = {"apiVersion": "example.com/v1", "kind": "Backup", "name": "nightly", "uid": "g"}
    other_kind = {"apiVersion": "velero.io/v1", "kind": "Schedule", "name": "nightly", "uid": "s"}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system", "uid": "n"}
    stored["metadata"]["ownerReferences"] += [other_group, other_kind, namespace, "junk"]

    out = pod_volume_backup_for_cluster(stored, "nightly", "new-uid", NS, "loc")

    refs = out["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("Backup", "nightly", "new-uid")]


def test_pvb_without_any_backup_owner_has_no_owner_refs() -> None:
    stored = stored_pvb("p", "nightly")
    stored["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "x"}]
    out = pod_volume_backup_for_cluster(stored, "nightly", "new-uid", NS, "loc")
    assert "ownerReferences" not in out["metadata"]


@pytest.mark.parametrize("how", ["owner-ref", "label"])
def test_pvb_of_another_backup_refused(how: str) -> None:
    stored = stored_pvb("p", "nightly")
    if how == "owner-ref":
        stored["metadata"]["ownerReferences"].append(
            {"apiVersion": "velero.io/v1", "kind": "Backup", "name": "other", "uid": "o"}
        )
    else:
        stored["metadata"]["labels"]["velero.io/backup-name"] = "other"
    with pytest.raises(ValueError, match="belongs to backup 'other'"):
        pod_volume_backup_for_cluster(stored, "nightly", "new-uid", NS, "loc")


@pytest.mark.parametrize("name", [None, "", "Upper", "a_b", "x" * 254, 7, "-lead"])
def test_dependents_need_a_valid_name(name: Any) -> None:
    pvb = stored_pvb("p", "nightly")
    vsclass = stored_vsclass("c")
    content = stored_vscontent("c", "nightly")
    for obj in (pvb, vsclass, content):
        obj["metadata"]["name"] = name
        obj["metadata"]["generateName"] = "gen-"
    with pytest.raises(ValueError, match=r"metadata\.name"):
        pod_volume_backup_for_cluster(pvb, "nightly", "u", NS, "loc")
    with pytest.raises(ValueError, match=r"metadata\.name"):
        snapshot_class_for_cluster(vsclass)
    with pytest.raises(ValueError, match=r"metadata\.name"):
        static_snapshot_content(content)


def test_finalizers_stripped_from_everything_created() -> None:
    backup = stored_backup("b")
    pvb = stored_pvb("p", "b")
    vsclass = stored_vsclass("c")
    content = stored_vscontent("c", "b")
    for obj in (backup, pvb, vsclass, content):
        obj["metadata"]["finalizers"] = ["example.com/never-let-go"]
    outs = [
        backup_for_cluster(backup, NS, "loc", NOW),
        pod_volume_backup_for_cluster(pvb, "b", "u", NS, "loc"),
        snapshot_class_for_cluster(vsclass),
        static_snapshot_content(content, "b"),
    ]
    for out in outs:
        assert "finalizers" not in out["metadata"]


def test_snapshot_class_cannot_become_the_default() -> None:
    stored = stored_vsclass("c")
    stored["metadata"]["annotations"] = {
        "snapshot.storage.kubernetes.io/is-default-class": "true",
        "keep": "me",
    }
    stored["metadata"]["ownerReferences"] = [{"kind": "Namespace", "name": "kube-system"}]
    out = snapshot_class_for_cluster(stored)
    assert out["metadata"]["annotations"] == {"keep": "me"}
    assert "ownerReferences" not in out["metadata"]


def test_snapshot_content_of_another_backup_refused() -> None:
    content = stored_vscontent("c", "other")
    with pytest.raises(ValueError, match="belongs to backup 'other'"):
        static_snapshot_content(content, "mine")
    assert static_snapshot_content(content, "other")["metadata"]["name"] == "c"


@pytest.mark.parametrize("status", [None, [], "x", {"snapshotHandle": ""}])
def test_snapshot_content_with_odd_status_refused(status: Any) -> None:
    content = stored_vscontent("c", "b")
    content["status"] = status
    with pytest.raises(ValueError, match="snapshotHandle"):
        static_snapshot_content(content)


@pytest.mark.parametrize(
    ("phase", "problem"),
    [
        ("Completed", False),
        ("PartiallyFailed", False),
        ("Failed", False),
        ("WaitingForPluginOperations", False),
        ("FinalizingPartiallyFailed", False),
        ("New", True),  # Velero's backup controller would run it
        ("", True),  # so would it with no phase
        ("InProgress", True),
        ("FailedValidation", True),
        ("Deleting", True),
        ("Bogus", True),
    ],
)
def test_backup_problem_by_phase(phase: str, problem: bool) -> None:
    assert bool(rewrite.backup_problem(stored_backup("b", phase=phase))) is problem


def test_backup_problem_without_status() -> None:
    backup = stored_backup("b")
    backup["status"] = None
    assert "status.phase ''" in rewrite.backup_problem(backup)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("nightly-20260101", True),
        ("a.b-c", True),
        ("a" * 253, True),
        ("a" * 254, False),
        ("UPPER", False),
        ("with space", False),
        ("..", False),
        ("a\nb", False),
        ("ünïcode", False),
        ("-x", False),
        ("x-", False),
        ("", False),
    ],
)
def test_invalid_name(name: str, ok: bool) -> None:
    assert (rewrite.invalid_name(name) == "") is ok


def test_shown_quotes_and_cuts_hostile_names() -> None:
    assert rewrite.shown("fine-name") == "fine-name"
    assert rewrite.shown("a\nb") == "'a\\nb'"
    long = rewrite.shown("X" * 10_000)
    assert len(long) <= 82 and long.endswith("…")
    assert rewrite.shown(None) == "None"


# -- CSI ---------------------------------------------------------------------------------------


def test_snapshot_class_rewrite() -> None:
    stored = stored_vsclass("csi-class")
    stored["metadata"]["namespace"] = "should-not-be-there"
    out = snapshot_class_for_cluster(stored)
    assert out == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": {"name": "csi-class"},
        "driver": "ebs.csi.aws.com",
        "deletionPolicy": "Retain",
    }


def test_static_snapshot_content() -> None:
    stored = stored_vscontent("snapcontent-1", "nightly", handle="snap-42")
    original = copy.deepcopy(stored)

    out = static_snapshot_content(stored)

    assert stored == original
    assert out["spec"]["source"] == {"snapshotHandle": "snap-42"}
    assert out["spec"]["volumeSnapshotRef"] == {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "namespace": "ns-vsc-uid-snapcontent-1",
        "name": "name-vsc-uid-snapcontent-1",
    }
    assert out["spec"]["deletionPolicy"] == "Delete"
    assert out["spec"]["driver"] == "ebs.csi.aws.com"
    assert out["metadata"] == {
        "name": "snapcontent-1",
        "labels": {"velero.io/backup-name": "nightly"},
    }


def test_static_snapshot_content_without_handle_is_error() -> None:
    with pytest.raises(ValueError, match="snapshotHandle"):
        static_snapshot_content(stored_vscontent("c", "b", handle=None))


def test_static_snapshot_content_without_uid_is_error() -> None:
    stored = stored_vscontent("c", "b")
    del stored["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        static_snapshot_content(stored)


@pytest.mark.parametrize("phase", WAITING)
def test_waiting_phase_expiring_right_now_is_expired(phase: str) -> None:
    # Go: skip while Expiration.After(now); an expiration equal to now is past.
    now_stamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (
        waiting_and_unexpired(stored_backup("b", phase=phase, expiration=now_stamp), NOW) is False
    )
