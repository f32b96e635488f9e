"""The server end to end: real Prometheus (Debian's, on loopback) -> PrometheusSource -> decide -> real gRPC.

Series for several pods are generated here with known values (backfilled with
promtool, or scraped live from loopback /metrics). The expected answer is what
``scaler.policy.decide`` says for ``Signals`` built in this file from those
known values: the formula is never re-implemented here.
"""

from __future__ import annotations

import http.server
import queue
import threading
import time
import urllib.request

import grpc
import pytest

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import decide
from scaler.server import METRIC_NAME, ScalerServer, ServerSettings
from scaler.server.prometheus import PrometheusSourceFactory
from scaler.signals import Signals
from scaler.sources.promql import histogram_quantile
from scaler.testing.promserver import PrometheusServer
from simulations.exposition import PodMetrics, render_text

pytestmark = pytest.mark.integration

NS = "team-a"
T0 = 1_700_000_000.0
STEP = 15.0
FRAMES = 21                      # T0 .. T0 + 300 s
T_END = T0 + STEP * (FRAMES - 1)
DEADLINE = 3.0                   # KEDA's HPA budget for the three calls

# deployment -> per-pod (waiting, running, kv) at every frame, and the latency of every request it serves.
FLEETS = {
    # Queue-bound: 18 waiting over 3 pods, latency well under the SLO.
    "llama": dict(pods=[(4, 20, 0.5), (6, 20, 0.6), (8, 20, 0.7)], ttft=[(0.3, 19), (3.0, 1)],
                  itl=[(0.02, 8), (0.06, 2)]),
    # Latency-bound: TTFT of every request 3 s against a 2.5 s SLO.
    "mistral": dict(pods=[(0, 8, 0.3), (0, 8, 0.3)], ttft=[(3.0, 10)], itl=[(0.02, 10)]),
}


def frames():
    pods = {d: [PodMetrics.new(f"{d}-5d8f-x2k4{i}", NS, d) for i in range(len(f["pods"]))] for d, f in FLEETS.items()}
    for k in range(FRAMES):
        live = []
        for d, f in FLEETS.items():
            for m, (w, r, kv) in zip(pods[d], f["pods"]):
                m.waiting, m.running, m.kv_cache_usage = w, r, kv
                if k:
                    for x, n in f["ttft"]:
                        m.ttft.observe(x, n)
                    for x, n in f["itl"]:
                        m.itl.observe(x, n)
                    m.request_success_total["stop"] += sum(n for _, n in f["ttft"])
                live.append(m)
        yield T0 + STEP * k, live


def p95(edges, observations):
    """P95 of one frame's observations (every frame adds the same ones, so every window has this shape)."""
    from simulations.exposition import Histogram

    h = Histogram(edges)
    for x, n in observations:
        h.observe(x, n)
    return histogram_quantile(0.95, list(zip(h.edges, h.bucket_counts)) + [(float("inf"), h.count)])


def expected_signals(deployment: str, now: float) -> Signals:
    f = FLEETS[deployment]
    m = PodMetrics.new("x", NS, deployment)
    n = len(f["pods"])
    return Signals(observed_at=now, pods_reporting=n, waiting=float(sum(p[0] for p in f["pods"])),
                   running=float(sum(p[1] for p in f["pods"])), kv_cache_usage=sum(p[2] for p in f["pods"]) / n,
                   ttft_p95=p95(m.ttft.edges, f["ttft"]), tpot_p95=p95(m.itl.edges, f["itl"]),
                   completion_rate=n * sum(c for _, c in f["ttft"]) / STEP)


def ref(name, **md):
    return pb.ScaledObjectRef(name=name, namespace=NS, scalerMetadata={"window": "60", **md})


def start_server(prom_url, clock=time.time, **settings):
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0,
                              defaults=ServerDefaults(prometheus_url=prom_url), **settings)
    factory = PrometheusSourceFactory(default_url=prom_url, timeout=2.0)
    return ScalerServer(settings, source_factory=factory, clock=clock).start()


def test_keda_calls_answer_what_the_policy_says_for_the_loaded_series(backfilled_prometheus) -> None:
    prom = backfilled_prometheus(frames())
    server = start_server(prom.url, clock=lambda: T_END, cold_wait=2.5)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            seen = {}
            for deployment in ("llama", "mistral", "gemma"):  # gemma: no pods at all (at zero)
                r = ref(deployment, policy="reactive")  # fleets built for the reactive formula's terms
                spec = stub.GetMetricSpec(r, timeout=DEADLINE).metricSpecs[0]
                assert (spec.metricName, spec.targetSize, spec.targetSizeFloat) == (METRIC_NAME, 1, 1.0)
                value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=r, metricName=METRIC_NAME),
                                        timeout=DEADLINE).metricValues[0]
                active = stub.IsActive(r, timeout=DEADLINE).result
                seen[deployment] = (value.metricValue, value.metricValueFloat, active)
        cfg = lambda d: parse_metadata({"window": "60", "policy": "reactive"}, scaled_object=d, namespace=NS,  # noqa: E731
                                       defaults=ServerDefaults(prometheus_url=prom.url))
        llama = decide(expected_signals("llama", T_END), None, cfg("llama"), T_END)
        mistral = decide(expected_signals("mistral", T_END), None, cfg("mistral"), T_END)
        gemma = decide(Signals(observed_at=T_END, pods_reporting=0), None, cfg("gemma"), T_END)
        # The fleets were built so the answers differ and are driven by different terms.
        assert (llama.dominant, mistral.dominant) == ("queue", "latency")
        assert seen == {"llama": (llama.desired, float(llama.desired), llama.active),
                        "mistral": (mistral.desired, float(mistral.desired), mistral.active),
                        "gemma": (gemma.desired, float(gemma.desired), gemma.active)}
        # llama: 18 waiting / the default queuePerReplica 6.7 = 2.69 -> 3
        assert llama.desired == 3 and mistral.desired == 4 and seen["gemma"] == (0, 0.0, False)
        # /metrics shows the signals read and the terms, matching the loaded series.
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        want = expected_signals("mistral", T_END)
        assert _sample(text, "vllm_scaler_signal", scaledobject="mistral", signal="ttft_p95") == pytest.approx(
            want.ttft_p95)
        assert _sample(text, "vllm_scaler_policy_term_replicas", scaledobject="mistral", term="latency") == \
            pytest.approx(mistral.terms["latency"])
        assert _sample(text, "vllm_scaler_signal", scaledobject="llama", signal="waiting") == 18
    finally:
        server.stop(grace=1.0)


