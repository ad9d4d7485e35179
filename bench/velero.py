"""Velero's own sync, measured beside the worker: the real ``velero server`` (VELERO_VERSION,
built by ``hack/build-velero.sh``) with the AWS plugin and only its backup-sync controller
enabled, on the benchmark's control plane and bucket.

**Where it runs.** On the benchmark's own kube-apiserver, in a fresh namespace per run (with
its own default BackupStorageLocation on the same prefix the worker reads), as the worker's
runs are: the same API server, etcd and audit policy, and the same ServiceAccount, so every
request of either costs the server the same and is counted from the same audit log; the
Velero CRDs (``velero install --crds-only``) replace the harness's trimmed copies of them for
the whole benchmark. Velero's cache is scoped to its namespace, so the other namespaces do
not reach it. A fresh control plane per run would instead give Velero an empty etcd the
worker's runs never see, and a different audit log.

**What it runs with.** Velero as shipped: its client limits (``--client-qps 100
--client-burst 100``, its defaults, not passed), ``--log-level info`` (its default; the
harness's ``debug`` is overridden), the store credentials as the file named by
``AWS_SHARED_CREDENTIALS_FILE`` (as the worker gets them), every controller but
``backup-sync`` disabled.

**How it is timed.** The sync controller enqueues every location through
``wait.Until(…, 1m)``, which fires at once: the first pass begins as the controller starts,
right after ``velero server`` logs ``Server starting...`` (its debug line "Begin to sync"
came 0.2 s later in a trial with ``--log-level debug``, which was no slower at N = 1,000).
``--backup-sync-period`` and a location's ``spec.backupSyncPeriod`` only filter the
once-a-minute enqueue: neither can bring a pass forward, so neither is set. The log is
tailed every 10 ms for that line; the wall time runs from there until the cluster holds
the N Backups and their pod volume backups (a ``limit=1`` list and its
``remainingItemCount``, at most every second, every 100 ms near the end:
``poll_interval``). The start-up before that line (discovery, CRD checks, the plugin
registry) is kept apart as ``serverStartSeconds``: the worker's own start-up is inside its
wall time, so leaving Velero's out only ever flatters Velero. The measured CPU is the
server's, its reaped plugin processes included (the plugin runs once per pass), start-up
included.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.env import BenchEnv, cpu_seconds
from bench.measure import Measurement
from harness.velero import (
    SERVER_STARTED,
    VeleroClient,
    VeleroError,
    VeleroServer,
    VeleroUnavailable,
    apply_crds,
    aws_plugin_binary,
    pinned_versions,
    velero_binary,
)

CONTROLLER = "backup-sync"
# Velero's own client limits (pkg/cmd/server/config: defaultClientQPS, defaultClientBurst).
CLIENT_QPS = 100
CLIENT_BURST = 100
LOG_POLL = 0.01
# The count is polled at most every second, and every 100 ms near the end: a limit=1 list of
# 10,000 pod volume backups costs kube-apiserver ~10 ms of CPU (measured), so polling every
# 100 ms throughout would add ~0.1 core to the API server Velero's sync talks to.
COUNT_POLL = 0.1
COUNT_POLL_MAX = 1.0
# The sync controller logs a failed item at error level and goes on with the next one. (Other
# error lines are not the sync's: go-plugin's "file already closed" when a pass's plugin
# process is killed; the location controller, which 1.15 cannot disable, counting 0
# Available locations before it has validated the new one.)
_SYNC_ERROR = re.compile(r"level=(error|fatal|panic)\b.*\bcontroller=backup-sync\b")
_PLUGIN_NOISE = "error encountered while scanning stdout"


class VeleroCaseError(RuntimeError):
    """Velero's sync could not be run or did not do what the benchmark needs."""


@dataclass(frozen=True, slots=True)
class VeleroTools:
    version: str
    binary: Path
    plugin: Path
    disabled: tuple[str, ...]  # every controller but backup-sync


def prepare(env: BenchEnv, *, build: bool = True) -> VeleroTools:
    """Find (or build) Velero and its AWS plugin and put Velero's own CRDs in the cluster."""
    version = pinned_versions()[0]
    try:
        binary = velero_binary(version, build=build)
        plugin = aws_plugin_binary(build=build)
    except VeleroUnavailable as exc:
        raise VeleroCaseError(f"Velero {version} unavailable (make velero-tools): {exc}") from exc
    client = VeleroClient(binary, env.kubeconfig)
    try:
        crds = client.crds()
        controllers = client.disableable_controllers()
    finally:
        client.close()
    if CONTROLLER not in controllers:
        raise VeleroCaseError(f"velero {version} has no {CONTROLLER} controller: {controllers}")
    apply_crds(env.control_plane, crds)
    return VeleroTools(version, binary, plugin, tuple(c for c in controllers if c != CONTROLLER))


def poll_interval(count: int, want: int, elapsed: float) -> float:
    """The next poll of a count growing towards ``want``: an eighth of the time left at the
    rate so far, between ``COUNT_POLL`` and ``COUNT_POLL_MAX`` (so the end is seen within
    100 ms, or an eighth of a misjudged remainder)."""
    if count <= 0 or elapsed <= 0 or count >= want:
        return COUNT_POLL
    left = (want - count) * elapsed / count
    return min(COUNT_POLL_MAX, max(COUNT_POLL, left / 8))


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return "", offset
    return data.decode(errors="replace"), offset + len(data)


