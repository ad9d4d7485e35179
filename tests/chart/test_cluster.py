"""The chart on the real kube-apiserver: every rendered manifest passes server-side validation,
the pod passes the restricted Pod Security Standard, and a real ``helm install`` gives a
CronJob whose container command and args, run as its ServiceAccount (not admin), sync."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from harness.controlplane import ControlPlane
from harness.objectstores import MotoS3
from harness.seed import SeedBackup
from tests.chart.chart import (
    VALUE_SETS,
    Helm,
    Manifests,
    Obj,
    collection_path,
    container_argv,
    container_env,
    run_worker,
)
from tests.integration.env import SyncEnv

pytestmark = pytest.mark.integration

SNAPSHOTS = "/apis/snapshot.storage.k8s.io/v1"
MANUAL_RUN = re.compile(
    r"kubectl create job --namespace (?P<ns>\S+) --from=cronjob/(?P<cronjob>\S+) "
    r"(?P<job>\S+)-manual-\$\(date \+%s\)"
)


def _ok(cp: ControlPlane, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
    status, obj = cp.request(method, path, body, **kw)
    assert status < 300, f"{method} {path} -> {status}: {obj.get('message', obj)}"
    return obj


@pytest.fixture
def other_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"ops-{uuid.uuid4().hex[:10]}"
    control_plane.create_namespace(name)
    yield name
    control_plane.delete_namespace(name)


# --- server-side validation ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_manifest_passes_server_side_validation(
    control_plane: ControlPlane,
    helm: Helm,
    velero_namespace: str,
    other_namespace: str,
    name: str,
) -> None:
    """Each object is created with dryRun=All and fieldValidation=Strict: the real schemas,
    defaulting and admission, and an unknown or misplaced field is an error. With
    "everything", the Velero namespace is apart from the release namespace."""
    values = dict(VALUE_SETS[name])
    if name == "everything":
        values["namespace"] = other_namespace
    rendered = helm.render(values, namespace=velero_namespace)
    for doc in rendered.docs:
        status, obj = control_plane.request(
            "POST", f"{collection_path(doc)}?dryRun=All&fieldValidation=Strict", doc
        )
        assert status == 201, f"{doc['kind']} {doc['metadata']['name']}: {status} {obj}"
    # The Job `kubectl create job --from=cronjob/...` makes: the Job-level rules
    # (podFailurePolicy needs restartPolicy Never, exit codes, ...) apply to it.
    job = _job_from_cronjob(rendered.cronjob, "dry-run")
    status, obj = control_plane.request(
        "POST", f"{collection_path(job)}?dryRun=All&fieldValidation=Strict", job
    )
    assert status == 201, obj


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pod_meets_the_restricted_pod_security_standard(
    control_plane: ControlPlane, helm: Helm, velero_namespace: str, name: str
) -> None:
    """The pod the Job would create, admitted in a namespace enforcing `restricted`."""
    _ok(
        control_plane,
        "PATCH",
        f"/api/v1/namespaces/{velero_namespace}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        content_type="application/merge-patch+json",
    )
    rendered = helm.render(VALUE_SETS[name], namespace=velero_namespace)
    for sa in rendered.all("ServiceAccount"):  # the pod's account must exist for admission
        _ok(control_plane, "POST", collection_path(sa), sa)
    template = rendered.job_spec["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "probe", "namespace": velero_namespace},
        "spec": template["spec"],
    }
    status, obj = control_plane.request(
        "POST", f"{collection_path(pod)}?dryRun=All&fieldValidation=Strict", pod
    )
    assert status == 201, obj.get("message", obj)


# --- helm install, the manual run, and the worker as the chart's ServiceAccount --------------


def _job_from_cronjob(cronjob: Obj, name: str) -> Obj:
    """What `kubectl create job --from=cronjob/<cronjob> <name>` creates."""
    template = cronjob["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"]["namespace"],
            "labels": dict(template["metadata"].get("labels") or {}),
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"},
            **(
                {
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "CronJob",
                            "name": cronjob["metadata"]["name"],
                            "uid": cronjob["metadata"]["uid"],
                            "controller": True,
                        }
                    ]
                }
                if cronjob["metadata"].get("uid")
                else {}
            ),
        },
        "spec": template["spec"],
    }


@dataclass
class Installed:
    """A chart release on the test control plane."""

    cp: ControlPlane
    helm: Helm
    release: str
    namespace: str
    notes: str

    def manual_job(self) -> Obj:
        """Follow NOTES.txt: create the manual run's Job (as kubectl would); return it."""
        match = MANUAL_RUN.search(self.notes)
        assert match, f"no manual-run command in NOTES:\n{self.notes}"
        assert match["ns"] == self.namespace
        cronjob = _ok(
            self.cp,
            "GET",
            f"/apis/batch/v1/namespaces/{self.namespace}/cronjobs/{match['cronjob']}",
        )
        name = f"{match['job']}-manual-{int(time.time())}"
        assert len(name) <= 63
        job = _ok(
            self.cp,
            "POST",
            f"/apis/batch/v1/namespaces/{self.namespace}/jobs",
            _job_from_cronjob(cronjob, name),
        )
        return job

    def run_pod(self, job: Obj, extra_env: dict[str, str] | None = None) -> Any:
        """Run the Job's container as its pod would: its command and args, its literal env,
        with the token of its ServiceAccount (the pod's in-cluster credentials)."""
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        kubeconfig = self.cp.service_account_kubeconfig(self.namespace, pod["serviceAccountName"])
        argv = container_argv(container, kubeconfig)
        return run_worker(argv, {**container_env(container), **(extra_env or {})})


