"""The benchmark's world: a real kube-apiserver + etcd that audits the worker's requests, an
S3 server (MinIO, or moto) behind toxiproxy with a fixed latency on its responses, one
bucket, and a fresh Velero namespace (credential Secret + BackupStorageLocation) per run.

Counting is done by the servers, not estimated: API requests from kube-apiserver's audit log
(only the benchmark's ServiceAccount is audited), object-store requests from MinIO's own
request counters (or moto's access log).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.controlplane import ControlPlane, ControlPlaneError
from harness.minio import MinIO
from harness.objectstores import MotoS3
from harness.processes import Service
from harness.toxiproxy import Toxiproxy

BUCKET = "velero-bench"
SA_NAMESPACE = "bench-system"
SA_NAME = "backup-sync"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["{SA_USER}"]
- level: None
"""
_MOTO_REQUEST = re.compile(rb'"(GET|PUT|HEAD|POST|DELETE) ([^ ?"]*)(\?[^ "]*)? HTTP/1\.[01]"')


class _MotoCounter:
    """moto's werkzeug access log: one line per request."""

    def __init__(self, server: MotoS3) -> None:
        self._log = server.log_path

    def snapshot(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for method, path, query in _MOTO_REQUEST.findall(self._log.read_bytes()):
            if b"list-type=2" in (query or b""):
                counts["listobjectsv2"] += 1
                continue
            target = "object" if path.strip(b"/").count(b"/") >= 1 else "bucket"
            counts[f"{method.decode().lower()}{target}"] += 1
        return counts


class BenchEnv(Service):
    """Everything a benchmark run talks to. A context manager; ``latency_ms`` is added to
    every response of the object store."""

    def __init__(self, *, store: str = "minio", latency_ms: int = 10) -> None:
        self.store_kind = store
        self.latency_ms = latency_ms
        self._dir = Path(tempfile.mkdtemp(prefix="backup-sync-bench-"))
        self.audit_log = self._dir / "audit.log"
        self.cp: ControlPlane | None = None
        self.store: Any = None
        self.toxiproxy: Toxiproxy | None = None
        self.proxy_port = 0
        self.kubeconfig = Path()
        self._moto_counter: _MotoCounter | None = None
        self.store_pid = 0

    # -- lifecycle -----------------------------------------------------------------------

    def _start(self) -> None:
        policy = self._dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self.cp = ControlPlane(
            apiserver_args=[
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",  # never rotate: offsets stay valid
            ]
        ).start()
        self.cp.apply_crds()
        self.kubeconfig = self.cp.service_account_kubeconfig(SA_NAMESPACE, SA_NAME)
        self._ok(
            "POST",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "backup-sync-bench"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"kind": "ServiceAccount", "name": SA_NAME, "namespace": SA_NAMESPACE}
                ],
            },
        )
        if self.store_kind == "minio":
            self.store = MinIO().start()
            self.store_pid = self.store.pid
        elif self.store_kind == "moto":
            moto = MotoS3().start()
            self.store_pid = moto._process.pid if moto._process else 0
            self._moto_counter = _MotoCounter(moto)
            self.store = moto
        else:
            raise ValueError(f"unknown store {self.store_kind!r}")
        self.store.create_bucket(BUCKET)
        self.toxiproxy = Toxiproxy().start()
        upstream = self.store.endpoint.removeprefix("http://")
        self.proxy_port = self.toxiproxy.proxy("s3", upstream)
        if self.latency_ms > 0:
            self.toxiproxy.latency("s3", self.latency_ms)

    def stop(self) -> None:
        for stop in (
            self.toxiproxy.stop if self.toxiproxy else None,
            self.store.stop if self.store else None,
            self.cp.stop if self.cp else None,
        ):
            if stop is not None:
                try:
                    stop()
                except Exception as exc:  # keep stopping the others
                    print(f"bench: stopping: {exc!r}")
        self.toxiproxy = self.store = self.cp = None
        shutil.rmtree(self._dir, ignore_errors=True)  # the audit log: hundreds of MB at 50,000

    # -- cluster -------------------------------------------------------------------------

    def _cp(self) -> ControlPlane:
        assert self.cp is not None, "BenchEnv is not started"
        return self.cp

    @property
    def control_plane(self) -> ControlPlane:
        return self._cp()

    def _ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict[str, Any]:
        status, obj = self._cp().request(method, path, body, **kw)
        if status >= 300 and status != 409:
            raise RuntimeError(f"{method} {path} -> {status}: {obj.get('message', obj)}")
        return obj

    def child_env(self) -> dict[str, str]:
        """The environment of a measured process: the store's credentials as a file named by
        AWS_SHARED_CREDENTIALS_FILE, as the chart mounts its credentials Secret (a location's
        ``spec.credential`` would add one Secret read per location and run)."""
        path = self._dir / "cloud-credentials"
        if not path.exists():
            path.write_bytes(self.store.credentials())
            path.chmod(0o600)
        return {**os.environ, "AWS_SHARED_CREDENTIALS_FILE": str(path)}

    def velero_namespace(self, name: str, prefix: str) -> str:
        """A fresh namespace with a default BSL reading ``prefix`` of the bucket through
        toxiproxy (credentials: ``child_env``)."""
        self._cp().create_namespace(name)
        self.add_location(name, "default", prefix, default=True)
        return name

    def add_location(self, namespace: str, name: str, prefix: str, *, default: bool) -> None:
        """A BSL ``name`` in ``namespace`` reading ``prefix`` of the bucket through toxiproxy."""
        config = dict(self.store.location_config(BUCKET))
        config["s3Url"] = f"http://127.0.0.1:{self.proxy_port}"
        self._ok(
            "POST",
            f"/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations",
            {
                "apiVersion": "velero.io/v1",
                "kind": "BackupStorageLocation",
                "metadata": {"name": name},
                "spec": {
                    "provider": "aws",
                    "default": default,
                    "objectStorage": {"bucket": BUCKET, "prefix": prefix},
                    "config": config,
                },
            },
        )

    def delete_namespace(self, name: str) -> None:
        """Best effort: a namespace with tens of thousands of objects may outlast the
        harness's timeouts; it then stays (and costs nothing but etcd space)."""
        try:
            self._cp().delete_namespace(name)
        except (ControlPlaneError, OSError) as exc:
            print(f"bench: namespace {name} not deleted: {exc}", flush=True)

    def drain(self, namespace: str, plurals: Sequence[str], timeout: float = 1800.0) -> None:
        """Delete every object of ``plurals`` in ``namespace`` and wait until none is left,
        so that the API server's work on them does not land on the next measured run. A
        collection delete of tens of thousands of objects outlasts the request timeouts
        and goes on behind them: it is sent again only once the count stops falling."""
        deadline = time.monotonic() + timeout
        for plural in plurals:
            path = f"/apis/velero.io/v1/namespaces/{namespace}/{plural}"
            left = self.count_quick(namespace, plural)
            while left:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left} {plural} still in {namespace} after {timeout}s")
                with contextlib.suppress(OSError):  # the client gave up, the server did not
                    self._cp().request("DELETE", path, timeout=120)
                while 0 < (now := self.count_quick(namespace, plural)) < left:
                    left = now
                    time.sleep(1)
                left = now

    def count_objects(self, namespace: str, plural: str) -> int:
        """How many objects of ``plural`` the namespace holds (paged, as admin)."""
        total, token = 0, ""
        while True:
            path = f"/apis/velero.io/v1/namespaces/{namespace}/{plural}?limit=5000"
            path += f"&continue={token}" if token else ""
            page = self._ok("GET", path)
            total += len(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return total

    def count_quick(self, namespace: str, plural: str) -> int:
        """How many objects of ``plural`` the namespace holds, from one ``limit=1`` list (its
        ``remainingItemCount``); paged as ``count_objects`` when the server leaves that out."""
        page = self._ok("GET", f"/apis/velero.io/v1/namespaces/{namespace}/{plural}?limit=1")
        meta = page.get("metadata") or {}
        items = len(page.get("items") or [])
        if not meta.get("continue"):
            return items
        remaining = meta.get("remainingItemCount")
        if remaining is None:
            return self.count_objects(namespace, plural)
        return items + int(remaining)

    def last_synced(self, namespace: str, location: str = "default") -> str | None:
        """The location's ``status.lastSyncedTime`` (None before a sync set it)."""
        bsl = self._ok(
            "GET", f"/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations/{location}"
        )
        return (bsl.get("status") or {}).get("lastSyncedTime")

    # -- bucket --------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> None:
        self.store.put(BUCKET, key, data)

    # -- counting ------------------------------------------------------------------------

    def audit_offset(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0

    def api_counts(self, offset: int, settle: float = 5.0) -> Counter[str]:
        """Audited requests of the benchmark's ServiceAccount after ``offset``, by verb and
        resource. Waits until the log stops growing (the server writes an event once the
        response is complete)."""
        deadline = time.monotonic() + settle
        size = -1
        while time.monotonic() < deadline:
            now = self.audit_offset()
            if now == size:
                break
            size = now
            time.sleep(0.3)
        counts: Counter[str] = Counter()
        with open(self.audit_log, "rb") as fh:
            fh.seek(offset)
            for line in fh:
                event = json.loads(line)
                if (event.get("user") or {}).get("username") != SA_USER:
                    continue
                counts[f"{event.get('verb')} {_audited_target(event)}"] += 1
        return counts

    def store_counts(self) -> Counter[str]:
        """Object-store requests served so far, by API."""
        if self._moto_counter is not None:
            return self._moto_counter.snapshot()
        counts: Counter[str] = self.store.request_counts()
        return counts

    # -- processes -----------------------------------------------------------------------

    def server_pids(self) -> dict[str, int]:
        """kube-apiserver, etcd, the S3 server and toxiproxy, for CPU accounting."""
        pids: dict[str, int] = {}
        work = str(self._cp().work_dir)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if not cmdline or work.encode() not in b" ".join(cmdline):
                continue
            name = os.path.basename(cmdline[0].decode(errors="replace"))
            if name in ("etcd", "kube-apiserver"):
                pids[name] = int(entry)
        if self.store_pid:
            pids[self.store_kind] = self.store_pid
        if self.toxiproxy is not None:
            pids["toxiproxy"] = self.toxiproxy.pid
        return pids


def _audited_target(event: dict[str, Any]) -> str:
    """What an audited request addressed: ``backups``, ``backupstoragelocations/status``;
    for a request without an object, ``discovery`` (``/api…``, ``/apis…``) or its path
    (``/version``, the worker's probe for API Priority and Fairness)."""
    ref = event.get("objectRef")
    if ref:
        sub = ref.get("subresource")
        return str(ref.get("resource", "?")) + (f"/{sub}" if sub else "")
    path = str(event.get("requestURI", "?")).split("?", 1)[0]
    return "discovery" if path.startswith("/api") else path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
