"""The HPA's arithmetic (replica_calculator.go, horizontal.go), pinned by the Kubernetes documentation's examples.

Docs: https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/ ("Algorithm details",
"Configurable scaling behavior", "Stabilization window", "Default Behavior").
"""

import pytest

from simulations.keda.hpa import (
    HorizontalPodAutoscaler,
    MetricReading,
    Tolerances,
    average_value_proposal,
    proposal,
    scale_down_limit,
    scale_up_limit,
    value_proposal,
)
from simulations.keda.spec import HpaBehavior, ScalingPolicy, ScalingRules, default_scale_down, default_scale_up

T = Tolerances()


@pytest.mark.parametrize(
    "usage_m, target_m, status, tol, expected",
    [
        # docs: "current 200m, desired 100m: the number of replicas will be doubled" (3 pods x 200m)
        pytest.param(600, 100, 3, T, 6, id="docs-200m-vs-100m-doubles"),
        # docs: "current 50m: you'll halve the number of replicas" (4 pods x 50m)
        pytest.param(200, 100, 4, T, 2, id="docs-50m-vs-100m-halves"),
        pytest.param(420, 100, 4, T, 4, id="ratio-1.05-within-tolerance"),
        pytest.param(440, 100, 4, T, 4, id="ratio-1.10-boundary-is-within"),
        pytest.param(441, 100, 4, T, 5, id="ratio-1.1025-outside"),
        pytest.param(360, 100, 4, T, 4, id="ratio-0.90-boundary-is-within"),
        pytest.param(359, 100, 4, T, 4, id="ratio-0.8975-outside-ceil-back-to-4"),
        pytest.param(300, 100, 4, T, 3, id="ratio-0.75-scale-down"),
        pytest.param(500, 100, 0, T, 5, id="status-0-ceil-usage-over-target"),
        pytest.param(0, 100, 3, T, 0, id="zero-usage-proposes-0"),
        # dictating a count N with target 1: from 10 replicas a +1 step is inside the 10 % tolerance
        pytest.param(10_000, 1000, 9, T, 10, id="dictate-10-from-9"),
        pytest.param(11_000, 1000, 10, T, 10, id="dictate-11-from-10-lost-in-tolerance"),
        pytest.param(11_000, 1000, 10, Tolerances(up=0.0, down=0.1), 11, id="configurable-up-tolerance-0"),
        pytest.param(9_000, 1000, 10, Tolerances(up=0.1, down=0.0), 9, id="configurable-down-tolerance-0"),
        # the ratio is computed over status.replicas, unready pods included
        pytest.param(400, 100, 4, T, 4, id="unready-pods-dilute-the-average"),
    ],
)
def test_replica_calculator(usage_m, target_m, status, tol, expected) -> None:
    assert average_value_proposal(usage_m, target_m, status, tol) == expected


@pytest.mark.parametrize(
    "usage_m, target_m, spec, ready, expected",
    [
        pytest.param(300, 100, 2, 2, 6, id="value-ratio-3-times-ready-2"),
        pytest.param(300, 100, 4, 1, 3, id="value-uses-ready-pods-not-spec"),
        pytest.param(105, 100, 4, 1, 4, id="value-within-tolerance-keeps-spec"),
        pytest.param(300, 100, 0, 0, 3, id="value-at-spec-0-ceil-ratio"),
    ],
)
def test_value_metric(usage_m, target_m, spec, ready, expected) -> None:
    assert value_proposal(usage_m, target_m, spec, ready, T) == expected


def test_metric_reading_rounds_to_milli_and_rejects_bad_target() -> None:
    r = MetricReading.of(2.0004, 0.5)
    assert (r.usage_milli, r.target_milli) == (2000, 500)
    assert proposal(r, spec_replicas=1, status_replicas=1, ready_pods=1, tol=T) == 4
    with pytest.raises(ValueError, match="target"):
        MetricReading.of(1, 0)
    with pytest.raises(ValueError, match="metricType='Utilization'"):
        MetricReading.of(1, 1, "Utilization")


