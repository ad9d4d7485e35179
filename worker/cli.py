"""Command line: flags and environment → Settings; wiring; the exit code. No sync logic."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import TextIO, TypeVar

from worker import __version__
from worker.cluster import pod_namespace
from worker.durations import go_duration, parse_go_duration
from worker.errors import ClusterError, ConfigError
from worker.locations import Shard
from worker.logs import configure as configure_logging
from worker.profile import AUTO, parse_version
from worker.progress import ProgressFactory, StatusLine
from worker.progress import factory as progress_factory
from worker.ratelimit import VELERO_BURST
from worker.report import EXIT_CONFIG, EXIT_LOCATION_FAILED, RunReport
from worker.retry import RetryPolicy
from worker.run import Run, explain
from worker.settings import Settings, parse_features
from worker.shutdown import Shutdown, install

DEFAULTS = Settings(namespace="velero")
N = TypeVar("N", int, float)

EXIT_CODES_HELP = """\
exit codes:
  0  every due location synced with no item errors (or nothing was due)
  1  a location failed: store unreachable, listing failed, status patch failed,
     cluster unreachable, or the run was stopped by SIGTERM/SIGINT (retrying the
     job may help)
  2  usage or configuration error (bad flag or duration, a location's provider,
     config keys or credential Secret is wrong): fix the configuration
  3  every location synced but some items (backups, pod volume backups, CSI objects)
     failed, or the mass-deletion guard kept a location's orphans; the summary names each
"""


SYNC_HELP = (
    "Bring Velero backups from object storage (S3, GCS, Azure Blob) into this cluster, once: "
    "Velero's backup sync as a single-shot job. `backup-sync sync` is the same; "
    "`backup-sync explain NAME` says why a backup is or is not in the cluster."
)
EXPLAIN_HELP = (
    "Why backup NAME is, or is not, in the cluster: per location (default first) the keys "
    "read, what the store and the cluster hold, and what the next run would do. Writes "
    "nothing; needs only the reads of a dry run."
)
EXPLAIN_EXIT_CODES_HELP = """\
exit codes:
  0  NAME was found in some location's store or in the cluster
  1  the cluster could not be read
  2  usage or configuration error
  4  NAME was found nowhere
