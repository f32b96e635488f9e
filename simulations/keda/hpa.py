"""The Horizontal Pod Autoscaler's arithmetic for External metrics, as kube-controller-manager runs it.

Sources (kubernetes/kubernetes, ``pkg/controller/podautoscaler/``):

* ``replica_calculator.go``
  - ``GetExternalPerPodMetricReplicas`` (``AverageValue``)::

        usage  = sum of the metric's values                          (milli-units)
        ratio  = usage / (target * status.replicas)
        within tolerance  -> proposal = status.replicas
        otherwise         -> proposal = ceil(usage / target)

    ``status.replicas`` counts unready pods too. Worked example (Kubernetes docs): 2 pods, each
    reporting 200m against a 100m target: usage 400m, ratio 2.0, proposal ceil(400/100) = 4, the
    count doubles (``test_hpa.py::test_replica_calculator[docs-200m-vs-100m-doubles]``).
  - ``GetExternalMetricReplicas`` (``Value``) via ``getUsageRatioReplicaCount``::

        ratio = usage / target
        spec.replicas > 0: within tolerance -> spec.replicas, else ceil(ratio * ready pods)
        spec.replicas = 0: ceil(ratio)

  - ``Tolerances.isWithin``: ``1 - down <= ratio <= 1 + up`` (0.1 each by default; per direction
    from ``behavior.scaleUp/scaleDown.tolerance``).
* ``horizontal.go``
  - ``reconcileAutoscaler``: nothing when ``spec.replicas`` is 0 (scaling disabled); above max ->
    max, below min -> min without looking at metrics; else ``computeReplicasForMetrics``: the
    largest proposal wins; if every metric failed, or some failed and the largest proposal is a
    scale-down, nothing changes.
  - ``normalizeDesiredReplicasWithBehaviors``: ``stabilizeRecommendationWithBehaviors`` (up: the
    minimum of the recommendations younger than the scale-up window, including this one; down: the
    maximum within the scale-down window; the result is the current count pushed into
    ``[upRecommendation, downRecommendation]``), then ``convertDesiredReplicasWithBehaviorRate``
    (rate limits, then ``min``/``max``).
  - ``calculateScaleUpLimitWithScalingRules``: ``periodStart = current - added + deleted`` over
    the events younger than each policy's ``periodSeconds``; ``Pods``: ``periodStart + value``;
    ``Percent``: ``ceil(periodStart * (1 + value/100))``; ``Max`` takes the largest limit,
    ``Min`` the smallest, ``Disabled`` forbids scaling up.
  - ``calculateScaleDownLimitWithBehaviors``: ``Pods``: ``periodStart - value``; ``Percent``:
    ``int(periodStart * (1 - value/100))`` (truncated); ``Max`` takes the smallest limit.
  - ``recordInitialRecommendation``: the first reconcile seeds the recommendations with the
    current count, so a new controller does not scale down during its first window (and a
    scale-up window also sees that seed).
  - "After" comparisons are strict: a recommendation or event exactly ``window`` seconds old no
    longer counts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from .spec import HpaBehavior, ScalingRules

AVERAGE_VALUE = "AverageValue"
VALUE = "Value"
METRIC_TYPES = (AVERAGE_VALUE, VALUE)


def to_milli(x: float) -> int:
    """A quantity's ``MilliValue()``: the value in thousandths, rounded to the nearest integer."""
    return int(round(x * 1000))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Tolerances:
    """``Tolerances`` of ``replica_calculator.go``: a band ``[1 - down, 1 + up]`` around ratio 1."""

    up: float = 0.1
    down: float = 0.1

    def within(self, ratio: float) -> bool:
        # NaN and +Inf (status.replicas == 0) are never within: the HPA then computes a new count.
        return (1.0 - self.down) <= ratio <= (1.0 + self.up)


