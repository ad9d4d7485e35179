"""The worker against Velero's own sync, on the same bucket: cluster C is synced by a real
``velero server`` with every controller but ``backup-sync`` disabled, cluster B by the
worker with the matching ``--velero-version``. Every Backup, PodVolumeBackup,
VolumeSnapshotClass, VolumeSnapshotContent and VolumeSnapshot must be identical after
normalising what the API server owns (uid, resourceVersion, creationTimestamp,
managedFields, generation) and the worker's own ``backup-sync.io/`` annotations, except the
deliberate differences in ``DELIBERATE`` (docs/conformance.md), each of which must show up.

The bucket holds the backups the real Velero wrote on cluster A (copied to this test's
prefix) and a seeded corpus of what real buckets hold: long names, Schedule-owned backups
with and without their Schedule, pod volume backups, CSI objects, every phase including
expired and unexpired waiting/finalizing ones, a folder without ``velero-backup.json``, a
corrupt one, one whose document names another backup. Both clusters start with the same
orphans (Backups labelled with the location and absent from the bucket) in every phase.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from harness.controlplane import CRD_DIR
from harness.minio import MinIO
from harness.seed import SeedBackup, backup_objects
from harness.velero import apply_crd_files
from tests.conformance.conftest import (
    BUCKET,
    SOURCE_PREFIX,
    SYNC_TIMEOUT,
    Source,
    start_cluster,
    velero_versions,
)
from tests.conformance.helpers import (
    Cluster,
    Obj,
    WorkerRun,
    copy_prefix,
    keys,
    run_worker,
    velero_version_args,
    wait_for,
)

pytestmark = [pytest.mark.integration]

PREFIX = "diff"
DEFAULT = "default"
SCHEDULED = "scheduled"  # a second location, one prefix per cluster (see seed_scheduled)
SCHEDULE = "nightly"
FEATURES = ("EnableCSI",)
SHOP = "shop"
LONG = "diff-" + "a-backup-name-that-is-longer-than-any-kubernetes-label-value-" + "x" * 8
SERVER_OWNED = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
WORKER_ANNOTATIONS = "backup-sync.io/"
SAME_CLUSTER_UID = "<uid of the {kind} {name} in this cluster>"
KINDS = (
    "backups",
    "podvolumebackups",
    "volumesnapshotclasses",
    "volumesnapshotcontents",
    "volumesnapshots",
)
ORPHAN_PHASES = (
    "",
    "New",
    "InProgress",
    "WaitingForPluginOperations",
    "Finalizing",
    "Completed",
    "PartiallyFailed",
    "Failed",
    "FailedValidation",
    "Deleting",
)
WAITING = (
    "WaitingForPluginOperations",
    "WaitingForPluginOperationsPartiallyFailed",
    "Finalizing",
    "FinalizingPartiallyFailed",
)

State = dict[str, dict[str, Obj]]


# -- the bucket ------------------------------------------------------------------------------


def _edit_backup(objects: dict[str, bytes], name: str, edit: Callable[[Obj], None]) -> None:
    key = next(k for k in objects if k.endswith(f"/{name}/velero-backup.json"))
    doc: Obj = json.loads(objects[key])
    edit(doc)
    objects[key] = json.dumps(doc, indent=2).encode()


def corpus(now: datetime) -> dict[str, bytes]:
    """The seeded part of the bucket under ``PREFIX``, keyed by object key."""
    seeds = [
        SeedBackup("diff-completed"),
        SeedBackup(LONG),
        SeedBackup("diff-partially-failed", phase="PartiallyFailed"),
        SeedBackup("diff-failed", phase="Failed"),
        SeedBackup("diff-new", phase="New"),
        SeedBackup("diff-in-progress", phase="InProgress"),
        SeedBackup("diff-failed-validation", phase="FailedValidation"),
        SeedBackup("diff-deleting", phase="Deleting"),
        SeedBackup("diff-no-phase", phase=""),
        SeedBackup("diff-no-expiration", expires_in=None),
        SeedBackup("diff-schedule-gone", schedule=("vanished", str(uuid.uuid4()))),
        SeedBackup("diff-schedule-other-uid", schedule=(SCHEDULE, str(uuid.uuid4()))),
        SeedBackup("diff-pod-volumes", pod_volume_backups=2),
        SeedBackup("diff-csi", csi_snapshots=2),
        SeedBackup("diff-already-here"),
        SeedBackup("diff-foreign-owner"),
        SeedBackup("diff-finalizers"),
        SeedBackup("diff-pod-volume-foreign-owner", pod_volume_backups=1),
        SeedBackup("diff-renamed"),
        SeedBackup("diff-hooks"),
    ]
    for phase in WAITING:
        slug = phase.lower()
        seeds.append(
            SeedBackup(f"diff-{slug}-expired", phase=phase, expires_in=-timedelta(hours=1))
        )
        seeds.append(SeedBackup(f"diff-{slug}-unexpired", phase=phase))
    objects: dict[str, bytes] = {}
    for seed in seeds:
        objects.update(backup_objects(seed, PREFIX, now))

    def foreign_owner(doc: Obj) -> None:
        doc["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": str(uuid.uuid4())}
        ]

    def finalizers(doc: Obj) -> None:
        doc["metadata"]["finalizers"] = ["example.com/keep"]

    def renamed(doc: Obj) -> None:
        doc["metadata"]["name"] = "diff-someone-else"

    def hooks(doc: Obj) -> None:
        pre = [{"exec": {"command": ["/sbin/fsfreeze", "--freeze", "/data"]}}]
        doc["spec"]["hooks"] = {
            "resources": [{"name": "freeze", "includedNamespaces": [SHOP], "pre": pre}]
        }

    _edit_backup(objects, "diff-foreign-owner", foreign_owner)
    _edit_backup(objects, "diff-finalizers", finalizers)
    _edit_backup(objects, "diff-renamed", renamed)
    _edit_backup(objects, "diff-hooks", hooks)
    # A pod volume backup with an owner besides its Backup.
    pvbs_key = next(
        k for k in objects if k.endswith("diff-pod-volume-foreign-owner-podvolumebackups.json.gz")
    )
    pvbs = json.loads(gzip.decompress(objects[pvbs_key]))
    pvbs[0]["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "Pod", "name": "db-0", "uid": str(uuid.uuid4())}
    )
    objects[pvbs_key] = gzip.compress((json.dumps(pvbs) + "\n").encode())
    # A folder without velero-backup.json, and one whose velero-backup.json is not JSON.
    objects[f"{PREFIX}/backups/diff-no-metadata/diff-no-metadata.tar.gz"] = gzip.compress(b"")
    objects[f"{PREFIX}/backups/diff-corrupt/velero-backup.json"] = b'{"kind": "Backup", "apiV'
    objects[f"{PREFIX}/backups/diff-corrupt/diff-corrupt.tar.gz"] = gzip.compress(b"")
    return objects


def seed_scheduled(minio: MinIO, cluster: Cluster, now: datetime) -> str:
    """A backup owned by Schedule ``SCHEDULE`` of *this* cluster (its UID is the cluster's,
    so each cluster gets its own prefix with the same backup under it); returns the prefix."""
    schedule = cluster.ok("GET", cluster.velero_path("schedules", SCHEDULE))
    prefix = f"{PREFIX}-scheduled-{cluster.name.lower()}"
    seed = SeedBackup(
        "diff-schedule-kept",
        schedule=(SCHEDULE, schedule["metadata"]["uid"]),
        pod_volume_backups=1,
        source_location=SCHEDULED,
    )
    for key, data in backup_objects(seed, prefix, now).items():
        minio.put(BUCKET, key, data)
    return prefix


@pytest.fixture(scope="module")
def bucket(source: Source, minio: MinIO) -> datetime:
    """A's real backups and the corpus under ``PREFIX``; returns the corpus's ``now``."""
    now = datetime.now(UTC).replace(microsecond=0)
    assert copy_prefix(minio, BUCKET, f"{SOURCE_PREFIX}/backups/", f"{PREFIX}/backups/") > 0
    for key, data in corpus(now).items():
        minio.put(BUCKET, key, data)
    return now


# -- the clusters ----------------------------------------------------------------------------


def _create_backup(cluster: Cluster, name: str, labels: dict[str, str], phase: str) -> None:
    body = {
        "apiVersion": "velero.io/v1",
        "kind": "Backup",
        "metadata": {"name": name, "labels": labels},
        "spec": {"storageLocation": labels.get("velero.io/storage-location", DEFAULT)},
        "status": {"phase": phase} if phase else {},
    }
    created = cluster.create(cluster.velero_path("backups"), body)
    if phase and (created.get("status") or {}).get("phase") != phase:  # a status subresource
        cluster.ok(
            "PATCH",
            cluster.velero_path("backups", name) + "/status",
            {"status": {"phase": phase}},
            content_type="application/merge-patch+json",
        )


def prepare(cluster: Cluster, minio: MinIO, now: datetime) -> dict[str, str]:
    """What B and C hold before their sync, identically: the snapshot CRDs, a Schedule,
    two locations (Available, as Velero's BSL controller makes them), orphans in every
    phase (one with a VolumeSnapshot and its content), and one backup already here."""
    apply_crd_files(cluster.cp, sorted(CRD_DIR.glob("snapshot.storage.k8s.io_*.yaml")))
    cluster.cp.create_namespace(SHOP)
    schedule = cluster.create(
        cluster.velero_path("schedules"),
        {
            "apiVersion": "velero.io/v1",
            "kind": "Schedule",
            "metadata": {"name": SCHEDULE},
            "spec": {"schedule": "0 3 * * *", "template": {"includedNamespaces": [SHOP]}},
        },
    )
    cluster.add_location(DEFAULT, minio, BUCKET, PREFIX, default=True)
    cluster.add_location(SCHEDULED, minio, BUCKET, seed_scheduled(minio, cluster, now))
    for location in (DEFAULT, SCHEDULED):
        cluster.mark_available(location)
    location_label = {"velero.io/storage-location": DEFAULT}
    for phase in ORPHAN_PHASES:
        _create_backup(cluster, f"orphan-{phase.lower() or 'no-phase'}", location_label, phase)
    _create_backup(cluster, "orphan-elsewhere", {"velero.io/storage-location": "gone"}, "Completed")
    _create_backup(cluster, "orphan-unlabelled", {}, "Completed")
    _create_backup(cluster, "diff-already-here", location_label, "Completed")
    # The Completed orphan's CSI snapshots: one in the Velero namespace, one in an
    # application namespace (as a restore of that backup would have labelled it).
    for ns, name in ((cluster.namespace, "orphan-completed-own"), (SHOP, "orphan-completed")):
        add_snapshot(cluster, ns, name, "orphan-completed")
    return {SCHEDULE: schedule["metadata"]["uid"]}


def add_snapshot(cluster: Cluster, ns: str, name: str, backup: str) -> None:
    """A VolumeSnapshot ``ns/<name>-snapshot`` and its content ``<name>-content``, both
    labelled with ``backup``'s name."""
    labels = {"velero.io/backup-name": backup}
    cluster.create(
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": f"{name}-content", "labels": labels},
            "spec": {
                "deletionPolicy": "Retain",
                "driver": "ebs.csi.aws.com",
                "source": {"snapshotHandle": f"snap-{name}"},
                "volumeSnapshotRef": {"namespace": ns, "name": f"{name}-snapshot"},
            },
        },
    )
    cluster.create(
        f"/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": f"{name}-snapshot", "labels": labels},
            "spec": {"source": {"volumeSnapshotContentName": f"{name}-content"}},
        },
    )


