"""KEDA's scale loop and the HPA it drives, stepped by arithmetic time: one Deployment's ``spec.replicas``.

Two loops act on the same count, as in a cluster:

* KEDA polls every ``pollingInterval`` from ``start`` (``pkg/scaling/scale_handler.go``,
  ``startScaleLoop`` -> ``checkScalers`` -> ``getScaledObjectState``): every trigger is read
  (``GetMetricSpec``, ``GetMetrics``, ``IsActive``, one retry); the ScaledObject is active when any
  trigger is, in error when any trigger failed. Then ``RequestScale``
  (``pkg/scaling/executor/scale_scaledobjects.go``, KEDA main 2026):

  ============================  =============================================================
  active, replicas 0 (or idle)  -> max(minReplicaCount, 1); lastActiveTime = now
  active, a trigger failed      -> nothing (``PartialTriggerError``; lastActiveTime not renewed)
  active                        -> lastActiveTime = now
  inactive, error, fallback     -> nothing (the HPA applies the fallback after the threshold)
  inactive, error, no fallback  -> nothing (``TriggerError``: no scale to zero while erroring)
  inactive, replicas > idle     -> idleReplicaCount / minReplicaCount after the cooldown
  (idle set) or minReplicaCount
  0 and replicas > 0
  inactive, replicas < min      -> minReplicaCount
  ============================  =============================================================

  The cooldown (``scaleToZeroOrIdle``) has passed when ``lastActiveTime + cooldownPeriod < now``, or,
  never active, when ``creation + initialCooldownPeriod < now`` (strict, as Go's ``Before``).
* An ``external-push`` trigger's ``StreamIsActive`` ``true`` calls ``RequestScale(active=True)`` at
  once (``startPushScalers``): :meth:`KedaHpa.push_active`. ``false`` is ignored since KEDA 2.18.
* The HPA syncs every ``hpa_sync_period`` from ``start`` but does nothing at 0 replicas. Each sync
  asks keda-metrics-apiserver, which reads every trigger again (one retry) and passes the result
  through ``pkg/fallback/fallback.go`` ``GetMetricsWithFallback``: a success resets the metric's
  failure count; a failure increments it, and once the count exceeds ``failureThreshold`` KEDA
  answers ``target * fallback.replicas`` (``AverageValue``) or ``target * replicas / ready``
  (``Value``) instead of the error, so the HPA proposes ``fallback.replicas`` (unless that is within
  tolerance of ``status.replicas``). Below the threshold, or without ``fallback``, the HPA gets an
  error and keeps its count. Then :class:`~simulations.keda.hpa.HorizontalPodAutoscaler`.

Pinned by ``tests/unit/test_keda.py`` (one test per row above: ``test_activation_*``,
``test_cooldown_*``, ``test_initial_cooldown_*``, ``test_idle_*``, ``test_errors_without_fallback_*``,
``test_partial_error_*``, ``test_fallback_*``, ``test_push_*``).

When a KEDA poll and an HPA sync fall on the same instant the poll runs first. ``step`` uses the
``status_replicas``/``ready_replicas`` given for every event it runs, so call it at least as often
as the faster loop (every 15 s or more often) with the fleet's current figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from scaler.errors import SourceError

from .hpa import AVERAGE_VALUE, METRIC_TYPES, HorizontalPodAutoscaler, HpaOutcome, MetricReading, to_milli
from .spec import ScaledObjectSpec
from .triggers import Trigger, TriggerRead, read_trigger


class ScaleEvent(NamedTuple):
    """One change of ``spec.replicas``: when, who (``"keda"`` or ``"hpa"``), from, to, why."""

    t: float
    source: str
    from_replicas: int
    to_replicas: int
    reason: str


class KedaHpa:
    """A ScaledObject, its triggers and its HPA acting on one Deployment (see the module docstring)."""

    def __init__(self, spec: ScaledObjectSpec, triggers: Sequence[Trigger], *, start: float, replicas: int):
        if not triggers:
            raise ValueError("triggers: a ScaledObject needs at least one trigger")
        for i, trig in enumerate(triggers):
            if getattr(trig, "metric_type", None) not in METRIC_TYPES:
                raise ValueError(f"triggers[{i}].metricType={getattr(trig, 'metric_type', None)!r}: "
                                 f"must be one of {', '.join(METRIC_TYPES)}")
        if replicas < 0:
            raise ValueError(f"replicas={replicas}: must be >= 0")
        self.spec = spec
        self.triggers = tuple(triggers)
        self.start = float(start)
        self.replicas = int(replicas)
        self.last_active_time: float | None = None
        self.events: list[ScaleEvent] = []
        self.failures = [0] * len(self.triggers)   # ScaledObject.status.health[metric].numberOfFailures
        self.last_poll: tuple[bool, bool] | None = None  # (active, error) of the latest KEDA poll
        self.last_hpa: HpaOutcome | None = None          # the latest HPA reconcile (None while at 0)
        self.hpa = HorizontalPodAutoscaler(min_replicas=spec.hpa_min_replicas, max_replicas=spec.max_replica_count,
                                           behavior=spec.behavior, start=self.start, current_replicas=self.replicas)
        self._polls_done = 0
        self._syncs_done = 0
        # the latest poll's result per trigger (KEDA's metrics cache, read by the HPA with useCachedMetrics)
        self._cache: list[TriggerRead | SourceError | None] = [None] * len(self.triggers)
        self._cache_at: list[float | None] = [None] * len(self.triggers)   # when each cache entry was read
        # the previous sync's reading per trigger, with the (usage, HPA target, metric type) it was made of
        self._last_reading: list[tuple[tuple, MetricReading] | None] = [None] * len(self.triggers)
        # The HPA's target per metric, written when KEDA creates the HPA (GetMetricSpec at reconcile) and
        # not updated until the ScaledObject changes (kedacore/keda#7793): later target() values are ignored.
        self.hpa_targets: list[float | None] = [self._initial_target(trig) for trig in self.triggers]
        self._known_targets: list[float | None] = list(self.hpa_targets)   # the last GetMetricSpec answer

    @staticmethod
    def _initial_target(trig: Trigger) -> float | None:
        try:
            target = float(trig.target())
        except SourceError:
            return None   # written at the first successful GetMetricSpec instead
        if not target > 0:
            raise ValueError(f"target={target!r}: Kubernetes rejects an HPA target <= 0")
        return target

    # -- public -----------------------------------------------------------------------------------
    def step(self, now: float, *, status_replicas: int, ready_replicas: int) -> int:
        """Run every KEDA poll and HPA sync due at or before ``now``; return ``spec.replicas``."""
        if status_replicas < 0 or ready_replicas < 0 or ready_replicas > status_replicas:
            raise ValueError(f"status_replicas={status_replicas}, ready_replicas={ready_replicas}: "
                             "need 0 <= ready_replicas <= status_replicas")
        start, polling, sync = self.start, self.spec.polling_interval, self.spec.hpa_sync_period
        while True:
            next_poll = start + self._polls_done * polling
            next_sync = start + self._syncs_done * sync
            if next_poll <= now and next_poll <= next_sync:
                self._polls_done += 1
                self._poll(next_poll)
            elif next_sync <= now:
                self._syncs_done += 1
                self._hpa_sync(next_sync, status_replicas, ready_replicas)
            else:
                return self.replicas

    def push_active(self, now: float) -> None:
        """A ``true`` on ``StreamIsActive``: KEDA calls ``RequestScale(active=True, error=False)`` now."""
        if not self.spec.push:
            raise ValueError("push_active: the ScaledObject has no external-push trigger (spec.push is False)")
        self._request_scale(now, active=True, error=False, why="StreamIsActive true")

    @property
    def fallback_active(self) -> bool:
        """True while some metric has failed more than ``fallback.failureThreshold`` times in a row."""
        fb = self.spec.fallback
        return fb is not None and any(n > fb.failure_threshold for n in self.failures)

    # -- KEDA's scale loop ------------------------------------------------------------------------
    def _poll(self, t: float) -> None:
        active = error = False
        for i in range(len(self.triggers)):
            try:
                read = self._read(i, t)
            except SourceError as err:
                self._cache[i] = err
                self._cache_at[i] = t
                error = True
                continue
            self._cache[i] = read
            self._cache_at[i] = t
            active = active or read.active
        self.last_poll = (active, error)
        self._request_scale(t, active=active, error=error, why="poll")

    def _read(self, i: int, t: float) -> TriggerRead:
        read = read_trigger(self.triggers[i], t, known_target=self._known_targets[i])
        self._known_targets[i] = read.target
        return read

    def _request_scale(self, t: float, *, active: bool, error: bool, why: str) -> None:
        spec, current = self.spec, self.replicas
        if active:
            if (spec.idle_replica_count is not None and current < spec.min_replica_count) or current == 0:
                self._set(t, "keda", spec.activation_replicas, f"activated ({why})")
                self.last_active_time = t
            elif error:
                pass  # PartialTriggerError: no change, lastActiveTime not renewed
            else:
                self.last_active_time = t
            return
        if error and spec.fallback is not None and spec.fallback.replicas != 0:
            return  # the HPA applies the fallback once the failure threshold is passed
        if error and spec.fallback is None:
            return  # TriggerError: no deactivation while erroring
        if (spec.idle_replica_count is not None and current > spec.idle_replica_count) or \
                (current > 0 and spec.min_replica_count == 0):
            if self._cooled_down(t):
                to = spec.idle_replica_count if spec.idle_replica_count is not None else spec.min_replica_count
                self._set(t, "keda", to, "deactivated: inactive for cooldownPeriod")
        elif spec.idle_replica_count is None and current < spec.min_replica_count:
            self._set(t, "keda", spec.min_replica_count, "below minReplicaCount")

    def _cooled_down(self, t: float) -> bool:
        if self.last_active_time is None:
            return self.start + self.spec.initial_cooldown_period < t
        return self.last_active_time + self.spec.cooldown_period < t

    # -- the HPA through keda-metrics-apiserver ---------------------------------------------------
    def _hpa_sync(self, t: float, status_replicas: int, ready_replicas: int) -> None:
        if self.replicas == 0:
            return  # the HPA is disabled at 0 and asks KEDA for nothing
        readings = [self._hpa_reading(i, t, ready_replicas) for i in range(len(self.triggers))]
        out = self.hpa.reconcile(t, spec_replicas=self.replicas, status_replicas=status_replicas,
                                 ready_replicas=ready_replicas, readings=readings)
        self.last_hpa = out
        if out.desired != self.replicas:
            self._set(t, "hpa", out.desired, out.reason + (" (fallback)" if self.fallback_active else ""))

    def _hpa_reading(self, i: int, t: float, ready_replicas: int) -> MetricReading | Exception:
        trig = self.triggers[i]
        try:
            polled = self._cache[i]
            cached = polled if getattr(trig, "use_cached_metrics", False) else None
            if cached is None and self._cache_at[i] == t and type(polled) is TriggerRead \
                    and getattr(trig, "same_answer_within_instant", False):
                # a trigger that answers the same for every read at one instant (e.g. the scaler's cached
                # decision), already read successfully by this instant's poll: reading it again gives that read
                cached = polled
            if isinstance(cached, SourceError):
                raise cached
            read: TriggerRead = cached if cached is not None else self._read(i, t)
        except SourceError as err:
            self.failures[i] += 1
            fb = self.spec.fallback
            if fb is None or self.failures[i] <= fb.failure_threshold:
                return err
            return self._fallback_reading(i, err, ready_replicas)
        self.failures[i] = 0
        hpa_target = self.hpa_targets[i]
        if hpa_target is None:
            hpa_target = self.hpa_targets[i] = read.target
        key = (read.usage, hpa_target, trig.metric_type)
        last = self._last_reading[i]   # an immutable value: the previous sync's when nothing changed
        if last is None or last[0] != key:
            last = self._last_reading[i] = (key, MetricReading(to_milli(read.usage), to_milli(hpa_target),
                                                              trig.metric_type))
        return last[1]

    def _fallback_reading(self, i: int, err: SourceError, ready_replicas: int) -> MetricReading | Exception:
        trig = self.triggers[i]
        fb = self.spec.fallback
        assert fb is not None
        replicas = {"static": fb.replicas, "currentReplicas": self.replicas,
                    "currentReplicasIfHigher": max(self.replicas, fb.replicas),
                    "currentReplicasIfLower": min(self.replicas, fb.replicas)}[fb.behavior]
        try:
            target = float(trig.target())   # KEDA scales the fallback by the live metric spec's target
        except SourceError:
            known = self._known_targets[i]
            if known is None:
                return err
            target = known
        hpa_target = self.hpa_targets[i]
        if hpa_target is None:
            hpa_target = self.hpa_targets[i] = target
        per = float(replicas)
        if trig.metric_type != AVERAGE_VALUE:
            if ready_replicas <= 0:
                return SourceError("fallback for a Value metric needs ready replicas > 0", source="keda-fallback")
            per /= ready_replicas
        return MetricReading(int(target * 1000 * per), to_milli(hpa_target), trig.metric_type)

    def _set(self, t: float, source: str, to: int, reason: str) -> None:
        if to != self.replicas:
            self.events.append(ScaleEvent(t, source, self.replicas, to, reason))
            self.replicas = to
