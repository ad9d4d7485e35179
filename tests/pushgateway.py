"""A stand-in Prometheus Pushgateway on loopback, for the unit and the integration tests."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families


class Push(NamedTuple):
    method: str
    path: str
    content_type: str
    body: str


class Gateway:
    """Records every push and answers it with ``status``; a context manager that stops
    serving on exit."""

    def __init__(self) -> None:
        self.pushes: list[Push] = []
        self.status = 200
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                content_type = self.headers.get("Content-Type", "")
                gateway.pushes.append(Push(self.command, self.path, content_type, body))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def pushes_to(self, path_suffix: str) -> list[dict[str, float]]:
        """The samples of each push whose path ends with ``path_suffix``, in order."""
        found = []
        for method, path, content_type, body in self.pushes:
            if path.endswith(path_suffix):
                assert method == "POST"  # pushadd: other groups and metrics survive
                assert content_type.startswith("text/plain; version=0.0.4")
                found.append(
                    {
                        sample.name: sample.value
                        for family in text_string_to_metric_families(body)
                        for sample in family.samples
                    }
                )
        assert found, f"no push to …{path_suffix}: {[p.path for p in self.pushes]}"
        return found

    def group(self, path_suffix: str) -> dict[str, float]:
        """The samples of the last push whose path ends with ``path_suffix``."""
        return self.pushes_to(path_suffix)[-1]
