"""Many locations split over the pods of an Indexed Job: four real CLIs run at once as shards
0-3 of 40 locations on the real control plane; every location is synced by exactly one of
them, and the guard and Events per location are what one run gives."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.seed import SeedBackup
from tests.integration.env import SyncEnv

pytestmark = pytest.mark.integration

LOCATIONS = [f"tenant-{i:02d}" for i in range(40)]
SHARDS = 4


def test_four_shards_sync_every_location_exactly_once(
    control_plane: ControlPlane, velero_namespace: str, moto: Any
) -> None:
    env = SyncEnv(control_plane, velero_namespace, moto)
    for name in LOCATIONS:
        env.add_location(name, default=name == "tenant-07", prefix=name)
        env.seed(SeedBackup(f"{name}-b1"), prefix=name)
        env.add_backup(f"{name}-orphan", name)  # one orphan each: deleted once
    procs = []
    for index in range(SHARDS):
        argv, run_env = env.command("--shards", str(SHARDS))
        procs.append(
            subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**run_env, "JOB_COMPLETION_INDEX": str(index)},
            )
        )
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out))

    synced = Counter(
        loc["location"] for s in summaries for loc in s["locations"] if loc["outcome"] == "synced"
    )
    assert sorted(synced) == LOCATIONS  # every location ...
    assert set(synced.values()) == {1}  # ... by exactly one shard
    assert sorted(s["shard"]["index"] for s in summaries) == list(range(SHARDS))
    for summary in summaries:
        mine = [loc["location"] for loc in summary["locations"]]
        assert mine, f"shard {summary['shard']} got no location"
        if "tenant-07" in mine:
            assert mine[0] == "tenant-07"  # default first within its shard
        for loc in summary["locations"]:
            assert (loc["created"], loc["orphansDeleted"]) == (1, 1), loc
    backups = env.list("backups")
    assert sorted(backups) == sorted(f"{n}-b1" for n in LOCATIONS)
    for name in LOCATIONS:
        assert env.location(name)["status"]["lastSyncedTime"]
    events = env.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{env.namespace}/events")["items"]
    synced_events = Counter(
        e["regarding"]["name"] for e in events if e["reason"] == "BackupsSynced"
    )
    assert synced_events == Counter(dict.fromkeys(LOCATIONS, 1))
