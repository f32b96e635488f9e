"""Issue 11 through a real gRPC server on 127.0.0.1: short messages, no credentials, an audit line per refused
request (rate-limited), a cap on targets, and a fuzz of the metadata that never gets INTERNAL, never hangs,
and never changes a well-configured neighbour's answer."""

from __future__ import annotations

import logging
import os

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import KEDA_OWNED_KEYS, KEYS, ServerDefaults
from scaler.errors import SourceConnectionError
from scaler.redact import MAX_MESSAGE, MAX_VALUE, truncate
from scaler.server import METRIC_NAME, ScalerServer, ServerSettings
from scaler.server.fake_source import ScriptedSource
from scaler.server.servicer import RefusalAudit
from scaler.signals import Signals

DEADLINE = 3.0
BUSY = Signals(observed_at=0.0, pods_reporting=3, waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1,
               tpot_p95=0.05, arrival_rate=4.0, completion_rate=4.0)


class EverySource(ScriptedSource):
    """Answers BUSY for every target it is asked about (so any valid config gets a decision)."""

    def fetch(self, targets, now):
        for c in targets:
            if (c.namespace, c.deployment) not in self._signals:
                self.set(c.namespace, c.deployment, BUSY)
        return super().fetch(targets, now)


def ref(name="llama", ns="ml", **md):
    return pb.ScaledObjectRef(name=name, namespace=ns, scalerMetadata={k: str(v) for k, v in md.items()})


