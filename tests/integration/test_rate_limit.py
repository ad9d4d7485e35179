"""The client-side limit towards the API server, chosen as client-go's consumers now choose
it: none when the server has API Priority and Fairness (it protects itself and answers 429
with Retry-After), Velero's own 100 QPS / burst 100 without it, the flags when given. On the
real kube-apiserver, with APF on (its default) and off."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import SeedBackup
from tests.conftest import running_control_plane
from tests.integration.env import SyncEnv

pytestmark = pytest.mark.integration


def synced(env: SyncEnv, *args: str) -> Any:
    env.seed(SeedBackup("b1", pod_volume_backups=1))
    if "default" not in env.list("backupstoragelocations"):
        env.add_location("default", default=True)
    result = env.run("--force", *args)
    assert result.code == 0, result.stderr
    assert (
        result.location("default")["created"]
        + result.location("default")["skipped"].get("already exists", 0)
        == 1
    )
    return result


def test_with_priority_and_fairness_no_client_side_limit(
    control_plane: ControlPlane, velero_namespace: str, moto: Any
) -> None:
    env = SyncEnv(control_plane, velero_namespace, moto)

    limit = synced(env).summary["apiRateLimit"]

    assert limit["qps"] == 0
    assert "API Priority and Fairness" in limit["why"]
    text = env.run("--force", "--dry-run", "--log-format", "text").stdout
    assert "API rate limit: unlimited (the API server has API Priority and Fairness" in text


def test_explicit_flags_win(control_plane: ControlPlane, velero_namespace: str, moto: Any) -> None:
    env = SyncEnv(control_plane, velero_namespace, moto)

    limit = synced(env, "--kube-qps", "20", "--kube-burst", "30").summary["apiRateLimit"]

    assert (limit["qps"], limit["burst"]) == (20, 30)
    assert limit["why"] == "--kube-qps/--kube-burst"


@pytest.fixture(scope="module")
def control_plane_without_apf() -> Iterator[ControlPlane]:
    yield from running_control_plane(["--enable-priority-and-fairness=false"])


def test_without_priority_and_fairness_velero_s_limits(
    control_plane_without_apf: ControlPlane, moto: Any
) -> None:
    namespace = f"velero-{uuid.uuid4().hex[:10]}"
    control_plane_without_apf.create_namespace(namespace)
    env = SyncEnv(control_plane_without_apf, namespace, moto)

    limit = synced(env).summary["apiRateLimit"]

    assert (limit["qps"], limit["burst"]) == (100, 100)
    assert "no API Priority and Fairness headers" in limit["why"]
