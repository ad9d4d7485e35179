"""Faults in every dependency of a run, one cell per (dependency, fault, variant): the real
CLI against the real kube-apiserver and each object-store emulator, with the faults
injected in between (docs/faults.md has the matrix, the numbers and how to reproduce).

Dependencies: the Kubernetes API server (the store is moto then), S3 (moto), GCS
(fake-gcs-server), Azure Blob (Azurite). Faults: TCP-level through toxiproxy (a latency
spike, a connection cut mid-response, a black hole until the client's timeout) and
server-side through ``harness.faultproxy`` (429 with ``Retry-After``, 500/503 with each
server's own error body). Variants:

- transient: the fault is on from the start of the run and goes away within the retry
  budget (toxics: a few seconds after the first client connects to the proxy; server errors: the
  first attempt of every distinct request). Expected: exit 0 and the same cluster state as
  an undisturbed run, at once.
- persistent: the fault stays for the whole run. Expected: exit 0 where the fault only
  slows the run down (latency well under the request timeout), otherwise exit 1 with the
  cluster untouched (a pre-seeded orphan still there, ``lastSyncedTime`` not stamped);
  then the fault is removed and a clean ``--force`` run converges to the undisturbed state.

Every cell asserts that its fault really happened (counted by the proxy that injected it)
and that the run ended within a bound computed from its ``--request-timeout``,
``--retry-attempts`` and ``--retry-max-seconds``.

A persistent API fault fails the run at its first call; the targeted API cells at the end
fail one kind of request only (writes, Backup creates whose answer is lost, the status
patch), so the run gets further.

Cluster states are compared through ``tests.integration.clusterstate``, the normalizer of
the interruption tests too; every bucket is seeded with the same timestamps, so a cell's
namespace must equal the undisturbed run's, Backup status included.

``FAULT_MATRIX_OUT=path.json`` writes the measured matrix (docs/faults.md is made from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.faultproxy import (
    RESET_MID_RESPONSE,
    Fault,
    FaultProxy,
    Match,
    azure_error,
    every,
    gcs_error,
    kube_status,
    match,
    s3_error,
)
from harness.objectstores import AZURITE_ACCOUNT, ObjectStoreServer, TestCA
from harness.seed import SeedBackup
from harness.tools import ToolUnavailable, tool_path
from harness.toxiproxy import Toxiproxy, Traffic
from tests.conftest import in_ci
from tests.integration import clusterstate
from tests.integration.clusterstate import ClusterState
from tests.integration.env import CliResult, SyncEnv

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Obj = dict[str, Any]

LOCATION = "default"
ORPHAN = "orphan-1"  # Completed, labelled for LOCATION, not in the bucket
BACKUPS = tuple(SeedBackup(f"fault-{i:02}", pod_volume_backups=2) for i in range(8))
POD_VOLUME_BACKUPS = sum(b.pod_volume_backups for b in BACKUPS)
SEEDED_AT = datetime.now(UTC)  # every bucket holds the same bytes

API = "api"
S3, GCS, AZURE = "s3", "gcs", "azure"
SERVERS = {S3: "moto", GCS: "fake_gcs", AZURE: "azurite"}  # conftest fixtures
ROUTES: dict[str, Callable[[str], dict[str, str]]] = {  # spec.config via another endpoint
    S3: lambda url: {"s3Url": url},
    GCS: lambda url: {"storeEndpoint": url},
    AZURE: lambda url: {"storageAccountURI": f"{url}/{AZURITE_ACCOUNT}"},
}

LATENCY, RESET, BLACKHOLE, THROTTLE, SERVER_ERROR = "latency", "reset", "blackhole", "429", "5xx"
TRANSIENT, PERSISTENT = "transient", "persistent"

LATENCY_MS = 1500
# toxiproxy limit_data: bytes a connection may carry towards the client before it is cut.
# Each is about half of the first response a run gets from that store (the listing:
# 1.1 KB from moto and Azurite, 0.3 KB from fake-gcs-server), so the cut lands inside it.
# For the API server the TLS handshake comes first; its size is measured (api_cut).
CUT_BYTES = {S3: 512, GCS: 150, AZURE: 512}


@dataclass(frozen=True, slots=True)
class Budget:
    """The worker's time flags for one cell."""

    request_timeout: float
    attempts: int
    max_seconds: float

    def args(self) -> tuple[str, ...]:
        return (
            "--request-timeout",
            f"{self.request_timeout:g}",
            "--retry-attempts",
            str(self.attempts),
            "--retry-max-seconds",
            f"{self.max_seconds:g}",
        )

    @property
    def call(self) -> float:
        """Worst case of one call that keeps failing: no backoff may end after
        ``max_seconds`` (worker.retry: stop_before_delay), and the attempt started last may
        still take a connect and a read timeout."""
        return self.max_seconds + 2 * self.request_timeout

    def retried_once(self, retry_after: float = 0) -> float:
        """One failed attempt, then success: the attempt, plus the first backoff (0.2 s +
        up to 1 s of jitter) or the server's Retry-After, whichever is longer."""
        return 2 * self.request_timeout + max(1.2, retry_after)


