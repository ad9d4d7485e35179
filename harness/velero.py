"""The real Velero, built from its Go module (``hack/build-velero.sh``), against a harness
``ControlPlane``: its CRDs, a ``velero`` Deployment object, backup storage locations on an
S3 bucket, the ``velero`` client, and ``velero server`` with the AWS object-store plugin.

Velero's controller-runtime manager binds its metrics listener to the fixed ``:8080``
whatever ``--metrics-address`` says, so only one ``velero server`` can run on a host at a
time: ``VeleroServer`` holds an exclusive file lock (``SERVER_LOCK``) from start to stop,
and a second one, in this process or another, waits for it.

``python -m harness.velero --check`` builds (or finds) the binaries and prints their paths,
the client version and the number of CRDs the pinned Velero prints.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from harness.controlplane import ControlPlane, ControlPlaneError, read_versions
from harness.processes import Service, die_with_parent, free_port, stop_process
from harness.tools import ToolUnavailable, run_build_script

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-velero.sh"
SERVER_LOCK = Path(tempfile.gettempdir()) / "backup-sync-velero-server.lock"
PLUGIN_BINARY = "velero-plugin-for-aws"
NAMESPACE = "velero"
# `velero server` logs this once every controller is set up, right before the manager
# starts (pkg/cmd/server/server.go, v1.15 to v1.18).
SERVER_STARTED = "Server starting..."
# controller-runtime, once the manager runs: its metrics listener is bound (to :8080).
MANAGER_STARTED = "Serving metrics server"
CONTROLLER_RUNTIME_METRICS_PORT = 8080
# Velero's `--disable-controllers` help ends with "Valid values are a,b,c".
_VALID_CONTROLLERS = re.compile(r"Valid values are ([a-z0-9,-]+)")

Obj = dict[str, Any]


class VeleroUnavailable(RuntimeError):
    """Velero or its plugin is not built and cannot be built here."""


class VeleroError(RuntimeError):
    """A ``velero`` command or server failed."""


# --- binaries -------------------------------------------------------------------------------


def pinned_versions() -> tuple[str, str]:
    """(``VELERO_VERSION``, ``VELERO_NEXT_VERSION``) from ``hack/versions.env``."""
    versions = read_versions()
    return versions["VELERO_VERSION"], versions["VELERO_NEXT_VERSION"]


def _build(tool: str, key: str, *, build: bool) -> Path:
    try:
        return run_build_script(BUILD_SCRIPT, tool, key, build=build)
    except ToolUnavailable as exc:
        raise VeleroUnavailable(str(exc)) from None


def velero_binary(version: str, *, build: bool = True) -> Path:
    """The ``velero`` binary of ``version`` (``v1.15.2``); with ``build``, built if missing."""
    return _build(f"velero@{version}", f"velero-{version}", build=build)


def aws_plugin_binary(*, build: bool = True) -> Path:
    """The ``velero-plugin-for-aws`` binary (``VELERO_PLUGIN_FOR_AWS_VERSION``)."""
    return _build("plugin-for-aws", PLUGIN_BINARY, build=build)


# --- the client -----------------------------------------------------------------------------


class VeleroClient:
    """The ``velero`` CLI of one version against one cluster and namespace. Its client config
    (``$HOME/.config/velero``) lives in a private temp dir, so a user's does not leak in."""

    def __init__(self, binary: Path, kubeconfig: Path, namespace: str = NAMESPACE) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self._home = Path(tempfile.mkdtemp(prefix="backup-sync-velero-home."))

    def run(
        self, *args: str, timeout: float = 180.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``velero ARGS --kubeconfig … --namespace …``; raises ``VeleroError`` on a non-zero
        exit when ``check``."""
        argv = [
            str(self.binary),
            *args,
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
        ]
        env = {**os.environ, "HOME": str(self._home)}
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise VeleroError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from exc
        if check and proc.returncode != 0:
            raise VeleroError(
                f"{' '.join(argv)} -> exit {proc.returncode}\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            )
        return proc

    def version(self) -> str:
        """``velero version --client-only``'s version line (``v1.15.2``)."""
        out = subprocess.run(
            [str(self.binary), "version", "--client-only"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        match = re.search(r"Version:\s*(\S+)", out)
        if not match:
            raise VeleroError(f"no version in `velero version --client-only`:\n{out}")
        return match.group(1)

    def crds(self) -> list[Obj]:
        """The CustomResourceDefinitions this Velero version installs
        (``velero install --crds-only --dry-run -o yaml``)."""
        out = subprocess.run(
            [str(self.binary), "install", "--crds-only", "--dry-run", "-o", "yaml"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HOME": str(self._home)},
            check=True,
        ).stdout
        crds: list[Obj] = []
        for doc in yaml.safe_load_all(out):
            for item in _items(doc):
                if item.get("kind") == "CustomResourceDefinition":
                    crds.append(item)
        if not crds:
            raise VeleroError("`velero install --crds-only --dry-run -o yaml` printed no CRDs")
        return crds

    def disableable_controllers(self) -> list[str]:
        """The controller names ``velero server --disable-controllers`` accepts."""
        out = subprocess.run(
            [str(self.binary), "server", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HOME": str(self._home)},
            check=False,
        ).stdout
        line = next((ln for ln in out.splitlines() if "--disable-controllers" in ln), "")
        match = _VALID_CONTROLLERS.search(line)
        if not match:
            raise VeleroError("no list of controllers in `velero server --help`")
        return [name for name in match.group(1).split(",") if name]

    def close(self) -> None:
        shutil.rmtree(self._home, ignore_errors=True)


def _items(doc: Any) -> Iterable[Obj]:
    if not isinstance(doc, dict):
        return []
    if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
        return [item for item in doc["items"] if isinstance(item, dict)]
    return [doc]


# --- installing into a cluster --------------------------------------------------------------


def _ok(cp: ControlPlane, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
    status, obj = cp.request(method, path, body, **kw)
    if status >= 300:
        raise ControlPlaneError(f"{method} {path} -> {status}: {obj.get('message', obj)}")
    return obj


def apply_crds(cp: ControlPlane, crds: Sequence[Obj]) -> list[str]:
    """Create (or replace) each CRD and wait until it is served."""
    base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        body = {k: v for k, v in crd.items() if k != "status"}
        status, current = cp.request("GET", f"{base}/{name}")
        if status == 404:
            _ok(cp, "POST", base, body)
        else:
            body = {**body, "metadata": {**body["metadata"]}}
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            _ok(cp, "PUT", f"{base}/{name}", body)
        names.append(name)
    for name in names:
        cp.wait_crd_established(name, timeout=60.0)
    return names


def apply_crd_files(cp: ControlPlane, paths: Iterable[Path]) -> list[str]:
    """``apply_crds`` for CRD manifests on disk (e.g. the snapshot CRDs in harness/crds)."""
    crds = [
        doc
        for path in paths
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"
    ]
    return apply_crds(cp, crds)


def install(cp: ControlPlane, client: VeleroClient, version: str) -> None:
    """What ``velero install`` leaves that the tests need: the version's CRDs, the namespace,
    and a ``velero`` Deployment object (restores look it up; nothing runs it). Its image tag
    is the version, as the worker's ``--velero-version auto`` reads it."""
    apply_crds(cp, client.crds())
    cp.create_namespace(client.namespace)
    labels = {"component": "velero", "deploy": "velero"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "velero", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"deploy": "velero"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "velero",
                            "image": f"velero/velero:{version}",
                            "command": ["/velero"],
                            "args": ["server"],
                        }
                    ]
                },
            },
        },
    }
    status, obj = cp.request(
        "POST", f"/apis/apps/v1/namespaces/{client.namespace}/deployments", deployment
    )
    if status not in (201, 409):
        raise ControlPlaneError(f"create deployment velero -> {status}: {obj.get('message')}")


def add_location(
    cp: ControlPlane,
    name: str,
    *,
    bucket: str,
    prefix: str,
    config: Mapping[str, str],
    credentials: bytes,
    namespace: str = NAMESPACE,
    default: bool = False,
) -> Obj:
    """A BackupStorageLocation (provider ``aws``) that reads its credentials from a Secret
    through ``spec.credential``, as both Velero and the worker do."""
    secret = f"{name}-credentials"
    status, obj = cp.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "data": {"cloud": base64.b64encode(credentials).decode()},
        },
    )
    if status not in (201, 409):
        raise ControlPlaneError(f"create secret {secret} -> {status}: {obj.get('message')}")
    spec: Obj = {
        "provider": "aws",
        "objectStorage": {"bucket": bucket, **({"prefix": prefix} if prefix else {})},
        "config": dict(config),
        "credential": {"name": secret, "key": "cloud"},
        "default": default,
    }
    body = {
        "apiVersion": "velero.io/v1",
        "kind": "BackupStorageLocation",
        "metadata": {"name": name},
        "spec": spec,
    }
    return _ok(
        cp, "POST", f"/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations", body
    )


