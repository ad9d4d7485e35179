"""The benchmark plan: per N, Velero's own sync (the real ``velero server``), the API-create
ceiling, a full sync into an empty namespace with the worker's shipped defaults, a
steady-state run over the result, the worker at Velero's own client limits and the
sequential reference (``--concurrency 1``), all in one environment so the ratios hold on a
noisy machine; then listing-only steady-state runs over large N, whose cluster side is put
in place directly (not measured)."""

from __future__ import annotations

import gzip
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.dataset import backup_name, seed_backup, seed_bucket
from bench.env import BenchEnv
from bench.measure import Measurement, measured, run_child
from bench.velero import VeleroCaseError, VeleroTools, prepare, sync_once
from harness.controlplane import read_versions
from harness.seed import backup_document, pod_volume_backup_documents
from worker.ratelimit import VELERO_BURST, VELERO_QPS
from worker.settings import Settings

DEFAULTS = Settings(namespace="velero")

VELERO = "Velero's own sync"
FULL = "full sync"
VELERO_LIMITS = "full sync, Velero's limits"
SEQUENTIAL = "full sync, --concurrency 1"
CEILING = "API-create ceiling"
# The creates and a patch per backup: the per-backup in-progress mark that the run stamps
# replaced (docs/operations.md), kept as the candidate it was measured against.
WRITE_CEILING = "API-write ceiling"
STEADY = "steady state"


@dataclass(frozen=True, slots=True)
class Limits:
    """``--concurrency``, ``--kube-qps``, ``--kube-burst`` of one run."""

    concurrency: int
    qps: float | None  # None: not given, the worker's own choice (worker.ratelimit)
    burst: int | None

    def as_settings(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "kubeQps": self.qps, "kubeBurst": self.burst}

    def argv(self) -> list[str]:
        """The same three options of the worker and of the ceiling tool; a limit that is
        None is left out, as a user running the defaults leaves it out."""
        argv = ["--concurrency", str(self.concurrency)]
        if self.qps is not None:
            argv += ["--kube-qps", f"{self.qps:g}"]
        if self.burst is not None:
            argv += ["--kube-burst", str(self.burst)]
        return argv


DEFAULT_LIMITS = Limits(DEFAULTS.concurrency, DEFAULTS.kube_qps, DEFAULTS.kube_burst)
# Velero's own client limits (its server's --client-qps / --client-burst defaults).
VELERO_CLIENT_LIMITS = Limits(DEFAULTS.concurrency, VELERO_QPS, VELERO_BURST)


@dataclass
class Plan:
    sizes: list[int] = field(default_factory=lambda: [1000, 5000])
    steady_sizes: list[int] = field(default_factory=lambda: [50000])
    velero: bool = True  # Velero's own sync at every N of ``sizes``
    velero_limits: bool = True  # the worker at Velero's client limits at every N
    sequential_sizes: list[int] | None = None  # N of the --concurrency 1 run; None: all
    write_ceiling: bool = True
    latency_ms: int = 10
    store: str = "minio"
    concurrency: int = DEFAULTS.concurrency
    kube_qps: float | None = DEFAULTS.kube_qps  # None: left out, as users leave it out
    kube_burst: int | None = DEFAULTS.kube_burst
    repeat: int = 2  # ceilings, full sync and steady state: best of this many
    large_files: bool = True  # peak RSS against the size of one metadata file
    pod_volume_backups: int = 2
    seed_threads: int = 16
    timeout: float = 3600.0
    velero_timeout: float | None = None  # None: velero_timeout_for(N)

    @property
    def limits(self) -> Limits:
        return Limits(self.concurrency, self.kube_qps, self.kube_burst)

    def settings(self) -> dict[str, Any]:
        return self.limits.as_settings()

    def sequential_at(self, n: int) -> bool:
        return self.sequential_sizes is None or n in self.sequential_sizes

    def velero_timeout_for(self, n: int) -> float:
        """How long Velero's first pass may take: ~80 ms per backup was measured at 10 ms
        latency; twice that, and a minute, in case a pass has to wait for the next one."""
        if self.velero_timeout is not None:
            return self.velero_timeout
        return 90.0 + n * (0.16 + 8 * self.latency_ms / 1000)


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def worker_argv(env: BenchEnv, namespace: str, limits: Limits) -> list[str]:
    return [
        sys.executable,
        "-m",
        "worker",
        "--kubeconfig",
        str(env.kubeconfig),
        "--namespace",
        namespace,
        "--force",
        "--log-format",
        "json",
        *limits.argv(),
    ]


