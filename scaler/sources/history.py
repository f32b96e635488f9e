"""History from Prometheus for the predictive policy: demand history (warm start) and cold start (kube-state-metrics).

Two :class:`~scaler.server.SignalEnricher`-shaped readers (``name`` and
``enrich(signals, config, now) -> Signals``), both built on prometheus-api-client
through :func:`scaler.sources.prometheus.query` (its timeouts and typed errors):

:class:`DemandHistoryReader` fills ``Signals.demand_history`` with the target's
request rate at 1-minute steps over the last day and two hours, one subquery::

    sum(rate(vllm:request_success_total{namespace="ns",pod=~"<the pods of dep>"}[1m]))[1560m:1m]

The query is evaluated at the start of the current minute (``floor(now / 60) *
60``), and subquery steps are aligned to absolute multiples of the step, so
every scaler replica asking within the same minute gets exactly the same
points, and the forecaster (:mod:`scaler.forecast`), a pure fold over minute
buckets, reaches the same state: a restarted scaler or a second replica makes
the same decision. Minutes without series (no pods, or no scrape) are gaps, not
zeros; the forecaster steps over them. The answer is cached per target until the
minute changes: one query per target per minute.

:class:`KubeStateColdStartReader` fills ``Signals.cold_start`` from
kube-state-metrics, for clusters where the scaler has no Kubernetes API access::

    max by (namespace, pod) (last_over_time(kube_pod_status_ready_time{sel}[7d]))
      - max by (namespace, pod) (last_over_time(kube_pod_created{sel}[7d]))
      unless on (namespace, pod)
        (max by (namespace, pod) (last_over_time(kube_pod_container_status_restarts_total{sel}[7d])) > 0)

with ``sel`` = ``namespace="ns",pod=~"<the pods of dep>"`` (:func:`~scaler.sources.promql.pod_pattern`): pods seen in
the lookback, restarted ones excluded (their Ready time is the restart's). A
second query reads ``kube_pod_created`` to keep the ``max_pods`` most recent.
Cached for ``ttl`` seconds (default 300). No pods: the signals are left
unchanged (the policy then reports the 180 s default).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from prometheus_api_client import PrometheusConnect

from scaler import vllm_metrics as vm
from scaler.coldstart import DEFAULT_LOOKBACK, DEFAULT_MAX_PODS, summarize_seconds
from scaler.config import PolicyConfig, TargetKey
from scaler.errors import SourceUnavailable
from scaler.forecast import RING, STEP
from scaler.signals import ColdStart, Signals
from scaler.sources.prometheus import prometheus_client_for, query
from scaler.sources.promql import TargetSelector, duration

ClientFactory = Callable[[str], PrometheusConnect]


def _selector(config: PolicyConfig, *, with_model: bool = True) -> str:
    return TargetSelector(config.namespace, config.deployment, config.model_name).selector(with_model=with_model)


def demand_history_query(config: PolicyConfig, *, lookback: float, step: float = STEP) -> str:
    """The subquery giving the target's completion rate (req/s) every ``step`` over ``lookback``."""
    name = vm.REQUEST_SUCCESS.names[0]
    return (f"sum(rate({name}{_selector(config)}[{duration(step)}]))"
            f"[{duration(lookback)}:{duration(step)}]")


def parse_matrix(rows: list[dict[str, Any]], *, source: str) -> tuple[tuple[float, float], ...]:
    """One series of ``[[t, "v"], ...]`` -> ``((t, v), ...)``; NaN/Inf/negative points are dropped (gaps)."""
    if not rows:
        return ()
    if len(rows) != 1 or "values" not in rows[0]:
        raise SourceUnavailable(f"expected one range series, got {len(rows)} result(s)", source=source)
    out = []
    for t, v in rows[0]["values"]:
        x = float(v)
        if math.isfinite(x) and x >= 0:
            out.append((float(t), x))
    return tuple(out)


V = TypeVar("V")


@dataclass
class _Cached(Generic[V]):
    at: float
    value: V


