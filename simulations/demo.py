"""``vllm-scaler demo``: the whole loop, end to end, on loopback, in about a minute.

Nothing in the loop is mocked; every process and thread below is started and stopped here::

    traffic ramp -> RequestFleet (simulations.fleet: simulated vLLM pods, continuous batching)
                      | each pod's vLLM metrics (simulations.fleet.metrics.pod_metrics, rendered by
                      | simulations.exposition) on HTTP /metrics, one port per pod slot;
                      | the router's queue (requests held while no replica is ready) on one more port
                      v
                    Prometheus (Debian's `prometheus`, temporary config and TSDB: scaler.testing.promserver)
                      | PromQL, through a TCP gate the demo cuts to stage an outage
                      v
                    `vllm-scaler serve` (a subprocess, configured by VLLM_SCALER_* like deploy/base)
                      | gRPC as KEDA calls it: GetMetricSpec + GetMetrics + IsActive on every KEDA poll and every
                      | HPA sync (3 s deadline), and a StreamIsActive stream (external-push)
                      v
                    KEDA + HPA emulator (simulations.keda.KedaHpa) -> fleet.scale_to(spec.replicas)

The ScaledObject is deploy/examples/scaledobject-external-push (same triggers, behavior and fallback) with
its times compressed: the demo runs in real time, and every duration that is minutes in a cluster is seconds
here (:class:`Timing`), so a one-hour story takes a minute. Time-compression is the "accelerated clock": the
scaler, Prometheus and gRPC run on the wall clock as they do in production; only the constants shrink.

The story (seconds from the start of traffic, :func:`traffic_phases`):

======  ==========================================================================================
0-4     2 req/s on one warm replica
4-14    ramp to ~3 replicas' worth of traffic (``--peak``): scale-up while the queue is still short
14-26   plateau; 17-22: Prometheus is unreachable from the scaler (5 s, less than ``maxStaleness``)
26-30   ramp down to nothing: scale-down
30-46   idle: inactive after ``scaleToZeroAfter``, then KEDA's cooldown: zero replicas
46-54   a trickle at zero replicas: requests wait at the router; the scaler sees them through
        ``activationQuery`` and pushes ``true`` on StreamIsActive: KEDA scales 0 -> 1 at once, without
        waiting for its next poll
54-62   the woken replica serves what waited; the demo ends once it is drained (or at 62 s)
======  ==========================================================================================

:func:`check` turns the run into named pass/fail checks (``tests/integration/test_demo_loop.py`` asserts
them): woke through the stream; scaled up before the queue exploded (against the same arrivals on one fixed
replica, simulated offline); scaled down after the ramp; scaled to zero; the outage changed nothing for the
worse (no failed call, no scale-down, no deactivation, and the scaler did see the source fail).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import yaml

from simulations.podserver import TextHTTPServer, metrics_only

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "examples" / "scaledobject-external-push" / "scaledobject.yaml"

NAMESPACE = "demo"
DEPLOYMENT = "llama-3-8b"
MODEL = "llama-3-8b"
ROUTER_METRIC = "demo_router_pending_requests"


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Timing:
    """Every duration of the loop, compressed (cluster value in the comment). Seconds."""

    scrape_interval: float = 0.5     # PodMonitor interval: 5 s
    refresh_interval: float = 0.5    # refreshInterval: 5 s
    window: float = 4.0              # window: 60 s
    max_staleness: float = 8.0       # maxStaleness: 60 s
    scale_to_zero_after: float = 3.0  # scaleToZeroAfter: 300 s
    polling_interval: int = 3        # pollingInterval: 15 s
    hpa_sync_period: float = 1.0     # the HPA's sync: 15 s
    cooldown_period: int = 4         # cooldownPeriod: 600 s
    initial_cooldown: int = 10       # initialCooldownPeriod: (unset in the example)
    scale_down_window: int = 6       # scaleDown.stabilizationWindowSeconds: 300 s
    cold_start: float = 2.0          # pod created -> Ready: 180 s
    tick: float = 0.1                # how often the demo advances the fleet and the emulator


@dataclass(frozen=True)
class Phase:
    """Traffic from ``start`` to ``end`` (seconds from the start of traffic), rate linear between the ends."""

    name: str
    start: float
    end: float
    rate_from: float
    rate_to: float

    def rate(self, t: float) -> float:
        if self.end == self.start:
            return self.rate_from
        return self.rate_from + (self.rate_to - self.rate_from) * (t - self.start) / (self.end - self.start)


def traffic_phases(peak: float = 12.0) -> tuple[Phase, ...]:
    return (
        Phase("warm", 0, 4, 2, 2),
        Phase("ramp-up", 4, 14, 2, peak),
        Phase("plateau", 14, 26, peak, peak),
        Phase("ramp-down", 26, 30, peak, 0),
        Phase("idle", 30, 46, 0, 0),
        Phase("trickle", 46, 54, 1, 1),
        Phase("drain", 54, 62, 0, 0),
    )


OUTAGE = (17.0, 22.0)   # Prometheus unreachable from the scaler (seconds from the start of traffic)


def demo_model():
    """A small replica so that a few req/s need several: saturates near 5 req/s (see the module docstring).

    Same iteration-time model as :class:`simulations.fleet.ModelParams`, with ``max_num_seqs = 16``
    and a slower decode, i.e. a smaller GPU; prompts of ~200 and outputs of ~48 tokens (:func:`arrivals`).
    """
    from simulations.fleet import ModelParams

    return ModelParams(alpha=0.02, beta=0.002, gamma=0.0001, max_num_seqs=16, kv_tokens=100_000,
                       name="demo replica (Llama-3.1-8B-shaped, max_num_seqs 16, slower decode)")


def arrivals(phases: Sequence[Phase], start: float, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson arrivals with the phases' piecewise-linear rate (thinning), and token sizes.

    Returns (unix arrival times, prompt tokens, output tokens).
    """
    rng = np.random.default_rng(seed)
    times: list[float] = []
    for ph in phases:
        peak = max(ph.rate_from, ph.rate_to)
        if peak <= 0:
            continue
        t = ph.start
        while True:
            t += rng.exponential(1.0 / peak)
            if t >= ph.end:
                break
            if rng.random() * peak <= ph.rate(t):
                times.append(t)
    n = len(times)
    prompt = np.clip(rng.lognormal(math.log(200), 0.4, n), 16, 2000).astype(np.int64)
    output = np.clip(rng.lognormal(math.log(48), 0.3, n), 4, 256).astype(np.int64)
    return start + np.asarray(times, dtype=float), prompt, output


