"""The command-line contract of design §2: options, defaults, environment, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.helpers import Recorder, parsed
from worker import cli
from worker.report import LocationReport, Outcome, RunReport

REPO = Path(__file__).resolve().parents[2]


# -- defaults -----------------------------------------------------------------------------------


def test_defaults(rec: Recorder) -> None:
    s = parsed(rec)
    assert s.namespace == "velero"
    assert s.kubeconfig is None
    assert s.context is None
    assert s.default_sync_period == timedelta(minutes=1)
    assert s.features == frozenset()
    assert s.csi_enabled is False
    assert s.locations == frozenset()
    assert s.force is False
    assert s.dry_run is False
    assert s.concurrency == 16
    assert s.kube_qps is None  # chosen at connect: none with APF, else Velero's 100/100
    assert s.kube_burst is None
    assert s.log_level == "info"
    assert s.log_format == "text"
    assert rec.logging == [("info", "text")]


def test_parser_defaults_match_the_contract() -> None:
    args = cli.build_parser().parse_args([])
    assert args.namespace is None
    assert args.kubeconfig is None
    assert args.context is None
    assert args.default_backup_sync_period is None  # Settings.default_sync_period: 1m
    assert args.features == ""
    assert args.location == []
    assert args.force is False
    assert args.dry_run is False
    assert args.log_level == "info"
    assert args.log_format == "text"


def test_explain_settings_are_a_dry_run_with_the_sync_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """explain has no sync-only options: it gets Settings' defaults for them, and a dry run."""
    monkeypatch.delenv("VELERO_NAMESPACE", raising=False)
    args = cli.build_parser(explain=True).parse_args(["b1", "--mass-orphan-floor", "3"])
    s = cli.settings_from(args, {"VELERO_NAMESPACE": "velero"})
    assert s == replace(cli.DEFAULTS, dry_run=True, mass_orphan_floor=3)


