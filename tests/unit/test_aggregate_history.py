"""The aggregate fleet's demand history (the points a predictive decision folds) equals its numpy reference.

``AggregateFleet._history`` is pure Python for speed; these tests pin it, bit for bit, to the formula it
replaced: ``np.arange(now - history + 60, now + 1e-9, 60)`` sample times and ``np.interp`` over the
cumulative bin counts.
"""

import numpy as np

from simulations.fleet import AggregateFleet, ColdStartModel, ModelParams


def reference(counts, start, bin_s, now, history):
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    edges = start + bin_s * np.arange(len(cum))
    ts = np.arange(now - history + 60.0, now + 1e-9, 60.0)
    ts = ts[ts - 60.0 >= start]
    c = np.interp(ts, edges, cum) - np.interp(ts - 60.0, edges, cum)
    return tuple((float(t), float(x) / 60.0) for t, x in zip(ts, c))


def fleet(counts, start, bin_s=10.0):
    return AggregateFleet(counts, bin_seconds=bin_s, prompt_mean=100.0, output_mean=50.0, prompt_pool=[100.0],
                          params=ModelParams(), cold_start=ColdStartModel(100.0, 0.0), start=start,
                          initial_replicas=1, slo_ttft=2.5, slo_tpot=0.1)


def test_history_matches_numpy_reference():
    rng = np.random.default_rng(7)
    start = 1_700_000_003.7
    counts = rng.poisson(30, size=2000).astype(float)
    counts[100:160] = 0.0   # an idle stretch
    f = fleet(counts, start)
    end = start + 10.0 * len(counts)
    nows = np.concatenate([rng.uniform(start - 100, end + 200, 3000),
                           start + 15.0 * np.arange(1, 1000),      # a controller's tick grid
                           start + 10.0 * np.arange(0, 200)])      # exactly on bin edges
    for now in nows:
        for history in (600.0, 93_600.0, 59.0, 0.5):
            got = f._history(float(now), history)
            want = reference(counts, start, 10.0, float(now), history)
            assert got == want, (now, history)


def test_history_rates_are_the_minute_counts():
    # 6 req per 10 s bin = 0.6 req/s; the first minute-long window ends 60 s after the start
    f = fleet([6.0] * 30, 1000.0)
    pts = f._history(1300.0, 600.0)
    assert [t for t, _ in pts] == [1060.0 + 60.0 * i for i in range(5)]
    assert all(abs(r - 0.6) < 1e-12 for _, r in pts)
