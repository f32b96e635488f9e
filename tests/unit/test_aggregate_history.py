"""The aggregate fleet's demand history: the (t, req/s) points a predictive decision folds."""

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams


def fleet(counts, start, bin_s=10.0):
    return AggregateFleet(counts, bin_seconds=bin_s, prompt_mean=100.0, output_mean=50.0, prompt_pool=[100.0],
                          params=ModelParams(), cold_start=ColdStartModel(100.0, 0.0), start=start,
                          initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)


def test_history_rates_are_the_minute_counts():
    # 6 req per 10 s bin = 0.6 req/s; the first minute-long window ends 60 s after the start
    f = fleet([6.0] * 30, 1000.0)
    pts = f._history(1300.0, 600.0)
    assert [t for t, _ in pts] == [1060.0 + 60.0 * i for i in range(5)]
    assert all(abs(r - 0.6) < 1e-12 for _, r in pts)


def test_history_interpolates_within_a_bin():
    # counts 0, 60, 0, ... per 10 s bin: the minute ending mid-bin holds half of that bin's 60 requests
    counts = [0.0] * 12
    counts[6] = 60.0          # bin [1060, 1070)
    f = fleet(counts, 1000.0)
    pts = dict(f._history(1125.0, 60.0))
    assert abs(pts[1125.0] - 30.0 / 60.0) < 1e-12   # window (1065, 1125]: half of bin 6


def _direct_history(f, now, history):
    """The reference: every point computed from scratch (np.arange + np.interp), no memo."""
    import numpy as np

    cum = np.concatenate([[0.0], np.cumsum(f.counts)])
    edges = f.start + f.bin * np.arange(len(cum))
    ts = np.arange(now - history + 60.0, now + 1e-9, 60.0)
    ts = ts[ts - 60.0 >= f.start]
    c = np.interp(ts, edges, cum) - np.interp(ts - 60.0, edges, cum)
    return tuple((float(t), float(x) / 60.0) for t, x in zip(ts, c))


def test_memoised_history_matches_the_direct_computation():
    # irregular counts, a start that is not a whole minute, decision instants every 15 s and a few odd ones
    import random

    rng = random.Random(7)
    f = fleet([rng.random() * 50 for _ in range(400)], 1715299213.25)
    nows = [f.start + 15.0 * k for k in range(1, 260)] + [f.start + 1234.567, f.start + 3999.9]
    for now in nows:
        for history in (600.0, 180.0):
            got = f._history(now, history)
            assert got == _direct_history(f, now, history), (now, history)   # exact: bit-identical floats
    assert len(f._history_memo) > 0
