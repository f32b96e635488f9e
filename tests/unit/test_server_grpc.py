"""The servicer over a real gRPC server on 127.0.0.1, called as KEDA calls it, with a scripted source."""

import queue
import threading
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ServerDefaults, parse_metadata
from scaler.errors import SourceConnectionError
from scaler.policy import decide
from scaler.server import METRIC_NAME, ScalerServer, ServerSettings
from scaler.server.fake_source import ScriptedSource
from scaler.signals import Signals

T0 = 1_800_000_000.0
DEADLINE = 3.0  # KEDA's HPA path budget for the three calls
BUSY = Signals(observed_at=T0, pods_reporting=3, waiting=12, running=40, kv_cache_usage=0.9, ttft_p95=3.1,
               tpot_p95=0.05)
IDLE = Signals(observed_at=T0, pods_reporting=0)


class Clock:
    def __init__(self, t=None):
        self.t = t

    def __call__(self):
        return time.time() if self.t is None else self.t


def ref(name="llama", ns="ml", **md):
    return pb.ScaledObjectRef(name=name, namespace=ns, scalerMetadata={k: str(v) for k, v in md.items()})


def metrics_req(r, metric=METRIC_NAME):
    return pb.GetMetricsRequest(scaledObjectRef=r, metricName=metric)


def policy(signals, md=None, now=T0, state=None, name="llama", ns="ml"):
    cfg = parse_metadata(md or {}, scaled_object=name, namespace=ns,
                         defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    return decide(signals, state, cfg, now)


@pytest.fixture
def scaler(request):
    """(server, stub, source, clock); param: dict(background=bool, clock=float|None, cold_wait=..)."""
    opts = getattr(request, "param", {}) or {}
    source = ScriptedSource()
    clock = Clock(opts.get("clock"))
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, cold_wait=opts.get("cold_wait", 0.8),
                              defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    server = ScalerServer(settings, source_factory=lambda address: source, clock=clock,
                          background_refresh=opts.get("background", True))
    server.start()
    channel = grpc.insecure_channel(server.address)
    try:
        yield server, pb_grpc.ExternalScalerStub(channel), source, clock
    finally:
        channel.close()
        server.stop(grace=1.0)


def test_keda_poll_sequence_answers_the_policy_decision(scaler) -> None:
    server, stub, source, _ = scaler
    source.set("ml", "llama", BUSY)
    r = ref(maxReplicas=8)
    spec = stub.GetMetricSpec(r, timeout=DEADLINE)
    assert [(s.metricName, s.targetSize, s.targetSizeFloat) for s in spec.metricSpecs] == [(METRIC_NAME, 1, 1.0)]
    assert "/" not in METRIC_NAME and "%" not in METRIC_NAME
    values = stub.GetMetrics(metrics_req(r), timeout=DEADLINE).metricValues
    active = stub.IsActive(r, timeout=DEADLINE).result
    want = policy(BUSY, {"maxReplicas": "8"})
    assert want.desired == 4  # the scripted signals make a non-trivial answer
    assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in values] == [
        (METRIC_NAME, want.desired, float(want.desired))]
    assert active is want.active is True


def test_bad_metadata_is_invalid_argument_naming_every_key(scaler) -> None:
    _, stub, _, _ = scaler
    r = ref(minReplicas=5, maxReplicas=2, ttftP95=-1, colour="blue")
    for call in (lambda: stub.GetMetricSpec(r, timeout=DEADLINE), lambda: stub.IsActive(r, timeout=DEADLINE),
                 lambda: stub.GetMetrics(metrics_req(r), timeout=DEADLINE)):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for key in ("minReplicas='5'", "ttftP95='-1'", "colour='blue'"):
            assert key in exc.value.details()
    for stream in (stub.StreamIsActive(r), stub.StreamMetricSpec(r)):
        with pytest.raises(grpc.RpcError) as exc:
            next(stream)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "colour='blue'" in exc.value.details()


