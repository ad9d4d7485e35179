"""The benchmark's results as a markdown table (with the targets, met or not) and a PNG plot
of wall time against N."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.run import (
    CEILING,
    FULL,
    SEQUENTIAL,
    STEADY,
    VELERO,
    VELERO_LIMITS,
    WRITE_CEILING,
)

Row = dict[str, Any]

TARGET_N = 5000
LISTING_TARGET_N = 50000
# (case, N, at least this many times faster than Velero's own sync): the targets.
VELERO_TARGETS = [
    (FULL, 1000, 3.5),
    (FULL, 5000, 5.0),
    (VELERO_LIMITS, 1000, 2.5),
]
CEILING_TARGET = 1.5  # full sync within this factor of the API-create ceiling


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


CASE_ORDER = [VELERO, CEILING, WRITE_CEILING, FULL, VELERO_LIMITS, SEQUENTIAL, STEADY]
# What each case is, in the tables' words.
LABELS = {
    VELERO: "Velero's own sync",
    CEILING: "API-create ceiling (no store)",
    WRITE_CEILING: "API-write ceiling (+ a mark patch per backup)",
    FULL: "worker, full sync",
    VELERO_LIMITS: "worker, full sync at Velero's limits",
    SEQUENTIAL: "worker, full sync, --concurrency 1",
    STEADY: "worker, steady state (nothing to do)",
}


def _ordered(rows: list[Row]) -> list[Row]:
    """By N, then Velero and the references before the worker's runs, as the tables show."""
    rank = {case: i for i, case in enumerate(CASE_ORDER)}
    return sorted(rows, key=lambda r: (r["n"], rank.get(r["case"], len(rank))))


def _find(rows: list[Row], case: str, n: int) -> Row | None:
    return next((r for r in rows if r["case"] == case and r["n"] == n), None)


