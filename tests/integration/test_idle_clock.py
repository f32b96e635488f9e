"""The idle clock read from Prometheus history (``Signals.last_demand_at``, promql.last_demand_term), so a
restarted scaler and a second replica answer the same; and missing series after demand, read by a scaler
with no memory of them, are SeriesVanishedError, not zero replicas.

Data: Deployment ``llama`` in ``ml``, two pods scraped every 15 s from T0; waiting + running is 10 per pod
until IDLE_AT, 0 after. Deployment ``gone`` has demand until GONE_AT, then its series end (not scaled to
zero: its data vanished).
"""

from __future__ import annotations

import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.errors import SeriesVanishedError
from scaler.policy import decide
from scaler.sources.prometheus import PrometheusSource
from simulations.exposition import PodMetrics

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
STEP = 15.0
IDLE_AT = T0 + 600
GONE_AT = T0 + 600
END = T0 + 1500
PODS = ["llama-7d9f8b6c5d-x2k4q", "llama-7d9f8b6c5d-x7m9p"]


def frames():
    pods = [PodMetrics.new(p, "ml", "llama") for p in PODS]
    gone = PodMetrics.new("gone-6c4d5f7b8-q2w4r", "ml", "llama")
    t = T0
    while t <= END:
        for p in pods:
            p.waiting, p.running = (4, 6) if t <= IDLE_AT else (0, 0)
            p.kv_cache_usage = 0.3
        gone.waiting, gone.running, gone.kv_cache_usage = 3, 5, 0.3
        yield t, pods + ([gone] if t <= GONE_AT else [])
        t += STEP


@pytest.fixture(scope="module")
def prom(module_backfilled_prometheus):
    return module_backfilled_prometheus(frames())


def cfg(url, name="llama", **md):
    return parse_metadata({"scaleToZeroAfter": "300", **md}, scaled_object=name, namespace="ml",
                          defaults=ServerDefaults(prometheus_url=url))


@pytest.mark.parametrize("threshold", ["0", "5"])   # the shared per-pod term, and a target's own term
def test_last_demand_is_read_from_history(prom, threshold):
    c = cfg(prom.url, activationThreshold=threshold)
    now = IDLE_AT + 100
    s = PrometheusSource(prom.url, timeout=10).fetch([c], now)[c.target_key]
    assert s.pods_reporting == 2 and s.demand == 0
    # The last step with demand: the IDLE_AT sample is the newest until the next scrape, 15 s later.
    assert IDLE_AT <= s.last_demand_at <= IDLE_AT + STEP, s.last_demand_at - IDLE_AT
    # Idle over the whole lookback: the first step with data, at or before now - scaleToZeroAfter.
    later = IDLE_AT + 400
    s2 = PrometheusSource(prom.url, timeout=10).fetch([c], later)[c.target_key]
    assert later - 300 - 5 <= s2.last_demand_at <= later - 300


@pytest.mark.parametrize("policy", ["reactive", "predictive"])
def test_restarted_and_second_replica_answer_as_the_long_running_one(prom, policy):
    """A target idle for longer than scaleToZeroAfter: a scaler with no state (restarted, or a second replica)
    answers inactive at once, as the one that watched it go idle does; before the idle clock was read from
    history, the restarted one started its own clock and answered active for scaleToZeroAfter."""
    c = cfg(prom.url, policy=policy, forecast="none")
    long_running = PrometheusSource(prom.url, timeout=10)
    state = None
    t = IDLE_AT - 60
    while t <= IDLE_AT + 330:
        d = decide(long_running.fetch([c], t)[c.target_key], state, c, t)
        state = d.next_state
        t += 5
    assert d.active is False
    for now in (t, t + 2):   # a restarted replica, and a second one asking 2 s later
        s = PrometheusSource(prom.url, timeout=10).fetch([c], now)[c.target_key]
        fresh = decide(s, None, c, now)
        assert fresh.active is False and fresh.desired == d.desired, fresh.reasons
    # While demand is recent, a fresh replica is active and reads the same idle time as the long-running one.
    now = IDLE_AT + 120
    a = decide(PrometheusSource(prom.url, timeout=10).fetch([c], now)[c.target_key], None, c, now)
    assert a.active is True and "idle for" in a.reasons[1], a.reasons


def test_vanished_series_after_demand_are_not_zero_replicas_for_a_scaler_without_memory(prom):
    c = cfg(prom.url, name="gone", scaleToZeroAfter="600")
    now = GONE_AT + 400           # beyond the 5-minute lookback: no series at all now
    out = PrometheusSource(prom.url, timeout=10).fetch([c], now)[c.target_key]
    assert isinstance(out, SeriesVanishedError), out
    # Once the history holds no demand within scaleToZeroAfter, it is a Deployment at zero replicas.
    late = GONE_AT + 300 + 600 + 30
    s = PrometheusSource(prom.url, timeout=10).fetch([c], late)[c.target_key]
    assert s.pods_reporting == 0 and s.waiting is None
