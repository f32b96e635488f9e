"""The fault matrix: a fault-injecting proxy (scaler/testing/faultproxy.py) in front of a real Prometheus, the
server's real refresh path (TargetStore, Refresher, PrometheusSource, decide) on a virtual clock, both
policies. Every fault, then recovery: no zero answer, no inactive answer, no answer below the last good
one (a scale-down), and no answer above it (a surge read from a window spanning the gap: without the
source's hold after a gap, the predictive target answered 4 against 3 for the rest of the run).

Data: Deployment ``llama`` in namespace ``inference``, three pods with a steady load (per pod 4 waiting,
20 running, KV 0.5, 1 request/s finishing), scraped every 15 s, with a scrape gap of GAP seconds inside
the fault (Prometheus was down: no samples, counters continue after it). The healthy answer is constant.

Bounded in time: the virtual clock steps 5 s per poll; the ``delay`` fault (10 s at the proxy) costs the
source's 0.3 s timeout per poll, not 10 s.
"""

from __future__ import annotations

import pytest

from scaler.config import ServerDefaults
from scaler.errors import Unavailable
from scaler.server.refresher import Refresher
from scaler.server.targets import TargetStore
from scaler.sources.prometheus import PrometheusSource
from scaler.testing.faultproxy import FaultProxy
from scaler.testing.promserver import PrometheusServer
from simulations.exposition import PodMetrics

pytestmark = pytest.mark.integration

NS = "inference"
STEP = 15.0
T0 = 1_700_000_000.0
HEALTHY, FAULT, RECOVERY, POLL = 180.0, 80.0, 140.0, 5.0
F0 = T0 + 120 + HEALTHY                      # fault starts
GAP = (F0 + 10, F0 + FAULT)                  # no samples in Prometheus inside the fault
END = F0 + FAULT + RECOVERY
PODS = [f"llama-7f9c8d6b5-x2k4{c}" for c in "bcd"]
MD = {"refreshInterval": "5", "maxStaleness": "60", "window": "60", "scaleToZeroAfter": "120",
      "capacityPerReplica": "1.2", "minReplicas": "0"}
# "scrape-gap": no fault at the proxy, only the gap in the data (Prometheus stopped scraping for a while).
FAULTS = ["killed", "http500", "delay", "nan", "garbage", "empty", "restart-empty", "scrape-gap"]


def frames():
    pods = [PodMetrics.new(p, NS, "meta/llama") for p in PODS]
    t = T0
    while t <= END + STEP:
        for p in pods:
            p.waiting, p.running, p.kv_cache_usage = 4, 20, 0.5
            done = 15    # 1 request/s per pod
            p.ttft.observe(0.3, done)
            p.itl.observe(0.02, done * 50)
            p.request_prompt_tokens.observe(500, done)
            p.request_generation_tokens.observe(100, done)
            p.request_success_total["stop"] = p.request_success_total.get("stop", 0) + done
        if not GAP[0] < t < GAP[1]:
            yield t, pods
        t += STEP


@pytest.fixture(scope="module")
def proms(module_backfilled_prometheus):
    full = module_backfilled_prometheus(frames())
    with PrometheusServer() as empty:
        yield full, empty


POLICIES = ("reactive", "predictive")


def run(fault: str, full: PrometheusServer, empty: PrometheusServer) -> dict:
    """Healthy, fault, recovery on a virtual clock, one target per policy (one shared fetch per poll);
    returns the counts and the answers per policy."""
    with FaultProxy(full.url, delay=10.0) as proxy:
        store = TargetStore(ServerDefaults(prometheus_url=proxy.url))
        refresher = Refresher(store, lambda url: PrometheusSource(url, timeout=0.3), clock=lambda: now)
        now = T0 + 120
        targets = {p: store.resolve("llama", NS, {**MD, "policy": p}, now) for p in POLICIES}
        answers: dict[str, list] = {p: [] for p in POLICIES}
        good_before = {}
        while now <= END:
            if now == F0:
                good_before = {p: t.current(now).desired for p, t in targets.items()}
                if fault == "killed":
                    proxy.kill()
                elif fault == "restart-empty":
                    proxy.upstream = empty.url
                elif fault != "scrape-gap":
                    proxy.fault = fault
            if now == F0 + FAULT:
                if fault == "killed":
                    proxy.revive()
                proxy.fault, proxy.upstream = None, full.url
            refresher.refresh_due(now)
            for p, target in targets.items():
                try:
                    d = target.current(now)
                    answers[p].append((now, d.desired, d.active))
                except Unavailable:
                    answers[p].append((now, "UNAVAILABLE", None))
            now += POLL
        refresher.stop()
    out = {}
    for p in POLICIES:
        after = [a for a in answers[p] if a[0] >= F0]
        served = [a for a in after if a[1] != "UNAVAILABLE"]
        base = good_before[p]
        out[p] = {
            "baseline": base,
            "zero": sum(1 for a in served if a[1] == 0),
            "inactive": sum(1 for a in served if a[2] is False),
            "below": sum(1 for a in served if a[1] < base),
            "above": sum(1 for a in served if a[1] > base),
            "unavailable": sum(1 for a in after if a[1] == "UNAVAILABLE"),
            "served_after_recovery": sum(1 for a in served if a[0] >= F0 + FAULT),
            "errors": dict(targets[p].error_counts),
            "answers": answers[p],
        }
    return out


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_matrix(proms, fault):
    full, empty = proms
    result = run(fault, full, empty)
    for policy, r in result.items():
        summary = {k: r[k] for k in ("baseline", "zero", "inactive", "below", "above", "unavailable",
                                     "served_after_recovery")}
        print(fault, policy, summary)
        assert r["baseline"] and r["baseline"] > 0, (policy, r["answers"][:5])
        assert (r["zero"], r["inactive"], r["below"], r["above"]) == (0, 0, 0, 0), (policy, summary, r["answers"])
        # The fault is visible (held, then UNAVAILABLE), and the target answers again after recovery.
        assert r["unavailable"] > 0, (policy, summary)
        assert r["served_after_recovery"] > 0, (policy, summary)