class DemandHistoryReader:
    """Enricher: ``Signals.demand_history`` from one Prometheus subquery per target per minute."""

    name = "demand-history"

    def __init__(self, client_factory: ClientFactory | None = None, *, timeout: float = 5.0,
                 lookback: float = RING * STEP, step: float = STEP):
        self._factory = client_factory or (lambda url: prometheus_client_for(url, timeout))
        self._clients: dict[str, PrometheusConnect] = {}
        self._cache: dict[TargetKey, _Cached[tuple[tuple[float, float], ...]]] = {}
        self._lock = threading.Lock()
        self.timeout, self.lookback, self.step = timeout, lookback, step

    def _client_for(self, url: str) -> PrometheusConnect:
        with self._lock:
            if url not in self._clients:
                self._clients[url] = self._factory(url)
            return self._clients[url]

    def history(self, config: PolicyConfig, now: float) -> tuple[tuple[float, float], ...]:
        """The points as of the start of ``now``'s minute (cached for that minute). Raises SourceError."""
        key = config.target_key
        at = math.floor(now / self.step) * self.step
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit.at == at:
            return hit.value
        rows = query(self._client_for(config.prometheus_address),
                     demand_history_query(config, lookback=self.lookback, step=self.step), at=at, timeout=self.timeout)
        points = parse_matrix(rows, source="prometheus")
        with self._lock:
            self._cache[key] = _Cached(at, points)
        return points

    def enrich(self, signals: Signals, config: PolicyConfig, now: float) -> Signals:
        if config.policy != "predictive" or config.forecast == "none":
            return signals
        return replace(signals, demand_history=self.history(config, now))


def kube_state_cold_start_query(config: PolicyConfig, *, lookback: float) -> str:
    sel = _selector(config, with_model=False)
    lb = duration(lookback)
    return (f"max by (namespace, pod) (last_over_time(kube_pod_status_ready_time{sel}[{lb}]))"
            f" - max by (namespace, pod) (last_over_time(kube_pod_created{sel}[{lb}]))"
            f" unless on (namespace, pod) (max by (namespace, pod) "
            f"(last_over_time(kube_pod_container_status_restarts_total{sel}[{lb}])) > 0)")


def kube_state_created_query(config: PolicyConfig, *, lookback: float) -> str:
    sel = _selector(config, with_model=False)
    return f"max by (namespace, pod) (last_over_time(kube_pod_created{sel}[{duration(lookback)}]))"


class KubeStateColdStartReader:
    """Enricher: ``Signals.cold_start`` from kube-state-metrics (source ``kube-state-metrics``)."""

    name = "cold-start-kube-state-metrics"

    def __init__(self, client_factory: ClientFactory | None = None, *, timeout: float = 5.0,
                 lookback: float = DEFAULT_LOOKBACK, max_pods: int = DEFAULT_MAX_PODS, ttl: float = 300.0):
        self._factory = client_factory or (lambda url: prometheus_client_for(url, timeout))
        self._clients: dict[str, PrometheusConnect] = {}
        self._cache: dict[tuple[str, str, str], _Cached[ColdStart | None]] = {}
        self._lock = threading.Lock()
        self.timeout, self.lookback, self.max_pods, self.ttl = timeout, lookback, max_pods, ttl

    def read(self, config: PolicyConfig, now: float) -> ColdStart | None:
        """The ColdStart of the target's recent pods, or None when kube-state-metrics has none."""
        key = (config.prometheus_address, config.namespace, config.deployment)
        with self._lock:
            hit = self._cache.get(key)
            client = self._clients.get(config.prometheus_address)
            if client is None:
                client = self._clients[config.prometheus_address] = self._factory(config.prometheus_address)
        if hit is not None and 0 <= now - hit.at < self.ttl:
            return hit.value
        durations = query(client, kube_state_cold_start_query(config, lookback=self.lookback), at=now,
                          timeout=self.timeout)
        created = query(client, kube_state_created_query(config, lookback=self.lookback), at=now, timeout=self.timeout)
        created_at = {r["metric"].get("pod"): float(r["value"][1]) for r in created}
        samples = []
        for r in durations:
            pod = r["metric"].get("pod")
            secs = float(r["value"][1])
            if math.isfinite(secs) and pod in created_at:
                samples.append((created_at[pod], secs))
        samples.sort(reverse=True)  # newest first
        value = summarize_seconds([s for _, s in samples], source="kube-state-metrics", max_samples=self.max_pods)
        with self._lock:
            self._cache[key] = _Cached(now, value)
        return value

    def enrich(self, signals: Signals, config: PolicyConfig, now: float) -> Signals:
        if config.policy != "predictive" or config.cold_start is not None:
            return signals  # the metadata override wins: no need to ask
        value = self.read(config, now)
        return signals if value is None else replace(signals, cold_start=value)