def bucket_documents(minio: MinIO) -> dict[str, Obj]:
    """Every readable ``velero-backup.json`` under the test's prefixes, by folder name."""
    docs: dict[str, Obj] = {}
    for key in keys(minio, BUCKET, PREFIX):
        if key.endswith("/velero-backup.json"):
            try:
                docs[key.split("/")[-2]] = json.loads(
                    minio.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
                )
            except ValueError:
                continue
    return docs


def parse_version(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in version.removeprefix("v").split("."))
    return major, minor, patch


def read_state(cluster: Cluster) -> State:
    state: State = {
        "backups": cluster.velero_list("backups"),
        "podvolumebackups": cluster.velero_list("podvolumebackups"),
        "volumesnapshotclasses": cluster.snapshot_list("volumesnapshotclasses"),
        "volumesnapshotcontents": cluster.snapshot_list("volumesnapshotcontents"),
    }
    items = cluster.ok("GET", "/apis/snapshot.storage.k8s.io/v1/volumesnapshots")
    state["volumesnapshots"] = {
        f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in items.get("items") or []
    }
    return state


def normalized(state: State, schedule_uids: dict[str, str]) -> State:
    """Server-owned fields and the worker's annotations dropped; UIDs that point at another
    object of the same cluster (a PodVolumeBackup's Backup, a Backup's Schedule) replaced by
    a placeholder when they do point at it (else left, and the comparison shows them)."""
    uids = {("Backup", name): obj["metadata"]["uid"] for name, obj in state["backups"].items()}
    out: State = {}
    for kind in KINDS:
        out[kind] = {}
        for name, original in state[kind].items():
            obj = copy.deepcopy(original)
            meta = obj["metadata"]
            for key in SERVER_OWNED:
                meta.pop(key, None)
            annotations = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if not k.startswith(WORKER_ANNOTATIONS)
            }
            meta.pop("annotations", None)
            if annotations:
                meta["annotations"] = annotations
            for ref in meta.get("ownerReferences") or []:
                if uids.get((ref.get("kind"), ref.get("name"))) == ref.get("uid"):
                    ref["uid"] = SAME_CLUSTER_UID.format(kind=ref["kind"], name=ref["name"])
                elif ref.get("kind") == "Schedule" and ref.get("uid") == schedule_uids.get(
                    str(ref.get("name"))
                ):
                    ref["uid"] = SAME_CLUSTER_UID.format(kind="Schedule", name=ref["name"])
            labels = meta.get("labels") or {}
            owner = labels.get("velero.io/backup-name")
            if (
                "velero.io/backup-uid" in labels
                and uids.get(("Backup", owner)) == labels["velero.io/backup-uid"]
            ):
                labels["velero.io/backup-uid"] = SAME_CLUSTER_UID.format(kind="Backup", name=owner)
            out[kind][name] = obj
    return out


