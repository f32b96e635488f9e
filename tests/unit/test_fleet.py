"""Fleet model: steady state, lifecycle, continuous batching, routing, signals, outcome rules."""

import math

import numpy as np
import pytest

from simulations.fleet import (
    AggregateFleet,
    ColdStartModel,
    ModelParams,
    RequestFleet,
    saturation,
    steady_state,
    window_attainment,
)
from simulations.fleet.model import max_rate_within_slo

T0 = 1_000_000.0
FIXED = ColdStartModel(100.0, 0.0)


def fleet(arr, p, o, *, params=None, replicas=1, timeout=60.0, cold=FIXED):
    return RequestFleet(T0 + np.asarray(arr, float), p, o, params=params or ModelParams(), cold_start=cold,
                        start=T0, initial_replicas=replicas, request_timeout=timeout)


# The worked example's round numbers (the old WVA configuration-guide example; a fixture, not a profile).
WORKED = ModelParams(alpha=0.02058, beta=0.00041, gamma=0.0001, max_num_seqs=256, kv_tokens=400_000,
                     name="worked-example fixture")


def test_steady_state_worked_example():
    m = WORKED
    ss = steady_state(m, 2.0, 1000, 200)
    assert ss.utilization == pytest.approx(0.364)
    assert ss.iteration == pytest.approx(0.02058 / 0.636)
    assert ss.running == pytest.approx(12.94, abs=0.01)
    lam, t_sat, n = saturation(m, 1000, 200)
    assert n == 256 and t_sat == pytest.approx(0.25354) and lam == pytest.approx(5.0485, abs=1e-3)
    cap = max_rate_within_slo(m, 1000, 200, 4000, 2.5, 0.1)
    assert steady_state(m, cap, 1000, 200).iteration == pytest.approx(0.1, rel=1e-6)


def test_saturation_worked_example():
    """simulations/fleet/model.py, worked example 2: the cache binds before max_num_seqs."""
    from simulations.fleet.model import knee, kv_per_sequence, n_max, preemption_ratio

    m = ModelParams(alpha=0.0072, beta=0.000047, gamma=0.00004, kv_tokens=300_000, max_num_seqs=1024)
    assert kv_per_sequence(m, 235, 460, 1.6) == pytest.approx(611.0)
    assert n_max(m, 235, 460, 1.6) == 490
    assert knee(m, 235, 460, 1.6) == pytest.approx(490 / 18.512, rel=1e-4)
    ss = steady_state(m, 20.0, 235, 460, 1.6)
    assert (ss.utilization, ss.iteration, ss.running) == pytest.approx((0.6204, 0.018967, 174.5), rel=1e-3)
    eps = preemption_ratio(m, 235, 460, 490)
    m_fin, deficit = 490 / 460, 490 / 16
    assert eps == pytest.approx(math.exp(-m_fin) * deficit / (m_fin * (251 / 16 + 0.5)))
    assert eps == pytest.approx(0.612, abs=1e-3)
    lam, t_sat, n = saturation(m, 235, 460, 1.6)
    assert n == 490 and lam == pytest.approx(22.77, abs=0.01) and t_sat == pytest.approx(0.04679, abs=1e-5)
    # the saturated replica serves less than the knee: preemptions are recomputed
    assert lam < knee(m, 235, 460, 1.6)
    assert steady_state(m, 26.0, 235, 460, 1.6).saturated is False
    assert steady_state(m, 26.5, 235, 460, 1.6).saturated is True


def test_model_params_reject_bad_values():
    with pytest.raises(ValueError, match="alpha"):
        ModelParams(alpha=0)
    with pytest.raises(ValueError, match="unknown model parameter 'alpah'"):
        ModelParams().with_overrides({"alpah": "1"})
    with pytest.raises(ValueError, match="kv_tokens='x'"):
        ModelParams().with_overrides({"kv_tokens": "x"})
    with pytest.raises(ValueError, match="max_batched_tokens .* must be >= max_num_seqs"):
        ModelParams(max_num_seqs=512, max_batched_tokens=256)
    with pytest.raises(ValueError, match="block_size"):
        ModelParams(block_size=0)


