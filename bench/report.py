"""The benchmark's results as a markdown table (with the targets, met or not) and a PNG plot
of wall time against N."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.run import CEILING, FULL, POLITE, SEQUENTIAL, STEADY, WRITE_CEILING

Row = dict[str, Any]

TARGET_N = 5000
LISTING_TARGET_N = 50000


def best(rows: list[Row]) -> list[Row]:
    """One row per (case, N): the fastest repetition (noise on a shared machine only ever
    adds time), with every repetition's wall time in ``samples``."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["case"], row["n"]), []).append(row)
    out = []
    for group in groups.values():
        fastest = dict(min(group, key=lambda r: r["seconds"]))
        fastest["samples"] = [r["seconds"] for r in sorted(group, key=lambda r: r.get("sample", 1))]
        out.append(fastest)
    return out


def _size(row: Row) -> str:
    size = row["settings"]["fileBytes"]
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"


def is_large_file_row(row: Row) -> bool:
    return "fileBytes" in (row.get("settings") or {})


CASE_ORDER = [CEILING, WRITE_CEILING, FULL, SEQUENTIAL, POLITE, STEADY]


def _ordered(rows: list[Row]) -> list[Row]:
    """By N, then references before the worker's runs, as the tables show them."""
    rank = {case: i for i, case in enumerate(CASE_ORDER)}
    return sorted(rows, key=lambda r: (r["n"], rank.get(r["case"], len(rank))))


def _find(rows: list[Row], case: str, n: int) -> Row | None:
    return next((r for r in rows if r["case"] == case and r["n"] == n), None)


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _limits(row: Row) -> str:
    s = row.get("settings") or {}
    qps, burst = s.get("kubeQps", 0), s.get("kubeBurst")
    shown_qps = "default" if qps is None else "∞" if not qps else f"{qps:g}"
    return f"{s.get('concurrency')} / {shown_qps} / {'default' if burst is None else burst}"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's targets that these results can judge."""
    everything: list[Row] = best(results["measurements"])
    rows = [r for r in everything if not is_large_file_row(r)]
    large = [r for r in everything if is_large_file_row(r)]
    out: list[tuple[str, str, bool | None]] = []
    n = (
        TARGET_N
        if _find(rows, FULL, TARGET_N)
        else max((r["n"] for r in rows if r["case"] == FULL), default=0)
    )
    full, seq, ceiling = _find(rows, FULL, n), _find(rows, SEQUENTIAL, n), _find(rows, CEILING, n)
    steady = _find(rows, STEADY, n)
    if full and seq:
        speedup = seq["seconds"] / full["seconds"]
        out.append(
            (
                f"full sync N={n}: ≥ 8x faster than --concurrency 1",
                f"{speedup:.1f}x ({seq['seconds']:.1f} s → {full['seconds']:.1f} s)",
                speedup >= 8,
            )
        )
    if full and ceiling:
        ratio = full["seconds"] / ceiling["seconds"]
        out.append(
            (
                f"full sync N={n}: within 1.5x of the API-create ceiling",
                f"{ratio:.2f}x ({full['seconds']:.1f} s vs {ceiling['seconds']:.1f} s)",
                ratio <= 1.5,
            )
        )
    if steady:
        out.append(
            (f"steady state N={n}: < 3 s", f"{steady['seconds']:.2f} s", steady["seconds"] < 3)
        )
        budget = math.ceil(n / 1000) + 1
        out.append(
            (
                f"steady state N={n}: object-store requests ≤ ⌈N/1000⌉+1 = {budget}",
                f"{steady['storeRequests']} ({_breakdown(steady['store'])})",
                steady["storeRequests"] <= budget,
            )
        )
        lists = sum(v for k, v in steady["api"].items() if k.startswith("list "))
        patches = sum(v for k, v in steady["api"].items() if k.startswith("patch "))
        other = {k: v for k, v in steady["api"].items() if not k.startswith(("list ", "patch "))}
        text = f"{steady['apiRequests']} = {lists} list pages + {patches} patch"
        if other:
            text += f" + {sum(other.values())} other ({_breakdown(other)})"
        out.append(
            (
                "steady state: API requests <= list pages + 1 patch",
                text,
                patches <= 1 and not other,
            )
        )
    big = _find(rows, STEADY, LISTING_TARGET_N) or next(
        (r for r in sorted(rows, key=lambda r: -r["n"]) if r["case"] == STEADY), None
    )
    if big:
        out.append(
            (
                f"steady state N={big['n']}: peak RSS < 200 MB",
                f"{big['peakRssMiB'] * 1.048576:.0f} MB ({big['peakRssMiB']:.0f} MiB)",
                big["peakRssMiB"] * 1.048576 < 200,
            )
        )
    if large:
        by_case = {r["case"]: r for r in large}
        small = min(large, key=lambda r: r["settings"]["fileBytes"])
        over = next((r for k, r in by_case.items() if "over the cap" in k), None)
        lists = sorted(
            (r for k, r in by_case.items() if "pod volume" in k),
            key=lambda r: r["settings"]["fileBytes"],
        )
        if over:
            out.append(
                (
                    "velero-backup.json over its cap is refused unread",
                    f"{over['peakRssMiB']:.0f} MiB with {_size(over)} files vs "
                    f"{small['peakRssMiB']:.0f} MiB with {_size(small)} files",
                    over["peakRssMiB"] - small["peakRssMiB"] < 16,
                )
            )
        if lists:
            out.append(
                (
                    "pod volume backup lists: memory does not grow with the file",
                    ", ".join(f"{r['peakRssMiB']:.0f} MiB with {_size(r)}" for r in lists)
                    + f" ({lists[-1]['n']} in flight) vs {small['peakRssMiB']:.0f} MiB",
                    lists[-1]["peakRssMiB"] - small["peakRssMiB"] < 48,
                )
            )
    return out


