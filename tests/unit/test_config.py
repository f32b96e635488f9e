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


# ---- bounds ---------------------------------------------------------------------------------------------
# (key, lowest accepted, highest accepted, just below, just above); the message must name the bound.
BOUNDS = [
    ("minReplicas", "0", "150000", "-1", "150001", "0", "150000"),
    ("maxReplicas", "1", "150000", "0", "150001", "1", "150000"),
    ("ttftP95", "0.001", "3600", "0.0009", "3601", "0.001", "3,600"),
    ("tpotP95", "0.001", "60", "0", "60.5", "0.001", "60"),
    ("queuePerReplica", "0.01", "100000", "0.001", "1e6", "0.01", "100,000"),
    ("runningPerReplica", "0.01", "100000", "0", "1e9", "0.01", "100,000"),
    ("kvCacheTarget", "0.01", "1", "0.001", "1.01", "0.01", "1"),
    ("activationThreshold", "0", "1000000", "-0.1", "1e7", "0", "1,000,000"),
    ("refreshInterval", "500ms", "1h", "1ms", "2h", "500ms", "1h"),
    ("window", "2s", "24h", "0.0004", "1e300", "2s", "24h"),
    ("scaleToZeroAfter", "0", "24h", "-1", "25h", "0s", "24h"),
    ("coldStart", "1s", "4h", "0.5", "999999999h", "1s", "4h"),
    ("reactionLag", "0", "1h", "-1", "100000h", "0s", "1h"),
    ("capacityPerReplica", "0.001", "1000000", "1e-308", "1e300", "0.001", "1,000,000"),
    ("targetUtilization", "0.05", "1", "1e-300", "1.5", "0.05", "1"),
    ("forecastActivationRate", "0.0001", "1e6", "1e-300", "1e300", "0.0001", "1,000,000"),
]


@pytest.mark.parametrize("key, lo, hi, below, above, lo_text, hi_text", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_every_bound_is_inclusive_and_named_when_refused(key, lo, hi, below, above, lo_text, hi_text) -> None:
    extra = {"maxStaleness": "2h"} if key == "refreshInterval" else {}
    for ok in (lo, hi):
        md = {key: ok, **extra}
        if key == "minReplicas":
            md["maxReplicas"] = "150000"
        parse(md)
    for bad, bound in ((below, f">= {lo_text}"), (above, f"<= {hi_text}")):
        if key in ("scaleToZeroAfter", "reactionLag") and bad == "-1":
            bound = "non-negative"        # a negative duration is refused by the duration parser itself
        with pytest.raises(ConfigError) as err:
            parse({key: bad, **extra})
        assert key in err.value.keys and repr(bad) in str(err.value) and bound in str(err.value), str(err.value)


def test_every_key_shows_bounds_in_the_reference() -> None:
    assert all(k.bounds for k in KEYS), [k.name for k in KEYS if not k.bounds]


def test_twenty_digit_replica_counts_are_refused_not_internal() -> None:
    big = "99999999999999999999"
    with pytest.raises(ConfigError) as err:
        parse({"minReplicas": big, "maxReplicas": big})
    assert set(err.value.keys) == {"minReplicas", "maxReplicas"} and "<= 150000" in str(err.value)
    with pytest.raises(ConfigError, match=">= 0"):
        parse({"minReplicas": "-" + big})


@pytest.mark.parametrize("text", ["1_000", "١٢", "1.0", "0x10", ""])
def test_integers_are_plain_ascii_digits(text) -> None:
    with pytest.raises(ConfigError, match="maxReplicas"):
        parse({"maxReplicas": text})


def test_fleet_model_parts_are_bounded() -> None:
    for bad in ("alpha=1e-308,beta=0,gamma=0,maxNumSeqs=8", "alpha=0.01,beta=0,gamma=0,maxNumSeqs=1e9",
                "alpha=0.01,beta=1e300,gamma=0,maxNumSeqs=8", "alpha=0.01,beta=0,gamma=0,maxNumSeqs=8,kvTokens=0.5"):
        with pytest.raises(ConfigError, match="must be within") as err:
            parse({"fleetModel": bad})
        assert err.value.keys == ("fleetModel",)


@pytest.mark.parametrize("address, why", [
    ("http://prom:9090/api/v1/query?query=up&x=", "no ?query"),
    ("http://prom:9090/#frag", "no ?query or #fragment"),
    ("http://user:s3cret@prom:9090", "credentials"),
    ("https://tok@prom", "credentials"),
    ("http://prom:9090/a b", "whitespace"),
    ("http://prom:9090/\x00", "control"),
    ("http://prom\t:9090", "whitespace"),
    ("ftp://prom:9090", "http:// or https://"),
    ("http://", "base URL"),
    ("http://prom:99999", "port"),
    ("http://pr_om:9090", "base URL"),
    ("http://prom:9090/x'y", "quote"),
    ("http://" + "a" * 2000, "longer than"),
])
def test_prometheus_address_is_a_base_url_only(address, why) -> None:
    with pytest.raises(ConfigError) as err:
        parse({"prometheusAddress": address})
    assert err.value.keys == ("prometheusAddress",) and why in str(err.value), str(err.value)
    assert "s3cret" not in str(err.value) and "tok@" not in str(err.value)


@pytest.mark.parametrize("address, parsed", [
    ("http://prom.monitoring.svc:9090/", "http://prom.monitoring.svc:9090"),
    ("https://thanos.example.com/prefix/api-gw", "https://thanos.example.com/prefix/api-gw"),
    ("http://10.0.0.7:9090", "http://10.0.0.7:9090"),
    ("http://[::1]:9090", "http://[::1]:9090"),
])
def test_prometheus_base_urls_accepted(address, parsed) -> None:
    assert parse({"prometheusAddress": address}).prometheus_address == parsed


def test_huge_values_give_short_messages() -> None:
    huge = "9" * 100_000
    md = {"ttftP95": huge, "window": "x" * 100_000, "b" * 100_000: "1", "modelName": '"' * 100_000}
    md.update({f"unknown{i}": huge for i in range(50)})
    with pytest.raises(ConfigError) as err:
        parse(md)
    text = str(err.value)
    assert len(text) <= 600 and "ttftP95" in text and "(100000 chars)" in text
    assert len(err.value.problems) == 55   # every problem is kept (and the size), the message names what fits


def test_unknown_key_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'maxReplicas'"):
        parse({"maxReplica": "3"})


def test_oversized_metadata_is_refused_as_a_whole() -> None:
    with pytest.raises(ConfigError) as err:
        parse({"caCert": "x" * 70_000})
    assert err.value.keys == ("metadata",) and "65536" in str(err.value)
    assert parse({"caCert": "x" * 8_000}).keda_keys      # a CA bundle of a realistic size is fine
