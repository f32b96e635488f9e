"""KEDA's scale loop + HPA (simulations.keda.operator): activation, cooldown, errors, fallback, push.

Time moves by arithmetic. Each timeline names the source rule it pins (see the module docstrings).
"""

import math

import pytest

from scaler.errors import SourceError, SourceTimeout
from simulations.keda import (
    Fallback,
    HpaBehavior,
    KedaHpa,
    ScaledObjectSpec,
    ScalingPolicy,
    ScalingRules,
    ThresholdTrigger,
    sanitize,
)
from simulations.keda.triggers import metric_sum, read_trigger

T0 = 1_700_000_000.0


class FakeTrigger:
    """A hand-written trigger: value and activity by time, an error hook, and a call log."""

    def __init__(self, value=0.0, *, target=1.0, active=None, metric_type="AverageValue"):
        self.value = value            # float, list of floats, or callable(now)
        self.active = active          # None -> value > 0
        self._target = target
        self.metric_type = metric_type
        self.fail_metric = False      # GetMetrics raises
        self.fail_active = False      # IsActive raises
        self.fail_every_other = False
        self.calls = []

    def _v(self, now):
        return self.value(now) if callable(self.value) else self.value

    def target(self):
        return self._target

    def metric(self, now):
        self.calls.append(("metric", now))
        if self.fail_every_other and len(self.calls) % 4 == 1:
            raise SourceTimeout("flaky", source="fake")
        if self.fail_metric:
            raise SourceTimeout("metric down", source="fake")
        return self._v(now)

    def is_active(self, now):
        self.calls.append(("active", now))
        if self.fail_active:
            raise SourceError("IsActive failed", source="fake")
        if self.active is not None:
            return self.active(now) if callable(self.active) else self.active
        v = self._v(now)
        return (sum(v) if isinstance(v, list) else v) > 0


def drive(k, until, *, every=5.0, start=T0, ready_lag=False):
    """Step every ``every`` seconds; status/ready follow spec.replicas at once."""
    t = start
    while t <= until:
        k.step(t, status_replicas=k.replicas, ready_replicas=k.replicas)
        t += every


def evs(k):
    return [(e.t - T0, e.source, e.from_replicas, e.to_replicas) for e in k.events]


# ---- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(2.34567, 2.346, id="round-3-decimals"),
        pytest.param(2.0004, 2.0, id="round-down"),
        pytest.param(float("nan"), 0.0, id="nan-is-0"),
        pytest.param(float("inf"), 0.0, id="inf-is-0"),
        pytest.param(-3.0, 0.0, id="negative-is-0"),
        pytest.param(7, 7.0, id="int"),
    ],
)
def test_sanitize(raw, expected) -> None:
    assert sanitize(raw) == expected


def test_sanitize_rounds_as_the_3_decimal_format() -> None:
    """``sanitize`` rounds with ``round(v, 3)``: the same float as formatting with 3 decimals and parsing back
    (``float(f"{v:.3f}")``, Go's ``FormatFloat(v, 'f', 3, 64)``), on halfway cases, whole numbers, tiny and
    huge values and random ones across magnitudes."""
    import random

    rng = random.Random(5)
    values = [0.0005, 0.0015, 0.0025, 1.0005, 2.0005, 2.675, 1e-7, 5e-324, 1e300, 1.7976931348623157e308, 0.0,
              7.0, 123456789.0, 2.0 ** 53, 0.1 + 0.2]
    values += [rng.random() * 10.0 ** rng.randint(-6, 12) for _ in range(20000)]
    values += [k / 1000 + rng.choice((0.0, 0.0005, -0.0005, 1e-12)) for k in range(1, 20000)]
    for v in values:
        v = abs(v)
        got, want = sanitize(v), float(f"{v:.3f}")
        assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want), v


def test_values_are_summed_after_sanitizing() -> None:
    assert metric_sum([1.5, -2.0, float("nan"), 0.0004, 2.25]) == pytest.approx(3.75)