# Server errors, cuts and black holes: short timeouts, so a persistent fault ends quickly.
QUICK = Budget(request_timeout=2, attempts=4, max_seconds=6)
# Latency: a request timeout well above a TLS handshake plus a response at 1.5 s each.
PATIENT = Budget(request_timeout=5, attempts=4, max_seconds=6)

# Interpreter start, imports and an undisturbed run of this size take ~1 s here; the
# allowance is for a loaded 2-core machine.
STARTUP = 10.0
# The longest chain of calls one after another that a fault can stretch: the API server sees
# list BSLs, get Secret, list Backups, then per backup (in parallel) create, 2 pod volume
# backups and the mark's removal, then delete the orphan, patch the BSL, Events; each new
# TLS connection adds a round trip. A store sees the listing, then per backup (in
# parallel) the metadata and the pod volume backup file.
SEQUENTIAL_CALLS = {API: 12, S3: 3, GCS: 3, AZURE: 3}


@dataclass(frozen=True, slots=True)
class Cell:
    dependency: str
    fault: str
    variant: str
    expected_exit: int
    budget: Budget
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.dependency}-{self.fault}-{self.variant}"

    @property
    def store(self) -> str:
        return S3 if self.dependency == API else self.dependency

    def bound(self) -> float:
        """Seconds the faulted run may take at most, from its flags."""
        b, calls = self.budget, SEQUENTIAL_CALLS[self.dependency]
        latency = LATENCY_MS / 1000
        if self.fault == LATENCY:  # every round trip on the longest chain waits once more
            return STARTUP + latency * (calls + 4)
        if self.variant == PERSISTENT:  # the first call that meets it fails the run
            return STARTUP + b.call
        if self.fault in (THROTTLE, SERVER_ERROR):  # each call on the chain retried once
            return STARTUP + calls * b.retried_once(retry_after=1)
        # A toxic window: the call that meets it has its whole budget to get through.
        return STARTUP + b.call


# The expected exit code of every (fault, variant), the same for all four dependencies. For
# the API server a persistent fault already fails the first call of the run (listing the
# BackupStorageLocations): the run fails as a whole, with no location touched; the targeted
# cells at the end fail later calls.
EXPECTED: dict[tuple[str, str], tuple[int, str]] = {
    (LATENCY, TRANSIENT): (0, "slower, complete"),
    (LATENCY, PERSISTENT): (0, f"{LATENCY_MS} ms per response, far under the 5 s timeout"),
    (RESET, TRANSIENT): (0, "the cut attempts are retried"),
    (RESET, PERSISTENT): (1, "every connection is cut in its first response"),
    (BLACKHOLE, TRANSIENT): (0, "the attempt that timed out is retried"),
    (BLACKHOLE, PERSISTENT): (1, "every attempt times out"),
    (THROTTLE, TRANSIENT): (0, "each request retried once, after its Retry-After"),
    (THROTTLE, PERSISTENT): (1, "retries exhausted"),
    (SERVER_ERROR, TRANSIENT): (0, "each request retried once"),
    (SERVER_ERROR, PERSISTENT): (1, "retries exhausted"),
}


def _cells() -> list[Cell]:
    cells = []
    for dependency in (API, S3, GCS, AZURE):
        for fault in (LATENCY, RESET, BLACKHOLE, THROTTLE, SERVER_ERROR):
            budget = PATIENT if fault == LATENCY else QUICK
            for variant in (TRANSIENT, PERSISTENT):
                code, why = EXPECTED[fault, variant]
                cells.append(Cell(dependency, fault, variant, code, budget, why))
    return cells


CELLS = _cells()


# -- the matrix report ----------------------------------------------------------------------

MATRIX: list[Obj] = []


@pytest.fixture(scope="module", autouse=True)
def matrix_out() -> Iterator[None]:
    yield
    path = os.environ.get("FAULT_MATRIX_OUT")
    if path and MATRIX:
        Path(path).write_text(
            json.dumps(
                {
                    "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                    "backups": len(BACKUPS),
                    "podVolumeBackupsEach": BACKUPS[0].pod_volume_backups,
                    "latencyMs": LATENCY_MS,
                    "cells": MATRIX,
                },
                indent=2,
            )
            + "\n"
        )


# -- fixtures: proxies in front of every dependency -----------------------------------------


