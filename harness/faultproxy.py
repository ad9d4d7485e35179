"""An HTTP(S) reverse proxy on loopback that answers chosen requests with a server-side
fault (429 with ``Retry-After``, 500/503 with each provider's error body, a connection reset
after the request reached the server) and forwards everything else faithfully.

    with FaultProxy("127.0.0.1:9000") as proxy:          # in front of moto
        proxy.inject(s3_error(503, "SlowDown"), times=2)  # the first 2 requests get a 503
        ...                                               # point the client at proxy.url
        assert proxy.injected == 2

Forwarding keeps the method, path, query, header order and values (``Host`` included, so
signatures still verify), streams bodies in both directions, keeps ``Content-Length`` as the
server sent it and re-chunks chunked or close-delimited bodies; both sides keep their
connections alive. For an HTTPS server (kube-apiserver) the proxy terminates TLS with its
own certificate (``tls=(cert, key)``) and opens its own TLS connection upstream
(``upstream_tls``, e.g. a context presenting the admin client certificate): the client
must trust the proxy's CA and its credentials never reach the server.

Only the standard library: ``ThreadingHTTPServer`` (one thread per client connection, one
upstream connection per client connection) and ``http.client``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from harness.processes import Service

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_CHUNK = 64 * 1024
UPSTREAM_TIMEOUT = 300.0  # the client's own timeouts are what the tests exercise


@dataclass(frozen=True, slots=True)
class Request:
    """What a match function sees of one request."""

    method: str
    target: str  # path and query, as sent
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), None)

    def key(self) -> str:
        """Identifies "the same request" when a client retries it."""
        digest = hashlib.sha256(self.body).hexdigest()[:16]
        return f"{self.method} {self.target} {digest}"


Match = Callable[[Request], bool]


def match(method: str | Iterable[str] | None = None, path: str | None = None) -> Match:
    """Requests with this method (or one of these) whose path matches the regex ``path``
    (``re.search``)."""
    methods = {method} if isinstance(method, str) else set(method) if method else None
    pattern = re.compile(path) if path else None

    def matches(request: Request) -> bool:
        if methods is not None and request.method not in methods:
            return False
        return pattern is None or pattern.search(request.path) is not None

    return matches


def every(request: Request) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Fault:
    """What the proxy does to a matching request instead of forwarding it faithfully:
    answer with ``status``/``headers``/``body`` (the request never reaches the server), or,
    with ``reset_mid_response``, forward it and then cut the response after its headers
    and half its body with a TCP reset (the server did the work; the client never learns)."""

    name: str
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    reset_mid_response: bool = False


def too_many_requests(
    retry_after: int = 1, *, body: bytes = b"", content_type: str = "text/plain"
) -> Fault:
    """429 with ``Retry-After`` in seconds."""
    return Fault(
        f"429 Retry-After {retry_after}",
        429,
        (("Retry-After", str(retry_after)), ("Content-Type", content_type)),
        body,
    )


def s3_error(
    status: int,
    code: str,
    message: str = "Please reduce your request rate.",
    retry_after: int | None = None,
) -> Fault:
    """An S3 REST error document (``<Error><Code>SlowDown</Code>…``); S3 itself sends no
    ``Retry-After``."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>"
    ).encode()
    headers = (("Content-Type", "application/xml"), *_retry_after(retry_after))
    return Fault(f"S3 {status} {code}", status, headers, body)


