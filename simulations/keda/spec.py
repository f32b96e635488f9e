"""The values a ScaledObject (and the HPA KEDA creates from it) is made of, with Kubernetes' and KEDA's defaults.

Defaults and validation follow their sources:

* ``HpaBehavior`` defaults: ``pkg/apis/autoscaling/v2/defaults.go`` in kubernetes/kubernetes
  (``GenerateHPAScaleUpRules`` / ``GenerateHPAScaleDownRules``): scale-up 0 s window, policies
  100 % and 4 pods per 15 s, ``selectPolicy: Max``; scale-down 300 s window, 100 % per 15 s.
  Each missing field of a given ``scaleUp``/``scaleDown`` is defaulted on its own.
* ``tolerance``: the controller flag ``--horizontal-pod-autoscaler-tolerance`` (0.1) unless the
  rules set ``tolerance`` (Kubernetes 1.33+, ``HPAConfigurableTolerance``).
* ``ScaledObjectSpec`` defaults: kedacore/keda ``apis/keda/v1alpha1/scaledobject_types.go``
  (pollingInterval 30, cooldownPeriod 300, initialCooldownPeriod 0, minReplicaCount 0,
  maxReplicaCount 100); the HPA KEDA creates gets ``minReplicas = max(minReplicaCount, 1)``
  (``controllers/keda/hpa.go``, ``getHPAMinReplicas``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

POLICY_TYPES = ("Pods", "Percent")
SELECT_POLICIES = ("Max", "Min", "Disabled")
FALLBACK_BEHAVIORS = ("static", "currentReplicas", "currentReplicasIfHigher", "currentReplicasIfLower")
DEFAULT_TOLERANCE = 0.1


def _bad(path: str, value: object, why: str) -> ValueError:
    return ValueError(f"{path}={value!r}: {why}")


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPA scaling policy: at most ``value`` pods (or percent) of change per ``period_seconds``.

    Kubernetes validation (``pkg/apis/autoscaling/validation``): value > 0, 0 < periodSeconds <= 1800.
    """

    type: str
    value: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.type not in POLICY_TYPES:
            raise _bad("policy.type", self.type, f"must be one of {', '.join(POLICY_TYPES)}")
        if not isinstance(self.value, int) or isinstance(self.value, bool) or self.value <= 0:
            raise _bad("policy.value", self.value, "must be an integer > 0")
        if not (0 < self.period_seconds <= 1800):
            raise _bad("policy.periodSeconds", self.period_seconds, "must be in (0, 1800]")


@dataclass(frozen=True)
class ScalingRules:
    """``behavior.scaleUp`` or ``behavior.scaleDown`` of an HPA.

    ``stabilization_window_seconds``: 0..3600. ``select_policy``: ``Max`` (the policy allowing the
    biggest change), ``Min`` (the smallest) or ``Disabled`` (no scaling in that direction).
    ``tolerance``: the fraction around a usage ratio of 1.0 inside which nothing changes.
    """

    stabilization_window_seconds: float
    policies: tuple[ScalingPolicy, ...]
    select_policy: str = "Max"
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not (0 <= self.stabilization_window_seconds <= 3600):
            raise _bad("stabilizationWindowSeconds", self.stabilization_window_seconds, "must be in [0, 3600]")
        if self.select_policy not in SELECT_POLICIES:
            raise _bad("selectPolicy", self.select_policy, f"must be one of {', '.join(SELECT_POLICIES)}")
        if not self.policies:
            raise _bad("policies", self.policies, "at least one policy is required")
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)):
            raise _bad("tolerance", self.tolerance, "must be a finite number >= 0")
        object.__setattr__(self, "policies", tuple(self.policies))

    @property
    def longest_period(self) -> float:
        return max(p.period_seconds for p in self.policies)


def default_scale_up() -> ScalingRules:
    """Kubernetes' default scale-up: no window; max of +100 % and +4 pods per 15 s."""
    return ScalingRules(0, (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)), "Max")


def default_scale_down() -> ScalingRules:
    """Kubernetes' default scale-down: 300 s window (highest recommendation); -100 % per 15 s."""
    return ScalingRules(300, (ScalingPolicy("Percent", 100, 15),), "Max")


