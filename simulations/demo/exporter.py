"""The simulated pods' ``/metrics``: :class:`PodExporter` fills fixed scrape slots, :func:`metrics_port` serves one."""

from __future__ import annotations

import threading
from collections.abc import Callable

from simulations.exposition import render_text
from simulations.fleet.metrics import pod_metrics
from simulations.podserver import TextHTTPServer, metrics_only

from .story import MODEL, NAMESPACE


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