@pytest.fixture(scope="module")
def toxi() -> Iterator[Toxiproxy]:
    """toxiproxy with byte counters (built from its Go module; CI builds it beforehand)."""
    try:
        binary = tool_path("toxiproxy", build=not in_ci())
    except ToolUnavailable as exc:
        if in_ci():
            pytest.fail(f"toxiproxy unavailable: {exc}", pytrace=False)
        pytest.skip(f"toxiproxy unavailable: {exc}")
    with Toxiproxy(binary, proxy_metrics=True) as server:
        yield server


@dataclass
class Routes:
    """Per dependency, the toxiproxy proxy and the fault proxy in front of it."""

    toxi: Toxiproxy
    cp: ControlPlane
    test_ca: TestCA
    toxic_ports: dict[str, int] = field(default_factory=dict)
    fault_proxies: dict[str, FaultProxy] = field(default_factory=dict)
    api_cut: int = 0  # limit_data bytes for the API: the TLS handshake plus a little

    def upstream(self, dependency: str, server: ObjectStoreServer | None) -> str:
        if dependency == API:
            return self.cp.server.removeprefix("https://")
        assert server is not None
        return server.endpoint.split("://", 1)[1].split("/", 1)[0]

    def toxic_port(self, dependency: str, server: ObjectStoreServer | None) -> int:
        if dependency not in self.toxic_ports:
            upstream = self.upstream(dependency, server)
            self.toxic_ports[dependency] = self.toxi.proxy(dependency, upstream)
            if dependency == API:
                self.api_cut = self._api_handshake_bytes() + 64
        return self.toxic_ports[dependency]

    def fault_proxy(self, dependency: str, server: ObjectStoreServer | None) -> FaultProxy:
        if dependency not in self.fault_proxies:
            upstream = self.upstream(dependency, server)
            if dependency == API:
                # TLS towards the worker with a 127.0.0.1 certificate of the test CA; towards
                # the apiserver as the admin (client certificate).
                proxy = FaultProxy(
                    upstream,
                    upstream_tls=self.cp.admin_ssl_context(),
                    tls=(self.test_ca.cert_file, self.test_ca.key_file),
                )
            else:
                proxy = FaultProxy(upstream)
            self.fault_proxies[dependency] = proxy.start()
        return self.fault_proxies[dependency]

    def _api_handshake_bytes(self) -> int:
        """Bytes the apiserver sends on a new TLS connection before any response (the
        handshake and session tickets), so a cut after them plus a little lands inside
        the first response."""
        import http.client

        before = self.toxi.traffic(API)
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.toxic_ports[API], context=self.cp.admin_ssl_context(), timeout=10
        )
        conn.connect()
        time.sleep(0.3)  # the session tickets follow the handshake
        conn.close()
        handshake = 0
        for _ in range(40):  # counted once toxiproxy has seen the connection end
            time.sleep(0.05)
            handshake = (self.toxi.traffic(API) - before).sent.get("downstream", 0)
            if handshake:
                break
        assert handshake > 500, f"implausible TLS handshake size {handshake}"
        return handshake


@pytest.fixture(scope="module")
def routes(toxi: Toxiproxy, control_plane: ControlPlane, test_ca: TestCA) -> Iterator[Routes]:
    r = Routes(toxi, control_plane, test_ca)
    yield r
    for proxy in r.fault_proxies.values():
        proxy.stop()


# -- the undisturbed state, per store ---------------------------------------------------------


def last_synced(env: SyncEnv) -> str | None:
    return clusterstate.last_synced(env, LOCATION)


@pytest.fixture(scope="module")
def undisturbed(
    control_plane: ControlPlane, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], ClusterState]]:
    """The state an undisturbed run leaves, per store (computed once each): every backup with
    its pod volume backups, the orphan deleted, ``lastSyncedTime`` stamped."""
    cache: dict[str, ClusterState] = {}
    namespaces: list[str] = []

    def state(store: str) -> ClusterState:
        if store not in cache:
            namespace = f"velero-{uuid.uuid4().hex[:10]}"
            namespaces.append(namespace)
            control_plane.create_namespace(namespace)
            env = prepare(
                SyncEnv(control_plane, namespace, request.getfixturevalue(SERVERS[store]))
            )
            result = env.run(*QUICK.args())
            assert result.code == 0, result.stderr[-3000:]
            reference = clusterstate.read(env)
            # Not vacuous: every backup, every pod volume backup owned by the right UID.
            assert sorted(reference.backups) == sorted(b.name for b in BACKUPS)
            assert len(reference.pod_volume_backups) == POD_VOLUME_BACKUPS
            clusterstate.assert_sound(reference, "the undisturbed run")
            assert reference.last_synced(LOCATION)
            cache[store] = reference
        return cache[store]

    yield state
    for namespace in namespaces:
        control_plane.delete_namespace(namespace)