def mark_available(cp: ControlPlane, name: str, namespace: str = NAMESPACE) -> None:
    """Set a location's ``status.phase`` to Available, as Velero's BSL controller does once
    it can list the bucket (Velero 1.16.2+ syncs only Available locations; the worker runs
    where that controller is not). Through ``/status`` when the CRD has that subresource."""
    path = f"/apis/velero.io/v1/namespaces/{namespace}/backupstoragelocations/{name}"
    patch = {"status": {"phase": "Available"}}
    kw = {"content_type": "application/merge-patch+json"}
    status, _ = cp.request("PATCH", f"{path}/status", patch, **kw)
    if status == 404:
        _ok(cp, "PATCH", path, patch, **kw)
    elif status >= 300:
        raise ControlPlaneError(f"PATCH {path}/status -> {status}")


# --- the server -----------------------------------------------------------------------------


class VeleroServer(Service):
    """``velero server`` against a ``ControlPlane``, with the AWS plugin in a private plugin
    dir, metrics and profiler on free loopback ports, one at a time per host."""

    def __init__(
        self,
        binary: Path,
        plugin: Path,
        kubeconfig: Path,
        *,
        namespace: str = NAMESPACE,
        features: Sequence[str] = (),
        disable_controllers: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        lock_timeout: float = 900.0,
        startup_timeout: float = 120.0,
    ) -> None:
        self.binary = binary
        self.plugin = plugin
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.features = list(features)
        self.disable_controllers = list(disable_controllers)
        self.extra_args = list(extra_args)
        self._env = dict(env or {})
        self._log_dir = log_dir
        self._lock_timeout = lock_timeout
        self._startup_timeout = startup_timeout
        self._lock: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._work: Path | None = None
        self.log_path = Path(tempfile.gettempdir()) / "velero-server.log"

    def _acquire(self) -> None:
        lock = open(SERVER_LOCK, "ab")  # noqa: SIM115 (held until stop)
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise VeleroError(
                        f"another velero server held {SERVER_LOCK} for {self._lock_timeout}s"
                    ) from None
                time.sleep(0.5)
        self._lock = lock

    def _start(self) -> None:
        self._acquire()
        if _listening(CONTROLLER_RUNTIME_METRICS_PORT):
            raise VeleroError(
                f"127.0.0.1:{CONTROLLER_RUNTIME_METRICS_PORT} is taken: velero server's "
                "controller-runtime metrics listener needs it (another velero server?)"
            )
        self._work = Path(tempfile.mkdtemp(prefix="backup-sync-velero-server."))
        plugins = self._work / "plugins"
        plugins.mkdir()
        # A copy, not a link: Velero runs every regular executable file of the dir.
        shutil.copy2(self.plugin, plugins / self.plugin.name)
        log_dir = self._log_dir or self._work
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"velero-server-{os.getpid()}-{free_port()}.log"
        argv = [
            str(self.binary),
            "server",
            "--kubeconfig",
            str(self.kubeconfig),
            "--namespace",
            self.namespace,
            "--plugin-dir",
            str(plugins),
            "--metrics-address",
            f"127.0.0.1:{free_port()}",
            "--profiler-address",
            f"127.0.0.1:{free_port()}",
            "--log-level",
            "debug",
            *(["--features", ",".join(self.features)] if self.features else []),
            *(
                ["--disable-controllers", ",".join(self.disable_controllers)]
                if self.disable_controllers
                else []
            ),
            *self.extra_args,
        ]
        env = {**os.environ, "HOME": str(self._work), **self._env}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._work,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise VeleroError(
                    f"velero server exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            log = self.log()
            if SERVER_STARTED in log and MANAGER_STARTED in log:
                return
            time.sleep(0.2)
        raise VeleroError(
            f"velero server not started within {self._startup_timeout:.0f}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, grace=15.0)
        if self._work is not None:
            # Keep the log (it may be in the work dir): move it out first.
            if self.log_path.parent == self._work and self.log_path.exists():
                kept = Path(tempfile.gettempdir()) / self.log_path.name
                with contextlib.suppress(OSError):
                    shutil.move(str(self.log_path), kept)
                    self.log_path = kept
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        lock, self._lock = self._lock, None
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check() -> int:
    for version in pinned_versions():
        try:
            binary = velero_binary(version)
        except VeleroUnavailable as exc:
            print(f"velero {version}: {exc}")
            continue
        client = VeleroClient(binary, Path(os.devnull))
        print(f"velero {version}: {binary} (client {client.version()}, {len(client.crds())} CRDs)")
        print(f"  controllers: {','.join(client.disableable_controllers())}")
        client.close()
    print(f"plugin: {aws_plugin_binary()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.velero", description=__doc__)
    parser.add_argument("--check", action="store_true", required=True)
    parser.parse_args(argv)
    return _check()


if __name__ == "__main__":
    sys.exit(main())
