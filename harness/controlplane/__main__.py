"""``python -m harness.controlplane --check|--bin-dir``: start one control plane, apply the
CRDs and stop (timings printed), or print the binaries' dir (building them if missing)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import harness.controlplane
from harness.controlplane import ControlPlane, resolve_bin_dir


def _check() -> int:
    started = time.monotonic()
    with ControlPlane() as cp:
        up = time.monotonic()
        names = cp.apply_crds()
        print(f"kube-apiserver {cp.server} ready in {up - started:.1f}s")
        print(f"{len(names)} CRDs established in {time.monotonic() - up:.1f}s: {', '.join(names)}")
        print(f"admin kubeconfig: {cp.kubeconfig}")
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.controlplane --check|--bin-dir``."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.controlplane", description=harness.controlplane.__doc__
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true", help="start, apply the CRDs, stop")
    group.add_argument("--bin-dir", action="store_true", help="print the binaries' dir (builds)")
    args = parser.parse_args(argv)
    if args.bin_dir:
        print(resolve_bin_dir())
        return 0
    return _check()


if __name__ == "__main__":
    sys.exit(main())
