"""The benchmark's Go tools (toxiproxy, MinIO): found in the versioned cache that
``hack/build-bench-tools.sh`` fills, built by it when missing.

``BACKUP_SYNC_TOXIPROXY`` / ``BACKUP_SYNC_MINIO`` point at binaries a user already has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-bench-tools.sh"
ENV_OVERRIDES = {"toxiproxy": "BACKUP_SYNC_TOXIPROXY", "minio": "BACKUP_SYNC_MINIO"}


class ToolUnavailable(RuntimeError):
    """The tool is not built and cannot be built here (no ``go``, or the build failed)."""


def tool_path(name: str, *, build: bool = True) -> Path:
    """The binary of ``name`` (``toxiproxy`` or ``minio``); with ``build``, build it if it is
    not in the cache yet (the script returns at once when it is)."""
    override = os.environ.get(ENV_OVERRIDES[name])
    if override:
        if os.access(override, os.X_OK):
            return Path(override)
        raise ToolUnavailable(f"{ENV_OVERRIDES[name]}={override} is not an executable")
    if not build and shutil.which("go") is None:
        raise ToolUnavailable(f"{name} is not built and `go` is not on PATH")
    return run_build_script(BUILD_SCRIPT, name, name, build=build)


def run_build_script(script: Path, tool: str, key: str, *, build: bool) -> Path:
    """Run one of the hack/build-*.sh scripts for ``tool`` and return the binary it prints
    as ``key=path`` on its last line; without ``build`` (or without ``go``), only the cache
    may answer. Raises ToolUnavailable."""
    env = dict(os.environ)
    if not build or shutil.which("go") is None:
        env["BACKUP_SYNC_NO_BUILD"] = "1"
    proc = subprocess.run(
        ["bash", str(script), tool],
        stdout=subprocess.PIPE,
        stderr=None,  # the build log goes to our stderr
        text=True,
        env=env,
        check=False,
    )
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if proc.returncode != 0 or not last:
        raise ToolUnavailable(f"{script} {tool} failed with exit code {proc.returncode}")
    paths = dict(pair.split("=", 1) for pair in last[0].split())
    path = Path(paths[key])
    if not os.access(path, os.X_OK):
        raise ToolUnavailable(f"{script} printed {path}, which is not executable")
    return path