def test_is_active_error_discards_the_values_and_retry_once() -> None:
    trig = FakeTrigger(5.0)
    trig.fail_active = True
    with pytest.raises(SourceError):
        read_trigger(trig, T0)
    assert [c[0] for c in trig.calls] == ["metric", "active", "metric", "active"]   # asked twice
    flaky = FakeTrigger(5.0)
    flaky.fail_every_other = True
    assert read_trigger(flaky, T0).usage == 5.0                                     # the retry succeeds


def test_threshold_trigger_is_prometheus_semantics() -> None:
    trig = ThresholdTrigger(lambda t: 2.0, threshold=5, activation_threshold=2)
    assert (trig.target(), trig.metric(0), trig.is_active(0), trig.metric_type) == (5.0, 2.0, False, "AverageValue")
    assert ThresholdTrigger(lambda t: 2.5, threshold=5, activation_threshold=2).is_active(0)
    with pytest.raises(ValueError, match="threshold=0"):
        ThresholdTrigger(lambda t: 1, threshold=0)
    with pytest.raises(ValueError, match="metricType='Utilization'"):
        ThresholdTrigger(lambda t: 1, threshold=1, metric_type="Utilization")


# ---- activation and cooldown ----------------------------------------------------------------------
def test_activation_from_zero_to_one_then_hpa() -> None:
    demand = {"v": 0.0}
    trig = FakeTrigger(lambda t: demand["v"])
    k = KedaHpa(ScaledObjectSpec(polling_interval=30), [trig], start=T0, replicas=0)
    drive(k, T0 + 40)
    assert k.replicas == 0 and k.events == []
    demand["v"] = 3.0
    drive(k, T0 + 75, start=T0 + 45)
    # poll at 60 activates to max(min 0, 1) = 1; the HPA (sync at 60, after the poll) asks ceil(3/1) = 3
    assert evs(k) == [(60.0, "keda", 0, 1), (60.0, "hpa", 1, 3)]


def test_activation_goes_to_min_replica_count_with_idle() -> None:
    trig = FakeTrigger(lambda t: 1.0 if t >= T0 + 100 else 0.0)
    spec = ScaledObjectSpec(polling_interval=30, min_replica_count=3, idle_replica_count=0, cooldown_period=60)
    k = KedaHpa(spec, [trig], start=T0, replicas=0)
    drive(k, T0 + 130)
    assert evs(k)[0] == (120.0, "keda", 0, 3)


def test_cooldown_deactivates_only_after_cooldown_since_last_active() -> None:
    trig = FakeTrigger(lambda t: 1.0 if t < T0 + 70 else 0.0)
    spec = ScaledObjectSpec(polling_interval=30, cooldown_period=300)
    k = KedaHpa(spec, [trig], start=T0, replicas=0)
    drive(k, T0 + 600)
    # last active poll at 60; 60 + 300 < t first holds at the poll at 390
    assert evs(k) == [(0.0, "keda", 0, 1), (390.0, "keda", 1, 0)]
    assert k.last_active_time == T0 + 60


def test_min_replica_count_1_never_deactivates() -> None:
    trig = FakeTrigger(0.0)
    k = KedaHpa(ScaledObjectSpec(polling_interval=30, min_replica_count=1), [trig], start=T0, replicas=1)
    drive(k, T0 + 3600, every=15)
    assert k.replicas == 1 and k.events == []


def test_below_min_is_raised_to_min_when_inactive() -> None:
    k = KedaHpa(ScaledObjectSpec(min_replica_count=2), [FakeTrigger(0.0)], start=T0, replicas=0)
    k.step(T0, status_replicas=0, ready_replicas=0)
    assert evs(k) == [(0.0, "keda", 0, 2)]


@pytest.mark.parametrize(
    "initial, expected_t",
    [pytest.param(0, 30.0, id="default-0-first-poll-after-creation"),
     pytest.param(120, 150.0, id="initialCooldownPeriod-120")],
)
def test_initial_cooldown_when_never_active(initial, expected_t) -> None:
    spec = ScaledObjectSpec(polling_interval=30, initial_cooldown_period=initial)
    k = KedaHpa(spec, [FakeTrigger(0.0)], start=T0, replicas=2)
    drive(k, T0 + 300, every=30)
    assert [e for e in evs(k) if e[1] == "keda"] == [(expected_t, "keda", 2, 0)]


