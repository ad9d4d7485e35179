"""The chart under test: helm and promtool (pinned, built from their Go modules), the values
sets the tests render, rendered-manifest accessors, and the worker run the way the CronJob's
pod runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import ControlPlane, read_versions

Obj = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "chart"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-chart-tools.sh"
ALERT_TOOLS_SCRIPT = REPO_ROOT / "hack" / "build-promtool.sh"
VENV_BIN = Path(sys.executable).parent
CONTAINER = "backup-sync"

# The API server the tests run: helm renders for it (.Capabilities.KubeVersion).
KUBE_VERSION = read_versions()["KUBERNETES_VERSION"]

# The Role's rules that every release has: the calls the worker makes in the Velero namespace.
ROLE_RULES: list[Obj] = [
    {
        "apiGroups": ["velero.io"],
        "resources": ["backupstoragelocations"],
        "verbs": ["list", "get", "patch"],
    },
    {
        "apiGroups": ["velero.io"],
        "resources": ["backupstoragelocations/status"],
        "verbs": ["patch"],
    },
    {
        "apiGroups": ["velero.io"],
        "resources": ["backups"],
        "verbs": ["list", "create", "patch", "delete"],
    },
    {"apiGroups": ["velero.io"], "resources": ["podvolumebackups"], "verbs": ["create"]},
    {"apiGroups": ["velero.io"], "resources": ["schedules"], "verbs": ["get"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
]
# With EnableCSI only, in the Role: an orphan's VolumeSnapshots, in the Velero namespace.
CSI_ROLE_RULES: list[Obj] = [
    {
        "apiGroups": ["snapshot.storage.k8s.io"],
        "resources": ["volumesnapshots"],
        "verbs": ["list", "delete"],
    },
]
# With EnableCSI only, cluster-wide (the ClusterRole).
CSI_RULES: list[Obj] = [
    {
        "apiGroups": ["snapshot.storage.k8s.io"],
        "resources": ["volumesnapshotclasses"],
        "verbs": ["create"],
    },
    {
        "apiGroups": ["snapshot.storage.k8s.io"],
        "resources": ["volumesnapshotcontents"],
        "verbs": ["create", "list", "delete"],
    },
    {
        "apiGroups": ["snapshot.storage.k8s.io"],
        "resources": ["volumesnapshots"],
        "verbs": ["get"],
    },
]


def deployment_rule(name: str = "velero") -> Obj:
    """With veleroVersion auto only: read the one Velero server Deployment."""
    return {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": [name],
        "verbs": ["get"],
    }


def secrets_rule(names: Sequence[str]) -> Obj:
    return {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": list(names),
        "verbs": ["get"],
    }


def role_rules(
    *, auto: bool = True, deployment: str = "velero", csi: bool = False, secrets: Sequence[str] = ()
) -> list[Obj]:
    """The Role's rules, exactly, in the order the chart renders them."""
    return [
        *ROLE_RULES,
        *([deployment_rule(deployment)] if auto else []),
        *(CSI_ROLE_RULES if csi else []),
        *([secrets_rule(secrets)] if secrets else []),
    ]


