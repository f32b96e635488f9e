"""Knative's KPA (simulations.kpa): stable/panic windows, rate limits, scale to zero after the grace period."""

import pytest

from simulations.kpa import KnativeKpa


def feed(kpa, start, end, value):
    for t in range(start, end):
        kpa.record(float(t), value)


def test_panic_worked_example() -> None:
    """Docstring example: target 10, 1 ready pod, 54 s at 0 then 6 s at 50 in flight."""
    kpa = KnativeKpa(target_concurrency=10)
    feed(kpa, 0, 54, 0.0)
    feed(kpa, 54, 60, 50.0)
    assert kpa.window_average(59, 60) == pytest.approx(5.0)
    assert kpa.window_average(59, 6) == pytest.approx(50.0)
    assert kpa.desired(59.0, ready_pods=1) == 5
    assert kpa.panicking


def test_stable_mode_follows_the_60s_average() -> None:
    kpa = KnativeKpa(target_concurrency=10)
    feed(kpa, 0, 120, 35.0)
    assert kpa.desired(119.0, ready_pods=4) == 4 and not kpa.panicking
    feed(kpa, 120, 180, 15.0)          # the stable average falls to 15 -> 2 pods; 4 / 2 = 2 allowed
    assert kpa.desired(179.0, ready_pods=4) == 2


def test_panic_never_scales_down_and_ends_after_a_stable_window() -> None:
    kpa = KnativeKpa(target_concurrency=10)
    feed(kpa, 0, 60, 10.0)
    assert kpa.desired(59.0, ready_pods=1) == 1
    feed(kpa, 60, 66, 80.0)            # panic: 8 pods wanted vs 1 ready
    assert kpa.desired(65.0, ready_pods=1) == 8 and kpa.panicking
    feed(kpa, 66, 80, 10.0)            # the surge is over; still in panic: hold 8
    assert kpa.desired(79.0, ready_pods=8) == 8 and kpa.panicking
    feed(kpa, 80, 126, 10.0)
    assert kpa.desired(125.0, ready_pods=8) == 8 and kpa.panicking     # 65 + 60 = 125, not yet past
    kpa.record(126.0, 10.0)
    # panic over at 126 (65 + 60 < 126); the stable average (67..126) is 10 -> 1 pod, but at most halving from 8
    assert kpa.desired(126.0, ready_pods=8) == 4 and not kpa.panicking
    feed(kpa, 127, 200, 10.0)
    assert kpa.desired(199.0, ready_pods=2) == 1


@pytest.mark.parametrize(
    "ready, demand, kw, expected",
    [
        pytest.param(8, 0.0, {}, 4, id="scale-down-at-most-halves"),
        pytest.param(1, 0.0, {"scale_to_zero_grace": 0.0}, 0, id="one-pod-may-go-to-zero"),
        pytest.param(2, 1000.0, {"max_scale_up_rate": 2.0, "max_scale": 1000}, 4, id="scale-up-rate-cap"),
        pytest.param(2, 1000.0, {}, 100, id="max-scale"),
        pytest.param(2, 0.0, {"min_scale": 3}, 3, id="min-scale"),
        pytest.param(0, 5.0, {}, 1, id="zero-ready-with-demand-gives-one"),
    ],
)
def test_limits(ready, demand, kw, expected) -> None:
    kpa = KnativeKpa(target_concurrency=10, **kw)
    feed(kpa, 0, 60, demand)
    assert kpa.desired(59.0, ready_pods=ready) == expected


def test_scale_to_zero_after_stable_window_plus_grace() -> None:
    kpa = KnativeKpa(target_concurrency=10)
    feed(kpa, 0, 100, 5.0)
    pods = kpa.desired(99.0, ready_pods=1)
    assert pods == 1
    zero_at = None
    for t in range(100, 260):
        kpa.record(float(t), 0.0)
        pods = kpa.desired(float(t), ready_pods=pods)
        if pods == 0 and zero_at is None:
            zero_at = t
    # last traffic at 99: the 60 s average is 0 from t=159; 30 s of grace -> 0 at t=189
    assert zero_at == 189