@dataclass(frozen=True)
class MetricReading:
    """What the HPA got for one External metric: the sum of its values and the target, both in milli-units."""

    usage_milli: int
    target_milli: int
    metric_type: str = AVERAGE_VALUE

    def __post_init__(self) -> None:
        if self.metric_type not in METRIC_TYPES:
            raise ValueError(f"metricType={self.metric_type!r}: must be one of {', '.join(METRIC_TYPES)}")
        if self.target_milli <= 0:
            raise ValueError(f"target={self.target_milli / 1000!r}: Kubernetes rejects a target <= 0")

    @classmethod
    def of(cls, usage: float, target: float, metric_type: str = AVERAGE_VALUE) -> MetricReading:
        return cls(to_milli(usage), to_milli(target), metric_type)


def average_value_proposal(usage_milli: int, target_milli: int, status_replicas: int, tol: Tolerances) -> int:
    """``GetExternalPerPodMetricReplicas``: see the module docstring."""
    if status_replicas > 0:
        ratio = usage_milli / (target_milli * status_replicas)
        if tol.within(ratio):
            return status_replicas
    return _ceil_div(usage_milli, target_milli)


def value_proposal(usage_milli: int, target_milli: int, spec_replicas: int, ready_pods: int, tol: Tolerances) -> int:
    """``GetExternalMetricReplicas`` / ``getUsageRatioReplicaCount``: see the module docstring."""
    ratio = usage_milli / target_milli
    if spec_replicas != 0:
        if tol.within(ratio):
            return spec_replicas
        return int(math.ceil(ratio * ready_pods))
    return int(math.ceil(ratio))


def proposal(reading: MetricReading, *, spec_replicas: int, status_replicas: int, ready_pods: int,
             tol: Tolerances) -> int:
    """The replica count one metric asks for."""
    if reading.metric_type == AVERAGE_VALUE:
        return average_value_proposal(reading.usage_milli, reading.target_milli, status_replicas, tol)
    return value_proposal(reading.usage_milli, reading.target_milli, spec_replicas, ready_pods, tol)


def _change_in_period(events: Sequence[tuple[float, int]], period: float, now: float) -> int:
    """``getReplicasChangePerPeriod``: the replicas changed by events strictly younger than ``period``."""
    cutoff = now - period
    return sum(change for t, change in events if t > cutoff)


def scale_up_limit(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                   rules: ScalingRules, now: float) -> int:
    """``calculateScaleUpLimitWithScalingRules``: the most replicas the scale-up policies allow now.

    Example: 10 replicas, Kubernetes' defaults (4 pods or 100 % per 15 s, ``Max``) -> max(14, 20) = 20.
    Pinned by ``test_hpa.py::test_scale_up_limit`` and ``::test_kubernetes_scaling_with_rules``.
    """
    if rules.select_policy == "Disabled":
        return current
    limits = []
    for p in rules.policies:
        start = current - _change_in_period(up_events, p.period_seconds, now) \
            + _change_in_period(down_events, p.period_seconds, now)
        if p.type == "Pods":
            limits.append(start + p.value)
        else:
            limits.append(int(math.ceil(float(start) * (1 + float(p.value) / 100))))
    return min(limits) if rules.select_policy == "Min" else max(limits)


def scale_down_limit(current: int, up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                     rules: ScalingRules, now: float) -> int:
    """``calculateScaleDownLimitWithBehaviors``: the fewest replicas the scale-down policies allow now.

    Example (Kubernetes docs): 72 replicas, Pods 4 and Percent 10 per 60 s, ``Max`` -> min(68, int(64.8)) = 64.
    Pinned by ``test_hpa.py::test_scale_down_limit`` and ``::test_docs_scale_down_policies_80_to_10``.
    """
    if rules.select_policy == "Disabled":
        return current
    limits = []
    for p in rules.policies:
        start = current - _change_in_period(up_events, p.period_seconds, now) \
            + _change_in_period(down_events, p.period_seconds, now)
        if p.type == "Pods":
            limits.append(start - p.value)
        else:
            limits.append(int(float(start) * (1 - float(p.value) / 100)))
    # "Min" = the smallest change = the highest floor.
    return max(limits) if rules.select_policy == "Min" else min(limits)


