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
# Llama-3.1-8B on one H100-80GB (the default).
#
# Source: simulations/data/vllm-testbed-h100/ (README there): 1,405 autoscaler snapshots of a real llm-d v0.3.0
# fleet (vLLM 0.11.0, unsloth/Meta-Llama-3.1-8B bf16, one H100 per replica, vLLM flags at their defaults:
# gpu_memory_utilization 0.9, max_num_seqs 1024, max_num_batched_tokens 8192), loaded by `vllm bench serve` with
# ShareGPT (about 235 prompt / 460 output tokens per request, Poisson).
#
# Method: `vllm-scaler calibrate` on the recording converted from reconciles.csv
# (simulations/recording.py: testbed_recording; running sequences by Little's law n = rate x L x ITL):
# gamma from TTFT - 1.5 ITL on prompt tokens, then alpha and beta from ITL with the prefill share of every
# step (gamma x rate x P x ITL) subtracted. kv_tokens from KV usage against n x (P + L/2) on the same
# snapshots; cross-check by memory: 80 GB x 0.9 = 72 GB, minus 16 GB of bf16 weights and a few GB of
# activations and CUDA graphs, leaves about 50 GB; at 128 KiB per token (2 x 32 layers x 8 KV heads x 128 dims x
# 2 bytes) that is at most about 400,000 tokens.
# ---------------------------------------------------------------------------------------------------------------
_H100 = Profile(
    params=ModelParams(),
    gpus="1x H100-80GB",
    source="llm-d testbed, vLLM 0.11.0, Llama-3.1-8B bf16, ShareGPT load (simulations/data/vllm-testbed-h100/, "
           "Apache-2.0, from WheelyMcBones/inferno-autoscaler-fork@2f3ba2cd)",
    method="vllm-scaler calibrate on the converted reconciles (prefill share subtracted from the ITL fit); "
           "kv_tokens from KV usage vs running x (P + L/2); max_num_seqs, max_batched_tokens: vLLM 0.11 defaults",
    checked="knee about 26 req/s and each load band's mean TTFT and ITL (testbed README table): "
            "tests/unit/test_profiles.py, tests/unit/test_calibrate_testbed.py",
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
