"""From a BackupStorageLocation to provider settings (``store_settings``), without a server.

The contract: the CA comes from ``objectStorage.caCertRef`` (Velero 1.18 profiles), else
the base64 ``objectStorage.caCert``, else, for aws and azure only, the PEM
``spec.config.caCert`` the plugins read; both of the first two set is a configuration
error. ``spec.config.credentialsFile`` is honoured only inside the mounted credentials
folder and is refused before anything opens it: whoever may write a BSL could otherwise
make the worker read any file of its pod (the ServiceAccount token) and send it to an
endpoint of their choosing.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.objectstores import TestCA
from worker.errors import ConfigError
from worker.profile import VeleroProfile
from worker.retry import DEFAULT_POLICY
from worker.storage import StoreSettings
from worker.storage.bsl import StoreOptions, open_backup_store, store_settings

V1_15 = VeleroProfile((1, 15, 0))
V1_17 = VeleroProfile((1, 17, 1))
V1_18 = VeleroProfile((1, 18, 0))
PROVIDERS = ["aws", "gcp", "azure"]


def location(
    provider: str = "aws",
    config: dict[str, str] | None = None,
    **storage: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": provider,
        "objectStorage": {"bucket": "bucket", **storage},
    }
    if config is not None:
        spec["config"] = config
    return {"metadata": {"name": "default", "namespace": "velero"}, "spec": spec}


class Secrets:
    """``read_secret`` over a dict, recording what was read."""

    def __init__(self, data: dict[tuple[str, str], bytes] | None = None) -> None:
        self.data = data or {}
        self.reads: list[tuple[str, str]] = []

    def __call__(self, name: str, key: str) -> bytes:
        self.reads.append((name, key))
        if (name, key) not in self.data:
            raise ConfigError(f'"{name}" secret is missing data for key "{key}"')
        return self.data[(name, key)]


def settings_of(
    loc: dict[str, Any],
    workdir: Path,
    *,
    secrets: Secrets | None = None,
    profile: VeleroProfile = V1_15,
    credentials_dir: str = "/credentials",
    warn: Callable[[str], None] = lambda message: None,
) -> StoreSettings:
    options = StoreOptions(
        timeout=5.0,
        max_connections=4,
        retry=DEFAULT_POLICY,
        profile=profile,
        credentials_dir=credentials_dir,
        warn=warn,
    )
    settings, _ = store_settings(loc, secrets or Secrets(), workdir, options)
    return settings


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("other-ca"), common_name="another CA")


def bundle_of(settings: StoreSettings) -> bytes:
    assert settings.ca_bundle is not None
    return Path(settings.ca_bundle).read_bytes()


# -- defaults and pass-through


def test_store_settings_defaults() -> None:
    settings = StoreSettings("aws", "b")
    assert settings.profile == VeleroProfile()
    assert settings.warn("nobody listens") is None


def test_profile_and_warn_reach_the_provider_settings(tmp_path: Path) -> None:
    warnings: list[str] = []
    settings = settings_of(location(), tmp_path, profile=V1_17, warn=warnings.append)
    assert settings.profile == V1_17
    settings.warn("x")
    assert warnings == ["x"]


# -- the CA: objectStorage.caCert, spec.config.caCert, objectStorage.caCertRef


def test_no_ca_means_the_default_trust(tmp_path: Path) -> None:
    assert settings_of(location(), tmp_path).ca_bundle is None


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_config_ca_cert_is_used_by_aws_and_azure(provider: str, ca: TestCA, tmp_path: Path) -> None:
    loc = location(provider, config={"caCert": ca.ca_pem.decode()})
    settings = settings_of(loc, tmp_path)
    assert ca.ca_pem in bundle_of(settings)
    assert settings.config["caCert"] == ca.ca_pem.decode()  # a key the plugins know


def test_config_ca_cert_is_ignored_for_gcp(ca: TestCA, tmp_path: Path) -> None:
    # The GCP plugin never reads caCert; Velero only validates the key.
    loc = location("gcp", config={"caCert": ca.ca_pem.decode()})
    assert settings_of(loc, tmp_path).ca_bundle is None
    loc = location("gcp", config={"caCert": "not a PEM"})
    assert settings_of(loc, tmp_path).ca_bundle is None


def test_object_storage_ca_cert_wins_over_config_ca_cert(
    ca: TestCA, other_ca: TestCA, tmp_path: Path
) -> None:
    # Velero overwrites config caCert with the decoded objectStorage.caCert.
    loc = location(
        config={"caCert": other_ca.ca_pem.decode()},
        caCert=base64.b64encode(ca.ca_pem).decode(),
    )
    bundle = bundle_of(settings_of(loc, tmp_path))
    assert ca.ca_pem in bundle and other_ca.ca_pem not in bundle


@pytest.mark.parametrize("provider", ["aws", "azure"])
@pytest.mark.parametrize("pem", ["", "not a PEM", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END"])
def test_config_ca_cert_without_a_certificate_names_the_field(
    provider: str, pem: str, tmp_path: Path
) -> None:
    if pem == "":
        # An empty value is no CA at all, as in the plugins (len(caCert) > 0).
        assert settings_of(location(provider, config={"caCert": pem}), tmp_path).ca_bundle is None
        return
    with pytest.raises(ConfigError, match=r"spec\.config\.caCert"):
        settings_of(location(provider, config={"caCert": pem}), tmp_path)


def test_object_storage_ca_cert_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"objectStorage\.caCert is not valid base64"):
        settings_of(location(caCert="%%%"), tmp_path)
    with pytest.raises(ConfigError, match=r"objectStorage\.caCert"):
        settings_of(location(caCert=base64.b64encode(b"no PEM").decode()), tmp_path)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ca_cert_ref_is_read_from_the_secret_from_velero_1_18(
    provider: str, ca: TestCA, other_ca: TestCA, tmp_path: Path
) -> None:
    secrets = Secrets({("bsl-ca", "ca.crt"): ca.ca_pem})
    warnings: list[str] = []
    loc = location(
        provider,
        config={"caCert": other_ca.ca_pem.decode()},
        caCertRef={"name": "bsl-ca", "key": "ca.crt"},
    )
    settings = settings_of(loc, tmp_path, secrets=secrets, profile=V1_18, warn=warnings.append)
    bundle = bundle_of(settings)
    assert ca.ca_pem in bundle and other_ca.ca_pem not in bundle  # preferred over config
    assert secrets.reads == [("bsl-ca", "ca.crt")]
    assert warnings == []


def test_ca_cert_ref_is_ignored_with_a_warning_before_velero_1_18(
    ca: TestCA, tmp_path: Path
) -> None:
    secrets = Secrets({("bsl-ca", "ca.crt"): ca.ca_pem})
    warnings: list[str] = []
    loc = location(caCertRef={"name": "bsl-ca", "key": "ca.crt"})
    settings = settings_of(loc, tmp_path, secrets=secrets, profile=V1_17, warn=warnings.append)
    assert settings.ca_bundle is None
    assert secrets.reads == []
    [warning] = warnings
    assert "caCertRef" in warning and "1.17.1" in warning and "1.18" in warning


def test_ca_cert_ref_before_1_18_leaves_ca_cert_in_force(ca: TestCA, tmp_path: Path) -> None:
    # Velero before 1.18 has no caCertRef field at all: caCert alone counts.
    warnings: list[str] = []
    loc = location(
        caCert=base64.b64encode(ca.ca_pem).decode(),
        caCertRef={"name": "bsl-ca", "key": "ca.crt"},
    )
    settings = settings_of(loc, tmp_path, profile=V1_15, warn=warnings.append)
    assert ca.ca_pem in bundle_of(settings)
    assert len(warnings) == 1


def test_ca_cert_and_ca_cert_ref_together_are_a_config_error(ca: TestCA, tmp_path: Path) -> None:
    secrets = Secrets({("bsl-ca", "ca.crt"): ca.ca_pem})
    loc = location(
        caCert=base64.b64encode(ca.ca_pem).decode(),
        caCertRef={"name": "bsl-ca", "key": "ca.crt"},
    )
    with pytest.raises(ConfigError, match="cannot specify both caCert and caCertRef"):
        settings_of(loc, tmp_path, secrets=secrets, profile=V1_18)
    assert secrets.reads == []


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        ({"key": "ca.crt"}, r"objectStorage\.caCertRef.*name"),
        ({"name": "bsl-ca"}, r"objectStorage\.caCertRef.*key"),
        ("bsl-ca", r"objectStorage\.caCertRef"),
        ({"name": "missing", "key": "ca.crt"}, r"objectStorage\.caCertRef.*missing"),
    ],
)
def test_ca_cert_ref_errors_name_the_field(ref: Any, match: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        settings_of(location(caCertRef=ref), tmp_path, profile=V1_18)


def test_ca_cert_ref_without_a_certificate_names_the_field(tmp_path: Path) -> None:
    secrets = Secrets({("bsl-ca", "ca.crt"): b"not a certificate"})
    loc = location(caCertRef={"name": "bsl-ca", "key": "ca.crt"})
    with pytest.raises(ConfigError, match=r"objectStorage\.caCertRef") as caught:
        settings_of(loc, tmp_path, secrets=secrets, profile=V1_18)
    assert "not a certificate" not in str(caught.value)


# -- spec.config.credentialsFile: only inside the credentials folder


class OpenAudit:
    """Records every file the interpreter opens (the ``open`` audit event), while on."""

    def __init__(self) -> None:
        self.opened: list[str] = []
        self.on = False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.on and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            self.opened.append(os.fsdecode(args[0]))


_AUDIT = OpenAudit()
sys.addaudithook(_AUDIT)  # audit hooks cannot be removed: one for the module, switched on


@pytest.fixture
def audit() -> Iterator[OpenAudit]:
    _AUDIT.opened = []
    _AUDIT.on = True
    try:
        yield _AUDIT
    finally:
        _AUDIT.on = False


@pytest.fixture
def pod(tmp_path: Path) -> tuple[Path, Path]:
    """A credentials folder and, outside it, a file standing for the ServiceAccount token."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "cloud").write_bytes(b"[default]\n")
    token = tmp_path / "serviceaccount" / "token"
    token.parent.mkdir()
    token.write_bytes(b"eyJhbGciOiJSUzI1NiJ9.the-service-account-token.sig")
    return credentials, token