def convert_with_behavior_rate(*, current: int, desired: int, min_replicas: int, max_replicas: int,
                               up_events: Sequence[tuple[float, int]], down_events: Sequence[tuple[float, int]],
                               behavior: HpaBehavior, now: float) -> tuple[int, str]:
    """``convertDesiredReplicasWithBehaviorRate``: rate limits, then min/max; returns (replicas, condition).

    The condition is Kubernetes' ``ScalingLimited`` reason: ``DesiredWithinRange``, ``ScaleUpLimit``,
    ``TooManyReplicas``, ``ScaleDownLimit`` or ``TooFewReplicas``. A limit on the wrong side of the
    current count (many recent events) holds the current count. Pinned by
    ``test_hpa.py::test_kubernetes_scaling_with_rules`` (Kubernetes' ``TestScalingWithRules`` table).
    """
    if desired > current:
        limit = max(scale_up_limit(current, up_events, down_events, behavior.scale_up, now), current)
        if max_replicas > limit:
            ceiling, condition = limit, "ScaleUpLimit"
        else:
            ceiling, condition = max_replicas, "TooManyReplicas"
        if desired > ceiling:
            return ceiling, condition
    elif desired < current:
        limit = min(scale_down_limit(current, up_events, down_events, behavior.scale_down, now), current)
        if min_replicas < limit:
            floor, condition = limit, "ScaleDownLimit"
        else:
            floor, condition = min_replicas, "TooFewReplicas"
        if desired < floor:
            return floor, condition
    return desired, "DesiredWithinRange"


@dataclass(frozen=True)
class HpaOutcome:
    """One reconcile: the count the HPA writes (``desired == current`` means no change) and why."""

    desired: int
    reason: str
    proposal: int | None = None


