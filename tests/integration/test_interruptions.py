"""Interrupted and overlapping runs: the real CLI killed, terminated or racing another run,
against the real API server and moto.

The contract under test: a Backup the worker creates with pod volume backups carries the run
(and batch) that created it in ``backup-sync.io/run``, and its location is stamped complete
through each finished batch (``backup-sync.io/dependents-complete-through``); a later run
completes every pending Backup (a run after the stamp, or ``backup-sync.io/dependents-
pending`` after a failure) whose folder is still in the store (``resumed``) before it
creates new ones, so pending Backups never pile up; SIGTERM stops the run within
``--shutdown-grace`` with exit 1, the location
"failed" / "interrupted…", no orphan deleted and ``lastSyncedTime`` not patched, and a run
stuck in a call is abandoned 2 s after the grace period with its summary printed; two runs
at once both exit 0. Whatever the interruption, the next clean run leaves the namespace
exactly as an undisturbed run leaves another one.

A failing SIGKILL test prints its seed; ``BACKUP_SYNC_KILL_SEED=<seed>`` replays it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import IO, Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import SeedBackup, backup_objects
from tests.integration import clusterstate
from tests.integration.clusterstate import MARK, ClusterState, last_synced
from tests.integration.env import CliResult, SyncEnv

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
FAST = ("--kube-qps", "0")  # unlimited: the API server sets the pace
MERGE_PATCH = "application/merge-patch+json"
OLD_STAMP = "2020-01-01T00:00:00Z"


# -- helpers -------------------------------------------------------------------------------------


class Worker:
    """One ``backup-sync`` process, its output in temporary files."""

    def __init__(self, env: SyncEnv, *args: str) -> None:
        argv, proc_env = env.command(*args)
        # Closed by close(): the process outlives this call.
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.spawned = time.time()  # wall clock, to line up with the log's timestamps
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, env=proc_env)

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> float:
        """Send ``sig``; the monotonic time it was sent."""
        self.proc.send_signal(sig)
        return time.monotonic()

    def _read(self, stream: IO[bytes]) -> str:
        stream.seek(0)
        return stream.read().decode(errors="replace")

    def stderr(self) -> str:
        return self._read(self._err)

    def finish(self, timeout: float) -> CliResult:
        """Wait for the exit (killing it after ``timeout`` s); the result with its summary
        (``{}`` when stdout is not one JSON document)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = self.stderr()[-3000:]
            self.close()
            raise AssertionError(
                f"backup-sync did not exit within {timeout}s; stderr tail:\n{tail}"
            ) from None
        seconds = time.monotonic() - self.started
        stdout, stderr = self._read(self._out), self.stderr()
        self.close()
        try:
            summary = json.loads(stdout)
        except ValueError:
            summary = {}
        return CliResult(self.proc.returncode, summary, stdout, stderr, 0.0, seconds)

    def close(self) -> None:
        if self.running():
            self.proc.kill()
        self.proc.wait()
        self._out.close()
        self._err.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start workers with ``workers(env, *args)``; any still running at the end is killed."""
    started: list[Worker] = []

    def start(env: SyncEnv, *args: str) -> Worker:
        worker = Worker(env, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def s3_env(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> SyncEnv:
    return SyncEnv(control_plane, velero_namespace, moto)


class ReferenceNamespace:
    """A second Velero namespace, for an undisturbed run to compare with. ``release()``
    starts deleting it in the background once the test has what it needs from it (thousands
    of objects take the API server a while); teardown waits for that."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.name = f"velero-ref-{uuid.uuid4().hex[:8]}"
        self._deleting: threading.Thread | None = None
        self._error: BaseException | None = None
        cp.create_namespace(self.name)

    def _delete(self) -> None:
        try:
            self.cp.delete_namespace(self.name)
        except BaseException as exc:  # surfaced by delete()
            self._error = exc

    def release(self) -> None:
        if self._deleting is None:
            self._deleting = threading.Thread(target=self._delete, name="delete-reference")
            self._deleting.start()

    def delete(self) -> None:
        self.release()
        assert self._deleting is not None
        self._deleting.join()
        if self._error is not None:
            raise self._error


@pytest.fixture
def reference_namespace(control_plane: ControlPlane) -> Iterator[ReferenceNamespace]:
    namespace = ReferenceNamespace(control_plane)
    yield namespace
    namespace.delete()


