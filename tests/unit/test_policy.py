"""The reactive policy, pinned by table tests (named cases) and the docstring's worked example."""

import pytest

from scaler.config import parse_metadata
from scaler.policy import PolicyState, ceil_replicas, decide, planning_targets
from scaler.signals import Signals

NOW = 1_700_000_000.0


def cfg(**md):
    md.setdefault("policy", "reactive")  # this file pins the reactive policy (the default is predictive)
    return parse_metadata({k: str(v) for k, v in md.items()}, scaled_object="llama", namespace="ml")


def fixed(**md):
    """The table tests' config: round targets q* = 5, r* = 48 (not a GPU's), so each case reads simply."""
    md.setdefault("queuePerReplica", 5)
    md.setdefault("runningPerReplica", 48)
    return cfg(**md)


def sig(**kw):
    kw.setdefault("observed_at", NOW)
    kw.setdefault("pods_reporting", 3)
    return Signals(**kw)


def test_reactive_worked_example() -> None:
    d = decide(sig(waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1, tpot_p95=0.05), None, cfg(), NOW)
    assert d.terms == pytest.approx({"queue": 12 / 6.7, "running": 40 / 350, "kv": 3.375, "latency": 3.72})
    assert d.terms["queue"] == pytest.approx(1.791, abs=1e-3) and d.terms["running"] == pytest.approx(0.114, abs=1e-3)
    assert (d.desired, d.dominant, d.active) == (4, "latency", True)
    assert d.reasons[0].startswith("desired=4 driven by latency")
    assert d.inputs["running_per_replica"] == 350 and d.inputs["queue_per_replica"] == 6.7
    assert "targets: 350 running, 6.7 waiting per replica from default" in d.reasons


def test_targets_are_derived_unless_set() -> None:
    assert (cfg().running_per_replica, cfg().queue_per_replica) == (None, None)   # derived at each decision


@pytest.mark.parametrize(
    "signals, md, desired, dominant",
    [
        pytest.param(dict(waiting=30, running=10), {}, 6, "queue", id="queue-drives"),
        pytest.param(dict(waiting=0, running=150), {}, 4, "running", id="running-drives"),
        pytest.param(dict(waiting=0, running=5, ttft_p95=10.0), {}, 6, "latency", id="latency-correction-at-most-doubles"),
        pytest.param(dict(waiting=0, running=5, kv_cache_usage=0.96), {}, 4, "kv", id="kv-drives"),
        pytest.param(dict(waiting=0, running=5, tpot_p95=0.15), {}, 5, "latency", id="tpot-drives"),
        pytest.param(dict(waiting=0, running=5, ttft_p95=1.0, tpot_p95=0.05), {"minReplicas": 0}, 1, "running",
                     id="latency-under-slo-never-asks-more"),
        pytest.param(dict(waiting=0, running=0), {"minReplicas": 2}, 2, "min", id="min-clamp"),
        pytest.param(dict(waiting=500, running=0), {"maxReplicas": 7}, 7, "max", id="max-clamp"),
        pytest.param(dict(waiting=10, running=0), {}, 2, "queue", id="exact-multiple-no-extra-replica"),
        pytest.param(dict(waiting=0, running=0, ttft_p95=None, tpot_p95=None), {}, 0, "min",
                     id="no-traffic-nan-latency-is-not-zero-latency"),
    ],
)
def test_reactive_table(signals, md, desired, dominant) -> None:
    d = decide(sig(**signals), None, fixed(**md), NOW)
    assert (d.desired, d.dominant) == (desired, dominant)


# A fleet in a cold start: 1 replica Ready, overloaded (queue 140, P95 TTFT 22.8 s), 2 more loading after the
# previous decision asked for 3. Without the cap the queue term alone would ask 28.
LOADING = dict(pods_reporting=1, ready_replicas=1, waiting=140, running=40, ttft_p95=22.8)


