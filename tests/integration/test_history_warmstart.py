"""Warm start from a real Prometheus: recorded vLLM and kube-state-metrics series are backfilled with promtool,
read back by the history readers, and two scaler replicas reach the same decision from them."""

from __future__ import annotations

import math

import pytest

from scaler.config import parse_metadata
from scaler.forecast import RING, STEP
from scaler.policy import decide
from scaler.signals import Signals
from scaler.sources.history import DemandHistoryReader, KubeStateColdStartReader
from scaler.testing.promserver import PrometheusServer, load_openmetrics, prometheus_available

pytestmark = pytest.mark.integration

END = 1_763_640_000.0  # 2025-11-20T12:00:00Z, minute-aligned
START = END - (RING + 30) * STEP
SCRAPE = 15.0
PODS = ("llama-7c9d8f6b5-a1b2c", "llama-7c9d8f6b5-d3e4f")


def rate(t: float) -> float:
    """Fleet request rate (req/s): a daily cycle plus a ramp in the last hour."""
    base = 6 + 4 * math.sin(2 * math.pi * (t - START) / 86400)
    return base + max(0.0, (t - (END - 3600)) / 600)


def openmetrics() -> str:
    lines = ["# TYPE vllm:request_success counter"]
    counts = {p: 0.0 for p in PODS}
    t = START
    samples = []
    while t <= END:
        for pod in PODS:
            counts[pod] += rate(t) * SCRAPE / 2
            samples.append((pod, counts[pod], t))
        t += SCRAPE
    for pod in PODS:
        for p, v, ts in samples:
            if p == pod:
                lines.append(f'vllm:request_success_total{{namespace="ml",pod="{pod}",model_name="llama",'
                             f'engine="0",finished_reason="stop"}} {v:.3f} {ts:.3f}')
    # kube-state-metrics: four pods of the Deployment (one restarted), and one of another Deployment.
    ksm = [("llama-7c9d8f6b5-a1b2c", END - 7200, END - 7200 + 150, 0),
           ("llama-7c9d8f6b5-d3e4f", END - 5400, END - 5400 + 180, 0),
           ("llama-7c9d8f6b5-g5h6i", END - 3600, END - 3600 + 120, 0),
           ("llama-7c9d8f6b5-m9n0p", END - 9000, END - 600, 2),
           ("mistral-5d6f7a8b9-zz111", END - 3000, END - 3000 + 900, 0)]
    for fam, idx in (("kube_pod_created", 1), ("kube_pod_status_ready_time", 2),
                     ("kube_pod_container_status_restarts_total", 3)):
        kind = "counter" if fam.endswith("_total") else "gauge"
        name = fam[:-len("_total")] if kind == "counter" else fam
        lines.append(f"# TYPE {name} {kind}")
        for row in ksm:
            labels = f'namespace="ml",pod="{row[0]}",uid="uid-{row[0]}"'
            if kind == "counter":
                labels += ',container="vllm"'
            for ts in (END - 240, END - 120, END):
                lines.append(f"{fam}{{{labels}}} {row[idx]:.0f} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    reason = prometheus_available()
    if reason:
        pytest.skip(reason)
    tsdb = tmp_path_factory.mktemp("tsdb")
    load_openmetrics(openmetrics(), tsdb)
    with PrometheusServer(tsdb_dir=tsdb) as server:
        yield server


def cfg(url, **md):
    md = {"policy": "predictive", "prometheusAddress": url, "capacityPerReplica": "2", "coldStart": "180", **md}
    return parse_metadata(md, scaled_object="llama", namespace="ml")


def test_demand_history_is_the_recorded_rate(prom) -> None:
    c = cfg(prom.url)
    points = DemandHistoryReader(timeout=10).history(c, END)
    assert len(points) >= RING - 2
    assert all(p[0] % STEP == 0 for p in points)             # aligned steps: the same on every replica
    for t, v in points[5::97]:
        assert v == pytest.approx(rate(t - 30), rel=0.05, abs=0.05)


def test_two_replicas_and_a_restart_reach_the_same_decision(prom) -> None:
    c = cfg(prom.url)
    live = Signals(observed_at=END, pods_reporting=2, arrival_rate=rate(END), running=30, waiting=1)
    # Replica A has run for ten minutes, enriched every minute by its own reader.
    reader_a = DemandHistoryReader(timeout=10)
    state_a = None
    for i in range(10, -1, -1):
        t = END - i * STEP
        s = reader_a.enrich(Signals(observed_at=t, pods_reporting=2, arrival_rate=rate(t), running=30, waiting=1),
                            c, t)
        d_a = decide(s, state_a, c, t)
        state_a = d_a.next_state
    # Replica B starts now and asks 20 s later within the same minute; replica C starts at the same time as A's
    # last call. Same points -> the same forecaster state, bit for bit.
    s_b = DemandHistoryReader(timeout=10).enrich(live, c, END + 20)
    s_c = DemandHistoryReader(timeout=10).enrich(live, c, END)
    assert s_b.demand_history == s_c.demand_history
    d_b, d_c = decide(s_b, None, c, END + 20), decide(s_c, None, c, END)
    assert d_b.next_state.extra["forecast"] == d_c.next_state.extra["forecast"]
    # The long-running replica agrees on the decision and, to float precision, on the forecast.
    assert d_a.desired == d_c.desired and d_a.dominant == d_c.dominant
    assert d_a.inputs["forecast_rate"] == pytest.approx(d_c.inputs["forecast_rate"], rel=1e-6)
    assert d_a.inputs["forecast_upper"] == pytest.approx(d_c.inputs["forecast_upper"], rel=1e-3)
    # The ramp of the last hour is seen: the forecast at now + H is above the rate now.
    assert d_c.inputs["forecast_rate"] > rate(END)


def test_cold_start_from_kube_state_metrics(prom) -> None:
    c = parse_metadata({"policy": "predictive", "prometheusAddress": prom.url}, scaled_object="llama", namespace="ml")
    s = KubeStateColdStartReader(timeout=10).enrich(Signals(observed_at=END, pods_reporting=2), c, END)
    # 150, 180, 120 s (the restarted pod and the other Deployment's pod are not counted).
    assert s.cold_start.source == "kube-state-metrics" and s.cold_start.samples == 3
    assert s.cold_start.p50 == pytest.approx(150) and s.cold_start.p90 == pytest.approx(174)
    d = decide(s, None, c, END)
    assert d.inputs["horizon_s"] == pytest.approx(174 + 45)
    assert any("from kube-state-metrics, 3 samples" in r for r in d.reasons)
