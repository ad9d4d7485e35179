"""``ControlPlane``: etcd and kube-apiserver started, addressed and stopped as one Service,
with the kubeconfigs and clients that reach it."""

from __future__ import annotations

import base64
import os
import shutil
import ssl
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane.api import AdminApi
from harness.controlplane.apiserver import (
    ApiserverCommand,
    ApiserverPki,
    start_apiserver,
    write_pki,
)
from harness.controlplane.binaries import resolve_bin_dir
from harness.controlplane.errors import ControlPlaneError
from harness.controlplane.etcd import start_etcd
from harness.processes import Service, stop_process


def _cleanup(procs: list[subprocess.Popen[bytes]], work_dir: str | None) -> None:
    """Kill processes (newest first) and remove the work dir; safe to call twice."""
    while procs:
        stop_process(procs.pop())
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


class ControlPlane(Service, AdminApi):
    """etcd + kube-apiserver on 127.0.0.1 with RBAC; a context manager."""

    def __init__(
        self,
        bin_dir: Path | None = None,
        *,
        startup_timeout: float = 120.0,
        keep_dir: bool = False,
        apiserver_args: Sequence[str] = (),
    ) -> None:
        """``apiserver_args`` are added to kube-apiserver's flags (e.g. an audit policy)."""
        super().__init__()
        self._apiserver_args = list(apiserver_args)
        self._bin_dir = bin_dir
        self._startup_timeout = startup_timeout
        self._keep_dir = keep_dir or bool(os.environ.get("BACKUP_SYNC_KEEP_CONTROL_PLANE_DIR"))
        self._procs: list[subprocess.Popen[bytes]] = []
        self._work_dir: Path | None = None
        self._pki: ApiserverPki | None = None
        self._port = 0
        self._ssl: ssl.SSLContext | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    # -- lifecycle

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver, wait for /readyz, write the admin kubeconfig."""
        if self._procs:
            return self
        bin_dir = self._bin_dir or resolve_bin_dir()
        self._bin_dir = bin_dir
        work = Path(tempfile.mkdtemp(prefix="backup-sync-control-plane."))
        self._work_dir = work
        # The finalizer also runs at interpreter exit (atexit), so a failing test session or
        # a forgotten stop() still kills the processes and removes the temp dir.
        self._finalizer = weakref.finalize(
            self, _cleanup, self._procs, None if self._keep_dir else str(work)
        )
        return super().start()

    def _start(self) -> None:
        assert self._bin_dir is not None and self._work_dir is not None
        self._pki = write_pki(self._work_dir / "pki")
        etcd_url = start_etcd(self._bin_dir, self._work_dir, self._procs)
        command = ApiserverCommand(
            self._bin_dir, self._work_dir, etcd_url, self._pki, self._apiserver_args
        )
        start_apiserver(command, self._procs, self._readyz, self._startup_timeout)
        self._write_admin_kubeconfig()

    def _readyz(self, port: int) -> int:
        # request() talks to self._port: the port probed last is the one that came up.
        self._port = port
        return self.request("GET", "/readyz")[0]

    def stop(self) -> None:
        """Kill kube-apiserver and etcd (whole process groups) and remove the temp dir."""
        if self._finalizer is not None:
            self._finalizer()
        self._ssl = None

    @property
    def running(self) -> bool:
        """Whether both processes are alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    # -- connection details

    @property
    def server(self) -> str:
        """``https://127.0.0.1:<port>``."""
        self._require_started()
        return f"https://127.0.0.1:{self._port}"

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the apiserver's serving certificate."""
        return self._require_started().ca_cert

    @property
    def work_dir(self) -> Path:
        """Temp dir holding certificates, kubeconfigs, etcd data and logs."""
        self._require_started()
        assert self._work_dir is not None
        return self._work_dir

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (client certificate in group system:masters)."""
        return self.work_dir / "admin.kubeconfig"

    @property
    def apiserver_log(self) -> Path:
        """kube-apiserver's combined stdout/stderr."""
        return self.work_dir / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        """etcd's combined stdout/stderr."""
        return self.work_dir / "etcd.log"

    def _require_started(self) -> ApiserverPki:
        if self._pki is None or self._work_dir is None or not self._procs:
            raise ControlPlaneError("control plane is not running (call start())")
        return self._pki

    def _admin_connection(self) -> tuple[int, ssl.SSLContext]:
        self._require_started()
        if self._ssl is None:
            self._ssl = self.admin_ssl_context()
        return self._port, self._ssl

    # -- kubeconfigs and clients

    def _write_kubeconfig(self, path: Path, user_name: str, user: Mapping[str, str]) -> Path:
        ca_data = base64.b64encode(self.ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "backup-sync-test",
                    "cluster": {"server": self.server, "certificate-authority-data": ca_data},
                }
            ],
            "users": [{"name": user_name, "user": dict(user)}],
            "contexts": [
                {"name": user_name, "context": {"cluster": "backup-sync-test", "user": user_name}}
            ],
            "current-context": user_name,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def _write_admin_kubeconfig(self) -> None:
        pki = self._require_started()
        self._write_kubeconfig(
            self.kubeconfig,
            "admin",
            {
                "client-certificate-data": base64.b64encode(pki.admin_cert.read_bytes()).decode(),
                "client-key-data": base64.b64encode(pki.admin_key.read_bytes()).decode(),
            },
        )

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 24 * 3600
    ) -> Path:
        """Kubeconfig for ServiceAccount ``namespace/name`` (created if missing).

        The token comes from the TokenRequest API (no token Secrets, no token controller).
        """
        token = self._service_account_token(namespace, name, expiration_seconds)
        path = self.work_dir / f"sa-{namespace}-{name}-{uuid.uuid4().hex[:6]}.kubeconfig"
        return self._write_kubeconfig(
            path, f"system:serviceaccount:{namespace}:{name}", {"token": token}
        )

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` from ``kubeconfig`` (default: the admin one)."""
        from kubernetes import config  # imported lazily: only tests need the client

        load: Any = config.new_client_from_config  # untyped in the kubernetes package
        return load(config_file=str(kubeconfig or self.kubeconfig))

    # -- proxies in front of the apiserver (fault tests)

    def admin_ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the apiserver's CA and presents the admin
        certificate: what a test proxy in front of the apiserver forwards requests with."""
        pki = self._require_started()
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return ctx

    def admin_kubeconfig_via(self, server: str, ca_pem: bytes | None = None) -> Path:
        """A copy of the admin kubeconfig whose server is ``server`` (a proxy in front of
        the apiserver), trusting ``ca_pem`` instead of the apiserver's CA when the proxy
        terminates TLS with a certificate of its own."""
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        cluster["server"] = server
        if ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        path = self.work_dir / f"admin-via-{uuid.uuid4().hex[:6]}.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path