@pytest.fixture
def install(control_plane: ControlPlane, helm: Helm) -> Iterator[Any]:
    releases: list[tuple[str, str]] = []

    def _install(values: Obj, namespace: str, release: str = "bs") -> Installed:
        notes = helm.install(control_plane, values, release=release, namespace=namespace)
        releases.append((release, namespace))
        return Installed(control_plane, helm, release, namespace, notes)

    yield _install
    for release, namespace in releases:
        # The namespace (and the release record in it) may be gone already; the
        # cluster-scoped objects are not.
        helm.uninstall(control_plane, release=release, namespace=namespace, check=False)
        for plural in ("clusterrolebindings", "clusterroles"):
            control_plane.request(
                "DELETE",
                f"/apis/rbac.authorization.k8s.io/v1/{plural}"
                f"?labelSelector=app.kubernetes.io/instance%3D{release}",
            )


def _add_schedule(env: SyncEnv, name: str) -> str:
    body = {
        "apiVersion": "velero.io/v1",
        "kind": "Schedule",
        "metadata": {"name": name},
        "spec": {"schedule": "@daily", "template": {}},
    }
    return str(env.ok("POST", env.path("schedules"), body)["metadata"]["uid"])


def _delete_cluster_objects(cp: ControlPlane, backups: list[str]) -> None:
    for backup in backups:
        cp.request(
            "DELETE",
            f"{SNAPSHOTS}/volumesnapshotcontents?labelSelector=velero.io/backup-name%3D{backup}",
        )


def _add_bound_snapshot(
    env: SyncEnv, backup: str, namespace: str, snapshot: str, content: str
) -> None:
    """A VolumeSnapshot and the VolumeSnapshotContent bound to it, both labelled with
    ``backup``."""
    labels = {"velero.io/backup-name": backup}
    env.ok(
        "POST",
        f"{SNAPSHOTS}/namespaces/{namespace}/volumesnapshots",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": {"name": snapshot, "labels": labels},
            "spec": {"source": {"volumeSnapshotContentName": content}},
        },
    )
    env.ok(
        "POST",
        f"{SNAPSHOTS}/volumesnapshotcontents",
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content, "labels": labels},
            "spec": {
                "deletionPolicy": "Retain",
                "driver": "ebs.csi.aws.com",
                "source": {"snapshotHandle": f"snap-{snapshot}"},
                "volumeSnapshotRef": {"name": snapshot, "namespace": namespace},
            },
        },
    )