@dataclass
class HorizontalPodAutoscaler:
    """One HPA's controller state: stabilization recommendations and recent scale events.

    ``reconcile`` is ``reconcileAutoscaler`` for External metrics; it records its own scale events
    (changes made by others, such as KEDA's 0 <-> N, are not HPA events, as in Kubernetes).
    """

    min_replicas: int
    max_replicas: int
    behavior: HpaBehavior
    start: float
    current_replicas: int
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError(f"minReplicas={self.min_replicas}, maxReplicas={self.max_replicas}: "
                             "need 1 <= minReplicas <= maxReplicas")
        # The recommendations as two monotonic queues of (time, count): ``_up_recs`` keeps the candidates
        # for the minimum over the scale-up window (counts increasing front to back), ``_down_recs`` those
        # for the maximum over the scale-down window (counts decreasing). A recommendation hidden by a
        # later one that is at least as low (resp. high) can never be the window's min (max) again, so the
        # fronts are exactly the min and max Kubernetes finds by scanning its list, in O(1) amortized.
        # Seeded with the current count at ``start`` (``recordInitialRecommendation``).
        self._up_recs: deque[tuple[float, int]] = deque([(self.start, self.current_replicas)])
        self._down_recs: deque[tuple[float, int]] = deque([(self.start, self.current_replicas)])
        self._outcomes: dict[tuple, HpaOutcome] = {}   # _normalize's outcomes by (proposal, stabilized, result, why)

    @property
    def tolerances(self) -> Tolerances:
        # built once per behavior (read at every sync; the behavior is a frozen value, replaced, never mutated)
        behavior = self.behavior
        cached = self.__dict__.get("_tolerances")
        if cached is None or cached[0] is not behavior:
            cached = (behavior, Tolerances(up=behavior.scale_up.tolerance, down=behavior.scale_down.tolerance))
            self.__dict__["_tolerances"] = cached
        return cached[1]

    def reconcile(self, now: float, *, spec_replicas: int, status_replicas: int, ready_replicas: int,
                  readings: Sequence[MetricReading | Exception]) -> HpaOutcome:
        """One sync at ``now``. ``readings`` holds one entry per metric: a reading or the error fetching it."""
        if spec_replicas == 0:
            return HpaOutcome(0, "scaling disabled: spec.replicas is 0")
        if spec_replicas > self.max_replicas:
            out = HpaOutcome(self.max_replicas, "current replicas above maxReplicas")
        elif spec_replicas < self.min_replicas:
            out = HpaOutcome(self.min_replicas, "current replicas below minReplicas")
        else:
            proposals = []
            errors = []
            tol = self.tolerances
            for r in readings:
                if isinstance(r, Exception):
                    errors.append(r)
                elif r.metric_type == AVERAGE_VALUE:   # proposal(), without its keyword call (every sync)
                    proposals.append(average_value_proposal(r.usage_milli, r.target_milli, status_replicas, tol))
                else:
                    proposals.append(proposal(r, spec_replicas=spec_replicas, status_replicas=status_replicas,
                                              ready_pods=ready_replicas, tol=tol))
            if len(errors) >= len(readings):
                first = errors[0] if errors else "no metrics"
                return HpaOutcome(spec_replicas, f"no valid metric, keeping {spec_replicas}: {first}")
            best = max(proposals)
            if errors and best < spec_replicas:
                return HpaOutcome(spec_replicas, f"a metric failed ({errors[0]}): no scale-down", best)
            out = self._normalize(now, spec_replicas, best)
        if out.desired != spec_replicas:
            self._store_event(now, spec_replicas, out.desired)
        return out

    def _normalize(self, now: float, current: int, desired: int) -> HpaOutcome:
        """Stabilization, then the rate limits: the outcome for the metrics' proposal ``desired``.

        The outcome is a value of (proposal, stabilized, result, limiting condition) alone: the one built
        for the same four is returned again (most syncs repeat the previous one; no string formatting)."""
        stabilized = self._stabilize(now, current, desired)
        if stabilized == current:
            out, condition = stabilized, None   # what convert_with_behavior_rate returns for no change
        else:
            out, condition = convert_with_behavior_rate(
                current=current, desired=stabilized, min_replicas=self.min_replicas, max_replicas=self.max_replicas,
                up_events=self.up_events, down_events=self.down_events, behavior=self.behavior, now=now)
            if out == stabilized:
                condition = None
        key = (desired, stabilized, out, condition)
        outcomes = self._outcomes
        found = outcomes.get(key)
        if found is None:
            why = f"metrics ask {desired}"
            if stabilized != desired:
                why += f", stabilized to {stabilized}"
            if condition is not None:
                why += f", {condition}"
            if len(outcomes) >= 1024:   # bounded: a handful of counts recur
                outcomes.clear()
            found = outcomes[key] = HpaOutcome(out, why, desired)
        return found

    def _stabilize(self, now: float, current: int, desired: int) -> int:
        """``stabilizeRecommendationWithBehaviors`` (``test_docs_stabilization_window_takes_highest_recommendation``,
        ``test_scale_up_stabilization_window_takes_lowest``)."""
        up_cut = now - self.behavior.scale_up.stabilization_window_seconds
        down_cut = now - self.behavior.scale_down.stabilization_window_seconds
        ups, downs = self._up_recs, self._down_recs
        # "after" is strict: a recommendation exactly one window old no longer counts
        while ups and ups[0][0] <= up_cut:
            ups.popleft()
        while downs and downs[0][0] <= down_cut:
            downs.popleft()
        up_rec = min(desired, ups[0][1]) if ups else desired
        down_rec = max(desired, downs[0][1]) if downs else desired
        result = current
        if result < up_rec:
            result = up_rec
        if result > down_rec:
            result = down_rec
        # record the unstabilized recommendation
        while ups and ups[-1][1] >= desired:
            ups.pop()
        ups.append((now, desired))
        while downs and downs[-1][1] <= desired:
            downs.pop()
        downs.append((now, desired))
        return result

    def _store_event(self, now: float, before: int, after: int) -> None:
        """``storeScaleEvent``: events older than the direction's longest policy period are outdated and
        the last outdated slot is reused. Limits still count an outdated event until its slot is reused,
        exactly as ``getReplicasChangePerPeriod`` does."""
        if after > before:
            events, horizon, change = self.up_events, now - self.behavior.scale_up.longest_period, after - before
        else:
            events, horizon, change = self.down_events, now - self.behavior.scale_down.longest_period, before - after
        outdated = [i for i, (t, _) in enumerate(events) if t < horizon]
        if outdated:
            events[outdated[-1]] = (now, change)
        else:
            events.append((now, change))
