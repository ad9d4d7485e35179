"""The real CLI as a subprocess, with its peak memory (for tests that bound it)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from tests.integration.env import CLI, SyncEnv

Obj = dict[str, Any]


@dataclass
class Measured:
    code: int
    summary: Obj
    stdout: str
    stderr: str
    max_rss_mib: float
    seconds: float

    def location(self, name: str) -> Obj:
        for loc in self.summary["locations"]:
            if loc["location"] == name:
                return dict(loc)
        raise KeyError(f"location {name} not in summary")


def run_measured(
    env: SyncEnv, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 300
) -> Measured:
    """``backup-sync`` against ``env`` (JSON logs unless ``args`` say otherwise), reaped
    with wait4 for its peak RSS."""
    argv = [
        CLI,
        "--kubeconfig",
        str(env.cp.kubeconfig),
        "--namespace",
        env.namespace,
        "--log-format",
        "json",
        "--retry-attempts",
        "2",
        "--retry-max-seconds",
        "5",
        "--request-timeout",
        "20",
        *args,
    ]
    full_env = {**os.environ, **(extra_env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError(f"backup-sync did not finish within {timeout}s")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    try:
        summary = json.loads(stdout) if "text" not in args else {}
    except ValueError:
        raise AssertionError(
            f"summary is not one JSON document (exit {proc.returncode}):\n"
            f"stdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
        ) from None
    return Measured(proc.returncode, summary, stdout, stderr, usage.ru_maxrss / 1024, seconds)