def test_window_average_weighs_samples_by_the_time_they_cover() -> None:
    kpa = KnativeKpa(target_concurrency=1, stable_window=10, panic_window=2)
    kpa.record(0.0, 4.0)        # covers (-1, 0]
    kpa.record(0.0, 2.0)        # same instant: averaged -> 3
    kpa.record(3.0, 7.0)        # covers (0, 3]
    assert kpa.window_average(3.0, 10) == pytest.approx((3 * 1 + 7 * 3) / 4)
    assert kpa.window_average(3.0, 2) == pytest.approx(7.0)
    assert kpa.window_average(5.0, 2) == pytest.approx(7.0)          # the last sample holds: a gap is not 0
    with pytest.raises(ValueError, match="back in time"):
        kpa.record(2.0, 1.0)


def test_ten_second_bins_average_like_per_second_samples() -> None:
    fine, coarse = KnativeKpa(target_concurrency=10), KnativeKpa(target_concurrency=10)
    for t in range(1, 301):
        fine.record(float(t), 30.0 if t > 200 else 5.0)
    for t in range(10, 301, 10):
        coarse.record(float(t), 30.0 if t > 200 else 5.0)
    assert coarse.window_average(300.0, 60) == pytest.approx(fine.window_average(300.0, 60))
    assert coarse.window_average(250.0, 60) == pytest.approx(fine.window_average(250.0, 60))


def test_no_data_is_no_decision_not_zero() -> None:
    kpa = KnativeKpa(target_concurrency=10, min_scale=0)
    assert kpa.desired(0.0, ready_pods=3) == 3          # no sample yet: keep the 3 running pods
    kpa2 = KnativeKpa(target_concurrency=10, min_scale=2)
    assert kpa2.desired(0.0, ready_pods=0) == 2
    with pytest.raises(LookupError):
        kpa2.window_average(0.0, 60)


def test_settings_and_samples_are_validated() -> None:
    with pytest.raises(ValueError, match="target_concurrency=0"):
        KnativeKpa(target_concurrency=0)
    with pytest.raises(ValueError, match="panic_window=90"):
        KnativeKpa(target_concurrency=1, panic_window=90)
    with pytest.raises(ValueError, match="concurrency=-1"):
        KnativeKpa(target_concurrency=1).record(0.0, -1)


def test_long_runs_trim_history_without_changing_averages() -> None:
    kpa = KnativeKpa(target_concurrency=10)
    values = [float((t * 7919) % 23) for t in range(12_000)]
    for t, v in enumerate(values):
        kpa.record(float(t), v)
    assert len(kpa._t) < 12_000                                   # history was trimmed
    assert kpa.window_average(11_999.0, 60) == pytest.approx(sum(values[-60:]) / 60)
    assert kpa.window_average(11_999.0, 6) == pytest.approx(sum(values[-6:]) / 6)


def kpa_steps(target, steps):
    """Knative's autoscaler_test.go style: (seconds, stable, panic, ready) -> scale results."""
    kpa = KnativeKpa(target_concurrency=target, max_scale=10_000)
    return [kpa.scale(float(t), stable, panic, ready) for t, stable, panic, ready in steps]


@pytest.mark.parametrize(
    "target, steps, expected",
    [
        # knative/serving pkg/autoscaler/scaling/autoscaler_test.go cases (fake metric client: stable/panic given)
        pytest.param(10, [(0, 100, 100, 8), (1, 50, 50, 8)], [10, 5], id="knative-StableModeDecrease"),
        pytest.param(10, [(0, 1, 0, 1), (1, 0, 0, 1)], [1, 0], id="knative-StableModeNoTrafficScaleToZero"),
        pytest.param(10, [(0, 50, 100, 1)], [10], id="knative-PanicModeDoublePodCount"),
        pytest.param(1, [(0, 6, 6, 1), (1, 36, 36, 6), (2, 216, 216, 36), (3, 1296, 1296, 216),
                         (4, 1296, 1296, 1296)], [6, 36, 216, 1296, 1296],
                     id="knative-PanicModeExponentialTrackAndStabilize"),
        # in panic the count never drops; 61 s after the last over-threshold instant it may halve
        pytest.param(10, [(0, 100, 100, 1), (30, 10, 10, 10), (60, 10, 10, 10), (61, 10, 10, 10)], [10, 10, 10, 5],
                     id="panic-then-unpanic-scale-down"),
    ],
)
def test_knative_autoscaler_cases(target, steps, expected) -> None:
    assert kpa_steps(target, steps) == expected


