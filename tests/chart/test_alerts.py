"""The chart's alert rules (``prometheusRule.enabled``), checked and unit-tested with the
pinned promtool on the series a real run pushes.

Each scenario runs the real worker (``worker.run.run`` on the unit fakes) at simulated
minutes against a stand-in Pushgateway, replays the pushes the way a Pushgateway keeps them
(POST replaces only the metric families it carries; the grouping key becomes labels beside
``job``), samples that state once a minute as a Prometheus scraping it with
``honor_labels: true`` would, and hands the samples to ``promtool test rules`` as
``input_series``: no series is typed by hand. Every alert fires in a scenario that should
fire it, with its labels and annotations, and stays silent on the healthy one.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.controlplane import ControlPlane
from harness.velero import apply_crd_files
from tests.chart.chart import (
    ALERT_TOOLS_SCRIPT,
    CHART_DIR,
    Helm,
    HelmUnavailable,
    cached_prometheusrule_crd,
    resolve_promtool,
)
from tests.conftest import in_ci
from tests.pushgateway import Gateway
from tests.unit.fakes import Bucket, FakeCluster, MemoryStore
from tests.unit.helpers import NS, bsl, cluster_backup, opener, settings
from worker.errors import StoreError
from worker.report import RunReport
from worker.run import run
from worker.velero import BACKUP, BACKUP_STORAGE_LOCATION

Obj = dict[str, Any]

RUN_EVERY = 5  # minutes: the chart's default schedule
PERIOD = "5m"  # every location's backupSyncPeriod: due at every run
ALERTS = (
    "BackupSyncLocationNotSynced",
    "BackupSyncLocationFailing",
    "BackupSyncOrphansBlocked",
    "BackupSyncItemErrors",
    "BackupSyncRunNotFinished",
)


# --- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The pinned promtool; outside CI built when missing, under CI a missing one fails."""
    try:
        return resolve_promtool(build=not in_ci())
    except HelmUnavailable as exc:
        if in_ci():
            pytest.fail(f"promtool unavailable: {exc}", pytrace=False)
        pytest.skip(f"promtool unavailable: {exc}")


def rule(helm: Helm, values: Obj | None = None) -> Obj:
    rendered = helm.render({"prometheusRule": {"enabled": True}, **(values or {})})
    return rendered.one("PrometheusRule")


@pytest.fixture(scope="module")
def rules_file(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered rule's groups, as the Prometheus Operator hands them to Prometheus."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule(helm)["spec"]["groups"]}))
    return path


def promtool_run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], capture_output=True, text=True, timeout=120, check=False
    )


# --- a Pushgateway's state, sampled over time ----------------------------------------------


def grouping_labels(path: str) -> dict[str, str]:
    """``/metrics/job/J/k/v/k@base64/…`` -> labels (prometheus_client's escaping undone)."""
    parts = path.removeprefix("/metrics/").split("/")
    labels = {}
    for key, value in zip(parts[::2], parts[1::2], strict=True):
        if key.endswith("@base64"):
            padded = value + "=" * (-len(value) % 4)
            labels[key.removesuffix("@base64")] = base64.urlsafe_b64decode(padded).decode()
        else:
            labels[key] = unquote_plus(value)
    return labels


def selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class Pushgateway:
    """What a Pushgateway serves after a sequence of pushes: per group, the metric families
    of the latest push that carried them (POST), or of the latest PUT alone."""

    def __init__(self) -> None:
        self.groups: dict[tuple[tuple[str, str], ...], dict[str, dict[str, float]]] = {}

    def apply(self, method: str, path: str, body: str) -> None:
        labels = grouping_labels(path)
        group = self.groups.setdefault(tuple(sorted(labels.items())), {})
        if method == "PUT":
            group.clear()
        for family in text_string_to_metric_families(body):
            group[family.name] = {
                selector(s.name, {**s.labels, **labels}): s.value for s in family.samples
            }

    def series(self) -> dict[str, float]:
        """Every sample as scraped with honor_labels: true (the empty instance="" the
        gateway adds is no label at all)."""
        return {
            name: value
            for group in self.groups.values()
            for family in group.values()
            for name, value in family.items()
        }


class Killed(BaseException):
    """The pod dies mid-run (OOM, SIGKILL): nothing after the start push happens."""