def test_helm_install_then_the_manual_run_syncs_as_the_service_account(
    control_plane: ControlPlane,
    install: Any,
    velero_namespace: str,
    other_namespace: str,
    moto: MotoS3,
) -> None:
    """The full sync with CSI, run from the chart's own command line and RBAC: backups, pod
    volume backups, CSI objects, a Schedule owner reference, orphans with their snapshots,
    two locations with their credential Secrets, Events, the status stamp."""
    suffix = uuid.uuid4().hex[:6]
    daily, manual, second, gone = (f"{n}-{suffix}" for n in ("daily", "manual", "second", "gone"))
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.add_location("secondary", prefix="second")
    schedule_uid = _add_schedule(env, "nightly")
    env.seed(
        SeedBackup(
            daily, pod_volume_backups=2, csi_snapshots=2, schedule=("nightly", schedule_uid)
        ),
        SeedBackup(manual),
    )
    env.seed(SeedBackup(second, pod_volume_backups=1), prefix="second")
    # An orphan: in the cluster, labelled for "default", gone from the bucket. Its
    # VolumeSnapshot in the Velero namespace and the content bound to it go with it; one a
    # restore put into another namespace (same label) and its content are the application's
    # data, and stay.
    env.add_backup(gone, "default", "Completed")
    for namespace, snapshot, content in (
        (velero_namespace, "vs-gone", f"snapcontent-{gone}"),
        (other_namespace, "vs-restored", f"snapcontent-{gone}-restored"),
    ):
        _add_bound_snapshot(env, gone, namespace, snapshot, content)
    # A Secret the worker must not need (and cannot read: see test_rbac.py).
    env.ok(
        "POST",
        f"/api/v1/namespaces/{velero_namespace}/secrets",
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}},
    )

    try:
        release = install(
            {
                "features": ["EnableCSI"],
                "credentials": {
                    "locationSecrets": ["default-credentials", "secondary-credentials"]
                },
                "logFormat": "json",
            },
            velero_namespace,
        )
        assert "Run it now, once:" in release.notes
        job = release.manual_job()
        assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
        result = release.run_pod(job, moto.env())

        assert result.code == 0, result.stderr[-4000:]
        # veleroVersion auto: the Role let it look (no such Deployment here, so 1.15).
        assert result.summary()["veleroProfile"]["source"].startswith(
            f"auto: no Deployment {velero_namespace}/velero;"
        ), result.summary()["veleroProfile"]
        default = result.location("default")
        assert (default["outcome"], default["created"], default["podVolumeBackupsCreated"]) == (
            "synced",
            2,
            2,
        )
        assert default["csiVolumeSnapshotContentsCreated"] == 2
        assert default["orphansDeleted"] == 1
        secondary = result.location("secondary")
        assert (secondary["outcome"], secondary["created"]) == ("synced", 1)

        backups = env.list("backups")
        assert sorted(backups) == sorted([daily, manual, second])
        (owner,) = backups[daily]["metadata"]["ownerReferences"]  # kept: `get schedules` works
        assert (owner["kind"], owner["uid"]) == ("Schedule", schedule_uid)
        assert len(env.list("podvolumebackups")) == 3
        contents = env.list_cluster("volumesnapshotcontents")
        assert {f"snapcontent-{daily}-0", f"snapcontent-{daily}-1"} <= set(contents)
        assert f"snapcontent-{gone}" not in contents
        assert f"snapcontent-{gone}-restored" in contents
        assert "csi-snapclass" in env.list_cluster("volumesnapshotclasses")
        for namespace, snapshot, kept in (
            (velero_namespace, "vs-gone", False),
            (other_namespace, "vs-restored", True),
        ):
            status, _ = control_plane.request(
                "GET", f"{SNAPSHOTS}/namespaces/{namespace}/volumesnapshots/{snapshot}"
            )
            assert status == (200 if kept else 404), (namespace, snapshot)
        for location in ("default", "secondary"):
            assert env.location(location)["status"]["lastSyncedTime"]
        events = env.ok("GET", f"/apis/events.k8s.io/v1/namespaces/{velero_namespace}/events")
        reasons = {
            (e["regarding"]["name"], e["reason"])
            for e in events["items"]
            if e["regarding"]["kind"] == "BackupStorageLocation"
        }
        assert {("default", "BackupsSynced"), ("default", "OrphansDeleted")} <= reasons
    finally:
        _delete_cluster_objects(control_plane, [daily, gone])


