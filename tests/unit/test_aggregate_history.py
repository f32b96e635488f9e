"""The aggregate fleet's demand history: the (t, req/s) points a predictive decision folds."""

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams


def fleet(counts, start, bin_s=10.0):
    return AggregateFleet(counts, bin_seconds=bin_s, prompt_mean=100.0, output_mean=50.0, prompt_pool=[100.0],
                          params=ModelParams(), cold_start=ColdStartModel(100.0, 0.0), start=start,
                          initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)


def test_history_rates_are_the_minute_counts():
    # 6 req per 10 s bin = 0.6 req/s; points on absolute minute boundaries (1080, 1140, ...) up to the start
    # of now's minute (1260), none whose minute reaches before the start (1000)
    f = fleet([6.0] * 30, 1000.0)
    pts = f._history(1300.0, 600.0)
    assert [t for t, _ in pts] == [1080.0, 1140.0, 1200.0, 1260.0]
    assert all(abs(r - 0.6) < 1e-12 for _, r in pts)


def test_history_interpolates_within_a_bin():
    # counts 0, 60, 0, ... per 10 s bin from a start that is not on a minute: the minute ending at 1140 holds
    # half of the bin [1075, 1085) and all of [1125, 1135)
    counts = [0.0] * 12
    counts[2] = 60.0          # bin [1075, 1085)
    counts[7] = 20.0          # bin [1125, 1135)
    f = fleet(counts, 1055.0)
    pts = dict(f._history(1150.0, 60.0))
    assert list(pts) == [1140.0]
    assert abs(pts[1140.0] - (30.0 + 20.0) / 60.0) < 1e-12   # window (1080, 1140]


def _direct_history(f, now, history):
    """The reference: every point computed from scratch (np.arange + np.interp), no memo."""
    import numpy as np

    cum = np.concatenate([[0.0], np.cumsum(f.counts)])
    edges = f.start + f.bin * np.arange(len(cum))
    at = np.floor(now / 60.0) * 60.0
    ts = at - 60.0 * np.arange(round(history / 60.0))[::-1]      # ..., at - 60, at
    ts = ts[ts - 60.0 >= f.start]
    c = np.interp(ts, edges, cum) - np.interp(ts - 60.0, edges, cum)
    return tuple((float(t), float(x) / 60.0) for t, x in zip(ts, c))


def test_memoised_history_matches_the_direct_computation():
    # irregular counts, a start that is not a whole minute, decision instants every 15 s and a few odd ones
    import random

    rng = random.Random(7)
    f = fleet([rng.random() * 50 for _ in range(400)], 1715299213.25)
    nows = [f.start + 15.0 * k for k in range(1, 260)] + [f.start + 1234.567, f.start + 3999.9]
    for now in nows:                # one history length: decisions of one minute reuse the last tuple
        assert f._history(now, 600.0) == _direct_history(f, now, 600.0), now   # exact: bit-identical floats
    for now in nows:                # two lengths read alternately
        for history in (600.0, 180.0):
            got = f._history(now, history)
            assert got == _direct_history(f, now, history), (now, history)
    assert len(f._history_memo) > 0


def test_rates_near_the_start_cover_the_elapsed_span():
    # 0.6 req/s from the start: 15 s in, the 60 s window's rate is 0.6 (the 45 s before the trace are unknown,
    # not idle); at the start itself there is no rate at all.
    f = fleet([6.0] * 30, 1000.0)
    assert f.signals(1000.0, 60.0).arrival_rate is None
    assert abs(f.signals(1015.0, 60.0).arrival_rate - 0.6) < 1e-9
    assert abs(f.signals(1120.0, 60.0).arrival_rate - 0.6) < 1e-9


def test_rate_and_ttft_p95_are_the_signals_values():
    """The runner's timeline reads ``rate_and_ttft_p95``: the same two numbers ``signals`` reports, at
    every instant (saturated and idle stretches, replica changes, the trace's start and end)."""
    import random

    rng = random.Random(2)
    counts = [rng.choice([0.0, 5.0, 40.0, 400.0]) for _ in range(300)]
    f = fleet(counts, 5000.0)
    for k in range(1, 330):
        now = 5000.0 + 10.0 * k
        if k % 17 == 0:
            f.scale_to(rng.randint(0, 4), now)
        for window in (60.0, 25.0):
            sig = f.signals(now, window)
            got = f.rate_and_ttft_p95(now, window)
            assert got == (sig.arrival_rate, sig.ttft_p95), (now, window)