def scaled_object(timing: Timing, policy: str = "reactive") -> dict[str, Any]:
    """deploy/examples/scaledobject-external-push, times compressed, TLS removed, the demo's metadata."""
    so = yaml.safe_load(EXAMPLE.read_text())
    spec = so["spec"]
    so["metadata"]["namespace"] = NAMESPACE
    spec["pollingInterval"] = timing.polling_interval
    spec["cooldownPeriod"] = timing.cooldown_period
    # A new ScaledObject on a Deployment with no traffic yet would be scaled to zero at once: give it time.
    spec["initialCooldownPeriod"] = timing.initial_cooldown
    spec["maxReplicaCount"] = 8
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    behavior["scaleUp"]["policies"] = [{"type": "Pods", "value": 4, "periodSeconds": 1}]
    behavior["scaleDown"]["stabilizationWindowSeconds"] = timing.scale_down_window
    behavior["scaleDown"]["policies"] = [{"type": "Pods", "value": 1, "periodSeconds": 1}]
    (trigger,) = spec["triggers"]
    trigger.pop("authenticationRef", None)     # the demo's gRPC is plaintext on loopback
    md = trigger["metadata"]
    md.update({
        "policy": policy,
        "maxReplicas": "8",
        "queuePerReplica": "4",
        "runningPerReplica": "8",
        "ttftP95": "1.0",
        "tpotP95": "0.1",
        "refreshInterval": f"{timing.refresh_interval}s",
        "window": f"{timing.window}s",
        "maxStaleness": f"{timing.max_staleness}s",
        "scaleToZeroAfter": f"{timing.scale_to_zero_after}s",
        "coldStart": f"{timing.cold_start}s",
        "reactionLag": f"{timing.polling_interval}s",
        # At zero replicas vLLM exports nothing: demand is read upstream, at the router.
        "activationQuery": f'sum({ROUTER_METRIC}{{namespace="{NAMESPACE}"}})',
    })
    if policy == "reactive":
        for key in ("reactionLag", "targetUtilization", "forecast"):
            md.pop(key, None)
    return so


# --------------------------------------------------------------------------------------- simulated pods
class PodExporter:
    """Each simulated pod's vLLM exposition, in a fixed set of slots (one scrape port each).

    The metrics themselves come from :func:`simulations.fleet.metrics.pod_metrics` (cumulative histograms
    rebuilt from the requests each pod served, current gauges). What this adds is the slot: Prometheus'
    scrape targets are fixed when it starts, so a pod takes a free slot when vLLM starts in it (Ready) and
    frees it when it is gone; an empty slot serves an empty body, so the gone pod's series turn stale at the
    next scrape, as when Kubernetes' service discovery drops a deleted pod.
    """

    def __init__(self, fleet, slots: int):
        self.fleet = fleet
        self.slots: list[str | None] = [None] * slots      # pod name per slot
        self.lock = threading.Lock()
        self.texts: list[str] = [""] * slots
        self.by_pod: dict[str, str] = {}

    def update(self, now: float) -> None:
        from simulations.exposition import render_text
        from simulations.fleet.metrics import pod_metrics

        pods = {pm.pod: pm for pm in pod_metrics(self.fleet, now, namespace=NAMESPACE, model_name=MODEL)}
        for i, name in enumerate(self.slots):
            if name is not None and name not in pods:
                self.slots[i] = None
        for name in pods:
            if name not in self.slots:
                self.slots[self.slots.index(None)] = name    # ValueError: more pods than slots (maxReplicas)
        by_pod = {name: render_text([pm]) for name, pm in pods.items()}
        texts = [by_pod[name] if name is not None else "" for name in self.slots]
        with self.lock:
            self.texts, self.by_pod = texts, by_pod

    def text(self, slot: int) -> str:
        with self.lock:
            return self.texts[slot]

    def text_of_pod(self, name: str) -> str:
        """The exposition of simulated pod ``name`` (empty when vLLM does not run in it)."""
        with self.lock:
            return self.by_pod.get(name, "")


