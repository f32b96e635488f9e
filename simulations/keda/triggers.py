"""What KEDA calls on a trigger, how it turns the answers into HPA metric values, and the Prometheus trigger.

Sources (kedacore/keda):

* ``pkg/scalers/external_scaler.go`` ``GetMetricsAndActivity``: ``GetMetrics`` then ``IsActive``;
  if either fails the values are discarded and the call is an error. Each value becomes a quantity
  with milli precision (``GenerateMetricInMili`` / ``quantityFromFloat64``): NaN, +-Inf and
  negatives become 0, the value is rounded to 3 decimals. The HPA then sums all values.
* ``pkg/scaling/cache/scalers_cache.go`` ``GetMetricsAndActivityForScaler``: on error the scaler is
  rebuilt and asked once more; only the second error counts.
* ``pkg/scalers/prometheus_scaler.go``: ``threshold`` is the ``AverageValue`` target;
  active when the query's value > ``activationThreshold`` (default 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol, runtime_checkable

from scaler.errors import SourceError

from .hpa import AVERAGE_VALUE, METRIC_TYPES


@runtime_checkable
class Trigger(Protocol):
    """What KEDA calls. Raise :class:`scaler.errors.SourceError` on failure (never answer 0 instead)."""

    metric_type: str  # "AverageValue" | "Value"
    # optional attribute ``use_cached_metrics: bool`` (default False): the HPA reads KEDA's last poll
    # optional attribute ``same_answer_within_instant: bool`` (default False): every successful read at one
    # instant returns the same values (target, metric, activity), so an HPA sync at the instant of a successful
    # poll may reuse that poll's read instead of asking again (the simulator's speed; same results)

    def target(self) -> float: ...

    def metric(self, now: float) -> float: ...

    def is_active(self, now: float) -> bool: ...


def sanitize(value: float) -> float:
    """KEDA's handling of one returned value: NaN, +-Inf and negatives -> 0; rounded to 3 decimals.

    ``sanitize(2.34567) == 2.346``; ``sanitize(float("nan")) == 0`` (``test_keda.py::test_sanitize``).
    The rounding is ``float(f"{v:.3f}")`` (Go's ``strconv.FormatFloat(v, 'f', 3, 64)`` parsed back): Python's
    ``round(v, 3)`` is the same correctly rounded decimal conversion and half the cost (read at every poll);
    ``test_keda.py::test_sanitize_rounds_as_the_3_decimal_format`` pins the two equal.
    """
    v = float(value)
    if not math.isfinite(v) or v < 0:
        return 0.0
    if v.is_integer():   # a replica count (our scaler's metric): round(v, 3) == v, without the decimal rounding
        return v
    return round(v, 3)


def metric_sum(value: float | Iterable[float]) -> float:
    """The HPA's usage: the sum of every value a trigger returned, each sanitized first."""
    if isinstance(value, (int, float)):
        return sanitize(value)
    return sum(sanitize(v) for v in value)


class TriggerRead(NamedTuple):
    """One successful ``GetMetricsAndActivity``: the summed, sanitized value, the target and the activity.

    An immutable value (a named tuple: built at every poll, at half the cost of a frozen dataclass)."""

    usage: float
    target: float
    active: bool


def read_trigger(trigger: Trigger, now: float, *, known_target: float | None = None) -> TriggerRead:
    """``GetMetricSpec`` + ``GetMetrics`` + ``IsActive`` with KEDA's single retry; raises the second error.

    A failing ``GetMetricSpec`` falls back to the last known spec (``known_target``) when there is one
    (``scalers_cache.go`` ``resolveMetricSpecs``, KEDA main); without one it is an error.
    """
    try:
        return _read_once(trigger, now, known_target)
    except SourceError:
        return _read_once(trigger, now, known_target)


def _read_once(trigger: Trigger, now: float, known_target: float | None) -> TriggerRead:
    try:
        target = float(trigger.target())
    except SourceError:
        if known_target is None:
            raise
        target = known_target
    value = trigger.metric(now)
    usage = sanitize(value) if isinstance(value, (int, float)) else metric_sum(value)   # metric_sum, one call less
    active = bool(trigger.is_active(now))
    return TriggerRead(usage, target, active)


class ThresholdTrigger:
    """KEDA's Prometheus trigger: ``value_fn(now)`` is the query's value.

    ``threshold`` is the HPA target (``AverageValue`` by default: desired = ceil(value / threshold)
    when outside tolerance); active when ``value > activation_threshold``. ``value_fn`` may raise
    :class:`~scaler.errors.SourceError` (Prometheus down), which KEDA treats as a trigger error.
    Example (the seeds' trigger): ``ThresholdTrigger(lambda t: waiting(t), threshold=5,
    activation_threshold=2)``.
    """

    same_answer_within_instant = False   # see Trigger; a caller whose value_fn qualifies sets it

    def __init__(self, value_fn: Callable[[float], float], *, threshold: float, activation_threshold: float = 0,
                 metric_type: str = AVERAGE_VALUE, use_cached_metrics: bool = False):
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold={threshold!r}: must be a finite number > 0")
        if not math.isfinite(activation_threshold):
            raise ValueError(f"activationThreshold={activation_threshold!r}: must be finite")
        if metric_type not in METRIC_TYPES:
            raise ValueError(f"metricType={metric_type!r}: must be one of {', '.join(METRIC_TYPES)}")
        self.value_fn = value_fn
        self.threshold = float(threshold)
        self.activation_threshold = float(activation_threshold)
        self.metric_type = metric_type
        self.use_cached_metrics = bool(use_cached_metrics)

    def target(self) -> float:
        return self.threshold

    def metric(self, now: float) -> float:
        return float(self.value_fn(now))

    def is_active(self, now: float) -> bool:
        return float(self.value_fn(now)) > self.activation_threshold
