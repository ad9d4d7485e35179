"""Provider registry: Velero's provider names and its config-key validation."""

from __future__ import annotations

import pytest

from worker.errors import ConfigError
from worker.storage import (
    ALWAYS_VALID_KEYS,
    PROVIDERS,
    StoreSettings,
    azure,
    gcs,
    normalize_provider,
    open_store,
    parse_bool,
    s3,
    validate_config_keys,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("aws", "aws"),
        ("velero.io/aws", "aws"),
        ("gcp", "gcp"),
        ("velero.io/gcp", "gcp"),
        ("azure", "azure"),
        ("velero.io/azure", "azure"),
    ],
)
def test_provider_names_follow_velero(name: str, expected: str) -> None:
    assert normalize_provider(name) == expected


@pytest.mark.parametrize("name", ["", "AWS", "s3", "example.com/aws", "velero.io/", "alibabacloud"])
def test_unknown_provider_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="aws, azure, gcp"):
        normalize_provider(name)


def test_every_registered_provider_has_a_module() -> None:
    assert {PROVIDERS[p] for p in ("aws", "gcp", "azure")} == {
        s3.__name__,
        gcs.__name__,
        azure.__name__,
    }


def test_config_keys_match_the_plugins() -> None:
    # velero-plugin-for-aws v1.11.1; customerKeyEncryptionSecret is a later addition.
    assert set(s3.CONFIG_KEYS) == {
        "region",
        "s3Url",
        "publicUrl",
        "kmsKeyId",
        "customerKeyEncryptionFile",
        "s3ForcePathStyle",
        "signatureVersion",
        "credentialsFile",
        "profile",
        "serverSideEncryption",
        "insecureSkipTLSVerify",
        "enableSharedConfig",
        "tagging",
        "checksumAlgorithm",
    }
    assert set(gcs.CONFIG_KEYS) == {
        "credentialsFile",
        "serviceAccount",
        "kmsKeyName",
        "storeEndpoint",
        "universeDomain",
    }
    assert set(azure.CONFIG_KEYS) == {
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


@pytest.mark.parametrize(
    ("provider", "key"),
    [
        ("aws", "customerKeyEncryptionSecret"),
        ("aws", "storageAccount"),
        ("velero.io/gcp", "insecureSkipTLSVerify"),
        ("gcp", "region"),
        ("azure", "caCertEncoded"),
        ("azure", "s3Url"),
    ],
)
def test_unknown_key_lists_the_valid_ones(provider: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config_keys(provider, {key: "x", "bucket": "b"})
    message = str(caught.value)
    assert f"invalid keys ['{key}']" in message
    for valid in ALWAYS_VALID_KEYS:
        assert valid in message


def test_velero_added_keys_are_always_valid() -> None:
    for provider in ("aws", "gcp", "azure"):
        validate_config_keys(provider, {"bucket": "b", "prefix": "p", "caCert": "PEM"})


def test_open_store_validates_keys_before_touching_the_network() -> None:
    settings = StoreSettings(provider="aws", bucket="b", config={"bogus": "1"})
    with pytest.raises(ConfigError, match="bogus"):
        open_store(settings)


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_true_spellings(value: str) -> None:
    assert parse_bool({"k": value}, "k") is True


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False", ""])
def test_go_false_spellings(value: str) -> None:
    assert parse_bool({"k": value}, "k") is False


def test_absent_bool_is_false() -> None:
    assert parse_bool({}, "k") is False


@pytest.mark.parametrize("value", ["yes", "no", "on", "tRUE", " true", "2"])
def test_other_bool_spellings_are_config_errors(value: str) -> None:
    with pytest.raises(ConfigError, match="could not parse k"):
        parse_bool({"k": value}, "k")