def metrics_port(body: Callable[[], str]) -> TextHTTPServer:
    """One HTTP server on 127.0.0.1 answering GET /metrics with ``body()`` (a pod slot, or the router)."""
    return TextHTTPServer(metrics_only(body), name="metrics", poll_interval=0.1)


# ------------------------------------------------------------------------------------------------ outage
class TcpGate:
    """A TCP forwarder 127.0.0.1:port -> upstream; :meth:`cut` refuses and drops connections (the outage).

    The scaler is pointed at the gate, never at Prometheus itself, so an outage is what a scaler sees when
    Prometheus is down: connection refused, open connections reset. Prometheus keeps scraping meanwhile.
    """

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.open = True
        self.stopped = threading.Event()
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, name="tcp-gate", daemon=True)
        self.thread.start()

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        s.settimeout(0.1)
        return s

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                if not self.open:
                    client.close()
                    continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True, name="tcp-gate-pump").start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        for s in (a, b):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, b if s is a else a)
        try:
            while not self.stopped.is_set():
                for key, _ in sel.select(timeout=0.1):
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    if not data:
                        return
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
        except OSError:
            return
        finally:
            sel.close()
            with self.lock:
                self.conns -= {a, b}
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Refuse new connections (the listener closes) and reset the open ones."""
        with self.lock:
            self.open = False
            conns, self.conns = list(self.conns), set()
            self.listener.close()
        for s in conns:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        with self.lock:
            self.listener = self._listen(self.port)
            self.open = True

    def close(self) -> None:
        self.stopped.set()
        self.cut()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------------------- the scaler
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScalerProcess:
    """`vllm-scaler serve` as a subprocess (``python -m scaler serve``), configured through VLLM_SCALER_*."""

    def __init__(self, prometheus_url: str, log_path: Path):
        self.grpc_port, self.metrics_port = free_port(), free_port()
        env = {**os.environ,
               "VLLM_SCALER_HOST": "127.0.0.1", "VLLM_SCALER_GRPC_PORT": str(self.grpc_port),
               "VLLM_SCALER_METRICS_PORT": str(self.metrics_port), "VLLM_SCALER_PROMETHEUS_URL": prometheus_url,
               "VLLM_SCALER_PROMETHEUS_TIMEOUT": "1s", "VLLM_SCALER_ALLOW_ACTIVATION_QUERY": "true",
               "VLLM_SCALER_LOG_FORMAT": "text", "VLLM_SCALER_GRACE_PERIOD": "1s",
               # No Kubernetes here: the cold start is the trigger's coldStart key (the simulated one).
               "VLLM_SCALER_COLD_START_SOURCE": "none",
               "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "scaler", "serve"], env=env, cwd=REPO,
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.address = f"127.0.0.1:{self.grpc_port}"

    def wait_serving(self, timeout: float = 20) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise RuntimeError(f"vllm-scaler serve did not become SERVING in {timeout} s; log:\n{self.log_tail()}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            return r.read().decode()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


class GrpcTrigger:
    """A ``type: external`` trigger as KEDA runs it: the three calls on a shared channel, 3 s deadline each.

    Implements :class:`simulations.keda.Trigger`; a failed call raises :class:`scaler.errors.SourceError`
    (what KEDA counts as a scaler error). Every call is recorded in ``calls`` (time, rpc, value or error).
    """

    metric_type = "AverageValue"
    DEADLINE = 3.0

    def __init__(self, channel, ref, clock: Callable[[], float]):
        from scaler._proto import externalscaler_pb2 as pb
        from scaler._proto import externalscaler_pb2_grpc as pbg

        self.pb = pb
        self.stub = pbg.ExternalScalerStub(channel)
        self.ref = ref
        self.clock = clock
        self.calls: list[tuple[float, str, Any]] = []
        self.last_metric: float | None = None
        self.last_active: bool | None = None
        self._metric_name = ""

    def _call(self, rpc: str, request) -> Any:
        import grpc

        from scaler.errors import SourceError

        try:
            return getattr(self.stub, rpc)(request, timeout=self.DEADLINE)
        except grpc.RpcError as exc:
            self.calls.append((self.clock(), rpc, f"error {exc.code().name}"))
            raise SourceError(f"{rpc}: {exc.code().name}: {exc.details()}", source="grpc") from None

    def target(self) -> float:
        spec = self._call("GetMetricSpec", self.ref).metricSpecs[0]
        self._metric_name = spec.metricName
        return spec.targetSizeFloat if spec.targetSizeFloat > 0 else float(spec.targetSize)

    def metric(self, now: float) -> float:
        req = self.pb.GetMetricsRequest(scaledObjectRef=self.ref, metricName=self._metric_name)
        values = self._call("GetMetrics", req).metricValues
        total = sum(v.metricValueFloat if v.metricValueFloat > 0 else float(v.metricValue) for v in values)
        self.calls.append((self.clock(), "GetMetrics", total))
        self.last_metric = total
        return total

    def is_active(self, now: float) -> bool:
        result = self._call("IsActive", self.ref).result
        self.calls.append((self.clock(), "IsActive", result))
        self.last_active = result
        return result


class PushListener:
    """KEDA's side of ``StreamIsActive``: a thread that queues the time of every ``true`` received."""

    def __init__(self, channel, ref, clock: Callable[[], float]):
        from scaler._proto import externalscaler_pb2_grpc as pbg

        self.clock = clock
        self.trues: "queue.Queue[float]" = queue.Queue()
        self.received: list[tuple[float, bool]] = []
        self._call = pbg.ExternalScalerStub(channel).StreamIsActive(ref)
        self.thread = threading.Thread(target=self._run, name="stream-is-active", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import grpc

        try:
            for msg in self._call:
                now = self.clock()
                self.received.append((now, msg.result))
                if msg.result:
                    self.trues.put(now)
        except grpc.RpcError:
            pass   # cancelled at the end of the demo (or the server went away)

    def close(self) -> None:
        self._call.cancel()
        self.thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class Tick:
    t: float                 # seconds from the start of traffic
    phase: str
    rate: float              # offered req/s
    replicas: int            # spec.replicas after KEDA/HPA
    ready: int
    waiting: int             # queued in the pods
    running: int
    router: int              # held at the router (no ready replica)
    desired: float | None    # last GetMetrics answer
    active: bool | None      # last IsActive answer
    outage: bool


@dataclass
class DemoResult:
    timing: Timing
    start: float                                  # unix time of t = 0
    ticks: list[Tick]
    events: list[tuple[float, str, int, int, str]]  # (t, source, from, to, reason), t from the start
    calls: list[tuple[float, str, Any]]             # (t, rpc, value or "error CODE")
    pushes: list[tuple[float, bool]]                # StreamIsActive messages (t, result)
    outage: tuple[float, float]
    first_arrival: float
    counterfactual_peak_waiting: int               # same arrivals, one fixed replica
    source_errors: float                           # vllm_scaler_source_errors_total at the end
    router_peak_after_zero: float | None           # what Prometheus saw of the router queue (trickle phase)
    scaler_exit: int | None
    requests: int
    ttft_ok: float                                  # fraction of requests with TTFT within the SLO
    slo_ttft: float
    gpu_seconds: float


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run(timing: Timing = Timing(), *, policy: str = "reactive", peak: float = 12.0, seed: int = 7,
        workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the loop once (about a minute) and return what happened. Raises RuntimeError when a part is missing."""
    import grpc

    from scaler._proto import externalscaler_pb2 as pb
    from scaler.testing.promserver import PrometheusServer, prometheus_available
    from simulations.fleet import ColdStartModel, RequestFleet
    from simulations.keda import KedaHpa, scaled_object_from_yaml

    reason = prometheus_available()
    if reason:
        raise RuntimeError(reason)
    say = progress or (lambda s: None)
    phases = traffic_phases(peak)
    so = scaled_object(timing, policy)
    spec = dataclasses.replace(scaled_object_from_yaml(so), hpa_sync_period=timing.hpa_sync_period)
    (trigger_doc,) = so["spec"]["triggers"]
    slo_ttft = float(trigger_doc["metadata"]["ttftP95"])
    slots = spec.max_replica_count + 2
    work = Path(workdir or tempfile.mkdtemp(prefix="vllm-scaler-demo-"))
    work.mkdir(parents=True, exist_ok=True)

    cleanup: list[Callable[[], Any]] = []
    try:
        # Pods are created lazily by the fleet; their arrivals are fixed now, starting a few seconds ahead.
        lead = 4.0
        start = time.time() + lead
        arr, prompt, output = arrivals(phases, start, seed)
        model = demo_model()
        fleet = RequestFleet(arr, prompt, output, params=model,
                             cold_start=ColdStartModel.single(timing.cold_start), start=time.time(),
                             initial_replicas=1, seed=seed, request_timeout=30.0, deployment=DEPLOYMENT)
        exporter = PodExporter(fleet, slots)
        ports = [metrics_port(lambda i=i: exporter.text(i)) for i in range(slots)]
        router_text = {"v": ""}
        ports.append(metrics_port(lambda: router_text["v"]))
        cleanup += [p.close for p in ports]

        say(f"starting Prometheus (scrapes {len(ports)} ports every {timing.scrape_interval} s)")
        prom = PrometheusServer(scrape_targets=[(f"127.0.0.1:{p.port}", {}) for p in ports],
                                scrape_interval=timing.scrape_interval, tsdb_dir=work / "tsdb")
        prom.start()
        cleanup.append(prom.stop)
        gate = TcpGate(prom.port)
        cleanup.append(gate.close)

        say("starting vllm-scaler serve")
        scaler = ScalerProcess(f"http://127.0.0.1:{gate.port}", work / "scaler.log")
        scaler_exit: list[int | None] = [None]
        cleanup.append(lambda: scaler_exit.__setitem__(0, scaler.stop()))
        scaler.wait_serving()

        channel = grpc.insecure_channel(scaler.address)
        cleanup.append(channel.close)
        ref = pb.ScaledObjectRef(name=so["metadata"]["name"], namespace=NAMESPACE,
                                 scalerMetadata=trigger_doc["metadata"])
        clock = lambda: time.time() - start  # noqa: E731
        trig = GrpcTrigger(channel, ref, clock)
        push = PushListener(channel, ref, clock)
        cleanup.append(push.close)
        keda = KedaHpa(spec, [trig], start=time.time(), replicas=1)

        end_t = phases[-1].end
        ticks: list[Tick] = []
        outage_state = False
        applied = 1
        say("traffic starts in %.0f s; the story takes about a minute" % lead)
        while True:
            now = time.time()
            t = now - start
            want_outage = OUTAGE[0] <= t < OUTAGE[1]
            if want_outage != outage_state:
                (gate.cut if want_outage else gate.restore)()
                outage_state = want_outage
                say(f"t={t:5.1f}s Prometheus {'unreachable' if want_outage else 'back'}")
            fleet.advance_to(now)
            while not push.trues.empty():
                push.trues.get()
                if spec.push:
                    keda.push_active(now)
            replicas = keda.step(now, status_replicas=fleet.status_replicas(), ready_replicas=fleet.ready_replicas())
            if replicas != applied:
                say(f"t={t:5.1f}s replicas {applied} -> {replicas} ({keda.events[-1].source}: "
                    f"{keda.events[-1].reason})")
                fleet.scale_to(replicas, now)
                applied = replicas
            exporter.update(now)
            router_text["v"] = (f"# TYPE {ROUTER_METRIC} gauge\n"
                                f'{ROUTER_METRIC}{{namespace="{NAMESPACE}",deployment="{DEPLOYMENT}"}} '
                                f"{len(fleet.gateway)}\n")
            states = fleet.pod_states()
            phase = next((p for p in phases if p.start <= t < p.end), phases[-1])
            ticks.append(Tick(t=t, phase=phase.name, rate=max(0.0, phase.rate(t)) if t >= 0 else 0.0,
                              replicas=replicas, ready=fleet.ready_replicas(),
                              waiting=sum(w for _, w, _, _ in states), running=sum(r for _, _, r, _ in states),
                              router=len(fleet.gateway), desired=trig.last_metric, active=trig.last_active,
                              outage=outage_state))
            if (t > phases[-2].end and fleet.ready_replicas() >= 1 and not fleet.gateway
                    and ticks[-1].waiting + ticks[-1].running == 0):
                break   # woken, and everything that waited has been served
            if t >= end_t:
                break
            time.sleep(max(0.0, timing.tick - (time.time() - now)))

        try:
            metrics = scaler.metrics_text()
        except OSError:
            metrics = ""
        router_peak = _query_scalar(prom.url, f"max_over_time(sum({ROUTER_METRIC}{{namespace=\"{NAMESPACE}\"}})"
                                              f"[{max(1, int(t - phases[-3].end + 2))}s:500ms])")
        source_errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                            if line.startswith("vllm_scaler_source_errors_total"))
        counterfactual = _counterfactual_peak_waiting(arr, prompt, output, model, fleet.start, start + t)
        out = fleet.outcome(start + t, slo_ttft, 1.0)
        result = DemoResult(
            timing=timing, start=start, ticks=ticks,
            events=[(e.t - start, e.source, e.from_replicas, e.to_replicas, e.reason) for e in keda.events],
            calls=list(trig.calls), pushes=list(push.received), outage=OUTAGE,
            first_arrival=float(arr[0] - start) if len(arr) else math.nan,
            counterfactual_peak_waiting=counterfactual, source_errors=source_errors, scaler_exit=None,
            router_peak_after_zero=router_peak, requests=len(arr),
            ttft_ok=float(out.ttft_ok) / max(1.0, float(out.requests)), slo_ttft=slo_ttft,
            gpu_seconds=fleet.gpu_seconds(start + t))
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:  # keep cleaning up the rest; say what failed
                print(f"demo cleanup: {exc!r}", file=sys.stderr)
    result.scaler_exit = scaler_exit[0]
    return result


def _query_scalar(prom_url: str, promql: str) -> float | None:
    """One instant query straight to Prometheus (not through the gate): a scalar, or None."""
    url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            data = json.loads(r.read())
        return float(data["data"]["result"][0]["value"][1])
    except (OSError, KeyError, IndexError, ValueError):
        return None


def _counterfactual_peak_waiting(arr, prompt, output, model, fleet_start: float, end: float) -> int:
    """Peak queue of the same arrivals on one replica that is always there (no scaler), simulated offline."""
    from simulations.fleet import ColdStartModel, RequestFleet

    fixed = RequestFleet(arr, prompt, output, params=model, cold_start=ColdStartModel.single(0.0),
                         start=fleet_start, initial_replicas=1, request_timeout=1e9, deployment=DEPLOYMENT)
    peak = 0
    for t in np.arange(fleet_start, end, 0.1):
        fixed.advance_to(float(t))
        peak = max(peak, sum(w for _, w, _, _ in fixed.pod_states()))
    return peak


# --------------------------------------------------------------------------------------------- checks
def _event(e: tuple[float, str, int, int, str] | None) -> str:
    return "none" if e is None else f"t={e[0]:.1f}s {e[1]} {e[2]} -> {e[3]} ({e[4]})"


def check(result: DemoResult) -> list[Check]:
    """The story's claims, each as a named pass/fail with the figures behind it."""
    checks: list[Check] = []
    ev = result.events
    ticks = result.ticks

    wake = next((e for e in ev if e[2] == 0 and e[3] >= 1), None)
    trickle_start = next(p for p in traffic_phases() if p.name == "trickle").start
    actives = [c[2] for c in result.calls if c[0] >= trickle_start and c[1] == "IsActive"]
    checks.append(Check(
        "woke_through_stream_is_active",
        wake is not None and "StreamIsActive" in wake[4],
        f"first 0->N: {_event(wake)}; trickle from t={trickle_start:.0f}s; Prometheus saw up to "
        f"{result.router_peak_after_zero} requests waiting at the router; IsActive answers since: "
        f"{actives[:8]}; StreamIsActive messages: {[(round(t, 1), r) for t, r in result.pushes[:6]]}"))

    peak_replicas = max((k.replicas for k in ticks), default=0)
    peak_waiting = max((k.waiting + k.router for k in ticks if k.phase in ("ramp-up", "plateau")), default=0)
    cf = result.counterfactual_peak_waiting
    checks.append(Check(
        "scaled_up_before_the_queue_exploded",
        peak_replicas >= 3 and peak_waiting * 4 <= max(cf, 1),
        f"peak replicas {peak_replicas}; peak queue {peak_waiting} (pods + router) vs {cf} on one fixed "
        f"replica with the same arrivals"))

    ramp_down = next(p for p in traffic_phases() if p.name == "ramp-down").start
    downs = [e for e in ev if e[0] >= ramp_down and e[3] < e[2] and e[3] > 0]
    checks.append(Check(
        "scaled_down_after_the_ramp",
        bool(downs),
        f"scale-downs after t={ramp_down:.0f}s: {[(round(e[0], 1), e[2], e[3]) for e in downs]}"))

    to_zero = next((e for e in ev if e[0] >= ramp_down and e[3] == 0), None)
    trickle = next(p for p in traffic_phases() if p.name == "trickle").start
    at_trickle = next((k for k in ticks if k.t >= trickle), None)
    checks.append(Check(
        "scaled_to_zero",
        to_zero is not None and at_trickle is not None and at_trickle.replicas == 0,
        f"to zero: {_event(to_zero)}; replicas when the trickle starts (t={trickle:.0f}s): "
        f"{None if at_trickle is None else at_trickle.replicas}"))

    # During the outage the scaler can only answer from its last good decision (or fail): every answer must be
    # that one held value (the decision made from the last data before the cut, which may postdate the last
    # call before the cut), none may fail or deactivate, and nothing may scale down below that held decision.
    # The HPA may still carry out a scale-down the held decision asked for before the cut (its stabilization
    # window ending inside the outage: replicas 5 -> 4 on a held answer of 4): that is the last good data
    # acting, not the missing data; a scale-down below the held answer would be the outage's. Once Prometheus is back,
    # decisions rest on fresh data again and may go either way; failures and deactivation are still checked
    # for a short while after, until the first fresh refresh has landed.
    lo, hi = result.outage
    settle = hi + result.timing.refresh_interval + 2 * result.timing.scrape_interval + 1.0
    before = [k for k in ticks if k.t < lo]
    at_cut = before[-1].replicas if before else 0
    answer_at_cut = next((c[2] for c in reversed(result.calls) if c[0] < lo and c[1] == "GetMetrics"
                          and not isinstance(c[2], str)), None)
    during = [k for k in ticks if lo <= k.t < hi]
    answers = [c[2] for c in result.calls if lo <= c[0] < hi and c[1] == "GetMetrics" and not isinstance(c[2], str)]
    failed = [c for c in result.calls if lo <= c[0] < settle and isinstance(c[2], str)]
    inactive = [c for c in result.calls if lo <= c[0] < settle and c[1] == "IsActive" and c[2] is False]
    downs_during = [e for e in ev if lo <= e[0] < hi and e[3] < e[2]]
    held = answers[0] if answers and len(set(answers)) == 1 else None
    floor = min(at_cut, math.ceil(held)) if held is not None else at_cut
    downs_below = [e for e in downs_during if e[3] < floor]
    checks.append(Check(
        "prometheus_outage_changed_nothing_for_the_worse",
        bool(during) and held is not None and answer_at_cut is not None and not failed and not inactive
        and not downs_below and min(k.replicas for k in during) >= floor and result.source_errors > 0,
        f"outage t={lo:.0f}-{hi:.0f}s: {len(answers)} GetMetrics answers {sorted(set(answers))} (held steady: "
        f"{held is not None}; last answer before the cut {answer_at_cut}), {len(failed)} failed calls, "
        f"{len(inactive)} IsActive false, scale-downs {[_event(e) for e in downs_during]} "
        f"({len(downs_below)} below the held answer), replicas at the cut {at_cut}, lowest during "
        f"{min((k.replicas for k in during), default=None)}; the scaler counted {result.source_errors:g} "
        f"source errors"))

    checks.append(Check("scaler_exited_cleanly_on_sigterm", result.scaler_exit == 0,
                        f"exit code {result.scaler_exit}"))
    return checks


# -------------------------------------------------------------------------------------------------- CLI
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole loop on loopback: simulated vLLM pods, Prometheus, the scaler, KEDA+HPA emulation",
        description=__doc__.split("\n\n")[0] + " Needs Debian's `prometheus` on PATH. About a minute.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints each scaling event as it happens, then the checks. Exit status 0 when every check "
               "passed, 1 otherwise, 2 when a part is missing (e.g. no prometheus binary). See docs/deploy.md.")
    parser.add_argument("--policy", choices=("reactive", "predictive"), default="reactive",
                        help="the trigger's `policy` metadata key (default: reactive)")
    parser.add_argument("--peak", type=float, default=12.0, help="plateau traffic, requests/s (default: 12)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the arrivals (default: 7)")
    parser.add_argument("--timeline", type=Path, default=None,
                        help="write the per-tick timeline and events as JSON to this file")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep Prometheus' TSDB and the scaler's log here (default: a temporary directory)")
    cluster = parser.add_argument_group(
        "in a cluster (tests/e2e/test_kind.py)",
        "--role loadgen runs the traffic and the fleet model for a real Deployment, following its Ready pods "
        "through the Kubernetes API; --role pod is a simulated vLLM container that serves /health (after "
        "--startup-delay) and its share of the loadgen's metrics on /metrics.")
    cluster.add_argument("--role", choices=("loop", "loadgen", "pod"), default="loop",
                         help="loop: the whole loop on loopback (default); loadgen or pod: see above")
    cluster.add_argument("--port", type=int, default=8000, help="HTTP port of the loadgen or pod (default: 8000)")
    cluster.add_argument("--loadgen-url", default="http://vllm-loadgen:8000",
                         help="pod: where the loadgen serves /pods/<name>/metrics (default: http://vllm-loadgen:8000)")
    cluster.add_argument("--startup-delay", type=float, default=10.0,
                         help="pod: seconds before /health answers 200, the simulated model load (default: 10)")
    cluster.add_argument("--namespace", default="llm", help="loadgen: namespace of the Deployment (default: llm)")
    cluster.add_argument("--deployment", default=DEPLOYMENT, help=f"loadgen: the Deployment (default: {DEPLOYMENT})")
    cluster.add_argument("--time-scale", type=float, default=10.0,
                         help="loadgen: stretch the story's phases by this factor, for the HPA's 15 s sync "
                              "(default: 10)")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.peak <= 0 or not math.isfinite(args.peak):
        print(f"vllm-scaler demo: --peak={args.peak}: must be a positive number of requests/s", file=sys.stderr)
        return 2
    if args.role == "pod":
        return serve_pod(args.port, args.loadgen_url, args.startup_delay)
    if args.role == "loadgen":
        if not (args.time_scale > 0 and math.isfinite(args.time_scale)):
            print(f"vllm-scaler demo: --time-scale={args.time_scale}: must be a positive number", file=sys.stderr)
            return 2
        return serve_loadgen(args.port, args.namespace, args.deployment, args.time_scale, args.peak, args.seed)
    try:
        result = run(policy=args.policy, peak=args.peak, seed=args.seed, workdir=args.workdir,
                     progress=lambda s: print(s, flush=True))
    except RuntimeError as exc:
        print(f"vllm-scaler demo: {exc}", file=sys.stderr)
        return 2
    checks = check(result)
    print(f"\n{result.requests} requests; TTFT within {result.slo_ttft:g} s: "
          f"{result.ttft_ok:.1%}; GPU-seconds {result.gpu_seconds:.0f}")
    for c in checks:
        print(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}")
    if args.timeline:
        args.timeline.write_text(json.dumps({
            "ticks": [dataclasses.asdict(k) for k in result.ticks], "events": result.events,
            "pushes": result.pushes, "checks": [dataclasses.asdict(c) for c in checks]}, default=str, indent=1))
    return 0 if all(c.ok for c in checks) else 1


# ------------------------------------------------------------------------------------------ in a cluster
def cluster_phases(peak: float, scale: float) -> tuple[Phase, ...]:
    """The kind story, 0 -> 1 -> N -> 0, in seconds: the loop's phases from zero, stretched by ``scale``."""
    base = (Phase("idle", 0, 3, 0, 0), Phase("trickle", 3, 9, 1, 1), Phase("ramp-up", 9, 18, 1, peak),
            Phase("plateau", 18, 30, peak, peak), Phase("ramp-down", 30, 34, peak, 0),
            Phase("idle-after", 34, 100, 0, 0))
    return tuple(Phase(p.name, p.start * scale, p.end * scale, p.rate_from, p.rate_to) for p in base)


def serve_loadgen(port: int, namespace: str, deployment: str, scale: float, peak: float, seed: int) -> int:
    """The traffic and the fleet model for a real Deployment (see ``--role loadgen``). Runs until SIGTERM.

    Each Ready pod of the Deployment (label ``app.kubernetes.io/name=<deployment>``) is one fleet replica
    (the fleet's own cold start is 0: the pod's readiness already took it). GET /metrics: the router queue
    (requests held while no pod is Ready), for the trigger's ``activationQuery``; GET /pods/<name>/metrics:
    that pod's vLLM metrics, fetched by the pod itself (``--role pod``).
    """
    from kubernetes import client, config

    from simulations.fleet import ColdStartModel, RequestFleet

    config.load_incluster_config()
    api = client.CoreV1Api()
    start = time.time() + 5
    arr, prompt, output = arrivals(cluster_phases(peak, scale), start, seed)
    fleet = RequestFleet(arr, prompt, output, params=demo_model(), cold_start=ColdStartModel.single(0.0),
                         start=time.time(), initial_replicas=0, seed=seed, request_timeout=30.0 * scale,
                         deployment=deployment)
    exporter = PodExporter(fleet, 64)
    names: dict[str, str] = {}     # Ready Kubernetes pod -> the simulated pod (fleet replica) it reports as
    lock = threading.Lock()
    stop = threading.Event()

    def respond(path: str) -> tuple[int, bytes] | None:
        if path == "/metrics":
            return 200, (f"# TYPE {ROUTER_METRIC} gauge\n"
                         f'{ROUTER_METRIC}{{deployment="{deployment}"}} {len(fleet.gateway)}\n').encode()
        if path.startswith("/pods/") and path.endswith("/metrics"):
            with lock:
                sim = names.get(path[len("/pods/"):-len("/metrics")])
            return 200, ("" if sim is None else exporter.text_of_pod(sim)).encode()
        return None

    server = TextHTTPServer(respond, host="0.0.0.0", port=port, name="loadgen")
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    print(f"loadgen: {len(arr)} requests from {time.strftime('%H:%M:%S', time.localtime(start))}, "
          f"following {namespace}/{deployment}", flush=True)
    applied = 0
    while not stop.wait(0.5):
        now = time.time()
        pods = api.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={deployment}").items
        ready = sorted(p.metadata.name for p in pods if p.metadata.deletion_timestamp is None and any(
            c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))
        fleet.advance_to(now)
        if len(ready) != applied:
            fleet.scale_to(len(ready), now)
            applied = len(ready)
            fleet.advance_to(now)
        exporter.update(now)
        mapping = assign_pods(names, ready, [r.name for r in fleet.rs.ready()])
        with lock:
            names = mapping
    server.close()
    return 0


def assign_pods(current: dict[str, str], ready_pods: Sequence[str], ready_replicas: Sequence[str]) -> dict[str, str]:
    """Which fleet replica (by name) each Ready pod reports as: keep existing pairs, pair new pods with free ones.

    A pair is dropped when its pod is no longer Ready or its replica no longer ready (drained); a pod with
    no free replica yet (the fleet scales on the next tick) reports nothing until one is free.
    Tests: ``tests/integration/test_demo_loop.py::test_assign_pods_*``.
    """
    ready, replicas = set(ready_pods), list(ready_replicas)
    kept = {name: sim for name, sim in current.items() if name in ready and sim in replicas}
    free = [sim for sim in replicas if sim not in kept.values()]
    for name in sorted(ready - set(kept)):
        if not free:
            break
        kept[name] = free.pop(0)
    return kept


def serve_pod(port: int, loadgen_url: str, startup_delay: float) -> int:
    """A simulated vLLM container (``--role pod``): /health after ``startup_delay``, /metrics from the loadgen."""
    pod = os.environ.get("POD_NAME", socket.gethostname())
    ready_at = time.monotonic() + startup_delay
    stop = threading.Event()

    def respond(path: str) -> tuple[int, bytes]:
        if path == "/health":
            return (200, b"") if time.monotonic() >= ready_at else (503, b"loading model\n")
        if path == "/metrics":
            try:
                with urllib.request.urlopen(f"{loadgen_url}/pods/{pod}/metrics", timeout=2) as r:
                    return 200, r.read()
            except OSError as exc:
                return 503, f"loadgen unreachable: {exc}\n".encode()
        return 404, b""

    server = TextHTTPServer(respond, host="0.0.0.0", port=port, name="pod")
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.close()
    return 0
