"""The scaling policy: one pure function, :func:`decide`, used by the server, the replay and the simulator.

``decide(signals, state, config, now) -> Decision`` does no I/O, reads no clock
and logs nothing: ``now`` (unix seconds) is an argument, the previous
:class:`PolicyState` goes in and the next one comes out in the
:class:`Decision`. Callers record metrics and log ``Decision.reasons``.

Reactive formula (``policy: reactive``)
---------------------------------------
Symbols (all fleet-wide, from one :class:`~scaler.signals.Signals`):

==========  ===========================================================  =========
``N``       pods reporting vLLM metrics (current serving replicas)       replicas
``W``       waiting requests, sum over pods (``num_requests_waiting``)   requests
``R``       running requests, sum over pods (``num_requests_running``)   requests
``K``       mean KV-cache usage over pods                                0..1
``T1, T2``  observed P95 TTFT and P95 TPOT                               s
``q*``      ``queuePerReplica``; ``r*`` ``runningPerReplica``            requests
``k*``      ``kvCacheTarget``; ``T1*, T2*`` ``ttftP95``, ``tpotP95``     0..1, s
==========  ===========================================================  =========

Terms, each a replica count (a real number)::

    queue    = W / q*
    running  = R / r*
    kv       = N * K / k*
    latency  = N * max(T1 / T1*, T2 / T2*)   if that ratio > 1, else 0
               (a latency under the SLO never asks for fewer replicas;
                an unknown latency -- no traffic -- contributes 0)

    desired  = clamp(ceil(max(queue, running, kv, latency)), minReplicas, maxReplicas)

The dominant term is the one achieving the maximum (``min``/``max`` when a clamp
binds). Active (KEDA's ``IsActive``) while ``W + R`` or the upstream demand is
above ``activationThreshold``; inactive only after ``scaleToZeroAfter``
seconds without demand. A snapshot with no pods reporting and no upstream
signal at all is "at zero, no demand seen", not missing data: missing data is a
:class:`~scaler.errors.SourceError` raised by the source and never reaches here.

Worked example (pinned by ``tests/unit/test_policy.py::test_reactive_worked_example``):
``N = 3``, ``W = 12``, ``R = 40``, ``K = 0.9``, ``T1 = 3.1 s``, ``T2 = 0.05 s``
with defaults ``q* = 5``, ``r* = 32``, ``k* = 0.8``, ``T1* = 2.5 s``, ``T2* = 0.1 s``:
queue = 2.4, running = 1.25, kv = 3.375, latency = 3 * 1.24 = 3.72, so
desired = ceil(3.72) = 4, dominant ``latency``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .config import PolicyConfig
from .signals import Signals

# A tiny slack so that 2.0000000001 replicas (float noise) does not become 3.
_CEIL_EPS = 1e-9


def ceil_replicas(x: float) -> int:
    """ceil() that forgives float noise: ceil_replicas(2.0000000001) == 2."""
    return max(0, math.ceil(x - _CEIL_EPS))


@dataclass(frozen=True)
class PolicyState:
    """What ``decide`` carries from one call to the next for one target.

    ``last_demand_at``: the last ``now`` at which any demand signal was above
    the activation threshold (drives ``scaleToZeroAfter``).
    ``extra``: state owned by a policy variant (e.g. forecaster state),
    opaque to callers.
    """

    desired: int | None = None
    active: bool | None = None
    last_demand_at: float | None = None
    decided_at: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """The policy's answer and its explanation.

    ``terms``: each term's replica demand before rounding (see the module docstring).
    ``dominant``: the term that set ``desired`` (or ``min``/``max`` when clamped).
    ``inputs``: named numbers worth reporting (forecast, horizon, cold start, ...).
    ``reasons``: human-readable lines, the first one says what drove the decision.
    """

    desired: int
    active: bool
    dominant: str
    terms: Mapping[str, float]
    reasons: tuple[str, ...]
    next_state: PolicyState
    inputs: Mapping[str, float] = field(default_factory=dict)


def decide(signals: Signals, state: PolicyState | None, config: PolicyConfig, now: float) -> Decision:
    """The one scaling decision. Pure: same arguments, same Decision."""
    state = state or PolicyState()
    if config.policy == "reactive":
        return _reactive(signals, state, config, now)
    raise ValueError(f"policy {config.policy!r} is not implemented")


def reactive_terms(signals: Signals, config: PolicyConfig) -> dict[str, float]:
    """The four reactive terms (replicas, unrounded). See the module docstring for the formula."""
    n = signals.pods_reporting
    terms = {
        "queue": (signals.waiting or 0.0) / config.queue_per_replica,
        "running": (signals.running or 0.0) / config.running_per_replica,
        "kv": n * (signals.kv_cache_usage or 0.0) / config.kv_cache_target,
        "latency": 0.0,
    }
    ratio = latency_ratio(signals, config)
    if ratio is not None and ratio > 1.0:
        terms["latency"] = n * ratio
    return terms


def latency_ratio(signals: Signals, config: PolicyConfig) -> float | None:
    """max(T1/T1*, T2/T2*) over the latencies known; None when neither is (no traffic)."""
    ratios = []
    if signals.ttft_p95 is not None:
        ratios.append(signals.ttft_p95 / config.ttft_p95)
    if signals.tpot_p95 is not None:
        ratios.append(signals.tpot_p95 / config.tpot_p95)
    return max(ratios) if ratios else None


def clamp_to_bounds(raw: float, terms: Mapping[str, float], config: PolicyConfig) -> tuple[int, str]:
    """desired = clamp(ceil(raw)) and the name of what set it (largest term, or min/max)."""
    dominant = max(terms, key=lambda k: terms[k]) if terms else "none"
    desired = ceil_replicas(raw)
    if desired < config.min_replicas or raw <= 0:
        return config.min_replicas, "min"
    if desired > config.max_replicas:
        return config.max_replicas, "max"
    return desired, dominant


def activity(signals: Signals, state: PolicyState, config: PolicyConfig, now: float,
             forecast_demand: float | None = None) -> tuple[bool, float | None, str]:
    """Whether the target is active, the updated ``last_demand_at``, and why.

    Demand is seen when W + R, the upstream demand, or a forecast demand (req/s,
    predictive) is above ``activationThreshold``. Inactive only after
    ``scaleToZeroAfter`` seconds without any.
    """
    thr = config.activation_threshold
    seen = []
    if signals.pods_reporting > 0 and signals.demand > thr:
        seen.append(f"vLLM waiting+running {signals.demand:g} > {thr:g}")
    if signals.upstream_demand is not None and signals.upstream_demand > thr:
        seen.append(f"upstream demand {signals.upstream_demand:g} > {thr:g}")
    if forecast_demand is not None and forecast_demand > thr:
        seen.append(f"forecast demand {forecast_demand:.3g} req/s > {thr:g}")
    if seen:
        return True, now, "active: " + "; ".join(seen)
    last = state.last_demand_at
    if last is not None and now - last < config.scale_to_zero_after:
        return True, last, (f"active: idle for {now - last:.0f}s < scaleToZeroAfter "
                            f"{config.scale_to_zero_after:g}s")
    if last is None and state.active:
        # First idle observation after a (re)start while active: start the idle clock now.
        return True, now, "active: idle clock started"
    return False, last, f"inactive: no demand above {thr:g} for {config.scale_to_zero_after:g}s"


def _reactive(signals: Signals, state: PolicyState, config: PolicyConfig, now: float) -> Decision:
    terms = reactive_terms(signals, config)
    raw = max(terms.values())
    desired, dominant = clamp_to_bounds(raw, terms, config)
    active, last_demand_at, why_active = activity(signals, state, config, now)
    reasons = (
        f"desired={desired} driven by {dominant}: "
        + ", ".join(f"{k}={v:.3g}" for k, v in terms.items()),
        why_active,
    )
    next_state = replace(state, desired=desired, active=active, last_demand_at=last_demand_at, decided_at=now)
    return Decision(desired=desired, active=active, dominant=dominant, terms=terms, reasons=reasons,
                    next_state=next_state, inputs={"pods_reporting": float(signals.pods_reporting)})