UP = default_scale_up()
DOWN = default_scale_down()


@pytest.mark.parametrize(
    "current, up_events, down_events, rules, expected",
    [
        # docs "Default Behavior": scale up by the higher of 100 % or 4 pods every 15 s
        pytest.param(1, [], [], UP, 5, id="default-up-4-pods-wins-at-1"),
        pytest.param(10, [], [], UP, 20, id="default-up-100pct-wins-at-10"),
        pytest.param(10, [(95.0, 6)], [], UP, 8, id="default-up-counts-recent-event"),
        pytest.param(10, [(85.0, 6)], [], UP, 20, id="default-up-event-exactly-period-old-ignored"),
        pytest.param(3, [], [], ScalingRules(0, (ScalingPolicy("Percent", 10, 60),)), 4,
                     id="percent-up-rounds-up"),
        pytest.param(10, [], [], ScalingRules(0, (ScalingPolicy("Pods", 1, 60), ScalingPolicy("Percent", 50, 60)),
                                              "Min"), 11, id="select-min-smallest-change"),
        pytest.param(10, [], [], ScalingRules(0, (ScalingPolicy("Pods", 1, 60),), "Disabled"), 10,
                     id="select-disabled-no-scale-up"),
    ],
)
def test_scale_up_limit(current, up_events, down_events, rules, expected) -> None:
    assert scale_up_limit(current, up_events, down_events, rules, now=100.0) == expected


DOCS_DOWN = ScalingRules(300, (ScalingPolicy("Pods", 4, 60), ScalingPolicy("Percent", 10, 60)))


@pytest.mark.parametrize(
    "current, up_events, down_events, rules, expected",
    [
        pytest.param(80, [], [], DOCS_DOWN, 72, id="docs-80-percent-policy-removes-8"),
        pytest.param(72, [], [], DOCS_DOWN, 64, id="docs-72-7.2-rounded-up-to-8"),
        pytest.param(30, [], [], DOCS_DOWN, 26, id="docs-under-40-pods-policy-4"),
        pytest.param(72, [], [(60.0, 8)], DOCS_DOWN, 72, id="period-start-counts-recent-removal"),
        pytest.param(10, [], [], DOWN, 0, id="default-down-100pct"),
        pytest.param(80, [], [], ScalingRules(300, DOCS_DOWN.policies, "Min"), 76, id="select-min-on-scale-down"),
        pytest.param(80, [], [], ScalingRules(300, DOCS_DOWN.policies, "Disabled"), 80, id="docs-disable-scale-down"),
    ],
)
def test_scale_down_limit(current, up_events, down_events, rules, expected) -> None:
    assert scale_down_limit(current, up_events, down_events, rules, now=100.0) == expected


def hpa(current, *, up=UP, down=DOWN, lo=1, hi=100, start=0.0):
    return HorizontalPodAutoscaler(min_replicas=lo, max_replicas=hi, behavior=HpaBehavior(up, down), start=start,
                                   current_replicas=current)


def run(h, current, usage_fn, times, target=1.0, status_fn=None):
    """Sync at each time with an AverageValue metric; the Deployment follows at once. Returns the counts."""
    out = []
    for t in times:
        status = current if status_fn is None else status_fn(current)
        res = h.reconcile(t, spec_replicas=current, status_replicas=status, ready_replicas=status,
                          readings=[MetricReading.of(usage_fn(t, current), target)])
        current = res.desired
        out.append(current)
    return out


