"""Replicas' lifecycle and what they cost: requested -> loading -> ready -> draining -> gone.

* **requested/loading**: a pod is created the moment the Deployment's replica
  count rises; it loads for a cold start drawn from :class:`ColdStartModel`
  and serves nothing meanwhile. GPU time counts from this moment.
* **ready**: serves requests (the fleet routes to it).
* **draining**: the replica count fell; it takes no new request and finishes
  the ones it has, then is **gone** (GPU time stops).

Which pods go on a scale-down follows Kubernetes' ReplicaSet controller: pods
not ready yet first (youngest first), then ready ones (youngest first). A
loading pod that is removed is gone at once.

Counted here: cold starts (pods created), scale events (changes of the
replica count), GPU-seconds (sum over pods of ``gone_at - requested_at``) and
seconds at zero (no pod in any phase, so no GPU held).
Tests: ``tests/unit/test_fleet.py::test_lifecycle_*``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from scaler.signals import ColdStart

LOADING, READY, DRAINING, GONE = "loading", "ready", "draining", "gone"
_Z90 = 1.2815515655446004  # standard normal 90th percentile


@dataclass(frozen=True)
class ColdStartModel:
    """Cold start (pod created -> Ready) in seconds: log-normal with this median and log-sd ``sigma``.

    ``sigma = 0`` gives a fixed cold start. p90 = ``median * exp(1.2816 * sigma)``.
    """

    median: float = 180.0
    sigma: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.median) and self.median >= 0):
            raise ValueError(f"cold start median must be a finite number of seconds >= 0, got {self.median!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"cold start sigma must be >= 0, got {self.sigma!r}")

    def draw(self, rng: np.random.Generator) -> float:
        if self.sigma == 0:
            return self.median
        return self.at(rng.standard_normal())

    def at(self, z: float) -> float:
        """The cold start at the standard normal deviate ``z``: ``median * exp(sigma * z)``."""
        return float(self.median * math.exp(self.sigma * z))

    def signal(self) -> ColdStart:
        """What the scaler would measure, as a :class:`~scaler.signals.ColdStart` (source "simulation")."""
        return ColdStart(p50=self.median, p90=self.median * math.exp(_Z90 * self.sigma), source="simulation")


@dataclass(eq=False)
class Replica:
    """One pod. ``gone_at`` is None while it holds a GPU."""

    index: int
    name: str
    requested_at: float
    ready_at: float
    phase: str = LOADING
    drain_started_at: float | None = None
    gone_at: float | None = None


def _ready_at(r: Replica) -> float:
    return r.ready_at


class ReplicaSet:
    """The pods of one simulated Deployment and their accounting.

    The fleet owns what happens to requests; it gives ``on_ready(replica)`` and
    ``on_drain(replica, now) -> bool`` (True: nothing in flight, gone at once;
    False: the fleet calls :meth:`finish_drain` when the last request ends).
    """

    def __init__(self, cold_start: ColdStartModel, rng: np.random.Generator, *, start: float, initial: int,
                 warm: bool = True, deployment: str = "vllm"):
        self.cold_start = cold_start
        self.rng = rng
        self.deployment = deployment
        self.replicas: list[Replica] = []
        self.live: list[Replica] = []   # not gone: what the queries scan (the full list only grows)
        self._n = {LOADING: 0, READY: 0, DRAINING: 0, GONE: 0}
        self.cold_starts = 0
        self.scale_events = 0
        self._zero_since: float | None = None
        self.seconds_at_zero_closed = 0.0
        self.on_ready: Callable[[Replica], None] = lambda r: None
        self.on_drain: Callable[[Replica, float], bool] = lambda r, now: True
        self._pending: list[Replica] = []  # loading, sorted by ready_at
        self._gone_seconds = 0.0
        self._normals: list[float] = []    # the rng's next standard normal deviates, next one last
        for _ in range(initial):
            r = self._new(start, warm=warm)
            if warm:
                self._phase(r, READY)
        if initial == 0:
            self._zero_since = start

    # -- queries ---------------------------------------------------------------------------------
    def active(self) -> list[Replica]:
        """Pods counted in the Deployment's ``status.replicas``: loading and ready (not draining)."""
        return [r for r in self.live if r.phase in (LOADING, READY)]

    def ready(self) -> list[Replica]:
        return [r for r in self.live if r.phase == READY]

    def count(self, phase: str) -> int:
        return self._n[phase]

    @property
    def n_ready(self) -> int:
        return self._n[READY]

    @property
    def pending(self) -> list[Replica]:
        """Loading pods sorted by ``ready_at`` (read-only: the fleets' time loops peek at the first)."""
        return self._pending

    def _phase(self, r: Replica, phase: str) -> None:
        self._n[r.phase] -= 1
        self._n[phase] += 1
        r.phase = phase

    def next_ready_at(self) -> float:
        return self._pending[0].ready_at if self._pending else math.inf

    def gpu_seconds(self, now: float) -> float:
        """Sum over pods of (gone or now) - requested; pods gone after ``now`` are not expected here."""
        return self._gone_seconds + sum(max(0.0, now - r.requested_at) for r in self.live)

    def seconds_at_zero(self, now: float) -> float:
        extra = (now - self._zero_since) if self._zero_since is not None else 0.0
        return self.seconds_at_zero_closed + max(0.0, extra)

    # -- changes ---------------------------------------------------------------------------------
    def _new(self, now: float, warm: bool = False) -> Replica:
        idx = len(self.replicas)
        delay = 0.0 if warm else self._cold_start_delay()
        r = Replica(idx, f"{self.deployment}-{idx}", now, now + delay)
        self.replicas.append(r)
        self.live.append(r)
        self._n[LOADING] += 1
        if not warm:
            self.cold_starts += 1
            bisect.insort_right(self._pending, r, key=_ready_at)   # = append + stable sort by ready_at
        if self._zero_since is not None:
            self.seconds_at_zero_closed += max(0.0, now - self._zero_since)
            self._zero_since = None
        return r

    def _cold_start_delay(self) -> float:
        """``cold_start.draw(rng)``, with the deviates drawn 1,024 at a time: ``standard_normal(n)`` gives the
        sequence ``n`` single draws give (the rng is this ReplicaSet's alone), and one numpy call per pod was
        a twentieth of a ``kpa`` week run, which creates about 95,000 pods
        (``tests/unit/test_fleet.py::test_batched_cold_starts_are_the_single_draws``)."""
        if self.cold_start.sigma == 0:
            return self.cold_start.median
        if not self._normals:
            self._normals = self.rng.standard_normal(1024).tolist()[::-1]
        return self.cold_start.at(self._normals.pop())

    def promote_due(self, now: float) -> None:
        """Loading pods whose cold start has elapsed become ready (in ready_at order)."""
        while self._pending and self._pending[0].ready_at <= now:
            r = self._pending.pop(0)
            self._phase(r, READY)
            self.on_ready(r)

    def scale_to(self, n: int, now: float) -> None:
        """Set the Deployment's replica count (``spec.replicas``) at ``now``."""
        if n < 0:
            raise ValueError(f"replica count must be >= 0, got {n}")
        current = self._n[LOADING] + self._n[READY]   # = len(self.active()): every loading/ready pod is live
        if n == current:
            return
        self.scale_events += 1
        if n > current:
            for _ in range(n - current):
                self._new(now)
            return
        active = self.active()
        # Kubernetes removes not-ready pods first, youngest first; then ready ones, youngest first.
        victims = sorted(active, key=lambda r: (r.phase == READY, -r.requested_at, -r.index))[: len(active) - n]
        for r in victims:
            if r.phase == LOADING:
                self._pending.remove(r)
                self._gone(r, now)
            else:
                self._phase(r, DRAINING)
                r.drain_started_at = now
                if self.on_drain(r, now):
                    self._gone(r, now)
        self._check_zero(now)

    def finish_drain(self, r: Replica, at: float) -> None:
        self._gone(r, at)
        self._check_zero(at)

    def _gone(self, r: Replica, at: float) -> None:
        self._phase(r, GONE)
        r.gone_at = at
        self._gone_seconds += at - r.requested_at
        self.live.remove(r)

    def _check_zero(self, now: float) -> None:
        if self._zero_since is None and not self.live:
            last = max((r.gone_at or now) for r in self.replicas) if self.replicas else now
            self._zero_since = last
