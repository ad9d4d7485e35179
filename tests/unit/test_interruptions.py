"""Runs that stop half way: the in-progress mark on Backups whose dependents are not all in
(a crash between the two writes loses nothing), termination requests (SIGTERM) and the
grace period, and runs racing each other. On the fakes; the real-process versions are in
tests/integration/test_interruptions.py."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any

import pytest

from harness.velero_docs import (
    SOURCE_ANNOTATIONS,
    stored_backup,
    stored_pvb,
    stored_vsclass,
    stored_vscontent,
)
from tests.unit.fakes import FakeCluster
from tests.unit.helpers import NOW, NS, Env, World, bsl, cluster_backup, settings
from worker import cli
from worker.cli import build_parser, settings_from
from worker.errors import AlreadyExists, ClusterError, Interrupted
from worker.pool import bounded_map
from worker.report import (
    EXIT_LOCATION_FAILED,
    SKIP_ALREADY_EXISTS,
    LocationReport,
    Outcome,
    RunReport,
)
from worker.shutdown import Shutdown
from worker.stamps import STAMP_BATCH, Stamps
from worker.sync import SyncOptions, sync_location
from worker.velero import (
    BACKUP,
    BACKUP_STORAGE_LOCATION,
    POD_VOLUME_BACKUP,
    VOLUME_SNAPSHOT_CLASS,
    VOLUME_SNAPSHOT_CONTENT,
    Kind,
)
from worker.velero import COMPLETE_THROUGH_ANNOTATION as COMPLETE_THROUGH
from worker.velero import DEPENDENTS_PENDING_ANNOTATION as MARK
from worker.velero import RUN_ANNOTATION as RUN

Obj = dict[str, Any]


def annotations(env: Env, name: str) -> dict[str, str]:
    return dict(env.backups()[name]["metadata"].get("annotations") or {})


def pvb_owner_uids(env: Env) -> dict[str, str]:
    return {
        name: pvb["metadata"]["ownerReferences"][0]["uid"]
        for name, pvb in env.cluster.of(POD_VOLUME_BACKUP, NS).items()
    }


# -- the mark: the run on the Backup, the stamp on its location ----------------------------------


def test_a_backup_with_dependents_carries_its_run_and_needs_no_write_of_its_own() -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])
    created_bodies: list[Obj] = []
    env.cluster.before(
        "create", BACKUP, lambda kind, obj: created_bodies.append(copy.deepcopy(obj))
    )

    report = env.sync()

    assert report.errors == []
    run = created_bodies[0]["metadata"]["annotations"][RUN]
    # one write per object, none to say the Backup is complete: the location's patch does
    assert env.cluster.writes == [
        ("create", "backups", "b1"),
        ("create", "podvolumebackups", "p1"),
        ("create", "podvolumebackups", "p2"),
        ("patch", "backupstoragelocations", "default"),
    ]
    run_id, batch = run.rsplit("/", 1)
    assert batch == "000000"
    assert env.stamp() == f"{run_id}/~"  # every batch of that run
    assert annotations(env, "b1") == {**SOURCE_ANNOTATIONS, RUN: run}

    env.store.gets.clear()
    env.cluster.writes.clear()
    again = env.sync()
    assert (again.created, again.resumed) == (0, 0)
    assert env.store.gets == []  # steady state: nothing read per backup
    assert env.cluster.writes == [("patch", "backupstoragelocations", "default")]
    assert env.stamp() > run


@pytest.mark.parametrize("csi", [False, True])
def test_a_backup_without_dependents_is_never_marked(csi: bool) -> None:
    env = Env()
    env.bucket.put_backup("no-files")
    env.bucket.put_backup("empty-lists", pvbs=[], vsclasses=[], vscontents=[])

    report = env.sync(csi=csi)

    assert report.created == 2
    assert [w for w in env.cluster.writes if w[0] != "create"] == [
        ("patch", "backupstoragelocations", "default")
    ]
    assert all(MARK not in annotations(env, n) for n in ("no-files", "empty-lists"))


def test_a_mark_in_the_bucket_is_not_copied() -> None:
    env = Env()
    stored = stored_backup("b1")
    stored["metadata"]["annotations"] = {MARK: "true", "team": "payments"}
    env.bucket.put_backup(stored)

    env.sync()

    assert annotations(env, "b1") == {"team": "payments"}


def test_failed_pvb_create_marks_the_backup_pending_and_the_next_run_completes_it() -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])
    env.cluster.fail_on[("create", "p2")] = ClusterError("create p2: 500", 500)

    first = env.sync()

    assert first.created == 1 and len(first.errors) == 1
    assert annotations(env, "b1")[MARK] == "true"  # the one write of the failure path
    assert ("patch", "backups", "b1") in env.cluster.writes
    assert set(env.cluster.of(POD_VOLUME_BACKUP, NS)) == {"p1"}

    del env.cluster.fail_on[("create", "p2")]
    env.cluster.writes.clear()
    second = env.sync()

    uid = env.backups()["b1"]["metadata"]["uid"]
    assert second.errors == []
    assert (second.created, second.resumed) == (0, 1)
    assert pvb_owner_uids(env) == {"p1": uid, "p2": uid}
    assert (
        env.cluster.of(POD_VOLUME_BACKUP, NS)["p2"]["metadata"]["labels"]["velero.io/backup-uid"]
        == uid
    )
    assert MARK not in annotations(env, "b1")
    assert ("create", "backups", "b1") not in env.cluster.writes

    env.store.gets.clear()
    env.cluster.writes.clear()
    third = env.sync()
    assert (third.created, third.resumed) == (0, 0)
    assert env.store.gets == []  # steady state: no per-backup reads
    assert env.cluster.writes == [("patch", "backupstoragelocations", "default")]


def test_unreadable_pvb_file_keeps_the_mark_until_it_can_be_read() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.bucket.put_raw("b1", "b1-podvolumebackups.json.gz", b"not gzip")

    first = env.sync()

    assert first.created == 1
    assert [e.object for e in first.errors] == ["pod volume backups of b1"]
    assert annotations(env, "b1")[MARK] == "true"

    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    second = env.sync()

    assert second.errors == [] and second.resumed == 1
    assert pvb_owner_uids(env) == {"p1": env.backups()["b1"]["metadata"]["uid"]}
    assert MARK not in annotations(env, "b1")


def test_marked_backup_gone_from_the_store_is_left_alone() -> None:
    env = Env()
    marked = cluster_backup("gone", "default", phase="InProgress")
    marked["metadata"]["annotations"] = {MARK: "true"}
    env.cluster.add(BACKUP, marked)

    report = env.sync()

    assert report.resumed == 0
    assert env.store.gets == []
    assert annotations(env, "gone") == {MARK: "true"}


def test_a_marked_backup_of_another_location_is_not_completed_by_this_one() -> None:
    """Two locations list the same name; the mark belongs to the Backup of "primary". A
    sync of "secondary" must not create its pod volume backups: they would name the wrong
    location (spec.backupStorageLocation) and read the other bucket's list."""
    env = Env(location_name="secondary")
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    marked = cluster_backup("b1", "primary")
    marked["metadata"]["annotations"] = {MARK: "true"}
    env.cluster.add(BACKUP, marked)

    report = env.sync()

    assert report.resumed == 0 and report.errors == []
    assert env.cluster.of(POD_VOLUME_BACKUP, NS) == {}
    assert env.store.gets == []
    assert annotations(env, "b1") == {MARK: "true"}