def field_differences(mine: Any, theirs: Any, path: str = "") -> list[str]:
    """Where two JSON values differ, one ``path: mine != theirs`` line per leaf."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        lines: list[str] = []
        for key in sorted(mine.keys() | theirs.keys()):
            sub = f"{path}.{key}" if path else str(key)
            if key not in mine:
                lines.append(f"{sub}: (absent) != {theirs[key]!r}")
            elif key not in theirs:
                lines.append(f"{sub}: {mine[key]!r} != (absent)")
            else:
                lines += field_differences(mine[key], theirs[key], sub)
        return lines
    return [] if mine == theirs else [f"{path}: {mine!r} != {theirs!r}"]


def differences(worker: State, velero: State) -> list[str]:
    """One line per object and field where the worker's cluster differs from Velero's."""
    lines: list[str] = []
    for kind in KINDS:
        mine, theirs = worker[kind], velero[kind]
        lines += [f"{kind}/{n}: only in C (Velero)" for n in sorted(theirs.keys() - mine)]
        lines += [f"{kind}/{n}: only in B (worker)" for n in sorted(mine.keys() - theirs)]
        for name in sorted(mine.keys() & theirs.keys()):
            lines += [
                f"{kind}/{name}: {line} (worker != Velero)"
                for line in field_differences(mine[name], theirs[name])
            ]
    return lines


# -- the deliberate differences --------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a deliberate difference may look at besides Velero's result."""

    version: tuple[int, int, int]
    bucket: dict[str, Obj]  # velero-backup.json documents in the bucket, by folder name
    worker: State  # the worker's normalised result (only to copy an object it kept)