def test_scale_down_delay_holds_the_peak() -> None:
    """Docstring example: delay 60 s, count 8 at t = 100 then 2 -> 8 through t = 158, 2 at t = 160."""
    kpa = KnativeKpa(target_concurrency=10, scale_down_delay=60)
    assert kpa.scale(100.0, 80.0, 80.0, ready_pods=8) == 8
    for t in range(102, 160, 2):
        assert kpa.scale(float(t), 20.0, 20.0, ready_pods=4) == 8, t
    assert kpa.scale(160.0, 20.0, 20.0, ready_pods=4) == 2
    # a higher count is taken at once (the delay only holds scale-down)
    assert kpa.scale(162.0, 90.0, 90.0, ready_pods=8) == 9


def test_scale_down_delay_off_by_default_halves_per_tick() -> None:
    """Knative's default (no delay): each 2 s decision may halve the *ready* pods (max-scale-down-rate 2),
    whatever the 60 s average says, so 40 -> 20 -> 10 -> 5 in three ticks on a low stable concurrency."""
    kpa = KnativeKpa(target_concurrency=10)
    feed(kpa, 0, 120, 15.0)
    ready = 40
    seen = []
    for t in (120.0, 122.0, 124.0):
        ready = kpa.desired(t, ready_pods=ready)
        seen.append(ready)
    assert seen == [20, 10, 5]


def test_scale_down_delay_rejects_bad_values() -> None:
    for bad in (-1.0, 3601.0, float("nan")):
        with pytest.raises(ValueError, match="scale_down_delay"):
            KnativeKpa(target_concurrency=10, scale_down_delay=bad)


def test_both_window_averages_equal_the_single_ones() -> None:
    """``window_averages`` (what a decision reads) is exactly ``window_average`` for each window: before,
    at and after samples, at the first sample (the origin binds), with coarse and repeated samples."""
    import random

    rng = random.Random(3)
    kpa = KnativeKpa(target_concurrency=10)
    t = 100.0
    instants = []
    for _ in range(12_000):
        t += rng.choice([0.0, 0.5, 1.0, 2.0, 10.0])
        kpa.record(t, rng.random() * 40)
        instants.append(t)
        for now in (t - 7.0, t - 0.3, t, t + 0.7, t + 3.0, t + 90.0):   # inside, at and after the samples
            assert kpa.window_averages(now) == (kpa.window_average(now, 60.0), kpa.window_average(now, 6.0))
    assert len(kpa._t) < len(set(instants))   # long enough that the history was trimmed (origin re-based)


def test_scale_clamps_as_min_max() -> None:
    """``scale``'s counts are ``min(max(ceil(c / target), max_down), max_up)`` (autoscaler.go), checked outside
    panic against that expression on random inputs, including max_up below max_down (rates near 1)."""
    import math
    import random

    rng = random.Random(5)
    for _ in range(3000):
        up, down = rng.choice([1.01, 1.5, 1000.0]), rng.choice([1.01, 2.0, 50.0])
        kpa = KnativeKpa(target_concurrency=rng.choice([1.0, 7.5, 32.0]), max_scale_up_rate=up,
                         max_scale_down_rate=down, panic_threshold=1e9)
        stable, ready = rng.random() * 500, rng.randint(0, 60)
        r = max(1.0, float(ready))
        expect = int(min(max(math.ceil(stable / kpa.target), math.floor(r / down)), math.ceil(up * r)))
        assert kpa.scale(0.0, stable, stable, ready) == expect
