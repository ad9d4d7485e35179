"""The chart rendered by the pinned helm: lint, structure, RBAC rules, schema, and its
agreement with the worker's command line and with chart/README.md."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

import worker
from tests.chart.chart import (
    CHART_DIR,
    CSI_RULES,
    REPO_ROOT,
    VALUE_SETS,
    Helm,
    Manifests,
    role_rules,
)
from worker.cli import DEFAULTS, build_parser, settings_from
from worker.durations import parse_go_duration
from worker.errors import ConfigError
from worker.locations import Shard
from worker.profile import AUTO, parse_version
from worker.settings import KNOWN_FEATURES

pytestmark = pytest.mark.integration

VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())
README = (CHART_DIR / "README.md").read_text()

# chart value -> the CLI option's argparse dest it renders.
VALUE_FLAGS = {
    "namespace": "namespace",
    "defaultBackupSyncPeriod": "default_backup_sync_period",
    "features": "features",
    "locations": "location",
    "concurrency": "concurrency",
    "kubeQps": "kube_qps",
    "kubeBurst": "kube_burst",
    "requestTimeout": "request_timeout",
    "retryAttempts": "retry_attempts",
    "retryMaxSeconds": "retry_max_seconds",
    "massOrphanShare": "mass_orphan_share",
    "massOrphanFloor": "mass_orphan_floor",
    "pushgatewayUrl": "pushgateway_url",
    "shutdownGrace": "shutdown_grace",
    "veleroVersion": "velero_version",
    "veleroDeployment": "velero_deployment",
    "shards": "shards",
    "logFormat": "log_format",
    "logLevel": "log_level",
}
# CLI options that are deliberately not values: meaningless in a pod, or for one manual run
# (through extraArgs); chart/README.md says so for each.
NOT_VALUES = {
    "help": None,
    "version": None,
    "kubeconfig": "--kubeconfig",
    "context": "--context",
    "force": "--force",
    "dry_run": "--dry-run",
    "allow_mass_orphan_deletion": "--allow-mass-orphan-deletion",
    # The chart mounts the credentials Secret at /credentials, the default.
    "credentials_dir": "--credentials-dir",
    # An Indexed Job's pod takes its own index; `shards` is the value.
    "shard": "--shard",
}


@pytest.fixture(scope="module")
def defaults(helm: Helm) -> Manifests:
    return helm.render({})


# --- helm lint / template --------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint_strict(helm: Helm, name: str) -> None:
    values = helm.values_file(VALUE_SETS[name])
    out = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(values)).stdout
    assert "0 chart(s) failed" in out, out


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_template_renders_only_known_kinds_with_standard_labels(helm: Helm, name: str) -> None:
    rendered = helm.render(VALUE_SETS[name])
    csi = "EnableCSI" in VALUE_SETS[name].get("features", [])
    expected = ["CronJob", "Role", "RoleBinding", "ServiceAccount"]
    if csi:
        expected += ["ClusterRole", "ClusterRoleBinding"]
    assert rendered.kinds() == sorted(expected)
    for doc in rendered.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "backup-sync"
        assert labels["app.kubernetes.io/instance"] == "bs"
        assert labels["app.kubernetes.io/version"] == worker.__version__


def test_chart_app_version_is_the_worker_version() -> None:
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    assert chart["appVersion"] == worker.__version__


# --- the CronJob -----------------------------------------------------------------------------


def test_cronjob_defaults(defaults: Manifests) -> None:
    spec = defaults.cronjob["spec"]
    assert spec["schedule"] == "*/5 * * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 180
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 3)
    job = defaults.job_spec
    assert job["activeDeadlineSeconds"] == 1800
    assert job["backoffLimit"] == 2
    assert job["ttlSecondsAfterFinished"] == 86400
    assert defaults.cronjob["metadata"]["name"] == "bs-backup-sync"
    assert defaults.container["image"] == f"backup-sync:{worker.__version__}"
    assert defaults.container["command"] == ["backup-sync"]


def test_pod_failure_policy_retries_exit_1_only(defaults: Manifests) -> None:
    """Exit 2 (configuration) and 3 (items failed) fail the Job at once; 1 counts towards
    backoffLimit; disruptions do not count. podFailurePolicy requires restartPolicy Never."""
    rules = defaults.job_spec["podFailurePolicy"]["rules"]
    assert rules == [
        {
            "action": "FailJob",
            "onExitCodes": {"containerName": "backup-sync", "operator": "In", "values": [2, 3]},
        },
        {
            "action": "Count",
            "onExitCodes": {"containerName": "backup-sync", "operator": "In", "values": [1]},
        },
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]
    assert defaults.pod_spec["restartPolicy"] == "Never"
    from worker.report import EXIT_CONFIG, EXIT_LOCATION_FAILED

    assert (EXIT_LOCATION_FAILED, EXIT_CONFIG) == (1, 2)


def test_pod_is_hardened(defaults: Manifests) -> None:
    pod = defaults.pod_spec
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is True
    assert pod["enableServiceLinks"] is False
    container = defaults.container
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    assert "env" not in container
    # The UID/GID the image runs as.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", dockerfile, re.M)


def test_pod_scheduling_and_metadata_values(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["everything"], release="bs", namespace="ops")
    everything = VALUE_SETS["everything"]
    pod = rendered.pod_spec
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert pod[key] == everything[key], key
    assert pod["serviceAccountName"] == "velero-sync"
    meta = rendered.job_spec["template"]["metadata"]
    assert meta["labels"]["team"] == "platform"
    assert meta["annotations"] == everything["podAnnotations"]
    container = rendered.container
    assert container["image"] == "registry.example.com/platform/backup-sync@sha256:" + "ab" * 32
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == everything["resources"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}} in pod["volumes"]
    spec = rendered.cronjob["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["suspend"]) == (
        "@hourly",
        "Europe/Berlin",
        True,
    )
    assert spec["startingDeadlineSeconds"] == 600
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (1, 5)
    job = rendered.job_spec
    assert (job["activeDeadlineSeconds"], job["backoffLimit"]) == (7200, 4)
    assert "ttlSecondsAfterFinished" not in job  # null: kept until the history limits
    assert rendered.cronjob["metadata"]["name"] == "sync"
    sa = rendered.one("ServiceAccount")
    assert sa["metadata"]["name"] == "velero-sync"
    assert sa["metadata"]["labels"]["team"] == "platform"
    assert sa["automountServiceAccountToken"] is False


def test_existing_service_account(helm: Helm) -> None:
    rendered = helm.render({"serviceAccount": {"create": False, "name": "velero"}})
    assert "ServiceAccount" not in rendered.kinds()
    assert rendered.pod_spec["serviceAccountName"] == "velero"
    assert rendered.one("RoleBinding")["subjects"][0]["name"] == "velero"
    failed = helm.template({"serviceAccount": {"create": False}}, check=False)
    assert failed.returncode != 0
    assert "serviceAccount.name is required" in failed.stderr


def test_rbac_can_be_left_to_the_user(helm: Helm) -> None:
    rendered = helm.render({"rbac": {"create": False}, "features": ["EnableCSI"]})
    assert rendered.kinds() == ["CronJob", "ServiceAccount"]


def test_long_names_fit_the_cronjob_and_manual_job_limits(helm: Helm) -> None:
    rendered = helm.render({}, release="a-very-long-release-name-for-the-backup-sync-chart")
    name = rendered.cronjob["metadata"]["name"]
    assert len(name) <= 52  # the CronJob controller appends 11 characters to its Jobs
    assert len(f"{name}-manual-1767225600") <= 63  # NOTES.txt's manual run


# --- RBAC ------------------------------------------------------------------------------------


def test_role_has_exactly_the_worker_calls_and_no_secrets_by_default(defaults: Manifests) -> None:
    role = defaults.one("Role")
    assert role["metadata"]["namespace"] == "velero"
    assert role["rules"] == role_rules()
    binding = defaults.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "bs-backup-sync", "namespace": "velero"}
    ]
    assert not defaults.all("ClusterRole")


def test_secrets_are_readable_by_name_only(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["credentials-secret"])
    rules = rendered.one("Role")["rules"]
    assert rules == role_rules(secrets=["default-credentials", "secondary-credentials"])


def test_csi_cluster_role_only_with_enable_csi(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["csi"])
    role = rendered.one("ClusterRole")
    assert role["rules"] == CSI_RULES
    assert role["metadata"]["name"] == "bs-backup-sync-velero-csi"
    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "bs-backup-sync", "namespace": "velero"}
    ]
    assert "--features=EnableCSI" in rendered.args
    # An orphan's VolumeSnapshots are listed and deleted in the Velero namespace only.
    assert rendered.one("Role")["rules"] == role_rules(csi=True)


def test_auto_velero_version_reads_only_the_named_deployment(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["velero-deployment"])
    assert rendered.one("Role")["rules"] == role_rules(deployment="velero-server")
    assert "--velero-version=auto" in rendered.args
    assert "--velero-deployment=velero-server" in rendered.args


@pytest.mark.parametrize("version", ["1.18.3", "1.16", "v1.17.2"])
def test_an_explicit_velero_version_reads_no_deployment(helm: Helm, version: str) -> None:
    rendered = helm.render({"veleroVersion": version, "features": ["EnableCSI"]})
    assert rendered.one("Role")["rules"] == role_rules(auto=False, csi=True)
    assert f"--velero-version={version}" in rendered.args


def test_velero_namespace_apart_from_the_release_namespace(helm: Helm) -> None:
    rendered = helm.render({"namespace": "velero"}, namespace="ops")
    assert rendered.cronjob["metadata"]["namespace"] == "ops"
    assert rendered.one("ServiceAccount")["metadata"]["namespace"] == "ops"
    assert rendered.one("Role")["metadata"]["namespace"] == "velero"
    binding = rendered.one("RoleBinding")
    assert binding["metadata"]["namespace"] == "velero"
    assert binding["subjects"][0]["namespace"] == "ops"
    assert "--namespace=velero" in rendered.args


# --- credentials -----------------------------------------------------------------------------


def test_credentials_secret_is_mounted_as_velero_install_does(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["credentials-secret"])
    env = rendered.env()
    for var in (
        "AWS_SHARED_CREDENTIALS_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_CREDENTIALS_FILE",
    ):
        assert env[var] == {"name": var, "value": "/credentials/cloud"}
    assert {"name": "cloud-credentials", "mountPath": "/credentials", "readOnly": True} in (
        rendered.container["volumeMounts"]
    )
    assert {
        "name": "cloud-credentials",
        "secret": {
            "secretName": "cloud-credentials",
            "defaultMode": 0o440,
            "items": [{"key": "cloud", "path": "cloud"}],
        },
    } in rendered.pod_spec["volumes"]


@pytest.mark.parametrize("cloud", ["aws", "gke", "azure"])
def test_workload_identity_needs_no_credentials_file(helm: Helm, cloud: str) -> None:
    values = VALUE_SETS[f"workload-identity-{cloud}"]
    rendered = helm.render(values)
    sa = rendered.one("ServiceAccount")
    assert sa["metadata"]["annotations"] == values["serviceAccount"]["annotations"]
    assert "env" not in rendered.container
    assert [v["name"] for v in rendered.pod_spec["volumes"]] == ["tmp"]
    labels = rendered.job_spec["template"]["metadata"]["labels"]
    assert (labels.get("azure.workload.identity/use") == "true") == (cloud == "azure")


def test_extra_env_follows_the_credentials_env(helm: Helm) -> None:
    rendered = helm.render(VALUE_SETS["everything"])
    names = [e["name"] for e in rendered.container["env"]]
    assert names == [
        "AWS_SHARED_CREDENTIALS_FILE",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_CREDENTIALS_FILE",
        "AWS_REGION",
        "AZURE_STORAGE_ACCOUNT_ACCESS_KEY",
    ]
    volume = next(v for v in rendered.pod_spec["volumes"] if v["name"] == "cloud-credentials")
    assert volume["secret"]["items"] == [{"key": "aws", "path": "cloud"}]


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_args_are_valid_for_the_cli(helm: Helm, name: str) -> None:
    values = VALUE_SETS[name]
    rendered = helm.render(values, namespace="ops")
    args = build_parser().parse_args(rendered.args)  # exits 2 (SystemExit) when invalid
    # raises ConfigError on bad durations or features; the pod of index 1, as an Indexed
    # Job's pods have their index
    settings = settings_from(args, {"JOB_COMPLETION_INDEX": "1"})
    merged = {**VALUES, **values}
    assert settings.shard == (Shard(1, merged["shards"]) if merged["shards"] > 1 else None)
    assert settings.namespace == (merged["namespace"] or "ops")
    assert settings.features == frozenset(merged["features"])
    assert settings.locations == frozenset(merged["locations"])
    assert settings.concurrency == merged["concurrency"]
    assert settings.kube_qps == merged["kubeQps"]
    assert settings.kube_burst == merged["kubeBurst"]
    assert settings.request_timeout == merged["requestTimeout"]
    assert settings.retry.attempts == merged["retryAttempts"]
    assert settings.retry.max_seconds == merged["retryMaxSeconds"]
    assert settings.mass_orphan_share == merged["massOrphanShare"]
    assert settings.mass_orphan_floor == merged["massOrphanFloor"]
    assert settings.pushgateway_url == (merged["pushgatewayUrl"] or None)
    assert settings.shutdown_grace == merged["shutdownGrace"]
    assert settings.velero_version == merged["veleroVersion"]
    assert settings.velero_deployment == merged["veleroDeployment"]
    assert (
        rendered.pod_spec["terminationGracePeriodSeconds"]
        == (merged["terminationGracePeriodSeconds"])
    )
    assert (settings.log_format, settings.log_level) == (merged["logFormat"], merged["logLevel"])
    assert args.default_backup_sync_period == merged["defaultBackupSyncPeriod"]
    assert settings.force == ("--force" in merged["extraArgs"])


def test_value_defaults_are_the_cli_defaults() -> None:
    defaults = {a.dest: a.default for a in build_parser()._actions}
    for value, dest in VALUE_FLAGS.items():
        cli_default = defaults[dest]
        chart_default = VALUES[value]
        if value == "features":
            cli_default = [f for f in cli_default.split(",") if f]
        if value in ("namespace", "pushgatewayUrl"):
            cli_default = cli_default or ""
        if value == "veleroVersion":  # no flag: BACKUP_SYNC_VELERO_VERSION, else auto
            cli_default = cli_default or AUTO
        if value == "shards":  # no flag: one shard (every location)
            cli_default = cli_default or 1
        if value == "defaultBackupSyncPeriod":  # the parser leaves the default to Settings
            assert cli_default is None
            assert parse_go_duration(chart_default) == DEFAULTS.default_sync_period
            continue
        assert chart_default == cli_default, (
            f"{value}: chart {chart_default!r}, CLI {cli_default!r}"
        )


def test_every_cli_option_is_a_value_or_documented_as_an_extra_arg() -> None:
    """A new worker option must become a chart value (or be listed, and documented, as one
    for extraArgs only)."""
    dests = {a.dest for a in build_parser()._actions}
    assert dests == set(VALUE_FLAGS.values()) | set(NOT_VALUES)
    for flag in filter(None, NOT_VALUES.values()):
        assert f"`{flag}`" in README, f"chart/README.md does not mention {flag}"


def test_schema_enums_are_the_cli_choices() -> None:
    choices = {a.dest: a.choices for a in build_parser()._actions}
    props = SCHEMA["properties"]
    assert props["logFormat"]["enum"] == list(choices["log_format"])
    assert props["logLevel"]["enum"] == list(choices["log_level"])
    assert set(props["features"]["items"]["enum"]) == set(KNOWN_FEATURES)


# --- values.schema.json ----------------------------------------------------------------------


BAD_VALUES: list[tuple[str, dict[str, Any]]] = [
    ("/concurrency", {"concurrency": 0}),
    ("/concurrency", {"concurrency": "many"}),
    ("/concurrency", {"concurrency": 2.5}),
    ("/kubeQps", {"kubeQps": -1}),
    ("/kubeBurst", {"kubeBurst": 0}),
    ("/requestTimeout", {"requestTimeout": 0}),
    ("/retryAttempts", {"retryAttempts": 0}),
    ("/retryMaxSeconds", {"retryMaxSeconds": "soon"}),
    ("/massOrphanShare", {"massOrphanShare": 1.5}),
    ("/massOrphanFloor", {"massOrphanFloor": -1}),
    ("/pushgatewayUrl", {"pushgatewayUrl": "pushgateway:9091"}),
    ("/features/1", {"features": ["EnableCSI", "EnableAPIGroupVersions"]}),
    ("/features", {"features": "EnableCSI"}),
    ("/locations/0", {"locations": ["Not_A_Name"]}),
    ("/locations", {"locations": "default"}),
    ("/defaultBackupSyncPeriod", {"defaultBackupSyncPeriod": "5 minutes"}),
    ("/defaultBackupSyncPeriod", {"defaultBackupSyncPeriod": "-1m"}),
    ("/defaultBackupSyncPeriod", {"defaultBackupSyncPeriod": 60}),
    ("/logFormat", {"logFormat": "yaml"}),
    ("/logLevel", {"logLevel": "verbose"}),
    ("/veleroVersion", {"veleroVersion": "latest"}),
    ("/veleroVersion", {"veleroVersion": 1.18}),
    ("/veleroVersion", {"veleroVersion": "1.14.3"}),
    ("/veleroVersion", {"veleroVersion": "1.19"}),
    ("/veleroDeployment", {"veleroDeployment": "Velero"}),
    ("/veleroDeployment", {"veleroDeployment": ""}),
    ("/schedule", {"schedule": "every 5 minutes"}),
    ("/schedule", {"schedule": "TZ=UTC */5 * * * *"}),
    ("/timeZone", {"timeZone": "Mars Standard Time"}),
    ("/suspend", {"suspend": "yes"}),
    ("/startingDeadlineSeconds", {"startingDeadlineSeconds": 5}),
    ("/backoffLimit", {"backoffLimit": -1}),
    ("/activeDeadlineSeconds", {"activeDeadlineSeconds": 0}),
    ("/ttlSecondsAfterFinished", {"ttlSecondsAfterFinished": "1d"}),
    ("/terminationGracePeriodSeconds", {"terminationGracePeriodSeconds": 0}),
    ("/shutdownGrace", {"shutdownGrace": -1}),
    ("/namespace", {"namespace": "Velero"}),
    ("/credentials/locationSecrets", {"credentials": {"locationSecrets": "cloud-credentials"}}),
    ("/credentials/existingSecret", {"credentials": {"existingSecret": "has space"}}),
    ("/credentials/key", {"credentials": {"key": ""}}),
    ("/credentials", {"credentials": {"secret": "cloud-credentials"}}),
    ("/serviceAccount/annotations/a", {"serviceAccount": {"annotations": {"a": 1}}}),
    ("/serviceAccount/create", {"serviceAccount": {"create": "yes"}}),
    ("/rbac/create", {"rbac": {"create": "true"}}),
    ("/image/digest", {"image": {"digest": "sha256:short"}}),
    ("/image/pullPolicy", {"image": {"pullPolicy": "Sometimes"}}),
    ("/imagePullSecrets/0", {"imagePullSecrets": ["registry"]}),
    ("/extraEnv/0", {"extraEnv": [{"value": "x"}]}),
    ("/extraEnv/0/value", {"extraEnv": [{"name": "X", "value": 1}]}),
    ("/extraArgs", {"extraArgs": "--force"}),
    ("/resources/limits/memory", {"resources": {"limits": {"memory": "lots"}}}),
    ("/tmpDir", {"tmpDir": {"size": "1Gi"}}),
    ("/podLabels/team", {"podLabels": {"team": True}}),
    ("/nodeSelector", {"nodeSelector": ["linux"]}),
    ("/fullnameOverride", {"fullnameOverride": "x" * 46}),
    ("", {"schedules": "*/5 * * * *"}),
]


@pytest.mark.parametrize(
    ("where", "values"), BAD_VALUES, ids=[json.dumps(v) for _, v in BAD_VALUES]
)
def test_schema_rejects_wrong_values(helm: Helm, where: str, values: dict[str, Any]) -> None:
    proc = helm.template(values, check=False)
    assert proc.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert f"at '{where}'" in proc.stderr, proc.stderr


# Around each bound of the supported range and of the form: the schema accepts exactly what
# the CLI accepts, so a wrong version fails `helm install`, and a version the worker comes to
# support fails this test until the schema follows.
VELERO_VERSIONS = [
    "auto",
    "1.15",
    "1.15.0",
    "v1.16.2",
    "1.17.2",
    "1.18",
    "1.18.3",
    "1.18.12",
    "AUTO",
    "1.14.9",
    "1.19",
    "1.19.0",
    "2.0",
    "1",
    "latest",
    "v1.18.3-rc.1",
    "1.18.3.1",
]


@pytest.mark.parametrize("version", VELERO_VERSIONS)
def test_schema_velero_versions_are_the_cli_versions(helm: Helm, version: str) -> None:
    try:
        if version != AUTO:
            parse_version(version)
        cli_accepts = True
    except ConfigError:
        cli_accepts = False
    proc = helm.template({"veleroVersion": version}, check=False)
    assert (proc.returncode == 0) is cli_accepts, proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"shutdownGrace": 30},
        {"shutdownGrace": 45, "terminationGracePeriodSeconds": 40},
    ],
)
def test_shutdown_grace_must_leave_time_before_sigkill(helm: Helm, values: dict[str, Any]) -> None:
    proc = helm.template(values, check=False)
    assert proc.returncode != 0, f"accepted {values}"
    assert "shutdownGrace must be less than terminationGracePeriodSeconds" in proc.stderr


def test_schema_accepts_what_set_gives(helm: Helm) -> None:
    """`--set` makes strings of decimals and ints of whole numbers; both are fine."""
    proc = helm.run(
        "template",
        "bs",
        str(CHART_DIR),
        "--set",
        "kubeQps=0.5,requestTimeout=2.5,retryMaxSeconds=0.5,massOrphanShare=0.1",
        "--set",
        "defaultBackupSyncPeriod=0,concurrency=8,features={EnableCSI},locations={a,b}",
    )
    rendered = Manifests([d for d in yaml.safe_load_all(proc.stdout) if d])
    args = build_parser().parse_args(rendered.args)
    assert (args.kube_qps, args.request_timeout, args.retry_max_seconds) == (0.5, 2.5, 0.5)
    assert (args.mass_orphan_share, args.default_backup_sync_period) == (0.1, "0")
    assert (args.concurrency, args.location) == (8, ["a", "b"])


# --- values.yaml, values.schema.json and chart/README.md agree -------------------------------


# Kubernetes objects passed through as a whole (documented as one value).
KUBERNETES_OBJECTS = {"resources"}


def _leaves(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, sub in schema["properties"].items():
        if "properties" in sub and prefix + key not in KUBERNETES_OBJECTS:
            out |= _leaves(sub, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def _value_leaves(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in values.items():
        sub = schema["properties"].get(key, {})
        if (
            "properties" in sub
            and isinstance(value, dict)
            and prefix + key not in KUBERNETES_OBJECTS
        ):
            out |= _value_leaves(value, sub, f"{prefix}{key}.")
        else:
            out.add(prefix + key)
    return out


def test_schema_and_values_have_the_same_keys() -> None:
    assert _value_leaves(VALUES, SCHEMA) == _leaves(SCHEMA)
    assert SCHEMA["additionalProperties"] is False


def test_readme_documents_every_value_and_nothing_else() -> None:
    values_section = README[README.index("\n## Values\n") :]
    documented = set(re.findall(r"^\| `([A-Za-z.]+)` \|", values_section, re.M))
    assert documented == _leaves(SCHEMA)


def test_shards_make_the_job_indexed(helm: Helm) -> None:
    """One pod per shard, each with its own JOB_COMPLETION_INDEX; the same podFailurePolicy,
    so a failed index is retried (or failed) on its own."""
    job = helm.render({"shards": 4}).job_spec
    assert (job["completionMode"], job["completions"], job["parallelism"]) == ("Indexed", 4, 4)
    assert job["podFailurePolicy"] == helm.render({}).job_spec["podFailurePolicy"]
    assert "--shards=4" in helm.render({"shards": 4}).args
    single = helm.render({}).job_spec
    assert not {"completionMode", "completions", "parallelism"} & set(single)
    assert not [a for a in helm.render({}).args if a.startswith("--shards")]
