"""Read a KEDA ScaledObject manifest (``keda.sh/v1alpha1``) into a :class:`ScaledObjectSpec`.

Field names and defaults follow ``apis/keda/v1alpha1/scaledobject_types.go`` (kedacore/keda) and,
for ``advanced.horizontalPodAutoscalerConfig.behavior``, Kubernetes' ``autoscaling/v2``
``HorizontalPodAutoscalerBehavior`` with its per-field defaults (``spec.py``). Every unknown or
invalid field is reported, all at once, as ``path=value: why`` in a :class:`ManifestError`.
Every ScaledObject file the project reads (the simulator's ``--scaled-object``, ``vllm-scaler replay
--scaled-object``, the demo's example) goes through :func:`read_scaled_object_doc`.
Fields KEDA has but this emulation does not model (``scalingModifiers``, triggers other than
``external``, ``external-push`` and ``prometheus``) are errors too, never silently dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import yaml

from .hpa import METRIC_TYPES
from .spec import (
    FALLBACK_BEHAVIORS,
    POLICY_TYPES,
    SELECT_POLICIES,
    Fallback,
    HpaBehavior,
    ScaledObjectSpec,
    ScalingPolicy,
    ScalingRules,
    default_scale_down,
    default_scale_up,
)

TRIGGER_TYPES = ("external", "external-push", "prometheus")
EXTERNAL_TYPES = ("external", "external-push")     # the triggers that call an external scaler (this one)

_TOP_KEYS = {"apiVersion", "kind", "metadata", "spec", "status"}
_SPEC_KEYS = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
              "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers", "envSourceContainerName"}
_ADVANCED_KEYS = {"horizontalPodAutoscalerConfig", "restoreToOriginalReplicaCount"}
_HPA_CONFIG_KEYS = {"name", "behavior"}
_BEHAVIOR_KEYS = {"scaleUp", "scaleDown"}
_RULES_KEYS = {"stabilizationWindowSeconds", "selectPolicy", "policies", "tolerance"}
_POLICY_KEYS = {"type", "value", "periodSeconds"}
_FALLBACK_KEYS = {"failureThreshold", "replicas", "behavior"}
_TRIGGER_KEYS = {"type", "name", "metadata", "metricType", "authenticationRef", "useCachedMetrics"}


class ManifestError(ValueError):
    """A ScaledObject manifest KEDA (or this emulation) would not accept; ``problems`` lists them all."""

    def __init__(self, problems: list[str], source: str | os.PathLike | None = None):
        self.problems = tuple(problems)
        super().__init__(("" if source is None else f"{source}: ") + "invalid ScaledObject: "
                         + "; ".join(self.problems))


@dataclass(frozen=True)
class TriggerSpec:
    """One ``spec.triggers[]`` entry: ``type``, ``metricType`` (default ``AverageValue``), ``metadata``."""

    type: str
    metric_type: str = "AverageValue"
    metadata: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    use_cached_metrics: bool = False


class _Reader:
    """Collects problems while walking the document, so the user sees every one in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, value: Any, why: str) -> None:
        self.problems.append(f"{path}={value!r}: {why}")

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.bad(path, value, "must be a mapping")
            return {}
        for k in value:
            if k not in allowed:
                self.bad(f"{path}.{k}", value[k], f"unknown field (known: {', '.join(sorted(allowed))})")
        return dict(value)

    @overload
    def integer(self, m: Mapping, key: str, path: str, default: int, *, lo: int | None = None,
                hi: int | None = None) -> int: ...
    @overload
    def integer(self, m: Mapping, key: str, path: str, default: None, *, lo: int | None = None,
                hi: int | None = None) -> int | None: ...
    def integer(self, m: Mapping, key: str, path: str, default: int | None, *, lo: int | None = None,
                hi: int | None = None) -> int | None:
        """The integer at ``m[key]``, ``default`` when absent or bad (a bad one is recorded as a problem)."""
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(f"{path}.{key}", v, "must be an integer")
            return default
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            self.bad(f"{path}.{key}", v, f"must be in {rng}")
            return default
        return v

    def number(self, m: Mapping, key: str, path: str, default: float) -> float:
        """A Kubernetes quantity given as a number or a decimal string (e.g. ``tolerance: "0.05"``)."""
        if key not in m or m[key] is None:
            return default
        v = m[key]
        try:
            if isinstance(v, bool):
                raise ValueError
            x = float(v[:-1]) / 1000 if isinstance(v, str) and v.endswith("m") else float(v)
        except (TypeError, ValueError):
            self.bad(f"{path}.{key}", v, "must be a number")
            return default
        if not x >= 0:
            self.bad(f"{path}.{key}", v, "must be >= 0")
            return default
        return x

    def choice(self, m: Mapping, key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if v not in allowed:
            self.bad(f"{path}.{key}", v, f"must be one of {', '.join(allowed)}")
            return default
        return v


def _rules(r: _Reader, doc: Any, path: str, default: ScalingRules) -> ScalingRules:
    m = r.mapping(doc, path, _RULES_KEYS)
    if not m:
        return default
    window = r.integer(m, "stabilizationWindowSeconds", path, int(default.stabilization_window_seconds), lo=0, hi=3600)
    select = r.choice(m, "selectPolicy", path, default.select_policy, SELECT_POLICIES)
    tolerance = r.number(m, "tolerance", path, default.tolerance)
    policies = default.policies
    raw = m.get("policies")
    if raw is not None:
        if not isinstance(raw, list):
            r.bad(f"{path}.policies", raw, "must be a list")
        elif raw:
            parsed = []
            for i, p in enumerate(raw):
                ppath = f"{path}.policies[{i}]"
                pm = r.mapping(p, ppath, _POLICY_KEYS)
                for req in ("type", "value", "periodSeconds"):
                    if req not in pm:
                        r.bad(f"{ppath}.{req}", None, "required")
                ptype = r.choice(pm, "type", ppath, "", POLICY_TYPES)
                value = r.integer(pm, "value", ppath, None, lo=1)
                period = r.integer(pm, "periodSeconds", ppath, None, lo=1, hi=1800)
                if ptype and value is not None and period is not None:
                    parsed.append(ScalingPolicy(ptype, value, period))
            if parsed:
                policies = tuple(parsed)
    return ScalingRules(window, policies, select, tolerance)


def _fallback(r: _Reader, doc: Any) -> Fallback | None:
    if doc is None:
        return None
    m = r.mapping(doc, "spec.fallback", _FALLBACK_KEYS)
    for req in ("failureThreshold", "replicas"):
        if req not in m:
            r.bad(f"spec.fallback.{req}", None, "required")
    threshold = r.integer(m, "failureThreshold", "spec.fallback", None, lo=0)
    replicas = r.integer(m, "replicas", "spec.fallback", None, lo=0)
    behavior = r.choice(m, "behavior", "spec.fallback", "static", FALLBACK_BEHAVIORS)
    if threshold is None or replicas is None:
        return None
    return Fallback(threshold, replicas, behavior)


def _load(doc: Mapping[str, Any] | str) -> Mapping[str, Any]:
    if isinstance(doc, str):
        doc = yaml.safe_load(doc)
    if not isinstance(doc, Mapping):
        raise ManifestError([f"<document>={doc!r}: must be a mapping (a ScaledObject)"])
    return doc


def _triggers(r: _Reader, raw: Any) -> tuple[TriggerSpec, ...]:
    if not isinstance(raw, list) or not raw:
        r.bad("spec.triggers", raw, "at least one trigger is required")
        return ()
    out = []
    for i, t in enumerate(raw):
        path = f"spec.triggers[{i}]"
        m = r.mapping(t, path, _TRIGGER_KEYS)
        ttype = m.get("type")
        if ttype not in TRIGGER_TYPES:
            r.bad(f"{path}.type", ttype, f"not modelled (supported: {', '.join(TRIGGER_TYPES)})")
            continue
        metric_type = r.choice(m, "metricType", path, "AverageValue", METRIC_TYPES)
        md = m.get("metadata") or {}
        if not isinstance(md, Mapping):
            r.bad(f"{path}.metadata", md, "must be a mapping of strings")
            md = {}
        for k, v in md.items():
            if not isinstance(v, str):
                r.bad(f"{path}.metadata.{k}", v, "must be a string (quote it in YAML)")
        if ttype in EXTERNAL_TYPES and "scalerAddress" not in md:
            r.bad(f"{path}.metadata.scalerAddress", None, "required for external triggers")
        if ttype == "prometheus":
            for req in ("serverAddress", "query", "threshold"):
                if req not in md:
                    r.bad(f"{path}.metadata.{req}", None, "required for prometheus triggers")
            for num in ("threshold", "activationThreshold"):
                if num in md:
                    try:
                        float(md[num])
                    except (TypeError, ValueError):
                        r.bad(f"{path}.metadata.{num}", md[num], "must be a number")
        cached = m.get("useCachedMetrics", False)
        if not isinstance(cached, bool):
            r.bad(f"{path}.useCachedMetrics", cached, "must be true or false")
            cached = False
        out.append(TriggerSpec(ttype, metric_type, {str(k): str(v) for k, v in md.items()},
                               str(m.get("name", "")), cached))
    return tuple(out)


def _parse(doc: Mapping[str, Any] | str) -> tuple[ScaledObjectSpec, tuple[TriggerSpec, ...]]:
    doc = _load(doc)
    r = _Reader()
    top = r.mapping(doc, "<document>", _TOP_KEYS)
    if top.get("apiVersion", "keda.sh/v1alpha1") != "keda.sh/v1alpha1":
        r.bad("apiVersion", top.get("apiVersion"), "must be keda.sh/v1alpha1")
    if top.get("kind", "ScaledObject") != "ScaledObject":
        r.bad("kind", top.get("kind"), "must be ScaledObject")
    if "spec" not in top:
        r.bad("spec", None, "required")
    spec = r.mapping(top.get("spec"), "spec", _SPEC_KEYS)
    if "spec" in top:
        ref = spec.get("scaleTargetRef")
        if not isinstance(ref, Mapping) or not ref.get("name"):
            r.bad("spec.scaleTargetRef.name", None if not isinstance(ref, Mapping) else ref.get("name"),
                  "required (the Deployment KEDA scales)")
    d = ScaledObjectSpec()
    polling = r.integer(spec, "pollingInterval", "spec", int(d.polling_interval), lo=1)
    cooldown = r.integer(spec, "cooldownPeriod", "spec", int(d.cooldown_period), lo=0)
    initial = r.integer(spec, "initialCooldownPeriod", "spec", int(d.initial_cooldown_period), lo=0)
    min_rc = r.integer(spec, "minReplicaCount", "spec", d.min_replica_count, lo=0)
    max_rc = r.integer(spec, "maxReplicaCount", "spec", d.max_replica_count, lo=1)
    idle = r.integer(spec, "idleReplicaCount", "spec", None, lo=0)
    if min_rc is not None and max_rc is not None and min_rc > max_rc:
        r.bad("spec.minReplicaCount", min_rc, f"must be <= spec.maxReplicaCount ({max_rc})")
    if idle is not None and min_rc is not None and idle >= min_rc:
        r.bad("spec.idleReplicaCount", idle, f"must be < spec.minReplicaCount ({min_rc})")
    fallback = _fallback(r, spec.get("fallback"))
    adv = r.mapping(spec.get("advanced"), "spec.advanced", _ADVANCED_KEYS | {"scalingModifiers"})
    if "scalingModifiers" in adv:
        r.bad("spec.advanced.scalingModifiers", adv["scalingModifiers"], "not modelled by the emulation")
    hpa_cfg = r.mapping(adv.get("horizontalPodAutoscalerConfig"), "spec.advanced.horizontalPodAutoscalerConfig",
                        _HPA_CONFIG_KEYS)
    bpath = "spec.advanced.horizontalPodAutoscalerConfig.behavior"
    beh = r.mapping(hpa_cfg.get("behavior"), bpath, _BEHAVIOR_KEYS)
    behavior = HpaBehavior(scale_up=_rules(r, beh.get("scaleUp"), f"{bpath}.scaleUp", default_scale_up()),
                           scale_down=_rules(r, beh.get("scaleDown"), f"{bpath}.scaleDown", default_scale_down()))
    triggers = _triggers(r, spec.get("triggers"))
    if r.problems:
        raise ManifestError(r.problems)
    so = ScaledObjectSpec(polling_interval=polling, cooldown_period=cooldown, min_replica_count=min_rc,
                          max_replica_count=max_rc, idle_replica_count=idle, fallback=fallback, behavior=behavior,
                          push=any(t.type == "external-push" for t in triggers), initial_cooldown_period=initial)
    return so, triggers


def scaled_object_from_yaml(doc: Mapping[str, Any] | str) -> ScaledObjectSpec:
    """A ScaledObject manifest (parsed YAML mapping, or YAML text) -> :class:`ScaledObjectSpec`.

    Raises :class:`ManifestError` (a ``ValueError``) naming every bad field path and value.
    """
    return _parse(doc)[0]


def triggers_from_yaml(doc: Mapping[str, Any] | str) -> tuple[TriggerSpec, ...]:
    """The manifest's ``spec.triggers`` as :class:`TriggerSpec` values (validated like the rest)."""
    return _parse(doc)[1]


@dataclass(frozen=True)
class ScaledObjectManifest:
    """A ScaledObject read from a file: its ``metadata.name``, spec and triggers, validated."""

    name: str | None
    spec: ScaledObjectSpec
    triggers: tuple[TriggerSpec, ...]


def read_scaled_object_doc(path: str | os.PathLike) -> dict[str, Any]:
    """The ScaledObject document of a YAML file, unvalidated (a mapping to edit, or to pass to the readers).

    The file may hold several documents (a kustomize rendering, a ScaledObject beside its
    TriggerAuthentication): the first of ``kind: ScaledObject`` is taken; a file of one document without a
    ``kind`` is taken as it is. Raises ``ValueError`` naming the file: unreadable, not YAML, no ScaledObject.
    """
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d is not None]
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML: {exc}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
            return doc
    if len(docs) == 1 and isinstance(docs[0], dict) and "kind" not in docs[0]:
        return docs[0]
    raise ValueError(f"{path}: no document of kind ScaledObject")


def load_scaled_object(path: str | os.PathLike) -> ScaledObjectManifest:
    """The ScaledObject in a YAML file (:func:`read_scaled_object_doc`), validated as :func:`scaled_object_from_yaml`
    does; a :class:`ManifestError` names the file and every bad field."""
    doc = read_scaled_object_doc(path)
    try:
        spec, triggers = _parse(doc)
    except ManifestError as exc:
        raise ManifestError(list(exc.problems), source=path) from None
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return ScaledObjectManifest(None if name is None else str(name), spec, triggers)


def metadata_from_scaled_object(path: str | os.PathLike) -> tuple[dict[str, str], str | None]:
    """The metadata of the ScaledObject's first ``external``/``external-push`` trigger, and the ScaledObject's
    name, from a YAML file (:func:`load_scaled_object`). ``ValueError`` naming the file when there is none."""
    so = load_scaled_object(path)
    for trig in so.triggers:
        if trig.type in EXTERNAL_TYPES:
            return dict(trig.metadata), so.name
    raise ValueError(f"{path}: the ScaledObject has no trigger of type {'/'.join(EXTERNAL_TYPES)}")
