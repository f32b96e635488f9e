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

Further symbols: ``Nr, Ns`` replicas Ready, and requested but not Ready ("on the way": see
the predictive symbols below for how they are read), ``D`` the previous desired count.

Terms, each a replica count (a real number)::

    queue    = W / q*
    running  = R / r*
    kv       = N * K / k*
    latency  = N * min(2, max(T1 / T1*, T2 / T2*))   if that ratio > 1, else 0
               (a latency under the SLO never asks for fewer replicas;
                an unknown latency -- no traffic -- contributes 0)

    while Ns > 0: queue, latency, kv are each capped at max(Nr + Ns, D)

    desired  = clamp(ceil(max(queue, running, kv, latency)), minReplicas, maxReplicas)

Why the caps (in closed loop, from one replica under a 180 s cold start, the
uncapped formula ran to maxReplicas for a load that needed a few: measured
in docs/predictive.md). A queue, a P95 TTFT window and a full KV
cache are *symptoms* of a shortage: they persist, and grow, until the replicas
already asked for are Ready, so counting them again at every KEDA poll of a cold
start asks for more each time (a cascade). While replicas are on the way they
ask for at most the supply already coming (:func:`cap_symptoms`, shared with the
predictive policy). The 60 s P95 TTFT window also still holds the backlog's slow
requests after the new replicas arrive, and TTFT under overload is queueing
dominated (20x the SLO means "short", not "short by 20x"): the latency
correction at most doubles the serving replicas per cold start
(:func:`latency_correction`, :data:`MAX_LATENCY_CORRECTION`, the same function
the predictive policy uses). The running term is not capped: ``R`` is load being
served, bounded by the Ready replicas' ``max_num_seqs``, so it cannot cascade.

``r*`` and ``q*`` follow the replica's capacity unless the metadata sets them
(:func:`planning_targets`; formulas, units and a worked example in
:mod:`scaler.capacity`, "Planning targets"): with ``fleetModel``, ``r*`` is the
running count of a replica serving ``targetUtilization`` of its capacity at the
SLO and ``q*`` the queue its spare capacity drains within ``T1*``, at the
observed mean token sizes (the model's last targets while no request finished in
the window); without, the same derivation on the default profile, Llama-3.1-8B
on one H100 with ShareGPT-sized requests: ``r* = 350``, ``q* = 6.7``
(:data:`~scaler.capacity.DEFAULT_RUNNING_PER_REPLICA`,
:data:`~scaler.capacity.DEFAULT_QUEUE_PER_REPLICA`). A decision reports both
(``inputs``, and a ``targets`` reason).