"""


def _number(
    kind: Callable[[str], N],
    *,
    above: float | None = None,
    least: float | None = None,
    most: float | None = None,
) -> Callable[[str], N]:
    """An argparse type: ``kind`` (int or float) within the bounds, else a usage error
    that says which."""

    def parse(text: str) -> N:
        value = kind(text)
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be greater than {above:g}")
        if least is not None and value < least:
            raise argparse.ArgumentTypeError(
                "must not be negative" if least == 0 else f"must be at least {least:g}"
            )
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


_positive_int = _number(int, least=1)
_positive_float = _number(float, above=0)
_non_negative_int = _number(int, least=0)
_non_negative_float = _number(float, least=0)
_share = _number(float, least=0, most=1)


def build_parser(explain: bool = False) -> argparse.ArgumentParser:
    """The options of a sync (``backup-sync [sync]``), or of ``backup-sync explain NAME``
    (the same, less what only a sync uses)."""
    parser = argparse.ArgumentParser(
        prog="backup-sync explain" if explain else "backup-sync",
        description=EXPLAIN_HELP if explain else SYNC_HELP,
        epilog=EXPLAIN_EXIT_CODES_HELP if explain else EXIT_CODES_HELP,
        formatter_class=_HelpFormatter,
    )
    for add_options in (_where, _api_client, _guard, _velero, _output):
        add_options(parser.add_argument)
    if explain:
        parser.add_argument("name", metavar="NAME", help="the backup to look up")
    else:
        _sync_only(parser.add_argument_group("sync only (not explain)").add_argument)
    # After the options exist, so that --help shows them: the defaults are Settings'.
    parser.set_defaults(**_defaults(explain))
    return parser


# The options that set the Settings field of their name as given: their default is the
# field's, and explain (which lacks the sync-only ones) gets the field's default.
AS_GIVEN = (
    "kubeconfig",
    "context",
    "force",
    "dry_run",
    "concurrency",
    "kube_qps",
    "kube_burst",
    "request_timeout",
    "log_level",
    "log_format",
    "mass_orphan_share",
    "mass_orphan_floor",
    "allow_mass_orphan_deletion",
    "shutdown_grace",
    "velero_deployment",
    "credentials_dir",
)


def _defaults(explain: bool) -> dict[str, object]:
    retry = DEFAULTS.retry
    defaults = {name: getattr(DEFAULTS, name) for name in AS_GIVEN}
    defaults.update(retry_attempts=retry.attempts, retry_max_seconds=retry.max_seconds)
    if explain:
        defaults.update(dry_run=True)  # explain writes nothing
    return defaults


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help, as Go's flag package does, where the
    option has a default worth saying and its help does not already speak of one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if default in (None, False, "", [], argparse.SUPPRESS) or "default" in text:
            return text
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        return f"{text} (default: {shown})"


Add = Callable[..., object]  # ArgumentParser.add_argument, or a group's


def _where(add: Add) -> None:
    """Which cluster, namespace and locations."""
    add(
        "--namespace",
        help="Velero namespace (env VELERO_NAMESPACE; default: the pod's namespace in a "
        "cluster, else 'velero')",
    )
    add("--kubeconfig", help="kubeconfig file outside a cluster (default: KUBECONFIG)")
    add("--context", help="kubeconfig context (default: the current context)")
    add(
        "--default-backup-sync-period",
        metavar="DURATION",
        help="Go duration used for locations without spec.backupSyncPeriod (default: "
        f"{go_duration(DEFAULTS.default_sync_period)})",
    )
    add("--features", default="", help="comma list of Velero features, e.g. EnableCSI")
    add("--location", action="append", default=[], metavar="NAME", help=ONLY_LOCATION_HELP)


ONLY_LOCATION_HELP = "only sync this location (repeatable; default: all)"


def _api_client(add: Add) -> None:
    """How the API server and the stores are called."""
    add("--kube-qps", type=_non_negative_float, metavar="F", help=KUBE_QPS_HELP)
    add("--kube-burst", type=_positive_int, metavar="N", help=KUBE_BURST_HELP)
    add("--request-timeout", type=_positive_float, metavar="SECONDS", help=TIMEOUT_HELP)
    add("--retry-attempts", type=_positive_int, metavar="N", help=ATTEMPTS_HELP)
    add("--retry-max-seconds", type=_non_negative_float, metavar="SECONDS", help=RETRY_HELP)


KUBE_QPS_HELP = (
    "API requests per second, sustained; 0 = unlimited (default: unlimited when the API "
    "server has API Priority and Fairness, which answers 429 with Retry-After when busy; "
    "else Velero's 100)"
)
KUBE_BURST_HELP = f"API request burst (default: Velero's {VELERO_BURST})"
TIMEOUT_HELP = "timeout of each API and object-store call"
ATTEMPTS_HELP = "attempts per call on transient faults"
RETRY_HELP = "give up retrying one call after this long"


def _guard(add: Add) -> None:
    """The mass-deletion guard (worker.guard)."""
    add("--mass-orphan-share", type=_share, metavar="F", help=GUARD_SHARE_HELP)
    add("--mass-orphan-floor", type=_non_negative_int, metavar="N", help=GUARD_FLOOR_HELP)
    add("--allow-mass-orphan-deletion", action="store_true", help=GUARD_OFF_HELP)


GUARD_SHARE_HELP = (
    "mass-deletion guard: delete no orphans of a location when they are more than this share "
    "of its Backups and at least --mass-orphan-floor; 1 disables the guard"
)
GUARD_FLOOR_HELP = "mass-deletion guard: the fewest orphans it ever blocks"
GUARD_OFF_HELP = (
    "delete orphans even when the mass-deletion guard would block (after emptying a bucket "
    "on purpose)"
)


def _velero(add: Add) -> None:
    """Which Velero to sync like, its credentials folder, and the shard."""
    add("--velero-version", metavar="auto|X.Y[.Z]", help=VELERO_VERSION_HELP)
    add("--velero-deployment", metavar="NAME", help=DEPLOYMENT_HELP)
    add("--credentials-dir", metavar="DIR", help=CREDENTIALS_DIR_HELP)
    add("--shard", metavar="I/N", help=SHARD_HELP)
    add("--shards", type=_positive_int, metavar="N", help=SHARDS_HELP)


VELERO_VERSION_HELP = (
    "sync the way this Velero version does (1.15 to 1.18.x; env BACKUP_SYNC_VELERO_VERSION); "
    "auto reads the image tag of the Velero Deployment and falls back to 1.15 (default: auto)"
)
DEPLOYMENT_HELP = (
    "the Velero server Deployment in the Velero namespace that --velero-version auto reads"
)
CREDENTIALS_DIR_HELP = (
    "the only folder a location's spec.config.credentialsFile may name a file in (where the "
    "chart mounts the credentials Secret)"
)
SHARD_HELP = (
    "only the locations of shard I of N (a stable hash of the location name); default: from "
    "JOB_COMPLETION_INDEX with --shards, else all"
)
SHARDS_HELP = (
    "the shard count of an Indexed Job (env BACKUP_SYNC_SHARDS): this pod takes shard "
    "JOB_COMPLETION_INDEX of N"
)


def _output(add: Add) -> None:
    add("--log-level", choices=["debug", "info", "warning", "error"], help="how much to log")
    add("--log-format", choices=["text", "json"], help="text for people, json for collectors")
    add("--version", action="version", version=f"%(prog)s {__version__}")


def _sync_only(only: Add) -> None:
    only("--force", action="store_true", help="ignore the sync period (never a period of 0)")
    only("--dry-run", action="store_true", help=DRY_RUN_HELP)
    only("--concurrency", type=_positive_int, metavar="N", help=CONCURRENCY_HELP)
    only("--pushgateway-url", metavar="URL", help=PUSHGATEWAY_HELP)
    only("--shutdown-grace", type=_non_negative_float, metavar="SECONDS", help=GRACE_HELP)


DRY_RUN_HELP = "print what would be created, deleted and patched; write nothing"
CONCURRENCY_HELP = "parallel per-backup work within a location"
PUSHGATEWAY_HELP = (
    "push run metrics to this Prometheus Pushgateway: the start when the run begins, the "
    "results when it ends (default: none)"
)
GRACE_HELP = (
    "after SIGTERM or SIGINT, take no new work and give the work in flight this long; the "
    "interrupted location is not marked synced and the exit code is 1 (keep it below the "
    "pod's terminationGracePeriodSeconds)"
)


def settings_from(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Flags first, then environment, then defaults. Raises ConfigError."""
    namespace = args.namespace or env.get("VELERO_NAMESPACE") or pod_namespace() or "velero"
    velero_version = args.velero_version or env.get("BACKUP_SYNC_VELERO_VERSION") or AUTO
    if velero_version != AUTO:
        parse_version(velero_version)  # a usage error now, not at the first location
    given = vars(args)
    return replace(
        DEFAULTS,
        **{name: given[name] for name in AS_GIVEN},
        namespace=namespace,
        default_sync_period=_default_period(args.default_backup_sync_period),
        features=parse_features(args.features),
        locations=frozenset(args.location),
        retry=RetryPolicy(attempts=args.retry_attempts, max_seconds=args.retry_max_seconds),
        pushgateway_url=given.get("pushgateway_url") or None,
        velero_version=velero_version,
        shard=_shard(args.shard, args.shards, env),
    )


