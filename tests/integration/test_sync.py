"""The real CLI against a real kube-apiserver + etcd and each object-store emulator."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.objectstores import FakeGCS
from harness.seed import SeedBackup
from tests.integration.env import SyncEnv

pytestmark = pytest.mark.integration

SERVERS = {"aws": "moto", "gcp": "fake_gcs", "azure": "azurite"}


@pytest.fixture(params=sorted(SERVERS))
def env(
    request: pytest.FixtureRequest, control_plane: ControlPlane, velero_namespace: str
) -> SyncEnv:
    """A namespace wired to a fresh bucket of each provider's emulator in turn."""
    server = request.getfixturevalue(SERVERS[request.param])
    return SyncEnv(control_plane, velero_namespace, server)


@pytest.fixture
def s3_env(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> SyncEnv:
    return SyncEnv(control_plane, velero_namespace, moto)


def test_fresh_cluster_gets_every_backup_then_steady_state_then_orphans(env: SyncEnv) -> None:
    env.add_location("default", default=True)  # with spec.credential from a Secret
    manual = SeedBackup("manual-1")
    env.seed(
        SeedBackup("nightly-1", pod_volume_backups=2),
        SeedBackup("nightly-2", pod_volume_backups=1, phase="PartiallyFailed"),
        manual,
    )

    first = env.run()

    assert first.code == 0, first.stderr
    if isinstance(env.server, FakeGCS):  # the key in the Secret was really exchanged
        assert env.server.token_server.grants
    loc = first.location("default")
    assert (loc["outcome"], loc["listed"], loc["created"]) == ("synced", 3, 3)
    assert loc["podVolumeBackupsCreated"] == 3
    backups = env.list("backups")
    assert sorted(backups) == ["manual-1", "nightly-1", "nightly-2"]
    for backup in backups.values():
        assert backup["metadata"]["namespace"] == env.namespace
        assert backup["spec"]["storageLocation"] == "default"
        assert backup["metadata"]["labels"]["velero.io/storage-location"] == "default"
    assert backups["nightly-2"]["status"]["phase"] == "PartiallyFailed"
    pvbs = env.list("podvolumebackups")
    assert sorted(pvbs) == ["nightly-1-pvb-0", "nightly-1-pvb-1", "nightly-2-pvb-0"]
    for pvb in pvbs.values():
        owner = pvb["metadata"]["labels"]["velero.io/backup-name"]
        real_uid = backups[owner]["metadata"]["uid"]
        assert pvb["metadata"]["ownerReferences"][0]["uid"] == real_uid
        assert pvb["metadata"]["labels"]["velero.io/backup-uid"] == real_uid
        assert pvb["spec"]["backupStorageLocation"] == "default"
    synced_at = env.location("default")["status"]["lastSyncedTime"]
    assert synced_at

    # Within the period: the location is not due, nothing is read or written.
    before = env.snapshot()
    not_due = env.run()
    assert not_due.code == 0
    assert not_due.location("default")["outcome"] == "not-due"
    assert env.snapshot() == before

    # Forced: nothing to create, exit 0, only the status stamp changes.
    again = env.run("--force")
    assert again.code == 0, again.stderr
    assert again.location("default")["created"] == 0
    after = env.snapshot()
    assert after["backups"] == before["backups"]
    assert after["podvolumebackups"] == before["podvolumebackups"]

    # A backup removed from the bucket is deleted from the cluster on the next run.
    env.remove(manual)
    removed = env.run("--force")
    assert removed.code == 0, removed.stderr
    assert removed.location("default")["orphansDeleted"] == 1
    assert sorted(env.list("backups")) == ["nightly-1", "nightly-2"]

    # Only Completed/PartiallyFailed backups of this location are orphans.
    env.add_backup("gone-completed", "default", "Completed")
    env.add_backup("gone-partial", "default", "PartiallyFailed")
    env.add_backup("gone-inprogress", "default", "InProgress")
    env.add_backup("gone-failed", "default", "Failed")
    env.add_backup("other-location", "elsewhere", "Completed")
    orphans = env.run("--force")
    assert orphans.code == 0, orphans.stderr
    assert orphans.location("default")["orphansDeleted"] == 2
    remaining = set(env.list("backups"))
    assert "gone-completed" not in remaining and "gone-partial" not in remaining
    assert {"gone-inprogress", "gone-failed", "other-location", "nightly-1"} <= remaining


def test_waiting_backup_is_skipped_until_expired(s3_env: SyncEnv) -> None:
    s3_env.add_location("default", default=True)
    s3_env.seed(
        SeedBackup("waiting", phase="WaitingForPluginOperations", expires_in=timedelta(days=1)),
        SeedBackup("finalizing-expired", phase="Finalizing", expires_in=timedelta(days=-1)),
    )
    result = s3_env.run()
    assert result.code == 0, result.stderr
    assert result.location("default")["skipped"] == {"waiting or finalizing, not expired": 1}
    backups = s3_env.list("backups")
    assert sorted(backups) == ["finalizing-expired"]
    assert backups["finalizing-expired"]["status"]["phase"] == "PartiallyFailed"


def test_csi_objects_only_with_the_feature(s3_env: SyncEnv) -> None:
    s3_env.add_location("default", default=True)
    s3_env.seed(SeedBackup("with-csi", csi_snapshots=2))

    off = s3_env.run()
    assert off.code == 0, off.stderr
    assert "with-csi" in s3_env.list("backups")
    assert not any(
        n.startswith("snapcontent-with-csi") for n in s3_env.list_cluster("volumesnapshotcontents")
    )

    s3_env.ok("DELETE", s3_env.path("backups", "with-csi"))
    on = s3_env.run("--force", "--features", "EnableCSI")
    assert on.code == 0, on.stderr
    loc = on.location("default")
    assert loc["csiVolumeSnapshotContentsCreated"] == 2
    contents = s3_env.list_cluster("volumesnapshotcontents")
    content = contents["snapcontent-with-csi-0"]
    assert content["spec"]["source"] == {"snapshotHandle": "snap-00000000000000000"}
    ref = content["spec"]["volumeSnapshotRef"]
    assert ref["namespace"].startswith("ns-") and ref["name"].startswith("name-")
    assert ref["namespace"][3:] == ref["name"][5:]
    assert "csi-snapclass" in s3_env.list_cluster("volumesnapshotclasses")

    # The orphaned backup takes its snapshot contents with it.
    s3_env.ok("DELETE", s3_env.path("backups", "with-csi"))
    s3_env.add_backup("with-csi-orphan", "default")
    s3_env.ok(
        "POST",
        "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents",
        {
            **{k: v for k, v in content.items() if k not in ("metadata", "status")},
            "metadata": {
                "name": "snapcontent-orphan",
                "labels": {"velero.io/backup-name": "with-csi-orphan"},
            },
        },
    )
    cleanup = s3_env.run("--force", "--features", "EnableCSI")
    assert cleanup.code == 0, cleanup.stderr
    assert "with-csi-orphan" not in s3_env.list("backups")
    assert "snapcontent-orphan" not in s3_env.list_cluster("volumesnapshotcontents")


def test_default_location_first_with_default_in_the_middle(s3_env: SyncEnv) -> None:
    for name, default in (("alpha", False), ("bravo", True), ("charlie", False)):
        s3_env.add_location(name, default=default, prefix=name)
    result = s3_env.run()
    assert result.code == 0, result.stderr
    assert [loc["location"] for loc in result.summary["locations"]] == ["bravo", "alpha", "charlie"]


def test_status_subresource_variant(control_plane: ControlPlane, s3_env: SyncEnv) -> None:
    control_plane.replace_bsl_crd(status_subresource=True)
    try:
        s3_env.add_location("default", default=True)
        result = s3_env.run()
        assert result.code == 0, result.stderr
        assert s3_env.location("default")["status"]["lastSyncedTime"]
    finally:
        control_plane.replace_bsl_crd(status_subresource=False)


def test_unreachable_store_fails_the_location_and_writes_nothing(s3_env: SyncEnv) -> None:
    s3_env.add_location("default", default=True, config={"s3Url": "http://127.0.0.1:9"})
    s3_env.add_backup("kept", "default", "Completed")
    before = s3_env.snapshot()
    result = s3_env.run()
    assert result.code == 1
    assert result.location("default")["outcome"] == "failed"
    assert s3_env.snapshot() == before  # nothing deleted, status not patched


def test_dry_run_leaves_the_cluster_unchanged(s3_env: SyncEnv) -> None:
    s3_env.add_location("default", default=True)
    s3_env.seed(SeedBackup("b1", pod_volume_backups=1), SeedBackup("b2"))
    s3_env.add_backup("orphan", "default", "Completed")
    before = s3_env.snapshot()
    result = s3_env.run("--dry-run")
    assert result.code == 0, result.stderr
    assert s3_env.snapshot() == before
    plan = result.location("default")["plan"]
    assert f"would create Backup {s3_env.namespace}/b1" in plan
    assert f"would create PodVolumeBackup {s3_env.namespace}/b1-pvb-0" in plan
    assert f"would delete Backup {s3_env.namespace}/orphan" in plan
    assert any(p.startswith("would patch BackupStorageLocation") for p in plan)


def test_unknown_config_key_is_a_configuration_error(s3_env: SyncEnv) -> None:
    s3_env.add_location("default", default=True, config={"bucketRegion": "eu-west-1"})
    result = s3_env.run()
    assert result.code == 2
    reason = result.location("default")["reason"]
    assert "bucketRegion" in reason and "s3ForcePathStyle" in reason


def test_ca_cert_is_trusted_for_https_azurite_and_needed(
    control_plane: ControlPlane, velero_namespace: str, azurite_tls: Any
) -> None:
    env = SyncEnv(control_plane, velero_namespace, azurite_tls)
    env.add_location("trusted", default=True, prefix="p", ca_pem=azurite_tls.ca_pem)
    env.add_location("untrusted", prefix="p")
    env.seed(SeedBackup("b1"), prefix="p")

    result = env.run()

    assert result.code == 1  # the location without the CA fails...
    trusted, untrusted = result.location("trusted"), result.location("untrusted")
    assert (trusted["outcome"], trusted["created"]) == ("synced", 1)  # ...the other syncs
    assert untrusted["outcome"] == "failed"
    assert "certificate" in untrusted["reason"].lower()
    assert "lastSyncedTime" not in env.location("untrusted").get("status", {})
