"""Trigger metadata parsing: defaults, every key, and bad input naming its key."""

import dataclasses

import pytest

from scaler.config import KEYS, PolicyConfig, ServerDefaults, parse_duration, parse_metadata
from scaler.errors import ConfigError


def parse(md, **kw):
    return parse_metadata(md, scaled_object=kw.pop("name", "llama"), namespace=kw.pop("ns", "ml"), **kw)


def test_defaults_of_the_dataclass_match_the_key_table() -> None:
    cfg_fields = {f.name: f.default for f in dataclasses.fields(PolicyConfig)}
    for key in KEYS:
        if key.default is not None:
            assert cfg_fields[key.attr] == key.default, key.name
        else:
            assert cfg_fields.get(key.attr, None) is None or key.attr in (
                "namespace", "deployment", "prometheus_address"), key.name


def test_empty_metadata_gives_documented_defaults() -> None:
    cfg = parse({})
    assert cfg.namespace == "ml"
    assert cfg.deployment == "llama"
    assert cfg.prometheus_address == "http://127.0.0.1:9090"
    for key in KEYS:
        if key.default is not None:
            assert getattr(cfg, key.attr) == key.default, key.name


def test_every_key_parses() -> None:
    md = {
        "prometheusAddress": "http://prom.monitoring:9090/", "namespace": "ml", "deploymentName": "llama-8b",
        "modelName": "meta-llama/Llama-3.1-8B-Instruct", "policy": "reactive", "minReplicas": "1",
        "maxReplicas": "8", "ttftP95": "1.0", "tpotP95": "0.05", "queuePerReplica": "3",
        "runningPerReplica": "48", "kvCacheTarget": "0.7", "activationThreshold": "0.5",
        "refreshInterval": "10s", "maxStaleness": "2m", "window": "30s", "scaleToZeroAfter": "15m",
        "coldStart": "240", "reactionLag": "30", "capacityPerReplica": "2.5", "targetUtilization": "0.75",
        "forecast": "none", "fleetModel": "alpha=0.015,beta=0.0003,gamma=0.00005,maxNumSeqs=256,kvTokens=400000",
        "forecastActivationRate": "0.2",
    }
    assert set(md) | {"activationQuery"} == {k.name for k in KEYS}
    cfg = parse(md)
    assert cfg.prometheus_address == "http://prom.monitoring:9090"
    assert cfg.deployment == "llama-8b" and cfg.min_replicas == 1 and cfg.max_replicas == 8
    assert cfg.refresh_interval == 10 and cfg.max_staleness == 120 and cfg.scale_to_zero_after == 900
    assert cfg.kv_cache_target == 0.7 and cfg.forecast == "none" and cfg.cold_start == 240
    assert cfg.forecast_activation_rate == 0.2
    fm = cfg.fleet_model
    assert (fm.alpha, fm.beta, fm.gamma, fm.max_num_seqs, fm.kv_tokens) == (0.015, 0.0003, 0.00005, 256, 400000)


def test_keda_owned_keys_are_accepted_and_kept() -> None:
    cfg = parse({"scalerAddress": "vllm-scaler.keda:9443", "enableTLS": "true", "ttftP95FromEnv": "SLO"})
    assert dict(cfg.keda_keys) == {"scalerAddress": "vllm-scaler.keda:9443", "enableTLS": "true",
                                   "ttftP95FromEnv": "SLO"}