def test_unknown_metric_name_is_invalid_argument_but_keda_prefix_is_accepted(scaler) -> None:
    _, stub, source, _ = scaler
    source.set("ml", "llama", BUSY)
    assert stub.GetMetrics(metrics_req(ref(), "s0-" + METRIC_NAME), timeout=DEADLINE).metricValues[0].metricValue
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetMetrics(metrics_req(ref(), "queue-length"), timeout=DEADLINE)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "metricName='queue-length'" in exc.value.details()


@pytest.mark.parametrize("scaler", [{"cold_wait": 0.5}], indirect=True)
def test_cold_cache_waits_a_bounded_time_then_unavailable(scaler) -> None:
    _, stub, source, _ = scaler
    slow = threading.Event()
    source.hook = lambda configs: slow.wait(5)  # a slow Prometheus: the first refresh outlasts the cold wait
    source.set("ml", "llama", BUSY)
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetMetrics(metrics_req(ref()), timeout=DEADLINE)
    took = time.monotonic() - started
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE and "first refresh" in exc.value.details()
    assert 0.45 < took < 2.0  # the 0.5 s bound plus RPC overhead, well inside the 3 s deadline
    slow.set()
    # Once the slow refresh lands, answers come from the cache.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert stub.IsActive(ref(), timeout=DEADLINE).result is True
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.mark.parametrize("scaler", [{"background": False, "clock": T0}], indirect=True)
def test_fail_safe_last_good_until_max_staleness_then_unavailable(scaler) -> None:
    server, stub, source, clock = scaler
    md = {"maxStaleness": "60"}
    source.set("ml", "llama", BUSY)
    stub.GetMetricSpec(ref(**md), timeout=DEADLINE)  # registers the target
    server.refresher.refresh_due(T0)
    want = policy(BUSY, md)
    source.fail_all(SourceConnectionError("connection refused", source="prometheus"))
    for dt in (5, 30, 59):
        clock.t = T0 + dt
        server.refresher.refresh_due()
        assert stub.GetMetrics(metrics_req(ref(**md)), timeout=DEADLINE).metricValues[0].metricValue == want.desired
        assert stub.IsActive(ref(**md), timeout=DEADLINE).result is True
    clock.t = T0 + 61
    server.refresher.refresh_due()
    for call in (lambda: stub.GetMetrics(metrics_req(ref(**md)), timeout=DEADLINE),
                 lambda: stub.IsActive(ref(**md), timeout=DEADLINE)):
        with pytest.raises(grpc.RpcError) as exc:
            call()
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "maxStaleness" in exc.value.details() and "connection" in exc.value.details()


class StreamReader:
    """Reads a server stream on one thread; ``next(seconds)`` is the next message or None if none came."""

    END = object()

    def __init__(self, stream):
        self.stream = stream
        self._q = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        try:
            for message in self.stream:
                self._q.put(message)
            self._q.put(self.END)
        except grpc.RpcError as exc:
            self._q.put(exc)

    def next(self, seconds):
        try:
            return self._q.get(timeout=seconds)
        except queue.Empty:
            return None


@pytest.mark.parametrize("scaler", [{"background": False, "clock": T0}], indirect=True)
def test_stream_is_active_sends_state_then_wake_up_and_stays_open(scaler) -> None:
    server, stub, source, clock = scaler
    md = {"scaleToZeroAfter": "0"}
    source.set("ml", "llama", IDLE)
    stream = stub.StreamIsActive(ref(**md))
    reader = StreamReader(stream)
    deadline = time.monotonic() + 3
    while server.servicer.open_streams == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    server.refresher.refresh_due(T0)
    assert policy(IDLE, md).active is False
    first = reader.next(3)
    assert first is not None and first.result is False  # the current state when opened
    clock.t = T0 + 5
    server.refresher.refresh_due()  # still idle: nothing is sent
    assert reader.next(0.3) is None
    source.set("ml", "llama", Signals(observed_at=T0, pods_reporting=0, upstream_demand=3.0))
    clock.t = T0 + 10
    server.refresher.refresh_due()  # demand: inactive -> active
    woke = reader.next(3)
    assert woke is not None and woke.result is True
    # Stays open: no end-of-stream while nothing changes.
    clock.t = T0 + 15
    server.refresher.refresh_due()
    assert reader.next(0.3) is None
    assert stream.is_active() and server.servicer.open_streams == 1
    stream.cancel()
    deadline = time.monotonic() + 3
    while server.servicer.open_streams:
        assert time.monotonic() < deadline, "stream not released after cancel"
        time.sleep(0.01)
    target = server.store.targets()[0]
    assert target.streams == 0 and not target._listeners


