"""Azure Blob Storage (Velero provider ``azure``), through azure-storage-blob.

Mirrors Velero's ``pkg/util/azure`` (which the v1.11.1 plugin calls): the env-style
credentials file, Shared Key from ``storageAccountKeyEnvVar`` (or ``AZURE_STORAGE_KEY`` in
the file), Azure AD through azure-identity with ``useAAD`` (user name and password only in
the profiles before Velero 1.17, which removed them), otherwise the account key
exchanged through ARM ``ListKeys``; the cloud from ``AZURE_CLOUD_NAME``; the blob endpoint
from ``storageAccountURI``, ARM, or the cloud's default suffix.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobPrefix, BlobServiceClient, ContainerClient
from dotenv import dotenv_values

from worker import retry
from worker.errors import ConfigError, StoreError
from worker.storage import ObjectStore, StoreSettings, parse_bool, sdk

log = logging.getLogger(__name__)

# Velero pkg/util/azure/storage.go constants, as the plugin's valid keys (providers.md §4.1).
CONFIG_KEYS = frozenset(
    {
        "storageAccount",
        "resourceGroup",
        "subscriptionId",
        "storageAccountKeyEnvVar",
        "useAAD",
        "storageAccountURI",
        "activeDirectoryAuthorityURI",
        "blockSizeInBytes",
        "credentialsFile",
    }
)


@dataclass(frozen=True, slots=True)
class Cloud:
    """The endpoints of one Azure cloud that this module needs."""

    authority_host: str
    blob_suffix: str
    resource_manager: str


_PUBLIC = Cloud(
    "https://login.microsoftonline.com/", "blob.core.windows.net", "https://management.azure.com/"
)
_CHINA = Cloud(
    "https://login.chinacloudapi.cn/",
    "blob.core.chinacloudapi.cn",
    "https://management.chinacloudapi.cn/",
)
_US_GOV = Cloud(
    "https://login.microsoftonline.us/",
    "blob.core.usgovcloudapi.net",
    "https://management.usgovcloudapi.net/",
)

# Velero util.go getCloudConfiguration: names are matched case-insensitively; "" is public.
CLOUDS: dict[str, Cloud] = {
    "": _PUBLIC,
    "AZURECLOUD": _PUBLIC,
    "AZUREPUBLICCLOUD": _PUBLIC,
    "AZURECHINACLOUD": _CHINA,
    "AZUREUSGOVERNMENT": _US_GOV,
    "AZUREUSGOVERNMENTCLOUD": _US_GOV,
}


class AzureStore(sdk.GuardedStore):
    """One container, read-only. Azure SDK clients are thread-safe."""

    def __init__(
        self, service: BlobServiceClient, container: ContainerClient, settings: StoreSettings
    ) -> None:
        super().__init__(settings)
        self._service = service
        self._container = container
        self._name = settings.bucket

    def where(self, key: str) -> str:
        return f"azure container {self._name}/{key}"

    def close(self) -> None:
        """Release connections."""
        self._container.close()
        self._service.close()

    def list_page(
        self, prefix: str, delimiter: str, token: str | None
    ) -> tuple[list[str], str | None]:
        pages = self._container.walk_blobs(
            name_starts_with=prefix or None,
            delimiter=delimiter,
            results_per_page=self.settings.page_size,
        ).by_page(continuation_token=token)
        page = next(pages, None)
        if page is None:
            return [], None
        names = [item.name for item in page if isinstance(item, BlobPrefix)]
        next_token: str | None = pages.continuation_token  # type: ignore[attr-defined]
        return names, next_token or None

    def get_once(self, key: str, max_bytes: int) -> bytes | None:
        """One ranged GET of the first ``max_bytes + 1`` bytes; a missing blob is None, a
        missing container an error."""
        blob = self._container.get_blob_client(key)
        try:
            # A range keeps the read at max_bytes + 1 even for a huge blob, in one request
            # (the SDK would otherwise fetch up to 32 MiB first).
            downloader = blob.download_blob(offset=0, length=max_bytes + 1)
            data = downloader.readall()
        except ResourceNotFoundError as exc:
            if retry.error_code(exc) == "BlobNotFound":
                return None
            raise
        except HttpResponseError as exc:
            if exc.status_code == 416:
                return b""  # a range on an empty blob is unsatisfiable; the blob exists
            raise
        sdk.check_size(len(data), max_bytes, self.where(key))
        return data


def open_store(settings: StoreSettings) -> ObjectStore:
    """Resolve credentials and endpoint like Velero's NewStorageClient, open the container."""
    config = settings.config
    account = config.get("storageAccount", "")
    if not account:
        raise ConfigError("storageAccount is required in BSL")
    use_aad = parse_bool(config, "useAAD")
    creds = load_credentials(settings)
    cloud = _cloud(creds.get("AZURE_CLOUD_NAME", ""))
    authority = config.get("activeDirectoryAuthorityURI") or cloud.authority_host
    transport_kwargs = _transport_kwargs(settings)

    @functools.cache
    def aad() -> Any:
        # One credential for ARM and the blob client: one token cache, and a deprecation
        # is reported once per location.
        return aad_credential(creds, authority, settings)

    # 1. Which key, if any (GetStorageAccountCredentials).
    key_var = config.get("storageAccountKeyEnvVar", "")
    arm: Any = None
    if key_var:
        if not creds.get(key_var):
            raise ConfigError(
                f"no storage account access key with key {key_var} found in credential"
            )
        creds["AZURE_STORAGE_KEY"] = creds[key_var]
    elif not use_aad:
        arm = _arm_client(config, creds, cloud, aad, settings, required=True)
        creds["AZURE_STORAGE_KEY"] = _exchange_account_key(arm, config, creds, settings)

    # 2. The endpoint (getStorageAccountURI).
    uri = config.get("storageAccountURI", "")
    if not uri:
        uri = f"https://{account}.{cloud.blob_suffix}"
        if not key_var:
            uri = _uri_from_arm(arm, config, creds, cloud, aad, settings) or uri

    # 3. The client: Shared Key when a key is known (even with useAAD), else Azure AD.
    key = creds.get("AZURE_STORAGE_KEY", "")
    credential: Any
    if key:
        try:
            base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("the storage account access key is not valid base64") from None
        credential = {"account_name": account, "account_key": key}
    else:
        credential = aad()
    service = BlobServiceClient(
        account_url=uri,
        credential=credential,
        transport=_transport(settings),
        retry_total=0,
        **transport_kwargs,
    )
    container = service.get_container_client(settings.bucket)
    return AzureStore(service, container, settings)