def test_docs_scale_down_policies_80_to_10() -> None:
    """Docs, "Scaling Policies": Pods 4 / Percent 10 per 60 s; 80 -> 10; 8 removed first, then 8 (7.2 up)...

    The default 300 s scale-down window (seeded with 80 at start) holds the count for the first window.
    """
    h = hpa(80, down=DOCS_DOWN)
    times = [15.0 * k for k in range(90)]
    counts = run(h, 80, lambda t, n: 10.0, times)
    changes = [(t, c) for t, c, prev in zip(times, counts, [80] + counts) if c != prev]
    assert changes == [(300.0, 72), (360.0, 64), (420.0, 57), (480.0, 51), (540.0, 45), (600.0, 40), (660.0, 36),
                       (720.0, 32), (780.0, 28), (840.0, 24), (900.0, 20), (960.0, 16), (1020.0, 12), (1080.0, 10)]


def test_default_scale_up_timeline_doubles_or_adds_4() -> None:
    h = hpa(1)
    counts = run(h, 1, lambda t, n: 100.0, [0.0, 15.0, 30.0, 45.0, 60.0])
    assert counts == [5, 10, 20, 40, 80]


def test_scale_up_limit_holds_within_one_period() -> None:
    up = ScalingRules(0, (ScalingPolicy("Pods", 1, 60),))
    h = hpa(1, up=up)
    counts = run(h, 1, lambda t, n: 10.0, [0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 120.0])
    assert counts == [2, 2, 2, 2, 3, 3, 4]


def test_docs_stabilization_window_takes_highest_recommendation() -> None:
    """Docs, "Stabilization window": scale-down uses the highest recommendation of the last 300 s."""
    h = hpa(10, down=ScalingRules(300, (ScalingPolicy("Percent", 100, 15),)))
    usage = {0.0: 10.0, 15.0: 4.0, 30.0: 8.0, 45.0: 2.0}
    counts = run(h, 10, lambda t, n: usage.get(t, 2.0), [0.0, 15.0, 30.0, 45.0, 285.0, 300.0, 315.0, 330.0, 345.0])
    # the seeded 10 and the recommendation 10 at t=0 hold until they leave the window (at t=300 they are exactly
    # 300 s old: no longer counted); then 8 (t=30) holds until t=330
    assert counts == [10, 10, 10, 10, 10, 8, 8, 2, 2]


def test_flapping_metric_is_stabilized() -> None:
    h = hpa(10)
    counts = run(h, 10, lambda t, n: 10.0 if int(t / 15) % 2 == 0 else 5.0, [15.0 * k for k in range(1, 12)])
    assert counts == [10] * 11


def test_scale_up_stabilization_window_takes_lowest() -> None:
    h = hpa(2, up=ScalingRules(30, (ScalingPolicy("Pods", 100, 15),)))
    counts = run(h, 2, lambda t, n: 8.0, [0.0, 15.0, 30.0, 45.0])
    # recommendation 8 needs to be the lowest of the last 30 s: the seeded/initial lower ones must age out
    assert counts == [2, 2, 8, 8]


def test_min_max_and_out_of_range_current() -> None:
    h = hpa(3, lo=2, hi=6)
    assert h.reconcile(0.0, spec_replicas=3, status_replicas=3, ready_replicas=3,
                       readings=[MetricReading.of(100, 1)]).desired == 6
    h2 = hpa(9, lo=2, hi=6)
    out = h2.reconcile(0.0, spec_replicas=9, status_replicas=9, ready_replicas=9, readings=[MetricReading.of(0, 1)])
    assert (out.desired, out.reason) == (6, "current replicas above maxReplicas")
    h3 = hpa(1, lo=2, hi=6, down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))
    assert h3.reconcile(0.0, spec_replicas=1, status_replicas=1, ready_replicas=1,
                        readings=[MetricReading.of(0, 1)]).desired == 2
    h4 = hpa(5, lo=2, hi=6, down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))
    assert h4.reconcile(0.0, spec_replicas=5, status_replicas=5, ready_replicas=5,
                        readings=[MetricReading.of(0, 1)]).desired == 2


