"""Where etcd and kube-apiserver come from: ``BACKUP_SYNC_BIN_DIR``, else
``KUBEBUILDER_ASSETS``, else the versioned cache that ``hack/build-control-plane.sh``
fills (and is run to fill when they are missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from harness.controlplane.errors import BinariesNotFound

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
BINARIES = ("etcd", "kube-apiserver")


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse ``hack/versions.env`` (plain ``KEY=value`` lines, ``#`` comments)."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip()
    return versions


def cached_bin_dir() -> Path:
    """The versioned cache dir ``hack/build-control-plane.sh`` builds into."""
    versions = read_versions()
    cache = os.environ.get("BACKUP_SYNC_CACHE") or str(Path.home() / ".cache" / "backup-sync")
    name = f"kubernetes-{versions['KUBERNETES_VERSION']}-etcd-{versions['ETCD_VERSION']}"
    return Path(cache) / "bin" / name


def _has_binaries(d: Path) -> bool:
    return all(os.access(d / b, os.X_OK) and (d / b).is_file() for b in BINARIES)


def resolve_bin_dir(*, build: bool = True) -> Path:
    """Find etcd and kube-apiserver; with ``build``, run the build script if they are missing.

    Order: ``BACKUP_SYNC_BIN_DIR`` (must hold both), ``KUBEBUILDER_ASSETS``, the versioned cache.
    """
    explicit = os.environ.get("BACKUP_SYNC_BIN_DIR")
    if explicit:
        if _has_binaries(Path(explicit)):
            return Path(explicit)
        raise BinariesNotFound(f"BACKUP_SYNC_BIN_DIR={explicit} lacks one of {BINARIES}")
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _has_binaries(Path(assets)):
        return Path(assets)
    cached = cached_bin_dir()
    if _has_binaries(cached):
        return cached
    if not build:
        raise BinariesNotFound(
            f"etcd/kube-apiserver not found in {cached}; run hack/build-control-plane.sh "
            "(or set BACKUP_SYNC_BIN_DIR / KUBEBUILDER_ASSETS)"
        )
    return build_binaries()


def build_binaries() -> Path:
    """Run ``hack/build-control-plane.sh`` (its log goes to our stderr); return its bin dir."""
    if shutil.which("go") is None and not os.environ.get("KUBEBUILDER_ASSETS"):
        raise BinariesNotFound("etcd/kube-apiserver are not built and `go` is not on PATH")
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=None, text=True, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BinariesNotFound(f"{BUILD_SCRIPT} failed with exit code {proc.returncode}")
    bin_dir = Path(lines[-1])
    if not _has_binaries(bin_dir):
        raise BinariesNotFound(f"{BUILD_SCRIPT} printed {bin_dir}, which lacks {BINARIES}")
    return bin_dir
