"""The object-store port and the provider registry.

A provider module knows bytes and keys (``s3.py``, ``gcs.py``, ``azure.py``), on the
shared ``sdk.py`` (guarded calls, the size check, the HTTP pool); the Velero key layout lives
only in ``layout.py`` and the capped decoding of what it reads in ``decode.py``. Adding a
provider is one module exposing ``CONFIG_KEYS`` and ``open_store(settings)``, plus one line
in ``PROVIDERS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from worker import velero
from worker.errors import ConfigError
from worker.profile import DEFAULT_PROFILE, VeleroProfile
from worker.retry import DEFAULT_POLICY, RetryPolicy

# Velero adds these to every provider's config (providers.md §1.1); they are always valid.
ALWAYS_VALID_KEYS = frozenset({"bucket", "prefix", "caCert"})

PROVIDERS: Mapping[str, str] = {
    "aws": "worker.storage.s3",
    "gcp": "worker.storage.gcs",
    "azure": "worker.storage.azure",
}


def no_warning(message: str) -> None:
    """The default ``StoreSettings.warn``: nobody collects warnings."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Everything a provider needs to open one bucket, already validated and resolved."""

    provider: str  # normalized: "aws" | "gcp" | "azure"
    bucket: str  # trimmed of "/"
    config: Mapping[str, str] = field(default_factory=dict)  # spec.config as given
    credentials_file: str | None = None  # from spec.credential; None = provider default chain
    ca_bundle: str | None = None  # PEM file: system CAs + the location's CA; None = default
    timeout: float = 30.0  # seconds, for connect and for each read
    max_connections: int = 10  # HTTP pool size; the worker sizes it to --concurrency
    page_size: int = 1000  # listing page size (tests force it small)
    retry: RetryPolicy = DEFAULT_POLICY
    profile: VeleroProfile = DEFAULT_PROFILE  # the Velero version whose behaviour to follow
    # For what the user must see in the run summary (a deprecation); also logged.
    warn: Callable[[str], None] = no_warning


class ObjectStore(Protocol):
    """Read-only access to one bucket. Implementations are thread-safe."""

    def list_common_prefixes(self, prefix: str, delimiter: str = "/") -> Iterator[str]:
        """Yield every common prefix under ``prefix`` (full, with the trailing delimiter),
        following pagination lazily. Raises StoreError when a page cannot be read (a
        missing bucket included)."""
        ...

    def get(self, key: str, max_bytes: int) -> bytes | None:
        """Read a whole object in one round trip; None when it is absent. Raises
        ObjectTooLarge beyond ``max_bytes`` (without reading much more) and StoreError for
        any other failure: a missing bucket is an error, never an absent object."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def normalize_provider(name: str) -> str:
    """``aws`` and ``velero.io/aws`` are the same provider (Velero's sanitizeName)."""
    short = name.removeprefix(velero.PROVIDER_PREFIX)
    if short not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(f"unsupported provider {name!r}; supported: {known}")
    return short


def validate_config_keys(provider: str, config: Mapping[str, str]) -> None:
    """Reject keys the provider's Velero plugin would reject, naming the valid ones."""
    valid = _provider_module(provider).CONFIG_KEYS | ALWAYS_VALID_KEYS
    invalid = sorted(set(config) - valid)
    if invalid:
        raise ConfigError(f"config has invalid keys {invalid}; valid keys are {sorted(valid)}")


# Go's strconv.ParseBool spellings: Velero's plugins parse their boolean keys with it.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(config: Mapping[str, str], key: str) -> bool:
    """A boolean config value as the plugins read it: absent or "" is false, otherwise
    Go's ``strconv.ParseBool``; anything else is a ConfigError."""
    value = config.get(key, "")
    if value == "" or value in _GO_FALSE:
        return False
    if value in _GO_TRUE:
        return True
    raise ConfigError(f"could not parse {key} (expected bool: true/false/1/0/t/f): {value[:40]!r}")


def open_store(settings: StoreSettings) -> ObjectStore:
    """Open the bucket with the provider named in ``settings``. Raises ConfigError or
    StoreError."""
    validate_config_keys(settings.provider, settings.config)
    store: ObjectStore = _provider_module(settings.provider).open_store(settings)
    return store


def _provider_module(provider: str) -> _ProviderModule:
    module: _ProviderModule = importlib.import_module(PROVIDERS[normalize_provider(provider)])
    return module


class _ProviderModule(Protocol):
    CONFIG_KEYS: frozenset[str]

    def open_store(self, settings: StoreSettings) -> ObjectStore: ...