def ceiling_argv(
    env: BenchEnv,
    namespace: str,
    count: int,
    *,
    pod_volume_backups: int,
    limits: Limits,
    mark: bool = False,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.ceiling",
        "--kubeconfig",
        str(env.kubeconfig),
        "--namespace",
        namespace,
        "--count",
        str(count),
        "--pod-volume-backups",
        str(pod_volume_backups),
        *limits.argv(),
        *(["--mark"] if mark else []),
    ]


class BenchFailure(RuntimeError):
    """A run did not do what the benchmark needs (so its figures would be meaningless)."""


def _summary(stdout: str, case: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(stdout)
    except ValueError:
        raise BenchFailure(f"{case}: no JSON summary on stdout: {stdout[-500:]!r}") from None
    return doc


def _check_worker(m: Measurement, stdout: str, created: int, pvbs: int) -> None:
    summary = _summary(stdout, m.case)
    m.summary = summary
    loc = summary["locations"][0]
    if m.exit_code != 0 or loc["created"] != created or loc["podVolumeBackupsCreated"] != pvbs:
        raise BenchFailure(
            f"{m.case} N={m.n}: exit {m.exit_code}, created {loc['created']} (want {created}), "
            f"pod volume backups {loc['podVolumeBackupsCreated']} (want {pvbs}), "
            f"errors {loc['errors'][:3]}"
        )
    if summary.get("apiRateLimit"):
        m.settings["apiRateLimit"] = summary["apiRateLimit"]


def run_plan(plan: Plan, log_dir: Path | None = None) -> dict[str, Any]:
    """Run everything; the results document (``measurements``, ``machine``, ``plan``)."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="backup-sync-bench-logs-"))
    log(f"child logs in {log_dir}")
    results: list[Measurement] = []
    started = time.monotonic()
    seeding: dict[str, float] = {}
    with BenchEnv(store=plan.store, latency_ms=plan.latency_ms) as env:
        log(f"control plane up, {plan.store} behind toxiproxy (+{plan.latency_ms} ms)")
        tools = None
        if plan.velero:
            try:
                tools = prepare(env)
            except VeleroCaseError as exc:
                raise BenchFailure(str(exc)) from exc
            log(f"Velero {tools.version} and its CRDs in place ({tools.binary})")
        for n in plan.sizes:
            results += _full_sync_cases(env, plan, n, log_dir, seeding, tools)
        for n in plan.steady_sizes:
            results += _listing_case(env, plan, n, log_dir, seeding)
        if plan.large_files:
            results += _large_file_cases(env, plan, log_dir)
    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "plan": {
            "store": plan.store,
            "latencyMs": plan.latency_ms,
            "podVolumeBackupsPerBackup": plan.pod_volume_backups,
            "repeat": plan.repeat,
            **({"velero": tools.version} if tools else {}),
            **plan.settings(),
        },
        "seedingSeconds": {k: round(v, 1) for k, v in seeding.items()},
        "totalSeconds": round(time.monotonic() - started, 1),
        "measurements": [m.as_dict() for m in results],
    }


def _seed(
    env: BenchEnv, plan: Plan, prefix: str, n: int, seeding: dict[str, float], **kw: Any
) -> None:
    t = time.monotonic()
    objects = seed_bucket(env.put, prefix, range(n), threads=plan.seed_threads, **kw)
    seeding[prefix] = time.monotonic() - t
    log(f"seeded {n} backups ({objects} objects) under {prefix}/ in {seeding[prefix]:.1f}s")


def _full_sync_cases(
    env: BenchEnv,
    plan: Plan,
    n: int,
    log_dir: Path,
    seeding: dict[str, float],
    tools: VeleroTools | None = None,
) -> list[Measurement]:
    """Per repetition the ceilings, then the worker (full sync, then steady state), each in a
    fresh namespace, interleaved so all see the same machine; after the first repetition the
    runs that take long and run once: Velero's own sync and the worker at Velero's limits;
    last the sequential reference."""
    prefix = f"n{n}"
    pvbs = plan.pod_volume_backups
    _seed(env, plan, prefix, n, seeding, pod_volume_backups=pvbs)
    limits = plan.limits
    out: list[Measurement] = []

    def run(
        case: str, sample: int, argv: list[str], run_limits: Limits = limits
    ) -> tuple[Measurement, str]:
        m, child = measured(env, case, n, argv, log_dir, tag=f"{sample}", timeout=plan.timeout)
        m.sample = sample
        m.settings = run_limits.as_settings()
        return m, child.stdout

    def full(case: str, sample: int, name: str, run_limits: Limits, steady: bool) -> None:
        ns = env.velero_namespace(f"{name}-{n}-{sample}", prefix)
        m, stdout = run(case, sample, worker_argv(env, ns, run_limits), run_limits)
        _check_worker(m, stdout, n, n * pvbs)
        out.append(_logged(m))
        if steady:
            m, stdout = run(STEADY, sample, worker_argv(env, ns, run_limits), run_limits)
            _check_worker(m, stdout, 0, 0)
            out.append(_logged(m))
        env.delete_namespace(ns)

    ceilings = [(CEILING, False)] + ([(WRITE_CEILING, True)] if plan.write_ceiling else [])
    for sample in range(1, plan.repeat + 1):
        for case, mark in ceilings:
            ns = env.velero_namespace(f"ceiling-{n}-{sample}-{int(mark)}", prefix)
            argv = ceiling_argv(env, ns, n, pod_volume_backups=pvbs, limits=limits, mark=mark)
            m, stdout = run(case, sample, argv)
            if m.exit_code != 0 or m.creates != n * (1 + pvbs):
                raise BenchFailure(f"{case} N={n}: exit {m.exit_code}, {m.creates} creates")
            limit = _summary(stdout, case).get("apiRateLimit")
            if limit:
                m.settings["apiRateLimit"] = limit
            out.append(_logged(m))
            env.delete_namespace(ns)

        full(FULL, sample, "full", limits, steady=True)

        if sample == 1 and tools is not None:
            out.append(_velero_case(env, plan, n, prefix, log_dir, tools))
        if sample == 1 and plan.velero_limits:
            full(VELERO_LIMITS, 1, "velero-limits", VELERO_CLIENT_LIMITS, steady=False)

    if plan.sequential_at(n):
        full(SEQUENTIAL, 1, "sequential", Limits(1, limits.qps, limits.burst), steady=False)
    return out


def _velero_case(
    env: BenchEnv, plan: Plan, n: int, prefix: str, log_dir: Path, tools: VeleroTools
) -> Measurement:
    ns = env.velero_namespace(f"velero-{n}", prefix)
    try:
        m = sync_once(
            env,
            tools,
            VELERO,
            n,
            ns,
            pod_volume_backups=plan.pod_volume_backups,
            log_dir=log_dir,
            timeout=plan.velero_timeout_for(n),
        )
    except VeleroCaseError as exc:
        raise BenchFailure(str(exc)) from exc
    _logged(m)
    log(
        f"{VELERO} N={n}: server start-up {m.settings['serverStartSeconds']:.2f}s before its "
        f"first pass (not in the wall time), {m.settings['spawnToSyncedSeconds']:.1f}s in all"
    )
    env.delete_namespace(ns)
    return m


def _listing_case(
    env: BenchEnv, plan: Plan, n: int, log_dir: Path, seeding: dict[str, float]
) -> list[Measurement]:
    """Steady state over ``n`` backups: the bucket holds their ``velero-backup.json`` (all a
    listing needs), the cluster already has them (created directly, as a sync would have)."""
    prefix = f"list{n}"
    _seed(env, plan, prefix, n, seeding, pod_volume_backups=0, metadata_only=True)
    ns = env.velero_namespace(f"steady-{n}", prefix)
    t = time.monotonic()
    populate = ceiling_argv(env, ns, n, pod_volume_backups=0, limits=Limits(32, 0, None))
    child = run_child(populate, log_dir, f"populate-{n}", plan.timeout, env.child_env())
    if child.code != 0:
        raise BenchFailure(f"populating {n} Backups failed: {child.stderr[-800:]}")
    seeding[f"cluster-{n}"] = time.monotonic() - t
    log(f"created {n} Backups in {ns} in {seeding[f'cluster-{n}']:.1f}s")
    limits = plan.limits
    out: list[Measurement] = []
    for sample in range(1, plan.repeat + 1):
        argv = worker_argv(env, ns, limits)
        m, child = measured(env, STEADY, n, argv, log_dir, tag=f"{sample}", timeout=plan.timeout)
        m.settings = plan.settings()
        _check_worker(m, child.stdout, 0, 0)
        m.sample = sample
        out.append(_logged(m))
    # Not deleted: tens of thousands of objects take longer to delete than the harness
    # waits, and the environment is torn down next anyway.
    return out


# (case, velero-backup.json padding, pod volume backups per list): a file of each size in
# every one of LARGE_FILE_BACKUPS backups, so that many are in flight at once.
LARGE_FILE_CASES = [
    ("velero-backup.json as Velero writes it", 0, 0),
    ("velero-backup.json 7 MiB (cap 8 MiB)", 7 * 2**20, 0),
    ("velero-backup.json 100 MiB (over the cap)", 100 * 2**20, 0),
    ("pod volume backups 16 MiB", 0, 14_800),
    ("pod volume backups 100 MiB (cap 128 MiB)", 0, 92_000),
]
LARGE_FILE_BACKUPS = 4


def _large_file_cases(env: BenchEnv, plan: Plan, log_dir: Path) -> list[Measurement]:
    """Peak RSS of a sync whose backups hold one large metadata file each. The files are
    built to be refused after they are read and decoded (a Backup of another kind; a pod
    volume backup list whose last item is bad), so the API server does no work and the
    figure is the reading alone."""
    now = datetime.now(UTC)
    out: list[Measurement] = []
    for index, (label, padding, pvbs) in enumerate(LARGE_FILE_CASES):
        prefix = f"large{index}"
        pvb_data = _bad_pvb_list(pvbs) if pvbs else b""
        for i in range(LARGE_FILE_BACKUPS):
            name = backup_name(i)
            doc = backup_document(seed_backup(i, 0), now)
            if not pvbs:
                doc["kind"] = "NotABackup"  # refused once decoded: nothing is created
                if padding:
                    doc["metadata"]["annotations"]["padding"] = "x" * padding
            env.put(f"{prefix}/backups/{name}/velero-backup.json", json.dumps(doc).encode())
            if pvbs:
                env.put(f"{prefix}/backups/{name}/{name}-podvolumebackups.json.gz", pvb_data)
        ns = env.velero_namespace(f"large-{index}", prefix)
        limits = plan.limits
        m, child = measured(
            env, label, LARGE_FILE_BACKUPS, worker_argv(env, ns, limits), log_dir, tag="large"
        )
        loc = _summary(child.stdout, label)["locations"][0]
        if len(loc["errors"]) != LARGE_FILE_BACKUPS:
            raise BenchFailure(f"{label}: expected {LARGE_FILE_BACKUPS} errors: {loc['errors']}")
        file_bytes = len(gzip.decompress(pvb_data)) if pvbs else len(json.dumps(doc))
        m.settings = {**plan.settings(), "fileBytes": file_bytes}
        out.append(_logged(m))
    return out


def _bad_pvb_list(count: int) -> bytes:
    """``count`` pod volume backups and a last item without metadata, gzip'd."""
    item = json.dumps(pod_volume_backup_documents(seed_backup(0, 1))[0])
    text = "[" + ",".join([item] * count) + ',{"no": "metadata"}]\n'
    return gzip.compress(text.encode(), 1)


def _logged(m: Measurement) -> Measurement:
    log(
        f"{m.case} N={m.n} #{m.sample}: {m.seconds:.2f}s, {m.creates} creates "
        f"({m.creates_per_second:.0f}/s), API {m.api_total}, store {m.store_total}, "
        f"RSS {m.peak_rss_mib:.0f} MiB, CPU {m.cpu_seconds:.1f}s"
    )
    return m


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    import os
    from importlib.metadata import version

    versions = read_versions()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memoryGiB": round(mem_gib),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kubernetesClient": version("kubernetes"),
        "botocore": version("botocore"),
        "kubeApiserver": versions.get("KUBERNETES_VERSION", "?"),
        "etcd": versions.get("ETCD_VERSION", "?"),
        "minio": versions.get("MINIO_VERSION", "?"),
        "toxiproxy": versions.get("TOXIPROXY_VERSION", "?"),
    }


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)
