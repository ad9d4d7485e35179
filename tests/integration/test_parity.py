"""Velero parity on the real control plane and an S3 emulator: what a running Velero does and
never more (a prefix cleaned as Go's path.Join cleans it, the orphan CSI clean-up scoped as
Velero's namespaced cache scopes it) and the version profiles of --velero-version, each
boundary asserted on the same bucket (docs/velero-differences.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import SeedBackup, backup_document
from harness.velero_docs import snapshot_content, volume_snapshot
from tests.integration.env import SNAPSHOTS, SyncEnv

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


@pytest.fixture
def env(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> SyncEnv:
    return SyncEnv(control_plane, velero_namespace, moto)


# -- the prefix, built with Go's path.Join -------------------------------------------------------


def test_a_stray_slash_in_the_prefix_lists_where_velero_wrote_and_deletes_nothing(
    env: SyncEnv,
) -> None:
    """Velero writes and lists team/prod/backups/ for a prefix "team//prod/"; listing the
    prefix as written found nothing, and every synced Backup looked like an orphan."""
    env.add_location("default", default=True, prefix="team//prod/")
    synced = [SeedBackup(f"synced-{i}") for i in range(3)]
    env.seed(*synced, SeedBackup("new-1", pod_volume_backups=1), prefix="team/prod")
    for backup in synced:
        env.add_backup(backup.name, "default")

    result = env.run("--force")

    assert result.code == 0, result.stderr
    loc = result.location("default")
    assert (loc["listed"], loc["created"], loc["orphansDeleted"]) == (4, 1, 0)
    assert sorted(env.list("backups")) == ["new-1", "synced-0", "synced-1", "synced-2"]
    assert loc["warnings"] == []


def test_an_empty_listing_beside_synced_backups_warns_naming_the_prefix(env: SyncEnv) -> None:
    env.add_location("default", default=True, prefix="elsewhere")
    env.add_backup("synced-0", "default")

    result = env.run("--force")

    assert result.code == 0, result.stderr
    [warning] = result.location("default")["warnings"]
    assert "listed nothing under elsewhere/backups/" in warning
    # one orphan is below the guard's floor: deleted, as Velero would
    assert result.location("default")["orphansDeleted"] == 1


# -- the orphan CSI clean-up ------------------------------------------------------------------


@pytest.fixture
def app_namespace(control_plane: ControlPlane, velero_namespace: str) -> Iterator[str]:
    name = f"{velero_namespace}-app"
    control_plane.create_namespace(name)
    try:
        yield name
    finally:
        control_plane.delete_namespace(name)


def test_orphan_csi_clean_up_never_touches_what_a_restore_put_elsewhere(
    env: SyncEnv, app_namespace: str
) -> None:
    """Velero's restore labels the VolumeSnapshots it restores into application namespaces
    with velero.io/backup-name. When that backup expires from the bucket, Velero 1.15-1.17
    delete the orphan's snapshots in their own namespace only; the contents bound to the
    application's snapshots (deletionPolicy Delete: the cloud snapshot) stay."""
    ns, backup = env.namespace, f"gone-{env.namespace}"
    env.add_location("default", default=True)
    env.add_backup(backup, "default")
    env.ok(
        "POST", f"{SNAPSHOTS}/namespaces/{ns}/volumesnapshots", volume_snapshot("vs", ns, backup)
    )
    env.ok(
        "POST",
        f"{SNAPSHOTS}/namespaces/{app_namespace}/volumesnapshots",
        volume_snapshot("restored", app_namespace, backup),
    )
    contents = {
        f"{backup}-own": (ns, "vs"),
        f"{backup}-static": (f"ns-{backup}", f"name-{backup}"),
        f"{backup}-app": (app_namespace, "restored"),
    }
    for name, bound_to in contents.items():
        env.ok(
            "POST", f"{SNAPSHOTS}/volumesnapshotcontents", snapshot_content(name, backup, bound_to)
        )
    try:
        result = env.run("--force", "--features", "EnableCSI", "--velero-version", "1.15.2")

        assert result.code == 0, result.stderr
        assert result.location("default")["orphansDeleted"] == 1
        assert env.list("backups") == {}
        assert env.ok("GET", f"{SNAPSHOTS}/namespaces/{ns}/volumesnapshots")["items"] == []
        kept = env.ok("GET", f"{SNAPSHOTS}/namespaces/{app_namespace}/volumesnapshots")
        assert [vs["metadata"]["name"] for vs in kept["items"]] == ["restored"]
        left = {name for name in env.list_cluster("volumesnapshotcontents") if backup in name}
        assert left == {f"{backup}-app"}
    finally:
        for name in contents:
            env.cp.request("DELETE", f"{SNAPSHOTS}/volumesnapshotcontents/{name}")