def start(source, **kw):
    defaults = kw.pop("defaults", ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    server = ScalerServer(ServerSettings(host="127.0.0.1", port=0, metrics_port=None, defaults=defaults, **kw),
                          source_factory=lambda address: source)
    server.start()
    channel = grpc.insecure_channel(server.address)
    return server, channel, pb_grpc.ExternalScalerStub(channel)


@pytest.fixture
def served():
    source = EverySource()
    server, channel, stub = start(source, max_targets=3)
    try:
        yield server, stub, source
    finally:
        channel.close()
        server.stop(grace=1.0)


def _fails(call, code):
    with pytest.raises(grpc.RpcError) as exc:
        call()
    assert exc.value.code() == code, exc.value.details()
    return exc.value.details()


def test_a_100kb_value_gives_a_short_message(served) -> None:
    _, stub, _ = served
    r = ref(ttftP95="9" * 100_000, **{"k" * 100_000: "v" * 100_000})
    details = _fails(lambda: stub.GetMetricSpec(r, timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
    assert len(details) <= MAX_MESSAGE and "ttftP95" in details and "(100000 chars)" in details
    details = _fails(lambda: stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(), metricName="m" * 100_000),
                                             timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
    assert len(details) <= MAX_MESSAGE and "metricName" in details


def test_no_credential_in_an_unavailable_message() -> None:
    """The server's own --prometheus-url may carry basic-auth credentials; a source error quoting it must not
    reach the client."""
    source = ScriptedSource()
    url = "http://scaler:s3cret@127.0.0.1:9"
    source.fail_all(SourceConnectionError(f"cannot reach {url}/api/v1/query " + "x" * 5000, source="prometheus"))
    server, channel, stub = start(source, defaults=ServerDefaults(prometheus_url=url), cold_wait=2.0)
    try:
        details = _fails(lambda: stub.IsActive(ref(), timeout=DEADLINE), grpc.StatusCode.UNAVAILABLE)
        assert "s3cret" not in details and "scaler:" not in details and "127.0.0.1:9" in details
        assert len(details) <= MAX_MESSAGE
        details = _fails(lambda: stub.GetMetricSpec(ref(prometheusAddress="http://u:s3cret@prom:9090"),
                                                    timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
        assert "s3cret" not in details and "prometheusAddress" in details and "credentials" in details
    finally:
        channel.close()
        server.stop(grace=1.0)


def test_target_cap_refuses_new_targets_and_counts_them(served) -> None:
    server, stub, _ = served
    for i in range(3):
        stub.GetMetricSpec(ref(name=f"m{i}"), timeout=DEADLINE)
    details = _fails(lambda: stub.GetMetricSpec(ref(name="m3"), timeout=DEADLINE),
                     grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "--max-targets" in details and "ml/m3" in details
    _fails(lambda: stub.IsActive(ref(name="m4"), timeout=DEADLINE), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert server.store.refused == 2 and len(server.store) == 3
    # the targets already served keep their answers
    assert stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref(name="m0"), metricName=METRIC_NAME),
                           timeout=DEADLINE).metricValues[0].metricValue >= 1
    text = _scrape(server)
    assert "vllm_scaler_targets_refused_total 2.0" in text


def _scrape(server) -> str:
    from prometheus_client import generate_latest

    return generate_latest(server.metrics.registry).decode()


def test_replica_bound_answers_fit_the_reply(served) -> None:
    _, stub, _ = served
    big = ref(name="big", minReplicas=150_000, maxReplicas=150_000)
    value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=big, metricName=METRIC_NAME),
                            timeout=DEADLINE).metricValues[0]
    assert value.metricValue == 150_000
    details = _fails(lambda: stub.GetMetricSpec(ref(name="huge", minReplicas="9" * 20, maxReplicas="9" * 20),
                                                timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
    assert "minReplicas" in details and "maxReplicas" in details and "<= 150000" in details


def test_refused_requests_are_audited_rate_limited_without_values(served, caplog) -> None:
    _, stub, _ = served
    caplog.set_level(logging.WARNING, logger="scaler.server.rpc")
    bad = ref(name="llama", ns="team-a", coldStart="999999999h", fleetModel="alpha=s3cret")
    for _ in range(4):
        _fails(lambda: stub.GetMetricSpec(bad, timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
    _fails(lambda: stub.GetMetricSpec(ref(name="other", ns="team-a", window="0"), timeout=DEADLINE),
           grpc.StatusCode.INVALID_ARGUMENT)
    lines = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert [(r.fields["scaledobject"], r.fields["keys"], r.fields["suppressed"]) for r in lines] == [
        ("llama", ["coldStart", "fleetModel"], 0), ("other", ["window"], 0)]
    assert lines[0].fields["namespace"] == "team-a" and lines[0].fields["code"] == "INVALID_ARGUMENT"
    assert all("s3cret" not in repr(r.__dict__) and "999999999h" not in repr(r.__dict__) for r in lines)


def test_audit_counts_suppressed_lines_and_bounds_its_memory(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="scaler.server.rpc")
    audit = RefusalAudit(interval=60.0, max_pairs=100)
    code = grpc.StatusCode.INVALID_ARGUMENT
    written = [audit.refused("ml", "llama", code, ("window",), t) for t in (0, 10, 20, 59, 60, 61)]
    assert written == [True, False, False, False, True, False]
    assert [r.fields["suppressed"] for r in caplog.records] == [0, 3]
    for i in range(1000):
        audit.refused("ml", f"so{i}", code, ("k" * 10_000,), 100.0 + i)
    assert len(audit._last) <= 100
    assert all(len(k) <= MAX_VALUE for r in caplog.records for k in r.fields["keys"])


def test_audit_bounds_the_lines_of_a_client_inventing_names(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="scaler.server.rpc")
    audit = RefusalAudit(interval=60.0, max_lines=5)
    code = grpc.StatusCode.INVALID_ARGUMENT
    written = sum(audit.refused("ml", f"so{i}", code, ("window",), 1.0 + i * 0.01) for i in range(50))
    assert written == 5
    assert audit.refused("ml", "later", code, ("window",), 62.0)
    assert caplog.records[-1].fields["suppressed_all"] == 45


# ---- fuzz ------------------------------------------------------------------------------------------------
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
_NAMES = [k.name for k in KEYS] + sorted(KEDA_OWNED_KEYS) + ["ttftP95FromEnv"]
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


_VALID_TEXT = {"prometheusAddress": "http://127.0.0.1:9/prefix", "namespace": "fuzz", "deploymentName": "llama-8b",
               "modelName": "meta-llama/Llama-3.1-8B", "policy": "reactive", "forecast": "none",
               "fleetModel": "alpha=0.015,beta=0.0003,gamma=0.00005,maxNumSeqs=256"}


def _in_range(key) -> st.SearchStrategy[str]:
    lo, hi = getattr(key.parse, "lo", None), getattr(key.parse, "hi", None)
    if lo is None:
        return st.sampled_from([_VALID_TEXT[key.name]] + ([str(key.default)] if key.default else []))
    if key.type == "int":
        return st.integers(lo, min(hi, 50)).map(str)
    return st.one_of(st.sampled_from([lo, hi]), st.floats(lo, hi)).map(repr)


_VALUES = st.one_of(
    _TEXT, st.sampled_from(["0", "-1", "1e-308", "1e308", "nan", "inf", "99999999999999999999", "0.0004",
                            "999999999h", "1ms", "", " ", "http://u:p@h:1/?query=up#x", 'x"} or vector(1) #']),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-2**70, 2**70).map(str),
    st.builds(lambda c, n: c * n, st.sampled_from(["9", "a", "\x00", "é"]), st.integers(1000, 30_000)))


@st.composite
def fuzz_metadata(draw):
    md = {}
    for key in KEYS:
        if key.name != "activationQuery" and draw(st.integers(0, 4)) == 0:
            md[key.name] = draw(_in_range(key))
    if float(md.get("maxStaleness", 60)) <= float(md.get("refreshInterval", 5)):
        md.pop("refreshInterval", None)
        md.pop("maxStaleness", None)
    if int(md.get("minReplicas", 0)) > int(md.get("maxReplicas", 10)):
        md.pop("minReplicas")
    # about half the cases stay valid; the others get 1-3 hostile keys or values
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        md[draw(st.one_of(st.sampled_from(_NAMES), _TEXT))] = draw(_VALUES)
    name = draw(st.sampled_from(["llama", "llama", "llama", "", "Bad_Name", "x" * 300, "é"]))
    ns = draw(st.sampled_from(["fuzz", "fuzz", "fuzz", "fuzz", "", "Bad NS", 'ml"} or vector(1) #']))
    return name, ns, md


@pytest.fixture(scope="module")
def fuzz_server():
    source = EverySource()
    server, channel, stub = start(source)
    try:
        yield server, stub
    finally:
        channel.close()
        server.stop(grace=1.0)


def _answer(stub, r):
    m = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=r, metricName=METRIC_NAME), timeout=DEADLINE)
    return m.metricValues[0].metricValue, stub.IsActive(r, timeout=DEADLINE).result


@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=fuzz_metadata())
def test_fuzzed_metadata_is_refused_naming_a_key_or_answered(fuzz_server, case) -> None:
    """Every call: INVALID_ARGUMENT naming a key (message <= MAX_MESSAGE), or an answer; never INTERNAL or a
    hang (every call has KEDA's 3 s deadline); no refresh fails in decide(); the neighbour's answer holds."""
    server, stub = fuzz_server
    good = ref(name="good", ns="ml", maxReplicas=8)
    baseline = _answer(stub, good)
    name, ns, md = case
    r = pb.ScaledObjectRef(name=name, namespace=ns, scalerMetadata=md)
    for call in (lambda: stub.GetMetricSpec(r, timeout=DEADLINE), lambda: stub.IsActive(r, timeout=DEADLINE),
                 lambda: stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=r, metricName=METRIC_NAME),
                                         timeout=DEADLINE)):
        try:
            call()
            event("answered")
        except grpc.RpcError as exc:
            details = exc.details() or ""
            event(exc.code().name)
            assert exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE), (exc.code(),
                                                                                                   details)
            assert len(details) <= MAX_MESSAGE
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                named = {truncate(k, MAX_VALUE) for k in md} | {k.name for k in KEYS} | {"name"}
                assert any(f"{k}=" in details for k in named), details
            else:   # only a cold cache may be unavailable here: the source answers every target
                assert "first refresh" in details, details
    assert _answer(stub, good) == baseline
    failed = [(t, t.last_error) for t in server.store.targets()
              if t.last_error is not None and t.last_error.kind in ("policy", "internal")]
    assert not failed, failed


