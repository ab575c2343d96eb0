"""Issue 15 § 5: the Prometheus alert rules and the Grafana dashboard in docs/ops/ read
series the server really exports, parse, and (with ``promtool``, from Debian's
``prometheus`` package; .ci/run fetches it) fire as their unit tests say."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatserver.observability import Metrics
from tests.conftest import ROOT, require

OPS = ROOT / "docs" / "ops"
RULES = OPS / "prometheus-alerts.yml"
RULE_TESTS = OPS / "prometheus-alerts.test.yml"
DASHBOARD = OPS / "grafana-safeguarding.json"
SERIES = re.compile(r"\bchat_[a-z_]+")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1d", "$profile": ".*"}


def exported() -> set[str]:
    """Every series name the server's registry can export."""
    from chatserver.core.node import Waiting

    metrics = Metrics()
    metrics.watch(lambda: Waiting({}, {}))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    return {family.name + s for family in metrics.registry.collect()
            for s in suffixes.get(family.type, ("",))}


def promtool() -> str | None:
    return shutil.which("promtool") or shutil.which(
        "promtool", path=str(Path(sys.executable).parent))


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [str(rule["expr"]) for group in doc["groups"] for rule in group["rules"]]


def dashboard_targets(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield from panel.get("targets", [])
        yield from dashboard_targets(panel.get("panels", []))


def test_the_alert_rules_name_the_two_safeguarding_alerts_and_real_series() -> None:
    doc = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"]}
    assert {"HeldMessageWaiting", "EmergencyCaseUnclaimed"} <= set(alerts)
    assert "chat_held_oldest_seconds" in alerts["HeldMessageWaiting"]["expr"]
    assert 'urgency="emergency"' in alerts["EmergencyCaseUnclaimed"]["expr"]
    names = exported()
    for expr in rule_exprs():
        for series in SERIES.findall(expr):
            assert series in names, f"{series} is not exported by the server"


def test_the_dashboard_reads_only_exported_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    targets = list(dashboard_targets(dashboard["panels"]))
    assert len(targets) >= 8
    names, used = exported(), set()
    for target in targets:
        assert target["datasource"]["uid"] == "${datasource}"
        used |= set(SERIES.findall(target["expr"]))
    assert used <= names, used - names
    # Every safeguarding series is on the dashboard.
    assert {"chat_held_decision_seconds_bucket", "chat_case_claim_seconds_bucket",
            "chat_alert_ack_seconds_bucket", "chat_unanswered_posts_total",
            "chat_signposts_total", "chat_held_oldest_seconds",
            "chat_case_oldest_unclaimed_seconds"} <= used


def test_promtool_checks_the_rules_their_tests_and_the_dashboards_queries(
        tmp_path: Path) -> None:
    tool = promtool()
    require(tool is not None, "promtool not installed (Debian package prometheus)")
    assert tool is not None
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    # The dashboard's PromQL, Grafana's variables filled in, parsed by Prometheus's own
    # parser as recording rules.
    exprs = []
    for target in dashboard_targets(json.loads(DASHBOARD.read_text())["panels"]):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        exprs.append(expr)
    rules = tmp_path / "dashboard.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    done = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", [RULES, RULE_TESTS])
def test_the_rule_files_are_yaml(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)