def test_stream_metric_spec_sends_at_once_and_stays_open(scaler) -> None:
    server, stub, _, _ = scaler
    stream = stub.StreamMetricSpec(ref())
    reader = StreamReader(stream)
    first = reader.next(3)
    assert first.metricSpecs[0].metricName == METRIC_NAME and first.metricSpecs[0].targetSizeFloat == 1.0
    assert reader.next(0.3) is None and stream.is_active()
    stream.cancel()


def test_health_reflection_and_metrics_endpoint(scaler) -> None:
    server, stub, source, _ = scaler
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "externalscaler.ExternalScaler"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=DEADLINE).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                            timeout=DEADLINE))
    names = {s.name for s in answer.list_services_response.service}
    assert {"externalscaler.ExternalScaler", "grpc.health.v1.Health"} <= names
    channel.close()
    source.set("ml", "llama", BUSY)
    stub.GetMetrics(metrics_req(ref()), timeout=DEADLINE)
    with pytest.raises(grpc.RpcError):
        stub.IsActive(ref(maxReplicas="x"), timeout=DEADLINE)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'vllm_scaler_desired_replicas{namespace="ml",scaledobject="llama"' in text
    assert 'vllm_scaler_rpc_duration_seconds_count{code="OK",method="GetMetrics"} 1.0' in text
    assert 'vllm_scaler_rpc_duration_seconds_count{code="INVALID_ARGUMENT",method="IsActive"} 1.0' in text


def test_graceful_shutdown_health_not_serving_streams_closed_inflight_finished() -> None:
    source = ScriptedSource({("ml", "llama"): BUSY})
    fetching, proceed = threading.Event(), threading.Event()

    def hold_llama(configs):   # the first refresh of ml/llama waits until shutdown has begun
        if any(c.deployment == "llama" for c in configs):
            fetching.set()
            proceed.wait(5)

    source.hook = hold_llama
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=None, cold_wait=2.0,
                              defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"))
    server = ScalerServer(settings, source_factory=lambda address: source).start()
    channel = grpc.insecure_channel(server.address)
    stub = pb_grpc.ExternalScalerStub(channel)
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service="externalscaler.ExternalScaler"))
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    reader = StreamReader(stub.StreamIsActive(ref(name="other")))
    # An RPC in flight when shutdown starts: a cold target whose first refresh is under way.
    inflight = stub.GetMetrics.future(metrics_req(ref()), timeout=DEADLINE)
    assert fetching.wait(DEADLINE)
    stopper = threading.Thread(target=server.stop, kwargs={"grace": 2.0})
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    proceed.set()
    assert inflight.result().metricValues[0].metricValue == policy(BUSY).desired
    stopper.join(10)
    assert not stopper.is_alive()
    # The open stream ended (cleanly or by the server going away), it did not hang.
    end = reader.next(3)
    assert end is StreamReader.END or isinstance(end, grpc.RpcError)
    channel.close()


def start_busy(clock=time.time, **settings):
    """A started server without /metrics whose one source answers BUSY for ml/llama; (server, source)."""
    source = ScriptedSource({("ml", "llama"): BUSY})
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=None,
                              defaults=ServerDefaults(prometheus_url="http://127.0.0.1:9"), **settings)
    return ScalerServer(settings, source_factory=lambda address: source, clock=clock).start(), source


