"""Fixtures of the conformance tests: the real Velero (``hack/build-velero.sh``), one MinIO,
and cluster A, where a real ``velero server`` backs up a namespace into MinIO with the real
client. The journey and the differential both read the bucket A wrote.

Outside CI a missing Velero, plugin or MinIO is built here (minutes) and skips when it
cannot be; under ``CI=true`` it is a failure (``make conformance`` builds them first).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.controlplane import ControlPlane
from harness.minio import MinIO, MinIOError
from harness.tools import ToolUnavailable
from harness.velero import (
    VeleroError,
    VeleroUnavailable,
    apply_crds,
    aws_plugin_binary,
    pinned_versions,
    velero_binary,
)
from tests.conformance.helpers import Cluster, Obj, wait_for
from tests.conftest import _bin_dir, in_ci

VELERO_VERSION, VELERO_NEXT_VERSION = pinned_versions()
BUCKET = "conformance"
SOURCE_PREFIX = "team/prod"
SHOP = "shop"
WIDGET_CRD = "widgets.example.com"
# Velero's sync enqueues every location once a minute; its first pass can come a minute
# after the server starts.
SYNC_TIMEOUT = 150.0


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def velero_for(version: str) -> Path:
    """The ``velero`` binary of ``version`` (built here outside CI when missing)."""
    try:
        return velero_binary(version, build=not in_ci())
    except VeleroUnavailable as exc:
        _unavailable(f"velero {version} unavailable: {exc}")
        raise


@pytest.fixture(scope="session")
def aws_plugin() -> Path:
    try:
        return aws_plugin_binary(build=not in_ci())
    except VeleroUnavailable as exc:
        _unavailable(f"velero-plugin-for-aws unavailable: {exc}")
        raise


@pytest.fixture(scope="session")
def minio() -> Iterator[MinIO]:
    server = MinIO(build=not in_ci())
    try:
        server.start()
    except (ToolUnavailable, MinIOError) as exc:
        _unavailable(f"MinIO unavailable: {exc}")
    try:
        server.create_bucket(BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where every ``velero server`` of the session logs (kept for a failure's post-mortem)."""
    return tmp_path_factory.mktemp("velero-server-logs")


def start_cluster(name: str, version: str, plugin: Path) -> Cluster:
    """A fresh ControlPlane with Velero ``version``'s own CRDs and a ``velero`` Deployment."""
    cp = ControlPlane(_bin_dir())
    cp.start()
    try:
        return Cluster.install(name, cp, velero_for(version), plugin, version)
    except BaseException:
        cp.stop()
        raise


# -- cluster A: what a real Velero wrote ------------------------------------------------------


