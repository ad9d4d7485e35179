"""toxiproxy (github.com/Shopify/toxiproxy) on loopback: TCP proxies in front of a server,
with toxics such as a fixed latency on the server's responses.

    with Toxiproxy() as toxi:
        port = toxi.proxy("s3", "127.0.0.1:9000")
        toxi.latency("s3", 10)  # every response from the server arrives 10 ms later

Any toxic can be added and removed by name (``add_toxic``/``remove_toxic``, ``reset()``
removes them all), e.g. ``limit_data`` (close the connection after N bytes: a cut
mid-response), ``reset_peer`` (TCP RST), ``timeout`` with timeout 0 (a black hole: nothing
gets through, nothing is closed). With ``proxy_metrics=True`` the server counts the bytes
each proxy received and sent per direction as its connections end (``traffic()``), so a
test can tell that a toxic really dropped data.

The binary comes from ``harness.tools`` (built from its Go module, cached by version).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from harness.processes import Service, die_with_parent, free_port, stop_process
from harness.tools import tool_path


class ToxiproxyError(RuntimeError):
    """toxiproxy did not start or refused an API call."""


@dataclass(frozen=True, slots=True)
class Traffic:
    """Bytes one proxy has received and sent, per direction (``upstream``: client to
    server), since the toxiproxy server started. toxiproxy adds a connection's bytes when
    that direction of it ends, so open connections are not in yet. Toxics sit between
    receiving and sending: received minus sent is what they dropped."""

    received: dict[str, int]
    sent: dict[str, int]

    def held_back(self, direction: str) -> int:
        return self.received.get(direction, 0) - self.sent.get(direction, 0)

    def __sub__(self, earlier: Traffic) -> Traffic:
        def minus(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
            return {k: v - before.get(k, 0) for k, v in now.items()}

        return Traffic(minus(self.received, earlier.received), minus(self.sent, earlier.sent))


_METRIC = re.compile(r"^toxiproxy_proxy_(received|sent)_bytes_total\{(.*)\}\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Toxiproxy(Service):
    """A ``toxiproxy-server`` process and its HTTP API."""

    def __init__(
        self, binary: Path | None = None, *, build: bool = True, proxy_metrics: bool = False
    ) -> None:
        """``proxy_metrics`` turns on the server's per-proxy byte counters (``traffic``)."""
        self._binary = binary
        self._build = build
        self._proxy_metrics = proxy_metrics
        self._process: subprocess.Popen[bytes] | None = None
        self.api_port = 0
        self.log_path = Path(tempfile.gettempdir()) / "toxiproxy.log"
        self.pid = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> Self:
        binary = self._binary or tool_path("toxiproxy", build=self._build)
        self.log_path = Path(tempfile.mkdtemp(prefix="backup-sync-toxiproxy-")) / "toxiproxy.log"
        for _attempt in range(3):  # a "free" port can be taken before the server binds it
            self.api_port = free_port()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [
                        str(binary),
                        "-host",
                        "127.0.0.1",
                        "-port",
                        str(self.api_port),
                        *(["-proxy-metrics"] if self._proxy_metrics else []),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=die_with_parent,
                )
            self.pid = self._process.pid
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self._process.poll() is None:
                try:
                    self._request("GET", "/version")
                    return self
                except (OSError, ToxiproxyError):
                    time.sleep(0.05)
            self.stop()
        raise ToxiproxyError(f"toxiproxy did not start; see {self.log_path}")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.api + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ToxiproxyError(f"{method} {path} -> {exc.code}: {exc.read()[:300]!r}") from None
        return json.loads(raw) if raw else None

    def proxy(self, name: str, upstream: str) -> int:
        """Create a proxy to ``upstream`` (``host:port``) on a free loopback port; the port."""
        created = self._request(
            "POST",
            "/proxies",
            {"name": name, "listen": "127.0.0.1:0", "upstream": upstream, "enabled": True},
        )
        return int(str(created["listen"]).rsplit(":", 1)[1])

    def latency(self, proxy: str, milliseconds: int, *, stream: str = "downstream") -> None:
        """Delay the data flowing ``stream`` (``downstream``: server to client) by a fixed
        ``milliseconds`` (no jitter)."""
        self._request(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": f"latency_{stream}",
                "type": "latency",
                "stream": stream,
                "toxicity": 1.0,
                "attributes": {"latency": milliseconds, "jitter": 0},
            },
        )

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._request("GET", f"/proxies/{proxy}/toxics")
        return result

    def add_toxic(
        self,
        proxy: str,
        toxic_type: str,
        *,
        name: str | None = None,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: int | float | str,
    ) -> str:
        """Add a toxic of any type (``latency``, ``limit_data``, ``reset_peer``,
        ``timeout``, ``bandwidth``, ``slicer``, ``slow_close`` …) to ``stream``
        (``downstream``: server to client; ``upstream``: client to server) of a fraction
        ``toxicity`` of the connections; its name (default ``<type>_<stream>``)."""
        name = name or f"{toxic_type}_{stream}"
        self._request(
            "POST",
            f"/proxies/{proxy}/toxics",
            {
                "name": name,
                "type": toxic_type,
                "stream": stream,
                "toxicity": toxicity,
                "attributes": attributes,
            },
        )
        return name

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove one toxic; connections it held continue without it (a ``timeout`` toxic
        closes the connections it was holding)."""
        self._request("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def reset(self) -> None:
        """Remove every toxic of every proxy and enable every proxy."""
        self._request("POST", "/reset")

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{name}")

    def traffic(self, proxy: str) -> Traffic:
        """The byte counters of ``proxy`` (needs ``proxy_metrics=True``)."""
        if not self._proxy_metrics:
            raise ToxiproxyError("traffic() needs Toxiproxy(proxy_metrics=True)")
        request = urllib.request.Request(self.api + "/metrics")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        counts: dict[str, dict[str, int]] = {"received": {}, "sent": {}}
        for line in text.splitlines():
            found = _METRIC.match(line)
            if not found:
                continue
            kind, labels, value = found.groups()
            tags = dict(_LABEL.findall(labels))
            if tags.get("proxy") == proxy:
                counts[kind][tags.get("direction", "")] = int(float(value))
        return Traffic(counts["received"], counts["sent"])
