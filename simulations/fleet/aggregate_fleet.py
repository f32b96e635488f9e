"""The aggregate fidelity: a fluid queue per time slice, for week-long traces of 10-second counts.

Time is cut into slices at bin edges, replica changes and the runner's ticks.
In a slice of ``dt`` seconds with arrival rate ``a`` (req/s, the bin's count /
bin length), ``R`` ready replicas and mean token sizes ``P`` (prompt), ``L``
(output) -- symbols of :mod:`simulations.fleet.model`, where ``kappa`` (KV
tokens per running sequence), ``lam_knee`` and ``lam_sat`` are defined -- a
ready replica is in one of three states:

* **steady** (no backlog, ``a / R < lam_knee`` and the steady cache
  ``n kappa / kv_tokens <= STEADY_KV``): the steady state at ``a / R``: TPOT
  ``t = alpha / (1 - rho)``, running ``n``, KV usage ``n kappa / kv_tokens``; a
  request with prompt ``p`` has ``TTFT = 1.5 t + gamma p``. The share within the
  TTFT SLO is the share of prompts with ``p <= (SLO - 1.5 t) / gamma``, read from
  the trace's prompt-size distribution;
* **dynamic** (near or past the knee): the replica's requests are cohorts, one
  per sub-step of at most ``SUBSTEP`` seconds: ``x`` requests admitted at step
  ``s0`` (the replica's step count), of which the share ``S(s - s0)`` still runs
  at step ``s``, ``S(g) = P(O > g + 1)`` from the trace's output sizes (rescaled
  to the bin's ``L``), each holding ``P + (s - s0) + b/2`` KV tokens. Per
  sub-step of ``h`` seconds: step time ``t = (alpha + beta n) / (1 - gamma Pi)``
  (``n`` at the sub-step's middle, ``Pi`` the prefill tokens/s of the last
  sub-step: admissions x ``P`` plus recomputes), ``h / t`` steps; arrivals (and
  the backlog) are admitted while the cache holds them: the admitted ``x`` keeps
  ``K + FLUCT_Z sd(K) <= kv_tokens`` at the sub-step's end (``K`` the KV tokens
  of the cohorts, ``sd(K)^2 = sum of x S (footprint^2 + var P)``, the Poisson
  spread of a population of requests: the engine's cache is full when its
  fluctuations reach capacity, before its mean does) and ``n <= max_num_seqs``;
  the rest wait. While the cache bounds admission, ``eps`` x completions are
  preempted and recomputed (``gamma`` x ``P + b`` each, in ``Pi``). The cache
  therefore creeps up as fast as the admitted load outgrows the completions
  (slowly just past the knee, where ``t`` grows with ``n``), and the queue forms
  when it is full: the onset comes out of these dynamics;
* **saturated** (a sub-step-long bound and a backlog for a whole slice):
  replicas run ``n_max`` sequences at ``t_sat`` and serve ``C = R * lam_sat``
  req/s first-come first-served (preemptions recomputed); arrivals join a FIFO
  backlog of chunks, and a chunk served at time ``s`` waited ``w = s -
  arrival``: ``TTFT = w + 1.5 t_sat + gamma p``. When the backlog is gone and
  ``a < C`` the state turns dynamic, from the saturated population;
* **no ready replica**: arrivals are held at the gateway; held work older than
  ``request_timeout`` is unserved (the per-request rule, applied to chunks).

Steady -> dynamic builds the steady population as cohorts (admitted at ``a/R``
every ``SUBSTEP`` seconds, back to the longest output); dynamic -> steady when the
steady state is allowed again and the cache is at most ``STEADY_KV``.

Every request of a slice gets the slice's TPOT, so the TPOT share is 0 or 1 per
slice. Draining replicas take no new work and are gone ``L * t`` seconds later
(the time their in-flight requests need). Signals: waiting = backlog, running
= ``R n``, KV usage as above, P95 TTFT = the arrival-weighted
95th percentile over the window's slices of ``w + 1.5 t`` plus ``gamma`` times
the 95th-percentile prompt (an upper bound on the true quantile of the sum;
exact when the window's slices agree), P95 TPOT = the weighted 95th percentile
of ``t``.

Worked example of the dynamic state (``tests/unit/test_fleet.py::test_aggregate_dynamic_worked_example``):
``alpha = 0.01``, ``beta = 0.0001``, ``gamma = 0``, ``kv_tokens = 100000``, fixed sizes ``P = 100``, ``L =
1000``, 10 req/s into one empty replica (``rho = 10 * 0.1 = 1``: no steady state). The 10-s bin is two
sub-steps of 5 s. First: ``n = 0``, ``t = 0.01 s``, 500 steps; 50 requests admitted at step 250 (all still
running: ``250 + 1 < 1000``), each holding ``100 + 250 + 8 = 358`` tokens: ``n = 50``, ``K = 17,900``.
Second: ``n`` at its middle ``50 + 25 = 75``, ``t = 0.0175 s``, 285.7 steps; the first cohort is 535.7 steps
old (``100 + 535.7 + 8 = 643.7`` tokens each), the new one 142.9 (250.9 tokens): ``n = 100``, ``K = 50 *
643.7 + 50 * 250.9 = 44,728``, KV usage 0.447. The onset of overload on the testbed's workload, against
the engine: ``tests/unit/test_fleet_fidelity.py::test_overload_onset_agrees``.

Cross-checked against :class:`~simulations.fleet.request_fleet.RequestFleet` on
the same input by ``tests/unit/test_fleet_fidelity.py``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

from scaler.signals import Signals

from .base import AfterIdle, FleetBase, FleetOutcome, first_after_idle, window_attainment
from .lifecycle import ColdStartModel, Replica, ReplicaSet
from .model import ModelParams, knee, kv_per_sequence, preemption_ratio, saturation

STEADY_KV = 0.9     # a steady state holding more of the KV cache than this is followed in the dynamic state
SUBSTEP = 5.0       # seconds: the dynamic state's sub-step and cohort spacing
SURV_TAIL = 1e-3    # the dynamic state follows a cohort until this share of it is left (the longest 0.1 %)
FLUCT_Z = 1.0       # the cache counts as full when its mean is within FLUCT_Z standard deviations of capacity


def _weighted_quantile(pairs: list[tuple[float, float]], q: float, tot: float | None = None) -> float | None:
    """The ``q`` quantile of values weighted by ``pairs = [(value, weight)]`` (sorts ``pairs``): the first
    value in increasing order where the running weight reaches ``q`` x the total. ``tot``, when given, is
    that total summed in the pairs' order (``AggregateFleet._window``'s ``served``): not summed again."""
    if not pairs:
        return None
    if len(pairs) == 1:
        return pairs[0][0]
    if tot is None:
        tot = 0.0
        for _, w in pairs:
            tot += w
    if tot <= 1e-12:
        return None
    pairs.sort()
    acc, goal = 0.0, q * tot - 1e-12
    for v, w in pairs:
        acc += w
        if acc >= goal:
            return v
    return pairs[-1][0]


def _floats(values: list[float]) -> np.ndarray:
    """A float64 array of a slice log (Python floats): ``np.fromiter`` skips ``np.asarray``'s type discovery
    over a list of some 10^5 entries (the same array)."""
    return np.fromiter(values, dtype=np.float64, count=len(values))


class AggregateFleet(FleetBase):
    """Fluid fleet over bins of request counts (see the module docstring)."""

    fidelity = "aggregate"

    def __init__(self, counts, *, bin_seconds: float, prompt_mean, output_mean, prompt_pool, params: ModelParams,
                 cold_start: ColdStartModel, start: float, initial_replicas: int, slo_ttft: float, slo_tpot: float,
                 seed: int = 0, request_timeout: float = 60.0, deployment: str = "vllm", output_pool=None):
        self.counts = np.asarray(counts, dtype=float)
        nb = len(self.counts)
        self.P = np.broadcast_to(np.asarray(prompt_mean, dtype=float), (nb,)).tolist()
        self.L = np.broadcast_to(np.asarray(output_mean, dtype=float), (nb,)).tolist()
        self.rate = (self.counts / bin_seconds).tolist()
        self._nbins = nb
        self.bin = float(bin_seconds)
        self.end_time = start + nb * bin_seconds
        pool = np.sort(np.asarray(prompt_pool, dtype=float))
        if pool.size == 0:
            raise ValueError("prompt_pool must hold at least one prompt size")
        self.pool = pool.tolist()
        self.prompt_p95 = float(np.percentile(pool, 95))
        self._prompt_cv2 = float(np.var(pool) / max(1e-12, float(np.mean(pool)) ** 2))
        # output sizes: their spread E[O^2] / E[O]^2 (kv_per_sequence) and survival (the dynamic state)
        opool = np.sort(np.asarray(output_pool if output_pool is not None else [1.0], dtype=float))
        if output_pool is not None and opool.size == 0:
            raise ValueError("output_pool must hold at least one output size (or be None: fixed sizes)")
        opool = np.maximum(opool, 1.0)
        self.spread = float(np.mean(opool ** 2) / np.mean(opool) ** 2)
        self._opool = opool.tolist()
        self._opool_mean = float(opool.mean())
        # survival table: _surv[k] = share of outputs O > k tokens, k = 0 .. max O (0 past the end)
        # (cut where under SURV_TAIL of them are left: the dynamic state's cohorts end there)
        ks = np.arange(int(opool[-1]) + 2)
        surv = 1.0 - np.searchsorted(opool, ks, side="right") / opool.size
        self._surv = surv[:max(1, int(np.argmax(surv < SURV_TAIL)))].tolist()
        self.params = params
        # per-bin constants of the steady state (simulations.fleet.model), precomputed for speed: computed once
        # per distinct (P, L) pair (a count trace has one pair for every bin; a request trace one per bin)
        consts: dict[tuple[float, float], tuple[float, ...]] = {}
        for pl in zip(self.P, self.L):
            if pl not in consts:
                p_, l_ = pl
                lam_sat, t_sat, nmax = saturation(params, p_, l_, self.spread)
                kappa = kv_per_sequence(params, p_, l_, self.spread)
                eps = preemption_ratio(params, p_, l_, nmax) if params.kv_tokens // kappa <= params.max_num_seqs \
                    else 0.0
                consts[pl] = (lam_sat, t_sat, float(nmax), params.beta * max(1.0, l_) + params.gamma * p_,
                              knee(params, p_, l_, self.spread), kappa, eps)
        per_bin = [consts[pl] for pl in zip(self.P, self.L)]
        self._lam_sat = [x[0] for x in per_bin]
        self._t_sat = [x[1] for x in per_bin]
        self._nmax = [x[2] for x in per_bin]
        self._cost = [x[3] for x in per_bin]
        self._knee = [x[4] for x in per_bin]
        self._kappa = [x[5] for x in per_bin]
        self._eps = [x[6] for x in per_bin]
        self.slo_ttft, self.slo_tpot = slo_ttft, slo_tpot
        self.start = start
        self.now = start
        self.request_timeout = request_timeout
        self.rs = ReplicaSet(cold_start, np.random.default_rng(seed), start=start, initial=initial_replicas,
                             deployment=deployment)
        self.rs.on_drain = self._on_drain
        self._cold_signal = cold_start.signal()   # a frozen value: built once, not per signals() call
        self._drains: list[tuple[float, Replica]] = []
        self.backlog: deque[list] = deque()   # FIFO chunks [arrival time, amount, record index]
        self.backlog_total = 0.0
        self.unserved = 0.0
        # per-slice log (python lists: appended in time order)
        self.s_t: list[float] = []       # slice start
        self.s_dt: list[float] = []
        self.s_arr: list[float] = []     # arrivals in the slice
        self.s_ttft_ok: list[float] = []  # of those arrivals, served within the TTFT SLO (filled when served)
        self.s_tpot_ok: list[float] = []
        self.s_served: list[float] = []  # requests getting their first token in the slice
        self.s_base: list[float] = []    # served-weighted mean of (wait + 1.5 t)
        self.s_t_iter: list[float] = []
        self.s_p: list[float] = []
        self.s_l: list[float] = []
        self.s_rec_served: list[float] = []  # of the slice's arrivals, served so far (first token)
        self.s_rec_base: list[float] = []    # sum over those of (wait + 1.5 t)
        self._state = (0.0, 0.0, 0.0)    # running per replica, iteration time, P (last slice)
        self._kv = 0.0                   # KV usage of a ready replica (fraction)
        self._mode = "steady"            # steady | dynamic | saturated (module docstring)
        self._cohorts: list[list[float]] = []   # dynamic: [admission step, requests per replica, prompt]
        self._steps = 0.0                # dynamic: steps run so far by a replica (the cohorts' clock)
        self._pi = 0.0                   # dynamic: prefill tokens/s of a replica in the last sub-step
        self._R_dyn = 0                  # dynamic: ready replicas the cohorts are per
        self._nK = (0.0, 0.0)            # dynamic: running and KV tokens of a replica now
        self._dn = 0.0                   # dynamic: change of running over the last sub-step
        self.preemptions = 0.0           # preemptions so far (fleet, fluid)
        self._merge_key: tuple | None = None   # (bin, R, rate) of the last slice when it can be extended
        self._merge_share = (0.0, 0.0, 0.0)
        self._cum: np.ndarray | None = None      # cumulative counts at bin edges (built on first _history)
        self._edges: np.ndarray | None = None
        self._history_memo: dict[float, tuple[float, float]] = {}   # t -> (t, req/s): see _history
        self._history_last_miss = -math.inf
        self._history_last: tuple | None = None    # (minute end, history, points) of the last call

    # -- lifecycle -----------------------------------------------------------------------------
    def _on_drain(self, r: Replica, now: float) -> bool:
        n, t, _ = self._state
        b = self._bin_index(now)
        L = self.L[b] if b is not None else 1.0
        if n <= 0:
            return True
        self._drains.append((now + L * t, r))
        return False

    def _bin_index(self, t: float) -> int | None:
        b = int((t - self.start) // self.bin)
        return b if 0 <= b < len(self.rate) else None

    def _share_ttft_ok(self, wait_plus: float) -> float:
        """Share of prompts p with wait_plus + gamma*p <= SLO."""
        g = self.params.gamma
        room = self.slo_ttft - wait_plus
        if room < 0:
            return 0.0
        if g <= 0:
            return 1.0
        return bisect.bisect_right(self.pool, room / g) / len(self.pool)

    # -- time ----------------------------------------------------------------------------------
    def advance_to(self, T: float) -> None:
        # Hot path (called several times per controller tick): locals, no call when nothing is due.
        rs = self.rs
        pending = rs._pending         # loading pods sorted by ready_at (ReplicaSet.pending, without the property)
        now = self.now
        if now >= T - 1e-9:           # already there (a controller's scale_to right after the runner's advance)
            if pending and pending[0].ready_at <= now:
                rs.promote_due(now)
            return
        drains = self._drains
        start, bin_, nbins = self.start, self.bin, self._nbins
        stop = T - 1e-9
        while now < stop:
            t0 = now
            if pending and pending[0].ready_at <= t0:
                rs.promote_due(t0)
            if drains:
                for end, r in list(drains):
                    if end <= t0:
                        drains.remove((end, r))
                        rs.finish_drain(r, end)
            k = int((t0 - start) // bin_)
            b = k if 0 <= k < nbins else None
            t1 = T
            if b is not None:
                edge = start + (b + 1) * bin_
                if edge < t1:
                    t1 = edge
            if pending:
                nr = pending[0].ready_at
                if nr < t1:
                    t1 = nr
            for e, _ in drains:       # = min(t1, min(drain ends)), without a generator per slice
                if e < t1:
                    t1 = e
            if t1 <= t0:
                t1 = min(T, t0 + 1e-6)
            self._slice(t0, t1, b)
            self.now = now = t1
        if pending and pending[0].ready_at <= now:
            rs.promote_due(now)

    def _slice(self, t0: float, t1: float, b: int | None) -> None:
        dt = t1 - t0
        R = self.rs._n["ready"]      # ReplicaSet.n_ready, without the property call (every slice)
        if b is not None:
            a = self.rate[b]
            mk = self._merge_key
            if mk is not None and mk[0] == b and mk[1] == R and mk[2] == a and self.backlog_total <= 1e-9:
                # Same bin, same replicas, no backlog: the steady state is unchanged; extend the last slice.
                arrivals = a * dt
                merged = self._merge_share
                self.s_dt[-1] += dt
                self.s_arr[-1] += arrivals
                self.s_served[-1] += arrivals
                self.s_ttft_ok[-1] += arrivals * merged[0]
                self.s_tpot_ok[-1] += arrivals * merged[1]
                self.s_rec_served[-1] += arrivals
                self.s_rec_base[-1] += arrivals * merged[2]
                return
            P = self.P[b]
            L = self.L[b]
        else:
            a, P, L = 0.0, 0.0, 1.0
            if R > 0:
                b = len(self.rate) - 1 if t0 >= self.start else 0
                if self._merge_key is not None and self._merge_key == (b, R, a) and self.backlog_total <= 1e-9:
                    self.s_dt[-1] += dt       # no arrivals outside the trace: only the span grows
                    return
        self._merge_key = None
        rec = len(self.s_t)
        arrivals = a * dt
        self.s_t.append(t0)
        self.s_dt.append(dt)
        self.s_arr.append(arrivals)
        self.s_p.append(P)
        self.s_l.append(L)
        if R == 0:
            self.s_ttft_ok.append(0.0)
            self.s_tpot_ok.append(0.0)
            self.s_rec_served.append(0.0)
            self.s_rec_base.append(0.0)
            if arrivals > 0:
                self.backlog.append([t0 + dt / 2, arrivals, rec])
                self.backlog_total += arrivals
            while self.backlog and self.backlog[0][0] + self.request_timeout < t1:
                chunk = self.backlog.popleft()
                self.backlog_total -= chunk[1]
                self.unserved += chunk[1]
            if self.backlog_total < 1e-9:
                # as the saturated path below rounds its total: a sliver it zeroed may still time out here
                self.backlog_total = 0.0
            self.s_served.append(0.0)
            self.s_base.append(0.0)
            self.s_t_iter.append(0.0)
            self._state = (0.0, 0.0, P)
            self._kv = 0.0
            self._mode = "steady"
            self._cohorts = []
            return
        assert b is not None, "with replicas ready, b is the trace's bin or its nearest end (above)"
        lam_sat, t_sat, nmax = self._lam_sat[b], self._t_sat[b], self._nmax[b]
        cap = R * lam_sat
        mode = self._mode
        if mode == "saturated" and self.backlog_total <= 1e-9 and a < cap:
            # the queue is gone: leave saturation through the dynamic state, from the saturated population
            self._synthesize(lam_sat, t_sat, R)
            mode = self._mode = "dynamic"
        per = a / R
        if mode != "saturated":
            kv_tokens = self.params.kv_tokens
            steady = self.backlog_total <= 1e-9 and per < self._knee[b]
            if steady:
                t = self.params.alpha / (1.0 - per * self._cost[b])
                running = per * max(1.0, L) * t
                kv = running * self._kappa[b] / kv_tokens
                steady = kv <= STEADY_KV and (mode == "steady" or self._kv <= STEADY_KV)
            if not steady:
                if mode == "steady":
                    n_prev, t_prev, _ = self._state
                    self._synthesize(n_prev / (max(1.0, L) * t_prev) if t_prev > 0 else 0.0, t_prev, R)
                    self._mode = "dynamic"
                for log in (self.s_ttft_ok, self.s_tpot_ok, self.s_rec_served, self.s_rec_base, self.s_served,
                            self.s_base, self.s_t_iter):
                    log.append(0.0)
                self._dynamic(t0, dt, b, R, a, rec)
                return
            self._mode = "steady"
            self._kv = kv
            base = 1.5 * t
            share = self._share_ttft_ok(base)
            tpot_share = 1.0 if t <= self.slo_tpot else 0.0
            self.s_ttft_ok.append(arrivals * share)
            self.s_tpot_ok.append(arrivals if t <= self.slo_tpot else 0.0)
            self.s_rec_served.append(arrivals)
            self.s_rec_base.append(arrivals * base)
            self.s_served.append(arrivals)
            self.s_base.append(base)
            self.s_t_iter.append(t)
            self._state = (running, t, P)
            self._merge_key = (b, R, a)
            self._merge_share = (share, tpot_share, base)
            self.backlog.clear()
            self.backlog_total = 0.0
            return
        self.s_ttft_ok.append(0.0)
        self.s_tpot_ok.append(0.0)
        self.s_rec_served.append(0.0)
        self.s_rec_base.append(0.0)
        # Saturated, or draining a backlog: FIFO service at `cap` req/s.
        # Hot path (most slices of an under-provisioned week): locals, _share_ttft_ok inlined.
        backlog = self.backlog
        total = self.backlog_total
        if arrivals > 0:
            backlog.append([t0 + dt / 2, arrivals, rec])
            total += arrivals
        budget = cap * dt
        done = 0.0
        wsum = 0.0
        tpot_ok = t_sat <= self.slo_tpot
        ttft_ok_log, tpot_ok_log = self.s_ttft_ok, self.s_tpot_ok
        rec_served, rec_base = self.s_rec_served, self.s_rec_base
        slo, g, pool = self.slo_ttft, self.params.gamma, self.pool
        npool = len(pool)
        pool_max = pool[-1]
        busy = 1.5 * t_sat
        bisect_right = bisect.bisect_right
        while backlog and budget > 1e-12:
            chunk = backlog[0]
            left = chunk[1]
            take = left if left <= budget else budget
            served_at = t0 + (done + take / 2) / cap
            wait = served_at - chunk[0]
            if not wait > 0.0:
                wait = 0.0
            base = wait + busy
            room = slo - base          # _share_ttft_ok(base), inlined
            if room < 0:
                share = 0.0
            elif g <= 0:
                share = 1.0
            else:
                x = room / g           # every prompt fits: bisect_right would give npool, and npool / npool == 1.0
                share = 1.0 if x >= pool_max else bisect_right(pool, x) / npool
            j = chunk[2]
            ttft_ok_log[j] += take * share
            if tpot_ok:
                tpot_ok_log[j] += take
            wsum += take * base
            rec_served[j] += take
            rec_base[j] += take * base
            done += take
            budget -= take
            chunk[1] = left = left - take
            total -= take
            if left <= 1e-12:
                backlog.popleft()
        if total < 1e-9:
            total = 0.0
        self.backlog_total = total
        self.s_served.append(done)
        self.s_base.append(wsum / done if done > 0 else busy)
        self.s_t_iter.append(t_sat)
        self._state = (float(nmax) if done >= cap * dt * 0.999 else done / dt * L * t_sat / R, t_sat, P)
        self._kv = min(1.0, self._state[0] * self._kappa[b] / self.params.kv_tokens)
        self.preemptions += self._eps[b] * done

    # -- the dynamic state: cohorts of admitted requests ---------------------------------------
    def _survival(self, age: float, L: float) -> float:
        """Share of requests still running ``age`` steps after their prefill: output ``O > age + 1`` (the
        output pool rescaled to the bin's mean ``L``; integer sizes, so ``O > x`` is ``O > floor(x)``)."""
        k = int((age + 1.0) * self._opool_mean / L)
        tab = self._surv
        return tab[k] if k < len(tab) else 0.0

    def _synthesize(self, rate: float, t: float, R: int) -> None:
        """Cohorts of the steady state of a replica admitting ``rate`` req/s at step time ``t``: one every
        ``SUBSTEP`` seconds back to the longest output."""
        self._cohorts = []
        self._R_dyn = R
        self._nK = (0.0, 0.0)
        self._dn = 0.0
        if rate <= 0 or t <= 0:
            self._pi = 0.0
            return
        b = self._bin_index(self.now - 1e-9)
        b = b if b is not None else (len(self.rate) - 1 if self.now >= self.start else 0)
        P, L = self.P[b], max(1.0, self.L[b])
        ds = SUBSTEP / t
        k = 0
        n = K = 0.0
        while True:
            age = (k + 0.5) * ds
            sv = self._survival(age, L)
            if sv <= 0:
                break
            self._cohorts.append([self._steps - age, rate * SUBSTEP, P])
            n += rate * SUBSTEP * sv
            K += rate * SUBSTEP * sv * (P + age + self.params.block_size / 2)
            k += 1
        self._cohorts.reverse()
        self._nK = (n, K)
        self._pi = rate * P

    def _dynamic(self, t0: float, dt: float, b: int, R: int, a: float, rec: int) -> None:
        """One slice in the dynamic state (module docstring), in sub-steps of at most ``SUBSTEP`` seconds."""
        p = self.params
        alpha, beta, gamma, kv_tokens, bs = p.alpha, p.beta, p.gamma, p.kv_tokens, p.block_size
        P, L = self.P[b], max(1.0, self.L[b])
        cohorts = self._cohorts
        if self._R_dyn != R:                       # replicas came or went: the same requests, spread anew
            if self._R_dyn > 0:
                f = self._R_dyn / R
                for c in cohorts:
                    c[1] *= f
                self._nK = (self._nK[0] * f, self._nK[1] * f)
            self._R_dyn = R
        surv = self._survival
        tab = self._surv
        ntab = len(tab)
        scale = self._opool_mean / L
        cv2 = self._prompt_cv2
        steps = self._steps
        n, K = self._nK
        backlog = self.backlog
        total = self.backlog_total
        k_sub = max(1, math.ceil(dt / SUBSTEP - 1e-9))
        h = dt / k_sub
        served = wsum = tsum = 0.0
        t = self._state[1] or alpha
        all_bound = True
        for j in range(k_sub):
            ts = t0 + j * h
            arr = a * h
            if arr > 0:
                backlog.append([ts + h / 2, arr, rec])
                total += arr
            # the step time at the sub-step's middle: n extrapolated from the last sub-step's change
            n_mid = n + 0.5 * self._dn
            if n_mid < 0:
                n_mid = 0.0
            t = (alpha + beta * n_mid) / max(0.05, 1.0 - gamma * self._pi)
            ds = h / t
            s1 = steps + ds
            n_old = K_old = K2 = 0.0
            dead = 0                              # cohorts are oldest first: the finished ones are a prefix
            for c in cohorts:
                age = s1 - c[0]
                k = int((age + 1.0) * scale)      # _survival(age, L), inlined
                if k >= ntab:
                    dead += 1
                    continue
                sv = c[1] * tab[k]
                n_old += sv
                fp = c[2] + age + bs / 2
                K_old += sv * fp
                K2 += sv * (fp * fp + cv2 * c[2] * c[2])
            if dead:
                del cohorts[:dead]
            s_new = surv(ds / 2, L)
            f_new = P + ds / 2 + bs / 2
            cand = total / R
            if s_new > 0:
                room_kv = (kv_tokens - FLUCT_Z * math.sqrt(K2) - K_old) / (s_new * f_new)
                room_seq = (p.max_num_seqs - n_old) / s_new
            else:                                 # they all finish within the sub-step
                room_kv = room_seq = math.inf
            x = min(cand, room_kv, room_seq)
            if x < 0:
                x = 0.0
            bound = x < cand - 1e-9
            if x > 0:
                s0 = steps + ds / 2
                last = cohorts[-1] if cohorts else None
                if last is not None and s0 - last[0] < SUBSTEP / t and last[2] == P:
                    # admitted within one sub-step of the newest cohort (short slices): one cohort, at the
                    # admission-weighted mean step
                    w = last[1] + x
                    last[0] = (last[0] * last[1] + s0 * x) / w
                    last[1] = w
                else:
                    cohorts.append([s0, x, P])
            n_end = n_old + x * s_new
            K_end = K_old + x * s_new * f_new
            eps = 0.0
            if bound and room_kv <= room_seq:
                eps = preemption_ratio(p, P, L, n_end)
                self.preemptions += eps * max(0.0, n + x - n_end) * R
            self._pi = (x * P + eps * max(0.0, n + x - n_end) * (P + bs)) / h
            all_bound = all_bound and bound
            # serve x * R requests first come first served
            budget = x * R
            rate_s = budget / h if h > 0 else 0.0
            done = 0.0
            busy = 1.5 * t
            while backlog and budget > 1e-12:
                chunk = backlog[0]
                left = chunk[1]
                take = left if left <= budget else budget
                if not bound and chunk[0] >= ts:
                    wait = 0.0           # arrived in this sub-step and served in it: no queue
                else:
                    wait = ts + (done + take / 2) / rate_s - chunk[0]
                    if not wait > 0.0:
                        wait = 0.0
                base = wait + busy
                jrec = chunk[2]
                self.s_ttft_ok[jrec] += take * self._share_ttft_ok(base)
                if t <= self.slo_tpot:
                    self.s_tpot_ok[jrec] += take
                self.s_rec_served[jrec] += take
                self.s_rec_base[jrec] += take * base
                wsum += take * base
                tsum += take * t
                done += take
                budget -= take
                chunk[1] = left - take
                total -= take
                if chunk[1] <= 1e-12:
                    backlog.popleft()
            served += done
            steps = s1
            self._dn = n_end - n
            n, K = n_end, K_end
        if total < 1e-9:
            total = 0.0
        self.backlog_total = total
        self._steps = steps
        self.s_served[-1] += served
        self.s_base[-1] = wsum / served if served > 0 else 1.5 * t
        self.s_t_iter[-1] = tsum / served if served > 0 else t
        self._state = (n, t, P)
        self._nK = (n, K)
        self._kv = min(1.0, K / kv_tokens)
        if all_bound and total > 0:
            self._mode = "saturated"

    def scale_to(self, n: int, now: float) -> None:
        self.advance_to(now)
        self.rs.scale_to(n, now)

    def in_flight(self) -> float:
        n, _, _ = self._state
        return self.backlog_total + n * self.rs.count("ready")

    # -- what Prometheus would see -------------------------------------------------------------
    def waiting_and_pods(self, now: float) -> tuple[float | None, int]:
        self.advance_to(now)
        pods = self.rs.count("ready") + self.rs.count("draining")
        return (self.backlog_total if pods else None), pods

    def _window(self, now: float, window: float):
        """The slices of ``(now - window, now]``: (arrivals, served, prompt sum, output sum, TTFT pairs, TPOT
        pairs, span), read by :meth:`signals` and :meth:`rate_and_ttft_p95`. ``served`` is the sum of the
        pairs' weights, added in their order (what :func:`_weighted_quantile` would add up again)."""
        self.advance_to(now)
        lo_t = now - window
        span = self.observed_span(now, window)
        s_t = self.s_t
        i = bisect.bisect_right(s_t, lo_t) - 1
        if i < 0:
            i = 0
        arrivals = served = psum = lsum = 0.0
        ttft_pairs, tpot_pairs = [], []
        n_slices = len(s_t)
        if i < n_slices:
            s_dt, s_arr, s_served = self.s_dt, self.s_arr, self.s_served
            s_base, s_iter, s_p, s_l = self.s_base, self.s_t_iter, self.s_p, self.s_l
            # Only the first slice can straddle the window's start (slice starts increase strictly): it counts
            # for its share f of the span (none when f <= 0); every later slice counts whole (f = 1, and
            # x * 1.0 == x exactly).
            st = s_t[i]
            if st >= lo_t:
                f = 1.0
            else:
                d = s_dt[i]
                f = (st + d - lo_t) / d if d > 0 else 0.0
                if f <= 0:
                    i, f = i + 1, 1.0
            for k in range(i, n_slices):    # indexing: no copies of the lists' tails (zip over slices)
                arrivals += s_arr[k] * f
                sv = s_served[k] * f
                f = 1.0
                if sv > 0:
                    served += sv
                    ttft_pairs.append((s_base[k], sv))
                    tpot_pairs.append((s_iter[k], sv))
                    psum += s_p[k] * sv
                    lsum += s_l[k] * sv
        return arrivals, served, psum, lsum, ttft_pairs, tpot_pairs, span

    def rate_and_ttft_p95(self, now: float, window: float) -> tuple[float | None, float | None]:
        """``(signals(now, window).arrival_rate, .ttft_p95)`` without the rest (the runner's timeline)."""
        arrivals, served, _, _, ttft_pairs, _, span = self._window(now, window)
        return (arrivals / span if span > 0 else None), self._ttft_p95(ttft_pairs, served)

    def _ttft_p95(self, ttft_pairs: list[tuple[float, float]], served: float | None = None) -> float | None:
        """P95 TTFT: the weighted 95th percentile of ``wait + 1.5 t`` plus ``gamma`` x the 95th-percentile
        prompt (module docstring)."""
        base95 = _weighted_quantile(ttft_pairs, 0.95, served)
        return base95 + self.params.gamma * self.prompt_p95 if base95 is not None else None

    def signals(self, now: float, window: float, *, upstream: bool = False, history: float = 0.0) -> Signals:
        arrivals, served, psum, lsum, ttft_pairs, tpot_pairs, span = self._window(now, window)
        ttft95 = self._ttft_p95(ttft_pairs, served)
        n_ready = self.rs.count("ready")
        pods = n_ready + self.rs.count("draining")
        n, t, P = self._state
        history_pairs: tuple[tuple[float, float], ...] = ()
        if history > 0:
            history_pairs = self._history(now, history)
        return Signals(
            observed_at=now,
            pods_reporting=pods,
            waiting=self.backlog_total if pods else None,
            running=n * n_ready if pods else None,
            kv_cache_usage=self._kv * n_ready / pods if pods else None,
            ttft_p95=ttft95,
            tpot_p95=_weighted_quantile(tpot_pairs, 0.95, served),
            completion_rate=served / span if span > 0 else None,
            arrival_rate=arrivals / span if span > 0 else None,
            prompt_tokens_mean=psum / served if served > 0 else None,
            output_tokens_mean=lsum / served if served > 0 else None,
            ready_replicas=n_ready,
            starting_replicas=self.rs.count("loading"),
            upstream_demand=self.in_flight() if upstream else None,
            cold_start=self._cold_signal,
            demand_history=history_pairs,
        )

    def _history(self, now: float, history: float) -> tuple[tuple[float, float], ...]:
        """(t, req/s over the minute ending at t) every 60 s over the last ``history`` seconds, as
        ``DemandHistoryReader`` reads them: ``t`` on absolute minute boundaries up to the start of ``now``'s
        minute, none reaching before the trace (no zeros for "before it existed").

        The count over ``(t - 60, t]`` is ``C(t) - C(t - 60)``, ``C`` the cumulative count, linear within
        a bin (``np.interp`` over the bin edges). A point depends on ``t`` alone: every decision within one
        minute reads the same points (the last tuple is returned again), and the next minute's share all
        but the newest, so each point is computed once, by the same numpy calls, and memoised by ``t``:
        the tuple is the one the direct computation gives
        (``tests/unit/test_aggregate_history.py::test_memoised_history_matches_the_direct_computation``).
        """
        cum, edges = self._cum, self._edges     # built together, on the first call
        if cum is None or edges is None:
            cum = self._cum = np.concatenate([[0.0], np.cumsum(self.counts)])
            edges = self._edges = self.start + self.bin * np.arange(len(cum))
        at = self.history_minute(now)
        last = self._history_last
        if last is not None and last[0] == at and last[1] == history:
            return last[2]    # every decision within one minute reads the same points
        memo = self._history_memo
        ts = self.history_instants(at, history)
        for t in ts:
            if t not in memo:
                # Decisions come at a steady pace: compute this point and the next 255 at the stride since the
                # previous miss in one np.interp call (a guessed instant that never comes is never read).
                stride = t - self._history_last_miss
                self._history_last_miss = t
                batch = [t + k * stride for k in range(256)] if 0 < stride <= 3600 else [t]
                c = np.interp(np.array(batch + [x - 60.0 for x in batch]), edges, cum).tolist()
                n = len(batch)
                for k, x in enumerate(batch):
                    memo[x] = (x, (c[k] - c[n + k]) / 60.0)
        if len(memo) > 4096:   # a long run: keep the latest points (later decisions read those)
            for t in sorted(memo)[:-1024]:
                del memo[t]
        out = tuple([memo[t] for t in ts])
        self._history_last = (at, history, out)
        return out

    def pod_states(self) -> list[tuple[Replica, int, int, float]]:
        n, _, P = self._state
        ready = self.rs.ready()
        if not ready:
            return []
        per_wait = self.backlog_total / len(ready)
        kv = self._kv
        return [(r, int(round(per_wait)), int(round(n)), kv) for r in ready]

    # -- outcomes ------------------------------------------------------------------------------
    def outcome(self, end: float, slo_ttft: float, slo_tpot: float,
                after_idle: AfterIdle = AfterIdle()) -> FleetOutcome:
        """Outcomes; "first after idle" works on slices (gaps to the slice, TTFT per slice: the mean of its
        served arrivals' ``wait + 1.5 t`` plus ``gamma`` x the median prompt, inf when under half were served)."""
        self.advance_to(end)
        st, dt = _floats(self.s_t), _floats(self.s_dt)
        t = st + dt / 2
        arr = _floats(self.s_arr)
        ok = _floats(self.s_ttft_ok)
        sv, bs = _floats(self.s_rec_served), _floats(self.s_rec_base)
        with np.errstate(invalid="ignore", divide="ignore"):
            rep_ttft = np.where(sv >= 0.5 * arr, bs / np.maximum(sv, 1e-12), np.inf) \
                + self.params.gamma * self.pool[len(self.pool) // 2]
        idle_n, idle_ok, idle_p50 = first_after_idle(st, st + dt, arr, ok, rep_ttft, after_idle)
        return FleetOutcome(
            requests=float(arr.sum()),
            ttft_ok=float(ok.sum()),
            tpot_ok=float(_floats(self.s_tpot_ok).sum()),
            window_attainment=window_attainment(t, ok, arr, self.start, end),
            gpu_seconds=self.rs.gpu_seconds(end),
            cold_starts=self.rs.cold_starts,
            scale_events=self.rs.scale_events,
            seconds_at_zero=self.rs.seconds_at_zero(end),
            unserved=float(self.unserved),
            after_idle_requests=idle_n,
            after_idle_ttft_ok=idle_ok,
            after_idle_ttft_p50=idle_p50,
        )
