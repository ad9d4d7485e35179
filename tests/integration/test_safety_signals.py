"""The mass-deletion guard, Events on the BackupStorageLocation, Pushgateway metrics and
secrets kept out of every output: the real CLI against the real API server and emulators."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.objectstores import AZURITE_KEY, AZURITE_KEY_VAR
from harness.seed import SeedBackup
from tests.integration.env import CLI, CliResult, SyncEnv
from tests.pushgateway import Gateway

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


@pytest.fixture
def s3_env(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> SyncEnv:
    return SyncEnv(control_plane, velero_namespace, moto)


def describe_events(env: SyncEnv, location: str) -> list[Obj]:
    """The Events ``kubectl describe bsl <location>`` shows: core/v1 Events selected by
    the involved object's kind, name, namespace and uid."""
    uid = env.location(location)["metadata"]["uid"]
    selector = ",".join(
        [
            "involvedObject.kind=BackupStorageLocation",
            f"involvedObject.name={location}",
            f"involvedObject.namespace={env.namespace}",
            f"involvedObject.uid={uid}",
        ]
    )
    events = env.ok("GET", f"/api/v1/namespaces/{env.namespace}/events?fieldSelector={selector}")
    return sorted(events.get("items", []), key=lambda e: e["metadata"]["creationTimestamp"])


def reasons(env: SyncEnv, location: str) -> list[str]:
    return [e["reason"] for e in describe_events(env, location)]


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    with Gateway() as gw:
        yield gw


# -- the mass-deletion guard --------------------------------------------------------------------


def test_wrong_prefix_deletes_nothing_then_the_override_deletes(
    s3_env: SyncEnv, gateway: Gateway
) -> None:
    env = s3_env
    env.add_location("default", default=True, prefix="team-a")
    env.seed(*(SeedBackup(f"nightly-{i:02}") for i in range(12)), prefix="team-a")
    first = env.run()
    assert first.code == 0, first.stderr
    assert len(env.list("backups")) == 12
    assert reasons(env, "default") == ["BackupsSynced"]

    # Someone points the location at a prefix that holds nothing: every backup looks orphaned.
    env.ok(
        "PATCH",
        env.path("backupstoragelocations", "default"),
        {"spec": {"objectStorage": {"prefix": "team-b"}}},
        content_type="application/merge-patch+json",
    )
    blocked = env.run("--force", "--pushgateway-url", gateway.url)
    assert blocked.code == 3, blocked.stderr[-2000:]
    loc = blocked.location("default")
    assert loc["orphansDeleted"] == 0 and loc["orphansBlocked"] == 12
    assert "12 of the 12 Backups" in loc["massDeletionBlocked"]
    assert len(env.list("backups")) == 12
    assert "mass deletion guard" in blocked.stderr
    events = describe_events(env, "default")
    assert [e["reason"] for e in events] == ["BackupsSynced", "MassDeletionBlocked"]
    assert events[-1]["type"] == "Warning"
    assert "--allow-mass-orphan-deletion" in events[-1]["message"]
    pushed = gateway.group(f"/metrics/job/backup-sync/location/default/namespace/{env.namespace}")
    assert pushed["backup_sync_orphans_blocked"] == 12
    assert pushed["backup_sync_location_last_run_success"] == 0

    allowed = env.run("--force", "--allow-mass-orphan-deletion")
    assert allowed.code == 0, allowed.stderr
    assert allowed.location("default")["orphansDeleted"] == 12
    assert env.list("backups") == {}
    assert reasons(env, "default")[-1] == "OrphansDeleted"


