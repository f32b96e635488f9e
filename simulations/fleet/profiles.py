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

from collections.abc import Mapping
from dataclasses import dataclass

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
# Method: `vllm-scaler calibrate simulations/data/vllm-testbed-h100/reconciles.csv --output-spread 2`
# (simulations/recording/testbed.py: from_testbed_csv converts the file; calibrate's method is in the docstring
# of simulations/recording/calibrate.py). It prints, over the 647 snapshots with no queue in their window: gamma
# = 2.14e-5 s per prompt token (R^2 0.78), alpha = 7.69 ms and beta = 0.0572 ms per sequence with the prefill
# share removed (R^2 0.57 on ITL: the snapshots are 1-minute fleet means, noisy at low load), kv_tokens =
# 413,000 (R^2 0.94). Rounded to 3 digits here. The KV fit needs the output sizes' spread E[O^2]/E[O]^2 (long
# answers hold their KV longer), which the testbed does not log: 2, outputs as varied as a log-normal with CV 1,
# ShareGPT-like. The memory arithmetic checks it: 80 GB x 0.9 = 71 GiB, minus 15 GiB of bf16 weights and 3-5 GiB
# of activations and CUDA graphs, leaves 51-53 GiB; at 128 KiB per token (2 x 32 layers x 8 KV heads x 128 dims
# x 2 bytes) that is 420,000-430,000 tokens, 2-4 % above the fit (the testbed logs each pod's 1-minute peak
# usage, which pulls the fit down a little). With fixed sizes (spread 1) the same data give 278,000: not a cache
# size, the tokens at which fixed-size requests would fill it as these did.
#
# Checked against (tests/unit/test_calibrate_testbed.py, tests/unit/test_profiles.py):
# * the testbed README's table: mean ITL and TTFT per load band within 30 %, at each band's mean rate and the
#   testbed's mean sizes (239 / 447 tokens): steady state ITL +9, +27, +24, +22, +1 %, TTFT +6, +20, +13, +16,
#   +2 %; on the per-request engine with ShareGPT-like sizes ITL +11..+28 % and -3 % at the knee, TTFT
#   +6..+24 %, KV usage 0.04, 0.14, 0.22, 0.35, 0.65 (mean) against the testbed's 0.04, 0.10, 0.19, 0.31, 0.65;
# * the knee: 27.4 req/s per replica (model.knee at 239 / 447 tokens, output spread 2), 26.7 req/s from
#   `vllm-scaler profile --find-knee` (engine, its default ShareGPT-like sizes), against the measured 26;
# * overload: 27.5 req/s offered to an empty replica forms a queue after 209-254 s (4 seeds; measured 3-4
#   minutes) and the saturated replica serves 23-24 req/s under preemption (measured 19-30, median 23);
# * vLLM's own CI latency benchmark on H100 (fixed batch of 8, 32 prompt / 128 output tokens): 997.5 ms
#   measured, 1.05 s from this profile (see the A100 profile below for the source).
# ---------------------------------------------------------------------------------------------------------------
_H100 = Profile(
    params=ModelParams(),
    gpus="1x H100-80GB",
    source="llm-d testbed, vLLM 0.11.0, Llama-3.1-8B bf16, ShareGPT load (simulations/data/vllm-testbed-h100/, "
           "Apache-2.0, from WheelyMcBones/inferno-autoscaler-fork@2f3ba2cd)",
    method="vllm-scaler calibrate --output-spread 2 on the testbed's reconciles.csv (gamma from TTFT, alpha/beta "
           "with the prefill share removed, kv_tokens from KV usage, within 3 % of the memory arithmetic); "
           "max_num_seqs 1024, max_batched_tokens 8192: vLLM 0.11 defaults",
    checked="testbed load bands: mean ITL/TTFT within 30 %; knee 27.4 (engine 26.7) vs 26 req/s; queue onset at "
            "27.5 req/s 209-254 s vs 3-4 min; saturated 23-24 vs 19-30 req/s; "
            "vLLM CI latency test 1.05 vs 0.9975 s (tests/unit/test_calibrate_testbed.py, "
            "tests/unit/test_profiles.py)",
)

