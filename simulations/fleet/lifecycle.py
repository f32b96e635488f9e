"""Replicas' lifecycle and what they cost: requested -> loading -> ready -> draining -> gone.

* **requested/loading**: a pod is created the moment the Deployment's replica
  count rises; it loads for a cold start in phases (:class:`ColdStartModel`)
  and serves nothing meanwhile. GPU time counts from this moment.
* **ready**: serves requests (the fleet routes to it).
* **draining**: the replica count fell; it takes no new request and finishes
  the ones it has, then is **gone** (GPU time stops).

Which pods go on a scale-down follows Kubernetes' ReplicaSet controller: pods
not ready yet first (youngest first), then ready ones (youngest first). A
loading pod that is removed is gone at once (and frees its share of the
download bandwidth).

Counted here: cold starts (pods created), scale events (changes of the
replica count), GPU-seconds (sum over pods of ``gone_at - requested_at``) and
seconds at zero (no pod in any phase, so no GPU held).
Tests: ``tests/unit/test_fleet.py::test_lifecycle_*``, ``tests/unit/test_coldstart_phases.py``.
"""


from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scaler.signals import ColdStart

LOADING, READY, DRAINING, GONE = "loading", "ready", "draining", "gone"
_Z90 = 1.2815515655446004  # standard normal 90th percentile
_MAX_SECONDS = 86_400.0    # a cold start (or its scheduling) of at most a day
_MAX_SIGMA = 3.0
_MAX_GB = 10_000.0


