"""The demo's outage check on synthetic runs: what counts as the outage making things worse.

During a Prometheus outage the scaler answers from its last good decision. The HPA carrying out a scale-down
that decision asked for before the cut (its stabilization window ending inside the outage) is the last good
data acting; a scale-down below the held answer, a changed answer, a failed call or a deactivation is the
outage's. (The real loop runs in tests/integration/test_demo_loop.py; there the HPA's window ends inside the
5 s outage in some runs and not in others, so both sides of the rule are pinned here.)
"""

from __future__ import annotations

from simulations.demo import DemoResult, DemoTick, Timing, check

LO, HI = 17.0, 22.0


def _run(replicas_during: int, answers_during: list, events: list) -> DemoResult:
    ticks = [DemoTick(t=t / 10, phase="plateau", rate=12.0, replicas=(5 if t / 10 < 21.3 else replicas_during), ready=5,
                  waiting=0, running=10, router=0, desired=4.0, active=True, outage=LO <= t / 10 < HI)
             for t in range(150, 260)]
    calls = [(16.0, "GetMetrics", 4.0), (16.0, "IsActive", True)]
    calls += [(LO + 0.5 + k, "GetMetrics", a) for k, a in enumerate(answers_during)]
    calls += [(LO + 0.5 + k, "IsActive", True) for k in range(len(answers_during))]
    return DemoResult(timing=Timing(), start=0.0, ticks=ticks, events=events, calls=calls, pushes=[],
                      outage=(LO, HI), first_arrival=0.0, counterfactual_peak_waiting=0, source_errors=10.0,
                      router_peak_after_zero=None, scaler_exit=0, requests=100, ttft_ok=1.0, slo_ttft=2.5,
                      gpu_seconds=1.0)


def _outage_check(result: DemoResult):
    return next(c for c in check(result) if c.name == "prometheus_outage_changed_nothing_for_the_worse")


def test_a_scale_down_to_the_held_answer_is_the_last_good_decision() -> None:
    c = _outage_check(_run(4, [4.0] * 5, [(21.3, "hpa", 5, 4, "metrics ask 4")]))
    assert c.ok, c.detail


def test_a_scale_down_below_the_held_answer_is_the_outage() -> None:
    c = _outage_check(_run(3, [4.0] * 5, [(21.3, "hpa", 5, 3, "metrics ask 3")]))
    assert not c.ok and "1 below the held answer" in c.detail


def test_answers_that_change_during_the_outage_fail() -> None:
    c = _outage_check(_run(5, [4.0, 4.0, 3.0, 4.0, 4.0], []))
    assert not c.ok and "held steady: False" in c.detail


def test_a_failed_call_during_the_outage_fails() -> None:
    c = _outage_check(_run(5, [4.0, "error UNAVAILABLE", 4.0], []))
    assert not c.ok and "1 failed calls" in c.detail


def test_no_source_error_seen_fails() -> None:
    r = _run(5, [4.0] * 5, [])
    r.source_errors = 0.0
    assert not _outage_check(r).ok