def prepare(env: SyncEnv, config: dict[str, str] | None = None) -> SyncEnv:
    """The bucket with BACKUPS, the location (through ``config``'s endpoint), the orphan."""
    env.seed(*BACKUPS, now=SEEDED_AT)
    env.add_location(LOCATION, default=True, config=config)
    env.add_backup(ORPHAN, LOCATION, "Completed")
    return env


# -- injecting the faults -------------------------------------------------------------------


def server_fault(dependency: str, fault: str) -> Fault:
    """Each server's own way of saying "too many requests" or "try again later"."""
    if fault == THROTTLE:
        return {
            API: kube_status(429, "TooManyRequests", "too many requests", retry_after=1),
            S3: s3_error(429, "TooManyRequests", retry_after=1),
            GCS: gcs_error(429, "rateLimitExceeded", "Rate limit exceeded", retry_after=1),
            AZURE: azure_error(429, "TooManyRequests", "Too many requests", retry_after=1),
        }[dependency]
    return {
        API: kube_status(
            500, "InternalError", "Internal error occurred: etcdserver: leader changed"
        ),
        S3: s3_error(503, "SlowDown"),
        GCS: gcs_error(503, "backendError"),
        AZURE: azure_error(503, "ServerBusy"),
    }[dependency]


@dataclass
class Injection:
    """One armed fault: where the worker must connect, and afterwards the evidence."""

    describe: str
    config: dict[str, str] | None = None  # the location's endpoint (store faults)
    kubeconfig: Path | None = None  # API faults
    disarm: Callable[[], None] = lambda: None
    evidence: Callable[[], Obj] = dict


def sockets_to(port: int) -> set[tuple[str, str, str]]:
    """Open TCP sockets of connections to 127.0.0.1:``port`` (Linux ``/proc/net/tcp``:
    either end, any state but LISTEN, still held by a process), by address pair and inode,
    so that a new connection is new even on an address pair used before."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
        if state != "0A" and inode != "0" and port in ports:
            found.add((local, remote, inode))
    return found


class ToxicWindow:
    """Removes toxics ``hold`` seconds after the first client connects to the proxy: a
    fault that is on from the start of the run and then goes away.

    A client has arrived when a new socket to the proxy is open, or when toxiproxy has
    counted bytes of a connection that ended: a connection that a toxic cuts at once can
    end (with a reset, leaving no TIME_WAIT behind) between two looks at the sockets, and a
    connection that a toxic holds open is counted only when it ends."""

    def __init__(
        self, toxi: Toxiproxy, proxy: str, port: int, toxics: list[str], hold: float
    ) -> None:
        self._toxi, self._proxy, self._toxics, self._hold = toxi, proxy, toxics, hold
        self._port = port
        self._armed_at = time.monotonic()
        self._sockets = sockets_to(port)
        self._traffic = toxi.traffic(proxy)
        self._stop = threading.Event()
        self.first_connection_at: float | None = None
        self.removed_at: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self._arrived():
                self.first_connection_at = time.monotonic()
                if not self._stop.wait(self._hold):
                    self.remove()
                return
            self._stop.wait(0.01)

    def _arrived(self) -> bool:
        if sockets_to(self._port) - self._sockets:
            return True
        return self._toxi.traffic(self._proxy) != self._traffic

    def timeline(self) -> Obj:
        """When the first client connected and when the toxics went, in seconds from
        arming."""

        def since(t: float | None) -> float | None:
            return None if t is None else round(t - self._armed_at, 2)

        return {
            "firstConnection": since(self.first_connection_at),
            "removed": since(self.removed_at),
        }

    def remove(self) -> None:
        if self.removed_at is None:
            self.removed_at = time.monotonic()
            for name in self._toxics:
                self._toxi.remove_toxic(self._proxy, name)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def arm(cell: Cell, routes: Routes, server: ObjectStoreServer) -> Injection:
    """Put the cell's fault between the worker and its dependency."""
    store_server = None if cell.dependency == API else server
    if cell.fault in (THROTTLE, SERVER_ERROR):
        return _arm_server_fault(cell, routes, store_server)
    return _arm_toxic(cell, routes, store_server)


def _route(cell: Cell, routes: Routes, url: str, ca_pem: bytes | None = None) -> Obj:
    """The worker through ``url``: the location's endpoint, or for the API a kubeconfig."""
    if cell.dependency == API:
        return {"kubeconfig": routes.cp.admin_kubeconfig_via(url, ca_pem)}
    return {"config": ROUTES[cell.dependency](url)}


