"""What one vLLM replica can do: the iteration-time model and its steady state.

Iteration time (seconds) of one continuous-batching step of one replica::

    t = alpha + beta * running + gamma * prefill_tokens_in_step

``alpha`` is the fixed cost of a forward pass, ``beta`` the extra cost per
running sequence (decode), ``gamma`` the cost per prompt token prefilled in the
step. It is the shape llm-d's Workload Variant Autoscaler fits per model and
GPU (decode ``itl = alpha + beta * batch``; prefill ``delta`` per token).

Default parameters: the ``llama-3.1-8b-h100`` profile -- Llama-3.1-8B (bf16) on one
H100-80GB under vLLM 0.11 with its default flags (``max_num_seqs`` 1024,
``max_num_batched_tokens`` 8192), fitted with ``vllm-scaler calibrate`` on the
bundled measurements of a real llm-d testbed (``simulations/data/vllm-testbed-h100/``).
Its source, method and what it was checked against are documented with every
other profile in :mod:`simulations.fleet.profiles`; ``--model-profile NAME``
picks another one, ``--model-param NAME=VALUE`` changes any number.

Steady state of one replica (the fluid model the aggregate fidelity and the
oracle use). A replica receiving ``lam`` requests/s with mean prompt ``P`` and
output ``L`` tokens: by Little's law ``running n = lam * L * t`` (each request
stays ``L`` iterations) and the step prefills ``lam * t * P`` tokens, so::

    t = alpha + beta * lam * L * t + gamma * P * lam * t
    rho = lam * (beta * L + gamma * P)          (utilization, < 1)
    t   = alpha / (1 - rho)                     (iteration time = TPOT)
    n   = lam * L * t                           (running sequences)

vLLM admits a request while its prompt's KV blocks are free, so nothing stops
``n`` but the cache (and ``max_num_seqs``): a running sequence holds on average
``kappa = P + spread * L / 2 + block_size / 2`` tokens (:func:`kv_per_sequence`;
``spread = E[O^2] / E[O]^2`` of the output sizes, 1 when fixed), so
``n_max = min(max_num_seqs, kv_tokens // kappa)``. The **knee**
``lam_knee = n_max / (L alpha + n_max (beta L + gamma P))`` is the highest rate
with a steady state (:func:`knee`); past it the cache fills, vLLM preempts
(``eps`` preemptions per completion, :func:`preemption_ratio`) and a queue
forms; a saturated replica serves ``lam_sat = n_max / (L (alpha + beta n_max) +
n_max gamma (P + eps (P + b)))`` req/s at ``t_sat = n_max / (L lam_sat)``
(:func:`saturation`): below the knee, since every preemption is recomputed.
How fast the cache fills past the knee is the aggregate fidelity's dynamic
state (:mod:`simulations.fleet.aggregate_fleet`).

Worked example 1 (pinned by ``tests/unit/test_fleet.py::test_steady_state_worked_example``):
``alpha = 0.02058, beta = 0.00041, gamma = 0.0001, max_num_seqs = 256, kv_tokens = 400000``
(round numbers of an older example, not a profile), ``P = 1000``, ``L = 200``, ``lam = 2 req/s``, fixed
sizes: ``rho = 2 * (0.00041*200 + 0.0001*1000) = 0.364``, ``t = 0.02058 / 0.636 = 0.03236 s``, ``n =
2*200*0.03236 = 12.94``. Saturation: ``kappa = 1000 + 100 + 8 = 1108``, ``n_max = min(256, 400000 // 1108 =
361) = 256`` (``max_num_seqs`` binds: no preemption, ``eps = 0``), ``t_sat = 0.02058 + 0.10496 +
0.0001*1000*256/200 = 0.25354 s``, ``lam_sat = 256 / (200 * 0.25354) = 5.048 req/s``.

Worked example 2, the cache binds (pinned by ``tests/unit/test_fleet.py::test_saturation_worked_example``):
``alpha = 0.0072, beta = 0.000047, gamma = 0.00004, kv_tokens = 300000, max_num_seqs = 1024, block_size =
16``, ``P = 235``, ``L = 460``, ``spread = 1.6``: ``kappa = 235 + 368 + 8 = 611`` tokens, ``n_max = 300000
// 611 = 490``; ``lam_knee = 490 / (460*0.0072 + 490*(0.02162 + 0.0094)) = 490 / 18.512 = 26.47 req/s``; at
20 req/s ``rho = 0.6204``, ``t = 0.018967 s``, ``n = 174.5``, KV ``174.5 * 611 / 300000 = 0.355``.
Preemption: ``m = 490 / 460 = 1.065`` finishes a step, ``D = 490 / 16 = 30.63`` blocks a step, ``B_f =
694 / 16 + 0.5 = 43.88`` (one finish covers a step: only ``K = 0`` leaves a deficit), ``B_v = 251 / 16 +
0.5 = 16.19``: ``eps = e^-1.065 * 30.63 / (1.065 * 16.19) = 0.612``; ``lam_sat = 490 / (460 * (0.0072 +
0.02303) + 490 * 0.00004 * (235 + 0.612 * 251)) = 22.77 req/s``, ``t_sat = 0.04679 s``.

TTFT of a request with prompt ``p`` at a replica below saturation: it waits on
average half an iteration for the next step to begin, then one step that also
prefills it: ``ttft ~ 1.5 * t + gamma * p`` (plus any queueing wait).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from scaler.capacity import FleetModel


@dataclass(frozen=True)
class ModelParams:
    """Per-iteration time ``t = alpha + beta*running + gamma*prefill_tokens_in_step`` (seconds) and limits.

    * ``alpha`` (s): fixed cost of one step; ``beta`` (s per running sequence): decode cost per sequence;
      ``gamma`` (s per prompt token): prefill cost per prompt token computed in the step;
    * ``max_num_seqs``: vLLM's ``--max-num-seqs``; ``kv_tokens``: the KV cache of one replica in tokens (vLLM
      logs it at start-up as "GPU KV cache size"); ``max_batched_tokens``: vLLM's ``--max-num-batched-tokens``,
      the tokens of one step: one per decoding sequence plus the prefill chunks (chunked prefill; at least
      ``max_num_seqs``, as vLLM requires); ``block_size``: tokens per KV block (vLLM's ``--block-size``);
    * ``name``: which profile (:mod:`simulations.fleet.profiles`) the numbers come from, with any overrides.

    The defaults are the ``llama-3.1-8b-h100`` profile (its source and fit: :mod:`simulations.fleet.profiles`;
    ``tests/unit/test_profiles.py`` pins that ``ModelParams()`` is that profile).
    """

    alpha: float = 0.00769
    beta: float = 0.0000572
    gamma: float = 0.0000214
    max_num_seqs: int = 1024
    kv_tokens: int = 413_000
    name: str = "llama-3.1-8b-h100"
    max_batched_tokens: int = 8192
    block_size: int = 16

    def __post_init__(self) -> None:
        for f in ("alpha", "beta", "gamma"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"ModelParams.{f} must be a finite number >= 0, got {v!r}")
        if self.alpha <= 0:
            raise ValueError(f"ModelParams.alpha must be > 0 (a step takes time), got {self.alpha!r}")
        for f in ("max_num_seqs", "kv_tokens", "max_batched_tokens", "block_size"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"ModelParams.{f} must be an integer >= 1, got {v!r}")
        if self.max_batched_tokens < self.max_num_seqs:
            raise ValueError(f"ModelParams.max_batched_tokens ({self.max_batched_tokens}) must be >= max_num_seqs "
                             f"({self.max_num_seqs}): every running sequence takes one token of a step (vLLM's rule)")
        if self.kv_tokens < self.block_size:
            raise ValueError(f"ModelParams.kv_tokens ({self.kv_tokens}) must hold at least one block of "
                             f"block_size ({self.block_size}) tokens")

    def fleet_model(self) -> FleetModel:
        """These parameters as the scaler's ``fleetModel`` (what ``vllm-scaler calibrate`` would fit from this
        fleet): ``simulate`` hands it to the predictive policy by default."""
        return FleetModel(alpha=self.alpha, beta=self.beta, gamma=self.gamma, max_num_seqs=self.max_num_seqs,
                          kv_tokens=self.kv_tokens)

    def with_overrides(self, overrides: Mapping[str, str]) -> ModelParams:
        """A copy with ``{"alpha": "0.03", ...}`` applied; unknown names or bad values raise ValueError."""
        kinds = {f.name: f.type for f in fields(self)}
        values: dict[str, Any] = {}   # int or float by key
        for key, raw in overrides.items():
            if key not in kinds:
                raise ValueError(f"unknown model parameter {key!r} (known: {', '.join(sorted(kinds))})")
            try:
                if key == "name":
                    values[key] = raw
                elif key in ("max_num_seqs", "kv_tokens", "max_batched_tokens", "block_size"):
                    values[key] = int(raw)
                else:
                    values[key] = float(raw)
            except ValueError:
                raise ValueError(f"model parameter {key}={raw!r}: not a number") from None
        return replace(self, **values)


@dataclass(frozen=True)
class SteadyState:
    """One replica's steady state at an arrival rate (see the module docstring)."""

    rate: float          # req/s offered to the replica
    utilization: float   # rho
    iteration: float     # t, seconds (= TPOT)
    running: float       # n
    saturated: bool      # the offered rate is at or above lam_sat


