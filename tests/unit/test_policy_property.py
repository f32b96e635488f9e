"""decide() is total over everything validation accepts (issue 11).

Hypothesis draws a config from the accepted range of every bounded key (``Key.lo``/``Key.hi`` of
``scaler.config.KEYS``, both policies, both forecasters, with and without a fleet model), and a run of
Signals snapshots with any value a ``Signals`` accepts: ``None`` (unknown) for every optional field, 0,
tiny and huge numbers, +inf (``histogram_quantile`` gives +Inf when the P95 lies in the last bucket),
measured cold starts from 0 to a month, demand histories. The state is chained through the run, with the
clock moving forwards, backwards and by large jumps. Every decision must return, with ``desired`` an int in
``[minReplicas, maxReplicas]`` and ``active`` a bool.

Bounded to run in seconds: ``max_examples`` and the run length below; no deadline per example (a CI machine
under load would flake), the whole test is a few seconds on one core. ``PROPERTY_EXAMPLES=5000`` searches
deeper.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaler.config import _FLEET_PARTS, KEYS, parse_metadata
from scaler.policy import decide
from scaler.signals import ColdStart, Signals

NOW = 1_760_000_000.0
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "300"))   # a deeper search: PROPERTY_EXAMPLES=5000

_NUMERIC = [k for k in KEYS if getattr(k.parse, "lo", None) is not None]


def _value(key) -> st.SearchStrategy[str]:
    lo, hi = key.parse.lo, key.parse.hi
    if key.type == "int":
        return st.one_of(st.sampled_from([lo, hi]), st.integers(lo, min(hi, 1000)), st.integers(lo, hi)).map(str)
    edges = st.sampled_from([lo, hi])
    return st.one_of(edges, st.floats(lo, hi), st.floats(lo, min(hi, lo * 10 + 1))).map(repr)


@st.composite
def configs(draw):
    md = {}
    for key in _NUMERIC:
        if draw(st.booleans()):
            md[key.name] = draw(_value(key))
    md["policy"] = draw(st.sampled_from(["reactive", "predictive"]))
    md["forecast"] = draw(st.sampled_from(["holt", "none"]))
    if draw(st.booleans()):
        parts = {}
        for name, (_, lo, hi) in _FLEET_PARTS.items():
            if name == "kvTokens" and draw(st.booleans()):
                continue
            parts[name] = float(draw(st.integers(int(lo), int(hi)))) if name == "maxNumSeqs" else \
                draw(st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi)))
        md["fleetModel"] = ",".join(f"{k}={v!r}" for k, v in parts.items())
    # the two cross-key rules: min <= max, maxStaleness > refreshInterval
    if int(md.get("minReplicas", 0)) > int(md.get("maxReplicas", 10)):
        md["minReplicas"], md["maxReplicas"] = md.get("maxReplicas", "10"), md["minReplicas"]
    if float(md.get("maxStaleness", 60)) <= float(md.get("refreshInterval", 5)):
        md.pop("maxStaleness", None)
        md["refreshInterval"] = "1"
    return parse_metadata(md, scaled_object="llama", namespace="ml")


_ANY = st.one_of(st.none(), st.just(0.0), st.floats(0, 1e3), st.floats(0, allow_nan=False, allow_infinity=True))
_COUNT = st.one_of(st.none(), st.integers(0, 10), st.integers(0, 10**6))


@st.composite
def signals(draw, now: float):
    cold = draw(st.one_of(st.none(), st.builds(
        lambda a, b: ColdStart(p50=min(a, b), p90=max(a, b), source="kubernetes", samples=3),
        st.floats(0, 30 * 86400.0), st.floats(0, 30 * 86400.0))))
    history = ()
    if draw(st.booleans()):
        n = draw(st.integers(1, 40))
        step = draw(st.sampled_from([60.0, 15.0, 3600.0]))
        rates = draw(st.lists(st.floats(0, 1e9), min_size=n, max_size=n))
        history = tuple((now - (n - i) * step, r) for i, r in enumerate(rates))
    return Signals(
        observed_at=now, pods_reporting=draw(st.one_of(st.integers(0, 10), st.integers(0, 10**6))),
        waiting=draw(_ANY), running=draw(_ANY), kv_cache_usage=draw(_ANY), ttft_p95=draw(_ANY),
        tpot_p95=draw(_ANY), completion_rate=draw(_ANY), arrival_rate=draw(_ANY),
        prompt_tokens_mean=draw(_ANY), output_tokens_mean=draw(_ANY), ready_replicas=draw(_COUNT),
        starting_replicas=draw(_COUNT), upstream_demand=draw(_ANY), cold_start=cold, demand_history=history)


@st.composite
def runs(draw):
    now, out = NOW, []
    for _ in range(draw(st.integers(1, 6))):
        now += draw(st.one_of(st.sampled_from([0.0, 15.0, 60.0]), st.floats(-3600, 3600),
                              st.floats(0, 30 * 86400.0)))
        out.append((draw(signals(now)), now))
    return out


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large])
@given(config=configs(), run=runs())
def test_decide_is_total_and_bounded(config, run) -> None:
    state = None
    for sig, now in run:
        d = decide(sig, state, config, now)
        assert type(d.desired) is int and config.min_replicas <= d.desired <= config.max_replicas, d
        assert type(d.active) is bool
        assert math.isfinite(float(d.desired))
        assert d.reasons[0]          # the explanation renders (formats every value)
        state = d.next_state


def test_forecast_work_is_bounded_whatever_the_horizon() -> None:
    """Issue 11: coldStart 999999999h looped for hours. The metadata bound stops it at 4 h; a measured cold
    start is not bounded by metadata, so the look-ahead itself is capped at a day (MAX_LOOKAHEAD)."""
    from scaler.forecast import MAX_LOOKAHEAD, DemandForecaster

    fc = DemandForecaster().extend([(NOW - 60.0 * (2000 - i), 5.0 + (i % 7)) for i in range(2000)])
    capped = fc.outlook(NOW, MAX_LOOKAHEAD, MAX_LOOKAHEAD)
    for huge in (1e12, 1e300, math.inf, math.nan):
        assert fc.outlook(NOW, huge, huge) == capped
        assert fc.yesterday_peak(NOW, huge) == fc.yesterday_peak(NOW, MAX_LOOKAHEAD)
    cfg = parse_metadata({"capacityPerReplica": "2"}, scaled_object="llama", namespace="ml")
    for p90 in (1e12, 1e300, math.inf):
        sig = Signals(observed_at=NOW, pods_reporting=2, waiting=1, running=3, arrival_rate=3.0,
                      cold_start=ColdStart(p50=p90, p90=p90, source="kubernetes", samples=1),
                      demand_history=tuple((NOW - 60.0 * (100 - i), 3.0) for i in range(100)))
        d = decide(sig, None, cfg, NOW)
        assert d.inputs["horizon_s"] == MAX_LOOKAHEAD and 0 <= d.desired <= cfg.max_replicas


def test_overflowing_terms_answer_max_replicas() -> None:
    """Issue 11: capacityPerReplica 1e-308 overflowed; now bounded, and a term beyond int range (or +inf, or a
    NaN first term) still clamps instead of raising."""
    from scaler.policy import clamp_to_bounds

    cfg = parse_metadata({"maxReplicas": "7", "minReplicas": "1"}, scaled_object="llama", namespace="ml")
    assert clamp_to_bounds(math.inf, {"queue": math.inf}, cfg) == (7, "max")
    assert clamp_to_bounds(1e300, {"queue": 1e300}, cfg) == (7, "max")
    assert clamp_to_bounds(math.nan, {"kv": math.nan, "queue": 2.5}, cfg) == (3, "queue")
    assert clamp_to_bounds(math.nan, {"kv": math.nan}, cfg) == (1, "min")
    sig = Signals(observed_at=NOW, pods_reporting=0, waiting=math.inf, kv_cache_usage=math.inf)
    assert decide(sig, None, cfg, NOW).desired == 7
