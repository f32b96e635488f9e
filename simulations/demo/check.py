"""The story's claims as named pass/fail checks, with the figures behind each."""

from __future__ import annotations

import math

from .result import Check, DemoResult
from .story import traffic_phases


def _event(e: tuple[float, str, int, int, str] | None) -> str:
    return "none" if e is None else f"t={e[0]:.1f}s {e[1]} {e[2]} -> {e[3]} ({e[4]})"


def check(result: DemoResult) -> list[Check]:
    """The story's claims, each as a named pass/fail with the figures behind it."""
    checks: list[Check] = []
    ev = result.events
    ticks = result.ticks

    wake = next((e for e in ev if e[2] == 0 and e[3] >= 1), None)
    trickle_start = next(p for p in traffic_phases() if p.name == "trickle").start
    actives = [c[2] for c in result.calls if c[0] >= trickle_start and c[1] == "IsActive"]
    checks.append(Check(
        "woke_through_stream_is_active",
        wake is not None and "StreamIsActive" in wake[4],
        f"first 0->N: {_event(wake)}; trickle from t={trickle_start:.0f}s; Prometheus saw up to "
        f"{result.router_peak_after_zero} requests waiting at the router; IsActive answers since: "
        f"{actives[:8]}; StreamIsActive messages: {[(round(t, 1), r) for t, r in result.pushes[:6]]}"))

    peak_replicas = max((k.replicas for k in ticks), default=0)
    peak_waiting = max((k.waiting + k.router for k in ticks if k.phase in ("ramp-up", "plateau")), default=0)
    cf = result.counterfactual_peak_waiting
    checks.append(Check(
        "scaled_up_before_the_queue_exploded",
        peak_replicas >= 3 and peak_waiting * 4 <= max(cf, 1),
        f"peak replicas {peak_replicas}; peak queue {peak_waiting} (pods + router) vs {cf} on one fixed "
        f"replica with the same arrivals"))

    ramp_down = next(p for p in traffic_phases() if p.name == "ramp-down").start
    downs = [e for e in ev if e[0] >= ramp_down and e[3] < e[2] and e[3] > 0]
    checks.append(Check(
        "scaled_down_after_the_ramp",
        bool(downs),
        f"scale-downs after t={ramp_down:.0f}s: {[(round(e[0], 1), e[2], e[3]) for e in downs]}"))

    to_zero = next((e for e in ev if e[0] >= ramp_down and e[3] == 0), None)
    trickle = next(p for p in traffic_phases() if p.name == "trickle").start
    at_trickle = next((k for k in ticks if k.t >= trickle), None)
    checks.append(Check(
        "scaled_to_zero",
        to_zero is not None and at_trickle is not None and at_trickle.replicas == 0,
        f"to zero: {_event(to_zero)}; replicas when the trickle starts (t={trickle:.0f}s): "
        f"{None if at_trickle is None else at_trickle.replicas}"))

    # During the outage the scaler can only answer from its last good decision (or fail): every answer must be
    # that one held value (the decision made from the last data before the cut, which may postdate the last
    # call before the cut), none may fail or deactivate, and nothing may scale down below that held decision.
    # The HPA may still carry out a scale-down the held decision asked for before the cut (its stabilization
    # window ending inside the outage: replicas 5 -> 4 on a held answer of 4): that is the last good data
    # acting, not the missing data; a scale-down below the held answer would be the outage's. Once Prometheus is back,
    # decisions rest on fresh data again and may go either way; failures and deactivation are still checked
    # for a short while after, until the first fresh refresh has landed.
    lo, hi = result.outage
    settle = hi + result.timing.refresh_interval + 2 * result.timing.scrape_interval + 1.0
    before = [k for k in ticks if k.t < lo]
    at_cut = before[-1].replicas if before else 0
    answer_at_cut = next((c[2] for c in reversed(result.calls) if c[0] < lo and c[1] == "GetMetrics"
                          and not isinstance(c[2], str)), None)
    during = [k for k in ticks if lo <= k.t < hi]
    answers = [c[2] for c in result.calls if lo <= c[0] < hi and c[1] == "GetMetrics" and not isinstance(c[2], str)]
    failed = [c for c in result.calls if lo <= c[0] < settle and isinstance(c[2], str)]
    inactive = [c for c in result.calls if lo <= c[0] < settle and c[1] == "IsActive" and c[2] is False]
    downs_during = [e for e in ev if lo <= e[0] < hi and e[3] < e[2]]
    held = answers[0] if answers and len(set(answers)) == 1 else None
    floor = min(at_cut, math.ceil(held)) if held is not None else at_cut
    downs_below = [e for e in downs_during if e[3] < floor]
    checks.append(Check(
        "prometheus_outage_changed_nothing_for_the_worse",
        bool(during) and held is not None and answer_at_cut is not None and not failed and not inactive
        and not downs_below and min(k.replicas for k in during) >= floor and result.source_errors > 0,
        f"outage t={lo:.0f}-{hi:.0f}s: {len(answers)} GetMetrics answers {sorted(set(answers))} (held steady: "
        f"{held is not None}; last answer before the cut {answer_at_cut}), {len(failed)} failed calls, "
        f"{len(inactive)} IsActive false, scale-downs {[_event(e) for e in downs_during]} "
        f"({len(downs_below)} below the held answer), replicas at the cut {at_cut}, lowest during "
        f"{min((k.replicas for k in during), default=None)}; the scaler counted {result.source_errors:g} "
        f"source errors"))

    checks.append(Check("scaler_exited_cleanly_on_sigterm", result.scaler_exit == 0,
                        f"exit code {result.scaler_exit}"))
    return checks
