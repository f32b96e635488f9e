"""The demand forecaster: worked example, ramps, a daily cycle, noise, gaps, and warm start = incremental."""

import math
import random

import pytest

from scaler.forecast import SEASON, STEP, DemandForecaster, ForecastParams, bucket_of

T0 = 1_700_000_000 - 1_700_000_000 % 86400  # midnight UTC, bucket-aligned


def fold_all(values, params=None, start=0):
    fc = DemandForecaster(params=params or ForecastParams())
    for k, y in enumerate(values):
        fc = fc.fold(start + k, y)
    return fc


def at_ahead(fc, h):
    """Forecast h buckets after the last folded one."""
    return fc.at((fc.last_bucket + 0.5 + h) * STEP)


def test_worked_example() -> None:
    fc = fold_all([10, 12, 14], ForecastParams(alpha=0.5, beta=0.5, residual_weight=0.5))
    assert (fc.level, fc.trend, fc.variance) == pytest.approx((12.75, 1.125, 5.125))
    p = at_ahead(fc, 3)
    assert p.rate == pytest.approx(16.125)
    assert p.upper == pytest.approx(22.106, abs=1e-3)


def test_residual_variance_is_the_mean_of_the_first_errors() -> None:
    # alpha = beta = 1e-9: a frozen level (10) and no trend, so each one-step error is y - 10.
    # Errors 4, 1, 1, 1 (rho = 0.05): sigma^2 = mean of their squares (19/4) while n <= 1/rho = 20,
    # not an EWMA that keeps 0.95^3 of the first error's 16.
    params = ForecastParams(alpha=1e-9, beta=1e-9, residual_weight=0.05)
    fc = fold_all([10, 14, 11, 11, 11], params)
    assert fc.variance == pytest.approx((16 + 1 + 1 + 1) / 4, rel=1e-6)
    # After 1/rho errors the EWMA takes over: the 21st error (n = 21) has weight rho, not 1/21.
    fc = fold_all([10] + [11] * 20, params)
    assert fc.variance == pytest.approx(1.0, rel=1e-6)
    fc2 = fc.fold(fc.last_bucket + 1, 13.0)  # error 3
    assert fc2.variance == pytest.approx(0.95 * 1.0 + 0.05 * 9.0, rel=1e-5)


def test_linear_ramp_is_extrapolated() -> None:
    # 1 req/s more every minute for two hours: Holt learns the slope and forecasts 4 minutes ahead.
    fc = fold_all([1.0 * k for k in range(120)])
    p = at_ahead(fc, 4)
    assert p.rate == pytest.approx(119 + 4, rel=0.02)
    # A constant-level forecaster would be 4 req/s short; the upper bound is not below the point.
    assert p.upper >= p.rate


def test_flat_series_has_no_trend_and_tight_bound() -> None:
    fc = fold_all([5.0] * 60)
    p = at_ahead(fc, 4)
    assert p.rate == pytest.approx(5.0) and p.upper == pytest.approx(5.0)


def test_noise_gives_an_upper_bound_that_covers_about_p90() -> None:
    rng = random.Random(7)
    values = [max(0.0, 20 + rng.gauss(0, 2)) for _ in range(600)]
    fc = DemandForecaster()
    covered = total = 0
    for k, y in enumerate(values):
        if k > 60:
            total += 1
            covered += y <= at_ahead(fc, 1).upper
        fc = fc.fold(k, y)
    # z = 1.28: about 90 % of next-bucket values under the bound (Holt's own noise widens it a little).
    assert 0.85 <= covered / total <= 0.97
    assert at_ahead(fc, 1).rate == pytest.approx(20, abs=2)