# -- version profiles on one bucket ------------------------------------------------------------

HOOKS = {"resources": [{"name": "fsfreeze", "pre": [{"exec": {"command": ["/sbin/fsfreeze"]}}]}]}


def profile_bucket(env: SyncEnv) -> None:
    """A bucket with pod volume backups, CSI objects and hooks, read by two locations: one
    Available, one Unavailable."""
    csi = SeedBackup(f"csi-{env.namespace}", pod_volume_backups=1, csi_snapshots=2)
    hooked = SeedBackup("hooked")
    env.seed(csi, hooked)
    document = backup_document(hooked, datetime.now(UTC))
    document["spec"]["hooks"] = HOOKS
    env.put("backups/hooked/velero-backup.json", json.dumps(document).encode())
    for name, phase in (("available", "Available"), ("unavailable", "Unavailable")):
        env.add_location(name, default=name == "available")
        location = env.location(name)
        location["status"] = {"phase": phase}
        env.ok("PUT", env.path("backupstoragelocations", name), location)


SEEDED_CLASS = "csi-snapclass"  # the class harness.seed writes


def seeded_contents(env: SyncEnv) -> set[str]:
    tag = f"snapcontent-csi-{env.namespace}-"  # harness.seed's names
    return {n for n in env.list_cluster("volumesnapshotcontents") if n.startswith(tag)}


def remove_cluster_scoped(env: SyncEnv) -> None:
    for name in seeded_contents(env):
        env.cp.request("DELETE", f"{SNAPSHOTS}/volumesnapshotcontents/{name}")
    env.cp.request("DELETE", f"{SNAPSHOTS}/volumesnapshotclasses/{SEEDED_CLASS}")


@pytest.mark.parametrize(
    ("version", "classes", "contents", "unavailable_synced", "hooks"),
    [
        ("1.15.2", 1, 2, True, HOOKS),
        ("1.16.2", 1, 0, False, HOOKS),
        ("1.18.0", 0, 0, False, HOOKS),
        ("1.18.3", 0, 0, False, {}),
    ],
)
def test_each_profile_boundary_on_the_same_bucket(
    env: SyncEnv,
    version: str,
    classes: int,
    contents: int,
    unavailable_synced: bool,
    hooks: Obj,
) -> None:
    profile_bucket(env)
    remove_cluster_scoped(env)  # another test may have left the seeded class
    try:
        result = env.run("--force", "--features", "EnableCSI", "--velero-version", version)

        assert result.code == 0, result.stderr
        assert result.summary["veleroProfile"] == {
            "version": version,
            "source": "--velero-version",
        }
        loc = result.location("available")
        assert (loc["created"], loc["podVolumeBackupsCreated"]) == (2, 1)
        assert (
            loc["csiVolumeSnapshotClassesCreated"],
            loc["csiVolumeSnapshotContentsCreated"],
        ) == (
            classes,
            contents,
        )
        assert len(seeded_contents(env)) == contents
        assert (SEEDED_CLASS in env.list_cluster("volumesnapshotclasses")) == bool(classes)
        assert env.list("backups")["hooked"]["spec"]["hooks"] == hooks
        other = result.location("unavailable")
        if unavailable_synced:
            assert other["outcome"] == "synced"
        else:
            assert other["outcome"] == "unavailable"
            assert "not Available" in other["reason"]
            assert "lastSyncedTime" not in (env.location("unavailable").get("status") or {})
    finally:
        remove_cluster_scoped(env)


# -- auto: the Velero Deployment's image ----------------------------------------------------------


def deployment(image: str) -> Obj:
    labels = {"component": "velero"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "velero", "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "velero", "image": image}]},
            },
        },
    }


@pytest.mark.parametrize(
    ("image", "version", "says"),
    [
        ("velero/velero:v1.17.1", "1.17.1", "auto: image velero/velero:v1.17.1 of Deployment"),
        ("velero/velero@sha256:" + "c" * 64, "1.15.0", "names no version tag"),
        (None, "1.15.0", "auto: no Deployment"),
    ],
)
def test_auto_reads_the_velero_deployment(
    env: SyncEnv, image: str | None, version: str, says: str
) -> None:
    if image is not None:
        env.ok("POST", f"/apis/apps/v1/namespaces/{env.namespace}/deployments", deployment(image))
    env.add_location("default", default=True)
    env.seed(SeedBackup("b1"))

    result = env.run("--force")

    assert result.code == 0, result.stderr
    assert result.summary["veleroProfile"]["version"] == version
    assert says in result.summary["veleroProfile"]["source"]
    text = env.run("--force", "--dry-run", "--log-format", "text")
    assert f"Velero {version} profile" in text.stdout