@dataclass(frozen=True)
class Deliberate:
    """A documented way the worker's result differs from Velero's (docs/conformance.md):
    ``apply`` turns Velero's normalised state into what the worker is expected to leave. It
    must change something where it applies, or the entry is stale and the test fails."""

    name: str
    applies: Callable[[tuple[int, int, int]], bool]
    apply: Callable[[State, Context], None]


def _synced_from_bucket(expected: State, ctx: Context) -> Iterator[tuple[str, Obj, Obj]]:
    """(name, expected Backup, its velero-backup.json) of every Backup that came from the
    bucket (not the orphans and the Backup that was already there)."""
    for name, backup in expected["backups"].items():
        if name in ctx.bucket and not name.startswith("orphan-") and name != "diff-already-here":
            yield name, backup, ctx.bucket[name]


def _unstored_phases(expected: State, ctx: Context) -> None:
    for name, backup, _doc in list(_synced_from_bucket(expected, ctx)):
        if (backup.get("status") or {}).get("phase", "") not in STORED_PHASES:
            del expected["backups"][name]


def _finalizers(expected: State, ctx: Context) -> None:
    for _name, backup, _doc in _synced_from_bucket(expected, ctx):
        backup["metadata"].pop("finalizers", None)


def _foreign_backup_owners(expected: State, ctx: Context) -> None:
    for _name, backup, _doc in _synced_from_bucket(expected, ctx):
        meta = backup["metadata"]
        kept = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Schedule"]
        if kept:
            meta["ownerReferences"] = kept
        else:
            meta.pop("ownerReferences", None)


