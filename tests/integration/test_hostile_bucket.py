"""Hostile bucket contents: a corpus of buckets a careless or malicious writer could produce,
each behind its own BackupStorageLocation (its own prefix), all synced by ONE run of the real
CLI against the real API server and moto (with EnableCSI).

For every case: the location still syncs (no crash, no location failure), each bad object is
a per-item error naming it and why (or gets the documented safe treatment), the good backup
beside it is synced with its pod volume backup, and nothing is written outside the Velero
namespace except the cluster-scoped CSI kinds. The run's peak memory is bounded.
"""

from __future__ import annotations

import copy
import gzip
import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import (
    SeedBackup,
    backup_document,
    csi_documents,
    gzip_json,
    pod_volume_backup_documents,
    seed,
)
from tests.integration.env import CliResult, SyncEnv

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
NOW = datetime.now(UTC)
MiB = 1024 * 1024
MAX_RSS_MIB = 640  # Python + SDKs ~150 MiB; a gzip bomb is stopped at 128 MiB


class Writer:
    """Writes one case's objects under its location's prefix."""

    def __init__(self, env: SyncEnv, prefix: str) -> None:
        self.env = env
        self.prefix = prefix

    def at(self, prefix: str) -> Writer:
        return Writer(self.env, prefix)

    def put(self, folder: str, filename: str, data: bytes) -> None:
        self.env.put(f"{self.prefix}/backups/{folder}/{filename}", data)

    def metadata(self, folder: str, data: bytes) -> None:
        self.put(folder, "velero-backup.json", data)

    def backup(self, name: str, mutate: Callable[[Obj], None] | None = None) -> Obj:
        doc = backup_document(SeedBackup(name), NOW)
        if mutate is not None:
            mutate(doc)
        self.metadata(name, json.dumps(doc).encode())
        return doc

    def pvbs(self, name: str, data: bytes) -> None:
        self.put(name, f"{name}-podvolumebackups.json.gz", data)

    def good(self, name: str) -> None:
        seed(self.env.server.putter(self.env.bucket), self.prefix, [good_backup(name)], NOW)


def good_backup(name: str) -> SeedBackup:
    return SeedBackup(name, pod_volume_backups=1)


def pvb_docs(backup: str, count: int = 1) -> list[Obj]:
    return pod_volume_backup_documents(SeedBackup(backup, pod_volume_backups=count))