def test_engine_single_request_ttft_and_tpot():
    m = ModelParams(alpha=0.02, beta=0.001, gamma=0.0001)
    f = fleet([0.0], [1000], [11], params=m)
    f.advance_to(T0 + 10)
    first = f.req.first[0] - T0
    assert first == pytest.approx(0.02 + 0.001 + 0.1)          # one step: alpha + beta*1 + gamma*1000
    tpot = (f.req.finish[0] - f.req.first[0]) / 10
    assert tpot == pytest.approx(0.021)                          # decode steps: alpha + beta*1


def test_engine_max_num_seqs_queues_the_rest():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, max_num_seqs=2)
    f = fleet([0, 0, 0], [10, 10, 10], [100, 100, 100], params=m)
    f.advance_to(T0 + 0.5)
    s = f.signals(T0 + 0.5, 60)
    assert (s.running, s.waiting) == (2.0, 1.0)
    f.advance_to(T0 + 10)
    # the third starts when a slot frees: after 100 steps of 10 ms
    assert f.req.first[2] - T0 == pytest.approx(1.01)


def test_engine_kv_capacity_limits_admission():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, kv_tokens=250)
    f = fleet([0, 0], [100, 100], [50, 50], params=m)
    f.advance_to(T0 + 0.2)
    s = f.signals(T0 + 0.2, 60)
    assert (s.running, s.waiting) == (1.0, 1.0)
    assert 0 < s.kv_cache_usage <= 1


def test_routing_to_shortest_queue():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0, max_num_seqs=1)
    f = fleet([0, 0, 0, 0], [1] * 4, [1000] * 4, params=m, replicas=2)
    f.advance_to(T0 + 1)
    assert sorted(f.req.replica.tolist()) == [0, 0, 1, 1]


def test_lifecycle_gpu_seconds_count_from_request_and_cold_start():
    f = fleet([], [], [], replicas=0)
    f.scale_to(2, T0 + 10)
    assert f.status_replicas() == 2 and f.ready_replicas() == 0
    f.advance_to(T0 + 109)
    assert f.ready_replicas() == 0
    f.advance_to(T0 + 111)
    assert f.ready_replicas() == 2
    assert f.gpu_seconds(T0 + 210) == pytest.approx(2 * 200)
    assert f.rs.cold_starts == 2 and f.rs.scale_events == 1
    assert f.rs.seconds_at_zero(T0 + 210) == pytest.approx(10)


def test_lifecycle_scale_down_removes_loading_first_then_drains():
    m = ModelParams(alpha=0.01, beta=0.0, gamma=0.0)
    f = fleet([0.0], [10], [1000], params=m, replicas=1)   # one request busy for 10 s
    f.scale_to(2, T0 + 1)                                   # second pod loading
    f.scale_to(1, T0 + 2)                                   # the loading pod goes, at once
    assert f.rs.replicas[1].phase == "gone" and f.rs.replicas[1].gone_at == T0 + 2
    f.scale_to(0, T0 + 3)                                   # the ready pod drains its request
    assert f.rs.replicas[0].phase == "draining"
    f.advance_to(T0 + 20)
    r0 = f.rs.replicas[0]
    assert r0.phase == "gone" and r0.gone_at == pytest.approx(T0 + 10.0, abs=0.02)
    assert math.isfinite(f.req.finish[0])
    assert f.rs.seconds_at_zero(T0 + 20) == pytest.approx(10, abs=0.05)


def test_gateway_holds_requests_and_times_out_at_zero():
    f = fleet([0.0, 50.0], [10, 10], [5, 5], replicas=0, timeout=60.0)
    f.scale_to(1, T0 + 1)         # ready at T0 + 101: the first request (arrived at 0) gave up at 60
    f.advance_to(T0 + 200)
    assert f.req.unserved.tolist() == [True, False]
    assert f.req.first[1] - T0 == pytest.approx(101, abs=0.1)
    out = f.outcome(T0 + 200, 2.5, 0.1)
    assert out.unserved == 1 and out.ttft_ok == 0