def test_largest_metric_wins_and_failed_metric_blocks_scale_down() -> None:
    h = hpa(4, down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))
    out = h.reconcile(0.0, spec_replicas=4, status_replicas=4, ready_replicas=4,
                      readings=[MetricReading.of(2, 1), MetricReading.of(7, 1)])
    assert out.desired == 7
    h = hpa(4, down=ScalingRules(0, (ScalingPolicy("Percent", 100, 15),)))
    out = h.reconcile(0.0, spec_replicas=4, status_replicas=4, ready_replicas=4,
                      readings=[MetricReading.of(1, 1), RuntimeError("down")])
    assert out.desired == 4 and "no scale-down" in out.reason
    out = h.reconcile(15.0, spec_replicas=4, status_replicas=4, ready_replicas=4,
                      readings=[MetricReading.of(6, 1), RuntimeError("down")])
    assert out.desired == 6
    out = h.reconcile(30.0, spec_replicas=6, status_replicas=6, ready_replicas=6, readings=[RuntimeError("down")])
    assert out.desired == 6 and out.reason.startswith("no valid metric")


def test_disabled_at_zero_replicas() -> None:
    h = hpa(0)
    out = h.reconcile(0.0, spec_replicas=0, status_replicas=0, ready_replicas=0, readings=[MetricReading.of(50, 1)])
    assert out.desired == 0 and "disabled" in out.reason


def test_rules_validation_names_field() -> None:
    with pytest.raises(ValueError, match=r"policy.type='Pod'"):
        ScalingPolicy("Pod", 1, 15)
    with pytest.raises(ValueError, match=r"policy.periodSeconds=1801"):
        ScalingPolicy("Pods", 1, 1801)
    with pytest.raises(ValueError, match=r"selectPolicy='Maximum'"):
        ScalingRules(0, (ScalingPolicy("Pods", 1, 15),), "Maximum")
    with pytest.raises(ValueError, match=r"stabilizationWindowSeconds=3601"):
        ScalingRules(3601, (ScalingPolicy("Pods", 1, 15),))
    with pytest.raises(ValueError, match=r"tolerance=-0.1"):
        ScalingRules(0, (ScalingPolicy("Pods", 1, 15),), tolerance=-0.1)


PCT10 = ScalingPolicy("Percent", 10, 60)


@pytest.mark.parametrize(
    "down, expected_changes",
    [
        # docs "Example: limit scale down rate": at most 10 % per minute (default 300 s window)
        pytest.param(ScalingRules(300, (PCT10,)), [(300.0, 90), (360.0, 81), (420.0, 72), (480.0, 64)],
                     id="docs-limit-scale-down-10pct-per-minute"),
        # docs: "... no more than 5 Pods removed per minute": a Pods 5 policy and selectPolicy Min
        pytest.param(ScalingRules(300, (ScalingPolicy("Pods", 5, 60), PCT10), "Min"),
                     [(300.0, 95), (360.0, 90), (420.0, 85), (480.0, 80)], id="docs-min-of-5-pods-and-10pct"),
        # docs "Example: disable scale down"
        pytest.param(ScalingRules(300, (PCT10,), "Disabled"), [], id="docs-disable-scale-down"),
        # docs "Example: change downscale stabilization window" to 60 s (default policy: 100 % per 15 s)
        pytest.param(ScalingRules(60, (ScalingPolicy("Percent", 100, 15),)), [(60.0, 10)],
                     id="docs-downscale-window-60s"),
    ],
)
def test_docs_behavior_examples(down, expected_changes) -> None:
    h = hpa(100, down=down)
    times = [15.0 * k for k in range(33)]            # 0 .. 480 s
    counts = run(h, 100, lambda t, n: 10.0, times)
    changes = [(t, c) for t, c, prev in zip(times, counts, [100] + counts) if c != prev]
    assert changes == expected_changes