# ---------------------------------------------------------------------------------------------------------------
# llama-3.1-8b-a100-80gb -- Llama-3.1-8B on one A100-SXM4-80GB.
#
# Sources (public, cited by the page the search corpus stored them under):
# * vLLM's own CI performance benchmark (.buildkite/nightly-benchmarks, Llama-3.1-8B tp1), run on an
#   A100-SXM4-80GB (stored as https://buildkite.com/julialang/opencl-dot-jl/builds/306) and on an H100
#   (stored as https://buildkite.com/elastic/enterprise-search-ruby/builds/571), the same tests and vLLM:
#     latency test, a fixed batch of 8 requests of 32 prompt / 128 output tokens: A100 1585.43 ms, H100 997.542 ms;
#     throughput test, 200 ShareGPT prompts all at once: A100 11.0511 req/s, H100 19.5005 req/s.
# * vLLM's defaults on an A100 (vllm tests/engine/test_arg_utils.py::test_defaults_with_usage_context, vllm
#   serve): max_num_seqs 256, max_num_batched_tokens 2048 (an H100 gets 1024 / 8192; vLLM exempts the A100).
#
# Method (how each number maps onto the step model):
# * beta, gamma: the H100 profile's times 2.29, the geometric mean of the two GPUs' memory-bandwidth ratio (3.35
#   / 2.04 = 1.64 TB/s: a decoding sequence reads its KV) and bf16 compute ratio (989 / 312 = 3.2 TFLOPS:
#   prefill); checked by the CI throughput test's A100/H100 ratio, which the engine (simulations/profile.py)
#   gives as 0.60 on a ShareGPT-like burst of 200 (measured 11.05 / 19.50 = 0.567);
# * alpha: from the latency test, which is one step prefilling 8 x 32 tokens then 127 decode steps of 8
#   sequences: 128 (alpha + 8 beta) + 256 gamma = 1.585 s -> alpha = 11.2 ms (the H100's 7.69 ms x 1.46: the
#   memory bandwidth sets a small batch's step);
# * kv_tokens: as the H100 profile (the same 80 GB, gpu_memory_utilization 0.9 and weights);
# * max_num_seqs 256, max_batched_tokens 2048: vLLM's A100 defaults (above).
#
# Checked against (tests/unit/test_profiles.py::test_profile_against_vllm_ci): the latency test 1.585 s
# (model 1.580 s), the throughput test 11.05 req/s (model about 9.0 req/s, -18 %, with max_num_seqs 256 as the
# CI ran it), and the H100 profile on the same two tests (0.998 s / 19.5 req/s measured; model 1.05 s / about
# 15.0 req/s, -23 %). The throughput test depends on ShareGPT's size distribution, modelled there as log-normal
# (means 230 / 203 tokens, CV 1, vLLM's ShareGPT filter). The knee at the default sizes is about 11 req/s,
# 0.4 of the H100's.
# ---------------------------------------------------------------------------------------------------------------
_A100 = Profile(
    params=ModelParams(alpha=0.0112, beta=0.000131, gamma=0.000049, max_num_seqs=256, kv_tokens=413_000,
                       name="llama-3.1-8b-a100-80gb", max_batched_tokens=2048),
    gpus="1x A100-SXM4-80GB",
    source="vLLM CI performance benchmark, Llama-3.1-8B tp1 on A100-SXM4-80GB and H100 (latency and throughput "
           "tests); vLLM's A100 defaults (max_num_seqs 256, max_num_batched_tokens 2048)",
    method="beta, gamma: the H100 profile's x 2.29 (geometric mean of the bandwidth and compute ratios); alpha from "
           "the CI latency test (128 (alpha + 8 beta) + 256 gamma = 1.585 s); kv_tokens as the H100",
    checked="CI latency test 1.585 s (model 1.580 s), throughput test 11.05 req/s (model ~9.0, -18 %), A100/H100 "
            "throughput ratio 0.567 (model 0.60): "
            "tests/unit/test_profiles.py",
)

# ---------------------------------------------------------------------------------------------------------------
# llama-3-70b-h100-tp4 -- Llama-3-70B (bf16) on four H100-80GB with tensor parallelism 4 (Llama-3.1-70B has the
# same architecture: same step costs and KV per token).
#
# Sources: vLLM's CI performance benchmark on H100 (stored as
# https://buildkite.com/elastic/enterprise-search-ruby/builds/571), llama70B_tp4: latency test (a fixed batch of
# 8 requests of 32 prompt / 128 output tokens) 2444.47 ms; throughput test (200 ShareGPT prompts at once)
# 8.86239 req/s, against 19.5005 req/s for Llama-3.1-8B on one H100 in the same run.
#
# Method: beta and gamma are the 8B H100 profile's times 1.18, the geometric mean of what a 70B step does per
# GPU against the 8B on one (8.75x the weights and compute over 4 GPUs: 2.2x; 2.5x the KV per token over 4 GPUs:
# 0.63x) -- the split between beta and gamma is the 8B's, not measured; checked by the throughput test's 70B/8B
# ratio, which the engine gives as 0.47 (measured 0.454); alpha from the latency test:
# 128 (alpha + 8 beta) + 256 gamma = 2.444 s -> 18.5 ms.
# bf16 weights and about 12 GiB of activations and CUDA graphs, at 320 KiB per token (2 x 80 layers x 8 KV heads
# x 128 x 2 bytes) is at most 465,000 tokens; the 8B H100 fit came out 3 % under its own memory arithmetic (see
# above): 450,000. max_num_seqs 1024, max_batched_tokens 8192: vLLM's defaults on H100.
#
# Checked against (tests/unit/test_profiles.py::test_profile_against_vllm_ci): latency 2.444 s (model 2.443 s),
# throughput 8.86 req/s (model about 7.1, -20 %, the 8B's size-model bias). Only these two figures: the knee
# (about 20 req/s per 4-GPU replica at the default sizes) is not checked against a measurement.
# ---------------------------------------------------------------------------------------------------------------
_70B_TP4 = Profile(
    params=ModelParams(alpha=0.0185, beta=0.0000673, gamma=0.0000252, max_num_seqs=1024, kv_tokens=450_000,
                       name="llama-3-70b-h100-tp4", max_batched_tokens=8192),
    gpus="4x H100-80GB (tensor parallel 4)",
    source="vLLM CI performance benchmark on H100, llama70B_tp4: latency 2444.47 ms (8 x 32/128 tokens), "
           "throughput 8.86 req/s (200 ShareGPT prompts)",
    method="beta, gamma: the 8B H100 profile's x 1.18 (per-GPU compute and KV reads against the 8B); alpha "
           "from the latency test; kv_tokens from the memory arithmetic (which the 8B fit meets within 3 %)",
    checked="CI latency 2.444 s (model 2.443 s), throughput 8.86 req/s (model ~7.1, -20 %): "
            "tests/unit/test_profiles.py; its knee is not checked against a measurement",
)

PROFILES: Mapping[str, Profile] = {
    DEFAULT: _H100,
    "llama-3.1-8b-a100-80gb": _A100,
    "llama-3-70b-h100-tp4": _70B_TP4,
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