The dominant term is the one achieving the maximum (``min``/``max`` when a clamp
binds). While no pod reports but pods are starting (``Signals.starting_replicas``
> 0: the fleet is waking, vLLM exports nothing yet) demand is unknown, not
zero: a ``hold`` term keeps the previous desired count and the target stays
active (both policies). Active (KEDA's ``IsActive``) while ``W + R`` or the upstream demand is
above ``activationThreshold``; inactive only after ``scaleToZeroAfter``
seconds without demand. A snapshot with no pods reporting and no upstream
signal at all is "at zero, no demand seen", not missing data: missing data is a
:class:`~scaler.errors.SourceError` raised by the source and never reaches here.

Worked example (pinned by ``tests/unit/test_policy.py::test_reactive_worked_example``):
``N = 3``, ``W = 12``, ``R = 40``, ``K = 0.9``, ``T1 = 3.1 s``, ``T2 = 0.05 s``
with the defaults (no ``fleetModel``) ``q* = 6.7``, ``r* = 350``, ``k* = 0.8``,
``T1* = 2.5 s``, ``T2* = 0.1 s``, nothing on the way: queue = 1.791, running =
0.114, kv = 3.375, latency = 3 * min(2, 1.24) = 3.72, so desired = ceil(3.72) =
4, dominant ``latency``. With ``T1 = 10 s`` the latency term is 3 * 2 = 6, not
12. The table tests in that file set ``q* = 5``, ``r* = 48`` (round numbers, not
a GPU). Supply on the way, pinned by
``tests/unit/test_policy.py::test_reactive_supply_on_the_way`` (case
``no-cascade-while-replicas-load``, ``q* = 5``, ``r* = 48``): ``Nr = 1``, ``Ns = 2``,
``D = 3``, ``W = 140``, ``R = 40``, ``T1 = 22.8 s``: queue = 28 capped at
max(1 + 2, 3) = 3, latency = 2, running = 0.83: desired = 3, not 10
(``maxReplicas``); and
``test_reactive_no_cascade_over_a_cold_start`` keeps asking for 2 over eleven polls
of a cold start while the queue grows from 30 to 230.

Predictive formula (``policy: predictive``)
-------------------------------------------
Ask for capacity one cold start ahead of demand, and give it back only when the
forecast says it will not be needed again within the horizon. Additional
symbols:

==========  ==================================================================  ==========
``C50,C90`` cold start (pod created -> Ready), P50 and P90, and its source       s
            (:func:`scaler.coldstart.resolve_cold_start`: metadata > measured
            > 180 s default)
``L``       ``reactionLag``: KEDA poll + HPA sync                                s
``H``       forecast horizon ``C90 + L`` (at most one day: :func:`horizon`)      s
``Tbe``     break-even time ``C90``: a replica released now and requested      s
            again later pays ``C90`` GPU-seconds of loading for no service;
            keeping it idle is cheaper for any gap shorter than that
``V``       look-ahead window ``max(H, Tbe)``                                    s
``λ``       observed arrival rate (``Signals.load_rate``)                        requests/s
``U(τ)``    upper forecast bound at ``now + τ`` (:mod:`scaler.forecast`)        requests/s
``F(τ)``    point forecast at ``now + τ``                                        requests/s
``c``       capacity per replica at the SLO and its source                      requests/s
            (:func:`scaler.capacity.resolve_capacity`)
``u``       ``targetUtilization``                                                0..1
``Nr, Ns``  replicas Ready, and requested but not Ready ("on the way")          replicas
==========  ==================================================================  ==========

Terms, each a replica count (a real number)::

    forecast = max(λ, max over τ in {0, Δ, 2Δ, ..., V} of U(τ)) / (c u)
    backlog  = (λ + W / (T1* + C50)) / c    arrivals plus the queue drained within the
                                            TTFT budget counted from when a replica
                                            requested now can serve (W / q* when c is
                                            unknown)
    latency  = N min(2, max(T1/T1*, T2/T2*))  if that ratio > 1 and the fleet is loaded
                                            (W >= N, or λ >= 0.5 N c), continuously for
                                            at least 30 s (LATENCY_PERSISTENCE), else 0
    kv       = N K / k*                     (as reactive)
    hold     = previous desired             only while pods report but the rate is
                                            unknown, or pods load and none reports:
                                            missing data never scales down
    wake     = Y / (c u)                    only while nothing flows now (λ and W + R at 0)
                                            and Y, yesterday's peak rate around this hour
                                            (see Activity), is above forecastActivationRate:
                                            a Deployment woken from zero comes back with the
                                            capacity yesterday's return needed, not one replica

    backlog, latency, kv are symptoms of a shortage that replicas on the way will
    cure: while Ns > 0 each is capped at max(Nr + Ns, previous desired), so
    they cannot cascade scale-ups during a cold start. The forecast term is not
    capped: it follows measured demand, not its symptoms.

    desired  = clamp(ceil(max(terms)), minReplicas, maxReplicas)

Why the backlog and latency terms differ from the reactive ones: a replica
requested now serves only after a cold start, so a queue drained "within T1*"
by replicas that arrive C50 later would buy capacity for a queue that is gone by
then; with the HPA returning one pod per 120 s, that overshoot costs GPU-hours
for most of an hour (a burst of a few hundred requests once asked for
tens of replicas). Likewise TTFT under overload is queueing-dominated and
convex in load: a P95 TTFT 20x the SLO means "short", not "short by 20x", so
the correction at most doubles the serving replicas per cold start
(:data:`MAX_LATENCY_CORRECTION`); the forecast and backlog terms size the rest.
And a latency over the SLO at light load is not a shortage: one long prompt's
prefill stalls the decode steps of its batch (a P95 TPOT over the SLO with two
requests running); more replicas would not change it, so the
correction applies only when a queue forms (``W >= N``) or the arrivals reach
half the capacity (:data:`LOADED_FRACTION`). Finally it applies only to a shortage
that lasts (:data:`LATENCY_PERSISTENCE`, 30 s, timed by ``"shortage_since"`` in
the state): replicas requested now serve after a cold start, so a burst that is
over by the next poll gains nothing from them: one 15 s snapshot of a burst
would double the fleet, and the HPA takes tens of minutes to hand the replicas
back (``tests/unit/test_policy_predictive.py::
test_latency_correction_waits_for_a_lasting_shortage``). A real shortfall (a
capacity figure too high) still gets its correction 30 s later, a small delay
next to a cold start of minutes.

Why ``u`` defaults to 0.9: ``c`` is already the rate at the SLO and ``U`` already
carries the forecast's P90 error, so ``u`` only has to absorb the bursts inside a
minute that a minute-bucket forecast cannot see (the busiest 10 s of a minute
carries 1.2x its mean on the bundled week and conversation traces). The
simulator's measurements of 0.8 / 0.9 / 1.0 are in docs/predictive.md ("Tuning
targetUtilization"), with the fleet model they were measured on.

With ``forecast: none`` the forecast term is ``λ / (c u)``. When ``c`` is unknown
the forecast term is the running term ``R / r*`` (reported as capacity
"unknown"). Because ``U`` is maximised over the whole window ``V``, the desired
count drops to ``N - 1`` only when ``N - 1`` replicas at utilisation ``u`` cover
the upper forecast bound over the horizon and the break-even time.

Activity: as reactive, plus "forecast demand": active while the largest point
forecast ``F(τ)`` over ``[now, now + H]``, or yesterday's peak rate over
``[now - 30 min, now + H + 30 min]`` (:meth:`~scaler.forecast.DemandForecaster.yesterday_peak`),
exceeds ``forecastActivationRate`` (requests/s), so a Deployment at zero wakes
one horizon ahead of traffic the daily season predicts; plus observed arrivals
(a gateway's rate while at zero) above the same rate; inactive only after
``scaleToZeroAfter`` with no demand signal and no forecast demand (what it
buys the first requests after an idle stretch: docs/predictive.md). ``Ns`` is ``Signals.starting_replicas`` when the
source knows it, else the previous desired count minus ``Nr`` for one horizon
after it was raised.

Forecaster and capacity learner state live in ``PolicyState.extra`` (immutable
values, copied): ``"forecast"`` (:class:`~scaler.forecast.DemandForecaster`),
``"capacity"`` (:class:`~scaler.capacity.CapacityLearner`), ``"raised_at"``, ``"shortage_since"`` (when the latency shortage began).
When ``Signals.demand_history`` is given (range queries from Prometheus, the same
for every scaler replica) the forecaster folds it instead of its own
observations, and is rebuilt from it when its state is older than the
history's start: a restarted scaler reaches the same decision.

Worked example (pinned by
``tests/unit/test_policy_predictive.py::test_predictive_worked_example``):
``coldStart = 180 s``, ``reactionLag = 45 s`` so ``H = V = 225 s``;
``capacityPerReplica = 4``, ``u = 0.8``; a forecaster whose path peaks at
``U = 13.6 req/s``; observed ``λ = 10``, ``N = Nr = 3``, ``W = 5``, ``R = 40``,
``K = 0.5``, ``T1 = 1 s``, ``T2 = 0.05 s``:
forecast = 13.6 / 3.2 = 4.25; backlog = (10 + 5 / (2.5 + 180)) / 4 = 2.507;
latency = 0; kv = 3 * 0.5 / 0.8 = 1.875. desired = ceil(4.25) = 5, dominant
``forecast``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .capacity import (
    DEFAULT_QUEUE_PER_REPLICA,
    DEFAULT_RUNNING_PER_REPLICA,
    Capacity,
    CapacityLearner,
    model_targets,
    resolve_capacity,
)
from .coldstart import resolve_cold_start
from .config import PolicyConfig
from .forecast import MAX_LOOKAHEAD, DemandForecaster, bucket_of
from .frozen import fast_init
from .signals import ColdStart, Signals

# A tiny slack so that 2.0000000001 replicas (float noise) does not become 3.
_CEIL_EPS = 1e-9


def ceil_replicas(x: float) -> int:
    """ceil() that forgives float noise: ceil_replicas(2.0000000001) == 2."""
    return max(0, math.ceil(x - _CEIL_EPS))


@fast_init
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


class Reasons(Sequence[str]):
    """A decision's reason lines, formatted on first read.

    Each line is a ``str.format`` template and its values, captured when the line is added, so the text
    read later is that decision's. Why lazy: the server decides for every target at every refresh but writes
    the reasons only when a decision changes (its log line); the simulator decides 40,000 times over the
    bundled week and reads none. Formatting every line of every decision was about a third of
    ``_predictive``'s time. Reads as a tuple of strings (index, iterate, ``len``, ``==`` with a tuple or
    list) (``tests/unit/test_policy.py::test_reasons_read_as_the_strings_of_their_decision``).
    """

    __slots__ = ("_lines", "_text")

    def __init__(self, lines: Iterable[str] = ()) -> None:
        self._lines: list[tuple[str, tuple[Any, ...]]] = [(line, ()) for line in lines] if lines else []
        self._text: tuple[str, ...] | None = None

    def add(self, template: str, *values: Any) -> None:
        self._lines.append((template, values))
        self._text = None

    def insert(self, index: int, template: str, *values: Any) -> None:
        self._lines.insert(index, (template, values))
        self._text = None

    def _strings(self) -> tuple[str, ...]:
        if self._text is None:
            self._text = tuple(t.format(*v) if v else t for t, v in self._lines)
        return self._text

    def __getitem__(self, index: int) -> str:  # type: ignore[override]  # no slices: a Reasons is read by line
        return self._strings()[index]

    def __len__(self) -> int:
        return len(self._lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self._strings())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Reasons, tuple, list)):
            return self._strings() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._strings())

    def __repr__(self) -> str:
        return repr(self._strings())


