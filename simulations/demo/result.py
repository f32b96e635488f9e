"""What a run of the demo returns (:class:`DemoResult`, one :class:`DemoTick` per step) and what :func:`~.check.check`
makes of it (:class:`Check`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .story import Timing


@dataclass
class DemoTick:
    t: float                 # seconds from the start of traffic
    phase: str
    rate: float              # offered req/s
    replicas: int            # spec.replicas after KEDA/HPA
    ready: int
    waiting: int             # queued in the pods
    running: int
    router: int              # held at the router (no ready replica)
    desired: float | None    # last GetMetrics answer
    active: bool | None      # last IsActive answer
    outage: bool


@dataclass
class DemoResult:
    timing: Timing
    start: float                                  # unix time of t = 0
    ticks: list[DemoTick]
    events: list[tuple[float, str, int, int, str]]  # (t, source, from, to, reason), t from the start
    calls: list[tuple[float, str, Any]]             # (t, rpc, value or "error CODE")
    pushes: list[tuple[float, bool]]                # StreamIsActive messages (t, result)
    outage: tuple[float, float]
    first_arrival: float
    counterfactual_peak_waiting: int               # same arrivals, one fixed replica
    source_errors: float                           # vllm_scaler_source_errors_total at the end
    router_peak_after_zero: float | None           # what Prometheus saw of the router queue (trickle phase)
    scaler_exit: int | None
    requests: int
    ttft_ok: float                                  # fraction of requests with TTFT within the SLO
    slo_ttft: float
    gpu_seconds: float


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
