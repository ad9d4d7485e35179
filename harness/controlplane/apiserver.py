"""kube-apiserver for the control plane: its throwaway certificates, its flags, and its
start on a free loopback port."""

from __future__ import annotations

import ipaddress
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness import pki
from harness.controlplane.errors import ControlPlaneError
from harness.controlplane.launch import launch, log_tail
from harness.pki import cert_pem, issue, key_pem, loopback_sans, new_key
from harness.processes import free_port, stop_process

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"


@dataclass(frozen=True, slots=True)
class ApiserverPki:
    """The files of a CA, the apiserver's serving pair, an admin client pair (group
    ``system:masters``) and the ServiceAccount token signing pair."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


def write_pki(d: Path) -> ApiserverPki:
    """Issue a fresh CA and everything kube-apiserver and its admin need; write them to ``d``."""
    d.mkdir(parents=True, exist_ok=True)

    def write(filename: str, data: bytes) -> Path:
        p = d / filename
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    ca_key = new_key()
    ca_name = pki.name("backup-sync-test-ca")
    ca = issue(ca_name, ca_key, None, ca=True)
    serving_key = new_key()
    serving = issue(
        pki.name("kube-apiserver"),
        serving_key,
        (ca_name, ca_key),
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=_serving_sans(),
    )
    admin_key = new_key()
    admin = issue(
        pki.name("backup-sync-admin", "system:masters"),
        admin_key,
        (ca_name, ca_key),
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa_key = new_key()
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ApiserverPki(
        ca_cert=write("ca.crt", cert_pem(ca)),
        serving_cert=write("apiserver.crt", cert_pem(serving)),
        serving_key=write("apiserver.key", key_pem(serving_key)),
        admin_cert=write("admin.crt", cert_pem(admin)),
        admin_key=write("admin.key", key_pem(admin_key)),
        sa_public_key=write("sa.pub", sa_pub),
        sa_private_key=write("sa.key", key_pem(sa_key)),
    )


def _serving_sans() -> list[x509.GeneralName]:
    """Loopback, the in-cluster names and the ``kubernetes`` Service's IP (the range's first)."""
    service_ip = next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts())
    return [
        *loopback_sans(
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        x509.IPAddress(service_ip),
    ]


@dataclass(frozen=True, slots=True)
class ApiserverCommand:
    """kube-apiserver's command line but for its port: binary, work dir, etcd, certificates
    and extra flags (e.g. an audit policy)."""

    bin_dir: Path
    work: Path
    etcd_url: str
    pki: ApiserverPki
    extra_args: Sequence[str] = ()

    @property
    def log(self) -> Path:
        """Where its stdout and stderr go."""
        return self.work / "kube-apiserver.log"

    def argv(self, port: int) -> list[str]:
        """The command line serving on ``127.0.0.1:port``, RBAC on."""
        pki = self.pki
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.work / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_public_key}",
            f"--service-account-signing-key-file={pki.sa_private_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # No kubelets or controllers exist: nothing to reconcile endpoints for.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--v=1",
            *self.extra_args,
        ]


def start_apiserver(
    command: ApiserverCommand,
    procs: list[subprocess.Popen[bytes]],
    readyz: Callable[[int], int],
    timeout: float,
) -> int:
    """Start kube-apiserver on a free port; return the port once ``readyz(port)`` (the status
    of ``GET /readyz`` there) is 200, within ``timeout``.

    The process joins ``procs`` before the wait, so a stop meanwhile kills it too.
    """
    log = command.log
    for _attempt in range(3):
        port = free_port()
        proc = launch(command.argv(port), log)
        procs.append(proc)
        if _wait_ready(proc, readyz, port, timeout):
            return port
        procs.remove(proc)
        stop_process(proc)
        # Only a port taken between free_port() and the bind is worth another attempt.
        if b"address already in use" not in log.read_bytes():
            break
    raise ControlPlaneError(
        f"kube-apiserver did not become ready within {timeout:.0f}s; "
        f"{log}:\n{log_tail(log)}\n--- etcd.log:\n{log_tail(command.work / 'etcd.log', 10)}"
    )


def _wait_ready(
    proc: subprocess.Popen[bytes], readyz: Callable[[int], int], port: int, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            status = readyz(port)
        except OSError:
            status = 0
        if status == 200:
            return True
        time.sleep(0.2)
    return False