def seed_many(env: SyncEnv, count: int, pod_volume_backups: int = 2) -> list[str]:
    """``count`` Completed backups, each with a velero-backup.json and a pod volume backup
    file, written on a thread pool (the boto3 client is thread-safe; its pool holds 10)."""
    now = datetime.now(UTC)
    put = env.server.putter(env.bucket)
    names = [f"backup-{i:05d}" for i in range(count)]

    def one(name: str) -> None:
        backup = SeedBackup(name, pod_volume_backups=pod_volume_backups)
        for key, data in backup_objects(backup, "", now, extras=False).items():
            put(key, data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, names))
    return names


@dataclass(frozen=True, slots=True)
class Reference:
    state: ClusterState
    result: CliResult
    log_times: dict[str, float]  # seconds from the process's start to each log message


def reference_run(env: SyncEnv, namespace: ReferenceNamespace) -> Reference:
    """An undisturbed sync of ``env``'s bucket into another namespace: a separate Velero
    install with its own location of the same name on the same bucket."""
    ref = SyncEnv(env.cp, namespace.name, env.server)
    ref.bucket = env.bucket  # (its own, empty bucket stays unused)
    ref.add_location("default", default=True)
    worker = Worker(ref, *FAST)
    result = worker.finish(timeout=300)
    assert result.code == 0, result.stderr[-3000:]
    state = clusterstate.read(ref)
    clusterstate.assert_sound(state, "the reference run")
    return Reference(state, result, log_times(result.stderr, worker.spawned))


def backup_count(env: SyncEnv) -> int:
    """Backups in the namespace, from a one-item page (cheap enough to poll)."""
    page = env.ok("GET", env.path("backups") + "?limit=1")
    return len(page.get("items", [])) + int(page["metadata"].get("remainingItemCount") or 0)


def set_last_synced(env: SyncEnv, location: str, stamp: str) -> None:
    env.ok(
        "PATCH",
        env.path("backupstoragelocations", location),
        {"status": {"lastSyncedTime": stamp}},
        content_type=MERGE_PATCH,
    )


def log_times(stderr: str, since: float) -> dict[str, float]:
    """Seconds from ``since`` (wall clock) to the first log line of each message."""
    seen: dict[str, float] = {}
    for line in stderr.splitlines():
        try:
            doc = json.loads(line)
            stamp = datetime.fromisoformat(str(doc["time"])).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        seen.setdefault(str(doc.get("msg")), stamp - since)
    return seen


# The worker's progress as its log tells it; used to aim kills and to report where they hit.
LOCATIONS_FOUND = "backup storage locations found"
LISTED = "backups to sync into the cluster"


def phase_from_log(stderr: str) -> str:
    seen = log_times(stderr, 0.0)
    if LOCATIONS_FOUND not in seen:
        return "start-up"
    if LISTED not in seen:
        return "listing"
    return "creates"


def interrupted(loc: Obj) -> bool:
    return loc["outcome"] == "failed" and str(loc["reason"]).startswith("interrupted")


# -- a. SIGKILL at random points -----------------------------------------------------------------

KILL_N = 2000
KILLS = 22
# How the kills are spread over a run's phases (start-up, listing, creates); the windows are
# measured on the reference run, so the spread holds on a slow or a fast machine.
KILL_PLAN = ("start-up",) * 6 + ("listing",) * 6 + ("creates",) * 10
CREATES_WINDOW = 2.5  # seconds of creating a kill may land in
# The worker's default, spelled out: with the stamp batch it bounds what a kill leaves
# pending. Pending Backups go to the pool before new ones (first in, first started) and are
# one batch, stamped once all are complete; the run's own Backups follow in batches. So a
# run killed after its pending batch leaves at most a batch plus the work in flight
# (2 x concurrency), and one killed before it leaves what was pending plus the work in
# flight: pending after a kill <= max(pending before, a batch) + 2 x concurrency.
KILL_CONCURRENCY = 16
STAMP_BATCH = 100  # worker.stamps.STAMP_BATCH


@dataclass(frozen=True, slots=True)
class Kill:
    aimed_at: str
    delay: float
    phase: str  # where the run's log says it died
    created: int  # Backups this run got into the cluster before it died
    new_marks: int  # Backups it left with the mark
    marked: int  # Backups carrying the mark after the kill, in all