def load_credentials(settings: StoreSettings) -> dict[str, str]:
    """The env-style credentials file (godotenv in Velero); no file is an empty map."""
    path = (
        settings.credentials_file
        or settings.config.get("credentialsFile")
        or os.environ.get("AZURE_CREDENTIALS_FILE")
    )
    if not path:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"Azure credentials file {path} does not exist")
    try:
        values = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read Azure credentials file {path}: {exc}") from None
    return {k: v for k, v in values.items() if v is not None}


# Any of these in the credentials file means an app registration (or, before Velero 1.17, a
# user) signs in; otherwise workload identity or a managed identity does.
_SIGN_IN_KEYS = (
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
)


def aad_credential(creds: Mapping[str, str], authority: str, settings: StoreSettings) -> Any:
    """An azure-identity credential chosen as Velero's NewCredential does (providers.md §4.2).

    The credentials keep azure-identity's own retries: a token request that fails for
    good surfaces as ClientAuthenticationError, which worker.retry does not retry.
    """
    from azure.identity import ManagedIdentityCredential, WorkloadIdentityCredential

    transport: dict[str, Any] = {
        "connection_timeout": settings.timeout,
        "read_timeout": settings.timeout,
    }
    if settings.ca_bundle:
        transport["connection_verify"] = settings.ca_bundle
    tenants = [t for t in creds.get("AZURE_ADDITIONALLY_ALLOWED_TENANTS", "").split(";") if t]
    common = {"authority": authority, "additionally_allowed_tenants": tenants, **transport}
    if any(creds.get(key) for key in _SIGN_IN_KEYS):
        return _sign_in_credential(creds, common, settings)
    token_file = os.environ.get("AZURE_FEDERATED_TOKEN_FILE", "")
    if token_file:
        # Workload identity: tenant and client id come from the process env that the AKS
        # webhook injects, not from the credentials file.
        return WorkloadIdentityCredential(
            tenant_id=os.environ.get("AZURE_TENANT_ID"),
            client_id=os.environ.get("AZURE_CLIENT_ID"),
            token_file_path=token_file,
            **common,
        )
    return ManagedIdentityCredential(client_id=creds.get("AZURE_CLIENT_ID") or None, **transport)


