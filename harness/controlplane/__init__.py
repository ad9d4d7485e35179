"""A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests and demos.

No kubelet, no controller-manager: only what the worker talks to. ``ControlPlane`` starts
etcd and kube-apiserver (RBAC on, TLS with throwaway certificates), writes an admin
kubeconfig, applies the project's own CRDs (``harness/crds``) and hands out kubeconfigs for
ServiceAccounts (tokens from the TokenRequest API)::

    with ControlPlane() as cp:
        cp.apply_crds()
        kubeconfig = cp.service_account_kubeconfig("velero", "backup-sync")

Binaries come from ``BACKUP_SYNC_BIN_DIR``, else ``KUBEBUILDER_ASSETS``, else the versioned
cache that ``hack/build-control-plane.sh`` fills (which is run if they are missing).
``python -m harness.controlplane --check`` starts one, applies the CRDs and stops.

Modules: ``binaries`` (versions, cache dir, build), ``etcd``, ``apiserver`` (certificates,
flags, start), ``api`` (requests, namespaces, ServiceAccount tokens, CRDs as the admin),
``plane`` (``ControlPlane``: lifecycle, kubeconfigs), ``launch`` (children and their logs).
"""

from __future__ import annotations

from harness.controlplane.api import BSL_CRD, BSL_CRD_NAME, BSL_CRD_STATUS_VARIANT, CRD_DIR
from harness.controlplane.binaries import (
    build_binaries,
    cached_bin_dir,
    read_versions,
    resolve_bin_dir,
)
from harness.controlplane.errors import BinariesNotFound, ControlPlaneError
from harness.controlplane.plane import ControlPlane
from harness.processes import free_port

__all__ = [
    "BSL_CRD",
    "BSL_CRD_NAME",
    "BSL_CRD_STATUS_VARIANT",
    "CRD_DIR",
    "BinariesNotFound",
    "ControlPlane",
    "ControlPlaneError",
    "build_binaries",
    "cached_bin_dir",
    "free_port",
    "read_versions",
    "resolve_bin_dir",
]