# Enough for each provider to reach its credentials file (none reaches the network first).
PROVIDER_CONFIG = {
    "aws": {"region": "us-east-1", "s3Url": "http://127.0.0.1:1"},
    "gcp": {"storeEndpoint": "http://127.0.0.1:1"},
    "azure": {
        "storageAccount": "account",
        "storageAccountURI": "http://127.0.0.1:1/account",
        "storageAccountKeyEnvVar": "AZURE_STORAGE_ACCOUNT_ACCESS_KEY",
    },
}


def test_the_audit_hook_sees_a_read(pod: tuple[Path, Path], audit: OpenAudit) -> None:
    _, token = pod
    token.read_bytes()
    assert str(token) in audit.opened


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("how", ["absolute", "dot-dot", "symlink", "relative"])
def test_credentials_file_outside_the_folder_is_refused_unread(
    provider: str,
    how: str,
    pod: tuple[Path, Path],
    tmp_path: Path,
    audit: OpenAudit,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials, token = pod
    if how == "absolute":
        path = str(token)
    elif how == "dot-dot":
        path = f"{credentials}/../serviceaccount/token"
    elif how == "symlink":
        (credentials / "innocent").symlink_to(token)
        path = str(credentials / "innocent")
    else:
        monkeypatch.chdir(token.parent)
        path = "token"
    config = {"credentialsFile": path, **PROVIDER_CONFIG[provider]}
    loc = location(provider, config=config)
    with pytest.raises(ConfigError) as caught:
        # The worker's whole path to an open store: nothing may read the file on the way.
        settings = settings_of(loc, tmp_path / "work", credentials_dir=str(credentials))
        open_backup_store(settings, "")
    message = str(caught.value)
    assert "spec.config.credentialsFile" in message
    assert str(credentials) in message and "outside" in message
    assert "the-service-account-token" not in message
    token_path = os.path.realpath(token)
    assert [p for p in audit.opened if os.path.realpath(p) == token_path] == []


def test_an_sse_c_key_file_outside_the_folder_is_refused_unread(
    pod: tuple[Path, Path], tmp_path: Path, audit: OpenAudit
) -> None:
    """customerKeyEncryptionFile is sent (its first 32 bytes) as the SSE-C key header to the
    location's endpoint: the same exposure as credentialsFile, the same rule."""
    credentials, token = pod
    config = {"customerKeyEncryptionFile": str(token), **PROVIDER_CONFIG["aws"]}
    with pytest.raises(ConfigError) as caught:
        settings = settings_of(
            location("aws", config=config), tmp_path / "work", credentials_dir=str(credentials)
        )
        open_backup_store(settings, "")
    assert "spec.config.customerKeyEncryptionFile" in str(caught.value)
    token_path = os.path.realpath(token)
    assert [p for p in audit.opened if os.path.realpath(p) == token_path] == []


def test_an_sse_c_key_file_inside_the_folder_is_passed_on(
    pod: tuple[Path, Path], tmp_path: Path
) -> None:
    credentials, _ = pod
    (credentials / "sse-key").write_bytes(b"k" * 32)
    config = {"customerKeyEncryptionFile": f"{credentials}/sse-key"}
    settings = settings_of(
        location("aws", config=config), tmp_path / "work", credentials_dir=str(credentials)
    )
    assert settings.config["customerKeyEncryptionFile"] == os.path.realpath(credentials / "sse-key")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_credentials_file_inside_the_folder_is_passed_on(
    provider: str, pod: tuple[Path, Path], tmp_path: Path
) -> None:
    credentials, _ = pod
    loc = location(provider, config={"credentialsFile": f"{credentials}/./cloud"})
    settings = settings_of(loc, tmp_path / "work", credentials_dir=str(credentials))
    # The resolved path: what was checked is what the provider reads.
    assert settings.config["credentialsFile"] == os.path.realpath(credentials / "cloud")
    assert settings.credentials_file is None


def test_a_secret_volume_with_its_symlinks_is_inside(tmp_path: Path) -> None:
    # How the kubelet lays out a Secret volume: cloud -> ..data/cloud, ..data -> ..<stamp>.
    folder = tmp_path / "credentials"
    stamp = folder / "..2026_12_07_20_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "cloud").write_bytes(b"[default]\n")
    (folder / "..data").symlink_to(stamp.name)
    (folder / "cloud").symlink_to("..data/cloud")
    loc = location(config={"credentialsFile": str(folder / "cloud")})
    settings = settings_of(loc, tmp_path / "work", credentials_dir=str(folder))
    assert settings.config["credentialsFile"] == os.path.realpath(stamp / "cloud")


def test_credentials_folder_itself_or_a_sibling_prefix_is_refused(
    pod: tuple[Path, Path], tmp_path: Path
) -> None:
    credentials, _ = pod
    sibling = tmp_path / "credentials-evil"
    sibling.mkdir()
    (sibling / "cloud").write_bytes(b"x")
    for path in (str(credentials), str(sibling / "cloud")):
        with pytest.raises(ConfigError, match="outside"):
            settings_of(
                location(config={"credentialsFile": path}),
                tmp_path / "work",
                credentials_dir=str(credentials),
            )


def test_spec_credential_replaces_the_config_credentials_file(
    pod: tuple[Path, Path], tmp_path: Path, audit: OpenAudit
) -> None:
    # Velero overwrites config credentialsFile with the Secret's file: the BSL's value is
    # never read, so it is dropped rather than refused.
    credentials, token = pod
    loc = location(config={"credentialsFile": str(token)})
    loc["spec"]["credential"] = {"name": "cloud-credentials", "key": "cloud"}
    secrets = Secrets({("cloud-credentials", "cloud"): b"[default]\n"})
    settings = settings_of(
        loc, tmp_path / "work", secrets=secrets, credentials_dir=str(credentials)
    )
    assert "credentialsFile" not in settings.config
    assert settings.credentials_file == str(tmp_path / "work" / "cloud-credentials-cloud")
    assert [p for p in audit.opened if os.path.realpath(p) == os.path.realpath(token)] == []
