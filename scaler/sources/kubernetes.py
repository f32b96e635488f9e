"""Cold start and replica supply from the Kubernetes API, with the official ``kubernetes`` client.

:class:`KubernetesColdStartReader` is a :class:`~scaler.server.SignalEnricher`
(``name``, ``enrich(signals, config, now) -> Signals``). For the target
Deployment (``PolicyConfig.namespace`` / ``.deployment``) it:

1. GETs the Deployment (every call, cheap): its ``spec.selector`` and its
   status. ``Signals.ready_replicas`` = ``status.readyReplicas`` and
   ``Signals.starting_replicas`` = ``max(0, spec.replicas - readyReplicas)``,
   the replicas requested but not Ready (the policy counts them as supply on
   the way), unless the source already filled them;
2. LISTs the pods matching the selector's ``matchLabels`` and
   ``matchExpressions`` (at most every ``ttl`` seconds, default 300), and turns
   each into a :class:`~scaler.coldstart.PodStart`: ``metadata.creationTimestamp``
   -> the ``Ready`` condition's ``lastTransitionTime`` (when ``status`` is
   ``"True"``), with the sum of container restart counts;
3. summarises them with :func:`scaler.coldstart.summarize` (pods created in the
   last ``lookback`` seconds, default 7 days, the ``max_pods`` newest, default
   20) into ``Signals.cold_start`` (source ``kubernetes``). No usable pod:
   the previous measurement is kept if there is one, else the signals are left
   as they are (the policy reports the 180 s default).

RBAC (namespace of the target): ``get`` on ``deployments`` (apps) and
``get``/``list``/``watch`` on ``pods``; nothing else. ``watch`` is not used
today; it is granted so that a later informer needs no RBAC change.

Errors map to :mod:`scaler.errors`: HTTP status -> ``SourceHTTPError`` (404:
no such Deployment; 403: RBAC missing), connection refused/reset ->
``SourceConnectionError``, timeout -> ``SourceTimeout``. The refresher logs and
counts them and decides without this enrichment.

The metadata override (``coldStart``) wins: then the pods are not listed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from scaler.coldstart import DEFAULT_LOOKBACK, DEFAULT_MAX_PODS, PodStart, summarize
from scaler.config import PolicyConfig
from scaler.errors import SourceConnectionError, SourceError, SourceHTTPError, SourceTimeout
from scaler.signals import ColdStart, Signals

SOURCE = "kubernetes"
_R = TypeVar("_R")


def label_selector(selector: Any) -> str:
    """A ``V1LabelSelector`` -> the ``labelSelector`` query string (matchLabels and matchExpressions)."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for e in selector.match_expressions or ():
        values = ",".join(sorted(e.values or ()))
        if e.operator == "In":
            parts.append(f"{e.key} in ({values})")
        elif e.operator == "NotIn":
            parts.append(f"{e.key} notin ({values})")
        elif e.operator == "Exists":
            parts.append(e.key)
        elif e.operator == "DoesNotExist":
            parts.append(f"!{e.key}")
        else:
            raise ValueError(f"unknown label selector operator {e.operator!r}")
    if not parts:
        raise ValueError("the Deployment's selector is empty (it would select every pod)")
    return ",".join(parts)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def pod_start(pod: Any) -> PodStart:
    """One ``V1Pod`` -> its created and Ready times and restart count."""
    ready = None
    for cond in (pod.status.conditions or ()) if pod.status else ():
        if cond.type == "Ready" and cond.status == "True":
            ready = _ts(cond.last_transition_time)
    restarts = sum(cs.restart_count or 0 for cs in (pod.status.container_statuses or ())) if pod.status else 0
    return PodStart(pod=pod.metadata.name, created=_ts(pod.metadata.creation_timestamp) or 0.0, ready=ready,
                    restarts=restarts)


@dataclass
class _Measured:
    at: float
    cold_start: ColdStart | None


class KubernetesColdStartReader:
    """Enricher: measured cold start and replica supply of the target Deployment (see the module docstring)."""

    name = "cold-start-kubernetes"

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 5.0, lookback: float = DEFAULT_LOOKBACK,
                 max_pods: int = DEFAULT_MAX_PODS, ttl: float = 300.0):
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)
        self.timeout, self.lookback, self.max_pods, self.ttl = timeout, lookback, max_pods, ttl
        self._measured: dict[tuple[str, str], _Measured] = {}
        self._lock = threading.Lock()

    def _call(self, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            raise SourceHTTPError(f"{exc.reason}: {(exc.body or '')[:300]}", status=exc.status or 0,
                                  source=SOURCE) from exc
        except urllib3.exceptions.NewConnectionError as exc:  # a ConnectTimeoutError subclass in urllib3
            raise SourceConnectionError(f"cannot reach the API server: {exc}", source=SOURCE) from exc
        except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
            raise SourceTimeout(f"no answer within {self.timeout:g} s: {exc}", source=SOURCE) from exc
        except urllib3.exceptions.MaxRetryError as exc:
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError) and not isinstance(
                    exc.reason, urllib3.exceptions.NewConnectionError):
                raise SourceTimeout(f"no answer within {self.timeout:g} s: {exc.reason}", source=SOURCE) from exc
            raise SourceConnectionError(f"cannot reach the API server: {exc.reason}", source=SOURCE) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SourceConnectionError(f"API server request failed: {exc}", source=SOURCE) from exc

    def deployment(self, namespace: str, name: str) -> Any:
        return self._call(self._apps.read_namespaced_deployment, name, namespace)

    def pod_starts(self, namespace: str, selector: str) -> list[PodStart]:
        pods = self._call(self._core.list_namespaced_pod, namespace, label_selector=selector)
        return [pod_start(p) for p in pods.items]

    def measure(self, config: PolicyConfig, now: float, deployment: Any | None = None) -> ColdStart | None:
        """The target's measured cold start (cached for ``ttl``); None when no pod is usable."""
        key = (config.namespace, config.deployment)
        with self._lock:
            hit = self._measured.get(key)
        if hit is not None and 0 <= now - hit.at < self.ttl:
            return hit.cold_start
        dep = deployment if deployment is not None else self.deployment(config.namespace, config.deployment)
        try:
            selector = label_selector(dep.spec.selector)
        except ValueError as exc:
            raise SourceError(f"deployment {config.namespace}/{config.deployment}: {exc}", source=SOURCE) from exc
        measured = summarize(self.pod_starts(config.namespace, selector), now=now, source=SOURCE,
                             lookback=self.lookback, max_pods=self.max_pods)
        if measured is None and hit is not None:
            measured = hit.cold_start  # pods gone (e.g. at zero): the last measurement still describes the image
        with self._lock:
            self._measured[key] = _Measured(now, measured)
        return measured

    def enrich(self, signals: Signals, config: PolicyConfig, now: float) -> Signals:
        dep = self.deployment(config.namespace, config.deployment)
        changes: dict[str, Any] = {}
        status, spec = dep.status, dep.spec
        ready = (status.ready_replicas or 0) if status is not None else 0
        if signals.ready_replicas is None:
            changes["ready_replicas"] = ready
        if signals.starting_replicas is None and spec is not None and spec.replicas is not None:
            changes["starting_replicas"] = max(0, spec.replicas - ready)
        if config.policy == "predictive" and config.cold_start is None:
            measured = self.measure(config, now, dep)
            if measured is not None:
                changes["cold_start"] = measured
        return replace(signals, **changes) if changes else signals