def _sample(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in /metrics")


class LivePods:
    """Each pod's /metrics (``render_text``) on its own loopback port, scraped every 0.5 s by a real Prometheus.

    ``set(pod, waiting=.., running=.., kv_cache_usage=..)`` changes what the next scrape sees.
    A context manager: everything it starts is stopped on exit.
    """

    def __init__(self, pods: list[tuple[str, str, str]], *, scrape_interval: float = 0.5):
        self.pods = {name: PodMetrics.new(name, ns, model) for name, ns, model in pods}
        self._lock = threading.Lock()
        self._servers = [self._serve(p) for p in self.pods.values()]
        targets = [(f"127.0.0.1:{s.server_address[1]}", {"namespace": p.namespace, "pod": p.pod})
                   for s, p in zip(self._servers, self.pods.values())]
        self.prometheus = PrometheusServer(scrape_targets=targets, scrape_interval=scrape_interval)

    def set(self, pod: str, **values) -> None:
        with self._lock:
            for k, v in values.items():
                setattr(self.pods[pod], k, v)

    def _serve(self, pod: PodMetrics) -> http.server.ThreadingHTTPServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                with owner._lock:
                    body = render_text([pod]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return srv

    def __enter__(self) -> LivePods:
        try:
            self.prometheus.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.prometheus.stop()
        for s in self._servers:
            s.shutdown()
            s.server_close()

    def __exit__(self, *exc) -> None:
        self.close()


class StreamReader:
    """Reads a gRPC server stream on one thread; ``next(seconds)`` is the next message, or None if none came."""

    END = object()

    def __init__(self, stream):
        self.stream = stream
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for message in self.stream:
                self._q.put(message)
            self._q.put(self.END)
        except grpc.RpcError as exc:
            self._q.put(exc)

    def next(self, seconds: float):
        try:
            return self._q.get(timeout=seconds)
        except queue.Empty:
            return None


def test_stream_is_active_sees_a_wake_up_from_live_series(prometheus_required) -> None:
    """Live: Prometheus scrapes a loopback /metrics; demand appears; the open stream gets `true`."""
    with LivePods([("qwen-6c4d-x2k4q", NS, "qwen")]) as pods:
        server = start_server(pods.prometheus.url, cold_wait=2.5)
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.ExternalScalerStub(channel)
                md = dict(window="5", refreshInterval="0.5", scaleToZeroAfter="0")
                reader = StreamReader(stub.StreamIsActive(ref("qwen", **md)))
                first = reader.next(15)
                assert first is not None and first.result is False  # idle pod, scale-to-zero at once
                pods.set("qwen-6c4d-x2k4q", waiting=3, running=1)
                woke = reader.next(15)
                assert woke is not None and woke.result is True
                # The stream stays open after the wake-up.
                assert reader.next(1.0) is None and server.servicer.open_streams == 1
                assert stub.IsActive(ref("qwen", **md), timeout=DEADLINE).result is True
                reader.stream.cancel()
        finally:
            server.stop(grace=1.0)


def test_predictive_target_is_served_with_demand_history_from_prometheus(backfilled_prometheus) -> None:
    """The enricher hook end to end: the demand-history reader runs against the real Prometheus before decide()."""
    from scaler.sources.history import DemandHistoryReader

    prom = backfilled_prometheus(frames())
    factory = PrometheusSourceFactory(default_url=prom.url, timeout=2.0)
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=None, cold_wait=2.5,
                              defaults=ServerDefaults(prometheus_url=prom.url))
    server = ScalerServer(settings, source_factory=factory, clock=lambda: T_END,
                          enrichers=[DemandHistoryReader(factory.client, timeout=2.0)]).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            r = ref("llama", policy="predictive")
            stub.GetMetricSpec(r, timeout=DEADLINE)
            value = stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=r, metricName=METRIC_NAME),
                                    timeout=DEADLINE).metricValues[0].metricValue
        (target,) = server.store.targets()
        assert target.error_counts == {}
        history = target.good.signals.demand_history
        assert history and all(rate > 0 for _, rate in history)  # the loaded fleet finishes requests every minute
        assert value == target.good.decision.desired >= 1
    finally:
        server.stop(grace=1.0)
