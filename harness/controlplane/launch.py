"""Starting etcd and kube-apiserver as children with their output in a log, and the end
of that log for the error when one does not come up."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from harness.processes import die_with_parent

LOG_TAIL_LINES = 40


def launch(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own process group (so a stop kills its children too), stdout
    and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path``, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