class TermsText:
    """``k=v, ...`` of a decision's terms (3 significant digits), formatted when its reason line is read."""

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[str, float]) -> None:
        self.terms = dict(terms)

    def __format__(self, spec: str) -> str:
        return ", ".join(f"{k}={v:.3g}" for k, v in self.terms.items())


class _Seen:
    """The demand signals an activity check saw, ``; ``-joined when its reason line is read."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[tuple[Any, ...]]) -> None:
        self.lines = lines

    def __format__(self, spec: str) -> str:
        return "; ".join(t.format(*v) for t, *v in self.lines)


def _on_the_way(starting: int, capped: Sequence[str], cap_to: float) -> tuple[Any, ...]:
    return ("{} replica(s) on the way: {} capped at {:g} (no cascading scale-up during a cold start)", starting,
            ", ".join(capped), cap_to)


@fast_init
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
    reasons: Sequence[str]
    next_state: PolicyState
    inputs: Mapping[str, float] = field(default_factory=dict)


def decide(signals: Signals, state: PolicyState | None, config: PolicyConfig, now: float) -> Decision:
    """The one scaling decision. Pure: same arguments, same Decision."""
    state = state or PolicyState()
    if config.policy == "reactive":
        return _reactive(signals, state, config, now)
    if config.policy == "predictive":
        return _predictive(signals, state, config, now)
    raise ValueError(f"policy {config.policy!r} is not implemented")


def planning_targets(config: PolicyConfig, prompt_tokens: float | None, output_tokens: float | None,
                     previous: tuple[float, float] | None = None) -> tuple[float, float, str]:
    """(r*, q*, source): ``runningPerReplica`` and ``queuePerReplica`` in force.

    A key set in the metadata is used as given. Otherwise, with ``fleetModel`` and the mean token sizes,
    :func:`scaler.capacity.model_targets` at the SLO and ``targetUtilization`` (source ``model``); with the
    model but no sizes (no request finished in the window), ``previous``, the model's last targets (source
    ``model, last sizes``: unknown sizes never change them, so never scale down); else the defaults derived
    on the default profile (source ``default``). Pinned by
    ``tests/unit/test_policy.py::test_planning_targets_table``."""
    r, q = config.running_per_replica, config.queue_per_replica
    if r is not None and q is not None:
        return r, q, "metadata"
    model = config.fleet_model
    if model is not None and prompt_tokens is not None and output_tokens is not None:
        mr, mq = model_targets(model, ttft_slo=config.ttft_p95, tpot_slo=config.tpot_p95,
                               prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                               utilization=config.target_utilization)
        source = "model"
    elif model is not None and previous is not None:
        (mr, mq), source = previous, "model, last sizes"
    else:
        mr, mq, source = DEFAULT_RUNNING_PER_REPLICA, DEFAULT_QUEUE_PER_REPLICA, "default"
    if r is not None or q is not None:
        source = "metadata and " + source
    return (mr if r is None else r), (mq if q is None else q), source


def _targets_state(extra: Mapping[str, Any], config: PolicyConfig, prompt_tokens: float | None,
                   output_tokens: float | None) -> tuple[float, float, str, tuple[float, float] | None]:
    """:func:`planning_targets` with the model's last targets read from ``extra["targets"]``; the last item
    is what ``extra["targets"]`` holds next."""
    previous = extra.get("targets")
    r, q, source = planning_targets(config, prompt_tokens, output_tokens, previous)
    return r, q, source, ((r, q) if source.endswith("model") else previous)


def reactive_terms(signals: Signals, config: PolicyConfig, running_target: float,
                   queue_target: float) -> dict[str, float]:
    """The four reactive terms (replicas, unrounded), before the supply cap. See the module docstring."""
    n = signals.pods_reporting
    return {
        "queue": (signals.waiting or 0.0) / queue_target,
        "running": (signals.running or 0.0) / running_target,
        "kv": n * (signals.kv_cache_usage or 0.0) / config.kv_cache_target,
        "latency": latency_correction(n, latency_ratio(signals, config)),
    }


def latency_correction(n: int, ratio: float | None) -> float:
    """``N min(ratio, MAX_LATENCY_CORRECTION)`` when the latency ratio is over 1, else 0 (both policies).

    TTFT under overload is queueing-dominated and convex in load: a P95 20x the SLO means "short", not
    "short by 20x"; a replica requested now serves after a cold start, so the correction at most doubles
    the serving replicas per cold start and the next decisions correct again once those arrive.
    """
    if ratio is None or ratio <= 1.0:
        return 0.0
    return n * min(ratio, MAX_LATENCY_CORRECTION)


def cap_symptoms(terms: dict[str, float], symptoms: tuple[str, ...], ready: int, starting: int,
                 previous: int | None) -> tuple[list[str], float]:
    """While replicas are on the way (``starting > 0``), cap the symptom terms at the supply
    ``max(Nr + Ns, previous desired)``, in place; returns the terms capped and the cap.

    Symptoms of a shortage (a queue, a slow P95 window, a full KV cache) persist until the replicas
    already requested are Ready; counting them again at every poll of a cold start would cascade.
    """
    if starting <= 0:
        return [], math.inf
    cap_to = float(max(ready + starting, previous or 0))
    capped = [k for k in symptoms if terms[k] > cap_to]
    for k in capped:
        terms[k] = cap_to
    return capped, cap_to


def latency_ratio(signals: Signals, config: PolicyConfig) -> float | None:
    """max(T1/T1*, T2/T2*) over the latencies known; None when neither is (no traffic)."""
    t1, t2 = signals.ttft_p95, signals.tpot_p95
    if t1 is None:
        return None if t2 is None else t2 / config.tpot_p95
    r1 = t1 / config.ttft_p95
    if t2 is None:
        return r1
    r2 = t2 / config.tpot_p95
    return r2 if r2 > r1 else r1     # max(r1, r2): the first of equals


def clamp_to_bounds(raw: float, terms: Mapping[str, float], config: PolicyConfig) -> tuple[int, str]:
    """desired = clamp(ceil(raw)) and the name of what set it (largest term, or min/max).

    Total: a NaN ``raw`` is the largest non-NaN term, a ``raw`` beyond ``maxReplicas`` (+inf included) is
    ``maxReplicas`` (``tests/unit/test_policy_property.py``)."""
    dominant = max(terms, key=terms.__getitem__) if terms else "none"
    if raw != raw:
        # NaN (a term from an unknown product such as 0 x inf): max() returns NaN only when the first term is
        # NaN; the answer is the largest of the others
        known = {k: v for k, v in terms.items() if v == v}
        raw = max(known.values()) if known else 0.0
        dominant = max(known, key=known.__getitem__) if known else "none"
    if raw > config.max_replicas + 1:
        return config.max_replicas, "max"     # also +inf and huge values that ceil() cannot take
    desired = ceil_replicas(raw)
    if desired < config.min_replicas or raw <= 0:
        return config.min_replicas, "min"
    if desired > config.max_replicas:
        return config.max_replicas, "max"
    return desired, dominant


def activity(signals: Signals, state: PolicyState, config: PolicyConfig, now: float,
             forecast_demand: float | None = None,
             observed_rate: float | None = None) -> tuple[bool, float | None, tuple[Any, ...]]:
    """Whether the target is active, the updated ``last_demand_at``, and why (a :class:`Reasons` line:
    template, values).

    Demand is seen when W + R or the upstream demand is above
    ``activationThreshold``, or (predictive) a forecast arrival rate or an
    observed arrival rate (req/s, e.g. from a gateway while at zero) is above
    ``forecastActivationRate``. Inactive only after ``scaleToZeroAfter``
    seconds without any. The idle clock is the later of ``state.last_demand_at`` and
    ``signals.last_demand_at`` (the source's history, so a restarted or second scaler replica agrees).
    Without either, the first decision for a target whose pods report
    (no state: a restarted scaler) starts the idle clock instead of declaring
    it idle: how long it has been idle is unknown.
    """
    thr = config.activation_threshold
    seen = []
    if signals.pods_reporting > 0 and signals.demand > thr:
        seen.append(("vLLM waiting+running {:g} > {:g}", signals.demand, thr))
    if signals.upstream_demand is not None and signals.upstream_demand > thr:
        seen.append(("upstream demand {:g} > {:g}", signals.upstream_demand, thr))
    if forecast_demand is not None and forecast_demand > config.forecast_activation_rate:
        seen.append(("forecast demand {:.3g} req/s > {:g}", forecast_demand, config.forecast_activation_rate))
    if observed_rate is not None and observed_rate > config.forecast_activation_rate:
        seen.append(("arrivals {:.3g} req/s > {:g}", observed_rate, config.forecast_activation_rate))
    if seen:
        return True, now, ("active: {}", _Seen(seen))
    if loading(signals) and state.active is not False:
        # No pod reports because they are still loading: demand is unknown, not absent.
        return True, now, ("active: {} pod(s) loading, none reporting yet (held)", signals.starting_replicas)
    last = state.last_demand_at
    if signals.last_demand_at is not None and (last is None or signals.last_demand_at > last):
        last = signals.last_demand_at   # the idle clock read from history: every replica, restarted or not, agrees
    if last is not None and now - last < config.scale_to_zero_after:
        return True, last, ("active: idle for {:.0f}s < scaleToZeroAfter {:g}s", now - last,
                            config.scale_to_zero_after)
    if last is None and (state.active or (state.active is None and signals.pods_reporting > 0)):
        # First idle observation after a (re)start while active (or serving): start the idle clock now.
        return True, now, ("active: idle clock started",)
    return False, last, ("inactive: no demand above {:g} for {:g}s", thr, config.scale_to_zero_after)


def loading(signals: Signals) -> bool:
    """No pod reports vLLM metrics, but pods are starting: the fleet is waking, its demand unknown."""
    return signals.pods_reporting == 0 and (signals.starting_replicas or 0) > 0


def _reactive(signals: Signals, state: PolicyState, config: PolicyConfig, now: float) -> Decision:
    r_target, q_target, targets_from, targets = _targets_state(state.extra, config, signals.prompt_tokens_mean,
                                                               signals.output_tokens_mean)
    extra = state.extra if targets == state.extra.get("targets") else {**state.extra, "targets": targets}
    terms = reactive_terms(signals, config, r_target, q_target)
    cold = resolve_cold_start(config.cold_start, signals.cold_start)
    ready, starting = _supply(signals, state, cold, config, now)
    capped, cap_to = cap_symptoms(terms, REACTIVE_SYMPTOMS, ready, starting, state.desired)
    if loading(signals) and state.desired:
        terms["hold"] = float(state.desired)  # pods still loading: demand unknown, never a scale-down
    raw = max(terms.values())
    desired, dominant = clamp_to_bounds(raw, terms, config)
    active, last_demand_at, why_active = activity(signals, state, config, now)
    reasons = Reasons()
    reasons.add("desired={} driven by {}: {}", desired, dominant, TermsText(terms))
    reasons.add(*why_active)
    reasons.add(_TARGETS, r_target, q_target, targets_from)
    if capped:
        reasons.add(*_on_the_way(starting, capped, cap_to))
    next_state = replace(state, desired=desired, active=active, last_demand_at=last_demand_at, decided_at=now,
                         extra=_raised(extra, state.desired, desired, now))
    inputs = {"pods_reporting": float(signals.pods_reporting), "ready_replicas": float(ready),
              "starting_replicas": float(starting), "cold_start_p90_s": cold.p90,
              "running_per_replica": r_target, "queue_per_replica": q_target}
    return Decision(desired=desired, active=active, dominant=dominant, terms=terms, reasons=reasons,
                    next_state=next_state, inputs=inputs)


_TARGETS = "targets: {:.3g} running, {:.3g} waiting per replica from {}"


def _raised(extra: Mapping[str, Any], previous: int | None, desired: int, now: float) -> Mapping[str, Any]:
    """``extra`` with ``raised_at`` (when the desired count last went up: supply on the way)."""
    if desired > (previous or 0):
        extra = dict(extra)
        extra["raised_at"] = now
        return extra
    return extra


# ---- predictive ------------------------------------------------------------------------------------------

# The latency correction at most doubles the serving replicas, and applies only to a loaded fleet
# (see the module docstring).
MAX_LATENCY_CORRECTION = 2.0
LOADED_FRACTION = 0.5
# Seconds a loaded fleet must stay over the latency SLO before the predictive latency correction applies
# (see the module docstring).
LATENCY_PERSISTENCE = 30.0
# Terms that measure a shortage's symptoms, capped at the supply on the way while replicas load.
REACTIVE_SYMPTOMS = ("queue", "latency", "kv")
PREDICTIVE_SYMPTOMS = ("backlog", "latency", "kv")

def horizon(cold: ColdStart, config: PolicyConfig) -> float:
    """H = min(C90 + reactionLag, MAX_LOOKAHEAD) (seconds).

    The metadata bounds keep ``coldStart + reactionLag`` within 5 h; a measured cold start is not bounded
    by them, so the sum is capped at :data:`~scaler.forecast.MAX_LOOKAHEAD` (one day: further out the
    forecast repeats the daily season), which bounds a decision's forecast work."""
    h = cold.p90 + config.reaction_lag
    return h if h <= MAX_LOOKAHEAD else MAX_LOOKAHEAD      # NaN too


def update_forecaster(fc: DemandForecaster, signals: Signals, now: float) -> DemandForecaster:
    """Fold this snapshot into the forecaster (pure): the shared history when given, else the live rate.

    At zero replicas with no rate known, the live observation is 0 req/s served (demand waiting upstream
    wakes the target through ``upstream_demand``); with pods reporting but no rate, nothing is folded.
    """
    fc = fc.observe_tokens(signals.prompt_tokens_mean, signals.output_tokens_mean)
    history = signals.demand_history
    if history:
        if fc.last_bucket is not None and bucket_of(history[-1][0]) <= fc.last_bucket:
            return fc   # every point already folded (every decision but one per minute)
        first = bucket_of(history[0][0])
        if fc.last_bucket is None or fc.last_bucket < first - 1:
            fc = DemandForecaster(params=fc.params, prompt_tokens=fc.prompt_tokens,
                                  output_tokens=fc.output_tokens).extend(history)
        else:
            fc = fc.extend(history)
        return fc
    rate = signals.load_rate
    if rate is None and signals.pods_reporting == 0:
        rate = 0.0
    if rate is None or rate == math.inf:
        return fc      # unknown, or +inf (no rate a forecast can fold): nothing folded
    return fc.observe(now, rate)


def _supply(signals: Signals, state: PolicyState, cold: ColdStart, config: PolicyConfig,
            now: float) -> tuple[int, int]:
    """(Nr, Ns): replicas Ready and replicas requested but not Ready."""
    ready = signals.ready_replicas if signals.ready_replicas is not None else signals.pods_reporting
    if signals.starting_replicas is not None:
        return ready, signals.starting_replicas
    raised_at = state.extra.get("raised_at")
    if state.desired is not None and raised_at is not None and now - raised_at < horizon(cold, config):
        return ready, max(0, state.desired - ready)
    return ready, 0


def _predictive(signals: Signals, state: PolicyState, config: PolicyConfig, now: float) -> Decision:
    # The simulator calls this 40,321 times over the bundled week: values read once into locals, dicts
    # filled item by item (the frozen values it builds have scaler.frozen.fast_init's __init__).
    cold = resolve_cold_start(config.cold_start, signals.cold_start)
    p50, p90 = cold.p50, cold.p90
    h = horizon(cold, config)
    breakeven = p90
    window = max(h, breakeven)
    extra_in = state.extra
    ttft_slo, u = config.ttft_p95, config.target_utilization

    fc = update_forecaster(extra_in.get("forecast") or DemandForecaster(), signals, now)
    learner = (extra_in.get("capacity") or CapacityLearner()).observe(
        signals, now=now, window=config.window, ttft_slo=ttft_slo, tpot_slo=config.tpot_p95)
    r_target, q_target, targets_from, targets = _targets_state(extra_in, config, fc.prompt_tokens,
                                                                fc.output_tokens)
    cap: Capacity | None = resolve_capacity(
        metadata=config.capacity_per_replica, model=config.fleet_model, learned=learner, signals=signals,
        ttft_slo=ttft_slo, tpot_slo=config.tpot_p95, running_per_replica=r_target,
        prompt_tokens=fc.prompt_tokens, output_tokens=fc.output_tokens)
    per_replica = cap.per_replica if cap is not None else None

    n = signals.pods_reporting
    rate = signals.load_rate
    observed = 0.0 if rate is None and n == 0 else rate
    observed_or_0 = observed or 0.0
    waiting = signals.waiting or 0.0
    inputs: dict[str, float] = {
        "pods_reporting": float(n),
        "cold_start_p50_s": p50, "cold_start_p90_s": p90, "cold_start_samples": float(cold.samples),
        "horizon_s": h, "breakeven_s": breakeven,
    }
    reasons = Reasons()

    # The forecast: peak upper bound over the window (for the count), peak point over H (for activation).
    forecast_peak: float | None = None
    wake_demand: float | None = None
    yesterday: float | None = None
    if config.forecast == "holt" and fc.last_bucket is not None:   # fc.ready
        outlook = fc.outlook(now, window, h)
        forecast_peak = outlook.peak_upper
        wake_demand = outlook.peak_rate
        yesterday = fc.yesterday_peak(now, h)
        if yesterday is not None:
            inputs["yesterday_peak_rate"] = yesterday
            wake_demand = max(wake_demand, yesterday)
        inputs["forecast_rate"] = outlook.rate_at_horizon
        inputs["forecast_upper"] = outlook.upper_at_horizon
        inputs["forecast_peak_upper"] = forecast_peak
        reasons.add(_FORECAST_SEASON if fc.has_season else _FORECAST, h, outlook.rate_at_horizon,
                    outlook.upper_at_horizon, window, forecast_peak)
    elif config.forecast == "holt":
        reasons.add("forecast: no history yet, using the observed rate")
    else:
        reasons.add("forecast: none (observed rate only)")
    if observed is not None:
        inputs["observed_rate"] = observed
    if fc.prompt_tokens is not None and fc.output_tokens is not None:
        # Mean token sizes at now + H: their EWMA level (scaler/forecast.py); they size the model capacity.
        inputs["prompt_tokens_forecast"] = fc.prompt_tokens
        inputs["output_tokens_forecast"] = fc.output_tokens
    demand_rate = max(observed_or_0, forecast_peak or 0.0)
    inputs["demand_rate"] = demand_rate

    terms: dict[str, float] = {}
    if cap is not None and per_replica is not None and per_replica > 0:   # per_replica comes from cap
        terms["forecast"] = demand_rate / (per_replica * u)
        terms["backlog"] = (observed_or_0 + waiting / (ttft_slo + (p50 if p50 > 0 else 0.0))) / per_replica
        inputs["capacity_per_replica"] = per_replica
        reasons.add("capacity {:.3g} req/s per replica from {}", per_replica, cap.source)
        if cap.source == "little":
            reasons.add(_TARGETS, r_target, q_target, targets_from)
    elif cap is not None:
        terms["forecast"] = float(config.max_replicas) if demand_rate > 0 else 0.0
        terms["backlog"] = waiting / q_target
        inputs["capacity_per_replica"] = 0.0
        reasons.add("capacity 0 from {}: the SLO is out of reach of one replica", cap.source)
    else:
        terms["forecast"] = (signals.running or 0.0) / r_target
        terms["backlog"] = waiting / q_target
        reasons.add("capacity unknown: forecast term is the running term R/runningPerReplica, "
                    "backlog is W/queuePerReplica")
        reasons.add(_TARGETS, r_target, q_target, targets_from)
    if (yesterday is not None and per_replica is not None and per_replica > 0
            and yesterday > config.forecast_activation_rate
            and observed_or_0 <= config.forecast_activation_rate and signals.demand == 0):   # idle now
        terms["wake"] = yesterday / (per_replica * u)
        reasons.add("idle now, but {:.3g} req/s arrived around this hour yesterday: ready for it ({:.3g} "
                    "replicas)", yesterday, terms["wake"])
    ratio = latency_ratio(signals, config)
    if ratio is not None and ratio > 1.0:
        loaded = waiting >= max(1, n) or (
            per_replica is not None and per_replica > 0 and observed_or_0 >= LOADED_FRACTION * n * per_replica)
        shortage = loaded or cap is None
    else:
        shortage = False
    shortage_since: float | None = None     # set exactly when there is a shortage
    if shortage:
        shortage_since = extra_in.get("shortage_since")
        if shortage_since is None:
            shortage_since = now
    terms["latency"] = 0.0
    if shortage_since is not None and now - shortage_since >= LATENCY_PERSISTENCE:
        terms["latency"] = latency_correction(n, ratio)
    elif shortage_since is not None:
        reasons.add("latency {:.3g}x the SLO on a loaded fleet for {:.0f}s < {:g}s: a burst shorter than that "
                    "is gone before a replica could load, no correction yet", ratio, now - shortage_since,
                    LATENCY_PERSISTENCE)
    elif ratio is not None and ratio > 1.0:
        reasons.add("latency {:.3g}x the SLO at light load (no queue, rate under {:g} of capacity): not a "
                    "shortage, no correction", ratio, LOADED_FRACTION)
    terms["kv"] = n * (signals.kv_cache_usage or 0.0) / config.kv_cache_target
    if n > 0 and rate is None and state.desired is not None:
        terms["hold"] = float(state.desired)
        reasons.add("rate unknown while pods report: holding the previous count")
    elif loading(signals) and state.desired:
        terms["hold"] = float(state.desired)
        reasons.add("pods loading, none reporting: demand unknown, holding the previous count")

    ready, starting = _supply(signals, state, cold, config, now)
    inputs["ready_replicas"] = float(ready)
    inputs["starting_replicas"] = float(starting)
    if starting > 0:
        capped, cap_to = cap_symptoms(terms, PREDICTIVE_SYMPTOMS, ready, starting, state.desired)
        if capped:
            reasons.add(*_on_the_way(starting, capped, cap_to))

    raw = max(terms.values())
    desired, dominant = clamp_to_bounds(raw, terms, config)
    active, last_demand_at, why_active = activity(signals, state, config, now, forecast_demand=wake_demand,
                                                  observed_rate=signals.arrival_rate)
    reasons.insert(0, "desired={} driven by {}: {}", desired, dominant, TermsText(terms))
    reasons.insert(1, *why_active)
    reasons.add("horizon {:.0f}s = cold start P90 {:.0f}s (P50 {:.0f}s, from {}, {} samples) + reaction lag {:g}s",
                h, p90, p50, cold.source, cold.samples, config.reaction_lag)

    raised_at = now if desired > (state.desired or 0) else extra_in.get("raised_at")
    extra = {**extra_in, "forecast": fc, "capacity": learner, "raised_at": raised_at, "targets": targets,
             "shortage_since": shortage_since}
    next_state = PolicyState(desired, active, last_demand_at, now, extra)
    return Decision(desired, active, dominant, terms, reasons, next_state, inputs)


_FORECAST = "forecast at now+{:.0f}s: {:.3g} req/s (upper {:.3g}); peak upper over {:.0f}s {:.3g} req/s"
_FORECAST_SEASON = _FORECAST + "; daily season on"