def markdown(results: dict[str, Any], plot_name: str | None = "benchmark.png") -> str:
    everything: list[Row] = best(results["measurements"])
    rows = [r for r in everything if not is_large_file_row(r)]
    large = [r for r in everything if is_large_file_row(r)]
    plan, machine = results["plan"], results["machine"]
    lines = [
        "# backup-sync benchmark",
        "",
        f"Generated {results['generated']} by `make bench` "
        f"({results['totalSeconds']:.0f} s in all, seeding included).",
        "",
        f"**Machine:** {machine['cpu']}, {machine['cores']} cores, {machine['memoryGiB']} GiB, "
        f"Linux {machine['kernel']}. **Versions:** kube-apiserver {machine['kubeApiserver']}, "
        f"etcd {machine['etcd']} (`--unsafe-no-fsync`), {plan['store']} "
        f"{machine['minio'] if plan['store'] == 'minio' else ''} behind toxiproxy "
        f"{machine['toxiproxy']} adding **{plan['latencyMs']} ms** to every store response, "
        f"Python {machine['python']}, kubernetes client {machine['kubernetesClient']}, "
        f"botocore {machine['botocore']}.",
        "",
        f"Each backup: a realistic `velero-backup.json` and a pod volume backup file with "
        f"{plan['podVolumeBackupsPerBackup']} entries, so a full sync of N backups makes "
        f"{1 + plan['podVolumeBackupsPerBackup']}·N creates and N patches (removing the "
        "in-progress mark once a Backup's pod volume backups are in). Two references: the "
        "API-create ceiling makes the same creates with the worker's client, pool and limits "
        "and no object store; the API-write ceiling makes the patches too. Requests are "
        "counted by the servers "
        "(kube-apiserver audit log of the worker's ServiceAccount; the S3 server's own request "
        "counters); wall time is the process (worker, or ceiling) from spawn to exit, start-up "
        "included; peak RSS is its `VmHWM`, CPU its user+system time. Limits are "
        "`--concurrency / --kube-qps / --kube-burst` (∞ = 0, unlimited). The ceilings, the full "
        f"sync and the steady state ran {plan.get('repeat', 1)}x interleaved; the table shows "
        "the fastest run of each (all wall times in the last column).",
        "",
    ]
    if plot_name:
        lines += [f"![wall time against N]({plot_name})", ""]
    lines += [
        "| N | run | limits | wall (s) | creates | creates/s | API requests | store requests "
        "| peak RSS (MiB) | CPU (s) | all runs (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in _ordered(rows):
        lines.append(
            f"| {r['n']:,} | {r['case']} | {_limits(r)} | {r['seconds']:.2f} | {r['creates']:,} | "
            f"{r['createsPerSecond']:.0f} | {r['apiRequests']:,} | {r['storeRequests']:,} | "
            f"{r['peakRssMiB']:.0f} | {r['cpuSeconds']:.1f} | "
            + ", ".join(f"{x:.1f}" for x in r["samples"])
            + " |"
        )
    lines += ["", "Ratios per N (same run, same machine state):", ""]
    lines += [
        "| N | speed-up vs --concurrency 1 | worker ÷ create ceiling | worker ÷ write ceiling |",
        "|---:|---:|---:|---:|",
    ]
    for n in sorted({r["n"] for r in rows if r["case"] == FULL}):
        full, seq = _find(rows, FULL, n), _find(rows, SEQUENTIAL, n)
        assert full is not None
        speed = f"{seq['seconds'] / full['seconds']:.1f}x" if seq else "-"
        ratios = [
            f"{full['seconds'] / c['seconds']:.2f}x" if c else "-"
            for c in (_find(rows, CEILING, n), _find(rows, WRITE_CEILING, n))
        ]
        lines.append(f"| {n:,} | {speed} | {' | '.join(ratios)} |")
    lines += ["", "Requests by kind:", ""]
    lines += ["| N | run | API requests | store requests |", "|---:|---|---|---|"]
    for r in _ordered(rows):
        lines.append(
            f"| {r['n']:,} | {r['case']} | {_breakdown(r['api'])} "
            f"| {_breakdown(r['store']) or '-'} |"
        )
    lines += ["", "Server CPU seconds during each run:", ""]
    names = sorted({k for r in rows for k in r["serverCpuSeconds"]})
    lines += ["| N | run | " + " | ".join(names) + " |", "|---:|---|" + "---:|" * len(names)]
    for r in _ordered(rows):
        cells = " | ".join(f"{r['serverCpuSeconds'].get(k, 0):.1f}" for k in names)
        lines.append(f"| {r['n']:,} | {r['case']} | {cells} |")
    if large:
        lines += [
            "",
            "## Memory against the size of one metadata file",
            "",
            f"{large[0]['n']} backups with one large file each, all in flight at once "
            "(--concurrency 16); the files are refused once read and decoded, so this is the "
            "reading alone. `velero-backup.json` is read whole up to its cap (it becomes one "
            "object) and refused unread above it; pod volume backup and CSI lists larger than "
            "1 MiB decompressed are checked and then decoded item by item, never held whole.",
            "",
            "| file in each backup | size | peak RSS (MiB) | wall (s) |",
            "|---|---:|---:|---:|",
        ]
        for r in large:
            lines.append(
                f"| {r['case']} | {_size(r)} | {r['peakRssMiB']:.0f} | {r['seconds']:.1f} |"
            )
    judged = targets(results)
    if judged:
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
        for target, value, met in judged:
            lines.append(f"| {target} | {value} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Wall time against N: worker, sequential, ceiling (full sync) and steady state."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in best(results["measurements"]) if not is_large_file_row(r)]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    styles = {
        SEQUENTIAL: ("tab:red", "s", "worker, --concurrency 1"),
        FULL: ("tab:blue", "o", "worker (full sync)"),
        CEILING: ("tab:gray", "^", "API-create ceiling (no store)"),
        WRITE_CEILING: ("tab:olive", "^", "API-write ceiling (creates + mark patches)"),
        STEADY: ("tab:green", "D", "worker, steady state (nothing to do)"),
        POLITE: ("tab:purple", "v", "worker, default limits"),
    }
    for case, (color, marker, label) in styles.items():
        points = sorted((r["n"], r["seconds"]) for r in rows if r["case"] == case)
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(
            xs,
            ys,
            marker=marker,
            color=color,
            label=label,
            linestyle="--" if case in (CEILING, WRITE_CEILING) else "-",
        )
        for x, y in points:
            ax.annotate(f"{y:.1f}s", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("backups in the bucket (N)")
    ax.set_ylabel("wall time (s)")
    plan = results["plan"]
    ax.set_title(
        f"backup-sync: {plan['store']} + {plan['latencyMs']} ms store latency, "
        f"{results['machine']['cores']} cores"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


README_START = "<!-- benchmark:start (written by `make bench`) -->"
README_END = "<!-- benchmark:end -->"


def readme_section(results: dict[str, Any]) -> str:
    """The compact table and the targets, for the README (details in docs/benchmark.md)."""
    rows = [r for r in best(results["measurements"]) if not is_large_file_row(r)]
    machine, plan = results["machine"], results["plan"]
    lines = [
        f"Measured {results['generated']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memoryGiB']} GiB; kube-apiserver {machine['kubeApiserver']} + etcd "
        f"{machine['etcd']}, {plan['store']} behind toxiproxy {machine['toxiproxy']} "
        f"(+{plan['latencyMs']} ms per store response), all on that one machine; best of "
        f"{plan.get('repeat', 1)} runs. Details, request breakdowns and per-process CPU: "
        "[docs/benchmark.md](docs/benchmark.md).",
        "",
        "![wall time against N](docs/benchmark.png)",
        "",
        "| N | run | limits | wall (s) | creates/s | API requests | store requests "
        "| peak RSS (MiB) |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in _ordered(rows):
        lines.append(
            f"| {r['n']:,} | {r['case']} | {_limits(r)} | {r['seconds']:.1f} | "
            f"{r['createsPerSecond']:.0f} | {r['apiRequests']:,} | {r['storeRequests']:,} | "
            f"{r['peakRssMiB']:.0f} |"
        )
    judged = targets(results)
    if judged:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {'yes' if met else '**no**'} |" for t, v, met in judged]
    return "\n".join(lines)


def update_readme(path: Path, section: str) -> bool:
    """Replace the text between the benchmark markers; False when there are none."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(README_START)] + "\n" + section + "\n" + text[end:])
    return True