def test_a_create_answered_already_exists_leaves_another_locations_mark_alone() -> None:
    env = Env(location_name="secondary")
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    marked = cluster_backup("b1", "primary")
    marked["metadata"]["annotations"] = {MARK: "true"}
    env.cluster.add(BACKUP, marked)
    # The first listing fails, so the sync only learns of b1 from its create.
    env.cluster.fail_on[("list", "backups")] = ClusterError("list backups: 503", 503)

    report = env.sync()

    assert report.skipped[SKIP_ALREADY_EXISTS] == 1 and report.resumed == 0
    assert env.cluster.of(POD_VOLUME_BACKUP, NS) == {}
    assert annotations(env, "b1") == {MARK: "true"}


def test_a_failed_pending_mark_holds_the_stamp_so_the_next_run_completes_the_backup() -> None:
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    env.cluster.fail_on[("create", "p1")] = ClusterError("create p1: 503", 503)
    env.cluster.fail_on[("patch", "b1")] = ClusterError("patch b1: 503", 503)

    first = env.sync()

    assert [e.object for e in first.errors] == ["PodVolumeBackup velero/p1", f"Backup {NS}/b1"]
    assert MARK in first.errors[1].reason
    assert MARK not in annotations(env, "b1")
    assert env.stamp() is None  # this run is not stamped complete
    env.cluster.fail_on.clear()

    second = env.sync()

    assert second.errors == [] and second.resumed == 1
    assert set(env.cluster.of(POD_VOLUME_BACKUP, NS)) == {"p1"}
    assert env.stamp() is not None


