"""Pieces shared by the conformance tests: a cluster with Velero installed (as objects), the
worker's CLI run once against it, bounded waits, and the bucket as MinIO holds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.controlplane import ControlPlane
from harness.minio import MinIO
from harness.velero import (
    NAMESPACE,
    VeleroClient,
    VeleroServer,
    add_location,
    install,
    mark_available,
)

Obj = dict[str, Any]
T = TypeVar("T")

CLI = str(Path(sys.executable).with_name("backup-sync"))
VELERO_API = "/apis/velero.io/v1/namespaces/{ns}/{plural}"
SNAPSHOT_API = "/apis/snapshot.storage.k8s.io/v1"
# The worker's flag that picks the Velero version it syncs like (worker/profile.py). Passed
# whenever `backup-sync --help` lists it; REQUIRE_... makes its absence a failure.
WORKER_VELERO_VERSION_FLAG = "--velero-version"
REQUIRE_WORKER_VELERO_VERSION_FLAG = True


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 1.0) -> T:
    """``probe()`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Cluster:
    """One ControlPlane with Velero's CRDs and a ``velero`` Deployment object, the Velero
    client of that version, and the Velero plugin/binary to run a server with."""

    name: str
    cp: ControlPlane
    client: VeleroClient
    plugin: Path
    version: str
    namespace: str = NAMESPACE

    @classmethod
    def install(
        cls, name: str, cp: ControlPlane, velero: Path, plugin: Path, version: str
    ) -> Cluster:
        client = VeleroClient(velero, cp.kubeconfig)
        install(cp, client, version)
        return cls(name, cp, client, plugin, version)

    # -- API

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Obj]:
        return self.cp.request(method, path, body, **kw)

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
        status, obj = self.cp.request(method, path, body, **kw)
        assert status < 300, f"{self.name}: {method} {path} -> {status}: {obj.get('message', obj)}"
        return obj

    def velero_path(self, plural: str, name: str = "") -> str:
        base = VELERO_API.format(ns=self.namespace, plural=plural)
        return f"{base}/{name}" if name else base

    def velero_list(self, plural: str) -> dict[str, Obj]:
        items = self.ok("GET", self.velero_path(plural)).get("items") or []
        return {item["metadata"]["name"]: item for item in items}

    def snapshot_list(self, plural: str) -> dict[str, Obj]:
        items = self.ok("GET", f"{SNAPSHOT_API}/{plural}").get("items") or []
        return {item["metadata"]["name"]: item for item in items}

    def create(self, path: str, body: Obj) -> Obj:
        return self.ok("POST", path, body)

    def add_location(
        self, name: str, minio: MinIO, bucket: str, prefix: str, *, default: bool = False
    ) -> Obj:
        return add_location(
            self.cp,
            name,
            bucket=bucket,
            prefix=prefix,
            config=minio.location_config(bucket),
            credentials=minio.credentials(),
            namespace=self.namespace,
            default=default,
        )

    def mark_available(self, location: str) -> None:
        mark_available(self.cp, location, self.namespace)

    def last_synced(self, location: str) -> str | None:
        bsl = self.ok("GET", self.velero_path("backupstoragelocations", location))
        return (bsl.get("status") or {}).get("lastSyncedTime")

    # -- Velero

    def velero(self, *args: str, timeout: float = 180.0) -> str:
        return self.client.run(*args, timeout=timeout).stdout

    @contextmanager
    def server(
        self,
        *,
        features: tuple[str, ...] = (),
        disable: tuple[str, ...] = (),
        log_dir: Path | None = None,
    ) -> Iterator[VeleroServer]:
        """A ``velero server`` on this cluster for the ``with`` block (one per host)."""
        server = VeleroServer(
            self.client.binary,
            self.plugin,
            self.cp.kubeconfig,
            namespace=self.namespace,
            features=features,
            disable_controllers=disable,
            log_dir=log_dir,
        )
        with server:
            yield server

    def close(self) -> None:
        self.client.close()
        self.cp.stop()


# -- the worker -------------------------------------------------------------------------------


@dataclass
class WorkerRun:
    argv: list[str]
    code: int
    summary: Obj
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"{' '.join(self.argv)} -> exit {self.code} in {self.seconds:.1f}s\n"
            f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}"
        )


_help: list[str] = []


def worker_supports(flag: str) -> bool:
    """Whether ``backup-sync --help`` lists ``flag`` (read once)."""
    if not _help:
        _help.append(
            subprocess.run([CLI, "--help"], capture_output=True, text=True, check=False).stdout
        )
    return flag in _help[0]


def velero_version_args(version: str) -> list[str]:
    """``--velero-version X.Y.Z`` for the worker, when it has the flag."""
    if worker_supports(WORKER_VELERO_VERSION_FLAG):
        return [WORKER_VELERO_VERSION_FLAG, version.removeprefix("v")]
    assert not REQUIRE_WORKER_VELERO_VERSION_FLAG, (
        f"backup-sync has no {WORKER_VELERO_VERSION_FLAG}"
    )
    return []


def run_worker(cluster: Cluster, *args: str, timeout: float = 180.0) -> WorkerRun:
    """``backup-sync --force`` once against ``cluster`` (JSON logs and summary)."""
    argv = [
        CLI,
        "--kubeconfig",
        str(cluster.cp.kubeconfig),
        "--namespace",
        cluster.namespace,
        "--force",
        "--log-format",
        "json",
        *args,
    ]
    started = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ), check=False
    )
    seconds = time.monotonic() - started
    try:
        summary = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        summary = {}
    return WorkerRun(argv, proc.returncode, summary, proc.stdout, proc.stderr, seconds)


# -- the bucket -------------------------------------------------------------------------------


def keys(minio: MinIO, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix``."""
    client = minio.client()
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return found


def copy_prefix(minio: MinIO, bucket: str, source: str, target: str) -> int:
    """Copy every object under ``source`` to the same key under ``target`` instead."""
    client = minio.client()
    copied = 0
    for key in keys(minio, bucket, source):
        new = target + key[len(source) :]
        client.copy_object(Bucket=bucket, Key=new, CopySource={"Bucket": bucket, "Key": key})
        copied += 1
    return copied