def _foreign_pod_volume_backup_owners(expected: State, ctx: Context) -> None:
    for pvb in expected["podvolumebackups"].values():
        meta = pvb["metadata"]
        meta["ownerReferences"] = [
            r for r in meta.get("ownerReferences") or [] if r.get("kind") == "Backup"
        ]


def _is_zero(value: Any) -> bool:
    """A value Go's encoding/json writes for a zero field (or drops with omitempty):
    0, "", false, null, {}, [] and metav1.Duration's "0s"."""
    if isinstance(value, bool):
        return value is False
    return value in (0, "", None, "0s") or value == {} or value == []


def as_written(velero: Any, written: Any) -> Any:
    """Velero's value with the zero values encoded as in the bucket's document: a key with
    a zero value only Velero has (its Go types added it) is dropped, one only the document
    has is added. Everything else stays Velero's."""
    if isinstance(velero, dict) and isinstance(written, dict):
        out = {}
        for key in velero.keys() | written.keys():
            if key in velero and key in written:
                out[key] = as_written(velero[key], written[key])
            elif key in velero and not _is_zero(velero[key]):
                out[key] = velero[key]
            elif key in written and _is_zero(written[key]):
                out[key] = written[key]
        return out
    if isinstance(velero, list) and isinstance(written, list) and len(velero) == len(written):
        return [as_written(v, w) for v, w in zip(velero, written, strict=True)]
    return velero


def _zero_values_as_written(expected: State, ctx: Context) -> None:
    for _name, backup, doc in _synced_from_bucket(expected, ctx):
        for section in ("spec", "status"):
            backup[section] = as_written(backup.get(section) or {}, doc.get(section) or {})


def _content_bound_outside(expected: State, ctx: Context) -> None:
    name = "orphan-completed-content"
    if (
        name not in expected["volumesnapshotcontents"]
        and name in ctx.worker["volumesnapshotcontents"]
    ):
        expected["volumesnapshotcontents"][name] = copy.deepcopy(
            ctx.worker["volumesnapshotcontents"][name]
        )


def _before(version: tuple[int, int, int]) -> Callable[[tuple[int, int, int]], bool]:
    return lambda v: v < version


def _always(_version: tuple[int, int, int]) -> bool:
    return True


