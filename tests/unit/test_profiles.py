"""Velero version profiles (worker.profile): parsing --velero-version, reading the version of
the Velero Deployment's image for ``auto``, and what the sync does differently per version
(docs/velero-differences.md)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.velero_docs import stored_backup, stored_pvb, stored_vsclass, stored_vscontent
from tests.unit.helpers import Env
from worker.errors import ClusterError, ConfigError
from worker.profile import (
    NEWEST,
    OLDEST,
    VeleroProfile,
    detect,
    parse_version,
    version_of_image,
)
from worker.velero import POD_VOLUME_BACKUP, VOLUME_SNAPSHOT_CLASS, VOLUME_SNAPSHOT_CONTENT

Obj = dict[str, Any]


# -- --velero-version ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("1.15", (1, 15, 0)),
        ("1.15.2", (1, 15, 2)),
        ("v1.16.2", (1, 16, 2)),
        ("1.17", (1, 17, 0)),
        ("1.18.3", (1, 18, 3)),
        ("1.18.9", (1, 18, 9)),
    ],
)
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["1.14.9", "1.19", "2.0", "1", "latest", "1.15.x", ""])
def test_unsupported_or_malformed_versions_are_usage_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=r"1\.15 to 1\.18"):
        parse_version(text)


# -- auto: the Velero Deployment's image ---------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("velero/velero:v1.17.1", (1, 17, 1)),
        ("docker.io/velero/velero:v1.16.2", (1, 16, 2)),
        ("registry.local:5000/mirror/velero:v1.18.0", (1, 18, 0)),
        ("velero/velero:1.15.2", (1, 15, 2)),
        ("velero/velero:v1.18.0-rc.1", (1, 18, 0)),
        ("velero/velero:v1.17.1@sha256:" + "a" * 64, (1, 17, 1)),
        ("velero/velero@sha256:" + "a" * 64, None),
        ("registry.local:5000/velero/velero", None),
        ("velero/velero:main", None),
        ("velero/velero:latest", None),
        ("velero/velero", None),
    ],
)
def test_version_of_image(image: str, version: tuple[int, int, int] | None) -> None:
    assert version_of_image(image) == version


def deployment(*containers: tuple[str, str]) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "velero", "namespace": "velero"},
        "spec": {
            "template": {"spec": {"containers": [{"name": n, "image": i} for n, i in containers]}}
        },
    }


def test_auto_reads_the_velero_container_of_the_deployment() -> None:
    found = deployment(("sidecar", "busybox:1.36"), ("velero", "velero/velero:v1.17.1"))
    profile = detect(lambda: found, "velero", "velero")
    assert profile.version == (1, 17, 1)
    assert "velero/velero:v1.17.1" in profile.source


def test_auto_with_a_digest_only_image_falls_back_to_1_15_and_says_why() -> None:
    found = deployment(("velero", "velero/velero@sha256:" + "b" * 64))
    profile = detect(lambda: found, "velero", "velero")
    assert profile.version == OLDEST
    assert "names no version tag" in profile.source and "1.15.0" in profile.source


def test_auto_without_a_deployment_falls_back_to_1_15() -> None:
    profile = detect(lambda: None, "velero-server", "backup-ns")
    assert profile.version == OLDEST
    assert "no Deployment backup-ns/velero-server" in profile.source


def test_auto_when_the_deployment_cannot_be_read_falls_back_to_1_15() -> None:
    def forbidden() -> Obj | None:
        raise ClusterError("get Deployment velero: 403 Forbidden", 403)

    profile = detect(forbidden, "velero", "velero")
    assert profile.version == OLDEST
    assert "cannot read" in profile.source and "403" in profile.source


def test_auto_with_a_newer_velero_uses_the_newest_profile() -> None:
    profile = detect(lambda: deployment(("velero", "velero/velero:v1.19.0")), "velero", "velero")
    assert profile.version == NEWEST
    assert "newer than" in profile.source


# -- what the sync does per profile --------------------------------------------------------------


def csi_env() -> Env:
    env = Env()
    env.bucket.put_backup(
        "b1",
        pvbs=[stored_pvb("p1", "b1")],
        vsclasses=[stored_vsclass("class-a")],
        vscontents=[stored_vscontent("content-1", "b1")],
    )
    return env


@pytest.mark.parametrize(
    ("version", "classes", "contents"),
    [
        ((1, 15, 2), {"class-a"}, {"content-1"}),
        ((1, 16, 0), {"class-a"}, set()),
        ((1, 17, 2), {"class-a"}, set()),
        ((1, 18, 0), set(), set()),
        ((1, 18, 3), set(), set()),
    ],
)
def test_csi_objects_synced_per_profile(
    version: tuple[int, int, int], classes: set[str], contents: set[str]
) -> None:
    env = csi_env()

    report = env.sync(csi=True, profile=VeleroProfile(version))

    assert report.errors == []
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CLASS)) == classes
    assert set(env.cluster.of(VOLUME_SNAPSHOT_CONTENT)) == contents
    assert set(env.cluster.of(POD_VOLUME_BACKUP, "velero")) == {"p1"}
    # a file the profile does not sync is not even read
    assert any("volumesnapshotclasses" in k for k in env.store.gets) == bool(classes)
    assert any("volumesnapshotcontents" in k for k in env.store.gets) == bool(contents)


def test_a_backup_whose_only_dependents_are_not_synced_is_not_marked() -> None:
    env = Env()
    env.bucket.put_backup("b1", vsclasses=[stored_vsclass("class-a")])

    env.sync(csi=True, profile=VeleroProfile((1, 18, 0)))

    assert env.cluster.writes == [
        ("create", "backups", "b1"),
        ("patch", "backupstoragelocations", "default"),
    ]


HOOKS = {"resources": [{"name": "freeze", "pre": [{"exec": {"command": ["fsfreeze"]}}]}]}


@pytest.mark.parametrize(
    ("version", "hooks"), [((1, 15, 2), HOOKS), ((1, 18, 0), HOOKS), ((1, 18, 3), {})]
)
def test_hooks_cleared_from_1_18_3(version: tuple[int, int, int], hooks: Obj) -> None:
    env = Env()
    stored = stored_backup("b1")
    stored["spec"]["hooks"] = HOOKS
    env.bucket.put_backup(stored)

    env.sync(profile=VeleroProfile(version))

    assert env.backups()["b1"]["spec"]["hooks"] == hooks
