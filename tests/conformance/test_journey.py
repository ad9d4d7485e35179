"""The disaster-recovery journey, end to end with the real Velero (the pinned oldest supported
version) and the real worker CLI:

cluster A's Velero backs up namespace ``shop`` into MinIO (conftest ``source``); cluster B
is fresh (Velero's CRDs, a ``velero`` Deployment object, one location on the same bucket
and prefix, written with a stray slash); the worker syncs B once; a real ``velero server``
on B, with its own sync disabled, restores every backup, describes it and prints its logs;
then the backup is deleted on A, and the worker's next run removes it from B and nothing
else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.minio import MinIO
from harness.velero import VeleroError
from tests.conformance.conftest import (
    BUCKET,
    SHOP,
    SHOP_KINDS,
    SOURCE_PREFIX,
    VELERO_VERSION,
    Source,
    shop_objects,
    start_cluster,
)
from tests.conformance.helpers import (
    Cluster,
    Obj,
    WorkerRun,
    keys,
    run_worker,
    velero_version_args,
    wait_for,
)

pytestmark = [pytest.mark.integration]

# The same prefix as A's "team/prod", as a person might type it: a doubled and a trailing
# slash. Velero itself joins the prefix and "backups/" without cleaning it.
STRAY_SLASH_PREFIX = "team//prod/"
LOCATION = "default"


@dataclass
class Journey:
    source: Source
    b: Cluster
    first_run: WorkerRun
    restores: dict[str, Obj] = field(default_factory=dict)  # backup -> `restore get -o json`
    restored: dict[str, dict[str, dict[str, Obj]]] = field(default_factory=dict)
    describe: dict[str, str] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # a Velero command that failed
    server_log: str = ""


def restored_namespace(index: int) -> str:
    return f"{SHOP}-restored-{index}"


def read_namespace(b: Cluster, ns: str) -> dict[str, dict[str, Obj]]:
    out: dict[str, dict[str, Obj]] = {}
    for kind, path in SHOP_KINDS.items():
        status, listed = b.request("GET", path.format(ns=ns))
        items = (listed.get("items") or []) if status == 200 else []
        out[kind] = {item["metadata"]["name"]: item for item in items}
    return out


@pytest.fixture(scope="module")
def journey(source: Source, minio: MinIO, aws_plugin: Path, server_logs: Path) -> Iterator[Journey]:
    b = start_cluster("B", VELERO_VERSION, aws_plugin)
    try:
        b.add_location(LOCATION, minio, BUCKET, STRAY_SLASH_PREFIX, default=True)
        first = run_worker(b, *velero_version_args(VELERO_VERSION))
        state = Journey(source, b, first)
        if first.code == 0 and set(source.backups) <= set(b.velero_list("backups")):
            restore_everything(state, server_logs)
        yield state
    finally:
        b.close()


def restore_everything(state: Journey, server_logs: Path) -> None:
    """A real Velero on B, its own sync off: restore each synced backup into a namespace of
    its own, describe it and print its logs (both read the store through the Backup)."""
    b = state.b
    with b.server(disable=("backup-sync",), log_dir=server_logs) as server:
        for index, name in enumerate(state.source.backups):
            restore = f"restore-{index}"
            try:
                b.velero(
                    "restore",
                    "create",
                    restore,
                    "--from-backup",
                    name,
                    "--namespace-mappings",
                    f"{SHOP}:{restored_namespace(index)}",
                    "--wait",
                    timeout=240,
                )
                state.restores[name] = json.loads(b.velero("restore", "get", restore, "-o", "json"))
            except VeleroError as exc:
                state.errors[f"restore {name}"] = str(exc)
            state.restored[name] = read_namespace(b, restored_namespace(index))
            for what, args in (
                ("describe", ("backup", "describe", name, "--details")),
                ("logs", ("backup", "logs", name)),
            ):
                try:
                    getattr(state, what)[name] = b.velero(*args, timeout=120)
                except VeleroError as exc:
                    state.errors[f"{what} {name}"] = str(exc)
        state.server_log = server.log_tail(80)


def test_worker_syncs_every_backup_of_the_real_velero(journey: Journey) -> None:
    run = journey.first_run
    assert run.code == 0, str(run)
    backups = journey.b.velero_list("backups")
    assert sorted(backups) == sorted(journey.source.backups), str(run)
    for name, backup in backups.items():
        assert backup["status"]["phase"] == "Completed", name
        assert backup["spec"]["storageLocation"] == LOCATION
        assert backup["metadata"]["labels"]["velero.io/storage-location"] == LOCATION
    # B has no Schedule journey-daily: the owner reference to A's Schedule is dropped (by
    # Velero's sync too), the schedule-name label stays.
    scheduled = backups[journey.source.scheduled]
    assert scheduled["metadata"].get("ownerReferences") in (None, [])
    assert scheduled["metadata"]["labels"]["velero.io/schedule-name"] == "journey-daily"


def test_real_velero_restores_every_synced_backup(journey: Journey) -> None:
    assert journey.restores or journey.errors, "nothing was restored (see the first test)"
    problems = {k: v for k, v in journey.errors.items() if k.startswith("restore")}
    assert not problems, "\n\n".join(problems.values()) + "\n--- server:\n" + journey.server_log
    for index, name in enumerate(journey.source.backups):
        restore = journey.restores[name]
        status = restore.get("status", {})
        assert status.get("phase") == "Completed", (name, status, journey.server_log)
        assert not status.get("errors"), (name, status)
        got = journey.restored[name]
        for kind, objects in shop_objects(SHOP).items():
            assert sorted(got[kind]) == sorted(objects), (name, restored_namespace(index), kind)
            for obj_name, want in objects.items():
                have = got[kind][obj_name]
                assert have["metadata"]["labels"]["app"] == "shop"
                assert have["metadata"]["labels"]["velero.io/backup-name"]
                if kind in ("configmaps", "secrets"):
                    assert have.get("data") == want["data"], (name, kind, obj_name)
                if kind == "secrets":
                    assert have["type"] == want["type"]
                if kind == "services":
                    assert have["spec"]["selector"] == want["spec"]["selector"]
                    ports = [(p["name"], p["port"], p["targetPort"]) for p in have["spec"]["ports"]]
                    assert ports == [("http", 80, 8080)]
                if kind == "widgets":
                    assert have["spec"] == want["spec"]


def test_velero_describes_and_prints_logs_of_synced_backups(journey: Journey) -> None:
    problems = {k: v for k, v in journey.errors.items() if not k.startswith("restore")}
    assert not problems, "\n\n".join(problems.values()) + "\n--- server:\n" + journey.server_log
    for name in journey.source.backups:
        described = journey.describe[name]
        assert "Phase:" in described and "Completed" in described, described
        # --details lists the backed-up resources: read from the store's resource list.
        assert "v1/ConfigMap" in described and f"{SHOP}/app-config" in described, described
        logs = journey.logs[name]
        assert "level=info" in logs and name[:20] in logs, logs[:2000]


def test_backup_deleted_on_a_leaves_b_with_nothing_else_changed(
    journey: Journey, minio: MinIO, server_logs: Path
) -> None:
    a, b = journey.source.cluster, journey.b
    deleted = journey.source.manual
    folder = f"{SOURCE_PREFIX}/backups/{deleted}/"
    assert keys(minio, BUCKET, folder), "the backup is not in the bucket to begin with"
    with a.server(log_dir=server_logs) as server:
        a.velero("backup", "delete", deleted, "--confirm")
        try:
            wait_for(
                f"{folder} gone from the bucket",
                lambda: not keys(minio, BUCKET, folder) and deleted not in a.velero_list("backups"),
                120,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- velero server on A:\n{server.log_tail()}") from None

    def everything() -> Obj:
        state: Obj = {
            plural: {n: o["metadata"]["resourceVersion"] for n, o in b.velero_list(plural).items()}
            for plural in ("backups", "restores", "backupstoragelocations", "podvolumebackups")
        }
        for index in range(len(journey.source.backups)):
            ns = restored_namespace(index)
            state[ns] = {
                kind: {n: o["metadata"]["resourceVersion"] for n, o in objs.items()}
                for kind, objs in read_namespace(b, ns).items()
            }
        return state

    before = everything()
    assert deleted in before["backups"]
    run = run_worker(b, *velero_version_args(journey.source.cluster.version))
    assert run.code == 0, str(run)
    after = everything()
    expected = {**before, "backups": {k: v for k, v in before["backups"].items() if k != deleted}}
    # The location's lastSyncedTime is the one thing the run writes besides the deletion.
    expected["backupstoragelocations"] = after["backupstoragelocations"]
    assert after == expected
    assert b.last_synced(LOCATION)