def test_per_bin_constants_are_computed_once_per_distinct_sizes():
    """The steady-state constants per bin (saturation rate, iteration time, batch, cost per request) are
    computed once per distinct (prompt, output) pair: the same values as ``saturation`` for each bin, with
    per-bin sizes (a request trace) and one pair for every bin (a count trace)."""
    import numpy as np

    from simulations.fleet.model import saturation

    params = ModelParams()
    for pm, om in ((np.array([100.0, 2500.0, 100.0, 7.0, 2500.0]), np.array([50.0, 800.0, 50.0, 0.5, 900.0])),
                   (300.0, 120.0)):
        f = AggregateFleet([5.0] * 5, bin_seconds=10.0, prompt_mean=pm, output_mean=om, prompt_pool=[100.0],
                           params=params, cold_start=ColdStartModel(100.0, 0.0), start=0.0, initial_replicas=1,
                           slo_ttft=2.5, slo_tpot=0.1)
        for b in range(5):
            lam_sat, t_sat, nmax = saturation(params, f.P[b], f.L[b])
            assert (f._lam_sat[b], f._t_sat[b], f._nmax[b]) == (lam_sat, t_sat, float(nmax))
            assert f._cost[b] == params.beta * max(1.0, f.L[b]) + params.gamma * f.P[b]


def test_window_quantiles_equal_the_plain_weighted_quantile():
    """``signals`` hands ``_weighted_quantile`` the window's served total (summed in the pairs' order) instead
    of summing the weights again: the P95 TTFT and TPOT are the plain quantile's, at every instant."""
    import random

    from simulations.fleet.aggregate_fleet import _weighted_quantile

    rng = random.Random(3)
    f = fleet([rng.choice([0.0, 5.0, 40.0, 400.0, 900.0]) for _ in range(300)], 7000.0)
    f.prompt_pool = sorted(rng.uniform(10, 3000) for _ in range(50))
    for k in range(1, 330):
        now = 7000.0 + 15.0 * k
        if k % 13 == 0:
            f.scale_to(rng.randint(0, 5), now)
        for window in (60.0, 25.0, 600.0):
            sig = f.signals(now, window)
            _, _, _, _, ttft_pairs, tpot_pairs, _ = f._window(now, window)
            base95 = _weighted_quantile(list(ttft_pairs), 0.95)
            assert sig.ttft_p95 == (base95 + f.params.gamma * f.prompt_p95 if base95 is not None else None)
            assert sig.tpot_p95 == _weighted_quantile(list(tpot_pairs), 0.95)


def test_history_ends_at_the_minute_just_ended_at_unix_times():
    # DemandHistoryReader's subquery evaluated at the start of now's minute returns that instant as its newest
    # point (Prometheus includes the end step); at Unix times too, where at + 1e-9 == at in floating point
    f = fleet([6.0] * 400, 1_763_640_000.0 - 1800.0)
    now = 1_763_640_000.0 + 20.0
    pts = f._history(now, 600.0)
    assert [t for t, _ in pts] == [1_763_640_000.0 - 60.0 * k for k in range(9, -1, -1)]
    assert all(abs(r - 0.6) < 1e-12 for _, r in pts)


def test_backlog_never_goes_negative_through_timeouts_at_zero_replicas():
    # A saturated slice zeroes a backlog total under 1e-9 while a sliver of a chunk stays queued; if the fleet
    # then drops to zero replicas, that sliver times out and was subtracted from the zeroed total: -8.9e-16
    # in flight, which KPA's record() and Signals reject (servegen-12 under kpa crashed). Random demand and
    # replica counts, including zero, every 2 s: the backlog and the in-flight count stay >= 0.
    import random

    rng = random.Random(3)
    for trial in range(30):
        counts = [rng.choice((0.0, 0.0, rng.random() * 400.0)) for _ in range(200)]
        f = fleet(counts, 1_763_640_000.0 + rng.random() * 60.0)
        t = f.start
        while t < f.start + 1990.0:
            t += 2.0
            f.advance_to(t)
            assert f.backlog_total >= 0.0 and f.in_flight() >= 0.0, (trial, t, f.backlog_total)
            if rng.random() < 0.2:
                f.scale_to(rng.choice((0, 0, 1, 2, 5)), t)