def test_idle_replica_count_deactivates_to_idle() -> None:
    trig = FakeTrigger(lambda t: 1.0 if t < T0 + 10 else 0.0)
    spec = ScaledObjectSpec(polling_interval=30, min_replica_count=2, idle_replica_count=0, cooldown_period=60)
    k = KedaHpa(spec, [trig], start=T0, replicas=0)
    drive(k, T0 + 200, every=30)
    assert evs(k) == [(0.0, "keda", 0, 2), (90.0, "keda", 2, 0)]


# ---- errors and fallback --------------------------------------------------------------------------
def test_errors_without_fallback_keep_count_and_block_scale_to_zero() -> None:
    trig = FakeTrigger(4.0)
    k = KedaHpa(ScaledObjectSpec(polling_interval=30, cooldown_period=60), [trig], start=T0, replicas=0)
    drive(k, T0 + 30)
    assert k.replicas == 4
    trig.fail_metric = True
    drive(k, T0 + 3600, start=T0 + 35)
    assert k.replicas == 4 and k.last_poll == (False, True)
    assert not k.fallback_active


def test_is_active_error_alone_blocks_hpa_and_deactivation() -> None:
    trig = FakeTrigger(0.0)
    k = KedaHpa(ScaledObjectSpec(polling_interval=30, cooldown_period=60), [trig], start=T0, replicas=3)
    trig.fail_active = True
    drive(k, T0 + 900)
    assert k.replicas == 3 and k.events == []


def test_fallback_after_failure_threshold_lands_on_fallback_replicas() -> None:
    trig = FakeTrigger(2.0)
    spec = ScaledObjectSpec(polling_interval=30, fallback=Fallback(failure_threshold=3, replicas=6))
    k = KedaHpa(spec, [trig], start=T0, replicas=2)
    drive(k, T0 + 50)
    assert k.replicas == 2
    trig.fail_metric = True
    drive(k, T0 + 120, start=T0 + 55)
    # HPA syncs at 60, 75, 90 fail (failures 1..3 <= threshold): no change; at 105 failure 4 > 3 -> fallback 6
    assert evs(k) == [(105.0, "hpa", 2, 6)]
    assert k.events[0].reason.endswith("(fallback)")
    assert k.fallback_active and k.failures == [5]
    trig.fail_metric = False
    drive(k, T0 + 140, start=T0 + 125)
    assert k.failures == [0] and not k.fallback_active


def test_fallback_within_tolerance_keeps_count() -> None:
    """target*R over status.replicas: 11 vs 10 is a ratio 1.1, inside the tolerance: the HPA stays at 10."""
    trig = FakeTrigger(10.0)
    spec = ScaledObjectSpec(polling_interval=30, fallback=Fallback(failure_threshold=0, replicas=11))
    k = KedaHpa(spec, [trig], start=T0, replicas=10)
    trig.fail_metric = True
    drive(k, T0 + 60, every=15)
    assert k.replicas == 10 and k.fallback_active


@pytest.mark.parametrize(
    "behavior, current, expected",
    [pytest.param("static", 2, 6, id="static"),
     pytest.param("currentReplicasIfHigher", 8, 8, id="if-higher-keeps-8"),
     pytest.param("currentReplicasIfLower", 3, 3, id="if-lower-keeps-3"),
     pytest.param("currentReplicas", 4, 4, id="current")],
)
def test_fallback_behaviors(behavior, current, expected) -> None:
    trig = FakeTrigger(1.0)
    trig.fail_metric = True
    spec = ScaledObjectSpec(fallback=Fallback(0, 6, behavior),
                            behavior=HpaBehavior(scale_down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),))))
    k = KedaHpa(spec, [trig], start=T0, replicas=current)
    drive(k, T0 + 30, every=15)
    assert k.replicas == expected