def test_a_failed_removal_of_the_pending_mark_is_an_item_error_and_the_next_run_removes_it() -> (
    None
):
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    marked = cluster_backup("b1", "default")
    marked["metadata"]["annotations"] = {MARK: "true"}
    env.cluster.add(BACKUP, marked)
    env.cluster.fail_on[("patch", "b1")] = ClusterError("patch b1: 503", 503)

    first = env.sync()

    assert [e.object for e in first.errors] == [f"Backup {NS}/b1"]
    assert MARK in first.errors[0].reason
    del env.cluster.fail_on[("patch", "b1")]

    second = env.sync()

    assert second.errors == [] and second.resumed == 1
    assert MARK not in annotations(env, "b1")
    assert len(env.cluster.of(POD_VOLUME_BACKUP, NS)) == 1


def test_stamps_follow_the_finished_batches_in_work_order() -> None:
    stamps = Stamps("r", 5 * STAMP_BATCH // 2)  # two whole batches and a half
    second_batch = range(STAMP_BATCH, 2 * STAMP_BATCH)
    assert [stamps.finished(i, False) for i in second_batch] == [None] * STAMP_BATCH
    reached = [stamps.finished(i, False) for i in range(STAMP_BATCH)]
    assert reached[:-1] == [None] * (STAMP_BATCH - 1)
    assert reached[-1] == "r/000001"  # both batches at once, in order
    assert stamps.mark(2 * STAMP_BATCH) == "r/000002"
    last = [stamps.finished(i, False) for i in range(2 * STAMP_BATCH, 5 * STAMP_BATCH // 2)]
    assert last == [None] * (STAMP_BATCH // 2)  # the final stamp goes with lastSyncedTime
    assert stamps.final() == "r/~"


def test_a_blocked_item_holds_every_later_stamp() -> None:
    stamps = Stamps("r", 2 * STAMP_BATCH)
    assert stamps.finished(0, True) is None
    assert [stamps.finished(i, False) for i in range(1, 2 * STAMP_BATCH)] == [None] * (
        2 * STAMP_BATCH - 1
    )
    assert stamps.final() is None


def test_a_long_location_is_stamped_as_its_batches_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed late leaves only its unfinished batches to check, not all it created."""
    monkeypatch.setattr("worker.stamps.STAMP_BATCH", 2)
    env = Env()
    for i in range(5):
        env.bucket.put_backup(f"b{i}", pvbs=[stored_pvb(f"p{i}", f"b{i}")])

    env.sync()

    stamps = [w for w in env.cluster.writes if w == ("patch", "backupstoragelocations", "default")]
    assert len(stamps) == 3  # after b0-b1, after b2-b3, and the status patch
    assert len(env.cluster.writes) == 5 + 5 + 3


def test_a_run_killed_late_leaves_only_its_unstamped_batch_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("worker.stamps.STAMP_BATCH", 2)
    # writes: b0 p0 b1 p1 stamp(0) b2 p2 | b3 dies
    env = Env()
    dying = DiesBeforeWrite(env.cluster, 8)
    for i in range(4):
        env.bucket.put_backup(f"b{i}", pvbs=[stored_pvb(f"p{i}", f"b{i}")])

    with pytest.raises(Killed):
        env.sync()

    assert pending(env.cluster) == ["b2"]
    dying.dies_at = 0
    report = env.sync()
    assert (report.resumed, report.created) == (1, 1)
    assert pending(env.cluster) == []


def test_no_stamp_before_every_earlier_pending_backup_is_complete(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stamp of this run covers every earlier run's marks: written after the first batch
    of many pending Backups, it would declare the rest complete before they are, and a kill
    then would lose them. The pending Backups are one batch, stamped only once all are in."""
    monkeypatch.setattr("worker.stamps.STAMP_BATCH", 2)
    env = Env()
    dying = DiesBeforeWrite(env.cluster, 0)
    for i in range(5):
        env.bucket.put_backup(f"b{i}", pvbs=[stored_pvb(f"p{i}", f"b{i}")])
        crashed = cluster_backup(f"b{i}", "default")
        crashed["metadata"]["annotations"] = {RUN: "2026-03-01T11:00:00.000000Z-000000/000000"}
        env.cluster.add(BACKUP, crashed)
    # writes of the resume: p0, p1, p2, p3 | p4 dies
    dying.dies_at = 5

    with pytest.raises(Killed):
        env.sync()

    assert env.stamp() is None
    assert pending(env.cluster) == ["b0", "b1", "b2", "b3", "b4"]
    dying.dies_at = 0
    assert env.sync().resumed == 5
    assert pending(env.cluster) == []


def backup_of_a_run(run: str) -> Env:
    """Backup b1 (one pod volume backup) in the bucket and, created by ``run``, in the
    cluster; the location's Backups are complete through a run at 10:00."""
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    created = cluster_backup("b1", "default")
    created["metadata"]["annotations"] = {RUN: run}
    env.cluster.add(BACKUP, created)
    bsl = env.cluster.of(BACKUP_STORAGE_LOCATION, NS)["default"]
    bsl["metadata"]["annotations"] = {COMPLETE_THROUGH: "2026-03-01T10:00:00.000000Z-000000"}
    return env


def test_a_backup_of_an_unfinished_run_is_completed_by_the_next_run() -> None:
    """The run annotation is later than the location's stamp: the run that created it never
    stamped the location (killed, interrupted, failed before its status patch)."""
    env = backup_of_a_run(run="2026-03-01T11:00:00.000000Z-000000")

    report = env.sync()

    assert report.resumed == 1 and report.errors == []
    assert set(env.cluster.of(POD_VOLUME_BACKUP, NS)) == {"p1"}
    assert ("patch", "backups", "b1") not in env.cluster.writes  # nothing to take off
    assert env.stamp() > "2026-03-01T11:00:00.000000Z-000000"


def test_a_backup_of_a_finished_run_is_left_alone() -> None:
    env = backup_of_a_run(run="2026-03-01T09:00:00.000000Z-000000")

    report = env.sync()

    assert report.resumed == 0
    assert env.store.gets == []


def test_an_unfinished_runs_backup_gone_from_the_store_is_marked_pending_before_the_stamp() -> None:
    """Its folder is gone, so it cannot be completed now; without the mark, this run's
    stamp would declare it complete."""
    env = Env()
    crashed = cluster_backup("gone", "default", phase="InProgress")
    crashed["metadata"]["annotations"] = {RUN: "2026-03-01T11:00:00.000000Z-000000"}
    env.cluster.add(BACKUP, crashed)

    report = env.sync()

    assert report.errors == [] and report.resumed == 0
    assert annotations(env, "gone")[MARK] == "true"
    assert pending(env.cluster) == ["gone"]  # whatever a later stamp says


def test_completion_creates_csi_objects_too() -> None:
    env = Env()
    env.bucket.put_backup(
        "b1",
        pvbs=[],
        vsclasses=[stored_vsclass("class-1")],
        vscontents=[stored_vscontent("content-1", "b1")],
    )
    marked = cluster_backup("b1", "default")
    marked["metadata"]["annotations"] = {MARK: "true"}
    env.cluster.add(BACKUP, marked)

    report = env.sync(csi=True)

    assert report.resumed == 1
    assert (report.csi_snapshot_classes, report.csi_snapshot_contents) == (1, 1)
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CLASS)) == {"class-1"}
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == {"content-1"}
    assert MARK not in annotations(env, "b1")


# -- a crash at every write ------------------------------------------------------------------------


class Killed(BaseException):
    """SIGKILL, as far as the code under test can tell: nothing after it runs."""


class DiesBeforeWrite:
    """The process dies right before write number ``dies_at`` to ``cluster`` (0: it lives
    on); ``attempts`` counts the writes it tried."""

    def __init__(self, cluster: FakeCluster, dies_at: int) -> None:
        self.dies_at = dies_at
        self.attempts = 0
        for verb in ("create", "delete", "patch"):
            cluster.before(verb, None, self._write)

    def _write(self, *_call: Any) -> None:
        self.attempts += 1
        if self.attempts == self.dies_at:
            raise Killed


def crash_world() -> Env:
    env = Env()
    for i in range(3):
        name = f"b{i}"
        env.bucket.put_backup(
            name,
            pvbs=[stored_pvb(f"{name}-p1", name), stored_pvb(f"{name}-p2", name)],
            vsclasses=[stored_vsclass(f"class-{i}")],
            vscontents=[stored_vscontent(f"{name}-content", name)],
        )
    env.bucket.put_backup("bare")
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    return env


def pending(cluster: FakeCluster) -> list[str]:
    """Backups a later run would still complete: marked, or of a run after the stamp."""
    bsl = cluster.of(BACKUP_STORAGE_LOCATION, NS)["default"]
    stamp = (bsl["metadata"].get("annotations") or {}).get(COMPLETE_THROUGH, "")
    return sorted(
        name
        for name, backup in cluster.of(BACKUP, NS).items()
        if MARK in (backup["metadata"].get("annotations") or {})
        or (backup["metadata"].get("annotations") or {}).get(RUN, "") > stamp
    )


def state(cluster: FakeCluster) -> Obj:
    """The objects, with UIDs replaced by the name of the Backup they belong to, and run
    ids (which differ from run to run) by a placeholder; ``pending`` checks them."""
    uid_names = {obj["metadata"]["uid"]: name for name, obj in cluster.of(BACKUP, NS).items()}
    out: Obj = {}
    for (plural, ns, name), obj in sorted(cluster.objects.items()):
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        meta.pop("uid")
        for key in (RUN, COMPLETE_THROUGH):
            if key in (meta.get("annotations") or {}):
                meta["annotations"][key] = "<run id>"
        for ref in meta.get("ownerReferences", []):
            ref["uid"] = uid_names.get(ref["uid"], "unknown uid " + ref["uid"])
        labels = meta.get("labels") or {}
        if "velero.io/backup-uid" in labels:
            labels["velero.io/backup-uid"] = uid_names.get(labels["velero.io/backup-uid"])
        if plural == "backupstoragelocations":
            obj.pop("status", None)
        out[f"{plural}/{ns}/{name}"] = obj
    return out


def test_a_crash_before_any_write_then_a_clean_run_gives_the_undisturbed_result() -> None:
    undisturbed = crash_world()
    counted = DiesBeforeWrite(undisturbed.cluster, 0)
    undisturbed.sync(csi=True)
    writes = counted.attempts
    assert writes >= 15  # 4 Backups, 6 PVBs, 3 classes, 3 contents, 1 patch, 1 delete
    expected = state(undisturbed.cluster)
    assert pending(undisturbed.cluster) == []

    for dies_at in range(1, writes + 1):
        env = crash_world()
        dying = DiesBeforeWrite(env.cluster, dies_at)
        with pytest.raises(Killed):
            env.sync(csi=True)
        dying.dies_at = 0  # the next process lives
        report = env.sync(csi=True)
        assert report.errors == [], (dies_at, report.errors)
        assert state(env.cluster) == expected, f"crash before write {dies_at}"
        assert pending(env.cluster) == [], f"crash before write {dies_at}"


# -- termination requests -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_shutdown_grace_starts_at_the_first_request_and_a_second_ends_it() -> None:
    clock = Clock()
    shutdown = Shutdown(grace=10, clock=clock)
    assert not shutdown.requested and shutdown.remaining() == float("inf")

    assert shutdown.request("SIGTERM") is True
    clock.now += 4
    assert shutdown.requested and shutdown.remaining() == 6
    assert shutdown.reason == "interrupted by SIGTERM"

    assert shutdown.request("SIGINT") is False
    assert shutdown.remaining() == 0
    assert shutdown.reason == "interrupted by SIGTERM"


def test_bounded_map_starts_nothing_after_the_request_and_lets_running_items_finish() -> None:
    shutdown = Shutdown(grace=5)
    started: list[int] = []
    release = threading.Event()

    def fn(i: int) -> int:
        started.append(i)
        if i == 3:
            shutdown.request()
        release.wait(2)
        return i

    results = []
    threading.Timer(0.3, release.set).start()
    for r in bounded_map(fn, range(1000), workers=4, shutdown=shutdown):
        results.append(r)

    assert len(started) < 20
    assert sorted(results) == sorted(started)  # every started item finished and was reported


def test_bounded_map_abandons_work_still_running_when_the_grace_period_ends() -> None:
    shutdown = Shutdown(grace=0.3)
    stuck = threading.Event()

    def fn(i: int) -> int:
        if i == 0:
            shutdown.request()
            return i
        stuck.wait(10)  # a black-holed connection
        return i

    started = time.monotonic()
    results = list(bounded_map(fn, range(100), workers=4, shutdown=shutdown))
    took = time.monotonic() - started
    stuck.set()

    assert 0 in results
    assert took < 2, f"waited {took:.1f}s for work that could not finish"


def test_interrupted_location_deletes_no_orphans_and_is_not_marked_synced() -> None:
    env = Env()
    shutdown = Shutdown(grace=5)
    for i in range(20):
        env.bucket.put_backup(f"b{i:02}", pvbs=[stored_pvb(f"p{i:02}", f"b{i:02}")])
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    get = env.store.get

    def get_and_sigterm(key: str, max_bytes: int) -> bytes | None:
        if key.endswith("b05/velero-backup.json"):
            shutdown.request()
        return get(key, max_bytes)

    env.store.get = get_and_sigterm  # type: ignore[method-assign]

    with pytest.raises(Interrupted, match=r"interrupted by SIGTERM after \d+ of 20 backups"):
        env.sync(shutdown=shutdown, concurrency=1)

    assert "orphan" in env.backups()
    assert ("patch", "backupstoragelocations", "default") not in env.cluster.writes
    assert set(env.backups()) == {"orphan", "b00", "b01", "b02", "b03", "b04"}
    # Each created Backup got its dependents: nothing was left half done.
    assert all(MARK not in annotations(env, n) for n in env.backups())


def test_run_reports_the_interrupted_location_and_the_ones_not_started() -> None:
    world = World(bsl("a", default=True), bsl("b"))
    for i in range(5):
        world.bucket("a").put_backup(f"b{i}")
    shutdown = Shutdown(grace=5)
    store = world.stores["a"][0]
    original_list = store.list_common_prefixes

    def list_and_sigterm(prefix: str, delimiter: str = "/") -> Any:
        shutdown.request("SIGTERM")
        return original_list(prefix, delimiter)

    store.list_common_prefixes = list_and_sigterm  # type: ignore[method-assign]

    report = world.run(shutdown=shutdown)

    assert report.exit_code == EXIT_LOCATION_FAILED
    a, b = report.locations
    assert (a.outcome, b.outcome) == (Outcome.FAILED, Outcome.FAILED)
    assert a.reason.startswith("interrupted by SIGTERM after 0 of 5 backups")
    assert b.reason == "interrupted by SIGTERM before this location started"
    assert world.opened == ["a"]
    assert world.cluster.of(BACKUP, NS) == {}
    assert not any(w[0] == "patch" for w in world.cluster.writes)


def test_shutdown_grace_flag() -> None:
    args = build_parser().parse_args(["--shutdown-grace", "7.5"])
    assert settings_from(args, {}).shutdown_grace == 7.5
    assert settings_from(build_parser().parse_args([]), {}).shutdown_grace == 20
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--shutdown-grace", "-1"])


# -- racing runs ----------------------------------------------------------------------------------


def test_two_runs_racing_on_the_same_backups_converge_without_errors() -> None:
    env = Env()
    for i in range(30):
        env.bucket.put_backup(f"b{i:02}", pvbs=[stored_pvb(f"p{i:02}", f"b{i:02}")])
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    reports = []

    def one_run() -> None:
        reports.append(env.sync(concurrency=4))

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [r.errors for r in reports] == [[], []]
    assert sum(r.created for r in reports) == 30  # each Backup by exactly one of them
    # The loser of a create race skips; a Backup already listed is not even tried.
    assert set().union(*(r.skipped for r in reports)) <= {SKIP_ALREADY_EXISTS}
    assert "orphan" not in env.backups()
    uids = {n: b["metadata"]["uid"] for n, b in env.backups().items()}
    assert pvb_owner_uids(env) == {f"p{i:02}": uids[f"b{i:02}"] for i in range(30)}
    assert all(MARK not in annotations(env, n) for n in uids)


# -- a run stuck past the grace period -------------------------------------------------------------


def test_a_run_stuck_in_a_call_is_abandoned_and_the_summary_still_printed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stuck = threading.Event()

    def run_stuck_in_a_listing(settings: Any, *, report: RunReport, **_: Any) -> RunReport:
        report.locations.append(LocationReport(name="default", listed=0))
        stuck.wait(30)  # a black-holed store listing in the run's thread
        return report

    monkeypatch.setattr(cli, "sync_run", run_stuck_in_a_listing)
    monkeypatch.setattr(cli, "WRAP_UP_SECONDS", 0.2)
    shutdown = Shutdown(grace=0.3)
    report = RunReport(namespace=NS)
    threading.Timer(0.2, shutdown.request).start()

    started = time.monotonic()
    finished = cli._run_until_done_or_grace_over(settings(), None, shutdown, report)
    took = time.monotonic() - started
    stuck.set()

    assert finished is False
    assert took < 2
    report.abandon(shutdown.reason)
    assert report.exit_code == EXIT_LOCATION_FAILED
    assert report.error == "interrupted by SIGTERM: the run did not end within the grace period"
    assert report.locations[0].outcome is Outcome.FAILED
    assert "abandoned in flight" in report.locations[0].reason
    assert json.loads(report.render("json"))["locations"][0]["outcome"] == "failed"


def test_abandon_keeps_what_already_ended() -> None:
    done = LocationReport(name="done", status_patched=True)
    not_due = LocationReport(name="later", outcome=Outcome.NOT_DUE)
    report = RunReport(namespace=NS, locations=[done, not_due])
    report.abandon("interrupted by SIGINT")
    assert (done.outcome, not_due.outcome) == (Outcome.SYNCED, Outcome.NOT_DUE)
    assert report.exit_code == EXIT_LOCATION_FAILED


# -- faults between the writes ---------------------------------------------------------------------


def test_a_backup_whose_create_answer_was_lost_still_gets_its_dependents_now() -> None:
    env = Env()

    def answer_lost(kind: Kind, obj: Obj) -> None:
        """The server creates each Backup, the answer is lost, the retry gets AlreadyExists."""
        env.cluster.add(kind, obj)
        raise AlreadyExists(f"Backup {obj['metadata']['name']} already exists", 409)

    env.cluster.before("create", BACKUP, answer_lost)
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1"), stored_pvb("p2", "b1")])
    env.bucket.put_backup("plain")  # no dependents: nothing to look up

    report = env.sync()

    uid = env.backups()["b1"]["metadata"]["uid"]
    assert report.errors == []
    assert (report.resumed, report.pod_volume_backups) == (1, 2)
    assert report.skipped == {SKIP_ALREADY_EXISTS: 1}  # "plain": truly nothing to do
    assert pvb_owner_uids(env) == {"p1": uid, "p2": uid}
    assert MARK not in annotations(env, "b1")
    assert env.cluster.calls.count(("get", "backups")) == 1


def test_an_unmarked_backup_that_already_exists_is_left_to_its_creator() -> None:
    env = Env()

    def velero_first(kind: Kind, obj: Obj) -> None:
        """Velero's own sync creates each Backup (unmarked) just before this worker does."""
        theirs = copy.deepcopy(obj)
        theirs["metadata"].pop("annotations", None)
        env.cluster.add(kind, theirs)

    env.cluster.before("create", BACKUP, velero_first)
    env.bucket.put_backup("raced", pvbs=[stored_pvb("p1", "raced")])

    report = env.sync()

    assert report.skipped == {SKIP_ALREADY_EXISTS: 1}
    assert report.resumed == 0
    assert env.cluster.of(POD_VOLUME_BACKUP, NS) == {}


def test_a_failed_status_patch_deletes_no_orphan() -> None:
    env = Env()
    env.bucket.put_backup("b1")
    env.cluster.add(BACKUP, cluster_backup("orphan", "default"))
    env.cluster.fail_on[("patch", "backupstoragelocations")] = ClusterError("patch: 503", 503)

    with pytest.raises(ClusterError):
        env.sync()

    assert "orphan" in env.backups()
    assert env.deletes() == []


def test_a_bug_escaping_the_run_thread_is_raised_not_reported_as_success(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken_run(settings: Any, **_: Any) -> RunReport:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "sync_run", broken_run)
    with pytest.raises(KeyError, match="a bug"):
        cli._run_until_done_or_grace_over(settings(), None, Shutdown(), RunReport(namespace=NS))


def test_a_stamp_never_moves_back() -> None:
    """Two runs at once: the one that started first finishes last. Its stamp must not
    replace the later run's, or that run's Backups would look pending again."""
    env = Env()
    env.bucket.put_backup("b1", pvbs=[stored_pvb("p1", "b1")])
    later = "2099-01-01T00:00:00.000000Z-000000/~"
    bsl = env.cluster.of(BACKUP_STORAGE_LOCATION, NS)["default"]
    bsl["metadata"]["annotations"] = {COMPLETE_THROUGH: later}
    stale = copy.deepcopy(bsl)
    stale["metadata"]["annotations"] = {}  # what the run listed at its start

    report = LocationReport(name="default")
    sync_location(
        stale, env.backup_store(), env.cluster, SyncOptions(NS, False, 1, lambda: NOW), report
    )

    assert report.created == 1
    assert env.stamp() == later