def _breakdown(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def _limits(row: Row) -> str:
    """``--concurrency / QPS / burst`` as run: the limit in force where the run reported it
    (∞: no client-side limit; "APF": chosen because the server has API Priority and
    Fairness, nothing given)."""
    s = row.get("settings") or {}
    qps, burst = s.get("kubeQps", 0), s.get("kubeBurst")
    chosen = s.get("apiRateLimit")
    if qps is None and chosen:
        if chosen["qps"] <= 0:
            return f"{s.get('concurrency')} / ∞ (APF) / -"
        return f"{s.get('concurrency')} / {chosen['qps']:g} / {chosen['burst']} (chosen)"
    shown_qps = "default" if qps is None else "∞" if not qps else f"{qps:g}"
    shown_burst = "default" if burst is None else "-" if not qps else str(burst)
    return f"{s.get('concurrency')} / {shown_qps} / {shown_burst}"


def _vs_velero(rows: list[Row], row: Row) -> str:
    """How many times faster than Velero's own sync at the same N ("-" for a steady state,
    which is not a sync of the same work)."""
    velero = _find(rows, VELERO, row["n"])
    if velero is None or row["case"] == STEADY or row["seconds"] <= 0:
        return "-"
    return f"{velero['seconds'] / row['seconds']:.2f}x"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for the issue's targets that these results can judge; a
    target whose N was not run is listed as not measured (met None)."""
    everything: list[Row] = best(results["measurements"])
    rows = [r for r in everything if not is_large_file_row(r)]
    large = [r for r in everything if is_large_file_row(r)]
    out: list[tuple[str, str, bool | None]] = []
    for case, tn, factor in VELERO_TARGETS:
        what = "shipped defaults" if case == FULL else "at Velero's limits (100/100)"
        target = f"worker {what}, N={tn:,}: ≥ {factor:g}x faster than Velero's own sync"
        row, velero = _find(rows, case, tn), _find(rows, VELERO, tn)
        if row is None or velero is None:
            out.append((target, f"not measured (N={tn:,} not in this run)", None))
            continue
        speedup = velero["seconds"] / row["seconds"]
        out.append(
            (
                target,
                f"{speedup:.2f}x ({velero['seconds']:.1f} s → {row['seconds']:.1f} s)",
                speedup >= factor,
            )
        )
    n = (
        TARGET_N
        if _find(rows, FULL, TARGET_N)
        else max((r["n"] for r in rows if r["case"] == FULL), default=0)
    )
    full, ceiling, steady = _find(rows, FULL, n), _find(rows, CEILING, n), _find(rows, STEADY, n)
    if full and ceiling:
        ratio = full["seconds"] / ceiling["seconds"]
        out.append(
            (
                f"full sync N={n:,}: within {CEILING_TARGET:g}x of the API-create ceiling",
                f"{ratio:.2f}x ({full['seconds']:.1f} s vs {ceiling['seconds']:.1f} s)",
                ratio <= CEILING_TARGET,
            )
        )
    # The sequential reference runs at fewer N: the largest where both ran.
    seq_n = max(
        (r["n"] for r in rows if r["case"] == SEQUENTIAL and _find(rows, FULL, r["n"])), default=0
    )
    seq, seq_full = _find(rows, SEQUENTIAL, seq_n), _find(rows, FULL, seq_n)
    if seq and seq_full:
        speedup = seq["seconds"] / seq_full["seconds"]
        out.append(
            (
                f"full sync N={seq_n:,}: ≥ 8x faster than --concurrency 1",
                f"{speedup:.1f}x ({seq['seconds']:.1f} s → {seq_full['seconds']:.1f} s)",
                speedup >= 8,
            )
        )
    if steady:
        out.append(
            (f"steady state N={n:,}: < 3 s", f"{steady['seconds']:.2f} s", steady["seconds"] < 3)
        )
        budget = math.ceil(n / 1000) + 1
        out.append(
            (
                f"steady state N={n:,}: object-store requests ≤ ⌈N/1000⌉+1 = {budget}",
                f"{steady['storeRequests']} ({_breakdown(steady['store'])})",
                steady["storeRequests"] <= budget,
            )
        )
        out.append(_steady_requests(steady))
    big = _find(rows, STEADY, LISTING_TARGET_N) or next(
        (r for r in sorted(rows, key=lambda r: -r["n"]) if r["case"] == STEADY), None
    )
    if big:
        out.append(
            (
                f"steady state N={big['n']:,}: peak RSS < 200 MB",
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


# Requests a run makes once whatever N is: the probe for API Priority and Fairness and the
# Velero Deployment that --velero-version auto reads.
PER_RUN_READS = ("get /version", "get deployments")


def _steady_requests(steady: Row) -> tuple[str, str, bool]:
    """Steady state makes no request per backup: list pages, the status patch and the
    per-run reads, each once."""
    api: dict[str, int] = steady["api"]
    lists = sum(v for k, v in api.items() if k.startswith("list "))
    patches = sum(v for k, v in api.items() if k.startswith("patch "))
    reads = {k: v for k, v in api.items() if k in PER_RUN_READS}
    other = {
        k: v for k, v in api.items() if not k.startswith(("list ", "patch ")) and k not in reads
    }
    text = f"{steady['apiRequests']} = {lists} list pages + {patches} patch"
    if reads:
        text += f" + {sum(reads.values())} per-run reads ({_breakdown(reads)})"
    if other:
        text += f" + {sum(other.values())} other ({_breakdown(other)})"
    return (
        f"steady state N={steady['n']:,}: no per-backup request "
        "(API: list pages + 1 patch + per-run reads)",
        text,
        patches <= 1 and not other and all(v <= 1 for v in reads.values()),
    )


def _velero_note(rows: list[Row]) -> list[str]:
    velero = [r for r in rows if r["case"] == VELERO]
    if not velero:
        return []
    start = ", ".join(
        f"{r['settings'].get('serverStartSeconds', 0):.1f} s at N={r['n']:,}" for r in velero
    )
    return [
        f"**Velero's own sync** is the real `velero server` "
        f"{velero[0]['settings'].get('velero', '')} (built from its Go module, with the AWS "
        "plugin) on the same API server, ServiceAccount and bucket, in a fresh namespace, as "
        "shipped: its client limits (100 QPS, burst 100: `--client-qps`/`--client-burst` left "
        "out), `--log-level info`, every controller but `backup-sync` disabled (the location "
        "controller cannot be). Its sync enqueues every location at controller start and once "
        "a minute after; its wall time runs from `Server starting...` in its log (the first "
        "pass begins then) until the cluster holds the N Backups and 2·N pod volume backups "
        f"(its start-up before that, not counted: {start}). Its CPU is the server's and its "
        "plugin's (one plugin process per pass), start-up included; its peak RSS the sum of "
        "both. It syncs one backup after the other: per backup a HEAD and a GET for each of "
        "`velero-backup.json` and the pod volume backup file, then the creates.",
        "",
    ]


def _against_velero(rows: list[Row]) -> list[str]:
    """The headline table: per N, each sync's wall time and how much faster than Velero's."""
    lines = [
        "| N | run | limits | wall (s) | vs Velero's own sync |",
        "|---:|---|---|---:|---:|",
    ]
    for r in _ordered(rows):
        if r["case"] == STEADY or r["case"] == WRITE_CEILING:
            continue
        lines.append(
            f"| {r['n']:,} | {LABELS.get(r['case'], r['case'])} | {_limits(r)} "
            f"| {r['seconds']:.1f} | {_vs_velero(rows, r)} |"
        )
    return lines


def markdown(results: dict[str, Any], plot_name: str | None = "benchmark.png") -> str:
    everything: list[Row] = best(results["measurements"])
    rows = [r for r in everything if not is_large_file_row(r)]
    large = [r for r in everything if is_large_file_row(r)]
    plan, machine = results["plan"], results["machine"]
    pvbs = plan["podVolumeBackupsPerBackup"]
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
        f"botocore {machine['botocore']}"
        + (f", Velero {plan['velero']}" if plan.get("velero") else "")
        + ". Everything runs on that one machine and shares its cores.",
        "",
        f"Each backup: a realistic `velero-backup.json` and a pod volume backup file with "
        f"{pvbs} entries, so a full sync of N backups makes {1 + pvbs}·N creates (the worker "
        "adds a location patch per 100 backups and the status patch). References: the "
        "API-create ceiling makes the same creates with the worker's client, pool and limits "
        "and no object store; the API-write ceiling adds the patch per backup of the "
        "in-progress mark that the run stamps replaced. Requests are counted by the servers "
        "(kube-apiserver audit log of the benchmark's ServiceAccount, which Velero uses too; "
        "the S3 server's own request counters); a worker's or ceiling's wall time is its "
        "process from spawn to exit, start-up included; peak RSS is its `VmHWM`, CPU its "
        "user+system time. Limits are `--concurrency / --kube-qps / --kube-burst` (∞: no "
        "client-side limit; APF: none given, and the worker chose none because the API server "
        "has API Priority and Fairness). The ceilings, the full sync and the steady state "
        f"ran {plan.get('repeat', 1)}x interleaved; the tables show the fastest run of each "
        "(all wall times in the last column); the other runs ran once.",
        "",
        *_velero_note(rows),
    ]
    if plot_name:
        lines += [f"![wall time against N]({plot_name})", ""]
    if any(r["case"] == VELERO for r in rows):
        lines += ["## Against Velero's own sync", "", *_against_velero(rows), ""]
    lines += [
        "## Every run",
        "",
        "| N | run | limits | wall (s) | vs Velero | creates | creates/s | API requests "
        "| store requests | peak RSS (MiB) | CPU (s) | all runs (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in _ordered(rows):
        lines.append(
            f"| {r['n']:,} | {r['case']} | {_limits(r)} | {r['seconds']:.2f} "
            f"| {_vs_velero(rows, r)} | {r['creates']:,} | "
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
    lines += [
        "",
        "CPU seconds during each run: the measured process (the worker, the ceiling, or "
        "Velero's server and plugin) and every server; on 2 cores, a run's wall time cannot "
        "be shorter than its total over 2:",
        "",
    ]
    names = sorted({k for r in rows for k in r["serverCpuSeconds"]})
    lines += [
        "| N | run | measured process | " + " | ".join(names) + " | total | total ÷ wall |",
        "|---:|---|---:|" + "---:|" * len(names) + "---:|---:|",
    ]
    for r in _ordered(rows):
        cells = " | ".join(f"{r['serverCpuSeconds'].get(k, 0):.1f}" for k in names)
        total = r["cpuSeconds"] + sum(r["serverCpuSeconds"].values())
        busy = total / r["seconds"] if r["seconds"] > 0 else 0.0
        lines.append(
            f"| {r['n']:,} | {r['case']} | {r['cpuSeconds']:.1f} | {cells} | {total:.1f} "
            f"| {busy:.2f} |"
        )
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
            lines.append(f"| {target} | {value} | {_met(met)} |")
    return "\n".join(lines) + "\n"


def _met(met: bool | None, bold_no: bool = False) -> str:
    if met is None:
        return "-"
    if met:
        return "yes"
    return "**no**" if bold_no else "no"


STYLES = {
    VELERO: ("black", "s", "Velero's own sync (one backup at a time)"),
    SEQUENTIAL: ("tab:red", "s", "worker, --concurrency 1"),
    VELERO_LIMITS: ("tab:purple", "v", "worker at Velero's limits (100 QPS, burst 100)"),
    FULL: ("tab:blue", "o", "worker, shipped defaults"),
    CEILING: ("tab:gray", "^", "API-create ceiling (no store)"),
    WRITE_CEILING: ("tab:olive", "^", "API-write ceiling (creates + mark patches)"),
    STEADY: ("tab:green", "D", "worker, steady state (nothing to do)"),
}


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: wall time against N for every case. Right (when Velero ran): how many times
    faster than Velero's own sync each full sync is, per N, with the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in best(results["measurements"]) if not is_large_file_row(r)]
    sizes = sorted({r["n"] for r in rows if r["case"] == VELERO})
    fig, axes = plt.subplots(
        1, 2 if sizes else 1, figsize=(13 if sizes else 7.5, 4.8), dpi=120, squeeze=False
    )
    ax = axes[0][0]
    for case, (color, marker, label) in STYLES.items():
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
            linewidth=2.2 if case == VELERO else 1.4,
            linestyle="--" if case in (CEILING, WRITE_CEILING) else "-",
        )
        for x, y in points:
            ax.annotate(f"{y:.1f}s", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ns = sorted({r["n"] for r in rows})
    ax.set_xticks(ns, [f"{n:,}" for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("backups in the bucket (N)")
    ax.set_ylabel("wall time (s)")
    plan = results["plan"]
    ax.set_title(
        f"wall time: {plan['store']} + {plan['latencyMs']} ms store latency, "
        f"{results['machine']['cores']} cores"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if sizes:
        _plot_speedups(axes[0][1], rows, sizes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_speedups(ax: Any, rows: list[Row], sizes: list[int]) -> None:
    cases = [c for c in (FULL, VELERO_LIMITS, SEQUENTIAL, CEILING) if _has(rows, c)]
    width = 0.8 / max(1, len(cases))
    top = 1.0
    for i, case in enumerate(cases):
        color, _marker, label = STYLES[case]
        for j, n in enumerate(sizes):
            row, velero = _find(rows, case, n), _find(rows, VELERO, n)
            if row is None or velero is None:
                continue
            x = j + (i - (len(cases) - 1) / 2) * width
            value = velero["seconds"] / row["seconds"]
            top = max(top, value)
            ax.bar(x, value, width * 0.9, color=color, label=label if j == 0 else None)
            ax.annotate(f"{value:.1f}x", (x, value), ha="center", va="bottom", fontsize=7)
    for case, n, factor in VELERO_TARGETS:
        if n in sizes and case in cases:
            i, j = cases.index(case), sizes.index(n)
            x = j + (i - (len(cases) - 1) / 2) * width
            ax.hlines(factor, x - width / 2, x + width / 2, colors="red", linewidth=2)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xticks(range(len(sizes)), [f"N = {n:,}" for n in sizes])
    ax.set_ylabel("times faster than Velero's own sync")
    ax.set_title("speed-up over Velero's own sync (red: the targets)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_ylim(0, top * 1.4)
    ax.legend(fontsize=7, loc="upper center", ncol=2)


def _has(rows: list[Row], case: str) -> bool:
    return any(r["case"] == case for r in rows)


README_START = "<!-- benchmark:start (written by `make bench`) -->"
README_END = "<!-- benchmark:end -->"


def readme_section(results: dict[str, Any]) -> str:
    """The lead, the plot and the targets, for the README (every run: docs/benchmark.md)."""
    rows = [r for r in best(results["measurements"]) if not is_large_file_row(r)]
    machine, plan = results["machine"], results["plan"]
    velero = f", beside the real Velero {plan['velero']}" if plan.get("velero") else ""
    lines = [*_readme_lead(rows, plan)]
    lines += [
        f"Measured {results['generated']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memoryGiB']} GiB; kube-apiserver {machine['kubeApiserver']} + etcd "
        f"{machine['etcd']}, {plan['store']} behind toxiproxy {machine['toxiproxy']} "
        f"(+{plan['latencyMs']} ms per store response){velero}, all on that one machine; "
        f"ceilings, full sync and steady state best of {plan.get('repeat', 1)} runs. Every "
        "run, request breakdowns and per-process CPU: [docs/benchmark.md](docs/benchmark.md); "
        "what limits them: [docs/performance.md](docs/performance.md).",
        "",
        "![wall time against N; speed-up over Velero's own sync](docs/benchmark.png)",
    ]
    judged = targets(results)
    if judged:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t} | {v} | {_met(met, bold_no=True)} |" for t, v, met in judged]
    return "\n".join(lines)


def _readme_lead(rows: list[Row], plan: dict[str, Any]) -> list[str]:
    """One sentence: the worker's shipped defaults against Velero's own sync, per N."""
    pairs = [
        (n, velero["seconds"] / full["seconds"], velero["seconds"], full["seconds"])
        for n in sorted({r["n"] for r in rows})
        if (velero := _find(rows, VELERO, n)) and (full := _find(rows, FULL, n))
    ]
    if not pairs:
        return []
    each = "; ".join(f"N = {n:,}: **{x:.1f}x** ({v:.0f} s → {w:.0f} s)" for n, x, v, w in pairs)
    return [
        f"**Against the real Velero {plan.get('velero', '')}'s own sync** (same API server, "
        f"bucket and {plan['latencyMs']} ms store latency, one run), the worker with its shipped "
        f"defaults is faster by: {each}.",
        "",
    ]


def update_readme(path: Path, section: str) -> bool:
    """Replace the text between the benchmark markers; False when there are none."""
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    path.write_text(text[: start + len(README_START)] + "\n" + section + "\n" + text[end:])
    return True
