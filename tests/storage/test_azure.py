"""Azure provider against Azurite, through azure-storage-blob (and azure-identity /
azure-mgmt-storage against a small local HTTPS stub of Entra ID and ARM): what is Azure's
own (the port's cases, the same on every provider, are in test_contract.py)."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msal.authority
import pytest
import requests

from harness.objectstores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AZURITE_KEY_VAR,
    Azurite,
    TestCA,
    free_port,
)
from tests.storage.conftest import FAST_RETRY
from worker.errors import ConfigError, StoreError
from worker.profile import VeleroProfile
from worker.storage import ObjectStore, StoreSettings, open_store
from worker.storage import azure as azure_provider
from worker.storage.credentials import ca_bundle

KEY_FILE = f"{AZURITE_KEY_VAR}={AZURITE_KEY}\n".encode()


def settings(
    account_url: str, container: str, credentials_file: Path | None = None, **kwargs: Any
) -> StoreSettings:
    config = {
        "storageAccount": AZURITE_ACCOUNT,
        "storageAccountURI": account_url,
        "storageAccountKeyEnvVar": AZURITE_KEY_VAR,
        **kwargs.pop("config", {}),
    }
    args: dict[str, Any] = {"page_size": 2, "timeout": 5.0, "retry": FAST_RETRY, **kwargs}
    return StoreSettings(
        provider="azure",
        bucket=container,
        config={k: v for k, v in config.items() if v is not None},
        credentials_file=str(credentials_file) if credentials_file else None,
        **args,
    )


@pytest.fixture
def key_file(write_file: Callable[[str, bytes], Path]) -> Path:
    return write_file("cloud", KEY_FILE)


@pytest.fixture
def container(azurite: Azurite, bucket_name: str) -> str:
    azurite.create_bucket(bucket_name)
    return bucket_name


@pytest.fixture
def store(azurite: Azurite, container: str, key_file: Path) -> Iterator[ObjectStore]:
    opened = open_store(settings(azurite.endpoint, container, key_file))
    yield opened
    opened.close()


def test_listing_resumes_from_the_marker(
    azurite: Azurite, container: str, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        azurite.put(container, f"backups/b{n}/velero-backup.json", b"{}")
    urls: list[str] = []
    failed: list[str] = []
    real_send = requests.adapters.HTTPAdapter.send

    def flaky_send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        urls.append(request.url)
        if "marker=" in request.url and not failed:
            failed.append(request.url)
            raise requests.exceptions.ConnectionError("connection reset by test")
        return real_send(self, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", flaky_send)
    assert list(store.list_common_prefixes("backups/", "/")) == [f"backups/b{n}/" for n in range(5)]
    assert urls.count(failed[0]) == 2
    assert sum("marker=" not in u for u in urls) == 1


def test_wrong_account_key_is_a_store_error(
    azurite: Azurite, container: str, write_file: Callable[[str, bytes], Path]
) -> None:
    wrong = base64.b64encode(b"not the key").decode()
    path = write_file("cloud", f"{AZURITE_KEY_VAR}={wrong}\n".encode())
    store = open_store(settings(azurite.endpoint, container, path))
    with pytest.raises(StoreError, match="403") as caught:
        store.get("k", 10)
    assert wrong not in str(caught.value)


def test_storage_key_in_the_file_wins_even_with_use_aad(
    azurite: Azurite, container: str, write_file: Callable[[str, bytes], Path]
) -> None:
    azurite.put(container, "k", b"v")
    path = write_file("cloud", f"AZURE_STORAGE_KEY={AZURITE_KEY}\n".encode())
    config = {"useAAD": "true", "storageAccountKeyEnvVar": None}
    store = open_store(settings(azurite.endpoint, container, path, config=config))
    assert store.get("k", 10) == b"v"


def test_credentials_file_from_the_environment(
    azurite: Azurite, container: str, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    azurite.put(container, "k", b"v")
    monkeypatch.setenv("AZURE_CREDENTIALS_FILE", str(key_file))
    assert open_store(settings(azurite.endpoint, container)).get("k", 10) == b"v"


def test_credentials_file_is_read_literally(
    write_file: Callable[[str, bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # godotenv does not expand ${...} in an unquoted value; a secret with "$" must survive.
    monkeypatch.setenv("HOME", "/expanded")
    path = write_file("cloud", b"AZURE_CLIENT_SECRET=a${HOME}b\nEMPTY=\n# comment\n")
    creds = azure_provider.load_credentials(StoreSettings("azure", "c", credentials_file=str(path)))
    assert creds == {"AZURE_CLIENT_SECRET": "a${HOME}b", "EMPTY": ""}


@pytest.mark.parametrize(
    ("config", "file", "match"),
    [
        ({"storageAccount": ""}, KEY_FILE, "storageAccount is required"),
        ({"useAAD": "yes"}, KEY_FILE, "useAAD"),
        ({"storageAccountKeyEnvVar": "MISSING"}, KEY_FILE, "MISSING"),
        ({}, KEY_FILE + b"AZURE_CLOUD_NAME=AzureMoonCloud\n", "unknown cloud"),
        ({}, f"{AZURITE_KEY_VAR}=not*base64\n".encode(), "base64"),
        # Neither a key nor AAD: Velero exchanges the key through ARM, which needs these.
        ({"storageAccountKeyEnvVar": None}, b"", "subscription ID is required"),
        (
            {"storageAccountKeyEnvVar": None, "subscriptionId": "sub"},
            b"AZURE_TENANT_ID=t\nAZURE_CLIENT_ID=c\nAZURE_CLIENT_SECRET=s\n",
            "resource group is required",
        ),
        ({"useAAD": "true", "storageAccountKeyEnvVar": None}, b"AZURE_CLIENT_SECRET=s", "TENANT"),
    ],
)
def test_invalid_configuration_is_a_config_error(
    azurite: Azurite,
    write_file: Callable[[str, bytes], Path],
    config: dict[str, Any],
    file: bytes,
    match: str,
) -> None:
    path = write_file("cloud", file)
    with pytest.raises(ConfigError, match=match) as caught:
        open_store(settings(azurite.endpoint, "c", path, config=config))
    assert AZURITE_KEY not in str(caught.value)


def test_cloud_names_and_default_uri(write_file: Callable[[str, bytes], Path]) -> None:
    for cloud, suffix in [
        ("", "blob.core.windows.net"),
        ("AzurePublicCloud", "blob.core.windows.net"),
        ("azurechinacloud", "blob.core.chinacloudapi.cn"),
        ("AzureUSGovernment", "blob.core.usgovcloudapi.net"),
    ]:
        path = write_file("cloud", KEY_FILE + f"AZURE_CLOUD_NAME={cloud}\n".encode())
        store = open_store(settings("", "c", path, config={"storageAccountURI": None}))
        url = store._service.url  # type: ignore[attr-defined]
        assert url == f"https://{AZURITE_ACCOUNT}.{suffix}/"


def test_ca_cert_makes_https_azurite_trusted(
    azurite_tls: Azurite, bucket_name: str, key_file: Path, tmp_path: Path
) -> None:
    assert azurite_tls.ca_pem is not None
    azurite_tls.create_bucket(bucket_name)
    azurite_tls.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    bundle = ca_bundle(azurite_tls.ca_pem, tmp_path / "ca")

    trusted = open_store(
        settings(azurite_tls.endpoint, bucket_name, key_file, ca_bundle=str(bundle))
    )
    assert list(trusted.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert trusted.get("backups/b1/velero-backup.json", 10) == b"{}"

    untrusted = open_store(settings(azurite_tls.endpoint, bucket_name, key_file))
    with pytest.raises(StoreError, match=r"SSL|certificate"):
        untrusted.get("backups/b1/velero-backup.json", 10)


# -- Azure AD and ARM, against a local HTTPS stub of Entra ID and Resource Manager

TENANT = "00000000-0000-0000-0000-0000000000aa"
SUBSCRIPTION = "sub-1"
GROUP = "rg-1"


class _EntraAndArm(BaseHTTPRequestHandler):
    base = ""
    blob_endpoint = ""
    tokens: list[dict[str, str]] = []
    arm_calls: list[tuple[str, str, str]] = []

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path.endswith("/.well-known/openid-configuration"):
            self._json(
                {
                    "token_endpoint": f"{self.base}/{TENANT}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{self.base}/{TENANT}/oauth2/v2.0/authorize",
                    "issuer": f"{self.base}/{TENANT}/v2.0",
                }
            )
        elif "/providers/Microsoft.Storage/storageAccounts/" in path:
            self._arm("GET")
            self._json(
                {
                    "id": path,
                    "name": AZURITE_ACCOUNT,
                    "location": "westeurope",
                    "properties": {"primaryEndpoints": {"blob": self.blob_endpoint + "/"}},
                }
            )
        else:
            self._json({"error": "not found"}, 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        path = urllib.parse.urlsplit(self.path).path
        if path.endswith("/oauth2/v2.0/token"):
            form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
            type(self).tokens.append(form)
            audience = form["scope"].split()[0].removesuffix("/.default")
            answer = {
                "access_token": _jwt(audience),
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
            }
            if form["grant_type"] == "password":
                # A user sign-in also returns who signed in (azure-identity needs it).
                answer["id_token"] = _id_token(
                    f"{self.base}/{TENANT}/v2.0", form["client_id"], form["username"]
                )
            self._json(answer)
        elif path.endswith("/listKeys"):
            self._arm("POST")
            self._json(
                {
                    "keys": [
                        {"keyName": "kerb1", "value": "cmVhZG9ubHk=", "permissions": "READ"},
                        {"keyName": "key1", "value": AZURITE_KEY, "permissions": "FULL"},
                    ]
                }
            )
        else:
            self._json({"error": "not found"}, 404)

    def _arm(self, method: str) -> None:
        type(self).arm_calls.append((method, self.path, self.headers.get("Authorization", "")))

    def _json(self, body: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def _id_token(issuer: str, client_id: str, username: str) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": client_id,
        "sub": "user-subject",
        "oid": "22222222-2222-2222-2222-222222222222",
        "tid": TENANT,
        "preferred_username": username,
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
    }
    return _unsigned_jwt(claims)


def _jwt(audience: str) -> str:
    """An access token Azurite's ``--oauth basic`` accepts: it checks issuer, audience and
    lifetime, not the signature."""
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": f"https://sts.windows.net/{TENANT}/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "tid": TENANT,
        "oid": "11111111-1111-1111-1111-111111111111",
    }

    return _unsigned_jwt(claims)


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


@pytest.fixture
def entra(test_ca: TestCA, azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The stub's https base URL; MSAL is told to trust it as an authority host."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EntraAndArm)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca.cert_file, test_ca.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    base = f"https://127.0.0.1:{server.server_address[1]}"
    _EntraAndArm.base = base
    _EntraAndArm.blob_endpoint = azurite.endpoint
    _EntraAndArm.tokens = []
    _EntraAndArm.arm_calls = []
    # MSAL validates unknown authority hosts against login.microsoftonline.com (offline here).
    monkeypatch.setattr(
        msal.authority,
        "WELL_KNOWN_AUTHORITY_HOSTS",
        msal.authority.WELL_KNOWN_AUTHORITY_HOSTS | {"127.0.0.1"},
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


SP_FILE = (
    f"AZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID=velero-app\nAZURE_CLIENT_SECRET=s3cr3t\n"
    f"AZURE_SUBSCRIPTION_ID={SUBSCRIPTION}\nAZURE_RESOURCE_GROUP={GROUP}\n"
    "AZURE_CLOUD_NAME=AzurePublicCloud\n"
).encode()


def test_account_key_is_exchanged_through_arm(
    entra: str,
    azurite: Azurite,
    container: str,
    test_ca: TestCA,
    tmp_path: Path,
    write_file: Callable[[str, bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azurite.put(container, "backups/b1/velero-backup.json", b"{}")
    public = azure_provider.CLOUDS[""]
    monkeypatch.setitem(
        azure_provider.CLOUDS,
        "AZUREPUBLICCLOUD",
        azure_provider.Cloud(entra + "/", public.blob_suffix, entra + "/"),
    )
    path = write_file("cloud", SP_FILE)
    # No storageAccountURI, key variable or useAAD: the Velero default path.
    config = {"storageAccountURI": None, "storageAccountKeyEnvVar": None}
    bundle = ca_bundle(test_ca.ca_pem, tmp_path / "ca")
    store = open_store(settings("", container, path, config=config, ca_bundle=str(bundle)))

    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert store._service.url.startswith(azurite.endpoint)  # type: ignore[attr-defined]
    [token] = _EntraAndArm.tokens
    assert token["grant_type"] == "client_credentials"
    assert token["client_id"] == "velero-app" and token["client_secret"] == "s3cr3t"
    assert token["scope"] == f"{entra}/.default"
    (list_method, list_path, auth), (get_method, get_path, _) = _EntraAndArm.arm_calls
    assert get_path.startswith(list_path.split("/listKeys")[0] + "?")
    assert list_method == "POST"
    assert list_path.startswith(
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/"
        f"Microsoft.Storage/storageAccounts/{AZURITE_ACCOUNT}/listKeys?"
    )
    assert "%24expand=kerb" in list_path or "$expand=kerb" in list_path
    assert auth.startswith("Bearer ")
    assert get_method == "GET"


# MSAL deprecates the password grant for public clients when it sends one.
@pytest.mark.filterwarnings("ignore:This API has been deprecated:DeprecationWarning")
@pytest.mark.parametrize("identity", ["client-secret", "workload-identity", "username-password"])
def test_use_aad_sends_bearer_tokens(
    identity: str,
    entra: str,
    azurite_tls: Azurite,
    bucket_name: str,
    test_ca: TestCA,
    tmp_path: Path,
    write_file: Callable[[str, bytes], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    azurite_tls.create_bucket(bucket_name)
    azurite_tls.put(bucket_name, "backups/b1/velero-backup.json", b"{}")
    if identity == "client-secret":
        path = write_file(
            "cloud",
            f"AZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID=velero-app\nAZURE_CLIENT_SECRET=s3cr3t\n"
            "AZURE_ADDITIONALLY_ALLOWED_TENANTS=t2;t3\n".encode(),
        )
    elif identity == "username-password":
        # MSAL's user-realm lookup drops the authority's port (real Entra ID is on 443);
        # a host it knows has no realm endpoint goes straight to the password grant.
        monkeypatch.setattr(
            msal.authority.Authority, "_domains_without_user_realm_discovery", {"127.0.0.1"}
        )
        path = write_file(
            "cloud",
            f"AZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID=velero-app\n"
            "AZURE_USERNAME=backup@example.com\nAZURE_PASSWORD=pa55-w0rd\n".encode(),
        )
    else:
        # What the AKS workload-identity webhook injects into the pod's environment.
        token_file = write_file("azure-identity-token", b"federated.service-account.jwt")
        monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
        monkeypatch.setenv("AZURE_CLIENT_ID", "velero-workload")
        path = write_file("cloud", b"AZURE_CLOUD_NAME=AzurePublicCloud\n")
    config = {
        "useAAD": "true",
        "storageAccountKeyEnvVar": None,
        "activeDirectoryAuthorityURI": entra,
    }
    bundle = ca_bundle(test_ca.ca_pem, tmp_path / "ca")
    store = open_store(
        settings(azurite_tls.endpoint, bucket_name, path, config=config, ca_bundle=str(bundle))
    )
    assert list(store.list_common_prefixes("backups/", "/")) == ["backups/b1/"]
    assert store.get("backups/b1/velero-backup.json", 10) == b"{}"
    [token] = _EntraAndArm.tokens  # cached for the second call
    # A user sign-in asks for the OpenID scopes too.
    assert token["scope"].split()[0] == "https://storage.azure.com/.default"
    if identity == "client-secret":
        assert token["client_secret"] == "s3cr3t"
    elif identity == "username-password":
        assert token["grant_type"] == "password"
        assert token["username"] == "backup@example.com" and token["password"] == "pa55-w0rd"
    else:
        assert token["client_id"] == "velero-workload"
        assert token["client_assertion"] == "federated.service-account.jwt"
    assert _EntraAndArm.arm_calls == []  # storageAccountURI given: no ARM lookup


def test_aad_credential_selection(
    write_file: Callable[[str, bytes], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from azure.identity import (
        CertificateCredential,
        ClientSecretCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    authority = "https://login.microsoftonline.com/"
    base = StoreSettings("azure", "c")
    ids = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": "app"}
    select = azure_provider.aad_credential

    assert isinstance(
        select({**ids, "AZURE_CLIENT_SECRET": "s"}, authority, base), ClientSecretCredential
    )
    pem = _rsa_certificate_pem()  # MSAL signs client assertions with RSA only
    assert isinstance(
        select({**ids, "AZURE_CLIENT_CERTIFICATE": pem}, authority, base), CertificateCredential
    )
    cert_path = write_file("client.pem", pem.encode())
    cert = {**ids, "AZURE_CLIENT_CERTIFICATE_PATH": str(cert_path)}
    assert isinstance(select(cert, authority, base), CertificateCredential)
    bad_cert = {**ids, "AZURE_CLIENT_CERTIFICATE": "not a certificate"}
    with pytest.raises(ConfigError, match="certificate"):
        select(bad_cert, authority, base)
    assert isinstance(select({"AZURE_CLIENT_ID": "mi"}, authority, base), ManagedIdentityCredential)

    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(write_file("token", b"jwt")))
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT)
    monkeypatch.setenv("AZURE_CLIENT_ID", "wi")
    assert isinstance(select({}, authority, base), WorkloadIdentityCredential)


USER_PASSWORD = {"AZURE_USERNAME": "backup@example.com", "AZURE_PASSWORD": "pa55-w0rd"}


@pytest.mark.parametrize("version", [(1, 15, 0), (1, 16, 2)])
def test_username_password_until_velero_1_17(
    version: tuple[int, int, int], recwarn: pytest.WarningsRecorder
) -> None:
    from azure.identity import UsernamePasswordCredential

    warnings: list[str] = []
    base = StoreSettings("azure", "c", profile=VeleroProfile(version), warn=warnings.append)
    ids = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": "app"}
    authority = "https://login.microsoftonline.com/"

    credential = azure_provider.aad_credential({**ids, **USER_PASSWORD}, authority, base)
    assert isinstance(credential, UsernamePasswordCredential)
    [warning] = warnings
    assert "AZURE_USERNAME" in warning and "1.17" in warning
    assert "client secret" in warning and "workload identity" in warning
    assert "pa55-w0rd" not in warning and "backup@example.com" not in warning
    # azure-identity's own DeprecationWarning is ours to report, not to pass on.
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]

    with pytest.raises(ConfigError, match="AZURE_PASSWORD is required"):
        azure_provider.aad_credential({**ids, "AZURE_USERNAME": "u"}, authority, base)
    with pytest.raises(ConfigError, match="AZURE_TENANT_ID"):
        azure_provider.aad_credential(USER_PASSWORD, authority, base)


def test_username_password_deprecation_is_reported_once_per_location(
    write_file: Callable[[str, bytes], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # useAAD without storageAccountURI: ARM is asked for the endpoint (here it fails and
    # the default URI is used, as in Velero), then the blob client signs in: one warning.
    dead = f"https://127.0.0.1:{free_port()}/"
    monkeypatch.setitem(azure_provider.CLOUDS, "", azure_provider.Cloud(dead, "example", dead))
    monkeypatch.setattr(
        msal.authority,
        "WELL_KNOWN_AUTHORITY_HOSTS",
        msal.authority.WELL_KNOWN_AUTHORITY_HOSTS | {"127.0.0.1"},
    )
    path = write_file(
        "cloud",
        f"AZURE_TENANT_ID={TENANT}\nAZURE_CLIENT_ID=app\nAZURE_USERNAME=u@example.com\n"
        "AZURE_PASSWORD=p\nAZURE_SUBSCRIPTION_ID=s\nAZURE_RESOURCE_GROUP=g\n".encode(),
    )
    warnings: list[str] = []
    config = {"useAAD": "true", "storageAccountKeyEnvVar": None, "storageAccountURI": None}
    store = open_store(settings("", "c", path, config=config, warn=warnings.append, timeout=1.0))
    store.close()
    assert len(warnings) == 1


@pytest.mark.parametrize("version", [(1, 17, 0), (1, 18, 3)])
def test_username_password_is_a_config_error_from_velero_1_17(
    version: tuple[int, int, int],
) -> None:
    warnings: list[str] = []
    base = StoreSettings("azure", "c", profile=VeleroProfile(version), warn=warnings.append)
    ids = {"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": "app"}
    with pytest.raises(ConfigError) as caught:
        azure_provider.aad_credential(
            {**ids, **USER_PASSWORD}, "https://login.microsoftonline.com/", base
        )
    message = str(caught.value)
    assert "AZURE_USERNAME" in message and ".".join(map(str, version)) in message
    assert "pa55-w0rd" not in message
    assert warnings == []


def _rsa_certificate_pem() -> str:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "velero-client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode()
