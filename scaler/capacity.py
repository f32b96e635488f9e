"""Capacity per replica at the SLO: the request rate one vLLM replica sustains with TTFT and TPOT in budget.

The predictive policy turns a forecast arrival rate into replicas by dividing by
this number. Four sources, in order of precedence (the one used is reported with
every decision):

1. ``metadata``: ``capacityPerReplica`` (requests/s), measured by the user.
2. ``model``: the fleet model's calibration, ``fleetModel`` metadata
   (``alpha``, ``beta``, ``gamma``, ``maxNumSeqs``, optional ``kvTokens``), with
   the forecast mean token sizes: :func:`model_capacity`.
3. ``learned``: online from observed throughput and latency:
   :class:`CapacityLearner`.
4. ``little``: a last resort from Little's law on the current load (below).

The model (llm-d's queueing model, mean-field form)
----------------------------------------------------
Per iteration a replica with ``n`` running sequences spends ``α + β n`` seconds
(decode) plus ``γ`` seconds per prompt token prefilled in that step (the
fleet model's ``t = α + β·running + γ·prefill_tokens``). A request has ``I``
prompt and ``O`` output tokens. In steady state, with arrival rate ``λ`` per
replica, the fraction of time spent on prefill is ``λ γ I``, decode iterations
run at ``(1 - λγI)/(α + βn)`` per second and each emits ``n`` tokens, which must
equal the ``λ O`` tokens/s demanded. Hence::

    λ(n)    = n / (O (α + β n) + n γ I)                      requests/s per replica
    TPOT(n) = (α + β n) + n γ I / O                          s   (decode step + amortised prefill)
    TTFT(n) = (α + β n) + γ I                                s   (wait for one step, then prefill;
                                                                  no queueing: targetUtilization keeps it so)

    n*  = min(maxNumSeqs, (T2* - α) / (β + γ I / O), (T1* - α - γ I) / β, kvTokens / (I + O))
    capacity = λ(n*)   (0 when n* < 1: the SLO is out of reach of one replica)

Both TPOT and TTFT grow with ``n`` and ``λ(n)`` grows with ``n``, so the largest
admissible ``n`` gives the capacity (llm-d binary-searches the same thing; the
linear model has a closed form).

Worked example, round numbers, not a GPU (pinned by ``tests/unit/test_capacity.py::test_model_worked_example``;
the default profile's numbers are worked below, "Planning targets"):
α = 0.015 s, β = 0.0003 s/seq, γ = 0.00005 s/token, maxNumSeqs = 256, I = 1000,
O = 200, T1* = 2.5 s, T2* = 0.1 s: β + γI/O = 0.00055, so the TPOT bound is
n ≤ 0.085 / 0.00055 = 154.5; TTFT allows 8116; n* = 154.5;
λ = 154.5 / (200 × 0.06136 + 154.5 × 0.05) = 154.5 / 19.998 = 7.73 requests/s.

Planning targets: running and waiting requests per replica
----------------------------------------------------------
The reactive terms ``R / r*`` and ``W / q*`` (and the predictive policy's fallbacks, the Little's-law
capacity below) need a running count ``r*`` and a queue ``q*`` per replica. They follow the fleet model
when one is given (:func:`model_targets`; a key set in the metadata wins), else they are the same
derivation done once on the default profile (:data:`DEFAULT_RUNNING_PER_REPLICA`,
:data:`DEFAULT_QUEUE_PER_REPLICA`). With ``c = λ(n*)`` the capacity above and ``u`` ``targetUtilization``::

    r* = u c O α / (1 - u c (O β + γ I))     running sequences at the rate u c (the steady state
                                             n = λ O t, t = α / (1 - λ(Oβ + γI)), solved for n)
    q* = (1 - u) c T1*                       the queue the spare capacity (1 - u) c drains
                                             within the TTFT budget
    both at least 1 request (at u = 1, or when the SLO is out of reach: c = 0)

Why not ``u n*``: ``λ(n)`` flattens as ``n`` nears ``n*`` (each extra sequence slows every step), so the
last 10 % of the running slots carry about 2 % of the rate; ``u n*`` would plan at 98 % of capacity,
not at ``u``. ``r*`` is the running count that matches the predictive policy's plan (demand / (c u)).
At ``u = 1``, ``r* = n*``.

Worked example on the ``llama-3.1-8b-h100`` profile's parameters (α = 7.69 ms, β = 0.0572 ms/seq,
γ = 0.0214 ms/token, maxNumSeqs 1024, kvTokens 413,000) with the llm-d testbed's ShareGPT sizes I = 235,
O = 460, T1* = 2.5 s, T2* = 0.1 s, u = 0.9 (pinned by
``tests/unit/test_capacity.py::test_targets_worked_example``): the KV bound binds, n* = 413000 / 695 =
594.2 (TPOT allows 1,355); c = 594.2 / (460 × 0.04168 + 594.2 × 0.005029) = 26.81 requests/s (the
testbed's measured knee: 26); u c = 24.13; O β + γ I = 0.02631 + 0.00503 = 0.03134, so
r* = 24.13 × 460 × 0.00769 / (1 - 24.13 × 0.03134) = 85.37 / 0.2437 = 350.4 running requests
(u n* would be 534.8) and q* = 0.1 × 26.81 × 2.5 = 6.70 waiting requests. These are the defaults without
a fleet model, rounded (``tests/unit/test_planning_defaults.py``
re-derives them from the profile). On a long-prompt chat mix (I = 1,150, O = 210) the same profile
gives r* = 162, q* = 5.96: set ``fleetModel`` (or the keys) when the workload differs.

Learned online
--------------
A window (one ``Signals``) is a sample ``x = completion_rate / N`` (``N`` = pods
reporting) only if all hold: the pod count has not changed for at least
``window`` seconds (a replica still warming up, or just Ready and not yet at its
share of the load, would bias it), both latencies are known (no NaN window) and
within the SLO, and the load is informative: requests are waiting (``W ≥ N``,
the replicas are full) or the latency is at least :data:`INFORMATIVE_LATENCY` of
the SLO. The estimate is the EWMA (weight :data:`LEARN_WEIGHT`) of the samples,
used after :data:`MIN_SAMPLES` of them. It is a conservative estimate (a
replica within the SLO could have done a little more), which errs on the side
of the SLO.

Little's law fallback
---------------------
With ``R`` requests running fleet-wide at rate ``λ_obs``, one request stays
``R / λ_obs`` seconds; a replica holding ``runningPerReplica`` (``r*``) of them
serves ``r* λ_obs / R`` requests/s. Used only while nothing better is known; it
makes the forecast term the reactive running term scaled by the forecast
growth. As ``r*`` is the running count at ``u`` of capacity, this capacity is
about ``u c``, and the forecast term then plans at about ``u² c``: on the side
of the SLO, while nothing better is known. Both ``λ_obs`` and ``R`` are EWMAs (weight :data:`LITTLE_WEIGHT` per
snapshot) kept in the :class:`CapacityLearner`, so that a bursty trace, where
one snapshot shows ``R = 0`` and the next ``R = 40``, does not swing the
capacity by 10x between refreshes (seen on the Azure 2023 code trace); the
instantaneous ratio is used only before any history exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .frozen import fast_init

if TYPE_CHECKING:  # signals.py imports config.py, which builds FleetModel from metadata
    from .signals import Signals

DEFAULT_RUNNING_PER_REPLICA = 350.0
"""``r*`` without a fleet model: :func:`model_targets` on the default profile (``llama-3.1-8b-h100``) at the
default SLO and ``targetUtilization`` with ShareGPT-sized requests (235 / 460 tokens), rounded (see the
module docstring)."""
DEFAULT_QUEUE_PER_REPLICA = 6.7
"""``q*`` without a fleet model: the same derivation (see :data:`DEFAULT_RUNNING_PER_REPLICA`)."""
MIN_TARGET = 1.0
"""The smallest derived ``r*`` and ``q*``: one request per replica."""

INFORMATIVE_LATENCY = 0.6
LEARN_WEIGHT = 0.1
MIN_SAMPLES = 5
LITTLE_WEIGHT = 0.05


@dataclass(frozen=True)
class FleetModel:
    """Iteration-time model of one replica: ``t = alpha + beta*running + gamma*prefill_tokens`` (s)."""

    alpha: float
    beta: float
    gamma: float
    max_num_seqs: int
    kv_tokens: float | None = None

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta >= 0 and self.gamma >= 0 and self.max_num_seqs >= 1):
            raise ValueError(f"FleetModel needs alpha > 0, beta >= 0, gamma >= 0, max_num_seqs >= 1: {self!r}")
        if self.kv_tokens is not None and self.kv_tokens <= 0:
            raise ValueError(f"FleetModel.kv_tokens must be > 0, got {self.kv_tokens!r}")

    def metadata(self) -> str:
        """The ``fleetModel`` trigger metadata value that parses back to this model
        (``tests/unit/test_capacity.py::test_fleet_model_metadata_round_trips``)."""
        text = f"alpha={self.alpha:.6g},beta={self.beta:.6g},gamma={self.gamma:.6g},maxNumSeqs={self.max_num_seqs}"
        return text + (f",kvTokens={self.kv_tokens:.0f}" if self.kv_tokens is not None else "")


@fast_init
@dataclass(frozen=True)
class Capacity:
    """Requests/s one replica sustains within the SLO, and where the number came from."""

    per_replica: float
    source: str  # "metadata", "model", "learned", "little"


def model_batch(model: FleetModel, *, ttft_slo: float, tpot_slo: float, prompt_tokens: float,
                output_tokens: float) -> float:
    """n*: the largest mean batch within the SLO (see the module docstring); may be < 1."""
    return _batch(model, ttft_slo, tpot_slo, prompt_tokens, output_tokens)


def model_capacity(model: FleetModel, *, ttft_slo: float, tpot_slo: float, prompt_tokens: float,
                   output_tokens: float) -> float:
    """λ(n*) in requests/s per replica; 0 when the SLO is out of reach (n* < 1)."""
    return _capacity(model, ttft_slo, tpot_slo, prompt_tokens, output_tokens)


# The two above with positional arguments and no list: they run at every predictive decision.
def _batch(model: FleetModel, ttft_slo: float, tpot_slo: float, prompt_tokens: float,
           output_tokens: float) -> float:
    i = 0.0 if 0.0 > prompt_tokens else prompt_tokens      # max(prompt_tokens, 0.0)
    o = 1.0 if 1.0 > output_tokens else output_tokens      # max(output_tokens, 1.0)
    alpha, beta, gamma = model.alpha, model.beta, model.gamma
    n = float(model.max_num_seqs)                          # the smallest bound, in this order
    per_seq = beta + gamma * i / o
    if per_seq > 0:
        b = (tpot_slo - alpha) / per_seq
        if b < n:
            n = b
    elif tpot_slo < alpha and 0.0 < n:
        n = 0.0
    if beta > 0:
        b = (ttft_slo - alpha - gamma * i) / beta
        if b < n:
            n = b
    elif ttft_slo < alpha + gamma * i and 0.0 < n:
        n = 0.0
    if model.kv_tokens is not None:
        b = model.kv_tokens / (i + o)
        if b < n:
            n = b
    return n


def _capacity(model: FleetModel, ttft_slo: float, tpot_slo: float, prompt_tokens: float,
              output_tokens: float) -> float:
    n = _batch(model, ttft_slo, tpot_slo, prompt_tokens, output_tokens)
    if n < 1:
        return 0.0
    i = 0.0 if 0.0 > prompt_tokens else prompt_tokens
    o = 1.0 if 1.0 > output_tokens else output_tokens
    return n / (o * (model.alpha + model.beta * n) + n * model.gamma * i)


def model_targets(model: FleetModel, *, ttft_slo: float, tpot_slo: float, prompt_tokens: float,
                  output_tokens: float, utilization: float) -> tuple[float, float]:
    """(r*, q*): running and waiting requests per replica at ``utilization`` of the model's capacity (see
    the module docstring, "Planning targets"); each at least :data:`MIN_TARGET`."""
    c = _capacity(model, ttft_slo, tpot_slo, prompt_tokens, output_tokens)
    if c <= 0:
        return MIN_TARGET, MIN_TARGET
    i = 0.0 if 0.0 > prompt_tokens else prompt_tokens
    o = 1.0 if 1.0 > output_tokens else output_tokens
    lam = utilization * c       # <= c, so lam (O β + γ I) < 1: the denominator stays positive
    running = lam * o * model.alpha / (1.0 - lam * (o * model.beta + model.gamma * i))
    queue = (1.0 - utilization) * c * ttft_slo
    return max(MIN_TARGET, running), max(MIN_TARGET, queue)


@fast_init
@dataclass(frozen=True)
class CapacityLearner:
    """Online capacity estimate (immutable; :meth:`observe` returns the next one)."""

    estimate: float | None = None
    samples: int = 0
    pods: int | None = None
    pods_since: float | None = None
    mean_rate: float | None = None      # EWMA of λ_obs while pods report (Little's law fallback)
    mean_running: float | None = None   # EWMA of R while pods report

    def observe(self, signals: Signals, *, now: float, window: float, ttft_slo: float,
                tpot_slo: float) -> CapacityLearner:
        n = signals.pods_reporting
        pods, pods_since = (self.pods, self.pods_since) if n == self.pods else (n, now)
        mean_rate, mean_running = self.mean_rate, self.mean_running
        rate_now, running_now = signals.load_rate, signals.running
        if n >= 1 and rate_now is not None and running_now is not None and rate_now < math.inf \
                and running_now < math.inf:      # an infinite reading would hold the EWMA at inf for good
            w = LITTLE_WEIGHT
            mean_rate = rate_now if mean_rate is None else (1 - w) * mean_rate + w * rate_now
            mean_running = running_now if mean_running is None else (1 - w) * mean_running + w * running_now
        estimate, samples = self.estimate, self.samples
        sample = self._sample(signals, n, now - pods_since if pods_since is not None else None, window,
                              ttft_slo, tpot_slo)
        if sample is not None:
            estimate = sample if estimate is None else (1 - LEARN_WEIGHT) * estimate + LEARN_WEIGHT * sample
            samples += 1
        return CapacityLearner(estimate, samples, pods, pods_since, mean_rate, mean_running)

    @staticmethod
    def _sample(signals: Signals, n: int, steady_for: float | None, window: float, ttft_slo: float,
                tpot_slo: float) -> float | None:
        """Completion rate per replica from this snapshot when it is informative about capacity, else None."""
        if n < 1 or steady_for is None or steady_for < window:
            return None  # warming up or just changed: the window mixes replicas at different shares
        rate, t1, t2 = signals.completion_rate, signals.ttft_p95, signals.tpot_p95
        if rate is None or t1 is None or t2 is None:
            return None  # NaN window (no traffic) tells nothing about capacity
        if t1 > ttft_slo or t2 > tpot_slo:
            return None  # outside the SLO: not "at the SLO"
        full = signals.waiting is not None and signals.waiting >= n
        near = max(t1 / ttft_slo, t2 / tpot_slo) >= INFORMATIVE_LATENCY
        if not (full or near) or rate <= 0 or rate == math.inf:
            return None
        return rate / n

    @property
    def usable(self) -> float | None:
        return self.estimate if self.samples >= MIN_SAMPLES else None


def little_capacity(signals: Signals, running_per_replica: float,
                    learner: CapacityLearner | None = None) -> float | None:
    """r* λ_obs / R (requests/s per replica) from the learner's EWMAs when it has them, else from this
    snapshot; None when it cannot be formed (no load)."""
    rate: float | None
    running: float | None
    if learner is not None and learner.mean_rate is not None and learner.mean_running is not None:
        rate, running = learner.mean_rate, learner.mean_running
    else:
        rate, running = signals.load_rate, signals.running
    if rate is None or running is None or running < 1 or rate <= 0:
        return None
    return running_per_replica * rate / running


def resolve_capacity(*, metadata: float | None, model: FleetModel | None, learned: CapacityLearner | None,
                     signals: Signals, ttft_slo: float, tpot_slo: float, running_per_replica: float,
                     prompt_tokens: float | None, output_tokens: float | None) -> Capacity | None:
    """The capacity in use, by precedence metadata > model > learned > little; None when none is known."""
    if metadata is not None:
        return Capacity(metadata, "metadata")
    if model is not None and prompt_tokens is not None and output_tokens is not None:
        return Capacity(_capacity(model, ttft_slo, tpot_slo, prompt_tokens, output_tokens), "model")
    if learned is not None and learned.usable is not None:
        return Capacity(learned.usable, "learned")
    little = little_capacity(signals, running_per_replica, learned)
    if little is not None and math.isfinite(little):
        return Capacity(little, "little")
    return None