def test_fallback_value_metric_divides_by_ready() -> None:
    trig = FakeTrigger(1.0, metric_type="Value")
    trig.fail_metric = True
    k = KedaHpa(ScaledObjectSpec(fallback=Fallback(0, 6)), [trig], start=T0, replicas=2)
    k.step(T0, status_replicas=2, ready_replicas=2)
    assert k.replicas == 6


def test_fallback_does_not_wake_from_zero_and_no_reads_at_zero() -> None:
    trig = FakeTrigger(0.0)
    trig.fail_metric = True
    spec = ScaledObjectSpec(polling_interval=30, fallback=Fallback(0, 3))
    k = KedaHpa(spec, [trig], start=T0, replicas=0)
    drive(k, T0 + 120, every=15)
    assert k.replicas == 0 and k.failures == [0]          # the HPA is disabled at 0: no metric reads, no count
    assert len(trig.calls) == 5 * 2                         # 5 polls (0..120) x one retry each


def test_partial_error_while_active_does_not_renew_last_active() -> None:
    good, bad = FakeTrigger(1.0), FakeTrigger(1.0)
    k = KedaHpa(ScaledObjectSpec(polling_interval=30, min_replica_count=1), [good, bad], start=T0, replicas=1)
    drive(k, T0)
    assert k.last_active_time == T0
    bad.fail_metric = True
    drive(k, T0 + 120, start=T0 + 5)
    assert k.last_active_time == T0 and k.last_poll == (True, True)


# ---- push, several triggers, HPA view -------------------------------------------------------------
def test_push_true_activates_at_once_and_renews_cooldown() -> None:
    trig = FakeTrigger(0.0)
    spec = ScaledObjectSpec(polling_interval=30, cooldown_period=60, push=True)
    k = KedaHpa(spec, [trig], start=T0, replicas=0)
    drive(k, T0 + 10)
    k.push_active(T0 + 12.5)
    assert evs(k) == [(12.5, "keda", 0, 1)]
    drive(k, T0 + 200, start=T0 + 15)
    # last active 12.5 (the push): 12.5 + 60 < 90 is the first poll that may deactivate
    assert evs(k)[-1] == (90.0, "keda", 1, 0)


def test_push_on_a_polling_trigger_is_an_error() -> None:
    k = KedaHpa(ScaledObjectSpec(), [FakeTrigger()], start=T0, replicas=0)
    with pytest.raises(ValueError, match="external-push"):
        k.push_active(T0)


def test_largest_trigger_wins() -> None:
    k = KedaHpa(ScaledObjectSpec(), [FakeTrigger(2.0), FakeTrigger(30.0, target=5.0)], start=T0, replicas=1)
    k.step(T0, status_replicas=1, ready_replicas=1)
    # proposals 2 and ceil(30/5) = 6: 6 wins; the default scale-up limit from 1 is max(1+4, 2) = 5
    assert k.replicas == 5
    k.step(T0 + 15, status_replicas=5, ready_replicas=5)
    assert k.replicas == 6


def test_status_replicas_counts_unready_pods() -> None:
    """6 waiting over target 1 with 6 pods requested but 1 ready: ratio 1.0 over status.replicas -> no change."""
    k = KedaHpa(ScaledObjectSpec(), [FakeTrigger(6.0)], start=T0, replicas=6)
    k.step(T0, status_replicas=6, ready_replicas=1)
    assert k.replicas == 6 and k.events == []


