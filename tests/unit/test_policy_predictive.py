"""The predictive policy: worked example, named table cases, supply on the way, scale-down over the
horizon, forecast wake-up from zero, and the same decision after a restart."""

import math
from dataclasses import replace

import pytest

from scaler.config import parse_metadata
from scaler.forecast import SEASON, STEP, DemandForecaster
from scaler.policy import PolicyState, decide
from scaler.signals import ColdStart, Signals

NOW = float(1_700_000_000 - 1_700_000_000 % 86400 + 12 * 3600)  # noon UTC, minute-aligned


def cfg(**md):
    md.setdefault("policy", "predictive")
    return parse_metadata({k: str(v) for k, v in md.items()}, scaled_object="llama", namespace="ml")


def sig(**kw):
    kw.setdefault("observed_at", NOW)
    kw.setdefault("pods_reporting", 3)
    return Signals(**kw)


def flat(rate, minutes=10, end=NOW):
    """A forecaster that has seen `rate` req/s for `minutes` full minutes before `end`."""
    fc = DemandForecaster()
    last = int(end // STEP) - 1
    for k in range(last - minutes + 1, last + 1):
        fc = fc.fold(k, rate)
    return fc


def with_forecaster(fc, **state):
    return PolicyState(extra={"forecast": fc}, **state)


def test_predictive_worked_example() -> None:
    c = cfg(coldStart=180, reactionLag=45, capacityPerReplica=4, targetUtilization=0.8)
    s = sig(arrival_rate=10.0, waiting=5, running=40, kv_cache_usage=0.5, ttft_p95=1.0, tpot_p95=0.05)
    d = decide(s, with_forecaster(flat(13.6)), c, NOW)
    assert d.terms == pytest.approx({"forecast": 4.25, "backlog": (10 + 5 / 182.5) / 4, "latency": 0.0, "kv": 1.875})
    assert (d.desired, d.dominant, d.active) == (5, "forecast", True)
    assert d.inputs["horizon_s"] == 225 and d.inputs["cold_start_p90_s"] == 180
    assert d.inputs["forecast_peak_upper"] == pytest.approx(13.6)
    assert d.reasons[0].startswith("desired=5 driven by forecast")
    assert any("from metadata" in r and "horizon 225s" in r for r in d.reasons)


@pytest.mark.parametrize(
    "signals, md, desired, dominant",
    [
        pytest.param(dict(arrival_rate=10.0, running=20), {"capacityPerReplica": 2}, 6, "forecast",
                     id="observed-rate-over-capacity"),  # 10 / (2 x 0.9) = 5.56
        pytest.param(dict(arrival_rate=1.0, waiting=1000, running=20),
                     {"capacityPerReplica": 1, "maxReplicas": 40, "coldStart": 30}, 32, "backlog",
                     id="backlog-drained-within-ttft-budget"),
        pytest.param(dict(arrival_rate=2.0, waiting=3, running=20, ttft_p95=5.0), {"capacityPerReplica": 4}, 6,
                     "latency", id="ttft-over-slo-correction"),
        pytest.param(dict(arrival_rate=2.0, waiting=3, running=20, ttft_p95=50.0), {"capacityPerReplica": 4}, 6,
                     "latency", id="latency-correction-at-most-doubles"),
        pytest.param(dict(arrival_rate=6.0, running=20, tpot_p95=0.15), {"capacityPerReplica": 4}, 5, "latency",
                     id="tpot-over-slo-correction-at-half-capacity"),
        pytest.param(dict(arrival_rate=2.0, running=2, tpot_p95=0.7), {"capacityPerReplica": 4}, 1, "forecast",
                     id="latency-over-slo-at-light-load-is-not-a-shortage"),
        pytest.param(dict(arrival_rate=2.0, running=20, kv_cache_usage=0.96), {"capacityPerReplica": 4}, 4, "kv",
                     id="kv-pressure"),
        pytest.param(dict(arrival_rate=10.0, running=64), {"runningPerReplica": 48}, 2, "forecast",
                     id="little-law-fallback"),  # c = 48 * 10 / 64 = 7.5
        pytest.param(dict(arrival_rate=100.0, running=640), {}, 3, "forecast",
                     id="little-law-fallback-default-target"),  # c = 350 * 100 / 640 = 54.7; 100 / 49.2 = 2.03
        pytest.param(dict(arrival_rate=20.0, running=64, prompt_tokens_mean=1000, output_tokens_mean=200),
                     {"fleetModel": "alpha=0.015,beta=0.0003,gamma=0.00005,maxNumSeqs=256"}, 3, "forecast",
                     id="fleet-model-capacity"),  # 20 / (7.73 x 0.9) = 2.88
        pytest.param(dict(arrival_rate=1.0, running=4, prompt_tokens_mean=1000, output_tokens_mean=200),
                     {"fleetModel": "alpha=0.015,beta=0.0003,gamma=0.00005,maxNumSeqs=256", "tpotP95": 0.01,
                      "maxReplicas": 6}, 6, "forecast", id="slo-out-of-reach-asks-max"),
        pytest.param(dict(arrival_rate=0.0, running=0), {"capacityPerReplica": 4, "minReplicas": 1}, 1, "min",
                     id="min-clamp"),
        pytest.param(dict(arrival_rate=100.0, running=300), {"capacityPerReplica": 4, "maxReplicas": 8}, 8, "max",
                     id="max-clamp"),
        pytest.param(dict(arrival_rate=8.0, running=20), {"capacityPerReplica": 4, "forecast": "none"}, 3,
                     "forecast", id="forecast-none-uses-observed-rate"),
    ],
)
def test_predictive_table(signals, md, desired, dominant) -> None:
    # A shortage (if any) seen for a minute already: the latency correction's persistence is its own test.
    d = decide(sig(**signals), PolicyState(extra={"shortage_since": NOW - 60}), cfg(**md), NOW)
    assert (d.desired, d.dominant) == (desired, dominant), d.reasons


def test_replicas_on_the_way_stop_cascading_scale_ups() -> None:
    c = cfg(capacityPerReplica=4, coldStart=180)
    # Three Ready, five asked for 60 s ago (two loading); TTFT is 3x the SLO while they load.
    state = PolicyState(desired=5, active=True, last_demand_at=NOW - 60,
                        extra={"raised_at": NOW - 60, "shortage_since": NOW - 60})
    d = decide(sig(pods_reporting=3, arrival_rate=4.0, waiting=3, running=60, ttft_p95=7.5), state, c, NOW)
    assert d.desired == 5 and d.inputs["starting_replicas"] == 2
    assert any("on the way" in r for r in d.reasons)
    # Known from Kubernetes: nothing is starting (they failed): the correction applies in full.
    d2 = decide(sig(pods_reporting=3, arrival_rate=4.0, waiting=3, running=60, ttft_p95=7.5, ready_replicas=3,
                    starting_replicas=0), state, c, NOW)
    assert d2.desired == 6 and d2.dominant == "latency"
    # After one horizon without them arriving, the inference stops counting them.
    d3 = decide(sig(pods_reporting=3, arrival_rate=4.0, waiting=3, running=60, ttft_p95=7.5), state, c, NOW + 300)
    assert d3.desired == 6


def test_forecast_term_is_not_capped_by_supply_on_the_way() -> None:
    c = cfg(capacityPerReplica=1)
    state = PolicyState(desired=4, active=True, extra={"raised_at": NOW - 30})
    d = decide(sig(pods_reporting=2, arrival_rate=8.0, running=40, starting_replicas=2), state, c, NOW)
    assert d.desired == 9 and d.dominant == "forecast"  # 8 / (1 x 0.9) = 8.9: not capped at 4


def day_of(rate_fn, *, days=1, end=NOW):
    """A forecaster fed `days` days of minute buckets of rate_fn(minute_of_day) ending just before `end`."""
    fc = DemandForecaster()
    last = int(end // STEP) - 1
    for k in range(last - days * SEASON - 30, last + 1):
        fc = fc.fold(k, rate_fn(k % SEASON))
    return fc


NOON = int(NOW // STEP) % SEASON


def test_scale_down_waits_while_the_forecast_needs_the_capacity_again_within_the_horizon() -> None:
    # Yesterday: 2 req/s until noon, then +2 req/s every minute up to 30 req/s. Today at noon: 2 req/s.
    fc = day_of(lambda m: 2.0 if m < NOON else min(30.0, 2.0 + 2.0 * (m - NOON + 1)))
    c = cfg(capacityPerReplica=4, coldStart=180)
    state = with_forecaster(fc, desired=7, active=True, last_demand_at=NOW)
    d = decide(sig(pods_reporting=7, arrival_rate=2.0, running=10), state, c, NOW)
    # Yesterday's change over the next ~4 minutes (smoothed over +-3 minutes) comes back as forecast demand.
    assert d.inputs["forecast_rate"] > 8 and d.dominant == "forecast", d.reasons
    assert d.desired >= 3
    # Without yesterday's ramp, the same moment lets six replicas go.
    flat_fc = day_of(lambda m: 2.0)
    d2 = decide(sig(pods_reporting=7, arrival_rate=2.0, running=10), replace(state, extra={"forecast": flat_fc}), c, NOW)
    assert d2.desired == 1


def test_scale_down_only_when_n_minus_1_covers_the_whole_horizon() -> None:
    # Rising 0.1 req/s per minute from 10 req/s: over 225 s the upper bound reaches ~10.5 req/s.
    fc = DemandForecaster()
    last = int(NOW // STEP) - 1
    for i, k in enumerate(range(last - 59, last + 1)):
        fc = fc.fold(k, 4.0 + 0.1 * i)
    c = cfg(capacityPerReplica=4, targetUtilization=1.0, coldStart=180)
    d = decide(sig(pods_reporting=4, arrival_rate=9.9, running=20), with_forecaster(fc, desired=4), c, NOW)
    # Observed 9.9 req/s needs 2.5 replicas now, but the horizon's peak needs 3: not 2.
    assert d.terms["forecast"] > 2.5 and d.desired == 3


def test_forecast_wakes_a_deployment_at_zero_ahead_of_the_daily_ramp() -> None:
    # Idle since yesterday evening; yesterday traffic came back at noon + 3 min.
    fc = day_of(lambda m: 5.0 if NOON + 3 <= m < NOON + 600 else 0.0)
    at_zero = sig(pods_reporting=0)
    idle = PolicyState(desired=0, active=False, last_demand_at=NOW - 86400 + 600 * 60)
    c = cfg(capacityPerReplica=4, coldStart=120)
    woke = decide(at_zero, replace(idle, extra={"forecast": fc}), c, NOW)
    assert woke.active and woke.desired >= 1
    assert any("forecast demand" in r for r in woke.reasons)
    # Without the forecast (forecast: none), nothing wakes it until a request is seen upstream.
    asleep = decide(at_zero, replace(idle, extra={"forecast": fc}), cfg(capacityPerReplica=4, forecast="none"), NOW)
    assert not asleep.active
    # At 04:00 the same forecaster sees nothing coming: stays at zero.
    night = NOW - 8 * 3600
    fc_night = day_of(lambda m: 5.0 if NOON + 3 <= m < NOON + 600 else 0.0, end=night)
    assert not decide(sig(pods_reporting=0, observed_at=night), replace(idle, extra={"forecast": fc_night}),
                      c, night).active


def test_inactive_only_after_sustained_idle_with_no_forecast_demand() -> None:
    c = cfg(capacityPerReplica=4, scaleToZeroAfter=300)
    st = None
    t = NOW
    # Ten minutes of 1 req/s, then nothing at all.
    for _ in range(120):
        d = decide(sig(arrival_rate=1.0, running=2), st, c, t)
        st, t = d.next_state, t + 5
    went_idle = t
    while t < went_idle + 3600:
        d = decide(sig(arrival_rate=0.0, running=0, waiting=0), st, c, t)
        st = d.next_state
        if not d.active:
            break
        t += 5
    assert not d.active
    # Not before scaleToZeroAfter, and not while the decaying level still forecast demand.
    assert t - went_idle >= 300
    assert d.next_state.last_demand_at is not None and t - d.next_state.last_demand_at >= 300


def test_rate_unknown_while_pods_report_holds_the_count() -> None:
    c = cfg(capacityPerReplica=4)
    d = decide(sig(pods_reporting=5, running=3), PolicyState(desired=5, active=True), c, NOW)
    assert d.desired == 5 and d.dominant == "hold"


def test_cold_start_in_use_and_its_source_are_reported() -> None:
    measured = ColdStart(p50=200, p90=300, source="kubernetes", samples=7)
    d = decide(sig(arrival_rate=1.0, cold_start=measured), None, cfg(capacityPerReplica=4), NOW)
    assert d.inputs["horizon_s"] == 345 and d.inputs["cold_start_p50_s"] == 200
    assert any("from kubernetes, 7 samples" in r for r in d.reasons)
    d2 = decide(sig(arrival_rate=1.0, cold_start=measured), None, cfg(capacityPerReplica=4, coldStart=60), NOW)
    assert d2.inputs["horizon_s"] == 105 and any("from metadata" in r for r in d2.reasons)
    d3 = decide(sig(arrival_rate=1.0), None, cfg(capacityPerReplica=4), NOW)
    assert d3.inputs["horizon_s"] == 225 and any("from default" in r for r in d3.reasons)


def history(n, end=NOW):
    last = int(end // STEP) - 1
    return tuple(((k) * STEP, 5 + 4 * math.sin(k / 30.0)) for k in range(last - n + 1, last + 1))


def test_a_restarted_scaler_reaches_the_same_decision_from_the_same_history() -> None:
    c = cfg(capacityPerReplica=2)
    full = history(200)
    # Replica A has been running: it saw the history grow one minute at a time.
    st_a = None
    for i in range(1, len(full) + 1):
        t = full[i - 1][0] + STEP
        d_a = decide(sig(arrival_rate=5.0, running=10, demand_history=full[:i], observed_at=t), st_a, c, t)
        st_a = d_a.next_state
    # Replica B just started (no state) and gets the same snapshot.
    d_b = decide(sig(arrival_rate=5.0, running=10, demand_history=full, observed_at=t), None, c, t)
    assert d_a.next_state.extra["forecast"] == d_b.next_state.extra["forecast"]
    assert (d_a.desired, d_a.terms, d_a.inputs) == (d_b.desired, d_b.terms, d_b.inputs)


def test_predictive_decide_is_pure() -> None:
    c = cfg(capacityPerReplica=4)
    st = with_forecaster(flat(6.0), desired=2, active=True, last_demand_at=NOW - 10)
    s = sig(arrival_rate=6.0, running=12, waiting=2)
    before = dict(st.extra)
    assert decide(s, st, c, NOW) == decide(s, st, c, NOW)
    assert dict(st.extra) == before


def test_wakes_when_yesterday_traffic_was_already_flowing_at_this_hour() -> None:
    # Yesterday traffic came back 20 minutes *before* this hour; today it is late: the level is 0 and
    # yesterday's change over the next minutes is 0, but yesterday's rate around now says it is due.
    fc = DemandForecaster()
    last = int(NOW // STEP) - 1
    for k in range(last - SEASON - 60, last + 1):
        m = k % SEASON
        yesterday = k < last - SEASON + 30
        fc = fc.fold(k, 3.0 if (yesterday and NOON - 20 <= m < NOON + 600) else 0.0)
    assert fc.at(NOW + 60).rate == pytest.approx(0.0, abs=1e-6)
    idle = PolicyState(desired=0, active=False, last_demand_at=NOW - 20 * 3600, extra={"forecast": fc})
    d = decide(sig(pods_reporting=0), idle, cfg(capacityPerReplica=4), NOW)
    assert d.active and d.inputs["yesterday_peak_rate"] == pytest.approx(3.0)
    # It comes back with the capacity yesterday's return needed: 3 req/s / (4 req/s x 0.9).
    assert d.terms["wake"] == pytest.approx(3.0 / 3.6) and d.dominant == "wake" and d.desired == 1
    # At 04:00, nothing around this hour yesterday: stays asleep.
    night = NOW - 8 * 3600
    fc_night = DemandForecaster()
    for k in range(int(night // STEP) - SEASON - 60, int(night // STEP)):
        m = k % SEASON
        fc_night = fc_night.fold(k, 3.0 if NOON - 20 <= m < NOON + 600 else 0.0)
    d2 = decide(sig(pods_reporting=0, observed_at=night), replace(idle, extra={"forecast": fc_night}),
                cfg(capacityPerReplica=4), night)
    assert not d2.active


@pytest.mark.parametrize("policy", ["reactive", "predictive"])
def test_pods_loading_with_none_reporting_hold_count_and_activity(policy) -> None:
    c = cfg(policy=policy, scaleToZeroAfter=120, capacityPerReplica=4)
    state = PolicyState(desired=2, active=True, last_demand_at=NOW - 300, decided_at=NOW - 15)
    d = decide(sig(pods_reporting=0, starting_replicas=1), state, c, NOW)
    assert d.active and d.desired == 2 and d.dominant == "hold", d.reasons
    # Once nothing loads and nothing reports, the idle clock (restarted while loading) runs out as usual.
    idle = decide(sig(pods_reporting=0, starting_replicas=0), d.next_state, c, NOW + 121)
    assert not idle.active


def test_latency_correction_waits_for_a_lasting_shortage() -> None:
    # The 2023 code trace's burst: 7 replicas, W = 36, P95 TPOT 0.74 s (7.4x the SLO), 8.3 req/s over the
    # window against a capacity of 3.67 each. One snapshot of it is no reason to double the fleet.
    c = cfg(capacityPerReplica=3.67, maxReplicas=50)
    burst = dict(pods_reporting=7, arrival_rate=8.3, waiting=36, running=248, tpot_p95=0.74, ttft_p95=4.2)
    d = decide(sig(**burst), None, c, NOW)
    assert d.terms["latency"] == 0.0 and d.desired < 7
    assert d.next_state.extra["shortage_since"] == NOW
    assert any("no correction yet" in r for r in d.reasons)
    # Still loaded and over the SLO 15 s later: not yet (15 s < 30 s).
    d = decide(sig(observed_at=NOW + 15, **burst), d.next_state, c, NOW + 15)
    assert d.terms["latency"] == 0.0 and d.next_state.extra["shortage_since"] == NOW
    # 30 s: a lasting shortage, the correction applies (at most doubling the 7 serving replicas).
    d = decide(sig(observed_at=NOW + 30, **burst), d.next_state, c, NOW + 30)
    assert d.terms["latency"] == 14.0 and d.dominant == "latency"
    # The queue clears: the shortage clock stops, and a new burst starts it again from zero.
    calm = dict(burst, waiting=0, running=10, arrival_rate=2.0)
    d = decide(sig(observed_at=NOW + 45, **calm), d.next_state, c, NOW + 45)
    assert d.next_state.extra["shortage_since"] is None and d.terms["latency"] == 0.0
    d = decide(sig(observed_at=NOW + 60, **burst), d.next_state, c, NOW + 60)
    assert d.terms["latency"] == 0.0 and d.next_state.extra["shortage_since"] == NOW + 60