def test_signals_unknown_is_none_not_zero():
    f = fleet([], [], [], replicas=0)
    s = f.signals(T0 + 60, 60)
    assert s.pods_reporting == 0 and s.waiting is None and s.running is None and s.ttft_p95 is None
    assert s.cold_start.source == "simulation"
    g = fleet([], [], [], replicas=1)
    s = g.signals(T0 + 60, 60)
    assert s.waiting == 0.0 and s.ttft_p95 is None and s.tpot_p95 is None and s.arrival_rate == 0.0


def test_rates_near_the_start_cover_the_elapsed_span_and_history_starts_with_the_trace():
    # 1 req/s from T0 (T0 is not on a minute boundary). The part of a window before the trace started is
    # unknown, not idle: a rate over it (like Prometheus' rate() over a new counter) covers the elapsed span.
    arr = [0.5 + k for k in range(300)]
    f = fleet(arr, [10] * 300, [2] * 300, replicas=1)
    assert f.signals(T0, 60).arrival_rate is None
    assert f.signals(T0 + 15, 60).arrival_rate == pytest.approx(1.0)
    # History as DemandHistoryReader reads it: minutes ending on absolute minute boundaries up to the start
    # of now's minute, none reaching before the trace (no zeros for "before it existed").
    s = f.signals(T0 + 250, 60, history=600)
    at = math.floor((T0 + 250) / 60) * 60
    assert [t for t, _ in s.demand_history] == [at - 120, at - 60, at]
    assert all(t - 60 >= T0 for t, _ in s.demand_history)
    assert [r for _, r in s.demand_history] == pytest.approx([1.0, 1.0, 1.0])


def test_window_attainment():
    t = np.array([0, 1, 2, 61, 62, 200.0])
    ok = np.array([1, 1, 1, 1, 0, 1.0])
    assert window_attainment(t, ok, np.ones(6), 0.0, 300.0) == pytest.approx(2 / 3)
    assert window_attainment(np.array([]), np.array([]), np.array([]), 0, 1) is None


def test_aggregate_signals_and_saturation():
    m = WORKED
    lam_sat, _, _ = saturation(m, 1000, 200)
    counts = np.full(60, 3 * lam_sat * 10)        # three times what one replica serves
    g = AggregateFleet(counts, bin_seconds=10, prompt_mean=1000, output_mean=200, prompt_pool=[1000],
                       params=m, cold_start=FIXED, start=T0, initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)
    s1 = g.signals(T0 + 60, 60)
    s = g.signals(T0 + 120, 60)
    # the empty replica fills within the first minute; then it serves lam_sat and the queue grows by the rest
    assert g._mode == "saturated" and 0 < s1.waiting < 2 * lam_sat * 60
    assert s.waiting - s1.waiting == pytest.approx(2 * lam_sat * 60, rel=0.01)
    assert s.ttft_p95 > 10 and s.tpot_p95 == pytest.approx(saturation(m, 1000, 200)[1])


def test_aggregate_dynamic_worked_example():
    """simulations/fleet/aggregate_fleet.py, worked example of the dynamic state: two 5-s sub-steps."""
    m = ModelParams(alpha=0.01, beta=0.0001, gamma=0.0, kv_tokens=100_000)
    g = AggregateFleet(np.full(6, 100.0), bin_seconds=10, prompt_mean=100, output_mean=1000, prompt_pool=[100],
                       params=m, cold_start=FIXED, start=T0, initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)
    s = g.signals(T0 + 10, 10)
    assert g._mode == "dynamic" and s.waiting == 0
    assert s.running == pytest.approx(100.0)
    t2 = 0.01 + 0.0001 * 75
    k = 50 * (100 + 500 - 250 + 5 / t2 + 8) + 50 * (100 + 5 / t2 / 2 + 8)
    assert k == pytest.approx(44_728, abs=1)
    assert s.kv_cache_usage == pytest.approx(k / 100_000)