class Scenario:
    """Locations on the fakes, synced by the real run every RUN_EVERY minutes (from minute
    1) at a simulated clock, pushing to a stand-in Pushgateway; sampled every minute."""

    def __init__(self, gateway: Gateway, *names: str) -> None:
        self.gateway = gateway
        self.cluster = FakeCluster()
        self.stores: dict[str, tuple[MemoryStore, str]] = {}
        for index, name in enumerate(names):
            self.cluster.add(BACKUP_STORAGE_LOCATION, bsl(name, default=index == 0, period=PERIOD))
            self.stores[name] = (MemoryStore(), "")
        self.state = Pushgateway()
        self.samples: dict[str, list[float | None]] = {}
        self.minutes = 0
        self.kill = False

    def bucket(self, name: str) -> Bucket:
        return Bucket(self.stores[name][0])

    def fail(self, name: str, failing: bool = True) -> None:
        self.stores[name][0].fail_list = (
            StoreError("list s3://bucket/backups/: boom") if failing else None
        )

    def run(self, minute: int) -> RunReport | None:
        clock = datetime.fromtimestamp(minute * 60, UTC)
        open_store = opener(self.stores)

        def open_or_die(*args: Any) -> Any:
            if self.kill:
                raise Killed
            return open_store(*args)

        try:
            return run(
                settings(pushgateway_url=self.gateway.url),
                self.cluster,
                open_or_die,
                now=lambda: clock,
            )
        except Killed:
            return None

    def play(
        self,
        until: int,
        before_run: Callable[[int], None] = lambda minute: None,
        *,
        runs: bool = True,
    ) -> None:
        """Minutes up to ``until``: a run every RUN_EVERY minutes (``before_run(minute)``
        changes the world first; none without ``runs``), then a scrape of the gateway."""
        applied = len(self.gateway.pushes)
        for minute in range(self.minutes, until + 1):
            if runs and minute % RUN_EVERY == 1:
                before_run(minute)
                self.run(minute)
            for method, path, _, body in self.gateway.pushes[applied:]:
                self.state.apply(method, path, body)
            applied = len(self.gateway.pushes)
            scraped = self.state.series()
            for name in scraped.keys() | self.samples.keys():
                self.samples.setdefault(name, [None] * minute).append(scraped.get(name))
        self.minutes = until + 1

    def input_series(self) -> list[Obj]:
        return [
            {"series": name, "values": " ".join("_" if v is None else f"{v:g}" for v in values)}
            for name, values in sorted(self.samples.items())
        ]


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    gw.close()


# --- expected alerts -------------------------------------------------------------------------


def firing(alert: str, summary: str, description: str, location: str | None = None) -> Obj:
    """One firing alert as promtool reports it: the pushed labels, the severity, the
    annotations (runbook_url from the chart's default)."""
    labels = {"job": "backup-sync", "namespace": NS, "severity": "warning"}
    return {
        "exp_labels": labels | ({} if location is None else {"location": location}),
        "exp_annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"docs/operations.md#{alert.lower()}",
        },
    }


def not_synced(location: str, age: str) -> Obj:
    return firing(
        "BackupSyncLocationNotSynced",
        f"Location {location} has not synced for {age}",
        f"BackupStorageLocation {NS}/{location} last synced {age} ago, more than 3 of its "
        "sync periods: backups in its store do not reach the cluster.",
        location,
    )


def failing(location: str, runs: int) -> Obj:
    return firing(
        "BackupSyncLocationFailing",
        f"Location {location} failed {runs} runs in a row",
        f"The last {runs} runs that were due for BackupStorageLocation {NS}/{location} "
        "failed it (store or API server unreachable, configuration error, status patch "
        "failed).",
        location,
    )


def orphans_blocked(location: str, orphans: int) -> Obj:
    return firing(
        "BackupSyncOrphansBlocked",
        f"The mass-deletion guard keeps {orphans} orphans of location {location}",
        f"The last run of BackupStorageLocation {NS}/{location} found {orphans} Backups "
        "missing from its store, too many to delete: an emptied bucket, a wrong prefix or "
        "wrong credentials?",
        location,
    )


def item_errors(location: str, items: int) -> Obj:
    return firing(
        "BackupSyncItemErrors",
        f"{items} items of location {location} failed to sync",
        f"The last run of BackupStorageLocation {NS}/{location} could not sync {items} "
        "backups, pod volume backups or CSI objects.",
        location,
    )


def not_finished(started: str) -> Obj:
    return firing(
        "BackupSyncRunNotFinished",
        f"No backup-sync run in namespace {NS} has finished for 3600s",
        f"The latest run started at {started}, and no run has pushed its end for 3600s: "
        "they are killed (OOM, SIGKILL, node lost) or stuck.",
    )


Expect = dict[int, dict[str, list[Obj]]]  # eval minute -> alert name -> firing alerts


