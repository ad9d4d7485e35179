"""MinIO (github.com/minio/minio, built from its Go module) as a single-drive S3 server on
loopback, for the benchmark: moto answers a few hundred requests per second, MinIO several
thousand (docs/benchmark.md has the numbers).

Same surface as the emulators in ``harness.objectstores`` (``create_bucket``, ``put``,
``putter``, ``location_config``, ``credentials``), plus ``request_counts()``: the S3 requests
MinIO itself has served, by API, from its Prometheus metrics.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any, Self

from harness.objectstores import Put
from harness.processes import Service, die_with_parent, free_port, stop_process
from harness.tools import tool_path

ACCESS_KEY = "backupsync"
SECRET_KEY = "backupsync-secret"
REGION = "us-east-1"
# One sample per API (metrics v3, read live; the v2 ones are cached for 10 s):
#   minio_api_requests_total{name="GetObject",server="127.0.0.1:port",type="s3"} 42
_REQUESTS = re.compile(r"^minio_api_requests_total\{([^}]*)\}\s+([0-9.e+]+)$", re.MULTILINE)
_API = re.compile(r'name="([^"]+)"')


class MinIOError(RuntimeError):
    """MinIO did not start or did not answer."""


class MinIO(Service):
    """``minio server`` on a free loopback port with its data in a private temp dir (in
    memory under /dev/shm when there is one)."""

    provider = "aws"

    def __init__(self, binary: Path | None = None, *, build: bool = True) -> None:
        self._binary = binary
        self._build = build
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._client: Any = None
        self.port = 0
        self.pid = 0
        self.log_path = Path(tempfile.gettempdir()) / "minio.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        binary = self._binary or tool_path("minio", build=self._build)
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self._workdir = Path(tempfile.mkdtemp(prefix="backup-sync-minio-", dir=base))
        self.log_path = self._workdir / "minio.log"
        env = {
            **os.environ,
            "MINIO_ROOT_USER": ACCESS_KEY,
            "MINIO_ROOT_PASSWORD": SECRET_KEY,
            "MINIO_REGION": REGION,
            "MINIO_PROMETHEUS_AUTH_TYPE": "public",  # the request counters, without a token
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "on",  # a test deployment: no root-disk warnings
            # The background scanner walks every object (lifecycle, usage); with tens of
            # thousands of them it costs CPU the benchmark would charge to whatever runs.
            "MINIO_SCANNER_SPEED": "slowest",
        }
        try:
            for _attempt in range(3):  # a "free" port can be taken before MinIO binds it
                self.port = free_port()
                with open(self.log_path, "ab") as log:
                    self._process = subprocess.Popen(
                        [
                            str(binary),
                            "server",
                            str(self._workdir / "data"),
                            "--address",
                            f"127.0.0.1:{self.port}",
                            "--console-address",
                            f"127.0.0.1:{free_port()}",
                            "--quiet",
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        preexec_fn=die_with_parent,
                    )
                self.pid = self._process.pid
                if self._wait_ready(60.0):
                    return self
                self._terminate()
        except BaseException:
            self.stop()
            raise
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise MinIOError(f"MinIO did not start; log tail:\n{tail}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.endpoint + "/minio/health/ready", timeout=2):
                    return True
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.1)
        return False

    def _terminate(self) -> None:
        process, self._process = self._process, None
        stop_process(process, grace=15.0)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._terminate()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- S3 -----------------------------------------------------------------------------

    def client(self) -> Any:
        """A boto3 S3 client for seeding, with a pool large enough for parallel puts."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}, max_pool_connections=64),
            )
        return self._client

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=data)

    def putter(self, bucket: str) -> Put:
        return lambda key, data: self.put(bucket, key, data)

    def location_config(self, bucket: str) -> dict[str, str]:
        return {"region": REGION, "s3Url": self.endpoint, "s3ForcePathStyle": "true"}

    def credentials(self) -> bytes:
        """An AWS shared-credentials file with a ``[default]`` profile."""
        return (
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ).encode()

    def env(self) -> dict[str, str]:
        return {}

    # -- counting -----------------------------------------------------------------------

    def request_counts(self) -> Counter[str]:
        """S3 requests served so far, by API name (``getobject``, ``listobjectsv2`` ...),
        as MinIO counts them."""
        url = self.endpoint + "/minio/metrics/v3/api/requests"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        counts: Counter[str] = Counter()
        for labels, value in _REQUESTS.findall(text):
            api = _API.search(labels)
            if api:
                counts[api.group(1).lower()] += int(float(value))
        return counts