# The phases in which Velero writes velero-backup.json (worker/velero.py STORED_PHASES,
# spelled out here so the two cannot agree by accident).
STORED_PHASES = frozenset({"Completed", "PartiallyFailed", "Failed", *WAITING})

DELIBERATE: list[Deliberate] = [
    # Velero < 1.18.3 syncs a Backup in any phase; New (or none) makes this cluster's Velero
    # run it, InProgress is marked Failed, FailedValidation/Deleting never happened here.
    Deliberate("skips phases Velero never stores", _before((1, 18, 3)), _unstored_phases),
    # Velero copies metadata.finalizers from the bucket: a foreign finalizer would keep the
    # Backup from ever being deleted (GC, orphan deletion) in this cluster.
    Deliberate("drops finalizers", _always, _finalizers),
    # Velero keeps owner references of kinds other than Schedule: they name UIDs of the
    # source cluster, and the garbage collector deletes a Backup whose owner is absent.
    Deliberate("drops non-Schedule owner references", _always, _foreign_backup_owners),
    # The same for PodVolumeBackups: only the Backup owner reference (re-pointed) is kept.
    Deliberate(
        "drops non-Backup owner references of PodVolumeBackups",
        _always,
        _foreign_pod_volume_backup_owners,
    ),
    # Velero round-trips velero-backup.json through its Go types, which drop zero values
    # (omitempty) and add others (a hook's `timeout: 0s`); the worker creates it as written.
    Deliberate("keeps zero-valued fields as written", _always, _zero_values_as_written),
    # Velero (< 1.18) deletes every VolumeSnapshotContent labelled with an orphan's name;
    # the worker keeps one bound to a live VolumeSnapshot outside the Velero namespace.
    Deliberate(
        "keeps an orphan's content bound to a snapshot elsewhere",
        _before((1, 18, 0)),
        _content_bound_outside,
    ),
]

# What a Velero server does that is not its sync, undone on Velero's side before comparing:
# when it starts, it marks every InProgress Backup Failed (pkg/cmd/server/server.go,
# markInProgressCRsFailed), whatever controllers are disabled.
SERVER_START_FAILED = 'found a backup with status "InProgress" during the server starting'


def undo_server_start(velero: State) -> None:
    for backup in velero["backups"].values():
        status = backup.get("status") or {}
        if str(status.get("failureReason", "")).startswith(SERVER_START_FAILED):
            status["phase"] = "InProgress"
            status.pop("failureReason", None)
            status.pop("completionTimestamp", None)


def expected_from_velero(velero: State, ctx: Context) -> tuple[State, list[str]]:
    """Velero's state with each deliberate difference applied; and the names of those that
    changed nothing (stale entries)."""
    expected = copy.deepcopy(velero)
    undo_server_start(expected)
    stale = []
    for entry in DELIBERATE:
        if not entry.applies(ctx.version):
            continue
        before = copy.deepcopy(expected)
        entry.apply(expected, ctx)
        if expected == before:
            stale.append(entry.name)
    return expected, stale


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Synced:
    version: str
    b: Cluster
    c: Cluster
    worker: WorkerRun
    velero: State
    mine: State
    velero_log: str
    bucket: dict[str, Obj]

    def context(self) -> Context:
        return Context(parse_version(self.version), self.bucket, self.mine)


