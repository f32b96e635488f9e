"""A faithful emulation of KEDA and the Kubernetes HPA acting on one Deployment (see docs/keda-emulation.md).

Public names (the contract in notes/interfaces.md): ``ScalingPolicy``, ``ScalingRules``,
``HpaBehavior``, ``Fallback``, ``ScaledObjectSpec``, ``Trigger``, ``KedaHpa``, ``ScaleEvent``,
``ThresholdTrigger``, ``scaled_object_from_yaml``.
"""

from .hpa import HorizontalPodAutoscaler, HpaOutcome, MetricReading, Tolerances
from .manifest import scaled_object_from_yaml, triggers_from_yaml
from .operator import KedaHpa, ScaleEvent
from .spec import Fallback, HpaBehavior, ScaledObjectSpec, ScalingPolicy, ScalingRules
from .triggers import ThresholdTrigger, Trigger, sanitize

__all__ = [
    "Fallback", "HorizontalPodAutoscaler", "HpaBehavior", "HpaOutcome", "KedaHpa", "MetricReading",
    "ScaleEvent", "ScaledObjectSpec", "ScalingPolicy", "ScalingRules", "ThresholdTrigger", "Tolerances",
    "Trigger", "sanitize", "scaled_object_from_yaml", "triggers_from_yaml",
]
