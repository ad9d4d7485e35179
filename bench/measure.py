"""One measured run: a child process (the worker, or the ceiling), timed from spawn to exit,
with its peak RSS and CPU time from ``wait4`` and the requests the servers saw meanwhile."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.env import BenchEnv, cpu_seconds


@dataclass
class Measurement:
    """What one run cost. ``api``/``store`` are the servers' own counts, by kind."""

    case: str  # "full", "full --concurrency 1", "ceiling", "steady", ...
    n: int
    seconds: float
    exit_code: int
    peak_rss_mib: float
    cpu_seconds: float
    creates: int
    api: Counter[str] = field(default_factory=Counter)
    store: Counter[str] = field(default_factory=Counter)
    server_cpu: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    sample: int = 1  # which repetition

    @property
    def api_total(self) -> int:
        return sum(self.api.values())

    @property
    def store_total(self) -> int:
        return sum(self.store.values())

    @property
    def creates_per_second(self) -> float:
        return self.creates / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "n": self.n,
            "sample": self.sample,
            "seconds": round(self.seconds, 3),
            "exitCode": self.exit_code,
            "peakRssMiB": round(self.peak_rss_mib, 1),
            "cpuSeconds": round(self.cpu_seconds, 2),
            "creates": self.creates,
            "createsPerSecond": round(self.creates_per_second, 1),
            "apiRequests": self.api_total,
            "api": dict(sorted(self.api.items())),
            "storeRequests": self.store_total,
            "store": dict(sorted(self.store.items())),
            "serverCpuSeconds": {k: round(v, 2) for k, v in sorted(self.server_cpu.items())},
            "settings": self.settings,
        }


@dataclass
class Child:
    code: int
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    user_seconds: float
    stdout: str
    stderr: str


def _vm_hwm_kib(pid: int) -> int:
    """The process's peak RSS so far (``VmHWM``), 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_child(
    argv: list[str], log_dir: Path, name: str, timeout: float, env: dict[str, str] | None = None
) -> Child:
    """Run ``argv`` with stdout/stderr to files; wall time from spawn to reaped exit.

    Peak RSS is the child's own ``VmHWM``, sampled every few milliseconds while it runs
    (a high-water mark, so a late sample still holds an earlier peak). ``ru_maxrss`` from
    ``wait4`` would not do: Linux carries the forking parent's RSS over ``exec`` into it,
    and this parent holds the seeded data set."""
    out_path, err_path = log_dir / f"{name}.out", log_dir / f"{name}.err"
    hwm = 0
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        deadline = started + timeout
        while True:
            hwm = max(hwm, _vm_hwm_kib(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.003)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Child(
        code=proc.returncode,
        seconds=seconds,
        peak_rss_mib=hwm / 1024,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        user_seconds=usage.ru_utime,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


def measured(
    env: BenchEnv,
    case: str,
    n: int,
    argv: list[str],
    log_dir: Path,
    *,
    tag: str = "",
    timeout: float = 3600.0,
) -> tuple[Measurement, Child]:
    """Run one child and take the servers' counts and CPU around it."""
    pids = env.server_pids()
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    audit = env.audit_offset()
    store_before = env.store_counts()
    name = "".join(c if c.isalnum() else "_" for c in case) + f"-{n}" + (f"-{tag}" if tag else "")
    child = run_child(argv, log_dir, name, timeout, env.child_env())
    api = env.api_counts(audit)
    store = env.store_counts() - store_before
    server_cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    creates = sum(v for k, v in api.items() if k.startswith("create "))
    return (
        Measurement(
            case=case,
            n=n,
            seconds=child.seconds,
            exit_code=child.code,
            peak_rss_mib=child.peak_rss_mib,
            cpu_seconds=child.cpu_seconds,
            creates=creates,
            api=api,
            store=store,
            server_cpu=server_cpu,
        ),
        child,
    )


def python() -> str:
    return sys.executable
