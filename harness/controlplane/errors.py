"""The control plane's two errors."""

from __future__ import annotations


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or did not answer as expected."""


class BinariesNotFound(ControlPlaneError):
    """etcd / kube-apiserver are not available (and were not built)."""
