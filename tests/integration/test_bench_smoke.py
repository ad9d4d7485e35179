"""The benchmark's code path at a tiny N: control plane with an audit log, MinIO behind
toxiproxy, seeding, every measured case, the counts, the report and the plot.

The full benchmark (``make bench``) is not part of ``make test``; this keeps it working.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.run import CEILING, FULL, POLITE, SEQUENTIAL, STEADY, WRITE_CEILING
from harness.tools import ToolUnavailable, tool_path
from tests.conftest import in_ci

pytestmark = [pytest.mark.integration]

N = 20
LISTING_N = 30


@pytest.fixture(scope="module")
def tools() -> None:
    """toxiproxy and MinIO, built from their Go modules (CI builds them beforehand)."""
    try:
        for name in ("toxiproxy", "minio"):
            tool_path(name, build=not in_ci())
    except ToolUnavailable as exc:
        if in_ci():
            pytest.fail(f"benchmark tools unavailable: {exc}", pytrace=False)
        pytest.skip(f"benchmark tools unavailable: {exc}")


def test_benchmark_smoke(tools: None, tmp_path: Path) -> None:
    code = main(
        [
            "--sizes",
            str(N),
            "--steady-sizes",
            str(LISTING_N),
            "--polite-sizes",
            str(N),
            "--repeat",
            "1",
            "--no-large-files",
            "--latency-ms",
            "5",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "benchmark.json").read_text())
    rows = {(m["case"], m["n"]): m for m in results["measurements"]}
    assert set(rows) == {
        (CEILING, N),
        (WRITE_CEILING, N),
        (FULL, N),
        (STEADY, N),
        (SEQUENTIAL, N),
        (POLITE, N),
        (STEADY, LISTING_N),
    }

    # Counted by the servers: 1 + 2 creates per backup and no patch of its own (the location's
    # stamp says it is complete), 2 GETs per backup. The write ceiling is the per-backup mark
    # design it replaced: a patch per backup.
    creates = {"create backups": N, "create podvolumebackups": 2 * N}
    assert rows[(CEILING, N)]["api"] == creates
    assert rows[(WRITE_CEILING, N)]["api"] == {**creates, "patch backups": N}
    assert rows[(CEILING, N)]["storeRequests"] == 0
    for case in (FULL, SEQUENTIAL, POLITE):
        row = rows[(case, N)]
        assert row["api"]["create backups"] == N, case
        assert row["api"]["create podvolumebackups"] == 2 * N, case
        assert "patch backups" not in row["api"], case
        # N is below worker.sync.STAMP_BATCH: the status patch is the only stamp
        assert row["api"]["patch backupstoragelocations"] == 1, case
        assert row["store"]["getobject"] == 2 * N, case
        assert row["store"]["listobjectsv2"] == 1, case
    assert rows[(SEQUENTIAL, N)]["settings"]["concurrency"] == 1

    # Steady state: listings and the status patch, no per-backup request.
    for n in (N, LISTING_N):
        steady = rows[(STEADY, n)]
        assert steady["creates"] == 0
        assert steady["store"] == {"listobjectsv2": 1}
        assert steady["api"]["list backups"] == 1
        assert steady["api"]["patch backupstoragelocations"] == 1
        assert not any(kind.startswith("create ") for kind in steady["api"])
        # Exactly the budget: list pages and the status patch, and once per run the
        # Velero Deployment that --velero-version auto reads.
        assert set(steady["api"]) == {
            "get deployments",
            "list backupstoragelocations",
            "list backups",
            "patch backupstoragelocations",
        }
        assert steady["api"]["get deployments"] == 1
        assert 0 < steady["peakRssMiB"] < 200

    report = (tmp_path / "benchmark.md").read_text()
    assert "| N | run | limits | wall (s)" in report
    assert "## Targets" in report
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