def test_max_concurrent_rpcs_bounds_work_open_streams_included() -> None:
    server, _ = start_busy(max_concurrent_rpcs=1)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            assert stub.GetMetricSpec(ref(), timeout=DEADLINE).metricSpecs
            stream = stub.StreamMetricSpec(ref())
            assert StreamReader(stream).next(3) is not None  # the stream holds the only slot
            with pytest.raises(grpc.RpcError) as exc:
                stub.GetMetricSpec(ref(), timeout=DEADLINE)
            assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            stream.cancel()
    finally:
        server.stop(grace=0.5)


def test_health_is_not_serving_while_the_refresh_is_hopelessly_behind() -> None:
    """A refresh stuck (here: a fetch that never returns) makes health NOT_SERVING, and SERVING once it recovers.

    A failing Prometheus does not: its targets are refreshed on time, with errors. Time is the server's injected
    clock, moved by the test; the background refresh and the health check read it, so nothing waits for real
    seconds to pass (only for the refresh thread and the health task to act).
    """
    fetching, release = threading.Event(), threading.Event()
    clock = Clock(T0)
    server, source = start_busy(health_interval=0.05, clock=clock)
    source.hook = lambda configs: (fetching.set(), release.wait(30))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            statuses = queue.Queue()

            def watch(service):
                try:
                    for r in health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=service)):
                        statuses.put((service, r.status))
                except grpc.RpcError:
                    pass

            for service in ("", "externalscaler.ExternalScaler"):
                threading.Thread(target=watch, args=(service,), daemon=True).start()
            md = {"refreshInterval": "1s", "maxStaleness": "2s"}
            stub.GetMetricSpec(ref(**md), timeout=DEADLINE)  # registers the target: its first fetch blocks
            target = server.store.targets()[0]
            refreshed = threading.Event()
            target.subscribe(refreshed.set)   # called when a refresh attempt of the target finished
            seen = {}

            def until(want):  # both services' latest status is `want`
                deadline = time.monotonic() + 15
                while len(seen) < 2 or any(s != want for s in seen.values()):
                    assert time.monotonic() < deadline, seen
                    try:
                        service, status = statuses.get(timeout=0.5)
                        seen[service] = status
                    except queue.Empty:
                        pass

            def refresh_lands(done):  # the background refresh (woken now) finishes one satisfying `done()`
                server.refresher.kick()
                deadline = time.monotonic() + 15
                while not done():
                    assert time.monotonic() < deadline, (target.good, target.last_error_at, clock.t)
                    refreshed.wait(0.5)
                    refreshed.clear()

            assert fetching.wait(15)   # the first refresh started at T0 (due again at T0 + 1) and is stuck
            clock.t = T0 + 3.5         # 2.5 s overdue: beyond maxStaleness (2 s)
            until(health_pb2.HealthCheckResponse.NOT_SERVING)
            assert server.serving is False
            release.set()  # the fetch returns: the refresh catches up
            source.hook = None
            refresh_lands(lambda: target.good is not None and target.good.at == clock.t)
            until(health_pb2.HealthCheckResponse.SERVING)
            assert stub.GetMetrics(metrics_req(ref(**md)), timeout=DEADLINE).metricValues[0].metricValue == \
                policy(BUSY, md).desired
            # A Prometheus that fails fast keeps the refresh on time: health stays SERVING.
            source.fail_all(SourceConnectionError("refused", source="scripted"))
            for _ in range(4):
                clock.t += 1.0
                refresh_lands(lambda: target.last_error_at == clock.t)
                assert server.refresher.lag(clock.t)[1] == 0
            assert server.serving is True and statuses.empty()
            # ... while one not refreshed for longer than maxStaleness turns it NOT_SERVING: the health check
            # reads this clock, so the four seconds above were really checked.
            server.refresher.stop()
            clock.t += 3.5   # 2.5 s past its next refresh
            until(health_pb2.HealthCheckResponse.NOT_SERVING)
    finally:
        release.set()
        server.stop(grace=0.5)