def bomb(decompressed: int) -> bytes:
    """A gzip'd JSON list of ``decompressed`` bytes of spaces (compresses ~1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(b"[")]
    block = b" " * MiB
    for _ in range(decompressed // MiB):
        parts.append(packer.compress(block))
    parts.append(packer.compress(b"]"))
    parts.append(packer.flush())
    return b"".join(parts)


@dataclass
class Result:
    """The cluster after the corpus run, as the cases check it."""

    run: CliResult
    namespace: str
    backups: dict[str, Obj]
    pvbs: dict[str, Obj]
    classes: dict[str, Obj]
    contents: dict[str, Obj]
    cp: ControlPlane


@dataclass(frozen=True)
class Case:
    id: str  # the location's name and prefix
    writer: str  # what a careless or malicious writer did
    treatment: str  # what the worker does about it
    build: Callable[[Writer, str], None]  # (writer, hostile backup name)
    errors: tuple[tuple[str, str], ...] = ()  # (object contains, reason contains); {ns}, {x}
    check: Callable[[Result, str], None] | None = None  # (result, hostile backup name)
    prefix: str = ""  # the location's prefix, when not the id
    also: tuple[str, ...] = ()  # more locations this case needs
    good: bool = True  # seed "<id>-good" beside the hostile content


# -- checks ---------------------------------------------------------------------------------


def created_in_namespace(result: Result, name: str) -> Obj:
    backup = result.backups[name]
    assert backup["metadata"]["namespace"] == result.namespace
    return backup


def created_clean(result: Result, name: str) -> None:
    meta = created_in_namespace(result, name)["metadata"]
    for key in ("finalizers", "deletionTimestamp", "deletionGracePeriodSeconds"):
        assert key not in meta, key
    assert "ownerReferences" not in meta


def not_created(result: Result, name: str) -> None:
    assert name not in result.backups


def check_labels(result: Result, name: str) -> None:
    backup = created_in_namespace(result, name)
    location = name.rsplit("-", 1)[0]
    assert backup["metadata"]["labels"]["velero.io/storage-location"] == location
    assert backup["spec"]["storageLocation"] == location


def check_finalizer(result: Result, name: str) -> None:
    created_clean(result, name)
    # Deletable at once: nothing holds it.
    status, _ = result.cp.request(
        "DELETE", f"/apis/velero.io/v1/namespaces/{result.namespace}/backups/{name}"
    )
    assert status == 200
    status, _ = result.cp.request(
        "GET", f"/apis/velero.io/v1/namespaces/{result.namespace}/backups/{name}"
    )
    assert status == 404


def check_pvb_foreign_namespace(result: Result, name: str) -> None:
    created_in_namespace(result, name)
    pvb = result.pvbs[f"{name}-pvb-0"]
    assert pvb["metadata"]["namespace"] == result.namespace
    assert pvb["metadata"]["ownerReferences"][0]["uid"] == result.backups[name]["metadata"]["uid"]


def check_pvb_other_backup(result: Result, name: str) -> None:
    created_in_namespace(result, name)
    assert f"{name}-pvb-0" in result.pvbs
    assert f"{name}-pvb-1" not in result.pvbs


def check_null_lists(result: Result, name: str) -> None:
    created_in_namespace(result, name)
    assert not [p for p in result.pvbs if p.startswith(f"{name}-")]


def check_skipped_not_expired(result: Result, name: str) -> None:
    not_created(result, name)
    loc = result.run.location(name.rsplit("-", 1)[0])
    assert loc["skipped"] == {"waiting or finalizing, not expired": 1}


def check_csi(result: Result, name: str) -> None:
    created_in_namespace(result, name)
    vsclass = result.classes["corpus-class"]
    annotations = vsclass["metadata"].get("annotations") or {}
    assert "snapshot.storage.kubernetes.io/is-default-class" not in annotations
    assert "ownerReferences" not in vsclass["metadata"]
    content = result.contents["corpus-content-ok"]
    ref = content["spec"]["volumeSnapshotRef"]
    assert ref["namespace"].startswith("ns-") and ref["name"].startswith("name-")
    assert "finalizers" not in content["metadata"]
    assert "corpus-content-foreign" not in result.contents


def check_duplicate(result: Result, name: str) -> None:
    backup = created_in_namespace(result, "dup-shared")
    assert backup["metadata"]["labels"]["velero.io/storage-location"] == "dup-a"
    for location in ("dup-a", "dup-b"):
        loc = result.run.location(location)
        assert loc["listed"] == 2 and loc["errors"] == []
    assert result.run.location("dup-a")["created"] == 2  # dup-shared and dup-a-good
    assert result.run.location("dup-b")["created"] == 1  # dup-b-good only


# -- the cases ------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def mutate(doc: Obj) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value

    return mutate


def _delete(path: str) -> Callable[[Obj], None]:
    def mutate(doc: Obj) -> None:
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


def _generate_name_only(doc: Obj) -> None:
    del doc["metadata"]["name"]
    doc["metadata"]["generateName"] = "sneaky-"


def _foreign_owners(doc: Obj) -> None:
    doc["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "name": "kube-system",
            "uid": str(uuid.uuid4()),
            "controller": True,
            "blockOwnerDeletion": True,
        },
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": str(uuid.uuid4())},
        {"apiVersion": "velero.io/v1", "kind": "Backup", "name": "other", "uid": "u"},
    ]


def _deleting(doc: Obj) -> None:
    doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    doc["metadata"]["deletionGracePeriodSeconds"] = 0


def _pvb_other_backup(w: Writer, x: str) -> None:
    w.backup(x)
    docs = pvb_docs(x, 2)
    docs[1]["metadata"]["labels"]["velero.io/backup-name"] = "someone-elses-backup"
    docs[1]["metadata"]["ownerReferences"][0]["name"] = "someone-elses-backup"
    w.pvbs(x, gzip_json(docs))


def _pvb_foreign_namespace(w: Writer, x: str) -> None:
    w.backup(x)
    docs = pvb_docs(x)
    docs[0]["metadata"]["namespace"] = "kube-system"
    w.pvbs(x, gzip_json(docs))


def _pvb_generate_name(w: Writer, x: str) -> None:
    w.backup(x)
    docs = pvb_docs(x)
    del docs[0]["metadata"]["name"]
    w.pvbs(x, gzip_json(docs))


def _null_lists(w: Writer, x: str) -> None:
    w.backup(x)
    w.pvbs(x, gzip_json(None))
    w.put(x, f"{x}-csi-volumesnapshotclasses.json.gz", gzip_json(None))
    w.put(x, f"{x}-csi-volumesnapshotcontents.json.gz", gzip_json(None))


def _csi(w: Writer, x: str) -> None:
    w.backup(x)
    classes, contents = csi_documents(SeedBackup(x, csi_snapshots=2))
    vsclass = classes[0]
    vsclass["metadata"]["name"] = "corpus-class"
    vsclass["metadata"]["namespace"] = "kube-system"
    vsclass["metadata"]["annotations"] = {"snapshot.storage.kubernetes.io/is-default-class": "true"}
    vsclass["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system", "uid": "u"}
    ]
    ok, foreign = contents
    ok["metadata"]["name"] = "corpus-content-ok"
    ok["metadata"]["finalizers"] = ["example.com/never-let-go"]
    ok["metadata"]["namespace"] = "kube-system"
    foreign["metadata"]["name"] = "corpus-content-foreign"
    foreign["metadata"]["labels"]["velero.io/backup-name"] = "someone-elses-backup"
    w.put(x, f"{x}-csi-volumesnapshotclasses.json.gz", gzip_json([vsclass]))
    w.put(x, f"{x}-csi-volumesnapshotcontents.json.gz", gzip_json([ok, foreign]))


def _odd_folders(w: Writer, x: str) -> None:
    for folder in ("with space", "ünïcode", "semi;colon?hash#", "y" * 300):
        doc = backup_document(SeedBackup("placeholder"), NOW)
        doc["metadata"]["name"] = folder
        w.metadata(folder, json.dumps(doc).encode())


def _invalid_names(w: Writer, x: str) -> None:
    for folder in ("Bad_Name", "UPPER"):
        doc = backup_document(SeedBackup("placeholder"), NOW)
        doc["metadata"]["name"] = folder
        w.metadata(folder, json.dumps(doc).encode())


def _duplicate(w: Writer, x: str) -> None:
    w.at("dup-a").good("dup-shared")
    w.at("dup-b").good("dup-shared")
    w.at("dup-b").good("dup-b-good")


def _raw(data: bytes) -> Callable[[Writer, str], None]:
    return lambda w, x: w.metadata(x, data)


def _with(mutate: Callable[[Obj], None]) -> Callable[[Writer, str], None]:
    return lambda w, x: w.backup(x, mutate) and None


def _with_pvbs(data: Callable[[str], bytes]) -> Callable[[Writer, str], None]:
    def build(w: Writer, x: str) -> None:
        w.backup(x)
        w.pvbs(x, data(x))

    return build


def _valid_json(x: str) -> str:
    return json.dumps(backup_document(SeedBackup(x), NOW))


BACKUP = "Backup {ns}/{x}"
PVBS = "pod volume backups of {x}"

CASES = [
    Case(
        "truncated-json",
        "an upload cut short",
        "item error",
        lambda w, x: w.metadata(x, _valid_json(x)[:150].encode()),
        ((BACKUP, "not valid JSON"),),
        not_created,
    ),
    Case(
        "binary-garbage",
        "random bytes instead of JSON",
        "item error",
        _raw(b"\xff\xfe\x00\x9c garbage \x00"),
        ((BACKUP, "not valid JSON"),),
        not_created,
    ),
    Case(
        "utf8-bom",
        "JSON saved by an editor with a byte-order mark",
        "synced: the mark is ignored (Go's decoder would refuse it; the content is intact)",
        lambda w, x: w.metadata(x, b"\xef\xbb\xbf" + _valid_json(x).encode()),
        (),
        created_in_namespace,
    ),
    Case(
        "json-null",
        "velero-backup.json holding null",
        "item error",
        _raw(b"null"),
        ((BACKUP, "expected a JSON object, got NoneType"),),
        not_created,
    ),
    Case(
        "json-list",
        "velero-backup.json holding a list",
        "item error",
        _raw(b"[]"),
        ((BACKUP, "expected a JSON object, got list"),),
        not_created,
    ),
    Case(
        "wrong-kind",
        "a Restore saved as velero-backup.json",
        "item error",
        _with(_set("kind", "Restore")),
        ((BACKUP, "kind 'Restore'"),),
        not_created,
    ),
    Case(
        "wrong-apiversion",
        "apiVersion velero.io/v2",
        "item error",
        _with(_set("apiVersion", "velero.io/v2")),
        ((BACKUP, "apiVersion 'velero.io/v2'"),),
        not_created,
    ),
    Case(
        "metadata-null",
        "metadata: null",
        "item error",
        _with(_set("metadata", None)),
        ((BACKUP, "metadata is missing or not an object"),),
        not_created,
    ),
    Case(
        "name-mismatch",
        "metadata.name of another backup than its folder",
        "item error (Velero would create the other name)",
        _with(_set("metadata.name", "someone-else")),
        ((BACKUP, "does not match its folder"),),
        lambda r, x: not_created(r, "someone-else"),
    ),
    Case(
        "generate-name-only",
        "generateName without name",
        "item error",
        _with(_generate_name_only),
        ((BACKUP, "metadata.name None does not match"),),
        not_created,
    ),
    Case(
        "oversized-metadata",
        "a 9 MiB velero-backup.json",
        "item error: reads stop at the 8 MiB cap",
        _with(_set("metadata.annotations.filler", "z" * (9 * MiB))),
        ((BACKUP, "larger than the 8388608-byte cap"),),
        not_created,
    ),
    Case(
        "annotations-too-long",
        "300 KiB of annotations (under the read cap)",
        "item error from the API server",
        _with(_set("metadata.annotations.filler", "z" * (300 * 1024))),
        ((BACKUP, "metadata.annotations"),),
        not_created,
    ),
    Case(
        "deep-nesting",
        "JSON nested 200,000 levels deep",
        "item error (no RecursionError escapes)",
        _raw(b"[" * 200_000 + b"]" * 200_000),
        ((BACKUP, "nested too deeply"),),
        not_created,
    ),
    Case(
        "dense-json",
        "1.1 million empty arrays (gigabytes once parsed)",
        "item error before parsing",
        _raw(b'{"a":[' + b"[]," * 1_100_000 + b"[]]}"),
        ((BACKUP, "JSON objects and arrays"),),
        not_created,
    ),
    Case(
        "gzip-bomb",
        "a 160 KiB pod volume backup file inflating to 160 MiB",
        "item error at 128 MiB; the Backup itself is synced",
        _with_pvbs(lambda x: bomb(160 * MiB)),
        ((PVBS, "decompresses to more than 134217728 bytes"),),
        created_in_namespace,
    ),
    Case(
        "gzip-members",
        "200,000 empty gzip members",
        "item error after 100 members",
        _with_pvbs(lambda x: gzip.compress(b"") * 200_000),
        ((PVBS, "more than 100 gzip members"),),
        created_in_namespace,
    ),
    Case(
        "null-lists",
        "pod volume backup and CSI lists holding null",
        "treated as empty, as Go decodes null into an empty slice",
        _null_lists,
        (),
        check_null_lists,
    ),
    Case(
        "null-items",
        "a pod volume backup list holding null",
        "item error for the list",
        _with_pvbs(lambda x: gzip_json([None, *pvb_docs(x)])),
        ((PVBS, "item 0 is not an object with metadata"),),
        created_in_namespace,
    ),
    Case(
        "too-many-items",
        "100,001 pod volume backups in one file",
        "item error (each would be an API create)",
        _with_pvbs(lambda x: gzip_json([{"metadata": {}}] * 100_001)),
        ((PVBS, "more than 100000 items"),),
        created_in_namespace,
    ),
    Case(
        "invalid-names",
        "folders named Bad_Name and UPPER",
        "item error, never read",
        _invalid_names,
        (
            ("backup folder 'Bad_Name'", "not a valid Kubernetes name"),
            ("backup folder 'UPPER'", "not a valid Kubernetes name"),
        ),
    ),
    Case(
        "odd-folder-names",
        "folders with a space, unicode, ;?#, 300 characters",
        "item error, never read",
        _odd_folders,
        (
            ("backup folder 'with space'", "not a valid Kubernetes name"),
            ("backup folder 'ünïcode'", "not a valid Kubernetes name"),
            ("backup folder 'semi;colon?hash#'", "not a valid Kubernetes name"),
            ("backup folder 'yyyy", "longer than 253 characters"),
        ),
    ),
    Case(
        "odd-location-prefix",
        "a location prefix with spaces, unicode, + and %",
        "synced normally",
        lambda w, x: None,
        prefix="odd prefix/ünï+%20",
    ),
    Case(
        "namespace-escape",
        "metadata.namespace kube-system",
        "created in the Velero namespace (as Velero does)",
        _with(_set("metadata.namespace", "kube-system")),
        (),
        created_in_namespace,
    ),
    Case(
        "misleading-labels",
        "labels naming another location and another backup",
        "the location label is rewritten (as Velero does)",
        _with(
            _set(
                "metadata.labels",
                {"velero.io/storage-location": "elsewhere", "velero.io/backup-name": "other"},
            )
        ),
        (),
        check_labels,
    ),
    Case(
        "finalizer",
        "a finalizer no controller here will ever remove",
        "finalizers stripped (Velero keeps them): deletable at once",
        _with(_set("metadata.finalizers", ["example.com/never-let-go"])),
        (),
        check_finalizer,
    ),
    Case(
        "deletion-timestamp",
        "deletionTimestamp and deletionGracePeriodSeconds",
        "server-owned fields cleared",
        _with(_deleting),
        (),
        created_clean,
    ),
    Case(
        "foreign-owners",
        "owner references to a Namespace (blocking), a Deployment, another Backup",
        "dropped (Velero keeps them): no garbage collection or blocked deletion",
        _with(_foreign_owners),
        (),
        created_clean,
    ),
    Case(
        "bogus-phase",
        "status.phase Bogus",
        "item error",
        _with(_set("status.phase", "Bogus")),
        ((BACKUP, "status.phase 'Bogus'"),),
        not_created,
    ),
    Case(
        "phase-new",
        "status.phase New (Velero's backup controller would run it)",
        "item error (Velero would create it)",
        _with(_set("status.phase", "New")),
        ((BACKUP, "status.phase 'New'"),),
        not_created,
    ),
    Case(
        "no-status",
        "no status at all (so no phase: Velero would run it)",
        "item error (Velero would create it)",
        _with(_delete("status")),
        ((BACKUP, "status.phase ''"),),
        not_created,
    ),
    Case(
        "unreadable-expiration",
        "WaitingForPluginOperations with expiration 'soon'",
        "skipped as not expired (nothing says it expired)",
        _with(lambda d: d["status"].update(phase="WaitingForPluginOperations", expiration="soon")),
        (),
        check_skipped_not_expired,
    ),
    Case(
        "invalid-label",
        "a label key 'bad key!'",
        "item error from the API server",
        _with(_set("metadata.labels", {"bad key!": "v"})),
        ((BACKUP, "metadata.labels"),),
        not_created,
    ),
    Case(
        "pvb-other-backup",
        "a pod volume backup labelled and owned by another backup",
        "item error for that PVB (Velero would create it); the others are synced",
        _pvb_other_backup,
        (("PodVolumeBackup {ns}/{x}-pvb-1", "belongs to backup 'someone-elses-backup'"),),
        check_pvb_other_backup,
    ),
    Case(
        "pvb-foreign-namespace",
        "a pod volume backup in namespace kube-system",
        "created in the Velero namespace (as Velero does)",
        _pvb_foreign_namespace,
        (),
        check_pvb_foreign_namespace,
    ),
    Case(
        "pvb-generate-name",
        "a pod volume backup with generateName and no name",
        "item error (the server would invent a new one each time)",
        _pvb_generate_name,
        (("PodVolumeBackup {ns}/None", "metadata.name is missing"),),
        created_in_namespace,
    ),
    Case(
        "csi-hostile",
        "a default-class annotation, kube-system namespace, foreign owner, finalizer, "
        "a snapshot content of another backup",
        "annotation, namespace, owners, finalizers dropped; the foreign content an item error",
        _csi,
        (("VolumeSnapshotContent corpus-content-foreign", "belongs to backup"),),
        check_csi,
    ),
    Case(
        "dup-a",
        "the same backup name in two locations",
        "the first location in order creates it; the other skips it silently",
        _duplicate,
        (),
        check_duplicate,
        also=("dup-b",),
    ),
]


# -- the run --------------------------------------------------------------------------------


@dataclass
class Corpus:
    result: Result
    elsewhere: dict[str, list[str]] = field(default_factory=dict)


def _cluster_wide(cp: ControlPlane, path: str) -> list[Obj]:
    status, body = cp.request("GET", path)
    assert status == 200, body
    items: list[Obj] = body.get("items", [])
    return items


@pytest.fixture(scope="module")
def corpus(control_plane: ControlPlane, moto: Any) -> Iterator[Corpus]:
    namespace = f"velero-{uuid.uuid4().hex[:10]}"
    control_plane.create_namespace(namespace)
    try:
        env = SyncEnv(control_plane, namespace, moto)
        for case in CASES:
            for location in (case.id, *case.also):
                prefix = case.prefix if location == case.id and case.prefix else location
                env.add_location(location, prefix=prefix)
            writer = Writer(env, case.prefix or case.id)
            case.build(writer, f"{case.id}-x")
            if case.good:
                writer.good(f"{case.id}-good")
        run = env.run("--features", "EnableCSI", "--concurrency", "4")
        ns_items = {
            plural: {
                i["metadata"]["name"]: i for i in _cluster_wide(control_plane, env.path(plural))
            }
            for plural in ("backups", "podvolumebackups")
        }
        snap = "/apis/snapshot.storage.k8s.io/v1"
        result = Result(
            run=run,
            namespace=namespace,
            backups=ns_items["backups"],
            pvbs=ns_items["podvolumebackups"],
            classes={
                i["metadata"]["name"]: i
                for i in _cluster_wide(control_plane, f"{snap}/volumesnapshotclasses")
            },
            contents={
                i["metadata"]["name"]: i
                for i in _cluster_wide(control_plane, f"{snap}/volumesnapshotcontents")
            },
            cp=control_plane,
        )
        elsewhere: dict[str, list[str]] = {}
        for path in (
            "/apis/velero.io/v1/backups",
            "/apis/velero.io/v1/podvolumebackups",
            "/apis/velero.io/v1/schedules",
            f"{snap}/volumesnapshots",
            "/apis/events.k8s.io/v1/events",
        ):
            elsewhere[path] = [
                f"{i['metadata'].get('namespace')}/{i['metadata']['name']}"
                for i in _cluster_wide(control_plane, path)
                if i["metadata"].get("namespace") != namespace
            ]
        yield Corpus(result, elsewhere)
    finally:
        for plural in ("volumesnapshotclasses", "volumesnapshotcontents"):
            for name in ("corpus-class", "corpus-content-ok", "corpus-content-foreign"):
                control_plane.request("DELETE", f"/apis/snapshot.storage.k8s.io/v1/{plural}/{name}")
        control_plane.delete_namespace(namespace)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_run_survives_the_whole_corpus(corpus: Corpus) -> None:
    run = corpus.result.run
    assert run.code == 3, run.stderr[-3000:]  # item errors, no location failure
    outcomes = {loc["location"]: loc["outcome"] for loc in run.summary["locations"]}
    assert set(outcomes.values()) == {"synced"}, outcomes
    assert len(outcomes) == sum(1 + len(c.also) for c in CASES)
    assert "Traceback" not in run.stderr
    assert "unexpected error" not in run.stdout + run.stderr
    print(f"corpus run: {run.seconds:.1f}s, peak RSS {run.max_rss_mib:.0f} MiB")
    assert run.max_rss_mib < MAX_RSS_MIB, f"peak RSS {run.max_rss_mib:.0f} MiB"


def test_nothing_written_outside_the_velero_namespace(corpus: Corpus) -> None:
    assert corpus.elsewhere == {path: [] for path in corpus.elsewhere}
    # kube-system in particular: the escapes tried it
    for path in ("/apis/velero.io/v1/namespaces/kube-system/backups",):
        assert _cluster_wide(corpus.result.cp, path) == []
    # cluster-scoped: only the CSI objects this corpus meant to create
    created = {n for n in corpus.result.contents if n.startswith("corpus-")}
    assert created == {"corpus-content-ok"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(corpus: Corpus, case: Case) -> None:
    result = corpus.result
    loc = result.run.location(case.id)
    assert loc["outcome"] == "synced", loc
    x = f"{case.id}-x"
    if case.good:  # the good backup beside the hostile content is synced, with its PVB
        good = created_in_namespace(result, f"{case.id}-good")
        assert good["metadata"]["labels"]["velero.io/storage-location"] == case.id
        pvb = result.pvbs[f"{case.id}-good-pvb-0"]
        assert pvb["metadata"]["ownerReferences"][0]["uid"] == good["metadata"]["uid"]
    errors = copy.deepcopy(loc["errors"])
    assert len(errors) == len(case.errors), errors
    for obj, reason in case.errors:
        obj = obj.format(ns=result.namespace, x=x)
        reason = reason.format(ns=result.namespace, x=x)
        matching = [e for e in errors if obj in e["object"] and reason in e["reason"]]
        assert matching, f"no error ({obj!r}, {reason!r}) in {errors}"
        errors.remove(matching[0])
    if case.check is not None:
        case.check(result, x)