@pytest.mark.parametrize(
    "metric_type, usage, target, spec, status, ready, expected",
    [
        # the External-metric cases of kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator_test.go
        pytest.param("Value", 8600, 4400, 1, 1, 1, 2, id="k8s-ScaleUpCMExternal"),
        pytest.param("Value", 8600, 4400, 3, 3, 1, 2, id="k8s-ScaleUpCMExternalIgnoresUnreadyPods"),
        pytest.param("AverageValue", 8600, 2150, 3, 3, 3, 4, id="k8s-ScaleUpPerPodCMExternal"),
        pytest.param("Value", 8600, 14334, 5, 5, 5, 3, id="k8s-ScaleDownCMExternal"),
        pytest.param("AverageValue", 8600, 2867, 5, 5, 5, 3, id="k8s-ScaleDownPerPodCMExternal"),
        pytest.param("Value", 8600, 8888, 3, 3, 3, 3, id="k8s-ToleranceCMExternal"),
        pytest.param("AverageValue", 8600, 2900, 3, 3, 3, 3, id="k8s-TolerancePerPodCMExternal"),
    ],
)
def test_kubernetes_replica_calculator_cases(metric_type, usage, target, spec, status, ready, expected) -> None:
    reading = MetricReading(usage, target, metric_type)
    assert proposal(reading, spec_replicas=spec, status_replicas=status, ready_pods=ready, tol=T) == expected


def rules(pods, pods_period, percent, percent_period, window):
    """Kubernetes' generateScalingRules (horizontal_test.go): Pods and/or Percent policies, selectPolicy Max."""
    policies = []
    if pods:
        policies.append(ScalingPolicy("Pods", pods, pods_period))
    if percent:
        policies.append(ScalingPolicy("Percent", percent, percent_period))
    return ScalingRules(window, tuple(policies), "Max")


def uniform(changes, period, now=1000.0):
    """Kubernetes' generateEventsUniformDistribution: events at the centres of equal segments of the period."""
    seg = period / len(changes)
    return [(now - (period - seg * (i + 1) + seg / 2), c) for i, c in enumerate(changes)]


