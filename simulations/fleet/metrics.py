"""Per-pod vLLM metrics of a simulated fleet, as :class:`simulations.exposition.PodMetrics`.

For the per-request fleet, each pod's cumulative histograms are rebuilt from
the requests routed to it (numpy bucket counts, exact sums): TTFT and token
sizes are observed when the first token / the last token exists, e2e and
``request_success_total{finished_reason="stop"}`` at the last token, and the
inter-token latency as ``output - 1`` observations of the request's TPOT (its
mean inter-token gap) at the last token. Gauges (waiting, running, KV usage)
are the pod's current state. The aggregate fleet has no per-request history:
its pods export the gauges only (zero histograms).
Tests: ``tests/integration/test_podserver.py``.
"""

from __future__ import annotations

import numpy as np

from simulations.exposition import Histogram, PodMetrics

from .request_fleet import RequestFleet


def _fill(h: Histogram, values: np.ndarray, weights: np.ndarray | None = None) -> None:
    if values.size == 0:
        return
    edges = np.asarray(h.edges)
    idx = np.searchsorted(edges, values, side="left")          # bucket i holds values <= edges[i]
    w = np.ones(values.size) if weights is None else weights
    counts = np.bincount(idx, weights=w, minlength=len(edges) + 1)
    for i, c in enumerate(counts):
        n = int(round(c))
        if n:
            h.observe(float(edges[i]) if i < len(edges) else float(edges[-1]) * 2, n)
    h.sum = float(np.sum(values * w))


def pod_metrics(fleet, now: float, *, namespace: str = "default", model_name: str = "vllm",
                names: str = "v1") -> list[PodMetrics]:
    """PodMetrics of every pod vLLM runs in at ``now`` (ready or draining); advances the fleet to ``now``."""
    fleet.advance_to(now)
    out = []
    for replica, waiting, running, kv in fleet.pod_states():
        pm = PodMetrics.new(replica.name, namespace, model_name, names=names)
        pm.waiting, pm.running, pm.kv_cache_usage = waiting, running, kv
        if isinstance(fleet, RequestFleet):
            req = fleet.req
            mine = np.nonzero(req.replica == replica.index)[0]
            first = req.first[mine]
            fin = req.finish[mine]
            started = np.isfinite(first) & (first <= now)
            done = np.isfinite(fin) & (fin <= now)
            arr = req.arrival[mine]
            _fill(pm.ttft, first[started] - arr[started])
            o = req.output[mine][done].astype(float)
            p = req.prompt[mine][done].astype(float)
            _fill(pm.e2e, fin[done] - arr[done])
            _fill(pm.request_prompt_tokens, p)
            _fill(pm.request_generation_tokens, o)
            multi = o > 1
            tpot = (fin[done][multi] - first[done][multi]) / (o[multi] - 1)
            _fill(pm.itl, tpot, o[multi] - 1)
            pm.prompt_tokens_total = float(req.prompt[mine][started].sum())
            pm.generation_tokens_total = float(o.sum())
            pm.request_success_total = {"stop": float(done.sum()), "length": 0.0}
        out.append(pm)
    return out


def openmetrics_frames(fleet, start: float, end: float, step: float = 15.0, **kw):
    """(t, pods) every ``step`` seconds from ``start`` to ``end``, for :func:`simulations.exposition.write_openmetrics`."""
    t = start + step
    while t <= end + 1e-9:
        yield t, pod_metrics(fleet, t, **kw)
        t += step