def _arm_server_fault(cell: Cell, routes: Routes, server: ObjectStoreServer | None) -> Injection:
    proxy = routes.fault_proxy(cell.dependency, server)
    proxy.reset()
    fault = server_fault(cell.dependency, cell.fault)
    if cell.variant == TRANSIENT:
        rule = proxy.inject(fault, match=every, times=1, each=True)
        describe = f"{fault.name} to the first attempt of every distinct request"
    else:
        rule = proxy.inject(fault, match=every)
        describe = f"{fault.name} to every request"

    def evidence() -> Obj:
        return {
            "injected": rule.hits,
            "forwarded": proxy.forwarded,
            "retryAfterGaps": _retry_gaps(proxy) if fault.status == 429 else [],
        }

    route = _route(cell, routes, proxy.url, routes.test_ca.ca_pem)
    return Injection(describe, disarm=proxy.clear, evidence=evidence, **route)


def _retry_gaps(proxy: FaultProxy) -> list[float]:
    """Seconds from each injected answer to the next attempt of the same request."""
    gaps = []
    exchanges = list(proxy.exchanges)
    for i, injected in enumerate(exchanges):
        if not injected.injected:
            continue
        for later in exchanges[i + 1 :]:
            if later.key == injected.key:
                gaps.append(round(later.at - injected.at, 3))
                break
    return gaps


def _arm_toxic(cell: Cell, routes: Routes, server: ObjectStoreServer | None) -> Injection:
    toxi = routes.toxi
    port = routes.toxic_port(cell.dependency, server)
    proxy = cell.dependency
    toxi.reset()
    before = toxi.traffic(proxy)
    if cell.fault == LATENCY:
        toxics = [toxi.add_toxic(proxy, "latency", latency=LATENCY_MS, jitter=0)]
        describe = f"toxiproxy latency {LATENCY_MS} ms on every response"
        hold = 3.0
    elif cell.fault == RESET:
        cut = routes.api_cut if cell.dependency == API else CUT_BYTES[cell.dependency]
        toxics = [toxi.add_toxic(proxy, "limit_data", bytes=cut)]
        describe = f"toxiproxy limit_data: every connection cut after {cut} bytes to the client"
        hold = 0.5
    else:
        toxics = [
            toxi.add_toxic(proxy, "timeout", stream=stream, timeout=0)
            for stream in ("upstream", "downstream")
        ]
        describe = "toxiproxy timeout 0 both ways: nothing gets through, nothing is closed"
        hold = cell.budget.request_timeout + 0.5  # the first attempt times out first
    window: ToxicWindow | None = None
    if cell.variant == TRANSIENT:
        window = ToxicWindow(toxi, proxy, port, toxics, hold)
        describe += f", removed {hold:g} s after the first connection"
    url = f"{'https' if cell.dependency == API else 'http'}://127.0.0.1:{port}"

    def disarm() -> None:
        if window is not None:
            window.close()
        toxi.reset()

    def evidence() -> Obj:
        # toxiproxy counts what it received and passed on, per direction, as each
        # connection ends: wait until the worker's last ones are in.
        delta: Traffic = toxi.traffic(proxy) - before
        for _ in range(20):
            time.sleep(0.05)
            settled, delta = delta, toxi.traffic(proxy) - before
            if settled == delta:
                break
        out: Obj = {
            "bytesFromClient": delta.received.get("upstream", 0),
            "bytesToClient": delta.sent.get("downstream", 0),
            "droppedToServer": delta.held_back("upstream"),
            "droppedToClient": delta.held_back("downstream"),
        }
        if window is not None:
            out["window"] = window.timeline()
        return out

    return Injection(describe, disarm=disarm, evidence=evidence, **_route(cell, routes, url))


# -- the cells ------------------------------------------------------------------------------


def run(env: SyncEnv, cell: Cell, injection: Injection, *extra: str) -> CliResult:
    args = [*cell.budget.args(), *extra]
    if injection.kubeconfig is not None:
        args += ["--kubeconfig", str(injection.kubeconfig)]  # the last flag wins
    return env.run(*args, timeout=cell.bound() + 60)


def assert_ended(result: CliResult, expected_exit: int, bound: float, why: str) -> None:
    """The faulted run exited as expected, within its time bound."""
    assert result.code == expected_exit, (
        f"exit {result.code}, expected {expected_exit} ({why}); stderr:\n{result.stderr[-4000:]}"
    )
    assert result.seconds <= bound, f"took {result.seconds:.1f}s, bound {bound:.1f}s"


