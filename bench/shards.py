"""``python -m bench.shards``: many locations synced by one worker, and by the pods of an
Indexed Job, each a shard of them; writes docs/benchmark-shards.{md,json}.

make bench-shards                         # the documented run: 40 locations x 500 backups,
                                          # 1 worker against 4 shards, best of 2
python -m bench.shards --locations 4 --backups 20 --repeat 1 --out /tmp/s   # a smoke run

The world is the main benchmark's (bench/env.py): a real kube-apiserver + etcd, MinIO
behind toxiproxy adding the same latency to every store response. Each location is its own
prefix of one bucket holding its own backups (distinct names: they all land in one
namespace). A run of K shards starts K workers at once with ``--shards K`` and
``JOB_COMPLETION_INDEX`` 0..K-1, as the pods of an Indexed Job; its wall time runs from the
first spawn until the last of them exits. Every run syncs into a fresh namespace, and the
previous run's objects are deleted, and gone, before it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.dataset import seed_bucket
from bench.env import BenchEnv, cpu_seconds
from bench.report import best
from bench.run import DEFAULT_LIMITS, BenchFailure, log, machine, worker_argv

DOCS = Path(__file__).resolve().parent.parent / "docs"
NAME = "benchmark-shards"
# The objects a run leaves in its namespace, deleted before the next run starts.
SYNCED = ("podvolumebackups", "backups")


def location_name(index: int) -> str:
    return f"tenant-{index:02d}"


@dataclass
class ShardsPlan:
    locations: int = 40
    backups: int = 500  # per location
    shards: list[int] = field(default_factory=lambda: [1, 4])
    repeat: int = 2
    latency_ms: int = 10
    pod_volume_backups: int = 2
    seed_threads: int = 16
    timeout: float = 3600.0

    @property
    def names(self) -> list[str]:
        return [location_name(i) for i in range(self.locations)]

    @property
    def total(self) -> int:
        return self.locations * self.backups


@dataclass
class Exit:
    """One worker of a run: its exit, when it came (from the run's start), its CPU time."""

    code: int
    seconds: float
    cpu_seconds: float
    stdout: str
    stderr: str


def run_together(
    commands: list[tuple[list[str], dict[str, str]]], log_dir: Path, tag: str, timeout: float
) -> list[Exit]:
    """Start every command at once and wait for all; each reaped by its own thread blocked in
    ``wait4`` (no polling that would take CPU from the measured processes). A command still
    running after ``timeout`` is killed."""
    ended: list[tuple[int, float, float]] = [(-1, 0.0, 0.0)] * len(commands)
    with ExitStack() as files:
        started = time.monotonic()
        procs = []
        for i, (argv, env) in enumerate(commands):
            out = files.enter_context(open(log_dir / f"{tag}-{i}.out", "wb"))
            err = files.enter_context(open(log_dir / f"{tag}-{i}.err", "wb"))
            procs.append(
                subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
            )

        def reap(i: int, proc: subprocess.Popen[bytes]) -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
            ended[i] = (proc.returncode, time.monotonic() - started, cpu)

        threads = [threading.Thread(target=reap, args=item) for item in enumerate(procs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, started + timeout - time.monotonic()))
            if thread.is_alive():
                for proc in procs:
                    if proc.returncode is None:
                        proc.kill()
                thread.join()
    return [
        Exit(
            code,
            seconds,
            cpu,
            (log_dir / f"{tag}-{i}.out").read_text(errors="replace"),
            (log_dir / f"{tag}-{i}.err").read_text(errors="replace"),
        )
        for i, (code, seconds, cpu) in enumerate(ended)
    ]


def run_plan(plan: ShardsPlan, log_dir: Path | None = None) -> dict[str, Any]:
    """Seed, then per repetition one run per shard count; the results document."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="backup-sync-bench-shards-"))
    log(f"child logs in {log_dir}")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with BenchEnv(latency_ms=plan.latency_ms) as env:
        log(f"control plane up, minio behind toxiproxy (+{plan.latency_ms} ms)")
        t = time.monotonic()
        objects = 0
        for i, name in enumerate(plan.names):
            indexes = range(i * plan.backups, (i + 1) * plan.backups)
            objects += seed_bucket(
                env.put,
                name,
                indexes,
                pod_volume_backups=plan.pod_volume_backups,
                threads=plan.seed_threads,
            )
        seeding = time.monotonic() - t
        log(f"seeded {plan.total} backups ({objects} objects) in {seeding:.1f}s")
        previous = ""
        for sample in range(1, plan.repeat + 1):
            # Every other repetition in reverse (1 4 4 1): a machine that drifts during
            # the benchmark then weighs on every shard count alike.
            order = plan.shards if sample % 2 else plan.shards[::-1]
            for shards in order:
                if previous:
                    t = time.monotonic()
                    env.drain(previous, SYNCED)
                    env.delete_namespace(previous)
                    log(f"emptied {previous} in {time.monotonic() - t:.1f}s")
                previous = f"shards-{shards}-{sample}"
                rows.append(_run(env, plan, previous, shards, sample, log_dir))
    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "plan": {
            "store": "minio",
            "latencyMs": plan.latency_ms,
            "locations": plan.locations,
            "backupsPerLocation": plan.backups,
            "podVolumeBackupsPerBackup": plan.pod_volume_backups,
            "shards": plan.shards,
            "repeat": plan.repeat,
            **DEFAULT_LIMITS.as_settings(),
        },
        "seedingSeconds": round(seeding, 1),
        "totalSeconds": round(time.monotonic() - started, 1),
        "measurements": rows,
    }


def _run(
    env: BenchEnv, plan: ShardsPlan, namespace: str, shards: int, sample: int, log_dir: Path
) -> dict[str, Any]:
    """One run of ``shards`` workers into a fresh ``namespace`` holding every location,
    measured, then checked."""
    env.control_plane.create_namespace(namespace)
    for i, name in enumerate(plan.names):
        env.add_location(namespace, name, name, default=i == 0)
    argv = worker_argv(env, namespace, DEFAULT_LIMITS)
    if shards == 1:
        commands = [(argv, env.child_env())]
    else:
        commands = [
            ([*argv, "--shards", str(shards)], {**env.child_env(), "JOB_COMPLETION_INDEX": str(i)})
            for i in range(shards)
        ]
    pids = env.server_pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    audit = env.audit_offset()
    store_before = env.store_counts()
    exits = run_together(commands, log_dir, namespace, plan.timeout)
    api = env.api_counts(audit)
    store = env.store_counts() - store_before
    server_cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    workers = [_worker(index, shards, ex) for index, ex in enumerate(exits)]
    row = {
        "case": f"{shards} shard{'s' if shards > 1 else ''}",
        "n": plan.total,
        "shards": shards,
        "sample": sample,
        "seconds": round(max(ex.seconds for ex in exits), 3),
        "workers": workers,
        "cpuSeconds": round(sum(ex.cpu_seconds for ex in exits), 2),
        "serverCpuSeconds": {k: round(v, 2) for k, v in sorted(server_cpu.items())},
        "creates": sum(v for k, v in api.items() if k.startswith("create ")),
        "apiRequests": sum(api.values()),
        "api": dict(sorted(api.items())),
        "storeRequests": sum(store.values()),
        "store": dict(sorted(store.items())),
        "verified": _verify(env, plan, namespace, workers, exits),
    }
    log(
        f"{row['case']} #{sample}: {row['seconds']:.1f}s (shards "
        + ", ".join(f"{w['seconds']:.1f}s/{len(w['locations'])} loc" for w in workers)
        + f"), worker CPU {row['cpuSeconds']:.1f}s, servers "
        f"{sum(server_cpu.values()):.1f}s, {row['creates']} creates"
    )
    return row


def _worker(index: int, shards: int, ex: Exit) -> dict[str, Any]:
    try:
        summary = json.loads(ex.stdout)
    except ValueError:
        raise BenchFailure(
            f"shard {index}/{shards}: exit {ex.code}, no JSON summary: {ex.stderr[-800:]!r}"
        ) from None
    locations = summary["locations"]
    return {
        "shard": index,
        "exitCode": ex.code,
        "seconds": round(ex.seconds, 3),
        "cpuSeconds": round(ex.cpu_seconds, 2),
        "locations": [loc["location"] for loc in locations],
        "synced": [loc["location"] for loc in locations if loc["outcome"] == "synced"],
        "statusPatched": [loc["location"] for loc in locations if loc["statusPatched"]],
        "created": sum(loc["created"] for loc in locations),
        "podVolumeBackupsCreated": sum(loc["podVolumeBackupsCreated"] for loc in locations),
        "errors": [e for loc in locations for e in loc["errors"]][:5],
        "summaryShard": summary["shard"],
    }


def _verify(
    env: BenchEnv,
    plan: ShardsPlan,
    namespace: str,
    workers: list[dict[str, Any]],
    exits: list[Exit],
) -> dict[str, int]:
    """Every location synced and status-patched by exactly one worker, each worker the shard
    it was started as, and the cluster holding every object once; BenchFailure otherwise
    (the wall time of a run that did less would mean nothing)."""
    problems = []
    for w, ex in zip(workers, exits, strict=True):
        want = None if len(workers) == 1 else {"index": w["shard"], "count": len(workers)}
        if w["exitCode"] != 0 or w["errors"] or w["summaryShard"] != want:
            problems.append(
                f"shard {w['shard']}: exit {w['exitCode']}, shard {w['summaryShard']}, "
                f"errors {w['errors']}, stderr {ex.stderr[-300:]!r}"
            )
    everyone = Counter(plan.names)
    for key in ("locations", "synced", "statusPatched"):
        seen = Counter(name for w in workers for name in w[key])
        if seen != everyone:
            problems.append(f"{key}: {sorted((seen - everyone) + (everyone - seen))} off")
    stamped = sum(1 for name in plan.names if env.last_synced(namespace, name))
    counts = {
        "locationsSyncedOnce": sum(
            1 for n in plan.names if sum(n in w["synced"] for w in workers) == 1
        ),
        "lastSyncedTime": stamped,
        "backups": env.count_quick(namespace, "backups"),
        "podVolumeBackups": env.count_quick(namespace, "podvolumebackups"),
    }
    want = {
        "locationsSyncedOnce": plan.locations,
        "lastSyncedTime": plan.locations,
        "backups": plan.total,
        "podVolumeBackups": plan.total * plan.pod_volume_backups,
    }
    problems += [f"{k}: {counts[k]}, want {v}" for k, v in want.items() if counts[k] != v]
    if problems:
        raise BenchFailure(f"{namespace}: " + "; ".join(problems))
    return counts


# -- the report --------------------------------------------------------------------------


def _servers(row: dict[str, Any], *names: str) -> float:
    return float(sum(row["serverCpuSeconds"].get(name, 0.0) for name in names))


def _all_cpu(row: dict[str, Any]) -> float:
    return float(row["cpuSeconds"]) + _servers(row, *row["serverCpuSeconds"])


def table(results: dict[str, Any]) -> list[str]:
    """The best run of each shard count, and what bounds it."""
    rows = sorted(best(results["measurements"]), key=lambda r: r["shards"])
    cores = results["machine"]["cores"] or 1
    one = next((r for r in rows if r["shards"] == 1), None)
    lines = [
        "| shards | wall (s) | vs 1 shard | per-shard wall (s) | locations per shard "
        "| worker CPU (s) | API server + etcd CPU (s) | MinIO + toxiproxy CPU (s) "
        f"| all CPU (s) | busy (cores of {cores}) | CPU floor (s) | all runs (s) |",
        "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        workers = r["workers"]
        speedup = f"{one['seconds'] / r['seconds']:.2f}x" if one else "-"
        all_cpu = _all_cpu(r)
        lines.append(
            f"| {r['shards']} | {r['seconds']:.1f} | {speedup} | "
            + " / ".join(f"{w['seconds']:.1f}" for w in workers)
            + " | "
            + " / ".join(str(len(w["locations"])) for w in workers)
            + f" | {r['cpuSeconds']:.1f} | {_servers(r, 'kube-apiserver', 'etcd'):.1f} | "
            f"{_servers(r, 'minio', 'toxiproxy'):.1f} | {all_cpu:.1f} | "
            f"{all_cpu / r['seconds']:.2f} | {all_cpu / cores:.1f} | "
            + ", ".join(f"{s:.1f}" for s in r["samples"])
            + " |"
        )
    return lines


def reading(results: dict[str, Any]) -> list[str]:
    """What bounds each shard count's wall time, from the numbers: the CPU floor (all the
    CPU spent, over the machine's cores) and the largest shard's share of the locations."""
    rows = sorted(best(results["measurements"]), key=lambda r: r["shards"])
    cores = results["machine"]["cores"] or 1
    locations = results["plan"]["locations"]
    out = []
    for r in rows:
        all_cpu = _all_cpu(r)
        floor = all_cpu / cores
        text = (
            f"- **{r['case']}:** {r['seconds']:.1f} s; everything on the machine spent "
            f"{all_cpu:.0f} CPU-s ({r['cpuSeconds']:.0f} in the workers), so on {cores} cores "
            f"the run could not take less than {floor:.0f} s ({floor / r['seconds']:.0%} of "
            f"its wall time)"
        )
        if r["shards"] > 1:
            largest = max(r["workers"], key=lambda w: len(w["locations"]))
            text += (
                f"; the largest shard held {len(largest['locations'])} of {locations} "
                f"locations ({len(largest['locations']) / locations:.0%}, "
                f"{1 / r['shards']:.0%} would be even) and exited after {largest['seconds']:.1f} s"
            )
        out.append(text + ".")
    return out


def markdown(results: dict[str, Any]) -> str:
    plan, m = results["plan"], results["machine"]
    total = plan["locations"] * plan["backupsPerLocation"]
    pvbs = plan["podVolumeBackupsPerBackup"]
    return "\n".join(
        [
            "# backup-sync benchmark: one worker against the shards of an Indexed Job",
            "",
            f"Generated {results['generated']} by `make bench-shards` "
            f"({results['totalSeconds']:.0f} s in all, seeding included).",
            "",
            f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memoryGiB']} GiB, Linux "
            f"{m['kernel']}; kube-apiserver {m['kubeApiserver']}, etcd {m['etcd']}, MinIO "
            f"{m['minio']} behind toxiproxy {m['toxiproxy']} adding **{plan['latencyMs']} ms** "
            "to every store response, all on that one machine, sharing its cores.",
            "",
            f"**{plan['locations']} locations x {plan['backupsPerLocation']:,} backups** "
            f"({total:,} backups, each a realistic `velero-backup.json` and a pod volume backup "
            f"file with {pvbs} entries: {(1 + pvbs) * total:,} creates per run). Each location "
            "is its own prefix of one bucket. 1 shard: one worker over every location; "
            "K shards: K workers started at once with `--shards K` and `JOB_COMPLETION_INDEX` "
            "0..K-1, as the pods of an Indexed Job; wall time from the first spawn until the "
            "last exits. Every worker runs the shipped defaults (`--concurrency "
            f"{plan['concurrency']}`, no client-side limit under API Priority and Fairness). "
            "Each run syncs into a fresh namespace, the previous run's objects deleted and "
            f"gone before it starts; {plan['repeat']} runs of each, interleaved (every other "
            "repetition in reverse order), the fastest shown. CPU is user + system seconds; "
            "busy is all CPU over the wall time; the CPU floor is all CPU over the cores, the "
            "least wall time that CPU allows.",
            "",
            *table(results),
            "",
            "Checked in every run: each worker exited 0 as the shard it was started as, and "
            f"every location was synced and status-patched by exactly one worker: "
            f"{plan['locations']} `lastSyncedTime` stamps, {total:,} Backups and "
            f"{pvbs * total:,} pod volume backups in the namespace.",
            "",
            *reading(results),
            "",
        ]
    )


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--locations", type=int, default=40, help="BackupStorageLocations (default 40)")
    add("--backups", type=int, default=500, help="backups per location (default 500)")
    add("--shards", type=_counts, default=[1, 4], help="shard counts to run (default 1,4)")
    add(
        "--repeat",
        type=int,
        default=2,
        help="runs of each shard count; the best counts (default 2)",
    )
    add("--latency-ms", type=int, default=10, help="added to every store response (default 10)")
    add("--out", type=Path, default=DOCS, help=f"where {NAME}.md, .json go (default docs/)")
    add("--report-only", type=Path, metavar="JSON", help="run nothing: report a results file")
    args = parser.parse_args(argv)
    plan = ShardsPlan(
        locations=args.locations,
        backups=args.backups,
        shards=args.shards,
        repeat=args.repeat,
        latency_ms=args.latency_ms,
    )
    try:
        results = json.loads(args.report_only.read_text()) if args.report_only else run_plan(plan)
    except BenchFailure as exc:
        log(f"FAILED: {exc}")
        return 1
    report = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{NAME}.md").write_text(report)
    log(f"wrote {args.out / NAME}.md, .json")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