def widget_crd() -> Obj:
    """A small namespaced CRD, so the backup holds a custom resource (and Velero backs up
    its CRD along with it)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": WIDGET_CRD},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer"},
                                        "color": {"type": "string"},
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


# What the namespace holds, by API path (relative to the namespace) and name.
SHOP_KINDS = {
    "configmaps": "/api/v1/namespaces/{ns}/configmaps",
    "secrets": "/api/v1/namespaces/{ns}/secrets",
    "services": "/api/v1/namespaces/{ns}/services",
    "serviceaccounts": "/api/v1/namespaces/{ns}/serviceaccounts",
    "widgets": "/apis/example.com/v1/namespaces/{ns}/widgets",
}


def shop_objects(ns: str) -> dict[str, Obj]:
    """The objects put into namespace ``ns`` (by kind), as they were created."""
    return {
        "configmaps": {
            "app-config": {"data": {"mode": "production", "replicas": "3"}},
            "feature-flags": {"data": {"checkout-v2": "true"}},
        },
        "secrets": {
            "db-credentials": {
                "type": "Opaque",
                "data": {"password": base64.b64encode(b"s3cr3t").decode()},
            },
        },
        "services": {
            "web": {
                "spec": {
                    "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                }
            },
        },
        "serviceaccounts": {"shop-app": {}},
        "widgets": {"gizmo": {"spec": {"size": 3, "color": "teal"}}},
    }


def _api_object(kind: str, name: str, body: Obj) -> Obj:
    kinds = {
        "configmaps": ("v1", "ConfigMap"),
        "secrets": ("v1", "Secret"),
        "services": ("v1", "Service"),
        "serviceaccounts": ("v1", "ServiceAccount"),
        "widgets": ("example.com/v1", "Widget"),
    }
    api_version, kind_name = kinds[kind]
    return {
        "apiVersion": api_version,
        "kind": kind_name,
        "metadata": {"name": name, "labels": {"app": "shop"}},
        **body,
    }


@dataclass
class Source:
    """Cluster A and the backups its Velero wrote under ``BUCKET/SOURCE_PREFIX``."""

    cluster: Cluster
    manual: str
    scheduled: str
    long: str
    schedule: str = "journey-daily"

    @property
    def backups(self) -> list[str]:
        return [self.manual, self.scheduled, self.long]


@pytest.fixture(scope="session")
def source(minio: MinIO, aws_plugin: Path, server_logs: Path) -> Iterator[Source]:
    """Cluster A: a real Velero (the pinned, oldest supported version) that backed up
    namespace ``shop`` three times: by hand, through a Schedule, and under a name over 63
    characters. Its server is stopped when this returns (tests restart it)."""
    cluster = start_cluster("A", VELERO_VERSION, aws_plugin)
    try:
        apply_crds(cluster.cp, [widget_crd()])
        cluster.cp.create_namespace(SHOP)
        for kind, objects in shop_objects(SHOP).items():
            for name, body in objects.items():
                cluster.create(SHOP_KINDS[kind].format(ns=SHOP), _api_object(kind, name, body))
        cluster.add_location("default", minio, BUCKET, SOURCE_PREFIX, default=True)
        manual = "journey-manual"
        long = "journey-" + "a-backup-name-longer-than-a-kubernetes-label-value-" + "0123456789"
        assert len(long) > 63
        with cluster.server(log_dir=server_logs) as server:
            wait_for(
                "BSL default Available on A",
                lambda: (
                    cluster.ok("GET", cluster.velero_path("backupstoragelocations", "default"))
                    .get("status", {})
                    .get("phase")
                    == "Available"
                ),
                60,
            )
            common = ["--include-namespaces", SHOP, "--snapshot-volumes=false"]
            try:
                cluster.velero("backup", "create", manual, *common, "--wait")
                cluster.velero(
                    "schedule", "create", "journey-daily", "--schedule", "0 3 * * *", *common
                )
                cluster.velero("backup", "create", "--from-schedule", "journey-daily", "--wait")
                cluster.velero("backup", "create", long, *common, "--wait")
            except VeleroError as exc:
                raise AssertionError(f"{exc}\n--- velero server:\n{server.log_tail()}") from None
            backups = cluster.velero_list("backups")
            scheduled = [
                name
                for name, b in backups.items()
                if (b["metadata"].get("labels") or {}).get("velero.io/schedule-name")
                == "journey-daily"
            ]
            assert len(scheduled) == 1, sorted(backups)
            for name, backup in backups.items():
                assert backup["status"]["phase"] == "Completed", (name, backup["status"])
        yield Source(cluster, manual, scheduled[0], long)
    finally:
        cluster.close()


def velero_versions() -> list[str]:
    """The Velero versions the differential runs against: both pinned ones, or the list in
    ``BACKUP_SYNC_CONFORMANCE_VERSIONS`` (``make conformance-all``)."""
    extra = os.environ.get("BACKUP_SYNC_CONFORMANCE_VERSIONS", "").strip()
    if extra:
        return [v.strip() for v in extra.split(",") if v.strip()]
    return [VELERO_VERSION, VELERO_NEXT_VERSION]
