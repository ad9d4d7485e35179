"""``python -m bench``: run the benchmark and write docs/benchmark.{md,json,png}.

make bench                                   # the documented run (N=1,000 and 5,000,
                                             # Velero's own sync beside the worker;
                                             # steady state also at 50,000)
python -m bench --sizes 20 --steady-sizes 40 --out /tmp/b   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.report import markdown, plot, readme_section, update_readme
from bench.run import DEFAULTS, BenchFailure, Plan, log, run_plan

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"


def _sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--sizes",
        type=_sizes,
        default=[1000, 5000],
        help="N for the full-sync cases (Velero, ceilings, worker, steady, references); "
        "default 1000,5000",
    )
    add(
        "--steady-sizes",
        type=_sizes,
        default=[50000],
        help="N for listing-only steady-state runs; default 50000",
    )
    add("--latency-ms", type=int, default=10, help="added to every store response (default 10)")
    add("--store", choices=["minio", "moto"], default="minio", help="S3 server (default minio)")
    add(
        "--concurrency",
        type=int,
        default=DEFAULTS.concurrency,
        help=f"worker and ceiling concurrency (default {DEFAULTS.concurrency})",
    )
    add(
        "--kube-qps",
        type=float,
        help="worker and ceiling --kube-qps (default: left out, the worker's own choice)",
    )
    add(
        "--kube-burst",
        type=int,
        help="worker and ceiling --kube-burst (default: left out, the worker's own choice)",
    )
    add("--no-velero", action="store_true", help="skip Velero's own sync (the real server)")
    add(
        "--velero-timeout",
        type=float,
        help="seconds Velero's first pass may take (default: 90 + ~0.24 s per backup)",
    )
    add(
        "--no-velero-limits",
        action="store_true",
        help="skip the worker at Velero's client limits (--kube-qps 100 --kube-burst 100)",
    )
    add(
        "--sequential-sizes",
        type=_sizes,
        default=[1000],
        help="N at which the --concurrency 1 reference runs (default 1000; it is "
        "latency-bound, ~45 ms a backup, and would add ~4 min at 5,000)",
    )
    add("--no-sequential", action="store_true", help="skip the --concurrency 1 reference")
    add("--no-write-ceiling", action="store_true", help="skip the API-write ceiling")
    add(
        "--no-large-files",
        action="store_true",
        help="skip the peak-RSS runs over backups with one large metadata file each",
    )
    add(
        "--repeat",
        type=int,
        default=2,
        help="runs of the ceilings, full sync and steady state per N; the best counts "
        "(default 2; Velero's own sync and the other references run once)",
    )
    add(
        "--out",
        type=Path,
        default=DOCS,
        help="where benchmark.md, .json and .png go (default docs/)",
    )
    add("--name", default="benchmark", help="file name stem (default benchmark)")
    add("--no-plot", action="store_true")
    add(
        "--report-only",
        type=Path,
        metavar="JSON",
        help="run nothing: rewrite the report (and README section) from a results file",
    )
    args = parser.parse_args(argv)

    plan = Plan(
        sizes=args.sizes,
        steady_sizes=args.steady_sizes,
        velero=not args.no_velero,
        velero_limits=not args.no_velero_limits,
        sequential_sizes=[] if args.no_sequential else args.sequential_sizes,
        write_ceiling=not args.no_write_ceiling,
        velero_timeout=args.velero_timeout,
        latency_ms=args.latency_ms,
        store=args.store,
        concurrency=args.concurrency,
        kube_qps=args.kube_qps,
        kube_burst=args.kube_burst,
        repeat=args.repeat,
        large_files=not args.no_large_files,
    )
    if args.report_only:
        results = json.loads(args.report_only.read_text())
    else:
        try:
            results = run_plan(plan)
        except BenchFailure as exc:
            log(f"FAILED: {exc}")
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot_name = None
    if not args.no_plot:
        plot_name = f"{args.name}.png"
        plot(results, args.out / plot_name)
    (args.out / f"{args.name}.md").write_text(markdown(results, plot_name))
    log(f"wrote {args.out / args.name}.md, .json{', .png' if plot_name else ''}")
    in_docs = args.out.resolve() == DOCS.resolve() and args.name == "benchmark"
    if in_docs and update_readme(README, readme_section(results)):
        log(f"updated the benchmark section of {README}")
    print(markdown(results, plot_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