def test_default_values_with_the_velero_namespace_apart(
    control_plane: ControlPlane,
    install: Any,
    velero_namespace: str,
    other_namespace: str,
    moto: MotoS3,
) -> None:
    """The default values (text output), installed in another namespace than Velero's: the
    Role and RoleBinding land in the Velero namespace and the run syncs."""
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.seed(SeedBackup(f"b-{uuid.uuid4().hex[:6]}", pod_volume_backups=1))
    release = install(
        {
            "namespace": velero_namespace,
            "credentials": {"locationSecrets": ["default-credentials"]},
        },
        other_namespace,
    )
    assert f"in namespace {velero_namespace}" in release.notes
    result = release.run_pod(release.manual_job(), moto.env())
    assert result.code == 0, result.stderr[-4000:]
    assert "default" in result.stdout
    assert len(env.list("backups")) == 1
    assert env.location("default")["status"]["lastSyncedTime"]


def _add_velero_deployment(env: SyncEnv, name: str, image: str) -> None:
    """The Velero server Deployment (no controller runs it here: only its spec is read)."""
    labels = {"component": "velero"}
    env.ok(
        "POST",
        f"/apis/apps/v1/namespaces/{env.namespace}/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "velero", "image": image}]},
                },
            },
        },
    )


@pytest.mark.parametrize(
    ("values", "deployment", "image", "profile"),
    [
        ({}, "velero", "velero/velero:v1.17.2", ("1.17.2", "auto: image velero/velero:v1.17.2")),
        (
            {"veleroDeployment": "velero-server"},
            "velero-server",
            "registry.example.com/velero/velero:v1.16.2",
            ("1.16.2", "auto: image registry.example.com/velero/velero:v1.16.2"),
        ),
        (
            {"veleroVersion": "1.18.3"},
            "velero",
            "velero/velero:v1.17.2",
            ("1.18.3", "--velero-version"),
        ),
    ],
    ids=["auto", "auto-renamed", "explicit"],
)
def test_the_velero_profile_as_the_service_account(
    control_plane: ControlPlane,
    install: Any,
    velero_namespace: str,
    moto: MotoS3,
    values: Obj,
    deployment: str,
    image: str,
    profile: tuple[str, str],
) -> None:
    """veleroVersion auto reads the named Deployment's image tag with the Role's one `get`;
    an explicit version reads nothing. From 1.16.2 a location that is not Available is left
    alone (outcome unavailable, exit 0) and an Available one syncs."""
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.add_location("offline", prefix="offline")
    env.ok(
        "PATCH",
        env.path("backupstoragelocations", "default"),
        {"status": {"phase": "Available"}},
        content_type="application/merge-patch+json",
    )
    env.seed(SeedBackup(f"b-{uuid.uuid4().hex[:6]}"))
    _add_velero_deployment(env, deployment, image)
    release = install(
        {
            **values,
            "credentials": {"locationSecrets": ["default-credentials", "offline-credentials"]},
            "logFormat": "json",
        },
        velero_namespace,
    )
    result = release.run_pod(release.manual_job(), moto.env())
    assert result.code == 0, result.stderr[-4000:]
    found = result.summary()["veleroProfile"]
    assert found["version"] == profile[0]
    assert found["source"].startswith(profile[1]), found
    default = result.location("default")
    assert (default["outcome"], default["created"]) == ("synced", 1)
    offline = result.location("offline")
    assert offline["outcome"] == "unavailable", offline
    assert "lastSyncedTime" not in (env.location("offline").get("status") or {})


