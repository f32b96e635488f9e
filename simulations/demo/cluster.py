"""The demo's in-cluster roles (``tests/e2e/test_kind.py``): ``--role loadgen`` and ``--role pod``."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Sequence

from kubernetes import client, config

from simulations.fleet import ColdStartModel, RequestFleet
from simulations.podserver import TextHTTPServer

from .arrivals import arrivals
from .exporter import PodExporter
from .story import ROUTER_METRIC, Phase, demo_model


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
        ready = sorted(p.metadata.name for p in pods
                       if p.metadata is not None and p.metadata.name is not None and p.status is not None
                       and p.metadata.deletion_timestamp is None
                       and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])))
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