# (name, up events, down events, min, max, up rules, down rules, current, desired, expected, condition)
K8S_SCALING_WITH_RULES = [
    ("prenormalized desired replicas within range", [], [], 3, 8, None, None, 5, 7, 7, "DesiredWithinRange"),
    ("prenormalized desired replicas < minReplicas", [], [], 2, 8, None, None, 3, 1, 2, "TooFewReplicas"),
    ("prenormalized desired replicas within range when minReplicas is 0", [], [], 0, 10, None, None, 1, 0, 0,
     "DesiredWithinRange"),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", [], [], 1, 10, None, None, 20, 1000, 10,
     "TooManyReplicas"),
    ("desired replica count is more than the maximum replica count", [], [], 100, 150, None, None, 100, 1000, 150,
     "TooManyReplicas"),
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies", [], [], 1, 2000,
     rules(0, 0, 1, 60, 0), None, 3, 1000, 4, "ScaleUpLimit"),
    ("scaleUp with default behavior", [], [], 1, 1000, None, None, 10, 50, 20, "ScaleUpLimit"),
    ("scaleUp with pods policy larger than percent policy", [], [], 1, 1000, rules(100, 60, 100, 60, 0), None,
     10, 500, 110, "ScaleUpLimit"),
    ("scaleUp with percent policy larger than pods policy", [], [], 1, 1000, rules(2, 60, 100, 60, 0), None,
     10, 500, 20, "ScaleUpLimit"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy", [], [], 1, 1000, rules(100, 60, 0, 0, 0),
     None, 10, 50, 50, "DesiredWithinRange"),
    ("scaleUp with pod policy limitation", [], [], 1, 1000, rules(30, 60, 0, 0, 0), None, 10, 50, 40,
     "ScaleUpLimit"),
    ("scaleUp with percent policy limitation", [], [], 1, 1000, rules(0, 0, 200, 60, 0), None, 10, 50, 30,
     "ScaleUpLimit"),
    ("scaleDown with percent policy larger than pod policy", [], [], 1, 1000, None, rules(20, 60, 1, 60, 300),
     100, 2, 80, "ScaleDownLimit"),
    ("scaleDown with pod policy larger than percent policy", [], [], 1, 1000, None, rules(2, 60, 1, 60, 300),
     100, 2, 98, "ScaleDownLimit"),
    ("scaleDown with spec MinReplicas limitation with large pod policy", [], [], 1, 1000, None,
     rules(100, 60, 0, 0, 300), 10, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy", [], [], 5, 1000, None,
     rules(0, 0, 100, 60, 300), 10, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation", [], [], 1, 1000, None, rules(5, 60, 0, 0, 300), 10, 2, 5,
     "ScaleDownLimit"),
    ("scaleDown with percent policy limitation", [], [], 1, 1000, None, rules(0, 0, 50, 60, 300), 10, 5, 5,
     "DesiredWithinRange"),
    ("scaleUp with spec MaxReplicas limitation with large pod policy and events", uniform([1, 5, 9], 120), [],
     1, 200, rules(300, 60, 0, 0, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with spec MaxReplicas limitation with large percent policy and events", uniform([1, 5, 9], 120), [],
     1, 200, rules(0, 0, 10000, 60, 0), None, 100, 500, 200, "TooManyReplicas"),
    ("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of recent scale up events",
     uniform([1, 5, 9], 120), [], 1, 1000, rules(5, 120, 0, 0, 0), None, 100, 500, 100, "ScaleUpLimit"),
    ("scaleUp with pod policy and previous scale up events", uniform([1, 5, 9], 120), [], 1, 1000,
     rules(150, 120, 0, 0, 0), None, 100, 500, 235, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up events", uniform([1, 5, 9], 120), [], 1, 1000,
     rules(0, 0, 200, 120, 0), None, 100, 500, 255, "ScaleUpLimit"),
    ("scaleUp with percent policy and previous scale up and down events", uniform([4], 120), uniform([2], 120),
     1, 1000, rules(0, 0, 300, 300, 0), None, 6, 24, 16, "ScaleUpLimit"),
    ("scaleDown with default policy and previous events", [], uniform([1, 5, 9], 120), 1, 1000, None, None,
     10, 5, 5, "DesiredWithinRange"),
    ("scaleDown with spec MinReplicas=nil limitation with large pod policy and previous events", [],
     uniform([1, 5, 9], 120), 1, 1000, None, rules(115, 120, 0, 0, 300), 100, 0, 1, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large pod policy and previous events", [],
     uniform([1, 5, 9], 120), 5, 1000, None, rules(130, 120, 0, 0, 300), 100, 0, 5, "TooFewReplicas"),
    ("scaleDown with spec MinReplicas limitation with large percent policy and previous events", [],
     uniform([1, 5, 9], 120), 5, 1000, None, rules(0, 0, 100, 120, 300), 100, 2, 5, "TooFewReplicas"),
    ("scaleDown with pod policy limitation and previous events", [], uniform([1, 5, 9], 120), 1, 1000, None,
     rules(5, 120, 0, 0, 300), 100, 2, 100, "ScaleDownLimit"),
    ("scaleDown with percent policy limitation and previous events", [], uniform([2, 4, 6], 120), 1, 1000, None,
     rules(0, 0, 50, 120, 300), 100, 0, 56, "ScaleDownLimit"),
    ("scaleDown with percent policy and previous scale up and down events", uniform([2], 120), uniform([4], 120),
     1, 1000, None, rules(0, 0, 50, 180, 0), 10, 1, 6, "ScaleDownLimit"),
    ("scaleDown with previous events preventing further scale down", [], uniform([10, 10, 10], 120), 1, 1000,
     None, rules(0, 0, 10, 120, 300), 100, 0, 100, "ScaleDownLimit"),
    ("scaleDown with with previous events still allowing more scale down", [], uniform([10, 10, 10], 120), 1,
     1000, None, rules(0, 0, 1000, 120, 300), 10, 5, 5, "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for up", uniform([8, 12, 9, 11], 120), [], 1, 1000,
     rules(1000, 60, 0, 0, 0), None, 100, 200, 200, "DesiredWithinRange"),
    ("check that events were not marked 'outdated' for two different policies in the behavior for up",
     uniform([8, 12, 9, 11], 120), [], 1, 1000, rules(1000, 120, 100, 60, 0), None, 100, 200, 200,
     "DesiredWithinRange"),
    ("check 'outdated' flag for events for one behavior for down", [], uniform([8, 12, 9, 11], 120), 1, 1000,
     None, rules(1000, 60, 0, 0, 300), 100, 5, 5, "DesiredWithinRange"),
]


