"""One snapshot of what a target's vLLM fleet is doing, and the protocol sources implement.

A :class:`Signals` is what every source produces (Prometheus, a pod scrape, a
recording, the simulator) and what :func:`scaler.policy.decide` consumes. It
holds fleet-wide aggregates over the pods of one target. ``None`` always means
"not known", never zero:

* ``waiting`` / ``running`` are ``None`` only when no pod reports (e.g. the
  Deployment is at zero replicas, where vLLM exports nothing).
* ``ttft_p95`` / ``tpot_p95`` are ``None`` when the window held no requests
  (PromQL's ``histogram_quantile`` gives NaN there): "no traffic", not zero
  latency and not an error.

A source that cannot produce a snapshot raises a
:class:`~scaler.errors.SourceError` subclass instead (timeout, connection,
HTTP, no data), never a snapshot of zeros.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

from .config import PolicyConfig, TargetKey
from .errors import SourceError
from .frozen import fast_init


@fast_init
@dataclass(frozen=True)
class ColdStart:
    """Cold start of a new replica (pod created -> Ready), in seconds, and where it came from."""

    p50: float
    p90: float
    source: str  # "kubernetes", "kube-state-metrics", "metadata", "default", "simulation"
    samples: int = 0


_VLLM = "vllm_aggregate"


def _vllm() -> Any:
    """A field of :class:`Signals` aggregated from the pods' vLLM metrics: default ``None``, tagged so that
    :data:`VLLM_AGGREGATES` lists it."""
    return field(default=None, metadata={_VLLM: True})


@fast_init
@dataclass(frozen=True)
class Signals:
    """Fleet aggregates for one target at one instant (``observed_at``, unix seconds).

    Units: counts are requests (summed over pods), ``kv_cache_usage`` is the mean
    fraction 0..1 over reporting pods, latencies are seconds, rates are requests/s,
    token sizes are tokens per request. Every field annotated ``float | None`` is
    ``None`` (unknown) or a non-negative number (``inf`` allowed): the constructor
    raises ``ValueError`` naming the field otherwise (:data:`NON_NEGATIVE`).
    """

    observed_at: float
    pods_reporting: int
    # Aggregates of the pods' vLLM metrics (the fields a recording tick stores, see VLLM_AGGREGATES).
    waiting: float | None = _vllm()
    running: float | None = _vllm()
    kv_cache_usage: float | None = _vllm()
    ttft_p95: float | None = _vllm()
    tpot_p95: float | None = _vllm()
    completion_rate: float | None = _vllm()
    arrival_rate: float | None = _vllm()
    prompt_tokens_mean: float | None = _vllm()
    output_tokens_mean: float | None = _vllm()
    # Replicas of the Deployment (Kubernetes or kube-state-metrics); None when unknown.
    ready_replicas: int | None = None
    starting_replicas: int | None = None
    # Upstream demand from the activation query (router/gateway queue); None when not configured.
    upstream_demand: float | None = None
    cold_start: ColdStart | None = None
    # The idle clock read from the source's history, so every scaler replica (and a restarted one) agrees:
    # the last time (unix s) waiting + running was above activationThreshold within the last
    # scaleToZeroAfter, or, without any, the start of that history (no demand since); None when the source
    # has no history for the target (e.g. at zero replicas) or reads none (the policy's own clock then).
    last_demand_at: float | None = None
    # Recent demand history (t unix seconds, requests/s), oldest first, for warm-starting forecasts.
    demand_history: tuple[tuple[float, float], ...] = field(default=(), repr=False)
    # Which metric names were found (e.g. {"kv": "vllm:kv_cache_usage_perc"}), for logs.
    metric_names: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One C-level attribute fetch over NON_NEGATIVE (every source builds a Signals per target per refresh,
        # the simulator one per decision): ``not v >= 0`` is true exactly for NaN and negatives; the name is
        # looked up only to report.
        for v in _non_negative_values(self):
            if v is not None and not v >= 0:
                self._reject()
        if self.pods_reporting < 0:
            raise ValueError(f"Signals.pods_reporting must be >= 0, got {self.pods_reporting}")

    def _reject(self) -> None:
        for name in NON_NEGATIVE:
            v = getattr(self, name)
            if v is not None and (math.isnan(v) or v < 0):
                raise ValueError(f"Signals.{name} must be None (unknown) or a non-negative number, got {v!r}")

    @property
    def demand(self) -> float:
        """Requests in the fleet now (waiting + running); 0 only when pods report zero."""
        return (self.waiting or 0.0) + (self.running or 0.0)

    @property
    def load_rate(self) -> float | None:
        """Best current estimate of the arrival rate (req/s): arrivals if known, else completions."""
        return self.arrival_rate if self.arrival_rate is not None else self.completion_rate


#: Every field annotated ``float | None``, in field order: ``None`` (unknown) or a number >= 0, checked by
#: ``Signals.__post_init__``. (The module's annotations are strings, ``from __future__ import annotations``.)
NON_NEGATIVE: tuple[str, ...] = tuple(f.name for f in fields(Signals) if f.type == "float | None")
_NON_NEGATIVE = NON_NEGATIVE   # the name tests/unit/test_signals.py imports
_non_negative_values = operator.attrgetter(*NON_NEGATIVE)

#: The fleet aggregates of the pods' vLLM metrics (fields declared with ``_vllm()``), in field order: what a
#: recording tick stores of a ``Signals`` besides ``observed_at``, ``pods_reporting`` and the replica counts
#: (``simulations/recording/format.py``).
VLLM_AGGREGATES: tuple[str, ...] = tuple(f.name for f in fields(Signals) if f.metadata.get(_VLLM))


@runtime_checkable
class SignalSource(Protocol):
    """A plugin that turns configured targets into signals.

    ``fetch`` is given every target due for refresh so a source can share
    queries between them (one PromQL query for all targets of one Prometheus).
    It returns, per target (keyed by ``PolicyConfig.target_key``), either a
    :class:`Signals` or the :class:`~scaler.errors.SourceError` that prevented it.
    It may raise a ``SourceError`` for all of them at once. ``now`` is the
    evaluation time (unix seconds); sources never read the clock themselves.
    """

    name: str

    def fetch(self, targets: Sequence[PolicyConfig], now: float) -> Mapping[TargetKey, Signals | SourceError]:
        ...