def test_seeds_keda_threshold_timeline() -> None:
    """The seeds' ScaledObject: threshold 5, activation 2, polling 15, +1 pod / 60 s after a 30 s window."""
    spec = ScaledObjectSpec(
        polling_interval=15, cooldown_period=300, min_replica_count=1,
        behavior=HpaBehavior(scale_up=ScalingRules(30, (ScalingPolicy("Pods", 1, 60),)),
                             scale_down=ScalingRules(300, (ScalingPolicy("Pods", 1, 120),))))
    trig = ThresholdTrigger(lambda t: 50.0, threshold=5, activation_threshold=2)
    k = KedaHpa(spec, [trig], start=T0, replicas=1)
    drive(k, T0 + 300, every=15)
    ups = [(e[0], e[3]) for e in evs(k)]
    assert ups == [(30.0, 2), (90.0, 3), (150.0, 4), (210.0, 5), (270.0, 6)]


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="at least one trigger"):
        KedaHpa(ScaledObjectSpec(), [], start=T0, replicas=0)
    bad = FakeTrigger(metric_type="Utilization")
    with pytest.raises(ValueError, match=r"triggers\[0\].metricType='Utilization'"):
        KedaHpa(ScaledObjectSpec(), [bad], start=T0, replicas=0)
    with pytest.raises(ValueError, match="spec.idleReplicaCount=1"):
        ScaledObjectSpec(min_replica_count=1, idle_replica_count=1)
    k = KedaHpa(ScaledObjectSpec(), [FakeTrigger()], start=T0, replicas=1)
    with pytest.raises(ValueError, match="ready_replicas=2"):
        k.step(T0, status_replicas=1, ready_replicas=2)
    with pytest.raises(ValueError, match="fallback.failureThreshold=-1"):
        Fallback(-1, 2)
    assert math.isclose(ScaledObjectSpec().polling_interval, 30)


def test_use_cached_metrics_hpa_reads_the_last_poll() -> None:
    for cached, after_45 in ((True, 3), (False, 7)):
        demand = {"v": 3.0}
        trig = ThresholdTrigger(lambda t, demand=demand: demand["v"], threshold=1, use_cached_metrics=cached)
        k = KedaHpa(ScaledObjectSpec(polling_interval=60), [trig], start=T0, replicas=3)
        k.step(T0, status_replicas=3, ready_replicas=3)
        demand["v"] = 9.0
        # syncs at 15, 30, 45: cached -> the poll at 0 (3); live -> 9, limited to max(3 + 4, 2 x 3) = 7 at 15
        k.step(T0 + 15, status_replicas=3, ready_replicas=3)
        assert k.replicas == after_45, cached
    k.step(T0 + 60, status_replicas=7, ready_replicas=7)
    assert k.replicas == 9
    demand["v"] = 9.0
    k2 = KedaHpa(ScaledObjectSpec(polling_interval=60),
                 [ThresholdTrigger(lambda t: demand["v"], threshold=1, use_cached_metrics=True)], start=T0, replicas=3)
    demand["v"] = 3.0
    k2.step(T0 + 45, status_replicas=3, ready_replicas=3)
    demand["v"] = 9.0
    k2.step(T0 + 59, status_replicas=3, ready_replicas=3)
    assert k2.replicas == 3                                  # no poll since 0: still the cached 3
    k2.step(T0 + 60, status_replicas=3, ready_replicas=3)   # the poll at 60 refreshes the cache
    assert k2.replicas == 7


def test_hpa_target_is_frozen_when_the_hpa_is_created() -> None:
    """KEDA writes the HPA's target from GetMetricSpec when it creates the HPA; later targets are not seen."""
    trig = FakeTrigger(8.0, target=2.0)
    k = KedaHpa(ScaledObjectSpec(), [trig], start=T0, replicas=4)
    trig._target = 1.0                                   # the scaler now advertises target 1
    k.step(T0, status_replicas=4, ready_replicas=4)
    assert k.replicas == 4 and k.hpa_targets == [2.0]   # 8 / (2 x 4) = 1.0: no change (8 / 1 would be 8)
    with pytest.raises(ValueError, match="target=0.0"):
        KedaHpa(ScaledObjectSpec(), [FakeTrigger(1.0, target=0.0)], start=T0, replicas=1)


def test_failing_metric_spec_uses_the_last_known_target() -> None:
    class SpecDown(FakeTrigger):
        def target(self):
            raise SourceTimeout("GetMetricSpec down", source="fake")

    trig = SpecDown(6.0)
    with pytest.raises(SourceError):                     # never known: an error
        read_trigger(trig, T0)
    assert read_trigger(trig, T0, known_target=2.0).target == 2.0