def test_daily_cycle_switches_on_after_one_day_and_predicts_the_morning_ramp() -> None:
    # Zero at night, 10 req/s from 08:00 to 20:00, two days of history.
    def rate(k):
        minute = k % SEASON
        return 10.0 if 8 * 60 <= minute < 20 * 60 else 0.0

    day1 = fold_all([rate(k) for k in range(SEASON)])
    assert not day1.has_season
    two = fold_all([rate(k) for k in range(SEASON + 7 * 60 + 57)])  # up to 07:57 on day 2
    assert two.has_season
    # At 07:57 nothing arrives, but yesterday traffic came back at 08:00: 5 minutes ahead it is forecast.
    ahead = at_ahead(two, 5)
    assert ahead.rate > 3.0
    # In the middle of the night (04:00) nothing is forecast 5 minutes ahead.
    night = fold_all([rate(k) for k in range(SEASON + 4 * 60)])
    assert at_ahead(night, 5).rate == pytest.approx(0.0, abs=1e-6)
    # Without the season (first day) the same moment forecasts nothing.
    assert at_ahead(fold_all([rate(k) for k in range(7 * 60 + 57)]), 5).rate == pytest.approx(0.0, abs=1e-9)


def test_incremental_and_warm_start_agree() -> None:
    """A replica fed live, one bucket at a time, and a restarted one warm-started from the same history
    hold identical state and forecasts."""
    rng = random.Random(3)
    history = [(T0 + k * STEP, max(0.0, 10 + 5 * math.sin(k / 90) + rng.gauss(0, 1))) for k in range(1600)]
    live = DemandForecaster()
    for t, y in history:
        live = live.extend([(t, y)])
    restarted = DemandForecaster.warm_start(history)
    assert live == restarted
    now = history[-1][0] + 20
    assert live.at(now + 225) == restarted.at(now + 225)


def test_live_observations_are_averaged_per_minute() -> None:
    fc = DemandForecaster()
    for i, y in enumerate([2.0, 4.0, 6.0]):        # three refreshes within minute 0
        fc = fc.observe(T0 + 5 * i, y)
    assert fc.last_bucket is None and fc.pending_count == 3
    fc = fc.observe(T0 + 61, 8.0)                  # minute 1 starts: minute 0 is folded as 4 req/s
    assert fc.last_bucket == bucket_of(T0) and fc.level == 4.0
    # The same minute from history is ignored once folded (one value per bucket).
    assert fc.extend([(T0, 100.0)]) == fc


def test_long_gap_drops_the_trend() -> None:
    fc = fold_all([float(k) for k in range(30)])
    assert fc.trend > 0.5
    after = fc.fold(fc.last_bucket + 60, 29.0)
    assert after.trend == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_bad_rates_are_rejected(bad) -> None:
    with pytest.raises(ValueError, match="rate"):
        DemandForecaster().observe(T0, bad)


def test_path_covers_the_horizon_inclusive() -> None:
    fc = fold_all([1.0] * 10)
    path = fc.path(T0, 225)
    assert [p.at - T0 for p in path] == [0, 60, 120, 180, 225]


def test_restart_from_one_day_agrees_with_a_long_runner() -> None:
    """A scaler replica running for three days and one restarted with the last day and two hours of history
    (one Prometheus range query) forecast the same: the point to float precision, the upper bound to 1e-4
    (its residual variance forgets the first, season-less day at (1 - ρ)^120 over the two extra hours)."""
    rng = random.Random(11)
    days = 3 * SEASON
    history = [(T0 + k * STEP, max(0.0, 20 + 15 * math.sin(2 * math.pi * k / SEASON) + rng.gauss(0, 1)))
               for k in range(days)]
    long_runner = DemandForecaster.warm_start(history)
    restarted = DemandForecaster.warm_start(history[-(SEASON + 120):])
    now = history[-1][0] + 30
    for ahead in (0, 60, 225, 600):
        a, b = long_runner.at(now + ahead), restarted.at(now + ahead)
        assert a.rate == pytest.approx(b.rate, rel=1e-9) and a.upper == pytest.approx(b.upper, rel=1e-4)


def _daily(k):
    return 10.0 + 8.0 * math.sin(2 * math.pi * (k % SEASON) / SEASON) + (3.0 if k % 7 == 0 else 0.0)