@pytest.mark.slow
def test_sigkill_at_random_points_then_one_clean_run_converges(
    s3_env: SyncEnv, reference_namespace: ReferenceNamespace, workers: Callable[..., Worker]
) -> None:
    env = s3_env
    began = time.monotonic()
    env.add_location("default", default=True)
    names = seed_many(env, KILL_N)
    seeded = time.monotonic() - began
    ref = reference_run(env, reference_namespace)
    expected = ref.state
    assert sorted(expected.backups) == names and len(expected.pod_volume_backups) == 2 * KILL_N
    reference_namespace.release()

    found = ref.log_times.get(LOCATIONS_FOUND, 0.6)
    listed = max(ref.log_times.get(LISTED, found + 0.2), found + 0.1)
    windows = {
        "start-up": (0.05, found),
        "listing": (found, listed + 0.3),  # the cluster's Backups grow run after run
        "creates": (listed, listed + CREATES_WINDOW),
    }
    seed = int(os.environ.get("BACKUP_SYNC_KILL_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    plan = list(KILL_PLAN)
    rng.shuffle(plan)
    print(
        f"\nSIGKILL seed {seed} (replay: BACKUP_SYNC_KILL_SEED={seed}); seeded {KILL_N} backups "
        f"in {seeded:.1f}s; reference run {ref.result.seconds:.1f}s; windows "
        + ", ".join(f"{k} {lo:.2f}-{hi:.2f}s" for k, (lo, hi) in windows.items())
    )

    kills: list[Kill] = []
    finished_alone = 0
    in_cluster = 0
    marked: set[str] = set()
    for aimed_at in plan:
        delay = round(rng.uniform(*windows[aimed_at]), 3)
        worker = workers(env, "--force", *FAST, "--concurrency", str(KILL_CONCURRENCY))
        time.sleep(max(0.0, worker.started + delay - time.monotonic()))
        if not worker.running():  # the run ended before its kill: not a kill
            finished_alone += 1
            worker.close()
            continue
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        phase = phase_from_log(worker.stderr())
        worker.close()
        state = ClusterState(
            env.namespace, env.list("backups"), {}, env.list("backupstoragelocations")
        )
        now_marked = set(state.marked())
        kill = Kill(
            aimed_at,
            delay,
            phase,
            len(state.backups) - in_cluster,
            len(now_marked - marked),
            len(now_marked),
        )
        in_cluster, marked = len(state.backups), now_marked
        kills.append(kill)
        print(
            f"kill {len(kills):2}: aimed at {aimed_at:8} delay {delay:5.3f}s, died in "
            f"{phase:8}: +{kill.created} Backups ({in_cluster}), +{kill.new_marks} marked "
            f"({kill.marked})"
        )

    clean = env.run("--force", *FAST, timeout=300)
    with_marks = sum(1 for k in kills if k.new_marks)
    print(
        f"{len(kills)} kills ({finished_alone} runs ended before their kill), {with_marks} left "
        f"new marked Backups, at most {max((k.marked for k in kills), default=0)} marked at "
        f"once, {len(marked)} before the clean run; clean run "
        f"{clean.seconds:.1f}s: "
        f"{json.dumps(clean.location('default') if clean.summary else clean.stdout[-500:])}; "
        f"test {time.monotonic() - began:.0f}s"
    )

    assert clean.code == 0, clean.stderr[-3000:]
    clusterstate.assert_converged(clusterstate.read(env), expected)
    loc = clean.location("default")
    assert loc["errors"] == []
    assert loc["resumed"] == len(marked)
    assert loc["created"] == KILL_N - in_cluster
    # Marked Backups are completed first: run after killed run, the marks do not pile up.
    before = [0] + [k.marked for k in kills[:-1]]
    piled = [
        (was, k.marked)
        for was, k in zip(before, kills, strict=True)
        if k.marked > max(was, STAMP_BATCH) + 2 * KILL_CONCURRENCY
    ]
    assert not piled, f"pending Backups piled up past a batch and the work in flight: {piled}"
    # The kills really hit where they were meant to.
    assert len(kills) >= 20
    assert with_marks >= 1, "no kill left a Backup without its dependents: nothing was tested"
    assert any(k.created == 0 for k in kills), "no kill landed before the creates"
    assert any(k.created > 0 for k in kills), "no kill landed during the creates"


# -- b. killed between the create and the dependents, deterministically --------------------------


def mark(env: SyncEnv, backup: str) -> None:
    """Put the in-progress mark on a Backup, as the worker does when it creates one."""
    env.ok(
        "PATCH",
        env.path("backups", backup),
        {"metadata": {"annotations": {MARK: "true"}}},
        content_type=MERGE_PATCH,
    )


def test_marked_backup_gets_its_dependents_with_its_real_uid(s3_env: SyncEnv) -> None:
    env = s3_env
    env.add_location("default", default=True)
    env.seed(
        SeedBackup("nightly-1", pod_volume_backups=2),
        SeedBackup("nightly-2", pod_volume_backups=2),
        SeedBackup("nightly-3"),
    )
    first = env.run()
    assert first.code == 0, first.stderr
    assert first.location("default")["resumed"] == 0
    synced = clusterstate.read(env)
    assert sorted(synced.pod_volume_backups) == [
        "nightly-1-pvb-0",
        "nightly-1-pvb-1",
        "nightly-2-pvb-0",
        "nightly-2-pvb-1",
    ]

    # nightly-2 as the worker leaves it when it dies right after creating the Backup: the
    # rewritten Backup with the mark, none of its pod volume backups.
    for pvb in ("nightly-2-pvb-0", "nightly-2-pvb-1"):
        env.ok("DELETE", env.path("podvolumebackups", pvb))
    mark(env, "nightly-2")
    # A marked Backup whose folder left the store (and not an orphan: Failed) is not resumed.
    gone = env.add_backup("gone-1", "default", "Failed")
    mark(env, "gone-1")
    uid = synced.backups["nightly-2"]["metadata"]["uid"]

    second = env.run("--force")

    assert second.code == 0, second.stderr
    loc = second.location("default")
    assert (loc["resumed"], loc["created"], loc["podVolumeBackupsCreated"]) == (1, 0, 2)
    assert loc["errors"] == []
    state = clusterstate.read(env)
    assert state.backups["nightly-2"]["metadata"]["uid"] == uid  # completed, not recreated
    for pvb in ("nightly-2-pvb-0", "nightly-2-pvb-1"):
        meta = state.pod_volume_backups[pvb]["metadata"]
        assert [r["uid"] for r in meta["ownerReferences"]] == [uid]
        assert meta["labels"]["velero.io/backup-uid"] == uid
    assert state.uid_problems() == []
    assert "nightly-2" not in state.marked()
    assert state.backups["gone-1"]["metadata"]["uid"] == gone["metadata"]["uid"]
    without_gone = replace(state, backups={n: b for n, b in state.backups.items() if n != "gone-1"})
    assert clusterstate.differences(without_gone, synced) == []

    third = env.run("--force")

    assert third.code == 0, third.stderr
    loc = third.location("default")
    assert (loc["resumed"], loc["created"], loc["podVolumeBackupsCreated"]) == (0, 0, 0)
    after = clusterstate.read(env)
    assert after.pod_volume_backups == state.pod_volume_backups  # resourceVersions too
    assert {n: b for n, b in after.backups.items() if n != "gone-1"} == without_gone.backups


# -- c. SIGTERM in the middle of a sync ----------------------------------------------------------

TERM_N = 800
GRACE = 10
CONCURRENCY = 16


def test_sigterm_mid_sync_stops_without_deleting_or_stamping_then_a_clean_run_converges(
    s3_env: SyncEnv, workers: Callable[..., Worker]
) -> None:
    env = s3_env
    env.add_location("default", default=True)
    env.add_location("later", prefix="later")  # after the default: never started
    names = seed_many(env, TERM_N)
    env.add_backup("orphan-1", "default", "Completed")
    for location in ("default", "later"):
        set_last_synced(env, location, OLD_STAMP)

    # Default API limits keep the sync slow enough to be caught in the middle.
    worker = workers(
        env, "--force", "--shutdown-grace", str(GRACE), "--concurrency", str(CONCURRENCY)
    )
    deadline = time.monotonic() + 120
    while (at_signal := backup_count(env) - 1) < 40:
        assert worker.running(), worker.stderr()[-3000:]
        assert time.monotonic() < deadline, "the worker created no Backups"
        time.sleep(0.1)
    signalled = worker.signal(signal.SIGTERM)
    result = worker.finish(timeout=GRACE + 30)
    took = time.monotonic() - signalled
    in_cluster = backup_count(env) - 1
    print(
        f"\nSIGTERM after {signalled - worker.started:.1f}s with {at_signal} Backups in; exit "
        f"{result.code} {took:.1f}s later with {in_cluster}"
    )

    assert result.code == 1, result.stderr[-3000:]
    assert took <= GRACE + 10
    assert result.summary, f"no JSON summary on stdout: {result.stdout[-2000:]!r}"
    assert result.summary["exitCode"] == 1
    default, later = result.location("default"), result.location("later")
    assert interrupted(default), default
    assert interrupted(later), later
    assert default["orphansDeleted"] == 0 and not default["statusPatched"]
    # No new backup started after the signal: at most those in flight (and queued) then.
    assert in_cluster <= at_signal + 2 * CONCURRENCY
    assert "orphan-1" in env.list("backups")
    assert last_synced(env, "default") == OLD_STAMP
    assert last_synced(env, "later") == OLD_STAMP

    clean = env.run("--force", *FAST, timeout=300)

    assert clean.code == 0, clean.stderr[-3000:]
    assert clean.location("default")["orphansDeleted"] == 1
    state = clusterstate.read(env)
    assert sorted(state.backups) == names
    assert len(state.pod_volume_backups) == 2 * TERM_N
    clusterstate.assert_sound(state)
    assert last_synced(env, "default") != OLD_STAMP
    print(f"clean run {clean.seconds:.1f}s after {in_cluster} Backups of {TERM_N}")


# -- d. SIGTERM (SIGINT) while the store hangs ---------------------------------------------------


class BlackHole:
    """A TCP server on loopback that accepts connections and never answers."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, _ = self._sock.accept()
                self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self._sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


HUNG_GRACE = 2.0
# After the grace period the run gets this long to wrap up before it is abandoned and the
# summary printed without it (README: "abandoned 2 s after the grace period"); a watchdog
# ends the process 5 s after the grace period, summary or not.
WRAP_UP = 2.0
EXIT_MARGIN = 2.5  # signal delivery, printing and exit on a loaded machine; < the watchdog


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_termination_abandons_work_that_cannot_finish_and_still_prints_the_summary(
    s3_env: SyncEnv, black_hole: BlackHole, workers: Callable[..., Worker], sig: signal.Signals
) -> None:
    env = s3_env
    env.add_location(
        "default", default=True, config={"s3Url": f"http://127.0.0.1:{black_hole.port}"}
    )
    # The listing's read would wait 60 s: the run is stuck in it when the signal comes.
    grace = f"{HUNG_GRACE:g}"
    worker = workers(env, "--force", "--request-timeout", "60", "--shutdown-grace", grace)
    deadline = time.monotonic() + 30
    while not black_hole.accepted or time.monotonic() < worker.started + 2:
        assert worker.running(), worker.stderr()[-3000:]
        assert time.monotonic() < deadline, "the worker never reached the store"
        time.sleep(0.05)
    signalled = worker.signal(sig)
    result = worker.finish(timeout=60)
    took = time.monotonic() - signalled
    print(
        f"\nexit {result.code} {took:.1f}s after {sig.name} (grace {grace}s): "
        f"{json.dumps(result.summary) if result.summary else result.stdout[-500:]!r}"
    )

    assert result.code == 1, result.stderr[-3000:]
    assert result.summary, f"no JSON summary on stdout: {result.stdout[-2000:]!r}"
    assert took <= HUNG_GRACE + WRAP_UP + EXIT_MARGIN, f"exit {took:.1f}s after {sig.name}"
    assert result.summary["exitCode"] == 1
    error = result.summary["error"]
    assert error.startswith(f"interrupted by {sig.name}") and "grace period" in error, error
    loc = result.location("default")
    assert interrupted(loc) and "abandoned" in loc["reason"], loc
    assert not loc["statusPatched"] and loc["orphansDeleted"] == 0
    assert last_synced(env, "default") is None


# -- e. two runs at once -------------------------------------------------------------------------

RACE_N = 400


def test_two_concurrent_runs_both_succeed_and_converge(
    s3_env: SyncEnv, reference_namespace: ReferenceNamespace, workers: Callable[..., Worker]
) -> None:
    env = s3_env
    env.add_location("default", default=True)
    seed_many(env, RACE_N)
    expected = reference_run(env, reference_namespace).state
    reference_namespace.release()

    first, second = (workers(env, "--force", *FAST) for _ in range(2))
    results = [first.finish(timeout=300), second.finish(timeout=300)]

    locs = [r.location("default") for r in results if r.summary]
    print(
        "\n"
        + "\n".join(
            f"run {i}: exit {r.code} in {r.seconds:.1f}s, "
            + json.dumps({k: loc[k] for k in ("created", "resumed", "skipped", "errors")})
            for i, (r, loc) in enumerate(zip(results, locs, strict=False))
        )
    )
    assert len(locs) == 2, [r.stdout[-2000:] for r in results if not r.summary]
    for loc in locs:
        assert loc["errors"] == [], f"{len(loc['errors'])} item errors: {loc['errors'][:3]}"
    assert [loc["outcome"] for loc in locs] == ["synced", "synced"]
    for result in results:
        assert result.code == 0, result.stderr[-3000:]
    assert sum(loc["created"] for loc in locs) == RACE_N  # each Backup created once
    assert sum(loc["podVolumeBackupsCreated"] for loc in locs) == 2 * RACE_N
    # A create that lost the race is skipped, or, when the winner has not yet taken its mark
    # off, completes the winner's Backup (resumed) alongside it.
    raced = sum(loc["skipped"].get("already exists", 0) + loc["resumed"] for loc in locs)
    assert raced > 0, "the runs never raced for a Backup: nothing was tested"
    clusterstate.assert_converged(clusterstate.read(env), expected)
