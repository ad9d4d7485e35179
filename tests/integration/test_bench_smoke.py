"""The benchmark's code path at a tiny N: control plane with an audit log, MinIO behind
toxiproxy, seeding, the real Velero's own sync, every measured case of the worker, the
counts, the report and the plot.

The full benchmark (``make bench``) is not part of ``make test``; this keeps it working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import shards
from bench.__main__ import main
from bench.run import (
    CEILING,
    FULL,
    SEQUENTIAL,
    STEADY,
    VELERO,
    VELERO_LIMITS,
    WRITE_CEILING,
)
from harness.tools import ToolUnavailable, tool_path
from harness.velero import VeleroUnavailable, aws_plugin_binary, pinned_versions, velero_binary
from tests.conftest import in_ci

pytestmark = [pytest.mark.integration]

N = 20
LISTING_N = 30
# Velero's first pass over 20 backups takes a few seconds; a broken one fails fast.
VELERO_TIMEOUT = 60


def _unavailable(message: str) -> None:
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def bench_tools() -> None:
    """toxiproxy and MinIO, built from their Go modules (CI builds them beforehand: make
    bench-tools)."""
    try:
        for name in ("toxiproxy", "minio"):
            tool_path(name, build=not in_ci())
    except ToolUnavailable as exc:
        _unavailable(f"benchmark tools unavailable: {exc}")


@pytest.fixture(scope="module")
def tools(bench_tools: None) -> None:
    """And the real Velero with its AWS plugin (make velero-tools)."""
    try:
        velero_binary(pinned_versions()[0], build=not in_ci())
        aws_plugin_binary(build=not in_ci())
    except VeleroUnavailable as exc:
        _unavailable(f"Velero unavailable: {exc}")


def test_benchmark_smoke(tools: None, tmp_path: Path) -> None:
    code = main(
        [
            "--sizes",
            str(N),
            "--steady-sizes",
            str(LISTING_N),
            "--sequential-sizes",
            str(N),
            "--repeat",
            "1",
            "--no-large-files",
            "--latency-ms",
            "5",
            "--velero-timeout",
            str(VELERO_TIMEOUT),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "benchmark.json").read_text())
    rows = {(m["case"], m["n"]): m for m in results["measurements"]}
    assert set(rows) == {
        (VELERO, N),
        (CEILING, N),
        (WRITE_CEILING, N),
        (FULL, N),
        (STEADY, N),
        (VELERO_LIMITS, N),
        (SEQUENTIAL, N),
        (STEADY, LISTING_N),
    }
    assert results["plan"]["velero"] == pinned_versions()[0]

    # Counted by the servers: 1 + 2 creates per backup and no patch of its own (the location's
    # stamp says it is complete), 2 GETs per backup. The write ceiling is the per-backup mark
    # design it replaced: a patch per backup.
    creates = {"create backups": N, "create podvolumebackups": 2 * N}
    assert {k: v for k, v in rows[(CEILING, N)]["api"].items() if k.startswith("create ")} == (
        creates
    )
    assert rows[(WRITE_CEILING, N)]["api"]["patch backups"] == N
    assert rows[(CEILING, N)]["storeRequests"] == 0
    for case in (FULL, SEQUENTIAL, VELERO_LIMITS):
        row = rows[(case, N)]
        assert row["api"]["create backups"] == N, case
        assert row["api"]["create podvolumebackups"] == 2 * N, case
        assert "patch backups" not in row["api"], case
        # N is below worker.stamps.STAMP_BATCH: the status patch is the only stamp
        assert row["api"]["patch backupstoragelocations"] == 1, case
        assert row["store"]["getobject"] == 2 * N, case
        assert row["store"]["listobjectsv2"] == 1, case
    assert rows[(SEQUENTIAL, N)]["settings"]["concurrency"] == 1

    # The limits as run: nothing given, so no client-side limit (this API server has API
    # Priority and Fairness), for the worker and the ceiling alike; Velero's 100/100 when
    # given.
    for case in (FULL, CEILING, SEQUENTIAL):
        settings = rows[(case, N)]["settings"]
        assert settings["kubeQps"] is None and settings["kubeBurst"] is None, case
        assert settings["apiRateLimit"]["qps"] == 0, (case, settings)
    limited = rows[(VELERO_LIMITS, N)]["settings"]
    assert (limited["kubeQps"], limited["kubeBurst"]) == (100, 100)
    assert limited["apiRateLimit"]["qps"] == 100

    # Velero's own sync: the real server created the same objects through the same audited
    # ServiceAccount, reading each backup's two files with a HEAD and a GET each.
    velero = rows[(VELERO, N)]
    assert velero["api"]["create backups"] == N
    assert velero["api"]["create podvolumebackups"] == 2 * N
    assert velero["store"]["getobject"] == 2 * N
    assert velero["store"]["headobject"] >= 2 * N
    assert 0 < velero["seconds"] < VELERO_TIMEOUT
    assert velero["settings"]["serverStartSeconds"] > 0
    assert (velero["settings"]["kubeQps"], velero["settings"]["kubeBurst"]) == (100, 100)
    assert velero["cpuSeconds"] > 0 and velero["peakRssMiB"] > 0

    # Steady state: listings and the status patch, no per-backup request.
    for n in (N, LISTING_N):
        steady = rows[(STEADY, n)]
        assert steady["creates"] == 0
        assert steady["store"] == {"listobjectsv2": 1}
        assert steady["api"]["list backups"] == 1
        assert steady["api"]["patch backupstoragelocations"] == 1
        assert not any(kind.startswith("create ") for kind in steady["api"])
        # Exactly the budget: list pages and the status patch, and once per run the
        # probe for API Priority and Fairness and the Velero Deployment that
        # --velero-version auto reads.
        assert set(steady["api"]) == {
            "get /version",
            "get deployments",
            "list backupstoragelocations",
            "list backups",
            "patch backupstoragelocations",
        }
        assert steady["api"]["get deployments"] == 1
        assert steady["api"]["get /version"] == 1
        assert 0 < steady["peakRssMiB"] < 200

    report = (tmp_path / "benchmark.md").read_text()
    assert "## Against Velero's own sync" in report
    assert "| N | run | limits | wall (s) | vs Velero" in report
    assert "## Targets" in report
    # The targets at N = 1,000 and 5,000 are listed, as not measured at this N.
    assert "≥ 3.5x faster than Velero's own sync | not measured" in report
    assert "no per-backup request" in report
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shards_benchmark_smoke(bench_tools: None, tmp_path: Path) -> None:
    """``make bench-shards`` at 4 locations of 3 backups, one worker against 2 shards."""
    locations, backups = 4, 3
    code = shards.main(
        [
            *("--locations", str(locations), "--backups", str(backups), "--shards", "1,2"),
            *("--repeat", "1", "--latency-ms", "5", "--out", str(tmp_path)),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "benchmark-shards.json").read_text())
    rows = {m["shards"]: m for m in results["measurements"]}
    assert set(rows) == {1, 2}
    names = [shards.location_name(i) for i in range(locations)]
    for count, row in rows.items():
        assert row["verified"] == {
            "locationsSyncedOnce": locations,
            "lastSyncedTime": locations,
            "backups": locations * backups,
            "podVolumeBackups": 2 * locations * backups,
        }
        # One worker per shard, each listing the locations once and taking its own.
        assert [w["shard"] for w in row["workers"]] == list(range(count))
        assert sorted(n for w in row["workers"] for n in w["locations"]) == names
        assert row["api"]["list backupstoragelocations"] == count
        assert row["seconds"] == max(w["seconds"] for w in row["workers"])
        assert row["cpuSeconds"] > 0 and row["serverCpuSeconds"]["kube-apiserver"] > 0
    split = [len(w["locations"]) for w in rows[2]["workers"]]
    assert sorted(split) == [1, 3]  # the stable hash of tenant-00..03, not an even split
    # Sharding adds no write: the same creates and status patches as one worker.
    writes = [
        {k: v for k, v in row["api"].items() if k.split()[0] in ("create", "patch")}
        for row in rows.values()
    ]
    assert writes[0] == writes[1]
    assert writes[0]["create backups"] == locations * backups
    assert writes[0]["patch backupstoragelocations"] == locations

    report = (tmp_path / "benchmark-shards.md").read_text()
    assert "| shards | wall (s) | vs 1 shard | per-shard wall (s) | locations per shard" in report
    assert "| 1 / 3 |" in report or "| 3 / 1 |" in report
    assert "the largest shard held 3 of 4 locations (75%, 50% would be even)" in report
