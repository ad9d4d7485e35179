"""etcd for the control plane: one member on loopback ports, throwaway data."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from pathlib import Path

from harness.controlplane.errors import ControlPlaneError
from harness.controlplane.launch import launch, log_tail
from harness.processes import free_port, stop_process

HEALTH_TIMEOUT = 30.0


def start_etcd(bin_dir: Path, work: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    """Start etcd with its data and log in ``work``; return its client URL once healthy.

    The process joins ``procs`` before the wait, so a stop meanwhile kills it too.
    """
    log = work / "etcd.log"
    for _attempt in range(3):  # a "free" port can be taken before etcd binds it
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        data_dir = work / "etcd-data"
        shutil.rmtree(data_dir, ignore_errors=True)
        proc = launch(etcd_argv(bin_dir, data_dir, client_url, peer_url), log)
        procs.append(proc)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if etcd_healthy(client):
                return client_url
            time.sleep(0.1)
        procs.remove(proc)
        stop_process(proc)
    raise ControlPlaneError(f"etcd did not become healthy; {log}:\n{log_tail(log)}")


def etcd_argv(bin_dir: Path, data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    """etcd's command line: a single member named ``default``, no metrics listener."""
    return [
        str(bin_dir / "etcd"),
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=default={peer_url}",
        "--listen-metrics-urls=",
        # Throwaway data: skipping fsync makes every write ~10x cheaper.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def etcd_healthy(port: int) -> bool:
    """Whether etcd on ``port`` answers ``/health`` with ``"health":"true"``."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
    except OSError:
        return False
    return resp.status == 200 and b'"health":"true"' in body