def test_text_summary_says_why(s3_env: SyncEnv) -> None:
    env = s3_env
    env.add_location("default", default=True)
    for i in range(10):
        env.add_backup(f"old-{i}", "default")
    proc = subprocess.run(
        [CLI, "--kubeconfig", str(env.cp.kubeconfig), "--namespace", env.namespace],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert "orphans blocked 10" in proc.stdout
    assert "  blocked: mass deletion blocked: 10 of the 10 Backups" in proc.stdout
    assert len(env.list("backups")) == 10


# -- events and metrics ---------------------------------------------------------------------


def test_events_tell_the_story_and_metrics_are_pushed(s3_env: SyncEnv, gateway: Gateway) -> None:
    env = s3_env
    env.add_location("default", default=True)
    env.add_location("broken", config={"s3Url": "http://127.0.0.1:9"})
    env.seed(SeedBackup("good-1", pod_volume_backups=1), SeedBackup("good-2"))
    env.put("backups/bad-1/velero-backup.json", b"{truncated")
    env.add_backup("orphan-1", "default")

    result = env.run("--pushgateway-url", gateway.url)

    assert result.code == 1, result.stderr[-2000:]
    events = describe_events(env, "default")
    assert [e["reason"] for e in events] == ["BackupsSynced", "ItemsFailed", "OrphansDeleted"]
    by_reason = {e["reason"]: e for e in events}
    assert by_reason["ItemsFailed"]["type"] == "Warning"
    assert f"Backup {env.namespace}/bad-1" in by_reason["ItemsFailed"]["message"]
    assert by_reason["OrphansDeleted"]["type"] == "Normal"
    assert all(e["reportingComponent"] == "backup-sync" for e in events)
    [failed] = describe_events(env, "broken")
    assert (failed["type"], failed["reason"]) == ("Warning", "SyncFailed")

    ns = env.namespace
    default = gateway.group(f"/metrics/job/backup-sync/location/default/namespace/{ns}")
    assert default["backup_sync_backups_created"] == 2
    assert default["backup_sync_backups_deleted"] == 1
    assert default["backup_sync_backups_failed"] == 1
    assert default["backup_sync_location_last_success_timestamp_seconds"] > 1.7e9
    broken = gateway.group(f"/metrics/job/backup-sync/location/broken/namespace/{ns}")
    assert "backup_sync_location_last_success_timestamp_seconds" not in broken
    run = gateway.group(f"/metrics/job/backup-sync/namespace/{ns}")
    assert run["backup_sync_last_run_exit_code"] == 1
    assert 0 < run["backup_sync_run_duration_seconds"] < result.seconds
    assert all(push.method == "POST" for push in gateway.pushes)


def test_events_forbidden_never_fail_the_run(control_plane: ControlPlane, s3_env: SyncEnv) -> None:
    """A worker whose RBAC lacks events still syncs and exits 0."""
    env = s3_env
    env.add_location("default", default=True)
    env.seed(SeedBackup("b1"))
    sa = f"worker-{uuid.uuid4().hex[:6]}"
    kubeconfig = control_plane.service_account_kubeconfig(env.namespace, sa)
    rules = [
        {
            "apiGroups": ["velero.io"],
            "resources": ["backupstoragelocations", "backups", "podvolumebackups", "schedules"],
            "verbs": ["get", "list", "create", "delete", "patch"],
        },
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]
    env.ok(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{env.namespace}/roles",
        {"metadata": {"name": sa}, "rules": rules},
    )
    env.ok(
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{env.namespace}/rolebindings",
        {
            "metadata": {"name": sa},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": env.namespace}],
        },
    )
    proc = subprocess.run(
        [
            CLI,
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            env.namespace,
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["locations"][0]["created"] == 1
    assert "cannot record event" in proc.stderr
    assert "forbidden" in proc.stderr.lower()
    assert describe_events(env, "default") == []


# -- secrets never reach any output ---------------------------------------------------------

S3_SECRET = "bSyncS3cretKey/9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0"
S3_ACCESS = "AKIABACKUPSYNCTEST01"
WRONG_AZURE_KEY = base64.b64encode(b"backup-sync-wrong-key-0123456789abcdef" * 2).decode()


def _secret(env: SyncEnv, name: str, data: bytes) -> None:
    env.ok(
        "POST",
        f"/api/v1/namespaces/{env.namespace}/secrets",
        {"metadata": {"name": name}, "data": {"cloud": base64.b64encode(data).decode()}},
    )


def _bsl(env: SyncEnv, name: str, provider: str, bucket: str, config: Obj, secret: str) -> None:
    env.ok(
        "POST",
        env.path("backupstoragelocations"),
        {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": {
                "provider": provider,
                "objectStorage": {"bucket": bucket},
                "config": config,
                "credential": {"name": secret, "key": "cloud"},
            },
        },
    )


def _all_output(env: SyncEnv, runs: list[CliResult], gateway: Gateway) -> str:
    events = env.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{env.namespace}/events")
    parts = [r.stdout + "\n" + r.stderr for r in runs]
    parts.append(json.dumps(events))
    parts += [push.body for push in gateway.pushes]
    return "\n".join(parts)


def test_secrets_never_reach_logs_events_or_metrics(
    control_plane: ControlPlane,
    velero_namespace: str,
    moto: Any,
    azurite: Any,
    gateway: Gateway,
) -> None:
    s3 = SyncEnv(control_plane, velero_namespace, moto)
    azure_bucket = f"t{uuid.uuid4().hex[:20]}"
    azurite.create_bucket(azure_bucket)
    s3.seed(SeedBackup("s3-backup", pod_volume_backups=1))
    s3.put("backups/s3-broken/velero-backup.json", b"{not json")
    azurite.put(azure_bucket, "backups/az-backup/velero-backup.json", b"{not json either")

    s3_creds = (
        f"[default]\naws_access_key_id = {S3_ACCESS}\naws_secret_access_key = {S3_SECRET}\n"
    ).encode()
    _secret(s3, "s3-creds", s3_creds)
    _secret(s3, "azure-creds", f"{AZURITE_KEY_VAR}={AZURITE_KEY}\n".encode())
    _secret(s3, "azure-wrong", f"{AZURITE_KEY_VAR}={WRONG_AZURE_KEY}\n".encode())
    s3_config = moto.location_config(s3.bucket)
    _bsl(s3, "s3-ok", "aws", s3.bucket, s3_config, "s3-creds")
    _bsl(s3, "s3-down", "aws", s3.bucket, {**s3_config, "s3Url": "http://127.0.0.1:9"}, "s3-creds")
    _bsl(s3, "s3-nobucket", "aws", "no-such-bucket-here", s3_config, "s3-creds")
    az_config = azurite.location_config(azure_bucket)
    _bsl(s3, "azure-ok", "azure", azure_bucket, az_config, "azure-creds")
    _bsl(s3, "azure-wrongkey", "azure", azure_bucket, az_config, "azure-wrong")

    runs = [
        s3.run("--log-level", "debug", "--pushgateway-url", gateway.url),
        s3.run("--log-level", "debug", "--force", "--log-format", "text"),
    ]
    text_run = runs[1]
    outcomes = {loc["location"]: loc["outcome"] for loc in runs[0].summary["locations"]}
    # Both paths really ran: success and failure, on both providers.
    assert outcomes == {
        "s3-ok": "synced",
        "s3-down": "failed",
        "s3-nobucket": "failed",
        "azure-ok": "synced",
        "azure-wrongkey": "failed",
    }, runs[0].stdout
    assert "s3-backup" in s3.list("backups")
    assert text_run.code == 1

    output = _all_output(s3, runs, gateway)
    for secret in (S3_SECRET, AZURITE_KEY, WRONG_AZURE_KEY):
        for form in (secret, base64.b64encode(secret.encode()).decode()):
            assert form not in output, f"a secret reached the output: {form[:6]}…"
    for data in (s3_creds,):
        assert base64.b64encode(data).decode() not in output
    # and the runs did say something about the failures
    assert "azure-wrongkey" in output and "s3-down" in output
