"""The alert rules and the Grafana dashboard of helm/intygstjanst, checked offline with promtool.

- the rule file passes `promtool check rules`, and its unit tests (alerts/tests.yaml) pass
  `promtool test rules`; every alert there has a case where it fires and one where it stays quiet;
- every rule carries a severity and a summary and description, and no label that could hold an id;
- every dashboard query is valid PromQL (each becomes a recording rule of a generated rule file that
  promtool checks), and returns a series on the data of a service that has had a little traffic (a
  generated promtool test: an `absent()` alert per query must stay quiet);
- every intyg_* metric the rules and the dashboard read is one the service exposes (service/metrics.py).

promtool comes with Debian's `prometheus` package (`bash tools/install-ops-tools`); the tests that need
it are skipped with that reason where it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "intygstjanst"
RULES = CHART / "alerts" / "intygstjanst-rules.yaml"
RULE_TESTS = CHART / "alerts" / "tests.yaml"
DASHBOARD = CHART / "dashboards" / "intygstjanst.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not on PATH: run `bash tools/install-ops-tools` (Debian package prometheus)",
)

# The metrics the service exposes (the issue's contract), as sample names.
COUNTERS = {
    "intyg_requests_total",
    "intyg_certificates_registered_total",
    "intyg_certificates_revoked_total",
    "intyg_certificates_archived_total",
    "intyg_certificates_restored_total",
    "intyg_certificates_sent_total",
    "intyg_care_copies_removed_total",
    "intyg_certificates_exported_total",
    "intyg_certificates_deleted_total",
    "intyg_consent_changes_total",
    "intyg_refusals_total",
    "intyg_audit_write_failures_total",
    "intyg_db_statements_total",
    "intyg_outbox_published_total",
    "intyg_outbox_publish_failures_total",
    "intyg_outbox_dead_lettered_total",
}
HISTOGRAMS = {"intyg_request_duration_seconds", "intyg_audit_seal_lag_seconds"}
GAUGES = {
    "intyg_requests_in_flight",
    "intyg_certificates_stored",
    "intyg_citizens_with_consent",
    "intyg_audit_records",
    "intyg_audit_last_write_timestamp_seconds",
    "intyg_audit_unsealed_records",
    "intyg_audit_unsealed_oldest_age_seconds",
    "intyg_audit_sealer_elected",
    "intyg_db_pool_in_use",
    "intyg_db_pool_size",
    "intyg_build_info",
    "intyg_outbox_pending_events",
    "intyg_outbox_oldest_pending_age_seconds",
    "intyg_outbox_dead_events",
    "intyg_outbox_relay_elected",
}
CONTRACT = COUNTERS | GAUGES | {h + s for h in HISTOGRAMS for s in ("_bucket", "_count", "_sum")}
# Label names an alert may carry: never one that could hold a person, certificate or care unit id.
ALLOWED_RULE_LABELS = {"severity", "service"}

Rule = dict[str, Any]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def alert_rules() -> list[Rule]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text("utf-8")))


def panels() -> list[dict[str, Any]]:
    """Every panel but rows, nested ones (collapsed rows) included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def dashboard_queries() -> dict[str, str]:
    """Recording-rule name (dashboard:panel_<id>:<refId>) -> the query."""
    return {
        f"dashboard:panel_{p['id']}:{t['refId']}": t["expr"]
        for p in panels()
        for t in p["targets"]
        if t.get("expr")
    }


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


# --- the rule file and its unit tests --------------------------------------------------------------


@needs_promtool
def test_rule_file_passes_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout + done.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_unit_tests_use_the_rule_file() -> None:
    assert load_yaml(RULE_TESTS)["rule_files"] == [RULES.name]


def test_every_alert_has_a_firing_and_a_quiet_test_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_alerts_carry_severity_and_annotations_and_no_ids() -> None:
    rules = alert_rules()
    assert len(rules) >= 7
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert set(rule["labels"]) <= ALLOWED_RULE_LABELS, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        # Aggregations keep only deployment-level labels (and operation or rule, which are names).
        for group_by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            assert {g.strip() for g in group_by.split(",")} <= {"job", "namespace", "operation", "rule", "le"}


def test_the_issues_alerts_are_there() -> None:
    """Error ratio, latency SLO burn, service down, database down, audit failures and lag, deletion spike,
    an outbox that is not published and events given up on."""
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    needed = {
        "IntygstjanstHighErrorRatio": "intyg_requests_total",
        "IntygstjanstLatencySLOFastBurn": "intyg_request_duration_seconds_bucket",
        "IntygstjanstLatencySLOSlowBurn": "intyg_request_duration_seconds_bucket",
        "IntygstjanstDown": "absent(up",
        "IntygstjanstDatabaseUnavailable": "technical_error",
        "IntygstjanstAuditWriteFailures": "intyg_audit_write_failures_total",
        "IntygstjanstAuditLag": "time() - ",
        "IntygstjanstAuditSealLag": "intyg_audit_unsealed_oldest_age_seconds",
        "IntygstjanstDeletionSpike": "increase(intyg_certificates_deleted_total[10m])",
        "IntygstjanstOutboxStuck": "intyg_outbox_oldest_pending_age_seconds",
        "IntygstjanstOutboxDeadLetters": "intyg_outbox_dead_events",
    }
    for alert, fragment in needed.items():
        assert fragment in exprs[alert], alert


