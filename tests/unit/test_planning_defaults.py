"""Defaults derived from the default profile (llama-3.1-8b-h100) follow it: re-derived here, not typed twice.

``runningPerReplica`` and ``queuePerReplica`` without a fleet model (scaler/capacity.py, "Planning targets")
and the simulator's kpa target (simulations/cli.py) are the derivation done once on ``ModelParams()`` at the
ShareGPT-like sizes ``vllm-scaler profile`` uses by default; when the profile changes, this fails until the
defaults and their docs are re-derived.
"""

import pytest

from scaler.capacity import DEFAULT_QUEUE_PER_REPLICA, DEFAULT_RUNNING_PER_REPLICA, FleetModel, model_targets
from scaler.config import KEYS_BY_NAME
from simulations.fleet import ModelParams
from simulations.profile import DEFAULT_OUTPUT, DEFAULT_PROMPT

PROMPT, OUTPUT = (float(spec.split(":")[1]) for spec in (DEFAULT_PROMPT, DEFAULT_OUTPUT))   # 235, 460


def _default(name):
    return KEYS_BY_NAME[name].default


def test_the_worked_examples_model_is_the_default_profile():
    # scaler/capacity.py's worked example and tests/unit/test_capacity.py's H100 use these numbers
    assert FleetModel(alpha=0.00769, beta=0.0000572, gamma=0.0000214, max_num_seqs=1024,
                      kv_tokens=413_000) == ModelParams().fleet_model()


def test_planning_defaults_follow_the_default_profile():
    r, q = model_targets(ModelParams().fleet_model(), ttft_slo=_default("ttftP95"), tpot_slo=_default("tpotP95"),
                         prompt_tokens=PROMPT, output_tokens=OUTPUT, utilization=_default("targetUtilization"))
    assert DEFAULT_RUNNING_PER_REPLICA == float(f"{r:.2g}")      # 350.4 -> 350
    assert DEFAULT_QUEUE_PER_REPLICA == float(f"{q:.2g}")        # 6.70 -> 6.7
    for key, value in (("runningPerReplica", DEFAULT_RUNNING_PER_REPLICA), ("queuePerReplica", DEFAULT_QUEUE_PER_REPLICA)):
        assert _default(key) is None                              # derived; the fallback is documented
        assert f"without it {value:g}" in KEYS_BY_NAME[key].doc


def test_kpa_target_worked_example():
    from simulations.kpa import target_for

    fm, slo = ModelParams().fleet_model(), dict(slo_ttft=2.5, slo_tpot=0.1)
    assert target_for(fm, prompt_tokens=235, output_tokens=460, **slo) == pytest.approx(0.7 * 413_000 / 695)  # 416
    assert target_for(fm, prompt_tokens=2048, output_tokens=27.9, **slo) == pytest.approx(
        0.7 * (0.1 - 0.00769) / (0.0000572 + 0.0000214 * 2048 / 27.9))          # 39.7, TPOT binds
    assert target_for(fm, prompt_tokens=235, output_tokens=460, slo_ttft=2.5, slo_tpot=0.005) == 1.0


def test_simulate_resolves_the_kpa_target_from_the_trace_and_profile():
    from simulations.runner import Settings, with_kpa_target
    from simulations.traces import load

    week = load("azure-2024-week")
    s = with_kpa_target(Settings(fidelity="aggregate"), week)
    assert s.kpa_target == pytest.approx(39.7, abs=0.2)
    assert with_kpa_target(Settings(kpa_target=12.0), week).kpa_target == 12.0