class ColdStartError(ValueError):
    """A bad :class:`ColdStartModel` value; ``field`` names the parameter (the CLI maps it to its flag)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ColdStartModel:
    """A pod's cold start (created -> Ready), in phases, with downloads that share one link.

    Phases of one pod, in order:

    1. **scheduling** ``S`` s (fixed): bound to a node with a free GPU, container created;
    2. **image pull + weight download** of ``D = image_gb + weights_gb`` GB over **one link shared by every pod
       of the Deployment that downloads at the same instant** (the registry / model store and the egress in
       front of it): with ``k`` pods downloading, each gets ``min(pod_bandwidth, bandwidth / k)`` GB/s
       (processor sharing, capped per pod). Alone, a pod downloads in ``D / min(pod_bandwidth, bandwidth)`` s;
    3. **engine start** ``E`` s (weights to the GPU, ``torch.compile``, CUDA-graph capture, warm-up, the
       readiness probe): log-normal with median ``E_med`` and log-sd ``sigma``, one draw per pod.

    ``median`` is the cold start of **one pod alone** (what ``kubectl`` shows between ``creationTimestamp`` and
    Ready when nothing else starts): ``median = S + D / min(pod_bandwidth, bandwidth) + E_med``, so the engine's
    median is what the other phases leave, ``E_med = median - S - D / min(pod_bandwidth, bandwidth)``, which
    must be >= 0 (an error names the values otherwise). Alone, the cold start is
    ``median + E_med * (exp(sigma * z) - 1)`` for a standard normal ``z``; p90 = ``median + E_med *
    (exp(1.2816 sigma) - 1)``. A pod of a burst waits longer: its download shares the link.

    **Worked example** (pinned by ``tests/unit/test_coldstart_phases.py::test_bandwidth_sharing_worked_example``):
    ``S`` 5 s, ``D`` 16 GB, ``bandwidth`` 1 GB/s, ``pod_bandwidth`` 0.5 GB/s. Pod A is created at t = 0 and
    downloads alone from t = 5 at 0.5 GB/s; pods B and C are created at t = 20 and join the link at t = 25, when
    A has 16 - 20 x 0.5 = 6 GB left. Three share 1 GB/s: 1/3 GB/s each, so A finishes at 25 + 6 x 3 = 43 s
    (alone: 37 s); B and C have 16 - 18/3 = 10 GB left, then 0.5 GB/s each (the per-pod cap), done at
    43 + 20 = 63 s (alone: 57 s). Each is Ready its engine start later.

    **What this models and what it does not.** Pod created -> Ready only. The scale-up decision -> pod created
    (KEDA's polling, the HPA's sync period and its scale-up rules) is emulated in :mod:`simulations.keda`, and
    the policy's own tick; it is not part of this model. No cluster capacity: every pod is scheduled (no
    Pending for want of a GPU, no node autoscaling). The link is shared by the pods of one Deployment only.

    **Defaults: the llm-d testbed** (Llama-3.1-8B bf16 on H100, vLLM 0.11; ``simulations/data/vllm-testbed-h100``).
    Its README: 120-180 s from the scale-up decision to the new pod serving, about 60 s of it actuation (its
    controller's 30-60 s reconcile, then the HPA), which leaves 60-120 s from pod created to serving; its CSV
    gives each pod's created -> serving delay where the replica count leads the serving pods, for one pod and
    for bursts. Fitted to those delays (the comparison, regenerated with the code: docs/fidelity.md, by
    :mod:`simulations.fidelity`): ``S`` 5 s (the image already on the node: ``image_gb`` 0; a fresh node pulling
    ``vllm/vllm-openai`` adds about 10 GB), ``weights_gb`` 16.06 (8.03 B parameters x 2 bytes),
    ``pod_bandwidth`` 0.5 GB/s (a pod alone downloads in 32 s), ``bandwidth`` 1 GB/s (two pods start as fast
    as one; six download for 96 s instead of 32), ``median`` 90 s (so ``E_med`` 52.9 s: weights to the GPU,
    compile, CUDA graphs), ``sigma`` 0.25.

    :meth:`single` is the cold start without phases (a log-normal, every pod independent: what the simulator
    drew before phases, and what a fixed-delay test fleet needs).
    """

    median: float = 90.0
    sigma: float = 0.25
    scheduling: float = 5.0
    image_gb: float = 0.0
    weights_gb: float = 16.06
    bandwidth: float = 1.0
    pod_bandwidth: float = 0.5

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise ColdStartError(name, f"cold start {name} must be {what}, got {getattr(self, name)!r}")

        check("median", math.isfinite(self.median) and 0 <= self.median <= _MAX_SECONDS,
              f"a number of seconds within 0-{_MAX_SECONDS:g}")
        check("sigma", math.isfinite(self.sigma) and 0 <= self.sigma <= _MAX_SIGMA, f"within 0-{_MAX_SIGMA:g}")
        check("scheduling", math.isfinite(self.scheduling) and 0 <= self.scheduling <= _MAX_SECONDS,
              f"a number of seconds within 0-{_MAX_SECONDS:g}")
        for name in ("image_gb", "weights_gb"):
            check(name, math.isfinite(getattr(self, name)) and 0 <= getattr(self, name) <= _MAX_GB,
                  f"a size in GB within 0-{_MAX_GB:g}")
        for name in ("bandwidth", "pod_bandwidth"):
            v = getattr(self, name)
            check(name, not math.isnan(v) and v > 0, "a rate in GB/s > 0 (inf: unlimited)")
        if self.engine_median < 0:
            raise ColdStartError(
                "median", f"cold start median {self.median:g} s is shorter than the phases before the engine starts: "
                f"scheduling {self.scheduling:g} s + (image_gb {self.image_gb:g} + weights_gb {self.weights_gb:g}) GB"
                f" / {min(self.pod_bandwidth, self.bandwidth):g} GB/s (min of pod_bandwidth, bandwidth) = "
                f"{self.scheduling + self.download_alone:.1f} s; raise the median or the bandwidth, or lower a size")

    @classmethod
    def single(cls, median: float, sigma: float = 0.0) -> ColdStartModel:
        """No phases: a log-normal cold start with this median and log-sd, every pod independent."""
        return cls(median, sigma, scheduling=0.0, image_gb=0.0, weights_gb=0.0)

    @property
    def download_gb(self) -> float:
        """What a pod fetches over the shared link: ``image_gb + weights_gb``."""
        return self.image_gb + self.weights_gb

    @property
    def download_alone(self) -> float:
        """Seconds to download with the link to itself: ``download_gb / min(pod_bandwidth, bandwidth)``."""
        d = self.download_gb
        return 0.0 if d == 0 else d / min(self.pod_bandwidth, self.bandwidth)

    @property
    def engine_median(self) -> float:
        """The engine start's median: ``median - scheduling - download_alone`` (seconds)."""
        return self.median - self.scheduling - self.download_alone

    @property
    def shared(self) -> bool:
        """True when pods downloading together slow each other down (a finite link and something to fetch)."""
        return self.download_gb > 0 and math.isfinite(self.bandwidth)

    def engine_start(self, z: float) -> float:
        """The engine start at the standard normal deviate ``z``: ``E_med * exp(sigma * z)``."""
        return self.engine_median * math.exp(self.sigma * z) if self.sigma else self.engine_median

    def draw(self, rng: np.random.Generator) -> float:
        """One pod's cold start alone (no other pod downloading)."""
        if self.sigma == 0:
            return self.median
        return self.at(rng.standard_normal())

    def at(self, z: float) -> float:
        """One pod's cold start alone at the deviate ``z``: ``median + E_med * (exp(sigma z) - 1)``."""
        return float(self.median + self.engine_median * math.expm1(self.sigma * z))

    def signal(self) -> ColdStart:
        """What the scaler would measure for a pod starting alone, as a :class:`~scaler.signals.ColdStart`
        (source "simulation"): p50 = ``median``, p90 = ``at(1.2816)``."""
        return ColdStart(p50=self.median, p90=self.at(_Z90), source="simulation")

    def describe(self) -> str:
        """One line for reports: ``median 90 s alone (sigma 0.25; 16.06 GB at 0.5 GB/s per pod, 1 GB/s shared)``."""
        if self.download_gb == 0:
            return f"median {self.median:g} s (sigma {self.sigma:g})"
        link = f"{self.bandwidth:g} GB/s shared" if self.shared else "not shared"
        return (f"median {self.median:g} s alone (sigma {self.sigma:g}; {self.download_gb:g} GB at "
                f"{self.pod_bandwidth:g} GB/s per pod, {link})")

    def phases(self) -> dict:
        """Every parameter and the derived engine median, for reports and ``--json``."""
        return {"median": self.median, "sigma": self.sigma, "scheduling": self.scheduling,
                "image_gb": self.image_gb, "weights_gb": self.weights_gb, "bandwidth": self.bandwidth,
                "pod_bandwidth": self.pod_bandwidth, "engine_median": self.engine_median}


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
    downloaded_at: float | None = None   # end of the download phase (None: warm, or not known yet)


def _ready_at(r: Replica) -> float:
    return r.ready_at


class _Link:
    """The downloads of one Deployment's loading pods over the shared link (:class:`ColdStartModel`, phase 2).

    A flow is ``[start, remaining GB, replica, engine start s]``. Between two events (a flow starts or ends)
    the ``k`` flows that have started each move at ``min(pod_bandwidth, bandwidth / k)`` GB/s.
    :meth:`advance` moves the state to ``now`` (dropping finished flows); :meth:`plan` runs a copy to the end:
    given no further change, when each flow finishes. Both use :meth:`_run`, so a plan and the later advance
    agree (to float rounding).

    Every active flow moves at the same rate, so :meth:`_run` counts the service ``S`` (GB) one active flow has
    received since ``t``: a flow active from service ``S0`` with ``rem`` GB left ends when ``S = S0 + rem``,
    whatever the rate does meanwhile. A heap of those end values gives the next end in ``O(log k)``, so a run
    over ``k`` flows costs ``O(k log k)``, not ``O(k^2)`` (the ``kpa`` week creates about 95,000 pods).
    """

    __slots__ = ("bandwidth", "cap", "t", "flows")

    def __init__(self, bandwidth: float, pod_bandwidth: float):
        self.bandwidth, self.cap = bandwidth, pod_bandwidth
        self.t = -math.inf
        self.flows: list[list] = []

    def _run(self, flows: list[list], t: float, until: float) -> list[tuple[list, float]]:
        """Move ``flows`` from ``t`` to ``until`` (their ``remaining`` updated, the finished ones removed); the
        finished flows with their end times."""
        done: list[tuple[list, float]] = []
        waiting = sorted((f for f in flows if f[0] > t), key=lambda f: f[0])
        heap = [(f[1], i, f) for i, f in enumerate(flows) if f[0] <= t]   # (service at its end, tie, flow)
        heapq.heapify(heap)
        served, nxt, order = 0.0, 0, len(flows)
        cap, bandwidth = self.cap, self.bandwidth
        while heap or nxt < len(waiting):
            joins = waiting[nxt][0] if nxt < len(waiting) else math.inf
            if heap:
                rate = min(cap, bandwidth / len(heap))
                t_end = t + (heap[0][0] - served) / rate
            else:
                rate, t_end = 0.0, math.inf
            step_to = min(t_end, joins, until)
            if step_to == math.inf:
                break
            if t_end <= joins and t_end <= until:          # the least served flow(s) end
                served = heap[0][0]   # exactly (not by the rate x the time step, which rounds at unix times)
                t = step_to
                while heap and heap[0][0] - served <= 1e-9:
                    f = heapq.heappop(heap)[2]
                    done.append((f, t))
            else:
                served += rate * (step_to - t)
                t = step_to
            while nxt < len(waiting) and waiting[nxt][0] <= t:   # flows that join now
                f = waiting[nxt]
                nxt += 1
                order += 1
                heapq.heappush(heap, (served + f[1], order, f))
            if t >= until:
                break
        if done:
            ended = {id(f) for f, _ in done}
            flows[:] = [f for f in flows if id(f) not in ended]
        for end, _, f in heap:
            f[1] = max(0.0, end - served)
        return done

    def advance(self, now: float) -> None:
        if now > self.t:
            if self.flows:
                self._run(self.flows, self.t, now)
            self.t = now

    def plan(self) -> list[tuple[list, float]]:
        return self._run([list(f) for f in self.flows], self.t, math.inf)


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
        # Downloads that share the link (None: every pod's cold start is independent, drawn at creation).
        self._link = _Link(cold_start.bandwidth, cold_start.pod_bandwidth) if cold_start.shared else None
        if self._link is not None:
            self._link.advance(start)
        for _ in range(initial):
            r = self._new(start, warm=warm)
            if warm:
                self._phase(r, READY)
        if not warm and initial:
            self._replan()
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
        """A pod created at ``now``. With a shared link its ``ready_at`` is set by :meth:`_replan`, which the
        caller runs once after creating a burst."""
        idx = len(self.replicas)
        if warm:
            r = Replica(idx, f"{self.deployment}-{idx}", now, now)
        elif self._link is None:
            r = Replica(idx, f"{self.deployment}-{idx}", now, now + self._cold_start_delay())
        else:
            cs = self.cold_start
            r = Replica(idx, f"{self.deployment}-{idx}", now, math.inf)
            self._link.flows.append([now + cs.scheduling, cs.download_gb, r, cs.engine_start(self._deviate())])
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
        return self.cold_start.at(self._deviate())

    def _deviate(self) -> float:
        """The rng's next standard normal deviate (0 with ``sigma`` 0: no draw), from a batch of 1,024."""
        if self.cold_start.sigma == 0:
            return 0.0
        if not self._normals:
            self._normals = self.rng.standard_normal(1024).tolist()[::-1]
        return self._normals.pop()

    def _replan(self) -> None:
        """Ready times of the pods still downloading, from the link's state (:meth:`_Link.plan`): a pod is
        Ready its engine start after its download ends. Then the loading pods are sorted again."""
        assert self._link is not None, "called only with a shared link"
        for f, end in self._link.plan():
            r = f[2]
            r.downloaded_at = end
            r.ready_at = end + f[3]
        self._pending.sort(key=_ready_at)

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
        link = self._link
        if link is not None:
            link.advance(now)
        if n > current:
            for _ in range(n - current):
                self._new(now)
            if link is not None:
                self._replan()
            return
        active = self.active()
        # Kubernetes removes not-ready pods first, youngest first; then ready ones, youngest first.
        victims = sorted(active, key=lambda r: (r.phase == READY, -r.requested_at, -r.index))[: len(active) - n]
        removed = set()
        for r in victims:
            if r.phase == LOADING:
                self._pending.remove(r)
                self._gone(r, now)
                removed.add(id(r))
            else:
                self._phase(r, DRAINING)
                r.drain_started_at = now
                if self.on_drain(r, now):
                    self._gone(r, now)
        if link is not None and removed:   # pods removed while downloading: their share goes to the others
            n_flows = len(link.flows)
            link.flows[:] = [f for f in link.flows if id(f[2]) not in removed]
            if len(link.flows) != n_flows:
                self._replan()
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