def azure_error(
    status: int, code: str, message: str = "The server is busy.", retry_after: int | None = None
) -> Fault:
    """An Azure Storage error: ``x-ms-error-code`` and the XML error body."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}\nRequestId:faultproxy</Message></Error>"
    ).encode()
    headers = (
        ("Content-Type", "application/xml"),
        ("x-ms-error-code", code),
        ("x-ms-request-id", "faultproxy"),
        *_retry_after(retry_after),
    )
    return Fault(f"Azure {status} {code}", status, headers, body)


def gcs_error(
    status: int, reason: str, message: str = "Backend Error", retry_after: int | None = None
) -> Fault:
    """A Google Cloud Storage JSON API error."""
    body = json.dumps(
        {
            "error": {
                "code": status,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": reason}],
            }
        }
    ).encode()
    headers = (("Content-Type", "application/json; charset=UTF-8"), *_retry_after(retry_after))
    return Fault(f"GCS {status} {reason}", status, headers, body)


def kube_status(status: int, reason: str, message: str, retry_after: int | None = None) -> Fault:
    """A Kubernetes ``Status`` failure, as kube-apiserver answers (429 comes with
    ``Retry-After`` from API Priority and Fairness)."""
    body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status,
        }
    ).encode()
    headers = (("Content-Type", "application/json"), *_retry_after(retry_after))
    return Fault(f"API {status} {reason}", status, headers, body)


def _retry_after(seconds: int | None) -> tuple[tuple[str, str], ...]:
    return () if seconds is None else (("Retry-After", str(seconds)),)


RESET_MID_RESPONSE = Fault("reset mid-response", reset_mid_response=True)


@dataclass(slots=True)
class Rule:
    """An injected fault: for matching requests, ``times`` times (None: until removed),
    counted over all of them or, with ``each``, per distinct request (method, target,
    body), so every call the client makes meets the fault ``times`` times."""

    fault: Fault
    match: Match
    times: int | None
    each: bool
    hits: int = 0
    _per_request: Counter[str] = field(default_factory=Counter)

    def take(self, request: Request) -> bool:
        """Whether this request gets the fault (and count it); the caller holds the lock."""
        if not self.match(request):
            return False
        if self.times is not None:
            seen = self._per_request[request.key()] if self.each else self.hits
            if seen >= self.times:
                return False
        self._per_request[request.key()] += 1
        self.hits += 1
        return True


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request the proxy saw, and what it did with it."""

    at: float  # time.monotonic()
    method: str
    target: str
    action: str  # "forwarded", a fault's name, or "failed: …" when upstream failed
    injected: bool = False
    key: str = ""  # Request.key(): the same for a client's retries of one request