def promtool_test(
    promtool: Path, rules_file: Path, scenario: Scenario, expect: Expect, tmp_path: Path
) -> None:
    """``promtool test rules`` on the scenario's samples: at each minute of ``expect``,
    every alert fires exactly as listed (an alert not listed: not at all)."""
    test = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": scenario.input_series(),
                "alert_rule_test": [
                    {
                        "eval_time": f"{minute}m",
                        "alertname": name,
                        "exp_alerts": alerts.get(name, []),
                    }
                    for minute, alerts in sorted(expect.items())
                    for name in ALERTS
                ],
            }
        ],
    }
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    proc = promtool_run(promtool, "test", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the rule itself -------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [False, True])
def test_lint_strict_with_the_rule_on_and_off(helm: Helm, enabled: bool) -> None:
    values = helm.values_file(
        {"prometheusRule": {"enabled": enabled, "labels": {"release": "prometheus"}}}
    )
    out = helm.run("lint", "--strict", str(CHART_DIR), "--values", str(values)).stdout
    assert "0 chart(s) failed" in out, out


def test_rendered_only_when_enabled_with_the_selector_labels(helm: Helm) -> None:
    assert "PrometheusRule" not in helm.render({}).kinds()
    obj = rule(helm, {"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["metadata"]["labels"]["release"] == "prom"
    assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == "bs"
    names = [r["alert"] for group in obj["spec"]["groups"] for r in group["rules"]]
    assert names == list(ALERTS)


def test_rules_select_the_velero_namespace_and_take_the_thresholds(helm: Helm) -> None:
    values = {
        "namespace": "backups",
        "prometheusRule": {
            "enabled": True,
            "notSynced": {"periods": 4, "minimumSeconds": 600},
            "failing": {"runs": 5, "lookback": "6h"},
            "itemErrors": {"moreThan": 2},
            "notFinished": {"afterSeconds": 7200},
            "severity": "critical",
            "runbookUrl": "https://wiki.example.com/backup-sync",
        },
    }
    rules = {r["alert"]: r for g in rule(helm, values)["spec"]["groups"] for r in g["rules"]}
    for r in rules.values():
        assert 'namespace="backups"' in r["expr"] and 'namespace="velero"' not in r["expr"]
        assert r["labels"] == {"severity": "critical"}
        assert r["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/backup-sync#{r['alert'].lower()}"
        )
    assert "4 * (" in rules["BackupSyncLocationNotSynced"]["expr"]
    assert "600" in rules["BackupSyncLocationNotSynced"]["expr"]
    assert rules["BackupSyncLocationFailing"]["expr"].endswith("[6h:]) + 1 >= 5")
    assert rules["BackupSyncItemErrors"]["expr"].endswith("> 2")
    assert rules["BackupSyncRunNotFinished"]["for"] == "7200s"


def test_promtool_checks_the_rules(promtool: Path, rules_file: Path) -> None:
    proc = promtool_run(promtool, "check", "rules", str(rules_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


@pytest.fixture(scope="module")
def prometheusrule_crd(promtool: Path) -> Path:
    """The Prometheus Operator's PrometheusRule CRD, which the alert tools script fetches
    beside promtool (outside CI: now, when missing)."""
    path = cached_prometheusrule_crd()
    if not path.is_file() and not in_ci():
        subprocess.run(["bash", str(ALERT_TOOLS_SCRIPT)], stdout=subprocess.DEVNULL, check=False)
    if not path.is_file():
        message = f"{path} not found; run `make tools`"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.mark.integration
def test_rule_passes_server_side_validation_against_the_crd(
    control_plane: ControlPlane, helm: Helm, velero_namespace: str, prometheusrule_crd: Path
) -> None:
    """Created with dryRun=All and fieldValidation=Strict under the operator's own schema
    (which checks, e.g., the form of every `for`), here with every value set."""
    apply_crd_files(control_plane, [prometheusrule_crd])
    values = {
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "prometheus"},
            "failing": {"runs": 2, "lookback": "12h"},
            "notFinished": {"afterSeconds": 5400},
        }
    }
    obj = helm.render(values, namespace=velero_namespace).one("PrometheusRule")
    path = f"/apis/monitoring.coreos.com/v1/namespaces/{velero_namespace}/prometheusrules"
    status, body = control_plane.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)
    assert status == 201, body
    obj["spec"]["groups"][0]["rules"][-1]["for"] = "an hour"
    status, body = control_plane.request("POST", f"{path}?dryRun=All&fieldValidation=Strict", obj)
    assert status == 422 and "for" in body["message"], body


# --- each alert on the series a run pushes ---------------------------------------------------


def test_healthy_runs_raise_no_alert(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    world = Scenario(gateway, "main", "other")
    world.bucket("main").put_backup("b1")

    def new_backup(minute: int) -> None:
        world.bucket("main").put_backup(f"nightly-{minute}")

    world.play(180, new_backup)
    assert len(world.cluster.of(BACKUP, NS)) == 37
    promtool_test(promtool, rules_file, world, {m: {} for m in (1, 30, 61, 90, 179)}, tmp_path)


def test_a_failing_location_is_not_synced_then_failing_then_recovers(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    world = Scenario(gateway, "main", "other", "fresh")
    world.fail("fresh")  # never synced: failing from its first run
    world.play(10)  # main synced at 1 and 6
    world.fail("main")
    world.play(45)  # main failed at 11, 16, 21, 26, 31, 36, 41
    world.fail("main", False)
    world.play(50)  # synced at 46
    promtool_test(
        promtool,
        rules_file,
        world,
        {
            10: {},  # fresh failed twice
            12: {"BackupSyncLocationFailing": [failing("fresh", 3)]},
            20: {"BackupSyncLocationFailing": [failing("fresh", 4)]},  # main: twice
            22: {"BackupSyncLocationFailing": [failing("main", 3), failing("fresh", 5)]},
            # the last success, at minute 6, is 30 minutes (> 3 periods of 5m) old after 36
            36: {"BackupSyncLocationFailing": [failing("main", 6), failing("fresh", 8)]},
            37: {
                "BackupSyncLocationNotSynced": [not_synced("main", "31m 0s")],
                "BackupSyncLocationFailing": [failing("main", 6), failing("fresh", 8)],
            },
            47: {"BackupSyncLocationFailing": [failing("fresh", 10)]},  # main synced at 46
        },
        tmp_path,
    )


def test_failures_with_successes_between_are_not_in_a_row(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    """Two failures, a success, two failures …: more failures in the window than the
    threshold, never three in a row."""
    world = Scenario(gateway, "main")

    def flap(minute: int) -> None:
        world.fail("main", minute % 15 != 6)  # synced at 6, 21, 36, …; failed otherwise

    world.play(120, flap)
    promtool_test(promtool, rules_file, world, {m: {} for m in (5, 20, 35, 60, 95, 120)}, tmp_path)


def test_guard_holding_orphans_and_item_errors(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    world = Scenario(gateway, "main", "other")
    world.bucket("main").put_backup("b1")
    world.bucket("main").put_raw("broken", "velero-backup.json", b"{not json")
    world.bucket("main").put_raw("worse", "velero-backup.json", b"\x00")
    for i in range(12):
        world.cluster.add(BACKUP, cluster_backup(f"o{i:02}", "other"))
    world.play(30)
    promtool_test(
        promtool,
        rules_file,
        world,
        {
            0: {},
            # items failing, or orphans kept, are no failed location: synced all the same
            2: {
                "BackupSyncOrphansBlocked": [orphans_blocked("other", 12)],
                "BackupSyncItemErrors": [item_errors("main", 2)],
            },
            30: {
                "BackupSyncOrphansBlocked": [orphans_blocked("other", 12)],
                "BackupSyncItemErrors": [item_errors("main", 2)],
            },
        },
        tmp_path,
    )


def test_runs_killed_after_their_start_push(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    """Every run from minute 11 on dies after its start push: each pushes a newer start, so
    the alert must not wait for one start to age."""
    world = Scenario(gateway, "main")
    world.play(10)
    world.kill = True
    world.play(80)
    promtool_test(
        promtool,
        rules_file,
        world,
        {
            10: {},
            # 59 minutes without an end: pending; no location ran, so none failed, but the
            # last success grows old
            70: {"BackupSyncLocationNotSynced": [not_synced("main", "1h 4m 0s")]},
            72: {
                "BackupSyncLocationNotSynced": [not_synced("main", "1h 6m 0s")],
                "BackupSyncRunNotFinished": [not_finished("1970-01-01 01:11:00 +0000 UTC")],
            },
        },
        tmp_path,
    )


def test_a_first_run_that_never_ends(
    promtool: Path, rules_file: Path, gateway: Gateway, tmp_path: Path
) -> None:
    """A start and no end ever (a hung run: concurrencyPolicy Forbid starts no other)."""
    world = Scenario(gateway, "main")
    world.kill = True
    world.play(1)
    world.play(90, runs=False)
    promtool_test(
        promtool,
        rules_file,
        world,
        {
            60: {},
            62: {"BackupSyncRunNotFinished": [not_finished("1970-01-01 00:01:00 +0000 UTC")]},
        },
        tmp_path,
    )
