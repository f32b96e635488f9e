"""The two fidelities agree on the same input (same trace slice, same fixed replica count)."""

import numpy as np
import pytest

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams, RequestFleet, saturation
from simulations.traces import load


def both(trace, replicas, slo_ttft=2.5, slo_tpot=0.1):
    c, pm, om = trace.counts_view(10)
    params = ModelParams()
    cold = ColdStartModel(180, 0)
    r = RequestFleet(trace.arrivals, trace.prompt, trace.output, params=params, cold_start=cold,
                     start=trace.start, initial_replicas=replicas)
    a = AggregateFleet(c, bin_seconds=10, prompt_mean=pm, output_mean=om, prompt_pool=trace.tokens.prompt,
                       params=params, cold_start=cold, start=trace.start, initial_replicas=replicas,
                       slo_ttft=slo_ttft, slo_tpot=slo_tpot)
    end = trace.start + trace.duration
    sig_r, sig_a = [], []
    for t in np.arange(trace.start + 120, end, 120):
        sig_r.append(r.signals(t, 60))
        sig_a.append(a.signals(t, 60))
    return r.outcome(end, slo_ttft, slo_tpot), a.outcome(end, slo_ttft, slo_tpot), sig_r, sig_a


@pytest.fixture(scope="module")
def conv():
    return load("azure-2023-conv").sliced(1200)


def test_fidelities_agree_below_saturation(conv):
    r, a, sr, sa = both(conv, 3)
    assert a.requests == pytest.approx(r.requests, rel=1e-9)
    assert a.ttft_ok / a.requests == pytest.approx(r.ttft_ok / r.requests, abs=0.03)
    assert a.tpot_ok / a.requests == pytest.approx(r.tpot_ok / r.requests, abs=0.05)
    assert a.gpu_seconds == pytest.approx(r.gpu_seconds)
    tp_r = np.mean([s.tpot_p95 for s in sr if s.tpot_p95])
    tp_a = np.mean([s.tpot_p95 for s in sa if s.tpot_p95])
    assert tp_a == pytest.approx(tp_r, rel=0.25)
    run_r = np.mean([s.running for s in sr])
    run_a = np.mean([s.running for s in sa])
    assert run_a == pytest.approx(run_r, rel=0.35)


def test_fidelities_agree_when_overloaded(conv):
    r, a, sr, sa = both(conv, 1)       # one replica for ~5.5 req/s: saturated, the queue grows
    lam_sat = saturation(ModelParams(), conv.prompt.mean(), conv.output.mean())[0]
    assert conv.requests / conv.duration > lam_sat
    assert r.ttft_ok / r.requests < 0.5 and a.ttft_ok / a.requests < 0.5
    assert a.ttft_ok / a.requests == pytest.approx(r.ttft_ok / r.requests, abs=0.1)
    w_r = sr[-1].waiting
    w_a = sa[-1].waiting
    assert w_a == pytest.approx(w_r, rel=0.3)
