"""The Grafana dashboard (deploy/monitoring/grafana-dashboard.json) asks only for what the scaler exports.

Metric names come from the server's own registry (``scaler.server.metrics.ScalerMetrics``, rendered with
prometheus-client), label values from the code that produces them (``Signals`` fields, the policy's term and
input names), so a renamed metric or term breaks this test instead of leaving an empty panel.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re

import pytest
from deploy_render import DEPLOY, REPO

DASHBOARD = DEPLOY / "monitoring" / "grafana-dashboard.json"


def exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    return out


def exported() -> tuple[set[str], set[str]]:
    """(sample names, label names) the scaler's /metrics can carry."""
    if importlib.util.find_spec("scaler.server.metrics") is None:
        pytest.skip("scaler.server.metrics is not in this tree yet")
    from prometheus_client import generate_latest

    from scaler.config import ServerDefaults
    from scaler.server.metrics import TARGET_LABELS, ScalerMetrics
    from scaler.server.targets import TargetStore

    metrics = ScalerMetrics(TargetStore(ServerDefaults()), clock=lambda: 0.0, open_streams=lambda: 0)
    names: set[str] = set()
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
    labels = set(TARGET_LABELS) | {"term", "input", "signal", "source", "kind", "method", "code", "le"}
    return names, labels


def test_dashboard_is_valid_grafana_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("desired", "term", "forecast", "data age"):   # decisions, terms, forecast and data age
        assert topic in titles, topic


def test_dashboard_metrics_and_labels_exist() -> None:
    names, labels = exported()
    for expr in exprs():
        used = set(re.findall(r"\bvllm_scaler_\w+", expr))
        assert used, expr
        assert used <= names, f"{sorted(used - names)} not exported by the scaler (expr: {expr})"
        for matcher in re.findall(r"[{,]\s*(\w+)\s*=~?", expr):
            assert matcher in labels, f"label {matcher!r} in {expr}"
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= labels, expr


def test_dashboard_label_values_are_produced_by_the_code() -> None:
    from scaler.signals import Signals

    # What scaler.server.metrics.signal_values exports: the numeric Signals fields, cold_start split in two.
    signals = {f.name for f in dataclasses.fields(Signals)} - {"observed_at", "cold_start", "demand_history",
                                                               "metric_names"}
    signals |= {"cold_start_p50", "cold_start_p90"}
    policy_source = (REPO / "scaler" / "policy.py").read_text()
    for expr in exprs():
        for label, values in re.findall(r'(signal|input|term)=~?"([^"]+)"', expr):
            for value in values.split("|"):
                if label == "signal":
                    assert value in signals, f"signal {value!r} is not a Signals field ({expr})"
                else:   # written as a dict key or a keyword of inputs.update(...) in the policy
                    assert f'"{value}"' in policy_source or f"{value}=" in policy_source, \
                        f"{label} {value!r} does not appear in scaler/policy.py"