@pytest.mark.parametrize(
    "spec_kw, replicas, active, error, expected",
    [
        # kedacore/keda pkg/scaling/executor/scale_scaledobjects_test.go (KEDA main), RequestScale alone
        pytest.param({}, 10, False, False, 0, id="keda-TestScaleToMinReplicasWhenNotActive"),
        pytest.param({"min_replica_count": 5}, 1, False, False, 5,
                     id="keda-TestScaleToMinReplicasFromLowerInitialReplicaCount"),
        pytest.param({}, 0, True, False, 1, id="keda-TestScaleFromMinReplicasWhenActive"),
        pytest.param({"min_replica_count": 5, "idle_replica_count": 0}, 10, False, False, 0,
                     id="keda-TestScaleToIdleReplicasWhenNotActive"),
        pytest.param({"min_replica_count": 5, "idle_replica_count": 0}, 0, True, False, 5,
                     id="keda-TestScaleFromIdleToMinReplicasWhenActive"),
        pytest.param({}, 3, False, True, 3, id="keda-TriggerError-no-fallback"),
        pytest.param({"fallback": Fallback(3, 5)}, 2, False, True, 2, id="keda-error-with-fallback-left-to-hpa"),
        pytest.param({"fallback": Fallback(3, 0)}, 2, False, True, 0, id="keda-fallback-replicas-0-scales-in"),
        pytest.param({}, 3, True, True, 3, id="keda-PartialTriggerError"),
    ],
)
def test_request_scale_cases(spec_kw, replicas, active, error, expected) -> None:
    k = KedaHpa(ScaledObjectSpec(**spec_kw), [FakeTrigger()], start=T0, replicas=replicas)
    k._request_scale(T0 + 1, active=active, error=error, why="test")   # never active: initial cooldown 0 passed
    assert k.replicas == expected


def test_a_sync_at_a_polls_instant_reuses_its_read_only_for_a_stable_trigger() -> None:
    """``same_answer_within_instant``: the HPA sync at the instant of a successful poll reuses that read; a
    sync at another instant, after a failed poll, or for a trigger without the flag asks again. Either way
    the replicas are the same as asking again (the trigger answers the same within an instant)."""
    class Counting:
        metric_type = "AverageValue"

        def __init__(self, stable: bool, fail_at=()):
            self.same_answer_within_instant = stable
            self.reads, self.fail_at = [], set(fail_at)

        def target(self) -> float:
            return 1.0

        def metric(self, now: float) -> float:
            self.reads.append(now)
            if now in self.fail_at:
                raise SourceError("down", source="test")
            return 4.0 + (now - T0) // 60   # one value per instant (and per minute)

        def is_active(self, now: float) -> bool:
            return True

    outcomes = {}
    for stable in (True, False):
        trig = Counting(stable, fail_at={T0 + 60})
        k = KedaHpa(ScaledObjectSpec(polling_interval=30), [trig], start=T0, replicas=3)
        replicas = []
        for t in range(0, 181, 15):
            replicas.append(k.step(T0 + t, status_replicas=k.replicas, ready_replicas=k.replicas))
        outcomes[stable] = (replicas, [e[:4] for e in k.events])
        polls = [T0 + t for t in range(0, 181, 30)]
        syncs = [T0 + t for t in range(0, 181, 15)]
        if stable:
            # polls read once each (twice at T0 + 60: the failure is retried); syncs at a successful poll's
            # instant reuse it; the sync at T0 + 60 (failed poll) and the off-poll syncs read (twice when failing)
            expected = sorted(polls + [T0 + 60] + [t for t in syncs if t not in polls] + [T0 + 60, T0 + 60])
        else:
            expected = sorted(polls + [T0 + 60] + syncs + [T0 + 60])
        assert sorted(trig.reads) == expected, stable
    assert outcomes[True] == outcomes[False]