@pytest.mark.parametrize("case", K8S_SCALING_WITH_RULES, ids=[c[0] for c in K8S_SCALING_WITH_RULES])
def test_kubernetes_scaling_with_rules(case) -> None:
    """Kubernetes' TestScalingWithRules table (horizontal_test.go), through convert_with_behavior_rate."""
    from simulations.keda.hpa import convert_with_behavior_rate

    _, up_events, down_events, lo, hi, up, down, current, desired, expected, condition = case
    behavior = HpaBehavior(up or default_scale_up(), down or default_scale_down())
    got = convert_with_behavior_rate(current=current, desired=desired, min_replicas=lo, max_replicas=hi,
                                     up_events=up_events, down_events=down_events, behavior=behavior, now=1000.0)
    assert got == (expected, condition)


@pytest.mark.parametrize(
    "prev, up_rules, expected_changes",
    [
        # Kubernetes' TestStoreScaleEvents (horizontal_test.go): (seconds ago, change) before a +5 event
        pytest.param([(58, 7)], rules(10, 60, 100, 60, 0), [7, 5], id="one-actual-entry-kept"),
        pytest.param([(61, 7)], rules(10, 60, 100, 60, 0), [5], id="one-outdated-entry-replaced"),
        pytest.param([(61, 7), (59, 6)], rules(10, 60, 0, 0, 0), [5, 6], id="two-entries-one-replaced"),
        pytest.param([(29, 8), (59, 6), (61, 7), (61, 9)], rules(10, 60, 100, 30, 0), [8, 6, 7, 5],
                     id="different-periods-last-outdated-replaced"),
        pytest.param([(58, 7), (59, 6)], rules(10, 120, 100, 30, 0), [7, 6, 5], id="two-entries-both-actual"),
    ],
)
def test_kubernetes_store_scale_events(prev, up_rules, expected_changes) -> None:
    h = hpa(10, up=up_rules)
    h.up_events = [(1000.0 - ago, change) for ago, change in prev]
    h._store_event(1000.0, 10, 15)
    assert [c for _, c in h.up_events] == expected_changes


def test_kubernetes_calculate_limits_with_min_select_policy() -> None:
    """Kubernetes' TestCalculateScaleUpLimitWithScalingRules / TestCalculateScaleDownLimitWithBehaviors."""
    both = (ScalingPolicy("Pods", 2, 60), ScalingPolicy("Percent", 50, 60))
    assert scale_up_limit(1, [], [], ScalingRules(300, both, "Min"), now=0.0) == 2
    assert scale_down_limit(5, [], [], ScalingRules(300, both, "Min"), now=0.0) == 3