class FaultProxy(Service):
    """The proxy: a context manager serving on a free loopback port."""

    def __init__(
        self,
        upstream: str,
        *,
        upstream_tls: ssl.SSLContext | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """``upstream`` is ``host:port``; ``upstream_tls`` makes the upstream connection
        HTTPS; ``tls`` (certificate and key files) makes the proxy itself HTTPS."""
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self._upstream_tls = upstream_tls
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(str(tls[0]), str(tls[1]))
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.exchanges: list[Exchange] = []
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        server = _Server(("127.0.0.1", 0), _handler(self), self._tls)
        self._server = server
        threading.Thread(target=server.serve_forever, name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    # -- faults

    def inject(
        self, fault: Fault, *, match: Match = every, times: int | None = None, each: bool = False
    ) -> Rule:
        """Answer matching requests with ``fault``: the first ``times`` of them (all while
        the rule stands when None), or with ``each`` the first ``times`` of each distinct
        request. Rules are tried in the order they were injected."""
        rule = Rule(fault, match, times, each)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule: from now on everything is forwarded."""
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        """Remove every rule and forget the exchanges."""
        with self._lock:
            self._rules.clear()
            self.exchanges.clear()

    @property
    def injected(self) -> int:
        """Requests answered with a fault so far (by any rule, since the last reset)."""
        with self._lock:
            return sum(1 for e in self.exchanges if e.injected)

    @property
    def forwarded(self) -> int:
        with self._lock:
            return sum(1 for e in self.exchanges if e.action == "forwarded")

    def _decide(self, request: Request) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.take(request):
                    return rule.fault
        return None

    def _record(self, request: Request, action: str, injected: bool = False) -> None:
        with self._lock:
            self.exchanges.append(
                Exchange(
                    time.monotonic(),
                    request.method,
                    request.target,
                    action,
                    injected,
                    request.key(),
                )
            )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], tls: Any
    ) -> None:
        self._tls_context: ssl.SSLContext | None = tls
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self._tls_context is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, in the connection's own thread, so a slow or
        # silent client never holds up accept().
        try:
            request.settimeout(UPSTREAM_TIMEOUT)
            tls_socket = self._tls_context.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError included
            return
        try:
            super().finish_request(tls_socket, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls_socket.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request is not the proxy's story


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    timeout = UPSTREAM_TIMEOUT  # idle client connections end eventually
    # Headers and body go out in separate writes: with Nagle, the body would wait for the
    # client's delayed ACK (40 ms per response).
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    # -- one request

    def _proxy(self) -> None:
        body = self._read_body()
        request = Request(self.command, self.path, tuple(self.headers.items()), body)
        fault = self.owner._decide(request)
        if fault is not None and not fault.reset_mid_response:
            self.owner._record(request, fault.name, injected=True)
            self._send_canned(fault)
            return
        try:
            response = self._forward(request)
        except (OSError, http.client.HTTPException) as exc:
            # The server failed us: fail the client the same way, by closing.
            self.owner._record(request, f"failed: {exc!r}")
            self.close_connection = True
            return
        try:
            if fault is not None:
                self.owner._record(request, fault.name, injected=True)
                self._reset_mid_response(response)
                return
            self.owner._record(request, "forwarded")
            self._relay(response)
        finally:
            if response.will_close or not response.isclosed():
                self._drop_upstream()

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _connection(self) -> http.client.HTTPConnection:
        if self._upstream is None:
            host, port = self.owner.upstream
            if self.owner._upstream_tls is not None:
                self._upstream = http.client.HTTPSConnection(
                    host, port, timeout=UPSTREAM_TIMEOUT, context=self.owner._upstream_tls
                )
            else:
                self._upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        return self._upstream

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def _forward(self, request: Request) -> http.client.HTTPResponse:
        """Send the request upstream as received; a kept-alive upstream connection that the
        server closed meanwhile is replaced once."""
        for attempt in (1, 2):
            fresh = self._upstream is None
            conn = self._connection()
            try:
                conn.putrequest(
                    request.method, request.target, skip_host=True, skip_accept_encoding=True
                )
                chunked = False
                for name, value in request.headers:
                    if name.lower() in HOP_BY_HOP:
                        chunked = chunked or name.lower() == "transfer-encoding"
                        continue
                    conn.putheader(name, value)
                if chunked:  # the body was de-chunked on the way in
                    conn.putheader("Content-Length", str(len(request.body)))
                conn.endheaders(request.body or None)
                return conn.getresponse()
            except (
                ConnectionResetError,
                BrokenPipeError,
                http.client.RemoteDisconnected,
            ):
                self._drop_upstream()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _send_canned(self, fault: Fault) -> None:
        self.send_response_only(fault.status)
        for name, value in fault.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(fault.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(fault.body)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """Status, headers and body as the server sent them; only the framing of a chunked
        or close-delimited body is redone for this connection."""
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        bodyless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        length = response.getheader("Content-Length")
        chunked = not bodyless and length is None
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodyless:
            return
        while True:
            piece = response.read1(_CHUNK) if chunked else response.read(_CHUNK)
            if not piece:
                break
            if chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _reset_mid_response(self, response: http.client.HTTPResponse) -> None:
        """The server's status line, headers and half its body, then a TCP reset."""
        body = response.read()
        self._drop_upstream()
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        with contextlib.suppress(OSError):
            self.wfile.flush()
        self.close_connection = True
        sock = self.connection
        with contextlib.suppress(OSError):
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw = sock.detach() if isinstance(sock, ssl.SSLSocket) else None
            if raw is not None:
                socket.socket(fileno=raw).close()
            else:
                sock.close()