@pytest.mark.parametrize(
    "md, key",
    [
        pytest.param({"bogus": "1"}, "bogus", id="unknown-key"),
        pytest.param({"ttftP95": "fast"}, "ttftP95", id="not-a-number"),
        pytest.param({"ttftP95": "-1"}, "ttftP95", id="negative-slo"),
        pytest.param({"tpotP95": "0"}, "tpotP95", id="zero-slo"),
        pytest.param({"ttftP95": "nan"}, "ttftP95", id="nan"),
        pytest.param({"minReplicas": "4", "maxReplicas": "2"}, "minReplicas", id="min-above-max"),
        pytest.param({"minReplicas": "-1"}, "minReplicas", id="negative-min"),
        pytest.param({"maxReplicas": "1.5"}, "maxReplicas", id="fractional-max"),
        pytest.param({"modelName": 'x"} or vector(1) #'}, "modelName", id="promql-quote-escape"),
        pytest.param({"modelName": "a{b}"}, "modelName", id="promql-brace"),
        pytest.param({"modelName": "a\\"}, "modelName", id="promql-backslash"),
        pytest.param({"deploymentName": 'llama",namespace=~".*'}, "deploymentName", id="deployment-escape"),
        pytest.param({"namespace": "other"}, "namespace", id="foreign-namespace"),
        pytest.param({"namespace": "Bad_NS"}, "namespace", id="bad-namespace"),
        pytest.param({"kvCacheTarget": "1.5"}, "kvCacheTarget", id="kv-above-one"),
        pytest.param({"refreshInterval": "5x"}, "refreshInterval", id="bad-duration"),
        pytest.param({"refreshInterval": "0"}, "refreshInterval", id="zero-duration"),
        pytest.param({"policy": "magic"}, "policy", id="unknown-policy"),
        pytest.param({"prometheusAddress": "prom:9090"}, "prometheusAddress", id="url-without-scheme"),
        pytest.param({"activationQuery": "sum(gateway_queue)"}, "activationQuery", id="query-not-allowed"),
        pytest.param({"fleetModel": "alpha=0.01,beta=0.001"}, "fleetModel", id="fleet-model-missing-parts"),
        pytest.param({"fleetModel": "alpha=0.01,beta=x,gamma=0,maxNumSeqs=8"}, "fleetModel",
                     id="fleet-model-not-a-number"),
        pytest.param({"fleetModel": "alpha=0.01,beta=0,gamma=0,maxNumSeqs=8.5"}, "fleetModel",
                     id="fleet-model-fractional-seqs"),
        pytest.param({"fleetModel": "alpha=0.01,delta=1,beta=0,gamma=0,maxNumSeqs=8"}, "fleetModel",
                     id="fleet-model-unknown-part"),
        pytest.param({"fleetModel": "alpha=0,beta=0,gamma=0,maxNumSeqs=8"}, "fleetModel", id="fleet-model-zero-alpha"),
        pytest.param({"forecastActivationRate": "0"}, "forecastActivationRate", id="zero-forecast-activation"),
    ],
)
def test_bad_metadata_names_the_key_and_value(md, key) -> None:
    with pytest.raises(ConfigError) as err:
        parse(md)
    assert key in err.value.keys
    assert key in str(err.value)
    if md.get(key) is not None:
        assert repr(md[key]) in str(err.value)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse({"ttftP95": "-1", "tpotP95": "x", "bogus": "1", "minReplicas": "9", "maxReplicas": "3"})
    assert set(err.value.keys) == {"ttftP95", "tpotP95", "bogus", "minReplicas"}


def test_allowed_namespaces_and_activation_query_follow_server_settings() -> None:
    d = ServerDefaults(allowed_namespaces=frozenset({("*", "shared")}), allow_activation_query=True)
    cfg = parse({"namespace": "shared", "activationQuery": "sum(gw_queue{svc='x'})"}, defaults=d)
    assert cfg.namespace == "shared" and cfg.activation_query == "sum(gw_queue{svc='x'})"


def test_invalid_scaled_object_name_requires_deployment_name() -> None:
    with pytest.raises(ConfigError) as err:
        parse({}, name="My_SO")
    assert err.value.keys == ("deploymentName",)
    assert parse({"deploymentName": "llama"}, name="My_SO").deployment == "llama"


@pytest.mark.parametrize("text, seconds", [("30", 30), ("2.5", 2.5), ("30s", 30), ("5m", 300),
                                           ("1h30m", 5400), ("250ms", 0.25)])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("md", [{"maxStaleness": "5"}, {"refreshInterval": "30s", "maxStaleness": "20s"}],
                         ids=["equal-to-default-refresh", "below-refresh"])
def test_max_staleness_must_exceed_refresh_interval(md) -> None:
    with pytest.raises(ConfigError) as err:
        parse(md)
    assert err.value.keys == ("maxStaleness",)
    assert parse({"refreshInterval": "30s", "maxStaleness": "2m"}).max_staleness == 120


def test_prometheus_address_allow_list() -> None:
    locked = ServerDefaults(prometheus_url="http://prom:9090",
                            allowed_prometheus_urls=frozenset({"http://prom-b:9090/"}))
    assert parse({"prometheusAddress": "http://prom-b:9090"}, defaults=locked).prometheus_address == \
        "http://prom-b:9090"
    assert parse({"prometheusAddress": "http://prom:9090"}, defaults=locked).prometheus_address == \
        "http://prom:9090"
    with pytest.raises(ConfigError) as err:
        parse({"prometheusAddress": "http://attacker.example:80"}, defaults=locked)
    assert err.value.keys == ("prometheusAddress",) and "attacker.example" in str(err.value)
    # Without an allow-list (the default) any address is accepted.
    assert parse({"prometheusAddress": "http://other:9090"}).prometheus_address == "http://other:9090"
