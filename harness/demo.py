"""``make demo``: a real kube-apiserver + etcd and a local S3, a bucket of sample Velero
backups, one run of the ``backup-sync`` CLI, its summary and the resulting Backups.

Everything runs on loopback and is torn down at the end.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from harness.controlplane import ControlPlane
from harness.objectstores import MotoS3
from harness.seed import SeedBackup, seed

NAMESPACE = "velero"
BUCKET = "velero-backups"
CLI = str(Path(sys.executable).with_name("backup-sync"))

SAMPLE = (
    SeedBackup("nightly-20261126", pod_volume_backups=2, schedule=("nightly", "0b1c0000-aaaa")),
    SeedBackup("nightly-20261127", pod_volume_backups=2, schedule=("nightly", "0b1c0000-aaaa")),
    SeedBackup("nightly-20261128", pod_volume_backups=1, schedule=("nightly", "0b1c0000-aaaa")),
    SeedBackup("weekly-20261122", phase="PartiallyFailed", pod_volume_backups=3),
    SeedBackup("pre-upgrade", expires_in=None),
    SeedBackup(
        "nightly-20261129",
        phase="WaitingForPluginOperations",
        expires_in=timedelta(days=30),
    ),
)
ORPHAN = "nightly-20261001"  # in the cluster, long gone from the bucket


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _ok(cp: ControlPlane, method: str, path: str, body: Any = None) -> dict[str, Any]:
    status, obj = cp.request(method, path, body)
    if status >= 300:
        raise SystemExit(f"{method} {path} -> {status}: {obj.get('message', obj)}")
    return obj


def _prepare_cluster(cp: ControlPlane, s3: MotoS3) -> None:
    cp.create_namespace(NAMESPACE)
    velero = f"/apis/velero.io/v1/namespaces/{NAMESPACE}"
    _ok(
        cp,
        "POST",
        f"/api/v1/namespaces/{NAMESPACE}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cloud-credentials"},
            "data": {"cloud": base64.b64encode(s3.credentials()).decode()},
        },
    )
    _ok(
        cp,
        "POST",
        f"{velero}/backupstoragelocations",
        {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": "default"},
            "spec": {
                "provider": "aws",
                "default": True,
                "objectStorage": {"bucket": BUCKET},
                "config": s3.location_config(BUCKET),
                "credential": {"name": "cloud-credentials", "key": "cloud"},
            },
        },
    )
    _ok(
        cp,
        "POST",
        f"{velero}/backups",
        {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "metadata": {"name": ORPHAN, "labels": {"velero.io/storage-location": "default"}},
            "spec": {"storageLocation": "default"},
            "status": {"phase": "Completed"},
        },
    )


def _table(cp: ControlPlane) -> str:
    velero = f"/apis/velero.io/v1/namespaces/{NAMESPACE}"
    backups = _ok(cp, "GET", f"{velero}/backups").get("items", [])
    pvbs = _ok(cp, "GET", f"{velero}/podvolumebackups").get("items", [])
    owned: dict[str, int] = {}
    for pvb in pvbs:
        for ref in pvb["metadata"].get("ownerReferences", []):
            owned[ref["uid"]] = owned.get(ref["uid"], 0) + 1
    rows = [("NAME", "PHASE", "LOCATION", "POD VOLUME BACKUPS", "EXPIRES")]
    for b in sorted(backups, key=lambda b: b["metadata"]["name"]):
        status = b.get("status", {})
        rows.append(
            (
                b["metadata"]["name"],
                status.get("phase", ""),
                b.get("spec", {}).get("storageLocation", ""),
                str(owned.get(b["metadata"]["uid"], 0)),
                status.get("expiration", "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
    )


def main() -> int:
    say("starting kube-apiserver + etcd and a local S3 (moto)")
    with ControlPlane() as cp, MotoS3() as s3:
        cp.apply_crds()
        s3.create_bucket(BUCKET)
        written = seed(s3.putter(BUCKET), "", SAMPLE)
        say(f"bucket s3://{BUCKET}: {len(SAMPLE)} Velero backups ({written} objects)")
        for backup in SAMPLE:
            print(f"  {backup.name:20} {backup.phase:28} PVBs: {backup.pod_volume_backups}")
        _prepare_cluster(cp, s3)
        say(f"cluster: BackupStorageLocation 'default' and one orphaned Backup ({ORPHAN})")
        print("\nBackups before:\n" + _table(cp))

        argv = [CLI, "--kubeconfig", str(cp.kubeconfig), "--namespace", NAMESPACE]
        say("$ backup-sync " + " ".join(argv[1:]))
        code = subprocess.run(argv, check=False, stderr=subprocess.STDOUT).returncode
        say(f"backup-sync exited {code}")

        print("\nBackups after:\n" + _table(cp))
        say("tearing everything down")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