# --- the dashboard -----------------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "intygstjanst"
    assert board["schemaVersion"] >= 36  # Grafana 10 and later
    [variable] = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]] + [q["id"] for p in board["panels"] for q in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["targets"], where
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["expr"].strip(), where
            assert "$" not in target["expr"], f"{where}: queries run as they are, without Grafana variables"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, where


def test_dashboard_covers_the_overview() -> None:
    """Traffic, errors, latency quantiles, in-flight, deletions, consent, refusals, pool, audit lag, stock,
    the outbox's depth, age and publish failures."""
    exprs = "\n".join(dashboard_queries().values())
    for needed in (
        "sum by (operation) (rate(intyg_requests_total[5m]))",
        'outcome=~"technical_error|server_error"',
        "histogram_quantile(0.5, sum by (operation, le) (rate(intyg_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.95, sum by (operation, le) (rate(intyg_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.99, sum by (operation, le) (rate(intyg_request_duration_seconds_bucket[5m])))",
        "intyg_requests_in_flight",
        "sum by (rule) (increase(intyg_certificates_deleted_total",
        "intyg_consent_changes_total",
        "sum by (reason) (rate(intyg_refusals_total",
        "intyg_db_pool_in_use",
        "intyg_db_pool_size",
        "time() - max(intyg_audit_last_write_timestamp_seconds",
        "max(intyg_audit_unsealed_oldest_age_seconds)",
        "histogram_quantile(0.99, sum by (le) (rate(intyg_audit_seal_lag_seconds_bucket[5m])))",
        "sum by (care_available, citizen_available) (intyg_certificates_stored)",
        "max by (destination) (intyg_outbox_pending_events)",
        "max(intyg_outbox_oldest_pending_age_seconds)",
        "sum by (reason) (rate(intyg_outbox_publish_failures_total[5m]))",
    ):
        assert needed in exprs, needed


def test_rules_and_dashboard_read_only_exposed_metrics() -> None:
    queries = [*dashboard_queries().values(), *(r["expr"] for r in alert_rules())]
    used = {name for q in queries for name in re.findall(r"\bintyg_[a-z_]+\b", q)}
    assert used - CONTRACT == set(), "metrics the service does not expose"
    # Each query of a metric that has labels only once something happened must still return a series.
    for query in dashboard_queries().values():
        for counter in (
            "deleted",
            "consent_changes",
            "refusals",
            "registered",
            "sent",
            "outbox_published",
            "outbox_publish_failures",
            "outbox_dead_lettered",
        ):
            if re.search(rf"\bintyg_(certificates_)?{counter}_total\b", query):
                assert query.endswith("or on() vector(0)"), query


def test_the_service_exposes_the_contract() -> None:
    """service/metrics.py registers every metric the rules and the dashboard are written against."""
    prometheus_client = pytest.importorskip("prometheus_client")
    pytest.importorskip("service.metrics")
    exposed: set[str] = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.type == "counter":
            exposed.add(f"{family.name}_total")
        elif family.type == "histogram":
            exposed.update(f"{family.name}{s}" for s in ("_bucket", "_count", "_sum"))
        else:
            exposed.add(family.name)
    assert CONTRACT - exposed == set()


# --- the dashboard's queries, through promtool ---------------------------------------------------------


def write_query_rules(path: Path, queries: dict[str, str], *, absent_alerts: bool) -> None:
    rules: list[Rule] = []
    for record, expr in queries.items():
        rules.append({"record": record, "expr": expr})
        if absent_alerts:
            rules.append({"alert": "empty_" + record.replace(":", "_"), "expr": f"absent({record})"})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query becomes a recording rule: promtool parses and checks every one."""
    queries = dashboard_queries()
    assert len(queries) >= 20
    write_query_rules(tmp_path / "dashboard.yaml", queries, absent_alerts=False)
    done = promtool("check", "rules", str(tmp_path / "dashboard.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout + done.stderr


@needs_promtool
def test_the_promql_check_catches_a_bad_query(tmp_path: Path) -> None:
    write_query_rules(
        tmp_path / "bad.yaml", {"dashboard:bad": "sum by (rule (rate(x[5m]))"}, absent_alerts=False
    )
    assert promtool("check", "rules", str(tmp_path / "bad.yaml")).returncode != 0


# What Prometheus holds after a few minutes of light traffic: a handful of successful SOAP and REST
# requests, nothing deleted, no consent change, no refusal (labelled counters with no child yet are not
# exposed at all), unlabelled counters at 0, the gauges set.
LITTLE_TRAFFIC = [
    ('up{job="intygstjanst", instance="i:8080"}', "1x30"),
    (
        'intyg_requests_total{job="intygstjanst", instance="i:8080", operation="ListCertificatesForCare:3", channel="soap", outcome="ok"}',
        "0+2x30",
    ),
    (
        'intyg_requests_total{job="intygstjanst", instance="i:8080", operation="GET /api/v1/certificates", channel="rest", outcome="ok"}',
        "0+1x30",
    ),
    *(
        (
            f'intyg_request_duration_seconds_bucket{{job="intygstjanst", instance="i:8080", operation="ListCertificatesForCare:3", channel="soap", le="{le}"}}',
            f"0+{n}x30",
        )
        for le, n in (("0.005", 0), ("0.01", 1), ("0.025", 2), ("+Inf", 2))
    ),
    (
        'intyg_request_duration_seconds_count{job="intygstjanst", instance="i:8080", operation="ListCertificatesForCare:3", channel="soap"}',
        "0+2x30",
    ),
    (
        'intyg_request_duration_seconds_sum{job="intygstjanst", instance="i:8080", operation="ListCertificatesForCare:3", channel="soap"}',
        "0+0.02x30",
    ),
    *(
        (
            f'intyg_request_duration_seconds_bucket{{job="intygstjanst", instance="i:8080", operation="GET /api/v1/certificates", channel="rest", le="{le}"}}',
            f"0+{n}x30",
        )
        for le, n in (("0.005", 1), ("+Inf", 1))
    ),
    (
        'intyg_request_duration_seconds_count{job="intygstjanst", instance="i:8080", operation="GET /api/v1/certificates", channel="rest"}',
        "0+1x30",
    ),
    ('intyg_requests_in_flight{job="intygstjanst", instance="i:8080", channel="soap"}', "0x30"),
    ('intyg_requests_in_flight{job="intygstjanst", instance="i:8080", channel="rest"}', "0x30"),
    *(
        (f'intyg_{name}_total{{job="intygstjanst", instance="i:8080"}}', "0x30")
        for name in (
            "certificates_revoked",
            "certificates_archived",
            "certificates_restored",
            "care_copies_removed",
            "audit_write_failures",
        )
    ),
    (
        'intyg_certificates_stored{job="intygstjanst", instance="i:8080", care_available="true", citizen_available="true"}',
        "5x30",
    ),
    ('intyg_citizens_with_consent{job="intygstjanst", instance="i:8080"}', "1x30"),
    ('intyg_audit_records{job="intygstjanst", instance="i:8080"}', "0+3x30"),
    ('intyg_audit_last_write_timestamp_seconds{job="intygstjanst", instance="i:8080"}', "0+60x30"),
    ('intyg_audit_unsealed_records{job="intygstjanst", instance="i:8080"}', "2x30"),
    ('intyg_audit_unsealed_oldest_age_seconds{job="intygstjanst", instance="i:8080"}', "0.1x30"),
    ('intyg_audit_sealer_elected{job="intygstjanst", instance="i:8080"}', "1x30"),
    *(
        (
            f'intyg_audit_seal_lag_seconds_bucket{{job="intygstjanst", instance="i:8080", le="{le}"}}',
            f"0+{n}x30",
        )
        for le, n in (("0.1", 2), ("0.25", 3), ("+Inf", 3))
    ),
    ('intyg_db_pool_in_use{job="intygstjanst", instance="i:8080"}', "0x30"),
    ('intyg_db_pool_size{job="intygstjanst", instance="i:8080"}', "10x30"),
    ('intyg_build_info{job="intygstjanst", instance="i:8080", version="0.1.0"}', "1x30"),
    ('intyg_outbox_pending_events{job="intygstjanst", instance="i:8080", destination="FKASSA"}', "0x30"),
    ('intyg_outbox_pending_events{job="intygstjanst", instance="i:8080", destination="statistics"}', "1x30"),
    ('intyg_outbox_dead_events{job="intygstjanst", instance="i:8080", destination="FKASSA"}', "0x30"),
    ('intyg_outbox_oldest_pending_age_seconds{job="intygstjanst", instance="i:8080"}', "0.2x30"),
    ('intyg_outbox_relay_elected{job="intygstjanst", instance="i:8080"}', "1x30"),
]


@needs_promtool
def test_dashboard_queries_return_series_after_a_little_traffic(tmp_path: Path) -> None:
    """For each query an alert absent(<its recording rule>) must stay quiet: the query has a series.
    A control query that only has data once something was deleted must make its alert fire."""
    queries = dashboard_queries()
    control = "dashboard:control"
    write_query_rules(
        tmp_path / "dashboard.yaml",
        {**queries, control: "sum(rate(intyg_certificates_deleted_total[5m]))"},
        absent_alerts=True,
    )
    checks: list[dict[str, Any]] = [
        {"eval_time": "20m", "alertname": "empty_" + record.replace(":", "_"), "exp_alerts": []}
        for record in queries
    ]
    checks.append(
        {"eval_time": "20m", "alertname": "empty_dashboard_control", "exp_alerts": [{"exp_labels": {}}]}
    )
    unit_tests = {
        "rule_files": ["dashboard.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in LITTLE_TRAFFIC],
                "alert_rule_test": checks,
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(unit_tests, sort_keys=False), "utf-8")
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