# Non-default values sets every render/lint/server-side test runs with (besides defaults).
VALUE_SETS: dict[str, Obj] = {
    "defaults": {},
    "csi": {"features": ["EnableCSI"]},
    "credentials-secret": {
        "credentials": {
            "existingSecret": "cloud-credentials",
            "key": "cloud",
            "locationSecrets": ["default-credentials", "secondary-credentials"],
        }
    },
    "workload-identity-aws": {
        "serviceAccount": {
            "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/bs"}
        }
    },
    "workload-identity-gke": {
        "serviceAccount": {
            "annotations": {
                "iam.gke.io/gcp-service-account": "bs@my-project.iam.gserviceaccount.com"
            }
        }
    },
    "workload-identity-azure": {
        "serviceAccount": {
            "annotations": {
                "azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000000"
            }
        },
        "podLabels": {"azure.workload.identity/use": "true"},
    },
    "locations": {"locations": ["default", "secondary"], "defaultBackupSyncPeriod": "30s"},
    # An explicit Velero version: no Deployment is read, and the Role has no rule for it.
    "velero-version": {"veleroVersion": "1.18.3"},
    "velero-deployment": {"veleroDeployment": "velero-server"},
    "shards": {"shards": 4},
    "everything": {
        "image": {
            "repository": "registry.example.com/platform/backup-sync",
            "digest": "sha256:" + "ab" * 32,
            "pullPolicy": "Always",
        },
        "imagePullSecrets": [{"name": "registry"}],
        "fullnameOverride": "sync",
        "schedule": "@hourly",
        "timeZone": "Europe/Berlin",
        "suspend": True,
        "startingDeadlineSeconds": 600,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 5,
        "activeDeadlineSeconds": 7200,
        "backoffLimit": 4,
        "ttlSecondsAfterFinished": None,
        "terminationGracePeriodSeconds": 90,
        "shutdownGrace": 60.5,
        "features": ["EnableCSI"],
        "locations": ["default"],
        "defaultBackupSyncPeriod": "1h30m",
        "concurrency": 4,
        "kubeQps": 7.5,
        "kubeBurst": 15,
        "requestTimeout": 12.5,
        "retryAttempts": 3,
        "retryMaxSeconds": 20,
        "massOrphanShare": 0.25,
        "massOrphanFloor": 3,
        "pushgatewayUrl": "http://pushgateway.monitoring.svc:9091",
        "logFormat": "json",
        "logLevel": "debug",
        "veleroVersion": "v1.17",
        "veleroDeployment": "velero-server",
        "extraArgs": ["--force"],
        "extraEnv": [
            {"name": "AWS_REGION", "value": "eu-central-1"},
            {
                "name": "AZURE_STORAGE_ACCOUNT_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": "azure-key", "key": "key"}},
            },
        ],
        "credentials": {
            "existingSecret": "cloud-credentials",
            "key": "aws",
            "locationSecrets": ["default-credentials"],
        },
        "serviceAccount": {"name": "velero-sync", "labels": {"team": "platform"}},
        "podLabels": {"team": "platform"},
        "podAnnotations": {"prometheus.io/scrape": "false"},
        "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "tmpDir": {"sizeLimit": "16Mi"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                            ]
                        }
                    ]
                }
            }
        },
        "priorityClassName": "system-cluster-critical",
    },
}


class HelmUnavailable(RuntimeError):
    """A pinned tool (helm, promtool) is not built and could not be built."""


def _cache() -> Path:
    return Path(os.environ.get("BACKUP_SYNC_CACHE") or Path.home() / ".cache" / "backup-sync")


def cached_helm() -> Path:
    """Where ``hack/build-chart-tools.sh`` puts the pinned helm."""
    return _cache() / "bin" / f"helm-{read_versions()['HELM_VERSION']}" / "helm"


def cached_promtool() -> Path:
    """Where ``hack/build-alert-tools.sh`` puts the pinned promtool."""
    return _cache() / "bin" / f"prometheus-{read_versions()['PROMETHEUS_VERSION']}" / "promtool"


def cached_prometheusrule_crd() -> Path:
    """Where ``hack/build-alert-tools.sh`` puts the Prometheus Operator's PrometheusRule CRD."""
    version = read_versions()["PROMETHEUS_OPERATOR_VERSION"]
    folder = _cache() / "crds" / f"prometheus-operator-{version}"
    return folder / "monitoring.coreos.com_prometheusrules.yaml"


