"""One run of the loop on loopback (:func:`run`): every part started, the story played, everything stopped."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from scaler.server.client import ScaledObjectRef
from scaler.testing.promserver import PrometheusServer, prometheus_available
from simulations.fleet import ColdStartModel, RequestFleet
from simulations.keda import KedaHpa, scaled_object_from_yaml

from .arrivals import arrivals
from .exporter import PodExporter, metrics_port
from .gate import TcpGate
from .result import DemoResult, DemoTick
from .scaler_process import ScalerProcess
from .story import DEPLOYMENT, NAMESPACE, OUTAGE, ROUTER_METRIC, Timing, demo_model, scaled_object, traffic_phases
from .trigger import GrpcTrigger, PushListener


def run(timing: Timing = Timing(), *, policy: str = "reactive", peak: float = 12.0, seed: int = 7,
        workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the loop once (about a minute) and return what happened. Raises RuntimeError when a part is missing."""
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
        ports = [metrics_port(functools.partial(exporter.text, i)) for i in range(slots)]
        router_text = {"v": ""}
        ports.append(metrics_port(lambda: router_text["v"]))
        cleanup += [p.close for p in ports]

        say(f"starting Prometheus (scrapes {len(ports)} ports every {timing.scrape_interval} s)")
        prom = PrometheusServer(scrape_targets=[(f"127.0.0.1:{p.port}", {}) for p in ports],
                                scrape_interval=timing.scrape_interval, tsdb_dir=work / "tsdb")
        prom.start()
        cleanup.append(prom.stop)
        assert prom.port is not None, "set by start()"
        gate = TcpGate(prom.port)
        cleanup.append(gate.close)

        say("starting vllm-scaler serve")
        scaler = ScalerProcess(f"http://127.0.0.1:{gate.port}", work / "scaler.log")
        scaler_exit: list[int | None] = [None]
        cleanup.append(lambda: scaler_exit.__setitem__(0, scaler.stop()))
        scaler.wait_serving()

        channel = grpc.insecure_channel(scaler.address)
        cleanup.append(channel.close)
        ref = ScaledObjectRef(so["metadata"]["name"], NAMESPACE, trigger_doc["metadata"])
        clock = lambda: time.time() - start  # noqa: E731
        trig = GrpcTrigger(channel, ref, clock)
        push = PushListener(channel, ref, clock)
        cleanup.append(push.close)
        keda = KedaHpa(spec, [trig], start=time.time(), replicas=1)

        end_t = phases[-1].end
        ticks: list[DemoTick] = []
        outage_state = False
        applied = 1
        say(f"traffic starts in {lead:.0f} s; the story takes about a minute")
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
            ticks.append(DemoTick(t=t, phase=phase.name, rate=max(0.0, phase.rate(t)) if t >= 0 else 0.0,
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
    fixed = RequestFleet(arr, prompt, output, params=model, cold_start=ColdStartModel.single(0.0),
                         start=fleet_start, initial_replicas=1, request_timeout=1e9, deployment=DEPLOYMENT)
    peak = 0
    for t in np.arange(fleet_start, end, 0.1):
        fixed.advance_to(float(t))
        peak = max(peak, sum(w for _, w, _, _ in fixed.pod_states()))
    return peak