def _shard(text: str | None, count: int | None, env: dict[str, str]) -> Shard | None:
    """--shard I/N; else shard JOB_COMPLETION_INDEX of --shards (Kubernetes sets the index
    in every pod of an Indexed Job); one shard is no shard. Raises ConfigError."""
    if text:
        return Shard.parse(text)
    if count is None and env.get("BACKUP_SYNC_SHARDS"):
        try:
            count = int(env["BACKUP_SYNC_SHARDS"])
        except ValueError:
            raise ConfigError("BACKUP_SYNC_SHARDS must be a number of shards") from None
    if count is None or count == 1:
        return None
    index = env.get("JOB_COMPLETION_INDEX")
    if index is None:
        raise ConfigError(
            f"--shards {count} needs JOB_COMPLETION_INDEX (an Indexed Job sets it) or --shard I/N"
        )
    return Shard.parse(f"{index}/{count}")


def _default_period(text: str | None) -> timedelta:
    """A positive Go duration (None: Settings' default). Zero means "never" only in a
    location's own spec.backupSyncPeriod; as the default it would silently disable every
    location without one (Velero itself would fall back to 1m)."""
    if text is None:
        return DEFAULTS.default_sync_period
    period = parse_go_duration(text)
    if period <= timedelta(0):
        raise ConfigError(
            f"--default-backup-sync-period must be positive, not {text!r}. To stop syncing one "
            "location set its spec.backupSyncPeriod: 0s; to stop them all, suspend the CronJob "
            "(chart value suspend: true)"
        )
    return period


