"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and demos.

No kubelet, no controller-manager: only what the worker talks to. ``ControlPlane`` starts
etcd and kube-apiserver (RBAC on, TLS with throwaway certificates), writes an admin
kubeconfig, applies the project's own CRDs (``harness/crds``) and hands out kubeconfigs for
ServiceAccounts (tokens from the TokenRequest API)::

    with ControlPlane() as cp:
        cp.apply_crds()
        kubeconfig = cp.service_account_kubeconfig("velero", "backup-sync")

Binaries come from ``BACKUP_SYNC_BIN_DIR``, else ``KUBEBUILDER_ASSETS``, else the versioned
cache that ``hack/build-control-plane.sh`` fills (which is run if they are missing).
``python -m harness.controlplane --check`` starts one, applies the CRDs and stops.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness import pki
from harness.pki import issue, key_pem, loopback_sans, new_key
from harness.processes import Service, die_with_parent, free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
CRD_DIR = Path(__file__).resolve().parent / "crds"
BSL_CRD = CRD_DIR / "velero.io_backupstoragelocations.yaml"
BSL_CRD_STATUS_VARIANT = (
    CRD_DIR / "variants" / "velero.io_backupstoragelocations-status-subresource.yaml"
)
BSL_CRD_NAME = "backupstoragelocations.velero.io"
BINARIES = ("etcd", "kube-apiserver")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
LOG_TAIL_LINES = 40

