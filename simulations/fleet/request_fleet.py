"""The per-request fidelity: every request of a trace through replicas that batch continuously.

Arrivals are routed, at their arrival instant, to the ready (not draining)
replica with the shortest queue: fewest waiting, then fewest running, then the
oldest replica. With no ready replica (all loading, or none at all) a request
is held at the gateway (like Knative's activator or a router queue) and routed
when the first replica becomes ready; a request held longer than
``request_timeout`` seconds is **unserved** (the client gave up): it counts
against both SLOs and is never served. Draining replicas finish everything
they accepted and then are gone.

``signals(now, window)`` returns what the scaler would read from Prometheus
(see :class:`~simulations.fleet.base.FleetBase`).
Each replica is an :class:`~simulations.fleet.engine.Engine` (vLLM's V1 scheduler: KV blocks, preemption by
recompute, chunked prefill); a request the engine rejects (it could never fit in the cache) is unserved.
Tests: ``tests/unit/test_fleet.py`` (routing, lifecycle, batching), ``tests/unit/test_scheduler.py`` (the
scheduler) and ``tests/unit/test_fleet_erlang.py`` (M/M/c against Erlang C).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from scaler.signals import Signals

from .base import AfterIdle, FleetBase, FleetOutcome, first_after_idle, window_attainment
from .engine import Engine, RequestTable
from .lifecycle import ColdStartModel, Replica, ReplicaSet
from .model import ModelParams


class RequestFleet(FleetBase):
    """Per-request discrete-event fleet over one request trace (arrays of arrival times and token sizes)."""

    fidelity = "request"

    def __init__(self, arrivals, prompt_tokens, output_tokens, *, params: ModelParams, cold_start: ColdStartModel,
                 start: float, initial_replicas: int, seed: int = 0, request_timeout: float = 60.0,
                 deployment: str = "vllm"):
        order = np.argsort(np.asarray(arrivals, dtype=float), kind="stable")
        self.req = RequestTable(np.asarray(arrivals, dtype=float)[order], np.asarray(prompt_tokens)[order],
                                np.asarray(output_tokens)[order])
        self.params = params
        self.start = start
        self.now = start
        self.request_timeout = request_timeout
        self.rs = ReplicaSet(cold_start, np.random.default_rng(seed), start=start, initial=initial_replicas,
                             deployment=deployment)
        self.rs.on_ready = self._on_ready
        self.rs.on_drain = self._on_drain
        self.engines: dict[int, Engine] = {}
        self.routable: list[Engine] = []
        self.draining: list[Engine] = []
        self.gateway: deque[int] = deque()
        self.next_arrival = 0
        self.n = len(self.req.arrival)
        for r in self.rs.replicas:
            if r.phase == "ready":
                self._on_ready(r)

    # -- lifecycle hooks ------------------------------------------------------------------------
    def _on_ready(self, r: Replica) -> None:
        e = Engine(self.params, self.req, r.index, r.ready_at)
        self.engines[r.index] = e
        self.routable.append(e)
        at = r.ready_at
        while self.gateway:
            rid = self.gateway.popleft()
            if self.req.A[rid] + self.request_timeout < at:
                self.req.unserved[rid] = True
                continue
            self._route(rid, at)

    def _on_drain(self, r: Replica, now: float) -> bool:
        e = self.engines[r.index]
        e.draining = True
        self.routable.remove(e)
        if e.idle:
            return True
        self.draining.append(e)
        return False

    # -- time ----------------------------------------------------------------------------------
    def _route(self, rid: int, at: float) -> None:
        best = None
        best_key: tuple[int, int] | None = None   # set with best
        for e in self.routable:
            key = (len(e.waiting), len(e.running))
            if best_key is None or key < best_key:
                best, best_key = e, key
        if best is None:
            self.gateway.append(rid)
        else:
            best.enqueue(rid, at)

    def _advance_engines(self, t: float) -> None:
        for e in self.routable:
            if e.running or e.waiting:
                e.advance_to(t)
        if self.draining:
            for e in list(self.draining):
                e.advance_to(t)
                if e.idle:
                    self.draining.remove(e)
                    self.rs.finish_drain(self.rs.replicas[e.index], min(e.t_next, t))

    def advance_to(self, T: float) -> None:
        """Simulate up to ``T`` (arrivals at or before ``T`` are routed)."""
        A = self.req.A
        rs = self.rs
        while True:
            ta = A[self.next_arrival] if self.next_arrival < self.n else math.inf
            tr = rs.next_ready_at()
            if min(ta, tr) > T:
                break
            if tr <= ta:
                self._advance_engines(tr)
                rs.promote_due(tr)
            else:
                self._advance_engines(ta)
                rid = self.next_arrival
                self.next_arrival += 1
                if not self.routable:
                    self._expire_gateway(ta)
                self._route(rid, ta)
        self._advance_engines(T)
        if not self.routable:
            self._expire_gateway(T)
        self.now = T

    def _expire_gateway(self, now: float) -> None:
        g, A, unserved, timeout = self.gateway, self.req.A, self.req.unserved, self.request_timeout
        while g and A[g[0]] + timeout < now:
            unserved[g.popleft()] = True

    def scale_to(self, n: int, now: float) -> None:
        self.advance_to(now)
        self.rs.scale_to(n, now)

    # -- what Prometheus would see -------------------------------------------------------------
    def _reporting(self) -> list[Engine]:
        return self.routable + self.draining

    def in_flight(self) -> float:
        """Requests in the system (gateway + waiting + running), what a router/gateway metric shows."""
        return float(len(self.gateway) + sum(len(e.waiting) + len(e.running) for e in self._reporting()))

    def waiting_and_pods(self, now: float) -> tuple[float | None, int]:
        self.advance_to(now)
        pods = self._reporting()
        return (float(sum(len(e.waiting) for e in pods)) if pods else None), len(pods)

    def signals(self, now: float, window: float, *, upstream: bool = False, history: float = 0.0) -> Signals:
        self.advance_to(now)
        req = self.req
        pods = self._reporting()
        lo_t = now - window
        span = self.observed_span(now, window)
        A = req.arrival
        hi = int(np.searchsorted(A, now, side="right"))
        a_lo = int(np.searchsorted(A, lo_t, side="right"))
        arrivals = hi - a_lo
        lo = int(np.searchsorted(A, lo_t - req.max_e2e - req.max_ttft - 1.0, side="left"))
        first = req.first[lo:hi]
        fin = req.finish[lo:hi]
        arr = A[lo:hi]
        m1 = (first > lo_t) & (first <= now)
        ttft = first[m1] - arr[m1]
        m2 = (fin > lo_t) & (fin <= now)
        done = int(m2.sum())
        ttft_p95 = float(np.percentile(ttft, 95)) if ttft.size else None
        tpot_p95 = prompt_mean = output_mean = None
        if done:
            o = req.output[lo:hi][m2]
            multi = o > 1
            if multi.any():
                tp = (fin[m2][multi] - first[m2][multi]) / (o[multi] - 1)
                tpot_p95 = float(np.percentile(tp, 95))
            prompt_mean = float(req.prompt[lo:hi][m2].mean())
            output_mean = float(o.mean())
        demand_history: tuple[tuple[float, float], ...] = ()
        if history > 0:
            # What DemandHistoryReader reads: the arrivals of each minute ending at one of its instants.
            ts = self.history_instants(self.history_minute(now), history)
            if ts:
                edges = np.array([ts[0] - 60.0] + ts)
                counts = np.diff(np.searchsorted(A, edges, side="right"))
                demand_history = tuple((t, float(c) / 60.0) for t, c in zip(ts, counts))
        n = len(pods)
        return Signals(
            observed_at=now,
            pods_reporting=n,
            waiting=float(sum(len(e.waiting) for e in pods)) if n else None,
            running=float(sum(len(e.running) for e in pods)) if n else None,
            kv_cache_usage=(sum(e.kv_usage() for e in pods) / n) if n else None,
            ttft_p95=ttft_p95,
            tpot_p95=tpot_p95,
            completion_rate=done / span if span > 0 else None,
            arrival_rate=arrivals / span if span > 0 else None,
            prompt_tokens_mean=prompt_mean,
            output_tokens_mean=output_mean,
            ready_replicas=self.rs.count("ready"),
            starting_replicas=self.rs.count("loading"),
            upstream_demand=self.in_flight() if upstream else None,
            cold_start=self.rs.cold_start.signal(),
            demand_history=demand_history,
        )

    def pod_states(self) -> list[tuple[Replica, int, int, float]]:
        """(replica, waiting, running, kv usage) of every pod vLLM runs in now (ready or draining)."""
        return [(self.rs.replicas[e.index], len(e.waiting), len(e.running), e.kv_usage()) for e in self._reporting()]

    # -- outcomes -------------------------------------------------------------------------------
    def outcome(self, end: float, slo_ttft: float, slo_tpot: float,
                after_idle: AfterIdle = AfterIdle()) -> FleetOutcome:
        """Outcomes of requests that arrived before ``end``; still unfinished ones count as misses."""
        self.advance_to(end)
        req = self.req
        hi = int(np.searchsorted(req.arrival, end, side="right"))
        arr = req.arrival[:hi]
        first, fin, o = req.first[:hi], req.finish[:hi], req.output[:hi]
        served_first = np.isfinite(first) & (first <= end)
        ttft = np.where(served_first, first - arr, np.inf)
        finished = np.isfinite(fin) & (fin <= end)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(o > 1, (fin - first) / np.maximum(o - 1, 1), 0.0)
        tpot = np.where(finished, tpot, np.inf)
        ttft_ok = ttft <= slo_ttft
        idle_n, idle_ok, idle_p50 = first_after_idle(arr, arr, np.ones(hi), ttft_ok, ttft, after_idle)
        return FleetOutcome(
            requests=int(hi),
            ttft_ok=int(ttft_ok.sum()),
            tpot_ok=int((tpot <= slo_tpot).sum()),
            window_attainment=window_attainment(arr, ttft_ok.astype(float), np.ones(hi), self.start, end),
            gpu_seconds=self.rs.gpu_seconds(end),
            cold_starts=self.rs.cold_starts,
            scale_events=self.rs.scale_events,
            seconds_at_zero=self.rs.seconds_at_zero(end),
            unserved=int(req.unserved[:hi].sum()),
            after_idle_requests=idle_n,
            after_idle_ttft_ok=idle_ok,
            after_idle_ttft_p50=idle_p50,
        )
