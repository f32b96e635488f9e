"""The closed loop: decide() through KedaHpa, the baselines, unavailable policies."""

import pytest

from scaler.config import PolicyConfig
from scaler.errors import ConfigError
from simulations.fleet import ColdStartModel
from simulations.runner import (DecideTrigger, PolicyUnavailable, Settings, _SignalCache, build_fleet, policy_config,
                                run, run_policy)
from simulations.traces import load


@pytest.fixture(scope="module")
def slice_():
    return load("azure-2023-conv").sliced(900)


def test_policies_side_by_side_same_demand(slice_):
    s = Settings(cold_start=ColdStartModel(120, 0.0))
    r = run(slice_, ["reactive", "keda-threshold", "kpa", "oracle"], s)
    doc = r.summary()
    reqs = {p["requests"] for p in doc["policies"].values()}
    assert reqs == {int(slice_.requests)}
    assert doc["policies"]["oracle"]["gpu_hours_vs_oracle"] == pytest.approx(1.0)
    for name, p in doc["policies"].items():
        assert 0 <= p["ttft_slo_attainment"] <= 1 and p["gpu_hours"] > 0, name


def test_decide_trigger_reads_config_and_caches_per_refresh(slice_):
    s = Settings()
    cfg = policy_config("reactive", s)
    assert cfg.max_replicas == 50 and cfg.ttft_p95 == 2.5
    fleet = build_fleet(slice_, s, 1)
    trig = DecideTrigger(cfg, _SignalCache(fleet, cfg.window))
    fleet.advance_to(slice_.start + 30)
    trig.metric(slice_.start + 30)
    trig.is_active(slice_.start + 31)
    assert trig.decisions == 1                     # within refreshInterval (5 s): the cached decision
    trig.metric(slice_.start + 36)
    assert trig.decisions == 2


def test_unimplemented_policy_is_reported_unavailable(slice_):
    cfg = PolicyConfig(scaled_object="vllm", namespace="default", deployment="vllm",
                       prometheus_address="http://x", policy="no-such-policy")
    fleet = build_fleet(slice_, Settings(), 1)
    trig = DecideTrigger(cfg, _SignalCache(fleet, 60))
    with pytest.raises(PolicyUnavailable, match="no-such-policy"):
        trig.metric(slice_.start + 10)


def test_bad_metadata_names_the_key():
    with pytest.raises(ConfigError, match="queuePerReplica"):
        policy_config("reactive", Settings(metadata=(("queuePerReplica", "-1"),)))


def test_aggregate_fidelity_runs_the_same_policies(slice_):
    r = run_policy("keda-threshold", slice_, Settings(fidelity="aggregate"))
    assert r.outcome.requests == pytest.approx(slice_.requests)
    assert r.timeline.t and max(r.timeline.spec) >= 1


def test_predictive_runs_through_decide(slice_):
    r = run_policy("predictive", slice_, Settings())
    assert r.unavailable is None and r.outcome.requests == slice_.requests
