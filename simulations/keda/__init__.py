"""A faithful emulation of KEDA and the Kubernetes HPA acting on one Deployment (see docs/keda-emulation.md).

Public names (the contract in notes/interfaces.md): ``ScalingPolicy``, ``ScalingRules``,
``HpaBehavior``, ``Fallback``, ``ScaledObjectSpec``, ``Trigger``, ``KedaHpa``, ``ScaleEvent``,
``ThresholdTrigger``, ``scaled_object_from_yaml``; reading a ScaledObject file: ``load_scaled_object``.
"""

from .hpa import HorizontalPodAutoscaler, HpaOutcome, MetricReading, Tolerances
from .manifest import (
                       ManifestError,
                       ScaledObjectManifest,
                       load_scaled_object,
                       metadata_from_scaled_object,
                       read_scaled_object_doc,
                       scaled_object_from_yaml,
                       triggers_from_yaml,
)
from .operator import KedaHpa, ScaleEvent
from .spec import Fallback, HpaBehavior, ScaledObjectSpec, ScalingPolicy, ScalingRules
from .triggers import ThresholdTrigger, Trigger, sanitize

__all__ = [
    "Fallback", "HorizontalPodAutoscaler", "HpaBehavior", "HpaOutcome", "KedaHpa", "MetricReading",
    "ManifestError", "ScaleEvent", "ScaledObjectManifest", "ScaledObjectSpec", "ScalingPolicy", "ScalingRules", "ThresholdTrigger", "Tolerances",
    "Trigger", "load_scaled_object", "metadata_from_scaled_object", "read_scaled_object_doc", "sanitize",
    "scaled_object_from_yaml", "triggers_from_yaml",
]