@dataclass(frozen=True)
class HpaBehavior:
    """``spec.behavior`` of the HPA (KEDA copies ``advanced.horizontalPodAutoscalerConfig.behavior``)."""

    scale_up: ScalingRules = field(default_factory=default_scale_up)
    scale_down: ScalingRules = field(default_factory=default_scale_down)


@dataclass(frozen=True)
class Fallback:
    """``spec.fallback``: after more than ``failure_threshold`` consecutive failed metric reads by the HPA,
    KEDA answers ``target * replicas`` instead of an error (``pkg/fallback/fallback.go``).

    ``behavior`` (KEDA 2.17+): ``static`` uses ``replicas``; ``currentReplicas`` the current count;
    ``currentReplicasIfHigher`` / ``IfLower`` the max / min of the two.
    """

    failure_threshold: int
    replicas: int
    behavior: str = "static"

    def __post_init__(self) -> None:
        if not isinstance(self.failure_threshold, int) or self.failure_threshold < 0:
            raise _bad("fallback.failureThreshold", self.failure_threshold, "must be an integer >= 0")
        if not isinstance(self.replicas, int) or self.replicas < 0:
            raise _bad("fallback.replicas", self.replicas, "must be an integer >= 0")
        if self.behavior not in FALLBACK_BEHAVIORS:
            raise _bad("fallback.behavior", self.behavior, f"must be one of {', '.join(FALLBACK_BEHAVIORS)}")


@dataclass(frozen=True)
class ScaledObjectSpec:
    """A KEDA ScaledObject's scaling settings (times in seconds).

    ``hpa_sync_period`` is kube-controller-manager's ``--horizontal-pod-autoscaler-sync-period``;
    ``push`` marks an ``external-push`` trigger (KEDA listens on ``StreamIsActive``).
    """

    polling_interval: float = 30
    cooldown_period: float = 300
    min_replica_count: int = 0
    max_replica_count: int = 100
    idle_replica_count: int | None = None
    fallback: Fallback | None = None
    behavior: HpaBehavior = field(default_factory=HpaBehavior)
    hpa_sync_period: float = 15
    push: bool = False
    initial_cooldown_period: float = 0

    def __post_init__(self) -> None:
        if not self.polling_interval > 0:
            raise _bad("spec.pollingInterval", self.polling_interval, "must be > 0")
        if not self.hpa_sync_period > 0:
            raise _bad("hpa_sync_period", self.hpa_sync_period, "must be > 0")
        if self.cooldown_period < 0:
            raise _bad("spec.cooldownPeriod", self.cooldown_period, "must be >= 0")
        if self.initial_cooldown_period < 0:
            raise _bad("spec.initialCooldownPeriod", self.initial_cooldown_period, "must be >= 0")
        if self.min_replica_count < 0:
            raise _bad("spec.minReplicaCount", self.min_replica_count, "must be >= 0")
        if self.max_replica_count < 1:
            raise _bad("spec.maxReplicaCount", self.max_replica_count, "must be >= 1")
        if self.min_replica_count > self.max_replica_count:
            raise _bad("spec.minReplicaCount", self.min_replica_count,
                       f"must be <= spec.maxReplicaCount ({self.max_replica_count})")
        if self.idle_replica_count is not None:
            # KEDA's admission webhook (scaledobject_webhook.go): idleReplicaCount < minReplicaCount.
            if self.idle_replica_count < 0 or self.idle_replica_count >= self.min_replica_count:
                raise _bad("spec.idleReplicaCount", self.idle_replica_count,
                           f"must be >= 0 and < spec.minReplicaCount ({self.min_replica_count})")

    @property
    def hpa_min_replicas(self) -> int:
        """The HPA's ``minReplicas``: minReplicaCount, or 1 when it is 0 (the HPA cannot hold 0)."""
        return self.min_replica_count if self.min_replica_count > 0 else 1

    @property
    def activation_replicas(self) -> int:
        """What KEDA sets on activation from 0 (or idle): max(minReplicaCount, 1)."""
        return self.hpa_min_replicas
