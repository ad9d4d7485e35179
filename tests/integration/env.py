"""A Velero namespace on the real control plane, wired to one emulator bucket, and the real
``backup-sync`` CLI run as a subprocess against both."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.controlplane import ControlPlane
from harness.objectstores import ObjectStoreServer
from harness.seed import SeedBackup, backup_objects, seed

Obj = dict[str, Any]
Argv = list[str]  # (``SyncEnv.list`` hides the builtin inside the class)
CLI = str(Path(sys.executable).with_name("backup-sync"))
VELERO = "/apis/velero.io/v1/namespaces/{ns}/{plural}"
SNAPSHOTS = "/apis/snapshot.storage.k8s.io/v1"


@dataclass
class CliResult:
    code: int
    summary: Obj  # {} for a run with --log-format text
    stdout: str
    stderr: str
    max_rss_mib: float  # the CLI process's peak memory
    seconds: float

    def location(self, name: str) -> Obj:
        for loc in self.summary["locations"]:
            if loc["location"] == name:
                return dict(loc)
        raise KeyError(f"location {name} not in summary: {self.summary}")


@dataclass
class SyncEnv:
    cp: ControlPlane
    namespace: str
    server: ObjectStoreServer
    bucket: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:20]}")
    with_credential: bool = False  # a location reads spec.credential: no emulator shortcuts

    def __post_init__(self) -> None:
        self.server.create_bucket(self.bucket)

    # -- cluster --------------------------------------------------------------------------

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
        status, obj = self.cp.request(method, path, body, **kw)
        assert status < 300, f"{method} {path} -> {status}: {obj.get('message', obj)}"
        return obj

    def path(self, plural: str, name: str = "") -> str:
        base = VELERO.format(ns=self.namespace, plural=plural)
        return f"{base}/{name}" if name else base

    def add_location(
        self,
        name: str,
        *,
        default: bool = False,
        prefix: str = "",
        credential: bool = True,
        config: dict[str, str] | None = None,
        sync_period: str | None = None,
        ca_pem: bytes | None = None,
    ) -> Obj:
        spec: Obj = {
            "provider": f"velero.io/{self.server.provider}",
            "objectStorage": {"bucket": self.bucket, **({"prefix": prefix} if prefix else {})},
            "config": {**self.server.location_config(self.bucket), **(config or {})},
            "default": default,
        }
        if ca_pem is not None:
            spec["objectStorage"]["caCert"] = base64.b64encode(ca_pem).decode()
        if sync_period is not None:
            spec["backupSyncPeriod"] = sync_period
        creds = self.server.credentials()
        if credential and creds is not None:
            secret = f"{name}-credentials"
            self.ok(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/secrets",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret},
                    "data": {"cloud": base64.b64encode(creds).decode()},
                },
            )
            spec["credential"] = {"name": secret, "key": "cloud"}
            self.with_credential = True
        body = {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self.ok("POST", self.path("backupstoragelocations"), body)

    def location(self, name: str) -> Obj:
        return self.ok("GET", self.path("backupstoragelocations", name))

    def list(self, plural: str) -> dict[str, Obj]:
        items = self.ok("GET", self.path(plural)).get("items", [])
        return {item["metadata"]["name"]: item for item in items}

    def list_cluster(self, plural: str) -> dict[str, Obj]:
        items = self.ok("GET", f"{SNAPSHOTS}/{plural}").get("items", [])
        return {item["metadata"]["name"]: item for item in items}

    def add_backup(self, name: str, location: str, phase: str = "Completed") -> Obj:
        """A Backup already in the cluster (e.g. one whose folder left the bucket)."""
        body = {
            "apiVersion": "velero.io/v1",
            "kind": "Backup",
            "metadata": {"name": name, "labels": {"velero.io/storage-location": location}},
            "spec": {"storageLocation": location},
            "status": {"phase": phase},
        }
        return self.ok("POST", self.path("backups"), body)

    def snapshot(self) -> Obj:
        """Everything the worker could write, verbatim (resourceVersions included)."""
        return {
            plural: self.list(plural)
            for plural in ("backupstoragelocations", "backups", "podvolumebackups", "schedules")
        } | {
            plural: self.list_cluster(plural)
            for plural in ("volumesnapshotclasses", "volumesnapshotcontents")
        }

    # -- bucket ---------------------------------------------------------------------------

    def seed(self, *backups: SeedBackup, prefix: str = "", now: datetime | None = None) -> None:
        """Write ``backups`` into the bucket; their timestamps from ``now`` (default: now), so
        buckets seeded with the same ``now`` hold the same bytes."""
        seed(self.server.putter(self.bucket), prefix, backups, now)

    def put(self, key: str, data: bytes) -> None:
        self.server.put(self.bucket, key, data)

    def remove(self, backup: SeedBackup, prefix: str = "") -> None:
        """Delete every object of a seeded backup, as Velero's GC or a person would."""
        for key in backup_objects(backup, prefix, datetime.now(UTC)):
            self.server.delete(self.bucket, key)

    # -- the CLI --------------------------------------------------------------------------

    def command(self, *args: str, env: dict[str, str] | None = None) -> tuple[Argv, dict[str, str]]:
        """The argv and environment of ``backup-sync`` against this namespace (JSON logs and
        summary, short retries; ``args`` come last, so they override), for ``run`` or for a
        process a test starts and signals itself."""
        argv = [
            CLI,
            "--kubeconfig",
            str(self.cp.kubeconfig),
            "--namespace",
            self.namespace,
            "--log-format",
            "json",
            "--retry-attempts",
            "2",
            "--retry-max-seconds",
            "5",
            "--request-timeout",
            "20",
            *args,
        ]
        shortcut = {} if self.with_credential else self.server.env()
        return argv, {**os.environ, **shortcut, **(env or {})}

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> CliResult:
        """``backup-sync`` against this namespace (JSON summary unless ``args`` ask for
        text), reaped with wait4 for its peak RSS."""
        argv, full_env = self.command(*args, env=env)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > started + timeout:
                    proc.kill()
                    proc.wait()
                    raise AssertionError(f"backup-sync did not finish within {timeout}s")
                time.sleep(0.05)
            seconds = time.monotonic() - started
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(), err.read().decode()
        code = os.waitstatus_to_exitcode(status)
        try:
            summary = json.loads(stdout) if "text" not in args else {}
        except ValueError:
            raise AssertionError(
                f"summary is not one JSON document (exit {code}):\n"
                f"stdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
            ) from None
        return CliResult(code, summary, stdout, stderr, usage.ru_maxrss / 1024, seconds)
