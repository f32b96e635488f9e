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

while ``n <= n_max = min(max_num_seqs, kv_tokens // (P + L))``. At ``n_max`` the
replica saturates: ``t_sat = alpha + beta*n_max + gamma*P*n_max/L`` and the
throughput is ``lam_sat = n_max / (L * t_sat)``.

Worked example (pinned by ``tests/unit/test_fleet.py::test_steady_state_worked_example``):
``alpha = 0.02058, beta = 0.00041, gamma = 0.0001, max_num_seqs = 256, kv_tokens = 400000``
(round numbers of an older example, not a profile), ``P = 1000``, ``L = 200``, ``lam = 2 req/s``: ``rho = 2 * (0.00041*200 +
0.0001*1000) = 0.364``, ``t = 0.02058 / 0.636 = 0.03236 s``, ``n = 2*200*0.03236 =
12.94``. Saturation: ``n_max = min(256, 400000 // 1200 = 333) = 256``, ``t_sat =
0.02058 + 0.10496 + 0.0001*1000*256/200 = 0.25354 s``, ``lam_sat = 256 / (200 *
0.25354) = 5.048 req/s``.

TTFT of a request with prompt ``p`` at a replica below saturation: it waits on
average half an iteration for the next step to begin, then one step that also
prefills it: ``ttft ~ 1.5 * t + gamma * p`` (plus any queueing wait).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Mapping

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

    alpha: float = 0.00755
    beta: float = 0.0000511
    gamma: float = 0.0000214
    max_num_seqs: int = 1024
    kv_tokens: int = 273_000
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

    def with_overrides(self, overrides: Mapping[str, str]) -> "ModelParams":
        """A copy with ``{"alpha": "0.03", ...}`` applied; unknown names or bad values raise ValueError."""
        kinds = {f.name: f.type for f in fields(self)}
        values: dict[str, object] = {}
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


def n_max(params: ModelParams, prompt_mean: float, output_mean: float) -> int:
    """Most sequences one replica runs at once: ``min(max_num_seqs, kv_tokens // (P + L))`` (at least 1)."""
    per = max(1.0, prompt_mean + output_mean)
    return max(1, min(params.max_num_seqs, int(params.kv_tokens // per)))


def saturation(params: ModelParams, prompt_mean: float, output_mean: float) -> tuple[float, float, int]:
    """(lam_sat req/s, t_sat s, n_max) of one replica."""
    L = max(1.0, output_mean)
    n = n_max(params, prompt_mean, output_mean)
    t_sat = params.alpha + params.beta * n + params.gamma * prompt_mean * n / L
    return n / (L * t_sat), t_sat, n


def steady_state(params: ModelParams, rate: float, prompt_mean: float, output_mean: float) -> SteadyState:
    """The steady state of one replica offered ``rate`` req/s; saturated states report the ceiling."""
    L = max(1.0, output_mean)
    lam_sat, t_sat, n = saturation(params, prompt_mean, output_mean)
    if rate >= lam_sat:
        return SteadyState(rate, rate * (params.beta * L + params.gamma * prompt_mean), t_sat, float(n), True)
    rho = rate * (params.beta * L + params.gamma * prompt_mean)
    t = params.alpha / (1.0 - rho)
    return SteadyState(rate, rho, t, rate * L * t, False)


def max_rate_within_slo(params: ModelParams, prompt_mean: float, output_mean: float, prompt_p95: float,
                        slo_ttft: float, slo_tpot: float) -> float:
    """Largest rate (req/s) one replica takes with ``t <= slo_tpot`` and ``1.5 t + gamma*P95 <= slo_ttft``.

    Both bounds are monotone in the rate, so the answer is closed-form:
    ``t <= T  <=>  rho <= 1 - alpha/T``. Capped at 99 % of ``lam_sat``. Returns 0.0
    when even an idle replica misses the SLO (then no replica count meets it).
    """
    L = max(1.0, output_mean)
    per_req = params.beta * L + params.gamma * prompt_mean
    t_cap = min(slo_tpot, (slo_ttft - params.gamma * prompt_p95) / 1.5)
    if t_cap <= params.alpha:
        return 0.0
    rho_cap = 1.0 - params.alpha / t_cap
    lam = rho_cap / per_req if per_req > 0 else math.inf
    lam_sat, _, _ = saturation(params, prompt_mean, output_mean)
    return min(lam, 0.99 * lam_sat)