def test_oversized_metadata_is_not_cached(served) -> None:
    server, stub, _ = served
    r = ref(caCert="x" * 70_000)
    for _ in range(2):
        _fails(lambda: stub.GetMetricSpec(r, timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT)
    assert not any(len(repr(tid)) > 65536 for tid in server.store._parsed)


ISSUE_11 = [
    ({"coldStart": "999999999h"}, "coldStart", "<= 4h"),
    ({"reactionLag": "999999999h"}, "reactionLag", "<= 1h"),
    ({"coldStart": "100000h"}, "coldStart", "<= 4h"),
    ({"window": "0.0004"}, "window", ">= 2s"),
    ({"window": "1e300"}, "window", "<= 24h"),
    ({"refreshInterval": "1ms"}, "refreshInterval", ">= 500ms"),
    ({"policy": "predictive", "capacityPerReplica": "1e-308"}, "capacityPerReplica", ">= 0.001"),
    ({"queuePerReplica": "1e-300", "runningPerReplica": "1e-300", "kvCacheTarget": "1e-300"}, "kvCacheTarget",
     ">= 0.01"),
    ({"minReplicas": "99999999999999999999", "maxReplicas": "99999999999999999999"}, "maxReplicas", "<= 150000"),
    ({"prometheusAddress": "http://127.0.0.1:9/api/v1/query?query=sum(up%7Bnamespace%3D%22secret%22%7D)&x="},
     "prometheusAddress", "no ?query"),
    ({"prometheusAddress": "http://user:pass@127.0.0.1:9"}, "prometheusAddress", "credentials"),
]


@pytest.mark.parametrize("md, key, bound", ISSUE_11, ids=[f"{c[1]}-{i}" for i, c in enumerate(ISSUE_11)])
def test_issue_11_metadata_is_refused_naming_key_and_bound(served, md, key, bound) -> None:
    _, stub, _ = served
    details = _fails(lambda: stub.GetMetricSpec(ref(name="attacker", **md), timeout=DEADLINE),
                     grpc.StatusCode.INVALID_ARGUMENT)
    assert f"{key}=" in details and bound in details and "pass@" not in details, details


def test_a_refused_server_url_is_reported_without_its_password() -> None:
    import argparse

    from scaler.server.cli import register, resolve

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(ValueError) as exc:
        resolve(parser.parse_args(["serve", "--prometheus-url", "http://u:s3cret@prom:9090"]), environ={})
    assert "--prometheus-url" in str(exc.value) and "credentials" in str(exc.value)
    assert "s3cret" not in str(exc.value)