def kv_per_sequence(params: ModelParams, prompt_mean: float, output_mean: float, spread: float = 1.0) -> float:
    """KV tokens one running sequence holds on average in steady state: ``kappa = P + spread * L / 2 + b / 2``.

    A request admitted at rate ``lam`` holds ``P + g`` tokens when it has produced ``g`` of its ``O``: summed
    over its life, ``O P + O^2 / 2``; per running sequence (``n = lam E[O] t``, Little) that is ``P + E[O^2] /
    (2 E[O])`` = ``P + spread L / 2`` with ``spread = E[O^2] / E[O]^2`` (1 for fixed sizes; long answers stay
    longer, so a spread of sizes raises it), plus half a block of rounding (``ceil(c / b)`` blocks of ``b``).
    """
    return max(1.0, prompt_mean) + spread * max(1.0, output_mean) / 2 + params.block_size / 2


def n_max(params: ModelParams, prompt_mean: float, output_mean: float, spread: float = 1.0) -> int:
    """Most sequences one replica runs at once: ``min(max_num_seqs, kv_tokens // kappa)`` (at least 1)."""
    per = kv_per_sequence(params, prompt_mean, output_mean, spread)
    return max(1, min(params.max_num_seqs, int(params.kv_tokens // per)))


def knee(params: ModelParams, prompt_mean: float, output_mean: float, spread: float = 1.0) -> float:
    """Highest rate (req/s) with a steady state within ``n_max``: ``lam_knee = n_max / (L alpha + n_max (beta L
    + gamma P))`` (``n = lam L t`` with ``t = alpha / (1 - rho)`` solved for ``n = n_max``)."""
    L = max(1.0, output_mean)
    n = n_max(params, prompt_mean, output_mean, spread)
    return n / (L * params.alpha + n * (params.beta * L + params.gamma * prompt_mean))


def preemption_ratio(params: ModelParams, prompt_mean: float, output_mean: float, running: float) -> float:
    """Preemptions per completion of a replica whose KV cache is full (``eps``), with ``n = running``.

    With the cache full, every step the decoding sequences take ``D = n / b`` new blocks (one each every ``b``
    steps); the requests that finish in the step free ``B_f = (P + L - 1) / b + 1/2`` blocks each, and finish
    ``m = n / L`` at a time on average (Little: ``lam t = n / L``), as a Poisson count. Admission takes every
    block a finish frees, so a step with fewer freed blocks than ``D`` preempts the newest requests, each
    freeing ``B_v = (P + b) / b + 1/2`` blocks (a victim is young: its prompt and about a block of output)::

        eps = E[(D - B_f K)^+] / (m B_v),   K ~ Poisson(m)

    """
    b = params.block_size
    L = max(1.0, output_mean)
    n = max(0.0, running)
    m = n / L
    if m <= 0:
        return 0.0
    D = n / b
    bf = (prompt_mean + L - 1) / b + 0.5
    bv = (prompt_mean + b) / b + 0.5
    deficit, k, pk = 0.0, 0, math.exp(-m)
    while k * bf < D and k < 10_000:
        deficit += pk * (D - k * bf)
        k += 1
        pk *= m / k
    return deficit / (m * bv)


def saturation(params: ModelParams, prompt_mean: float, output_mean: float,
               spread: float = 1.0) -> tuple[float, float, int]:
    """(lam_sat req/s, t_sat s, n_max): what a replica serves with a queue, running ``n_max`` sequences.

    ``lam_sat = n_max / (L (alpha + beta n_max) + n_max gamma (P + eps (P + b)))``: the step-time model at
    ``n_max`` with the prompts prefilled (``lam P`` tokens/s) plus the recomputes of preempted requests
    (``eps lam (P + b)``, :func:`preemption_ratio`; 0 when ``max_num_seqs`` binds before the cache);
    ``t_sat = n_max / (L lam_sat)``. Below the :func:`knee` a replica holds a steady state without preempting;
    past it the cache fills and throughput falls to ``lam_sat``.
    """
    L = max(1.0, output_mean)
    n = n_max(params, prompt_mean, output_mean, spread)
    kv_bound = params.kv_tokens // kv_per_sequence(params, prompt_mean, output_mean, spread) <= params.max_num_seqs
    eps = preemption_ratio(params, prompt_mean, L, n) if kv_bound else 0.0
    lam = n / (L * (params.alpha + params.beta * n)
               + n * params.gamma * (prompt_mean + eps * (prompt_mean + params.block_size)))
    return lam, n / (L * lam), n


def steady_state(params: ModelParams, rate: float, prompt_mean: float, output_mean: float,
                 spread: float = 1.0) -> SteadyState:
    """The steady state of one replica offered ``rate`` req/s; at or past the :func:`knee` it reports the
    saturated state (``t_sat``, ``n_max``)."""
    L = max(1.0, output_mean)
    rho = rate * (params.beta * L + params.gamma * prompt_mean)
    if rate >= knee(params, prompt_mean, output_mean, spread):
        _, t_sat, n = saturation(params, prompt_mean, output_mean, spread)
        return SteadyState(rate, rho, t_sat, float(n), True)
    t = params.alpha / (1.0 - rho)
    return SteadyState(rate, rho, t, rate * L * t, False)


def max_rate_within_slo(params: ModelParams, prompt_mean: float, output_mean: float, prompt_p95: float,
                        slo_ttft: float, slo_tpot: float, spread: float = 1.0) -> float:
    """Largest rate (req/s) one replica takes with ``t <= slo_tpot`` and ``1.5 t + gamma*P95 <= slo_ttft``.

    Both bounds are monotone in the rate, so the answer is closed-form:
    ``t <= T  <=>  rho <= 1 - alpha/T``. Capped at 99 % of ``lam_sat`` (what a replica sustains once its
    cache is full). Returns 0.0 when even an idle replica misses the SLO (then no replica count meets it).
    """
    L = max(1.0, output_mean)
    per_req = params.beta * L + params.gamma * prompt_mean
    t_cap = min(slo_tpot, (slo_ttft - params.gamma * prompt_p95) / 1.5)
    if t_cap <= params.alpha:
        return 0.0
    rho_cap = 1.0 - params.alpha / t_cap
    lam = rho_cap / per_req if per_req > 0 else math.inf
    lam_sat, _, _ = saturation(params, prompt_mean, output_mean, spread)
    return min(lam, 0.99 * lam_sat)