def test_aggregate_saturates_keeps_its_queue_between_lam_sat_and_the_knee_and_recovers():
    """Past the knee the cache fills and the replica serves lam_sat (< knee: recomputed preemptions); a load
    between lam_sat and the knee keeps the queue growing (a full cache stays full while requests wait); once
    the load falls below lam_sat the backlog drains and the replica returns to its steady state."""
    from simulations.fleet.model import knee, kv_per_sequence

    m = ModelParams(alpha=0.0072, beta=0.000047, gamma=0.00004, kv_tokens=300_000, max_num_seqs=1024)
    lam_sat, _, _ = saturation(m, 235, 460)
    lam_knee = knee(m, 235, 460)
    assert lam_sat < 25.0 < lam_knee
    rates = [35.0] * 60 + [25.0] * 60 + [10.0] * 180          # 10-s bins: 10 min, 10 min, 30 min
    g = AggregateFleet(np.array(rates) * 10, bin_seconds=10, prompt_mean=235, output_mean=460, prompt_pool=[235],
                       params=m, cold_start=FIXED, start=T0, initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)
    w1 = g.signals(T0 + 600, 60).waiting
    assert g._mode == "saturated" and g.preemptions > 0
    w2 = g.signals(T0 + 1200, 60).waiting
    assert w2 - w1 == pytest.approx((25.0 - lam_sat) * 600, rel=0.01)
    s = g.signals(T0 + 3000, 60)
    assert g._mode == "steady" and s.waiting == 0
    ss = steady_state(m, 10.0, 235, 460)
    assert s.running == pytest.approx(ss.running) and s.tpot_p95 == pytest.approx(ss.iteration)
    assert s.kv_cache_usage == pytest.approx(ss.running * kv_per_sequence(m, 235, 460) / 300_000)


def test_first_after_idle_worked_example():
    """Arrivals at 0, 1, 100, 101, 102 s, gap 60 s, first 2: the requests at 100 and 101 count (not the trace's
    first ones, not the third after the gap); an aggregate slice is pro-rated; a 30-s pause is not a gap."""
    from simulations.fleet.base import AfterIdle, first_after_idle

    t = np.array([0.0, 1.0, 100.0, 101.0, 102.0])
    ttft = np.array([0.1, 0.1, 5.0, 0.2, 0.3])
    n, ok, p50 = first_after_idle(t, t, np.ones(5), (ttft <= 2.5).astype(float), ttft, AfterIdle(60.0, 2))
    assert (n, ok, p50) == (2.0, 1.0, 0.2)
    assert first_after_idle(t, t, np.ones(5), np.ones(5), ttft, AfterIdle(120.0, 2))[0] == 0.0
    # slices: 4 requests in [0, 10), 6 in [100, 110) with 3 within the SLO: take 2 of the 6 -> 1 within
    n, ok, p50 = first_after_idle(np.array([0.0, 100.0]), np.array([10.0, 110.0]), np.array([4.0, 6.0]),
                                  np.array([4.0, 3.0]), np.array([0.1, 3.0]), AfterIdle(60.0, 2))
    assert (n, ok, p50) == (2.0, 1.0, 3.0)
    u = np.array([0.0, 30.0, 61.0])
    assert first_after_idle(u, u, np.ones(3), np.ones(3), np.ones(3), AfterIdle(60.0, 10))[0] == 0.0


def test_batched_cold_starts_are_the_single_draws():
    # ReplicaSet draws its deviates 1,024 at a time: the cold starts of 3,000 pods are those of one draw per pod
    from simulations.fleet.lifecycle import ReplicaSet

    model = ColdStartModel.single(180.0, 0.2)
    rs = ReplicaSet(model, np.random.default_rng(7), start=T0, initial=0)
    rs.scale_to(3000, T0)
    rng = np.random.default_rng(7)
    assert [r.ready_at for r in rs.replicas] == [T0 + model.draw(rng) for _ in range(3000)]   # bit for bit