def _sign_in_credential(
    creds: Mapping[str, str], common: dict[str, Any], settings: StoreSettings
) -> Any:
    """A client secret's, a client certificate's or a user's credential, in that order."""
    from azure.identity import CertificateCredential, ClientSecretCredential

    tenant = creds.get("AZURE_TENANT_ID", "")
    client_id = creds.get("AZURE_CLIENT_ID", "")
    if not tenant or not client_id:
        raise ConfigError(
            "AZURE_TENANT_ID and AZURE_CLIENT_ID are required in the credentials file "
            "for client secret or certificate auth"
        )
    secret = creds.get("AZURE_CLIENT_SECRET", "")
    if secret:
        return ClientSecretCredential(tenant, client_id, secret, **common)
    cert_data = creds.get("AZURE_CLIENT_CERTIFICATE", "")
    cert_path = creds.get("AZURE_CLIENT_CERTIFICATE_PATH", "")
    if not cert_data and not cert_path:
        return _username_password(creds, tenant, client_id, common, settings)
    send_chain = creds.get("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN", "").lower()
    cert_args: dict[str, Any] = (
        {"certificate_data": cert_data.encode()} if cert_data else {"certificate_path": cert_path}
    )
    try:
        return CertificateCredential(
            tenant,
            client_id,
            password=creds.get("AZURE_CLIENT_CERTIFICATE_PASSWORD") or None,
            send_certificate_chain=send_chain in ("1", "true"),
            **cert_args,
            **common,
        )
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot load the Azure client certificate: {retry.describe(exc)}"
        ) from None


def _username_password(
    creds: Mapping[str, str],
    tenant: str,
    client_id: str,
    common: dict[str, Any],
    settings: StoreSettings,
) -> Any:
    """Velero 1.15 and 1.16 sign in as a user (ROPC); 1.17.0 removed it, so a file that
    still holds AZURE_USERNAME fails there ("incomplete credential configuration")."""
    from azure.identity import UsernamePasswordCredential

    profile = settings.profile
    if not profile.azure_username_password:
        raise ConfigError(
            f"AZURE_USERNAME/AZURE_PASSWORD credentials are not supported by Velero "
            f"{profile.name} (removed in Velero 1.17); use a client secret, a client "
            "certificate or workload identity"
        )
    password = creds.get("AZURE_PASSWORD", "")
    if not password:
        raise ConfigError("AZURE_PASSWORD is required in the credentials file with AZURE_USERNAME")
    message = (
        f"Azure AZURE_USERNAME/AZURE_PASSWORD credentials are deprecated: Velero 1.17 "
        f"removed them (this run follows Velero {profile.name}); switch to a client secret "
        "or workload identity"
    )
    log.warning(message)
    settings.warn(message)
    with warnings.catch_warnings():
        # azure-identity deprecates the credential (no MFA); the warning above says so
        # in the user's terms, once per location instead of once per process.
        warnings.filterwarnings(
            "ignore",
            message=r"UsernamePasswordCredential is deprecated",
            category=DeprecationWarning,
        )
        return UsernamePasswordCredential(
            client_id, creds["AZURE_USERNAME"], password, tenant_id=tenant, **common
        )