def assert_fault_happened(cell: Cell, evidence: Obj, result: CliResult) -> None:
    """A cell whose fault never met the worker proves nothing: fail it."""
    if cell.fault in (THROTTLE, SERVER_ERROR):
        assert evidence["injected"] > 0, f"no request met the fault: {evidence}"
        if cell.variant == TRANSIENT:
            # The first attempt of every distinct request: the listing, and per backup its
            # metadata and pod volume backup file (a store); list BSLs, get the Secret,
            # list Backups and one create per backup and pod volume backup (the API).
            floor = 3 + 3 * len(BACKUPS) if cell.dependency == API else 1 + 2 * len(BACKUPS)
            assert evidence["injected"] >= floor, f"fewer faulted requests than calls: {evidence}"
        if cell.fault == THROTTLE and cell.variant == TRANSIENT:
            gaps = evidence["retryAfterGaps"]
            assert gaps and min(gaps) >= 0.95, f"Retry-After: 1 not honoured: {gaps}"
    elif cell.fault == LATENCY:
        latency = LATENCY_MS / 1000
        assert evidence["bytesFromClient"] > 0
        if cell.dependency == API:  # handshake and first response on the first connection
            assert result.seconds >= 2 * latency, f"run not delayed: {result.seconds:.2f}s"
        else:  # the listing waited at least once
            seconds = result.location(LOCATION)["seconds"]
            assert seconds >= latency, f"location sync not delayed: {seconds}s"
    elif cell.fault == RESET:
        assert evidence["bytesToClient"] > 0 and evidence["droppedToClient"] > 0, (
            f"no response was cut: {evidence}"
        )
    else:
        assert evidence["droppedToServer"] > 0, f"nothing was black-holed: {evidence}"
    if cell.variant == TRANSIENT and cell.fault != LATENCY:
        assert "transient failure, retrying" in result.stderr, "the worker never retried"


def matrix_row(
    dependency: str,
    fault: str,
    variant: str,
    injection: str,
    budget: Budget,
    expected_exit: int,
    bound: float,
    result: CliResult,
    evidence: Obj,
) -> Obj:
    """One cell of the matrix report; its verdict comes from ``verdict``."""
    return {
        "dependency": dependency,
        "fault": fault,
        "variant": variant,
        "injection": injection,
        "flags": " ".join(budget.args()),
        "expectedExit": expected_exit,
        "exit": result.code,
        "seconds": round(result.seconds, 2),
        "boundSeconds": round(bound, 1),
        "evidence": evidence,
        "verdict": "fail",
    }


@contextlib.contextmanager
def verdict(row: Obj) -> Iterator[None]:
    """The assertions of the block decide ``row``'s verdict (the first line of the first
    one that fails); the row joins the matrix either way."""
    try:
        yield
        row["verdict"] = "pass"
    except AssertionError as exc:
        row["verdict"] = "fail: " + str(exc).splitlines()[0][:200]
        raise
    finally:
        MATRIX.append(row)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_fault(
    cell: Cell,
    control_plane: ControlPlane,
    velero_namespace: str,
    routes: Routes,
    undisturbed: Callable[[str], ClusterState],
    request: pytest.FixtureRequest,
) -> None:
    server = request.getfixturevalue(SERVERS[cell.store])
    expected_state = undisturbed(cell.store)
    env = SyncEnv(control_plane, velero_namespace, server)
    injection = arm(cell, routes, server)
    try:
        prepare(env, injection.config)
        before = env.snapshot()
        result = run(env, cell, injection)
        evidence = injection.evidence()
    finally:
        injection.disarm()
    row = matrix_row(
        cell.dependency,
        cell.fault,
        cell.variant,
        injection.describe,
        cell.budget,
        cell.expected_exit,
        cell.bound(),
        result,
        evidence,
    )
    with verdict(row):
        assert_ended(result, cell.expected_exit, cell.bound(), cell.why)
        assert_fault_happened(cell, evidence, result)
        if cell.expected_exit == 0:
            clusterstate.assert_converged(
                clusterstate.read(env), expected_state, "after the faulted run"
            )
        else:
            # Failed cleanly: nothing written at all (the orphan is still there, the status
            # not stamped), and the summary says so.
            assert ORPHAN in env.list("backups")
            assert last_synced(env) is None
            assert env.snapshot() == before, "a failed run wrote to the cluster"
            if cell.dependency != API:
                assert result.location(LOCATION)["outcome"] == "failed"
            # Without the fault, a forced run converges to the undisturbed state.
            clean = run(env, cell, injection, "--force")
            row.update(cleanExit=clean.code, cleanSeconds=round(clean.seconds, 2))
            assert clean.code == 0, clean.stderr[-4000:]
            clusterstate.assert_converged(
                clusterstate.read(env), expected_state, "after the clean run"
            )


# -- targeted API faults: one kind of request only ------------------------------------------

BACKUP_CREATES = match("POST", r"/apis/velero\.io/v1/namespaces/[^/]+/backups$")
WRITES = match(("POST", "PUT", "PATCH", "DELETE"))
STATUS_PATCHES = match("PATCH", r"/backupstoragelocations/[^/]+(/status)?$")
SUMMARY_FIELDS = (
    "outcome",
    "created",
    "resumed",
    "skipped",
    "podVolumeBackupsCreated",
    "orphansDeleted",
    "statusPatched",
)


