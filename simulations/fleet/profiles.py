"""Named profiles of model x GPU: :class:`~simulations.fleet.model.ModelParams` from real measurements.

Each profile says where its numbers come from (``source``), how they were obtained (``method``) and what the
model was checked against (``checked``). ``vllm-scaler simulate|sweep|calibrate|profile --model-profile NAME``
picks one, ``--model-param NAME=VALUE`` changes any of its numbers on top (:func:`resolve`).
``vllm-scaler profile --list`` prints them. The default, :data:`DEFAULT`, is what ``ModelParams()`` holds.

The step model (:mod:`simulations.fleet.model`): one continuous-batching step of a replica takes
``t = alpha + beta * running + gamma * prompt_tokens_in_step`` seconds. How measurements map onto it:

* ``alpha`` -- ITL (= TPOT, the step time) of a replica running one request with nothing to prefill;
* ``beta`` -- slope of ITL on the running sequences (decode batch), prefill share removed;
* ``gamma`` -- prefill time per prompt token: TTFT below saturation is ``1.5 t + gamma * P``;
* ``kv_tokens`` -- vLLM's "GPU KV cache size: N tokens" at start-up, or KV usage against the tokens held by the
  running requests (``n * (P + L/2)`` on average: every prompt plus half its output);
* ``max_num_seqs`` and ``max_batched_tokens`` -- the deployment's vLLM flags.

Tests: ``tests/unit/test_profiles.py`` (every profile valid, the default is ``ModelParams()``, each profile
within its tolerance of the measurements it cites, on their own workloads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .model import ModelParams


@dataclass(frozen=True)
class Profile:
    """A :class:`ModelParams` and its provenance (plain text, shown by ``vllm-scaler profile --list``)."""

    params: ModelParams
    gpus: str       # GPUs per replica, e.g. "1x H100-80GB"
    source: str     # where the numbers come from (a citable reference)
    method: str     # how each number was obtained from the source
    checked: str    # what the model was checked against, and the test that pins it


DEFAULT = "llama-3.1-8b-h100"

# ---------------------------------------------------------------------------------------------------------------
# llama-3.1-8b-h100 -- Llama-3.1-8B on one H100-80GB (the default; the numbers are ModelParams' field defaults).
#
# Source: simulations/data/vllm-testbed-h100/ (README there): 1,405 autoscaler snapshots of a real llm-d v0.3.0
# fleet (vLLM 0.11.0, unsloth/Meta-Llama-3.1-8B bf16, one H100 per replica, vLLM flags at their defaults:
# gpu_memory_utilization 0.9, max_num_seqs 1024, max_num_batched_tokens 8192), loaded by `vllm bench serve` with
# ShareGPT (about 235 prompt / 460 output tokens per request, Poisson).
#
# Method: `vllm-scaler calibrate simulations/data/vllm-testbed-h100/reconciles.csv` (simulations/recording.py:
# testbed_recording converts it; calibrate's method is in that module's docstring). It prints, over the 647
# snapshots with no queue in their window: gamma = 2.14e-5 s per prompt token (R^2 0.78), alpha = 7.55 ms and
# beta = 0.0511 ms per sequence with the prefill share removed (R^2 0.50 on ITL: the snapshots are 1-minute
# fleet means, noisy at low load), kv_tokens = 273,000 (R^2 0.94). Rounded to 3 digits here.
# kv_tokens against the memory arithmetic: 80 GB x 0.9 = 71 GiB, minus 15 GiB of bf16 weights and 3-5 GiB of
# activations and CUDA graphs, leaves 51-53 GiB; at 128 KiB per token (2 x 32 layers x 8 KV heads x 128 dims x
# 2 bytes) that is at most 420,000-430,000 tokens. The fitted 273,000 is lower because the testbed logs each
# pod's 1-minute *peak* usage, long outputs hold their KV longer than the mean sizes say, and blocks of 16
# tokens round up; it is the capacity in the model's own accounting (running x (P + L/2) at mean sizes), which
# is what the simulator uses.
#
# Checked against (tests/unit/test_calibrate_testbed.py, tests/unit/test_profiles.py):
# * the testbed README's table: mean ITL and TTFT per load band within 30 % (measured: ITL -3..+19 %,
#   TTFT -20..+13 %; the 24-28 req/s band, at the knee, is the farthest: -22 % / -20 %);
# * the knee: 26.8 req/s per replica (steady-state saturation at 235/460 tokens) against the measured 26;
# * vLLM's own CI latency benchmark on H100 (fixed batch of 8, 32 prompt / 128 output tokens): 997.5 ms
#   measured, 1.02 s from this profile (see the A100 profile below for the source).
# ---------------------------------------------------------------------------------------------------------------
_H100 = Profile(
    params=ModelParams(),
    gpus="1x H100-80GB",
    source="llm-d testbed, vLLM 0.11.0, Llama-3.1-8B bf16, ShareGPT load (simulations/data/vllm-testbed-h100/, "
           "Apache-2.0, from WheelyMcBones/inferno-autoscaler-fork@2f3ba2cd)",
    method="vllm-scaler calibrate on the testbed's reconciles.csv (gamma from TTFT, alpha/beta with the prefill "
           "share removed, kv_tokens from KV usage); max_num_seqs 1024, max_batched_tokens 8192: vLLM 0.11 defaults",
    checked="testbed load bands: mean ITL/TTFT within 30 %; knee 26.8 vs 26 req/s; vLLM CI latency test 1.02 vs "
            "0.9975 s (tests/unit/test_calibrate_testbed.py, tests/unit/test_profiles.py)",
)

PROFILES: Mapping[str, Profile] = {
    DEFAULT: _H100,
}


def names() -> list[str]:
    """Profile names, the default first."""
    return [DEFAULT] + sorted(n for n in PROFILES if n != DEFAULT)


def get(name: str) -> ModelParams:
    """The :class:`ModelParams` of a profile; an unknown name raises ValueError listing the known ones."""
    try:
        return PROFILES[name].params
    except KeyError:
        raise ValueError(f"unknown model profile {name!r} (known: {', '.join(names())})") from None


def resolve(profile: str | None, overrides: Mapping[str, str] = {}) -> ModelParams:
    """A profile (default :data:`DEFAULT`) with ``--model-param`` overrides applied on top.

    The result's ``name`` is the profile's, followed by the overrides (``llama-3.1-8b-h100 with alpha=0.01``),
    unless an override sets ``name`` itself.
    """
    params = get(profile or DEFAULT)
    if not overrides:
        return params
    out = params.with_overrides(overrides)
    if "name" not in overrides:
        changed = ", ".join(f"{k}={v}" for k, v in overrides.items())
        out = out.with_overrides({"name": f"{params.name} with {changed}"})
    return out