def _cloud(name: str) -> Cloud:
    cloud = CLOUDS.get(name.upper())
    if cloud is None:
        raise ConfigError(
            f"unknown cloud configuration name: {name}; known: AzurePublicCloud, "
            "AzureChinaCloud, AzureUSGovernmentCloud"
        )
    return cloud


def _setting(config: Mapping[str, str], creds: Mapping[str, str], key: str, cred: str) -> str:
    """Velero GetFromLocationConfigOrCredential: the BSL config wins over the file."""
    return config.get(key) or creds.get(cred, "")


def _arm_client(
    config: Mapping[str, str],
    creds: Mapping[str, str],
    cloud: Cloud,
    aad: Callable[[], Any],
    settings: StoreSettings,
    *,
    required: bool,
) -> Any:
    """A StorageManagementClient, or None (when not ``required``) if it cannot be built."""
    subscription = _setting(config, creds, "subscriptionId", "AZURE_SUBSCRIPTION_ID")
    if not subscription:
        if required:
            raise ConfigError(
                "subscription ID is required in BSL or credential to exchange the storage "
                "account access key (or set storageAccountKeyEnvVar or useAAD)"
            )
        return None
    from azure.mgmt.storage import StorageManagementClient

    try:
        credential = aad()
    except ConfigError:
        if required:
            raise
        return None
    return StorageManagementClient(
        credential,
        subscription,
        base_url=cloud.resource_manager,
        credential_scopes=[cloud.resource_manager + ".default"],
        transport=_transport(settings),
        retry_total=0,
        **_transport_kwargs(settings),
    )


def _exchange_account_key(
    arm: Any, config: Mapping[str, str], creds: Mapping[str, str], settings: StoreSettings
) -> str:
    """ARM ListKeys (expand=kerb): the first key with Full permission."""
    group = _setting(config, creds, "resourceGroup", "AZURE_RESOURCE_GROUP")
    if not group:
        raise ConfigError(
            "resource group is required in BSL or credential to exchange the storage "
            "account access key"
        )
    account = config["storageAccount"]
    what = f"list keys of storage account {account}"
    result = sdk.guarded(
        lambda: arm.storage_accounts.list_keys(group, account, expand="kerb"),
        what,
        settings.retry,
    )
    # azure-mgmt-storage 25 models are mappings: the "keys" field is keys_property.
    for key in result.keys_property or ():
        permission = getattr(key.permissions, "value", key.permissions)
        if permission is not None and str(permission).lower() == "full" and key.value:
            return str(key.value)
    raise StoreError(f"{what}: no storage key with Full permissions found")


def _uri_from_arm(
    arm: Any,
    config: Mapping[str, str],
    creds: Mapping[str, str],
    cloud: Cloud,
    aad: Callable[[], Any],
    settings: StoreSettings,
) -> str | None:
    """The account's primary blob endpoint from ARM, or None to fall back to the default
    URI, as Velero does on any failure (accounts in DNS zones do not follow the pattern)."""
    group = _setting(config, creds, "resourceGroup", "AZURE_RESOURCE_GROUP")
    if not group:
        return None
    if arm is None:
        arm = _arm_client(config, creds, cloud, aad, settings, required=False)
        if arm is None:
            return None
    account = config["storageAccount"]
    try:
        account_info = retry.call(
            lambda: arm.storage_accounts.get_properties(group, account),
            what=f"get properties of storage account {account}",
            policy=settings.retry,
        )
        blob = account_info.properties.primary_endpoints.blob
    except Exception as exc:
        log.info(
            "cannot read the storage account's endpoint from ARM, using the default URI",
            extra={"account": account, "error": retry.describe(exc)},
        )
        return None
    return str(blob) if blob else None


def _transport(settings: StoreSettings) -> RequestsTransport:
    session = sdk.pooled(requests.Session(), settings)
    return RequestsTransport(session=session, session_owner=True, **_transport_kwargs(settings))


def _transport_kwargs(settings: StoreSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "connection_timeout": settings.timeout,
        "read_timeout": settings.timeout,
    }
    if settings.ca_bundle:
        kwargs["connection_verify"] = settings.ca_bundle
    return kwargs