@pytest.mark.parametrize("window, horizon", [(225.0, 225.0), (400.0, 225.0), (30.0, 30.0)])
def test_outlook_matches_path_and_at(window, horizon) -> None:
    """``outlook`` (what decide reads, in one pass) gives the same numbers as reading path() and at()."""
    fc = fold_all([_daily(k) for k in range(SEASON + 300)])
    assert fc.has_season
    now = (fc.last_bucket + 1) * STEP + 17.0
    path = fc.path(now, window)
    o = fc.outlook(now, window, horizon)
    assert o.peak_upper == max(p.upper for p in path)
    assert o.peak_rate == max(p.rate for p in path if p.at <= now + horizon + 1e-9)
    at_h = fc.at(now + horizon)
    assert (o.rate_at_horizon, o.upper_at_horizon) == (at_h.rate, at_h.upper)


def test_memoised_reads_belong_to_their_state() -> None:
    """Derived values are memoised per season ring: reading a state, then folding a new bucket and
    reading again, gives exactly what a forecaster built fresh from the same buckets gives."""
    values = [_daily(k) for k in range(SEASON + 200)]
    fc = fold_all(values[:-1])
    now = (fc.last_bucket + 1) * STEP + 5.0
    before = (fc.outlook(now, 225.0, 225.0), fc.yesterday_peak(now, 225.0))
    later = fc.fold(len(values) - 1, values[-1]).observe_tokens(1000.0, 200.0)  # memo carried through tokens
    fresh = fold_all(values).observe_tokens(1000.0, 200.0)
    assert later == fresh and later._memo is not fc._memo
    now2 = now + STEP
    assert later.outlook(now2, 225.0, 225.0) == fresh.outlook(now2, 225.0, 225.0)
    assert later.yesterday_peak(now2, 225.0) == fresh.yesterday_peak(now2, 225.0)
    # and reading the old state again still gives its own numbers
    assert (fc.outlook(now, 225.0, 225.0), fc.yesterday_peak(now, 225.0)) == before


def _states_with_gaps():
    """Forecasters with a season, with gaps in the ring (skipped buckets), ending at various ring slots."""
    rng = random.Random(11)
    out = []
    for n in (SEASON + 40, SEASON + 777, 2 * SEASON + 1555):
        fc = DemandForecaster()
        k = 0
        while k < n:
            fc = fc.fold(k, max(0.0, _daily(k) + rng.gauss(0.0, 2.0)))
            k += 1 if rng.random() > 0.05 else rng.randint(2, 15)   # some missing minutes, some long gaps
        out.append(fc)
    return out


def test_outlook_is_bit_identical_to_the_point_formula_at_any_instant() -> None:
    """``outlook`` inlines ``_point`` for speed: at many instants, windows and horizons (h clamped at 1,
    fractional h, a horizon off the minute grid) its numbers equal ``_point``'s exactly."""
    for fc in _states_with_gaps():
        then = fc._then()
        base = (fc.last_bucket + 1) * STEP
        for now in [base + x for x in (-59.0, -30.0, 0.0, 0.5, 15.0, 29.99, 44.0, 59.0, 75.0, 130.0)]:
            for window, horizon in ((277.6, 277.6), (400.0, 225.0), (30.0, 30.0), (600.0, 600.0)):
                ref = [(t, fc._point(t, then)) for t in fc._times(now, window)]
                o = fc.outlook(now, window, horizon)
                assert o.peak_upper == max(u for _, (_, u, _) in ref)
                assert o.peak_rate == max(r for t, (r, _, _) in ref if t <= now + horizon + 1e-9)
                r_h, u_h, _ = fc._point(now + horizon, then)
                assert (o.rate_at_horizon, o.upper_at_horizon) == (r_h, u_h)