@pytest.mark.parametrize(
    "signals, state, desired, dominant",
    [
        pytest.param(dict(LOADING, starting_replicas=2), PolicyState(desired=3), 3, "queue",
                     id="no-cascade-while-replicas-load"),
        pytest.param(dict(LOADING, starting_replicas=0), PolicyState(desired=3), 10, "max",
                     id="nothing-on-the-way-symptoms-count-in-full"),
        pytest.param(dict(LOADING, starting_replicas=None), PolicyState(desired=3, extra={"raised_at": NOW - 60}),
                     3, "queue", id="on-the-way-inferred-from-the-last-raise-within-the-horizon"),
        pytest.param(dict(LOADING, starting_replicas=None), PolicyState(desired=3, extra={"raised_at": NOW - 600}),
                     10, "max", id="a-raise-older-than-the-horizon-is-not-on-the-way"),
        pytest.param(dict(LOADING, starting_replicas=2, running=256), PolicyState(desired=3), 6, "running",
                     id="running-is-load-served-not-a-symptom-and-is-not-capped"),
        pytest.param(dict(LOADING, starting_replicas=2), PolicyState(desired=5), 5, "queue",
                     id="cap-is-the-previous-desired-when-higher"),
    ],
)
def test_reactive_supply_on_the_way(signals, state, desired, dominant) -> None:
    d = decide(sig(**signals), state, fixed(), NOW)
    assert (d.desired, d.dominant) == (desired, dominant)
    if "capped" in d.reasons[-1]:
        assert "no cascading scale-up" in d.reasons[-1]


def test_reactive_no_cascade_over_a_cold_start() -> None:
    """Closed loop over one cold start: the queue keeps growing on the one Ready replica while the replicas
    asked for at the first poll load; every later poll asks for the same count, not more."""
    c = fixed(maxReplicas=50, coldStart=180)
    first = decide(sig(pods_reporting=1, ready_replicas=1, starting_replicas=0, waiting=10, running=40), None, c, NOW)
    assert first.desired == 2
    state, asked = first.next_state, []
    for i in range(1, 12):  # 15 s polls, 165 s: the replica asked for is still loading
        d = decide(sig(pods_reporting=1, ready_replicas=1, starting_replicas=1, waiting=10 + 20 * i, running=48,
                       ttft_p95=3.0 + i), state, c, NOW + 15 * i)
        state = d.next_state
        asked.append(d.desired)
    assert asked == [2] * 11


def test_activation_threshold_and_idle_period() -> None:
    c = cfg(activationThreshold=2, scaleToZeroAfter=300)
    busy = decide(sig(waiting=1, running=2), None, c, NOW)
    assert busy.active and busy.next_state.last_demand_at == NOW
    # Demand at or below the threshold: stays active until scaleToZeroAfter has passed.
    idle = decide(sig(waiting=0, running=2), busy.next_state, c, NOW + 299)
    assert idle.active
    gone = decide(sig(waiting=0, running=2), idle.next_state, c, NOW + 300)
    assert not gone.active


def test_upstream_demand_wakes_a_deployment_at_zero() -> None:
    c = cfg()
    at_zero = sig(pods_reporting=0)
    assert not decide(at_zero, None, c, NOW).active
    woke = decide(sig(pods_reporting=0, upstream_demand=3), None, c, NOW)
    assert woke.active


def test_decide_is_pure() -> None:
    s, c, st = sig(waiting=7, running=3), cfg(), PolicyState(desired=2, active=True, last_demand_at=NOW - 10)
    assert decide(s, st, c, NOW) == decide(s, st, c, NOW)


def test_signals_reject_nan_and_negative() -> None:
    with pytest.raises(ValueError, match="waiting"):
        sig(waiting=float("nan"))
    with pytest.raises(ValueError, match="kv_cache_usage"):
        sig(kv_cache_usage=-0.1)


@pytest.mark.parametrize("x, n", [(0, 0), (2.0, 2), (2.0000000001, 2), (2.01, 3), (-1, 0)])
def test_ceil_replicas(x, n) -> None:
    assert ceil_replicas(x) == n