Obj = dict[str, Any]


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or did not answer as expected."""


class BinariesNotFound(ControlPlaneError):
    """etcd / kube-apiserver are not available (and were not built)."""


# --- versions and binaries ------------------------------------------------------------------


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse ``hack/versions.env`` (plain ``KEY=value`` lines, ``#`` comments)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip()
    return versions


def cached_bin_dir() -> Path:
    """The versioned cache dir ``hack/build-control-plane.sh`` builds into."""
    versions = read_versions()
    cache = os.environ.get("BACKUP_SYNC_CACHE") or str(Path.home() / ".cache" / "backup-sync")
    name = f"kubernetes-{versions['KUBERNETES_VERSION']}-etcd-{versions['ETCD_VERSION']}"
    return Path(cache) / "bin" / name


def _has_binaries(d: Path) -> bool:
    return all(os.access(d / b, os.X_OK) and (d / b).is_file() for b in BINARIES)


def resolve_bin_dir(*, build: bool = True) -> Path:
    """Find etcd and kube-apiserver; with ``build``, run the build script if they are missing.

    Order: ``BACKUP_SYNC_BIN_DIR`` (must hold both), ``KUBEBUILDER_ASSETS``, the versioned cache.
    """
    explicit = os.environ.get("BACKUP_SYNC_BIN_DIR")
    if explicit:
        if _has_binaries(Path(explicit)):
            return Path(explicit)
        raise BinariesNotFound(f"BACKUP_SYNC_BIN_DIR={explicit} lacks one of {BINARIES}")
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _has_binaries(Path(assets)):
        return Path(assets)
    cached = cached_bin_dir()
    if _has_binaries(cached):
        return cached
    if not build:
        raise BinariesNotFound(
            f"etcd/kube-apiserver not found in {cached}; run hack/build-control-plane.sh "
            "(or set BACKUP_SYNC_BIN_DIR / KUBEBUILDER_ASSETS)"
        )
    return build_binaries()


def build_binaries() -> Path:
    """Run ``hack/build-control-plane.sh`` (its log goes to our stderr); return its bin dir."""
    if shutil.which("go") is None and not os.environ.get("KUBEBUILDER_ASSETS"):
        raise BinariesNotFound("etcd/kube-apiserver are not built and `go` is not on PATH")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BinariesNotFound(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    bin_dir = Path(lines[-1])
    if not _has_binaries(bin_dir):
        raise BinariesNotFound(f"{BUILD_SCRIPT} printed {bin_dir}, which lacks {BINARIES}")
    return bin_dir


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Pki:
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


def _write_pki(d: Path) -> _Pki:
    d.mkdir(parents=True, exist_ok=True)

    def write(filename: str, data: bytes) -> Path:
        p = d / filename
        p.write_bytes(data)
        p.chmod(0o600)
        return p

    pem = serialization.Encoding.PEM
    ca_key = new_key()
    ca_name = pki.name("backup-sync-test-ca")
    ca = issue(ca_name, ca_key, None, ca=True)

    serving_key = new_key()
    service_ip = next(ipaddress.IPv4Network(SERVICE_CLUSTER_IP_RANGE).hosts())
    sans = [
        *loopback_sans(
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        x509.IPAddress(service_ip),
    ]
    serving = issue(
        pki.name("kube-apiserver"),
        serving_key,
        (ca_name, ca_key),
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )

    admin_key = new_key()
    admin = issue(
        pki.name("backup-sync-admin", "system:masters"),
        admin_key,
        (ca_name, ca_key),
        usages=[ExtendedKeyUsageOID.CLIENT_AUTH],
    )

    sa_key = new_key()
    sa_pub = sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _Pki(
        ca_cert=write("ca.crt", ca.public_bytes(pem)),
        serving_cert=write("apiserver.crt", serving.public_bytes(pem)),
        serving_key=write("apiserver.key", key_pem(serving_key)),
        admin_cert=write("admin.crt", admin.public_bytes(pem)),
        admin_key=write("admin.key", key_pem(admin_key)),
        sa_public_key=write("sa.pub", sa_pub),
        sa_private_key=write("sa.key", key_pem(sa_key)),
    )


# --- processes ------------------------------------------------------------------------------


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _start(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _cleanup(procs: list[subprocess.Popen[bytes]], work_dir: str | None) -> None:
    """Kill processes (newest first) and remove the work dir; safe to call twice."""
    while procs:
        stop_process(procs.pop())
    if work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)


# --- the control plane ----------------------------------------------------------------------


class ControlPlane(Service):
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
        self._apiserver_args = list(apiserver_args)
        self._bin_dir = bin_dir
        self._startup_timeout = startup_timeout
        self._keep_dir = keep_dir or bool(os.environ.get("BACKUP_SYNC_KEEP_CONTROL_PLANE_DIR"))
        self._procs: list[subprocess.Popen[bytes]] = []
        self._work_dir: Path | None = None
        self._pki: _Pki | None = None
        self._port = 0
        self._ssl: ssl.SSLContext | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._discovery: list[str] | None = None

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
        self._pki = _write_pki(self._work_dir / "pki")
        etcd_url = self._start_etcd(self._bin_dir, self._work_dir)
        self._start_apiserver(self._bin_dir, self._work_dir, etcd_url)
        self._write_admin_kubeconfig()

    def stop(self) -> None:
        """Kill kube-apiserver and etcd (whole process groups) and remove the temp dir."""
        if self._finalizer is not None:
            self._finalizer()
        self._ssl = None

    @property
    def running(self) -> bool:
        """Whether both processes are alive."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def _start_etcd(self, bin_dir: Path, work: Path) -> str:
        log = work / "etcd.log"
        for _attempt in range(3):  # a "free" port can be taken before etcd binds it
            client, peer = free_port(), free_port()
            client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
            data_dir = work / "etcd-data"
            shutil.rmtree(data_dir, ignore_errors=True)
            proc = _start(
                [
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
                ],
                log,
            )
            self._procs.append(proc)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                if self._etcd_healthy(client):
                    return client_url
                time.sleep(0.1)
            self._procs.remove(proc)
            stop_process(proc)
        raise ControlPlaneError(f"etcd did not become healthy; {log}:\n{_tail(log)}")

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        except OSError:
            return False
        return resp.status == 200 and b'"health":"true"' in body

    def _start_apiserver(self, bin_dir: Path, work: Path, etcd_url: str) -> None:
        assert self._pki is not None
        pki = self._pki
        log = work / "kube-apiserver.log"
        for _attempt in range(3):
            self._port = free_port()
            proc = _start(
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={self._port}",
                    f"--cert-dir={work / 'apiserver-certs'}",
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
                    *self._apiserver_args,
                ],
                log,
            )
            self._procs.append(proc)
            if self._wait_ready(proc):
                return
            self._procs.remove(proc)
            stop_process(proc)
            if b"address already in use" not in log.read_bytes():
                break
        raise ControlPlaneError(
            f"kube-apiserver did not become ready within {self._startup_timeout:.0f}s; "
            f"{log}:\n{_tail(log)}\n--- etcd.log:\n{_tail(work / 'etcd.log', 10)}"
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                status, _ = self.request("GET", "/readyz")
            except OSError:
                status = 0
            if status == 200:
                return True
            time.sleep(0.2)
        return False

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

    def _require_started(self) -> _Pki:
        if self._pki is None or self._work_dir is None or not self._procs:
            raise ControlPlaneError("control plane is not running (call start())")
        return self._pki

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

    # -- raw API access (admin)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Obj]:
        """One admin HTTPS request; returns (status, decoded JSON body or ``{}``)."""
        pki = self._require_started()
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
            ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
            self._ssl = ctx
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._ssl, timeout=timeout
        )
        try:
            headers = {"Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"raw": raw.decode(errors="replace")}
        return resp.status, decoded if isinstance(decoded, dict) else {"items": decoded}

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
        status, obj = self.request(method, path, body, **kw)
        if status >= 300:
            raise ControlPlaneError(f"{method} {path} -> {status}: {obj.get('message', obj)}")
        return obj

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A ``kubernetes.client.ApiClient`` from ``kubeconfig`` (default: the admin one)."""
        from kubernetes import config  # imported lazily: only tests need the client

        load: Any = config.new_client_from_config  # untyped in the kubernetes package
        return load(config_file=str(kubeconfig or self.kubeconfig))

    # -- namespaces

    def create_namespace(self, name: str) -> None:
        """Create a namespace (no-op if it exists)."""
        status, obj = self.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"create namespace {name} -> {status}: {obj.get('message')}")

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and everything in it, as the namespace controller would.

        There is no controller-manager, so this deletes the namespaced objects itself,
        clears the ``kubernetes`` finalizer and waits until the namespace is gone. Also
        removes VolumeSnapshotContents bound to VolumeSnapshots of that namespace.
        """
        for path in self._namespaced_collections():
            self.request("DELETE", path.format(namespace=name))
        status, vscs = self.request(
            "GET", "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
        )
        for vsc in vscs.get("items", []) if status == 200 else []:
            if vsc.get("spec", {}).get("volumeSnapshotRef", {}).get("namespace") == name:
                self.request(
                    "DELETE",
                    f"/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/{vsc['metadata']['name']}",
                )
        status, _ = self.request("DELETE", f"/api/v1/namespaces/{name}")
        if status == 404:
            return
        status, ns = self.request("GET", f"/api/v1/namespaces/{name}")
        if status == 200:
            ns.setdefault("spec", {})["finalizers"] = []
            self.request("PUT", f"/api/v1/namespaces/{name}/finalize", ns)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.request("GET", f"/api/v1/namespaces/{name}")[0] == 404:
                return
            time.sleep(0.1)
        raise ControlPlaneError(f"namespace {name} was not deleted")

    def _namespaced_collections(self) -> list[str]:
        """``…/namespaces/{namespace}/<resource>`` paths of every deletable namespaced resource."""
        if self._discovery is not None:
            return self._discovery
        group_versions = ["/api/v1"]
        for group in self._ok("GET", "/apis").get("groups", []):
            group_versions.append(f"/apis/{group['preferredVersion']['groupVersion']}")
        paths = []
        for gv in group_versions:
            status, resources = self.request("GET", gv)
            if status != 200:
                continue
            for r in resources.get("resources", []):
                if (
                    r.get("namespaced")
                    and "/" not in r["name"]
                    and "deletecollection" in r.get("verbs", [])
                ):
                    paths.append(f"{gv}/namespaces/{{namespace}}/{r['name']}")
        self._discovery = paths
        return paths

    # -- ServiceAccounts

    def service_account_kubeconfig(
        self, namespace: str, name: str, *, expiration_seconds: int = 24 * 3600
    ) -> Path:
        """Kubeconfig for ServiceAccount ``namespace/name`` (created if missing).

        The token comes from the TokenRequest API (no token Secrets, no token controller).
        """
        self.create_namespace(namespace)
        status, obj = self.request(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        )
        if status not in (201, 409):
            raise ControlPlaneError(
                f"create serviceaccount {namespace}/{name} -> {status}: {obj.get('message')}"
            )
        token = self._ok(
            "POST",
            f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": expiration_seconds},
            },
        )["status"]["token"]
        path = self.work_dir / f"sa-{namespace}-{name}-{uuid.uuid4().hex[:6]}.kubeconfig"
        return self._write_kubeconfig(
            path, f"system:serviceaccount:{namespace}:{name}", {"token": token}
        )

    # -- CRDs

    def apply_crds(self, bsl_status_subresource: bool = False) -> list[str]:
        """Create or update every CRD in ``harness/crds``; wait until each is served.

        ``bsl_status_subresource`` picks the BSL variant with a status subresource (the real
        Velero v1.15 CRD has none). Returns the CRD names.
        """
        names = []
        for path in sorted(CRD_DIR.glob("*.yaml")):
            if path == BSL_CRD and bsl_status_subresource:
                path = BSL_CRD_STATUS_VARIANT
            for crd in _load_crds(path):
                self._put_crd(crd)
                names.append(crd["metadata"]["name"])
        for name in names:
            self.wait_crd_established(name)
        self._wait_bsl_status_routing(bsl_status_subresource)
        return names

    def replace_bsl_crd(self, status_subresource: bool) -> None:
        """Switch the BSL CRD to the variant with a status subresource, or back to the real one."""
        path = BSL_CRD_STATUS_VARIANT if status_subresource else BSL_CRD
        for crd in _load_crds(path):
            self._put_crd(crd)
        self.wait_crd_established(BSL_CRD_NAME)
        self._wait_bsl_status_routing(status_subresource)

    def bsl_has_status_subresource(self) -> bool:
        """Whether the installed BSL CRD declares a status subresource."""
        crd = self._ok(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{BSL_CRD_NAME}"
        )
        return any(
            "status" in (v.get("subresources") or {})
            for v in crd["spec"]["versions"]
            if v.get("storage")
        )

    def _put_crd(self, crd: Obj) -> None:
        base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        name = crd["metadata"]["name"]
        for _attempt in range(5):
            status, current = self.request("GET", f"{base}/{name}")
            if status == 404:
                status, obj = self.request("POST", base, crd)
            else:
                body = json.loads(json.dumps(crd))
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                status, obj = self.request("PUT", f"{base}/{name}", body)
            if status in (200, 201):
                return
            if status != 409:
                break
        raise ControlPlaneError(f"apply CRD {name} -> {status}: {obj.get('message', obj)}")

    def wait_crd_established(self, name: str, timeout: float = 30.0) -> None:
        """Wait until CRD ``name`` is Established and its resource answers a list. (A CRD just
        created can report ``"conditions": null`` for a moment: that counts as not yet.)"""
        deadline = time.monotonic() + timeout
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        while time.monotonic() < deadline:
            status, crd = self.request("GET", path)
            conditions = {
                c.get("type"): c.get("status")
                for c in ((crd.get("status") or {}).get("conditions") or [])
                if isinstance(c, dict)
            }
            if status == 200 and conditions.get("Established") == "True":
                spec = crd["spec"]
                version = next(v["name"] for v in spec["versions"] if v.get("storage"))
                list_path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1"
                if self.request("GET", list_path)[0] == 200:
                    return
            time.sleep(0.1)
        raise ControlPlaneError(f"CRD {name} not established within {timeout:.0f}s")

    def _wait_bsl_status_routing(self, status_subresource: bool, timeout: float = 30.0) -> None:
        # After a CRD update the apiserver swaps its handler asynchronously; probe with a
        # throwaway BSL until a write to /status behaves as the new CRD says.
        ns = "default"
        probe = f"backup-sync-crd-probe-{uuid.uuid4().hex[:8]}"
        base = f"/apis/velero.io/v1/namespaces/{ns}/backupstoragelocations"
        bsl = {
            "apiVersion": "velero.io/v1",
            "kind": "BackupStorageLocation",
            "metadata": {"name": probe},
            "spec": {"provider": "aws", "objectStorage": {"bucket": "probe"}},
        }
        self._ok("POST", base, bsl)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                status, _ = self.request(
                    "PATCH",
                    f"{base}/{probe}/status",
                    {"status": {"phase": "Available"}},
                    content_type="application/merge-patch+json",
                )
                if (status == 200) == status_subresource and status in (200, 404):
                    return
                time.sleep(0.1)
            raise ControlPlaneError(
                f"BSL status subresource={status_subresource} not in effect after {timeout:.0f}s"
            )
        finally:
            self.request("DELETE", f"{base}/{probe}")


def _load_crds(path: Path) -> Iterator[Obj]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "CustomResourceDefinition":
            yield doc


def _check() -> int:
    started = time.monotonic()
    with ControlPlane() as cp:
        up = time.monotonic()
        names = cp.apply_crds()
        print(f"kube-apiserver {cp.server} ready in {up - started:.1f}s")
        print(f"{len(names)} CRDs established in {time.monotonic() - up:.1f}s: {', '.join(names)}")
        print(f"admin kubeconfig: {cp.kubeconfig}")
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.controlplane --check|--bin-dir``."""
    parser = argparse.ArgumentParser(prog="python -m harness.controlplane", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="start, apply the CRDs, stop")
    group.add_argument("--bin-dir", action="store_true", help="print the binaries' dir (builds)")
    args = parser.parse_args(argv)
    if args.bin_dir:
        print(resolve_bin_dir())
        return 0
    return _check()


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "BinariesNotFound",
    "ControlPlane",
    "ControlPlaneError",
    "build_binaries",
    "cached_bin_dir",
    "free_port",
    "read_versions",
    "resolve_bin_dir",
]
