"""scaler.server.client: KEDA's calls as a typed client, against a real gRPC server on 127.0.0.1."""

import queue
import socket
import threading
import time

import grpc
import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import decide
from scaler.server import METRIC_NAME, ScalerServer, ServerSettings
from scaler.server.client import CallError, ExternalScalerClient, MetricSpec, ScaledObjectRef
from scaler.server.fake_source import ScriptedSource
from scaler.signals import Signals

T0 = 1_800_000_000.0
BUSY = Signals(observed_at=T0, pods_reporting=3, waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1,
               tpot_p95=0.05)
IDLE = Signals(observed_at=T0, pods_reporting=0)


def _server(source, cold_wait=0.8, clock=lambda: T0):
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, cold_wait=cold_wait,
                              defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    server = ScalerServer(settings, source_factory=lambda address: source, clock=clock)
    server.start()
    return server


@pytest.fixture
def served():
    source = ScriptedSource()
    server = _server(source)
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, ExternalScalerClient(channel), source
    finally:
        channel.close()
        server.stop(grace=1.0)


def test_the_three_calls_answer_the_policy_decision_as_plain_values(served) -> None:
    _, client, source = served
    source.set("ml", "llama", BUSY)
    ref = ScaledObjectRef("llama", "ml", {"ttftP95": "2.5"})
    want = decide(BUSY, None, parse_metadata({"ttftP95": "2.5"}, scaled_object="llama", namespace="ml",
                                             defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9")), T0)
    assert want.desired > 1     # a value the conversion could get wrong
    assert client.serving() is True
    assert client.get_metric_spec(ref) == (MetricSpec(METRIC_NAME, 1.0),)
    (value,) = client.get_metrics(ref, METRIC_NAME)
    assert value.name == METRIC_NAME and value.value == want.desired
    assert client.is_active(ref) is want.active is True


def test_a_refused_call_raises_call_error_with_the_code_and_the_details(served) -> None:
    _, client, _ = served
    bad = ScaledObjectRef("llama", "ml", {"ttftP95": "-1"})
    for call in (lambda: client.is_active(bad), lambda: client.get_metric_spec(bad),
                 lambda: client.get_metrics(bad, METRIC_NAME), lambda: list(client.stream_is_active(bad))):
        with pytest.raises(CallError) as exc:
            call()
        assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "ttftP95='-1'" in exc.value.details
        assert str(exc.value).startswith(f"{exc.value.rpc}: INVALID_ARGUMENT")
    with pytest.raises(CallError, match="GetMetrics: INVALID_ARGUMENT") as exc:
        client.get_metrics(ScaledObjectRef("llama", "ml"), "queue-length")
    assert "metricName='queue-length'" in exc.value.details


def test_each_call_is_bounded_by_the_deadline() -> None:
    source = ScriptedSource(delay=3.0)       # the first refresh takes longer than the client waits
    source.set("ml", "llama", BUSY)
    server = _server(source, cold_wait=3.0)
    try:
        with grpc.insecure_channel(server.address) as channel:
            client = ExternalScalerClient(channel, deadline=0.3)
            t = time.monotonic()
            with pytest.raises(CallError) as exc:
                client.is_active(ScaledObjectRef("llama", "ml"))
            assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t < 2.0
    finally:
        server.stop(grace=0.5)
    with pytest.raises(ValueError, match="deadline must be > 0"):
        ExternalScalerClient(channel, deadline=0)


def test_stream_is_active_yields_bools_and_cancel_ends_it_quietly() -> None:
    source = ScriptedSource()
    clock = [T0]
    server = _server(source, clock=lambda: clock[0])
    source.set("ml", "llama", IDLE)
    got: queue.Queue[object] = queue.Queue()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stream = ExternalScalerClient(channel).stream_is_active(
                ScaledObjectRef("llama", "ml", {"scaleToZeroAfter": "0"}))

            def pump() -> None:
                try:
                    for active in stream:
                        got.put(active)
                    got.put("end")
                except CallError as exc:     # pragma: no cover - reported by the assertion below
                    got.put(exc)

            threading.Thread(target=pump, daemon=True).start()
            deadline = time.monotonic() + 3
            while server.servicer.open_streams == 0:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            server.refresher.refresh_due(T0)
            assert got.get(timeout=3) is False
            source.set("ml", "llama", Signals(observed_at=T0, pods_reporting=0, upstream_demand=3.0))
            clock[0] = T0 + 10
            server.refresher.refresh_due()
            assert got.get(timeout=3) is True
            stream.cancel()
            assert got.get(timeout=3) == "end"
    finally:
        server.stop(grace=0.5)


def test_serving_is_false_where_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert ExternalScalerClient(channel, deadline=0.5).serving() is False