def test_status_subresource_variant_as_the_service_account(
    control_plane: ControlPlane, install: Any, velero_namespace: str, moto: MotoS3
) -> None:
    """With a BSL CRD that has a status subresource, the stamp goes through /status, which
    the Role allows too."""
    control_plane.replace_bsl_crd(status_subresource=True)
    try:
        env = SyncEnv(control_plane, velero_namespace, moto)
        env.add_location("default", default=True)
        release = install(
            {"credentials": {"locationSecrets": ["default-credentials"]}, "logFormat": "json"},
            velero_namespace,
        )
        result = release.run_pod(release.manual_job(), moto.env())
        assert result.code == 0, result.stderr[-4000:]
        assert env.location("default")["status"]["lastSyncedTime"]
    finally:
        control_plane.replace_bsl_crd(status_subresource=False)


def test_credentials_file_from_the_mounted_secret(
    control_plane: ControlPlane,
    install: Any,
    velero_namespace: str,
    moto: MotoS3,
    tmp_path: Any,
) -> None:
    """A location without spec.credential uses the file the chart mounts and names in
    AWS_SHARED_CREDENTIALS_FILE; no Secret is read through the API."""
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True, credential=False)
    env.seed(SeedBackup(f"b-{uuid.uuid4().hex[:6]}"))
    env.ok(
        "POST",
        f"/api/v1/namespaces/{velero_namespace}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cloud-credentials"},
            "data": {"cloud": base64.b64encode(moto.credentials()).decode()},
        },
    )
    release = install(
        {"credentials": {"existingSecret": "cloud-credentials"}, "logFormat": "json"},
        velero_namespace,
    )
    job = release.manual_job()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # What the kubelet would do: project the Secret's key to <mountPath>/<path>.
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "cloud-credentials"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "cloud-credentials"]
    secret = env.ok(
        "GET", f"/api/v1/namespaces/{velero_namespace}/secrets/{volume['secret']['secretName']}"
    )
    (item,) = volume["secret"]["items"]
    mounted = tmp_path / mount["mountPath"].lstrip("/")
    mounted.mkdir(parents=True)
    (mounted / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
    env_vars = {
        name: value.replace(mount["mountPath"], str(mounted))
        for name, value in container_env(container).items()
    }
    assert env_vars["AWS_SHARED_CREDENTIALS_FILE"] == str(mounted / "cloud")
    result = release.run_pod(job, {**moto.env(), **env_vars})
    assert result.code == 0, result.stderr[-4000:]
    assert result.location("default")["created"] == 1


def test_notes_name_the_release_objects(
    helm: Helm, control_plane: ControlPlane, install: Any, velero_namespace: str
) -> None:
    release = install({"suspend": True, "features": ["EnableCSI"]}, velero_namespace, "nightly")
    rendered: Manifests = helm.render(
        {"suspend": True, "features": ["EnableCSI"]}, release="nightly", namespace=velero_namespace
    )
    name = rendered.cronjob["metadata"]["name"]
    assert (
        f"kubectl create job --namespace {velero_namespace} --from=cronjob/{name} "
        f"{name}-manual-$(date +%s)"
    ) in release.notes
    assert "SUSPENDED" in release.notes
    assert "with CSI snapshot objects" in release.notes
    assert f"the way Velero of Deployment {velero_namespace}/velero does" in release.notes
    assert "credentials.locationSecrets is empty" in release.notes


def test_a_credential_secret_not_in_location_secrets_cannot_be_read(
    control_plane: ControlPlane, install: Any, velero_namespace: str, moto: MotoS3
) -> None:
    """The default values grant no Secret: a location whose spec.credential names one is a
    configuration error (exit 2, not retried by the podFailurePolicy), and the summary names
    the Secret, the refusal and the value that fixes it."""
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.seed(SeedBackup(f"b-{uuid.uuid4().hex[:6]}"))
    release = install({"logFormat": "json"}, velero_namespace)
    result = release.run_pod(release.manual_job(), moto.env())
    assert result.code == 2
    loc = result.location("default")
    assert loc["outcome"] == "config-error"
    assert "not allowed to read Secret 'default-credentials'" in loc["reason"]
    assert "credentials.locationSecrets" in loc["reason"]
    assert env.list("backups") == {}