def _tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["explain"]:
        return explain_main(argv[1:])
    if argv[:1] == ["sync"]:
        argv = argv[1:]
    args = build_parser().parse_args(argv)  # exits 2 on usage errors
    try:
        settings = settings_from(args, dict(os.environ))
    except ConfigError as exc:
        print(f"backup-sync: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # On a terminal, a live progress line sits below the (text) log lines.
    status = StatusLine(sys.stderr) if settings.log_format == "text" and _tty(sys.stderr) else None
    configure_logging(settings.log_level, settings.log_format, status)
    shutdown = Shutdown(settings.shutdown_grace)
    report = RunReport(namespace=settings.namespace, dry_run=settings.dry_run)
    restore_signals = install(shutdown)
    try:
        finished = _run_until_done_or_grace_over(settings, status, shutdown, report)
    finally:
        restore_signals()
    if not finished:
        report.abandon(shutdown.reason)
    print(report.render(settings.log_format), flush=True)
    if shutdown.requested:
        # Work abandoned after the grace period may still hold threads; do not wait for
        # them (what they left half done carries the in-progress mark).
        logging.shutdown()
        sys.stderr.flush()
        os._exit(report.exit_code)
    return report.exit_code


def explain_main(argv: Sequence[str]) -> int:
    """``backup-sync explain NAME``: read-only; exit 0 found, 4 found nowhere."""
    args = build_parser(explain=True).parse_args(argv)
    try:
        settings = settings_from(args, dict(os.environ))
    except ConfigError as exc:
        print(f"backup-sync: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.log_format, None)
    try:
        explanation = explain(settings, args.name)
    except ConfigError as exc:
        print(f"backup-sync: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ClusterError as exc:
        print(f"backup-sync: error: {exc}", file=sys.stderr)
        return EXIT_LOCATION_FAILED
    print(explanation.render(settings.log_format), flush=True)
    return explanation.exit_code


def sync_run(
    settings: Settings, *, progress: ProgressFactory, shutdown: Shutdown, report: RunReport
) -> RunReport:
    """The command's sync run, filling ``report`` (the CLI tests replace this seam)."""
    return Run(settings, progress=progress, shutdown=shutdown).sync(report)


# After the grace period, how long the run may take to wrap up (its own bounded waits end
# at the grace period) before the summary is printed without it.
WRAP_UP_SECONDS = 2.0


def _run_until_done_or_grace_over(
    settings: Settings, status: StatusLine | None, shutdown: Shutdown, report: RunReport
) -> bool:
    """The run in its own thread, so that the main thread can print a summary even when the
    run is stuck in a call (a black-holed connection); True when the run ended. A bug that
    escapes the run is raised here, as if it had run in this thread."""
    escaped: list[BaseException] = []

    def target() -> None:
        try:
            sync_run(settings, progress=progress_factory(status), shutdown=shutdown, report=report)
        except BaseException as exc:
            escaped.append(exc)

    thread = threading.Thread(target=target, name="run", daemon=True)
    thread.start()
    while thread.is_alive():
        if shutdown.requested and shutdown.remaining() <= 0:
            thread.join(WRAP_UP_SECONDS)
            if thread.is_alive():
                return False
        thread.join(0.1)
    if escaped:
        raise escaped[0]
    return True