class _StartWatch(threading.Thread):
    """Tails the server's log (the only ``*.log`` in its own dir) every 10 ms: when the file
    appeared (the process was spawned) and when ``Server starting...`` was logged.

    The server is started in the calling thread, not here: the harness asks Linux to kill
    it when the thread that spawned it ends (``PR_SET_PDEATHSIG``)."""

    def __init__(self, log_dir: Path, timeout: float) -> None:
        super().__init__(daemon=True)
        self.log_dir = log_dir
        self.timeout = timeout
        self.spawned: float | None = None
        self.began: float | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        path: Path | None = None
        offset, tail = 0, ""
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            if path is None:
                found = sorted(self.log_dir.glob("*.log"))
                if found:
                    path, self.spawned = found[0], time.monotonic()
            if path is not None:
                text, offset = _read_from(path, offset)
                tail = tail[-len(SERVER_STARTED) :] + text
                if SERVER_STARTED in tail:
                    self.began = time.monotonic()
                    return
            time.sleep(LOG_POLL)


def _server_pid(binary: Path, namespace: str) -> int:
    """The ``velero server`` of ``namespace`` (found by its command line)."""
    want = [str(binary).encode(), b"server"]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == want and namespace.encode() in argv:
            return int(entry)
    return 0


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (of every thread: Go forks from any of them)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _cpu_with_reaped_children(pid: int) -> float:
    """User + system CPU of ``pid`` and of the children it has reaped (the plugin processes
    of the passes that ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def sync_once(
    env: BenchEnv,
    tools: VeleroTools,
    case: str,
    n: int,
    namespace: str,
    *,
    pod_volume_backups: int,
    log_dir: Path,
    timeout: float,
    lock_timeout: float = 600.0,
) -> Measurement:
    """One ``velero server`` on ``namespace`` (whose location reads N backups), timed from
    its first sync pass until the cluster holds them all; stopped before this returns."""
    log_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"velero-{namespace}-", dir=log_dir))
    want_pvbs = n * pod_volume_backups
    pids = env.server_pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    audit = env.audit_offset()
    store_before = env.store_counts()
    credentials = env.child_env()["AWS_SHARED_CREDENTIALS_FILE"]
    server = VeleroServer(
        tools.binary,
        tools.plugin,
        env.kubeconfig,
        namespace=namespace,
        disable_controllers=tools.disabled,
        extra_args=["--log-level", "info"],  # Velero's default (the harness passes debug)
        env={"AWS_SHARED_CREDENTIALS_FILE": credentials},
        log_dir=run_dir,
        lock_timeout=lock_timeout,
        startup_timeout=120.0,
    )
    watch = _StartWatch(run_dir, lock_timeout + 180.0)
    watch.start()
    peak_kib = 0
    try:
        try:
            server.start()
        except VeleroError as exc:
            raise VeleroCaseError(f"{case} N={n}: {exc}") from exc
        watch.join(10.0)
        if watch.began is None or watch.spawned is None:
            raise VeleroCaseError(f"{case} N={n}: no {SERVER_STARTED!r} seen in the log")
        pid = _server_pid(tools.binary, namespace)
        if not pid:
            raise VeleroCaseError(f"{case} N={n}: no velero server process for {namespace}")
        deadline = watch.began + timeout
        last_kind, last_want = ("podvolumebackups", want_pvbs) if want_pvbs else ("backups", n)
        done = 0.0
        while True:
            peak_kib = max(
                peak_kib, _hwm_kib(pid) + sum(_hwm_kib(child) for child in _children(pid))
            )
            # The pod volume backups come last (after their Backup): they decide.
            count = env.count_quick(namespace, last_kind)
            if count >= last_want and env.count_quick(namespace, "backups") >= n:
                done = time.monotonic()
                break
            if not server.running:
                raise VeleroCaseError(f"{case} N={n}: velero server exited:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise VeleroCaseError(
                    f"{case} N={n}: {env.count_quick(namespace, 'backups')} Backups and "
                    f"{env.count_quick(namespace, 'podvolumebackups')} PodVolumeBackups "
                    f"(want {n} and {want_pvbs}) after {timeout:.0f}s:\n{server.log_tail()}"
                )
            time.sleep(poll_interval(count, last_want, time.monotonic() - watch.began))
        # The pass ends with the location's lastSyncedTime (its status patch): wait for it,
        # so the counts below hold the whole pass, as the worker's hold its status patch.
        end = time.monotonic() + 60.0
        while not env.last_synced(namespace) and time.monotonic() < end:
            time.sleep(COUNT_POLL)
        if not env.last_synced(namespace):
            raise VeleroCaseError(f"{case} N={n}: no lastSyncedTime:\n{server.log_tail()}")
        time.sleep(0.5)  # the pass's plugin process is killed and reaped after the patch
        velero_cpu = _cpu_with_reaped_children(pid)
        errors = [
            line
            for line in server.log().splitlines()
            if _SYNC_ERROR.search(line) and _PLUGIN_NOISE not in line
        ]
        if errors:
            raise VeleroCaseError(f"{case} N={n}: Velero logged errors:\n" + "\n".join(errors[:5]))
    finally:
        watch.stop_event.set()
        server.stop()
    api = env.api_counts(audit)
    store = env.store_counts() - store_before
    server_cpu = {name: cpu_seconds(p) - cpu_before[name] for name, p in pids.items()}
    creates = sum(v for k, v in api.items() if k.startswith("create "))
    m = Measurement(
        case=case,
        n=n,
        seconds=done - watch.began,
        exit_code=0,
        peak_rss_mib=peak_kib / 1024,
        cpu_seconds=velero_cpu,
        creates=creates,
        api=Counter(api),
        store=store,
        server_cpu=server_cpu,
    )
    m.settings = {
        "concurrency": 1,  # one reconcile at a time, one backup after the other
        "kubeQps": CLIENT_QPS,
        "kubeBurst": CLIENT_BURST,
        "velero": tools.version,
        "serverStartSeconds": round(watch.began - watch.spawned, 3),
        "spawnToSyncedSeconds": round(done - watch.spawned, 3),
    }
    return m