def test_reasons_read_as_the_strings_of_their_decision() -> None:
    from scaler.policy import Reasons, TermsText

    terms = {"queue": 2.4, "kv": 3.375}
    r = Reasons(["plain"])
    r.add("desired={} driven by {}: {}", 4, "kv", TermsText(terms))
    r.insert(1, "ratio {:.3g}x", 1.23456)
    terms["queue"] = 99.0          # values are captured when a line is added
    assert len(r) == 3 and r[0] == "plain" and r[-1] == "desired=4 driven by kv: queue=2.4, kv=3.38"
    assert list(r) == ["plain", "ratio 1.23x", "desired=4 driven by kv: queue=2.4, kv=3.38"]
    assert r == tuple(r) and r == list(r) and r != ("plain",) and hash(r) == hash(tuple(r))
    # A decision's reasons equal the text the server logs, and a same-input decision's.
    d = decide(sig(waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1, tpot_p95=0.05), None, cfg(), NOW)
    again = decide(sig(waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1, tpot_p95=0.05), None, cfg(), NOW)
    assert d.reasons == again.reasons and all(isinstance(x, str) for x in d.reasons)
    assert d.reasons[1].startswith("active: vLLM waiting+running 52 > 0")


FM = "alpha=0.00769,beta=0.0000572,gamma=0.0000214,maxNumSeqs=1024,kvTokens=413000"   # the H100 profile's


@pytest.mark.parametrize(
    "md, sizes, previous, expect",
    [
        pytest.param({}, (235, 460), None, (350.0, 6.7, "default"), id="no-model-defaults"),
        pytest.param({"fleetModel": FM}, (235, 460), None, (pytest.approx(350.4, abs=0.1),
                                                            pytest.approx(6.70, abs=0.01), "model"),
                     id="model-at-the-observed-sizes"),
        pytest.param({"fleetModel": FM}, (1150, 210), None, (pytest.approx(161.8, abs=0.1),
                                                             pytest.approx(5.96, abs=0.01), "model"),
                     id="long-prompts-hold-fewer"),
        pytest.param({"fleetModel": FM, "targetUtilization": "0.5"}, (235, 460), None,
                     (pytest.approx(81.8, abs=0.1), pytest.approx(33.5, abs=0.1), "model"),
                     id="follows-target-utilization"),
        pytest.param({"fleetModel": FM}, (None, 460), (20.0, 3.0), (20.0, 3.0, "model, last sizes"),
                     id="sizes-unknown-keep-the-models-last"),
        pytest.param({"fleetModel": FM}, (None, None), None, (350.0, 6.7, "default"),
                     id="sizes-never-seen-defaults"),
        pytest.param({"runningPerReplica": "40", "queuePerReplica": "2", "fleetModel": FM}, (235, 460), None,
                     (40.0, 2.0, "metadata"), id="keys-win"),
        pytest.param({"runningPerReplica": "40", "fleetModel": FM}, (235, 460), None,
                     (40.0, pytest.approx(6.70, abs=0.01), "metadata and model"), id="one-key-the-other-derived"),
    ],
)
def test_planning_targets_table(md, sizes, previous, expect) -> None:
    assert planning_targets(cfg(**md), *sizes, previous) == expect


def test_reactive_targets_follow_the_fleet_model_and_hold_when_sizes_vanish() -> None:
    """With fleetModel the running term is R / r*(sizes); a window where no request finished (sizes unknown)
    keeps the model's last r*, so it never reads as the (larger) default and never scales down."""
    c = cfg(fleetModel=FM)
    long_prompts = dict(waiting=0, running=600, prompt_tokens_mean=1150, output_tokens_mean=210)
    d = decide(sig(**long_prompts), None, c, NOW)
    assert (d.desired, d.dominant) == (4, "running")                 # 600 / 161.8 = 3.7
    assert d.inputs["running_per_replica"] == pytest.approx(161.8, abs=0.1)
    unknown = dict(long_prompts, prompt_tokens_mean=None, output_tokens_mean=None)
    d2 = decide(sig(**unknown), d.next_state, c, NOW + 15)
    assert d2.desired == 4 and d2.inputs["running_per_replica"] == d.inputs["running_per_replica"]
    assert decide(sig(**unknown), None, c, NOW).desired == 2         # no history: the default 350