def unavailable(what: str) -> Fault:
    """The apiserver's 503 (as under overload or with etcd unavailable)."""
    message = f"the server is currently unable to handle {what}"
    return kube_status(503, "ServiceUnavailable", message)


@dataclass(frozen=True, slots=True)
class Targeted:
    id: str
    describe: str
    fault: Fault
    match: Match
    each_once: bool  # the first attempt of every matching request; else all of them
    expected_exit: int
    summary: Obj  # what the location's summary must say, field by field
    why: str

    @property
    def variant(self) -> str:
        return TRANSIENT if self.each_once else PERSISTENT

    def bound(self) -> float:
        calls = SEQUENTIAL_CALLS[API]
        if self.each_once:
            return STARTUP + calls * QUICK.retried_once()
        return STARTUP + QUICK.call


TARGETED = [
    Targeted(
        "api-503-writes-persistent",
        "503 to every write (POST, PUT, PATCH, DELETE); reads pass",
        unavailable("writes"),
        WRITES,
        each_once=False,
        expected_exit=1,
        summary={"outcome": "failed", "created": 0, "orphansDeleted": 0, "statusPatched": False},
        why="reads work, every create, delete and patch fails: the location fails, "
        "nothing is written",
    ),
    Targeted(
        "api-reset-on-backup-create-transient",
        "the first attempt of every Backup create is applied by the server, then its "
        "answer is cut (TCP reset after half the body)",
        RESET_MID_RESPONSE,
        BACKUP_CREATES,
        each_once=True,
        expected_exit=0,
        summary={
            "outcome": "synced",
            "created": 0,
            "resumed": len(BACKUPS),
            "skipped": {},
            "podVolumeBackupsCreated": POD_VOLUME_BACKUPS,
            "orphansDeleted": 1,
        },
        why="the retry of each Backup create meets AlreadyExists for the Backup its own first "
        "attempt created, still marked: its pod volume backups are created at once, and it "
        "counts as resumed",
    ),
    Targeted(
        "api-503-status-patch-persistent",
        "503 to every patch of the BackupStorageLocation (lastSyncedTime); all else passes",
        unavailable("patches"),
        STATUS_PATCHES,
        each_once=False,
        expected_exit=1,
        summary={
            "outcome": "failed",
            "created": len(BACKUPS),
            "podVolumeBackupsCreated": POD_VOLUME_BACKUPS,
            "orphansDeleted": 0,
            "statusPatched": False,
        },
        why="only the lastSyncedTime patch fails, and it comes before the orphan deletions: "
        "the location fails having deleted nothing",
    ),
]


def failure(check: Callable[[], None]) -> str:
    """What ``check`` asserts that is not so; "" when it all holds."""
    try:
        check()
    except AssertionError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("cell", TARGETED, ids=[t.id for t in TARGETED])
def test_targeted_api_fault(
    cell: Targeted,
    control_plane: ControlPlane,
    velero_namespace: str,
    routes: Routes,
    undisturbed: Callable[[str], ClusterState],
    moto: ObjectStoreServer,
) -> None:
    expected_state = undisturbed(S3)
    proxy = routes.fault_proxy(API, None)
    proxy.reset()
    kubeconfig = control_plane.admin_kubeconfig_via(proxy.url, routes.test_ca.ca_pem)
    env = prepare(SyncEnv(control_plane, velero_namespace, moto))
    before = env.snapshot()
    synced_before = last_synced(env)
    rule = proxy.inject(
        cell.fault, match=cell.match, times=1 if cell.each_once else None, each=True
    )
    args = [*QUICK.args(), "--kubeconfig", str(kubeconfig)]
    try:
        result = env.run(*args, timeout=cell.bound() + 60)
    finally:
        proxy.clear()
    after = clusterstate.read(env)
    untouched = env.snapshot() == before
    summary: Obj = next(iter(result.summary.get("locations") or []), {})
    # The state a later clean run leaves, whatever the faulted run did.
    clean = env.run("--force", *args)
    not_converged = failure(
        lambda: clusterstate.assert_converged(
            clusterstate.read(env), expected_state, "after the clean run"
        )
    )
    with_pod_volume_backups = {
        (p["metadata"].get("labels") or {}).get("velero.io/backup-name")
        for p in after.pod_volume_backups.values()
    }
    row = matrix_row(
        API,
        cell.id.removeprefix("api-").rsplit("-", 1)[0],
        cell.variant,
        cell.describe,
        QUICK,
        cell.expected_exit,
        cell.bound(),
        result,
        {
            "injected": rule.hits,
            "forwarded": proxy.forwarded,
            "summary": {k: summary.get(k) for k in SUMMARY_FIELDS},
            "orphanKept": ORPHAN in after.backups,
            "lastSyncedTime": after.last_synced(LOCATION) is not None,
            "backupsWithoutPodVolumeBackups": sorted(
                set(after.backups) - with_pod_volume_backups - {ORPHAN}
            ),
            "markedPending": after.marked(),
        },
    )
    row.update(
        cleanExit=clean.code,
        cleanSeconds=round(clean.seconds, 2),
        convergedLater=clean.code == 0 and not not_converged,
    )
    with verdict(row):
        assert rule.hits > 0, "no request met the fault"
        assert_ended(result, cell.expected_exit, cell.bound(), cell.why)
        said = {k: summary.get(k) for k in cell.summary}
        assert said == cell.summary, f"summary {said}, expected {cell.summary} ({cell.why})"
        if cell.expected_exit == 0:
            clusterstate.assert_converged(after, expected_state, "after the faulted run")
        else:
            assert ORPHAN in after.backups, f"a failed location deleted its orphan ({cell.why})"
            assert after.last_synced(LOCATION) == synced_before, "lastSyncedTime changed"
            if cell.match is WRITES:
                assert untouched, "a run whose every write failed changed the cluster"
        assert clean.code == 0, f"clean run: exit {clean.code}: {clean.stderr[-3000:]}"
        assert not not_converged, not_converged


