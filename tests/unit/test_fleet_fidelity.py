"""The two fidelities agree on the same input: the aggregate's fluid state against the per-request engine (vLLM's
V1 scheduler), below saturation, at the onset of overload and saturated."""

import numpy as np
import pytest

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams, RequestFleet, saturation
from simulations.traces import load
from tests.benchmarks import bench_scheduler as bench

T0 = bench.T0

# The provisional H100 numbers the overload figures were checked with (not the default profile, which may be
# refitted): with them the cache binds near 26.5 req/s for the testbed's sizes, as on the real testbed.
H100 = ModelParams(alpha=0.0072, beta=0.000047, gamma=0.00004, kv_tokens=300_000, max_num_seqs=1024)


def both(trace, replicas, slo_ttft=2.5, slo_tpot=0.1):
    c, pm, om = trace.counts_view(10)
    params = H100
    cold = ColdStartModel(180, 0)
    r = RequestFleet(trace.arrivals, trace.prompt, trace.output, params=params, cold_start=cold,
                     start=trace.start, initial_replicas=replicas)
    a = AggregateFleet(c, bin_seconds=10, prompt_mean=pm, output_mean=om, prompt_pool=trace.tokens.prompt,
                       output_pool=trace.tokens.output, params=params, cold_start=cold, start=trace.start,
                       initial_replicas=replicas, slo_ttft=slo_ttft, slo_tpot=slo_tpot)
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
    r, a, sr, sa = both(conv, 1)
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
    kv_r = np.mean([s.kv_cache_usage for s in sr])
    kv_a = np.mean([s.kv_cache_usage for s in sa])
    assert kv_a == pytest.approx(kv_r, rel=0.35)


def one_replica(rate, duration, seeds, step=10.0):
    """Engine runs (one per seed) and the aggregate on the same sizes: rows (t, kv, running, waiting)."""
    runs = []
    for seed in seeds:
        arr, prompt, output = bench.testbed_workload(rate, duration, seed)
        f = RequestFleet(T0 + arr, prompt, output, params=H100, cold_start=ColdStartModel.single(1.0), start=T0,
                         initial_replicas=1)
        e = f.engines[0]
        rows = []
        for t in np.arange(step, duration + step / 2, step):
            f.advance_to(T0 + t)
            rows.append((t, e.kv_usage(), len(e.running), len(e.waiting), e.n_done))
        runs.append(np.array(rows, dtype=float))
    nb = int(duration // 10)
    g = AggregateFleet(np.full(nb, rate * 10.0), bin_seconds=10.0, prompt_mean=float(prompt.mean()),
                       output_mean=float(output.mean()), prompt_pool=prompt, output_pool=output, params=H100,
                       cold_start=ColdStartModel.single(1.0), start=T0, initial_replicas=1, slo_ttft=1e9,
                       slo_tpot=1e9)
    agg = []
    for t in np.arange(step, duration + step / 2, step):
        s = g.signals(T0 + t, step)
        agg.append((t, s.kv_cache_usage, s.running, s.waiting))
    return runs, np.array(agg, dtype=float), g, prompt, output


def test_steady_kv_and_running_agree_below_the_knee():
    runs, agg, _, _, _ = one_replica(20.0, 600, seeds=(1, 2))
    late = slice(18, None)                     # after 3 minutes
    kv_e = np.mean([r[late, 1].mean() for r in runs])
    run_e = np.mean([r[late, 2].mean() for r in runs])
    assert kv_e < 0.5 and agg[late, 1].mean() == pytest.approx(kv_e, rel=0.1)
    assert agg[late, 2].mean() == pytest.approx(run_e, rel=0.1)
    assert max(r[:, 3].max() for r in runs) < 5 and agg[:, 3].max() == 0    # no queue


def test_overload_onset_agrees():
    """27.5 req/s into an empty replica (knee ~26.5): the cache fills over a minute or two, then a queue forms.
    The KV curves agree within 0.08 while it fills, and the onset of the queue within 40 s of the engine's
    median over six workloads (near the knee a workload's own fluctuations move the onset by a minute)."""
    runs, agg, _, _, _ = one_replica(27.5, 300, seeds=range(1, 7))
    kv_e = np.mean([r[:, 1] for r in runs], axis=0)
    filling = slice(0, 7)                      # the first 70 s
    assert np.abs(agg[filling, 1] - kv_e[filling]).max() < 0.08
    on_e = np.median([bench.onset(r[:, 0], r[:, 3]) or 300.0 for r in runs])
    on_a = bench.onset(agg[:, 0], agg[:, 3])
    assert 30 <= on_e <= 200 and on_a == pytest.approx(on_e, abs=40)


def test_saturated_throughput_under_preemption_agrees():
    runs, agg, g, prompt, output = one_replica(40.0, 600, seeds=(1, 2))
    half = slice(30, None)
    done_e = np.mean([(r[-1, 4] - r[29, 4]) / (r[-1, 0] - r[29, 0]) for r in runs])
    spread = float(np.mean(output.astype(float) ** 2) / np.mean(output) ** 2)
    lam_sat = saturation(H100, float(prompt.mean()), float(output.mean()), spread)[0]
    assert lam_sat == pytest.approx(done_e, rel=0.08)
    # the queue grows at the offered rate minus what the replica serves, in both
    grow_e = np.mean([(r[-1, 3] - r[29, 3]) / 300 for r in runs])
    grow_a = (agg[-1, 3] - agg[29, 3]) / 300
    assert grow_a == pytest.approx(grow_e, rel=0.1)
    assert g.preemptions > 0 and all(r[half, 1].min() > 0.9 for r in runs) and agg[half, 1].min() > 0.9