@pytest.mark.parametrize("up_window, down_window", [(0, 300), (60, 300), (300, 60), (30, 30), (0, 0)])
def test_stabilize_matches_a_full_scan_of_the_recommendations(up_window, down_window) -> None:
    """The monotonic queues give what Kubernetes' scan of every recommendation gives (min over the scale-up
    window, max over the scale-down window, strict "after", seeded with the start count), on a random walk
    with repeated instants and window-edge ages."""
    import random

    rng = random.Random(f"{up_window}-{down_window}")
    up = ScalingRules(up_window, UP.policies)
    down = ScalingRules(down_window, DOWN.policies)
    h = hpa(5, up=up, down=down)
    recs = [(0.0, 5)]
    now = 0.0
    for _ in range(800):
        now += rng.choice((0.0, 1.0, 15.0, 15.0, 30.0, 60.0))
        current, desired = rng.randint(1, 40), rng.randint(1, 40)
        up_rec = min([desired] + [r for t, r in recs if t > now - up_window])
        down_rec = max([desired] + [r for t, r in recs if t > now - down_window])
        expected = min(max(current, up_rec), down_rec)
        assert h._stabilize(now, current, desired) == expected, (now, current, desired)
        recs.append((now, desired))


def test_tolerances_follow_a_replaced_behavior() -> None:
    """``tolerances`` is built once per behavior value: replacing the behavior gives the new band."""
    import dataclasses

    h = HorizontalPodAutoscaler(min_replicas=1, max_replicas=10, behavior=HpaBehavior(default_scale_up(),
                                default_scale_down()), start=0.0, current_replicas=2)
    assert h.tolerances == Tolerances(0.1, 0.1) and h.tolerances is h.tolerances
    h.behavior = HpaBehavior(dataclasses.replace(default_scale_up(), tolerance=0.0), default_scale_down())
    assert h.tolerances == Tolerances(up=0.0, down=0.1)


def test_a_repeated_outcome_is_the_one_a_fresh_computation_gives() -> None:
    """``_normalize`` returns the outcome built earlier for the same (proposal, stabilized, result, limiting
    condition): on a random walk of readings, every outcome equals the one an identical HPA without those
    earlier outcomes computes (desired count, reason string, proposal), and repeats are reused."""
    import copy
    import random

    rng = random.Random(11)
    h = hpa(3)
    now, current, reused = 0.0, 3, 0
    for _ in range(600):
        now += rng.choice((15.0, 15.0, 30.0, 60.0))
        reading = MetricReading.of(rng.choice((0.0, 1.0, 2.5, 3.0, 4.0, 9.0, 30.0)), 1.0)
        fresh = copy.deepcopy(h)
        fresh._outcomes.clear()
        known = len(h._outcomes)
        got = h.reconcile(now, spec_replicas=current, status_replicas=current, ready_replicas=current,
                          readings=[reading])
        want = fresh.reconcile(now, spec_replicas=current, status_replicas=current, ready_replicas=current,
                               readings=[reading])
        assert got == want, now
        reused += len(h._outcomes) == known
        current = got.desired
    assert reused > 300   # most syncs repeat an earlier outcome


def test_one_answered_metric_gives_what_the_proposals_loop_gives() -> None:
    """``reconcile`` with a single answered metric gives what it gives for the same reading twice (its
    proposal is the largest, nothing failed), for both metric types."""
    import copy
    import random

    rng = random.Random(4)
    for metric_type in ("AverageValue", "Value"):
        h = hpa(3)
        now, current = 0.0, 3
        for _ in range(300):
            now += rng.choice((15.0, 30.0, 60.0))
            reading = MetricReading.of(rng.choice((0.0, 1.0, 2.5, 4.0, 9.0, 30.0)), 1.0, metric_type)
            twice = copy.deepcopy(h)
            ready = max(1, current - rng.randint(0, 1))
            got = h.reconcile(now, spec_replicas=current, status_replicas=current, ready_replicas=ready,
                              readings=[reading])
            want = twice.reconcile(now, spec_replicas=current, status_replicas=current, ready_replicas=ready,
                                   readings=[reading, reading])
            assert got == want, (metric_type, now)
            current = got.desired