@pytest.fixture(scope="module", params=velero_versions())
def synced(
    request: pytest.FixtureRequest,
    source: Source,
    minio: MinIO,
    bucket: datetime,
    aws_plugin: Path,
    server_logs: Path,
) -> Iterator[Synced]:
    version: str = request.param
    b = start_cluster("B", version, aws_plugin)
    c: Cluster | None = None
    try:
        c = start_cluster("C", version, aws_plugin)
        schedules = {cluster.name: prepare(cluster, minio, bucket) for cluster in (b, c)}
        worker = run_worker(b, "--features", ",".join(FEATURES), *velero_version_args(version))
        others = [n for n in c.client.disableable_controllers() if n != "backup-sync"]
        with c.server(features=FEATURES, disable=tuple(others), log_dir=server_logs) as server:
            try:
                wait_for(
                    "Velero's sync of both locations on C",
                    lambda: all(c.last_synced(loc) for loc in (DEFAULT, SCHEDULED)),
                    SYNC_TIMEOUT,
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{server.log_tail()}") from None
            log = server.log()
        velero = normalized(read_state(c), schedules[c.name])
        mine = normalized(read_state(b), schedules[b.name])
        result = Synced(version, b, c, worker, velero, mine, log, bucket_documents(minio))
        dump = os.environ.get("BACKUP_SYNC_CONFORMANCE_DUMP")
        if dump:  # both normalised states, for a person to read
            Path(dump).mkdir(parents=True, exist_ok=True)
            for who, state in (("velero", velero), ("worker", mine)):
                text = json.dumps(state, indent=1, sort_keys=True)
                (Path(dump) / f"{version}-{who}.json").write_text(text)
            (Path(dump) / f"{version}-worker-summary.json").write_text(worker.stdout)
        yield result
    finally:
        b.close()
        if c is not None:
            c.close()


# What the worker refuses, and says so (exit 3): everything Velero would not have written
# into a bucket or cannot be read back as the backup of its folder.
REFUSED = {
    "diff-corrupt",
    "diff-renamed",
    "diff-new",
    "diff-in-progress",
    "diff-failed-validation",
    "diff-deleting",
    "diff-no-phase",
}


def test_worker_run_refuses_only_what_it_must_and_says_so(synced: Synced) -> None:
    run = synced.worker
    assert run.code == 3, str(run)
    errors = [e for loc in run.summary["locations"] for e in loc["errors"]]
    assert sorted(e["object"] for e in errors) == sorted(
        f"Backup velero/{name}" for name in REFUSED
    ), str(run)
    for location in (DEFAULT, SCHEDULED):
        assert synced.b.last_synced(location), location


def test_velero_synced_the_bucket(synced: Synced) -> None:
    """The comparison is not vacuous: Velero's own sync created every backup in a final
    phase, its pod volume backups and (before 1.16) its CSI objects, and deleted the
    Completed and PartiallyFailed orphans."""
    final = {
        name
        for name, doc in synced.bucket.items()
        if (doc.get("status") or {}).get("phase") in ("Completed", "PartiallyFailed", "Failed")
        and doc["metadata"]["name"] == name
    }
    assert final <= set(synced.velero["backups"]), sorted(final - set(synced.velero["backups"]))
    assert len(synced.velero["podvolumebackups"]) == 4
    assert "orphan-completed" not in synced.velero["backups"]
    assert "orphan-partiallyfailed" not in synced.velero["backups"]
    assert "orphan-failed" in synced.velero["backups"]
    hooks = synced.velero["backups"]["diff-hooks"]["spec"].get("hooks") or {}
    # Velero 1.18.3 clears spec.hooks of a synced Backup (#10347); before, it keeps them.
    assert bool(hooks) == (parse_version(synced.version) < (1, 18, 3)), hooks
    if parse_version(synced.version) < (1, 16, 0):
        assert {"snapcontent-diff-csi-0", "snapcontent-diff-csi-1"} <= set(
            synced.velero["volumesnapshotcontents"]
        )


def test_worker_leaves_what_velero_leaves_but_the_documented_differences(synced: Synced) -> None:
    expected, stale = expected_from_velero(synced.velero, synced.context())
    diff = differences(synced.mine, expected)
    assert not diff, (
        f"worker (B) vs Velero {synced.version} (C), after the documented differences:\n"
        + "\n".join(diff)
    )
    assert not stale, f"documented differences that did not show up: {stale}"


def test_neither_creates_a_backup_it_cannot_read(synced: Synced) -> None:
    """Both refuse a folder without velero-backup.json and a corrupt one; the worker says
    so in its summary (Velero only logs)."""
    for name in ("diff-no-metadata", "diff-corrupt"):
        assert name not in synced.velero["backups"]
        assert name not in synced.mine["backups"]
    assert "diff-corrupt" in synced.worker.stdout, str(synced.worker)