def test_yesterday_peak_is_the_max_over_the_held_buckets() -> None:
    """The run-wise scan equals the plain definition: max of season[i mod RING] over i in the range whose
    slot still holds bucket i (ranges that wrap around the ring, gaps, buckets already overwritten)."""
    from scaler.forecast import RING

    def reference(fc, now, horizon):
        j = fc.params.wake_jitter
        lo, hi = bucket_of(now) - SEASON - j, bucket_of(now + horizon) - SEASON + j
        return max((fc.season[i % RING] for i in range(lo, hi + 1) if fc.season_at[i % RING] == i), default=None)

    unbroken = fold_all([_daily(k) for k in range(SEASON + 900)])   # no gap: the slice path
    unbroken_late_gap = unbroken.fold(unbroken.last_bucket + 5, 3.0)  # a gap inside yesterday's window
    for fc in _states_with_gaps() + [unbroken, unbroken_late_gap]:
        base = (fc.last_bucket + 1) * STEP
        for now in [base + 60.0 * m + 7.0 for m in range(-3, 4)] + [base - 2 * 86400.0, base - 86400.0 + 3.0]:
            for horizon in (0.0, 225.0, 3600.0, 200 * 60.0):
                fc._memo.clear()
                assert fc.yesterday_peak(now, horizon) == reference(fc, now, horizon), (now, horizon)


def test_memo_carried_through_a_fold_is_what_the_new_ring_gives() -> None:
    """A fold keeps the memoised Y(j) its new slot does not touch: every kept entry, and every forecast read
    from a state with a carried memo, equals the same read on a copy of that state with an empty memo. Reads
    between folds fill the memo; gaps and a ring that wraps (evicted buckets) are both covered."""
    import dataclasses

    rng = random.Random(5)
    fc, k, checked = DemandForecaster(), 0, 0
    while k < SEASON + 400:   # past RING: the ring wraps, folds evict
        fc = fc.fold(k, max(0.0, _daily(k) + rng.gauss(0.0, 2.0)))
        now = (k + 1) * STEP + rng.choice((0.0, 15.0, 30.0, 45.0))
        fresh = dataclasses.replace(fc)          # same state, empty memo
        assert not fresh._memo
        for j, v in list(fc._memo.items()):
            assert fresh._yesterday(j) == v, (k, j)
            checked += 1
        assert fc.outlook(now, 277.6, 277.6) == fresh.outlook(now, 277.6, 277.6)
        assert fc.yesterday_peak(now, 277.6) == fresh.yesterday_peak(now, 277.6)
        if k % 151 == 0:   # a day-long window: it reads Y(j) up to the newest buckets, which the next folds write
            assert fc.outlook(now, 86400.0, 600.0) == fresh.outlook(now, 86400.0, 600.0)
        k += 1 if rng.random() > 0.03 else rng.randint(2, 8)
    assert checked > SEASON   # memo entries were carried and checked, not an empty loop


def test_spread_memo_is_bounded_at_arbitrary_instants() -> None:
    """A server decides at arbitrary instants (every h distinct): the memo of outlook's spread factors is
    cleared at its bound instead of growing, and the numbers stay the formula's."""
    from scaler.forecast import _SPREADS_MAX

    fc = fold_all([_daily(k) for k in range(200)])
    then, rng = fc._then(), random.Random(3)
    base = (fc.last_bucket + 1) * STEP
    for _ in range(_SPREADS_MAX + 500):
        now = base + rng.uniform(0.0, 600.0)
        o = fc.outlook(now, 225.0, 225.0)
        assert len(fc.params._spreads) <= _SPREADS_MAX
    assert o.upper_at_horizon == fc._point(now + 225.0, then)[1]


def test_observe_caps_absurd_rates():
    """Two finite observations whose sum overflows (1e308 + 1e308) are capped, never folded as inf
    (found by tests/unit/test_policy_property.py)."""
    from scaler.forecast import MAX_OBSERVED_RATE, DemandForecaster

    fc = DemandForecaster()
    t0 = 1_700_000_000.0
    fc = fc.observe(t0, 1e308).observe(t0 + 10, 1e308).observe(t0 + 70, 5.0)
    assert fc.last_bucket is not None
    assert max(v for v in fc.season if v is not None) == MAX_OBSERVED_RATE