def test_help_states_each_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Every option with a default says it in --help, as the default the run uses."""
    parser = cli.build_parser()
    help_text = " ".join(parser.format_help().split())
    for text in (
        "N parallel per-backup work within a location (default: 16)",
        "SECONDS give up retrying one call after this long (default: 60)",
        "--mass-orphan-floor; 1 disables the guard (default: 0.5)",
        "how much to log (default: info)",
    ):
        assert text in help_text, text
    assert "(default: None)" not in help_text and "(default: False)" not in help_text


# -- every option -------------------------------------------------------------------------------


def test_every_option(rec: Recorder) -> None:
    s = parsed(
        rec,
        "--namespace",
        "backup-ns",
        "--kubeconfig",
        "/tmp/kc",
        "--context",
        "prod",
        "--default-backup-sync-period",
        "1h30m",
        "--features",
        "EnableCSI",
        "--location",
        "a",
        "--location",
        "b",
        "--force",
        "--dry-run",
        "--concurrency",
        "3",
        "--kube-qps",
        "2.5",
        "--kube-burst",
        "7",
        "--log-level",
        "debug",
        "--log-format",
        "json",
    )
    assert s.namespace == "backup-ns"
    assert s.kubeconfig == "/tmp/kc"
    assert s.context == "prod"
    assert s.default_sync_period == timedelta(hours=1, minutes=30)
    assert s.features == frozenset({"EnableCSI"})
    assert s.csi_enabled is True
    assert s.locations == frozenset({"a", "b"})
    assert s.force is True
    assert s.dry_run is True
    assert s.concurrency == 3
    assert s.kube_qps == 2.5
    assert s.kube_burst == 7
    assert s.log_level == "debug"
    assert s.log_format == "json"
    assert rec.logging == [("debug", "json")]


def test_retry_and_timeout_options(rec: Recorder) -> None:
    s = parsed(rec, "--request-timeout", "5", "--retry-attempts", "2", "--retry-max-seconds", "9.5")
    assert s.request_timeout == 5.0
    assert s.retry.attempts == 2
    assert s.retry.max_seconds == 9.5


@pytest.mark.parametrize("period", ["500ms", "1m0s", "1h30m"])
def test_go_durations_accepted(rec: Recorder, period: str) -> None:
    s = parsed(rec, "--default-backup-sync-period", period)
    assert (
        s.default_sync_period
        == {
            "500ms": timedelta(milliseconds=500),
            "1m0s": timedelta(minutes=1),
            "1h30m": timedelta(hours=1, minutes=30),
        }[period]
    )


@pytest.mark.parametrize("period", ["0", "0s", "-1m", "-0.5s"])
def test_non_positive_default_period_is_a_usage_error(
    rec: Recorder, capsys: pytest.CaptureFixture[str], period: str
) -> None:
    """The zero rule belongs to spec.backupSyncPeriod only: a zero default would silently
    disable every location without its own period."""
    assert cli.main([f"--default-backup-sync-period={period}"]) == 2
    assert rec.settings == []
    err = capsys.readouterr().err
    assert "--default-backup-sync-period must be positive" in err
    assert "backupSyncPeriod: 0s" in err and "suspend the CronJob" in err


# -- Velero version profile and credentials folder ---------------------------------------------


def test_velero_version_defaults(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BACKUP_SYNC_VELERO_VERSION", raising=False)
    s = parsed(rec)
    assert (s.velero_version, s.velero_deployment, s.credentials_dir) == (
        "auto",
        "velero",
        "/credentials",
    )


def test_velero_version_flag_env_and_deployment(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKUP_SYNC_VELERO_VERSION", "1.16.2")
    assert parsed(rec, "--velero-deployment", "velero-server").velero_version == "1.16.2"
    assert rec.settings[0].velero_deployment == "velero-server"
    rec.settings.clear()
    assert parsed(rec, "--velero-version", "1.18").velero_version == "1.18"


@pytest.mark.parametrize("version", ["1.14", "1.19.0", "latest", "v1"])
def test_unsupported_velero_version_is_a_usage_error(
    rec: Recorder, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    assert cli.main(["--velero-version", version]) == 2
    assert rec.settings == []
    assert "1.15 to 1.18" in capsys.readouterr().err


# -- namespace resolution ----------------------------------------------------------------------


def test_namespace_from_env(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELERO_NAMESPACE", "from-env")
    monkeypatch.setattr(cli, "pod_namespace", lambda: "from-pod")
    assert parsed(rec).namespace == "from-env"


def test_namespace_flag_beats_env(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VELERO_NAMESPACE", "from-env")
    assert parsed(rec, "--namespace", "from-flag").namespace == "from-flag"


def test_namespace_from_pod(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "pod_namespace", lambda: "from-pod")
    assert parsed(rec).namespace == "from-pod"


# -- usage errors: exit 2 -------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["1", "m", "1x", "", "1m-1s"])
def test_invalid_duration_exit_2(
    rec: Recorder, capsys: pytest.CaptureFixture[str], period: str
) -> None:
    assert cli.main(["--default-backup-sync-period", period]) == 2
    assert rec.settings == []
    err = capsys.readouterr().err
    assert "invalid duration" in err


@pytest.mark.parametrize("features", ["EnableFoo", "EnableCSI,Bogus"])
def test_bad_features_exit_2(
    rec: Recorder, capsys: pytest.CaptureFixture[str], features: str
) -> None:
    assert cli.main(["--features", features]) == 2
    assert rec.settings == []
    assert "unknown feature" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--concurrency", "0"],
        ["--concurrency", "many"],
        ["--kube-qps", "-1"],
        ["--kube-burst", "0"],
        ["--log-level", "trace"],
        ["--log-format", "yaml"],
        ["--retry-attempts", "0"],
        ["--request-timeout", "0"],
        ["--no-such-flag"],
        ["positional"],
    ],
)
def test_argparse_usage_errors_exit_2(rec: Recorder, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert rec.settings == []


def test_help_mentions_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for line in ("  0  every due location synced", "  1  a location failed", "  2  usage"):
        assert line in out
    assert "  3  every location synced but some items" in out
    for option in (
        "--namespace",
        "--kubeconfig",
        "--context",
        "--default-backup-sync-period",
        "--features",
        "--location",
        "--force",
        "--dry-run",
        "--concurrency",
        "--kube-qps",
        "--kube-burst",
        "--log-level",
        "--log-format",
    ):
        assert option in out


# -- exit code and summary output --------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "errors", "code"),
    [
        (Outcome.SYNCED, False, 0),
        (Outcome.NOT_DUE, False, 0),
        (Outcome.DISABLED, False, 0),
        (Outcome.FAILED, False, 1),
        (Outcome.CONFIG_ERROR, False, 2),
        (Outcome.SYNCED, True, 3),
    ],
)
def test_main_returns_the_report_exit_code(
    monkeypatch: pytest.MonkeyPatch, outcome: Outcome, errors: bool, code: int
) -> None:
    from worker.report import ItemFailure

    loc = LocationReport(name="a", outcome=outcome)
    if errors:
        loc.errors.append(ItemFailure("Backup velero/x", "bad"))
    rec = Recorder(RunReport(namespace="velero", locations=[loc]))
    monkeypatch.setattr(cli, "sync_run", rec.run)
    monkeypatch.setattr(cli, "configure_logging", rec.configure)
    assert cli.main(["--namespace", "velero"]) == code


def test_main_prints_text_summary(rec: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    rec.report.locations.append(LocationReport(name="a", listed=3, created=2))
    cli.main([])
    out = capsys.readouterr().out
    assert out.startswith("backup-sync summary for namespace velero\n")
    assert "location a: synced: listed 3, in cluster 0, created 2," in out


def test_main_prints_json_summary(rec: Recorder, capsys: pytest.CaptureFixture[str]) -> None:
    rec.report.locations.append(LocationReport(name="a", listed=3, created=2))
    cli.main(["--log-format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["locations"][0]["location"] == "a"
    assert doc["locations"][0]["created"] == 2
    assert doc["exitCode"] == 0


# -- the real entry points, as subprocesses --------------------------------------------------------


def run_cli(
    *argv: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "KUBECONFIG": "/nonexistent/kc"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_module_entry_point_usage_error_exit_2() -> None:
    result = run_cli("--default-backup-sync-period", "1x")
    assert result.returncode == 2
    assert "invalid duration" in result.stderr


def test_module_entry_point_unusable_kubeconfig_exit_2() -> None:
    result = run_cli("--log-format", "json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["exitCode"] == 2
    assert "Kubernetes client configuration" in doc["error"]


def test_console_script_declared() -> None:
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("backup-sync") == "worker.cli:main"


def test_console_script_runs_main() -> None:
    script = Path(sys.executable).parent / "backup-sync"
    assert script.exists()
    # PYTHONPATH: the venv's editable-install finder may predate the worker package.
    result = subprocess.run(
        [str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert "exit codes:" in result.stdout


# -- shards ---------------------------------------------------------------------------------------


def test_shard_flag(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")  # the flag wins
    assert str(parsed(rec, "--shard", "1/4").shard) == "1/4"


def test_an_indexed_job_pod_takes_its_index(rec: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert str(parsed(rec, "--shards", "4").shard) == "2/4"
    rec.settings.clear()
    monkeypatch.setenv("BACKUP_SYNC_SHARDS", "3")
    assert str(parsed(rec).shard) == "2/3"


def test_one_shard_or_none_is_every_location(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BACKUP_SYNC_SHARDS", raising=False)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "0")
    assert parsed(rec).shard is None  # an index alone shards nothing
    rec.settings.clear()
    assert parsed(rec, "--shards", "1").shard is None


@pytest.mark.parametrize("argv", [["--shards", "4"], ["--shard", "4/4"], ["--shard", "x"]])
def test_bad_shards_are_usage_errors(
    rec: Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert cli.main(argv) == 2
    assert rec.settings == []
    assert "shard" in capsys.readouterr().err


def test_the_readme_table_lists_every_option() -> None:
    """The README's command-line table is the contract users read: every option of the
    parser is in it (as the chart README's values are checked against the parser)."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Command line") : readme.index("### Exit codes")]
    for action in cli.build_parser()._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or longs[0] in ("--help", "--version"):
            continue
        assert f"`{longs[0]}" in table or f", {longs[0]}" in table, longs[0]
    codes = readme[readme.index("### Exit codes") :]
    for code in ("`0`", "`1`", "`2`", "`3`", "`4`"):
        assert code in codes, code