# -- docs/faults.md -------------------------------------------------------------------------

DEPENDENCY_NAMES = {
    API: "Kubernetes API server",
    S3: "S3 (moto)",
    GCS: "GCS (fake-gcs-server)",
    AZURE: "Azure Blob (Azurite)",
}
FAULT_NAMES = {
    LATENCY: f"latency spike ({LATENCY_MS} ms per response)",
    RESET: "connection cut mid-response",
    BLACKHOLE: "black hole until timeout",
    THROTTLE: "HTTP 429 + Retry-After: 1",
    SERVER_ERROR: "HTTP 500/503 (server's own error)",
}


def _outcome(cell: Obj) -> str:
    ok = "✓" if cell.get("verdict") == "pass" else "✗"
    text = f"{ok} exit {cell['exit']} in {cell['seconds']:.1f} s (≤ {cell['boundSeconds']:g})"
    if "cleanExit" in cell:
        text += f"; clean run: exit {cell['cleanExit']} in {cell['cleanSeconds']:.1f} s"
    return text


def _evidence(cell: Obj) -> str:
    e = cell["evidence"]
    if "injected" in e:
        text = f"{e['injected']} injected"
        gaps = e.get("retryAfterGaps")
        if gaps:
            text += f", retries after ≥ {min(gaps):.2f} s"
        return text
    if cell["fault"] == LATENCY:
        window = e.get("window")
        if window and window.get("removed") is not None:
            seconds = window["removed"] - window["firstConnection"]
            return f"on for {seconds:.1f} s from the first connection"
        return f"{e['bytesToClient']} B delayed"
    dropped = e["droppedToClient"] if cell["fault"] == RESET else e["droppedToServer"]
    return f"{dropped} B dropped"


def render(data: Obj) -> str:
    """The matrix tables of docs/faults.md from a ``FAULT_MATRIX_OUT`` file."""
    cells = {(c["dependency"], c["fault"], c["variant"]): c for c in data["cells"]}
    lines = [
        "| dependency | fault | transient: expected → measured | evidence "
        "| persistent: expected → measured | evidence |",
        "|---|---|---|---|---|---|",
    ]
    for dependency in (API, S3, GCS, AZURE):
        for fault in (LATENCY, RESET, BLACKHOLE, THROTTLE, SERVER_ERROR):
            row = [DEPENDENCY_NAMES[dependency], FAULT_NAMES[fault]]
            for variant in (TRANSIENT, PERSISTENT):
                cell = cells.get((dependency, fault, variant))
                if cell is None:
                    row += ["not run", ""]
                    continue
                row += [f"{cell['expectedExit']} → {_outcome(cell)}", _evidence(cell)]
            lines.append("| " + " | ".join(row) + " |")
    targeted = [c for c in data["cells"] if c["fault"] not in FAULT_NAMES]
    if targeted:
        lines += [
            "",
            "| API fault | variant | expected → measured | after the faulted run |",
            "|---|---|---|---|",
        ]
        for cell in targeted:
            e = cell["evidence"]
            after = (
                f"{e['injected']} injected; summary {e['summary']}; orphan kept: "
                f"{e['orphanKept']}; lastSyncedTime stamped: {e['lastSyncedTime']}; Backups "
                f"without pod volume backups: {len(e['backupsWithoutPodVolumeBackups'])}, "
                f"marked pending: {len(e['markedPending'])}; a later clean run converged: "
                f"{cell['convergedLater']}"
            )
            lines.append(
                f"| {cell['injection']} | {cell['variant']} | "
                f"{cell['expectedExit']} → {_outcome(cell)} | {after} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(render(json.loads(Path(sys.argv[1]).read_text())))