def _resolve(env_var: str, cached: Path, script: Path, *, build: bool) -> Path:
    """``env_var``, else the versioned cache; with ``build``, run ``script`` when missing."""
    explicit = os.environ.get(env_var)
    if explicit:
        if os.access(explicit, os.X_OK):
            return Path(explicit)
        raise HelmUnavailable(f"{env_var}={explicit} is not an executable")
    if os.access(cached, os.X_OK):
        return cached
    if not build:
        raise HelmUnavailable(f"{cached} not found; run `make tools` ({script.name})")
    if shutil.which("go") is None:
        raise HelmUnavailable(f"{cached} not found and `go` is not on PATH")
    proc = subprocess.run(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise HelmUnavailable(f"{script} failed with exit code {proc.returncode}")
    return Path(lines[-1])


def resolve_helm(*, build: bool) -> Path:
    """``HELM_BIN``, else the versioned cache; with ``build``, build it when missing."""
    return _resolve("HELM_BIN", cached_helm(), BUILD_SCRIPT, build=build)


def resolve_promtool(*, build: bool) -> Path:
    """``PROMTOOL_BIN``, else the versioned cache; with ``build``, build it when missing (a
    cold build takes minutes)."""
    return _resolve("PROMTOOL_BIN", cached_promtool(), ALERT_TOOLS_SCRIPT, build=build)


@dataclass(frozen=True)
class Helm:
    """The helm binary, with private config/cache/data dirs."""

    binary: Path
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        proc = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=env, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def values_file(self, values: Mapping[str, Any]) -> Path:
        path = self.home / f"values-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(values))
        return path

    def template(
        self,
        values: Mapping[str, Any],
        *,
        release: str = "bs",
        namespace: str = "velero",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template",
            release,
            str(CHART_DIR),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--values",
            str(self.values_file(values)),
            check=check,
        )

    def render(
        self, values: Mapping[str, Any], *, release: str = "bs", namespace: str = "velero"
    ) -> Manifests:
        out = self.template(values, release=release, namespace=namespace).stdout
        return Manifests([d for d in yaml.safe_load_all(out) if d])

    def install(
        self,
        cp: ControlPlane,
        values: Mapping[str, Any],
        *,
        release: str,
        namespace: str,
    ) -> str:
        """``helm install`` on the test control plane (admin); returns the printed NOTES."""
        proc = self.run(
            "install",
            release,
            str(CHART_DIR),
            "--kubeconfig",
            str(cp.kubeconfig),
            "--namespace",
            namespace,
            "--values",
            str(self.values_file(values)),
        )
        return proc.stdout

    def uninstall(
        self, cp: ControlPlane, *, release: str, namespace: str, check: bool = True
    ) -> None:
        kubeconfig = str(cp.kubeconfig)
        self.run("uninstall", release, "--kubeconfig", kubeconfig, "-n", namespace, check=check)


@dataclass
class Manifests:
    """Rendered objects, looked up by kind."""

    docs: list[Obj]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[Obj]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str) -> Obj:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, got {len(found)}: {self.kinds()}"
        return found[0]

    @property
    def cronjob(self) -> Obj:
        return self.one("CronJob")

    @property
    def job_spec(self) -> Obj:
        spec: Obj = self.cronjob["spec"]["jobTemplate"]["spec"]
        return spec

    @property
    def pod_spec(self) -> Obj:
        spec: Obj = self.job_spec["template"]["spec"]
        return spec

    @property
    def container(self) -> Obj:
        (container,) = [c for c in self.pod_spec["containers"] if c["name"] == CONTAINER]
        return dict(container)

    @property
    def args(self) -> list[str]:
        return list(self.container.get("args") or [])

    def env(self) -> dict[str, Obj]:
        return {e["name"]: e for e in self.container.get("env") or []}


# --- REST paths of the kinds the chart renders -----------------------------------------------

# kind -> (API prefix, plural, namespaced). A template rendering another kind fails the
# server-side tests until it is added here.
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "Pod": ("/api/v1", "pods", True),
}


def collection_path(obj: Obj) -> str:
    prefix, plural, namespaced = RESOURCES[obj["kind"]]
    if namespaced:
        return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}"
    return f"{prefix}/{plural}"


# --- authorization ---------------------------------------------------------------------------


def service_account_user(namespace: str, name: str) -> tuple[str, list[str]]:
    """The user and groups the API server gives a ServiceAccount's token."""
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
    )


def can(cp: ControlPlane, user: tuple[str, list[str]], attributes: Mapping[str, str]) -> bool:
    """A SubjectAccessReview, asked as admin: may ``user`` do this?"""
    status, review = cp.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user[0], "groups": user[1], "resourceAttributes": dict(attributes)},
        },
    )
    assert status == 201, review
    return bool(review["status"].get("allowed"))


# --- the worker, run as the CronJob's pod runs it --------------------------------------------


@dataclass
class WorkerRun:
    code: int
    stdout: str
    stderr: str

    def summary(self) -> Obj:
        try:
            decoded: Obj = json.loads(self.stdout)
        except ValueError:
            raise AssertionError(
                f"summary is not one JSON document (exit {self.code}):\n"
                f"stdout:\n{self.stdout}\nstderr:\n{self.stderr[-4000:]}"
            ) from None
        return decoded

    def location(self, name: str) -> Obj:
        for loc in self.summary()["locations"]:
            if loc["location"] == name:
                return dict(loc)
        raise KeyError(name)


def container_argv(container: Obj, kubeconfig: Path, *, bin_dir: Path = VENV_BIN) -> list[str]:
    """The container's command and args, as the kubelet would run them, pointed at a
    kubeconfig (the pod would use its in-cluster token) and at the venv's console script."""
    command = list(container.get("command") or [])
    assert command, "the chart sets the command explicitly (it does not rely on ENTRYPOINT)"
    if "/" not in command[0]:
        command[0] = str(bin_dir / command[0])
    return [*command, *(container.get("args") or []), "--kubeconfig", str(kubeconfig)]


def container_env(container: Obj) -> dict[str, str]:
    """The container's literal env values (valueFrom entries need a kubelet)."""
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def run_worker(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, timeout: float = 180
) -> WorkerRun:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return WorkerRun(proc.returncode, proc.stdout, proc.stderr)
