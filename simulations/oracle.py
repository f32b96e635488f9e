"""The oracle: a lower bound on the GPU-hours any policy needs to meet the SLO on a trace.

Assumptions (what makes it a bound, and what it leaves out):

1. **Demand known in advance**, per 1-minute window ``m``: its **peak
   10-second arrival rate** ``lam_m`` (the largest of its six 10-s bins'
   count / 10 s, :func:`peak_rates`) and mean token sizes ``P_m``, ``L_m``.
2. **Capacity from the fluid model**: one replica meets the SLO up to
   ``lam*_m = max_rate_within_slo(params, P_m, L_m, P95, SLO)`` req/s
   (:mod:`simulations.fleet.model`: TPOT ``t <= slo_tpot`` and
   ``1.5 t + gamma * P95 <= slo_ttft``), so the minute needs
   ``c_m = ceil(lam_m / lam*_m)`` replicas (0 without demand). Perfect
   load balance; bursts shorter than 10 s are ignored. Why the peak 10 s and
   not the minute's mean: a replica count is held for the whole minute (a
   cold start is minutes long, so no plan can follow a 10-s burst), and a
   minute whose arrivals come in one 10-s burst overloads a fleet sized on
   the mean for that burst: its queue takes the rest of the minute to drain,
   far beyond a TTFT SLO of seconds (how far the peak 10 s sits above the
   mean on the bundled traces, and what each sizing attains: ``docs/simulation.md``,
   "The oracle"). A count trace coarser than 10 s is split evenly, so its peak is its mean.
3. **Exact, deterministic cold start** ``C`` (the configured median): a
   replica needed from minute ``m`` is requested at ``start(m) - C`` and paid
   from then. Replicas are interchangeable, so the cheapest plan is per layer
   ``k = 1, 2, ...``: the minutes with ``c_m >= k`` form runs; the layer pays each
   run, one cold start ``C`` before it, and between two runs the cheaper of
   keeping the replica (the gap) or releasing it and paying ``C`` again.
   Replicas that are warm at the start (``initial``) pay no cold start for a
   first run that begins within one cold start of the start; they are paid from
   the start.
4. No drain time, no scale-up/down rate limits, no HPA tolerance.

So the bound holds for policies that hold a replica count per minute and
meet the SLO in every 10-second bin, under the fluid capacity model; a policy that misses the SLO can spend less (ratio < 1).
Its SLO columns in a report come from executing its plan in the same fleet
model (requests at ``start(m) - C``, random cold starts; the replicas the plan
requested before the trace starts are ready at the start): a check of the
plan, not part of the bound (``tests/unit/test_oracle.py::
test_executing_the_plan_meets_the_ttft_slo_on_the_bursty_code_trace``,
``tests/unit/test_runner.py::
test_oracle_plan_executed_in_aggregate_holds_the_planned_replicas``).

Worked example (``tests/unit/test_oracle.py::test_layered_bound_worked_example``):
``c = [1, 1, 0, 0, 0, 2]`` per minute, ``C = 120 s``, nothing warm: layer 1 has
runs minutes 0-1 and 5 with a 180 s gap > C: pays 120 + 120 + 120 + 60 = 420 s;
layer 2 has the run minute 5: 120 + 60 = 180 s; total 600 GPU-seconds.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np

from .fleet.model import ModelParams, max_rate_within_slo, saturation
from .traces import Trace

MINUTE = 60.0       # the plan's step: replicas change at minute boundaries
BURST_BIN = 10.0    # each minute is sized on its busiest bin of this length (the 2024 traces' resolution)


@dataclass(frozen=True)
class OraclePlan:
    start: float                 # unix s of minute 0
    replicas: np.ndarray         # c_m per minute
    gpu_seconds: float           # the bound
    hold: tuple[tuple[float, float], ...]   # (from, to) intervals, one per layer run, in unix s
    infeasible_minutes: int      # minutes where even an idle replica misses the SLO (capacity at 99 % saturation)

    def desired(self, now: float) -> int:
        """Replicas the plan holds at ``now`` (requested, loading or ready): a step function, by bisection."""
        steps = self.__dict__.get("_steps")
        if steps is None:
            ev = sorted([(a, 1) for a, _ in self.hold] + [(b, -1) for _, b in self.hold])
            times: list[float] = []
            level: list[int] = []
            cur = 0
            for t, d in ev:
                cur += d
                if times and times[-1] == t:
                    level[-1] = cur
                else:
                    times.append(t)
                    level.append(cur)
            steps = (times, level)
            object.__setattr__(self, "_steps", steps)
        times, level = steps
        i = bisect.bisect_right(times, now) - 1
        return level[i] if i >= 0 else 0


def layered_bound(c: np.ndarray, minute: float, cold: float, initial: int = 0,
                  start: float = 0.0) -> tuple[float, list[tuple[float, float]]]:
    """GPU-seconds of the cheapest plan holding ``c[m]`` replicas during minute m, and its hold intervals."""
    c = np.asarray(c, dtype=np.int64)
    total = 0.0
    hold: list[tuple[float, float]] = []
    top = int(c.max()) if c.size else 0
    for k in range(1, top + 1):
        on = c >= k
        runs = []
        m = 0
        while m < len(c):
            if on[m]:
                j = m
                while j < len(c) and on[j]:
                    j += 1
                runs.append((m, j))
                m = j
            else:
                m += 1
        cur = None
        for a, b in runs:
            t_a, t_b = start + a * minute, start + b * minute
            if cur is None and k <= initial and t_a - cold <= start:
                # A warm replica at the start, needed before one it requested now could be ready: paid from
                # the start (the time before the trace is nobody's), no cold start.
                cur = [start, t_b]
                total += t_b - start
            elif cur is None:
                cur = [t_a - cold, t_b]
                total += (t_b - t_a) + cold
            elif t_a - cur[1] <= cold:
                total += t_b - cur[1]
                cur[1] = t_b
            else:
                hold.append((cur[0], cur[1]))
                cur = [t_a - cold, t_b]
                total += (t_b - t_a) + cold
        if cur is not None:
            hold.append((cur[0], cur[1]))
    return total, hold


def peak_rates(trace: Trace, minute: float = MINUTE, burst_bin: float = BURST_BIN) -> np.ndarray:
    """Per minute, the highest arrival rate (req/s) of its ``burst_bin``-second bins: ``lam_m`` of the plan.

    A count trace coarser than ``burst_bin`` is split evenly (no burst is invented).
    Pinned by ``tests/unit/test_oracle.py::test_minute_is_sized_on_its_peak_10s_rate``.
    """
    per = int(round(minute / burst_bin))
    fine, _, _ = trace.counts_view(burst_bin)
    n = math.ceil(len(fine) / per)
    padded = np.zeros(n * per)
    padded[: len(fine)] = fine
    return padded.reshape(n, per).max(axis=1) / burst_bin


def minute_replicas(trace: Trace, *, params: ModelParams, slo_ttft: float, slo_tpot: float,
                    max_replicas: int | None = None, minutes: int | None = None) -> tuple[np.ndarray, int]:
    """``c_m`` per minute (assumptions 1-2), for the first ``minutes`` minutes or all; and how many minutes
    were infeasible (sized at 99 % of saturation instead)."""
    counts, pm, om = trace.counts_view(MINUTE)
    peak = peak_rates(trace)
    if minutes is not None:
        counts = counts[:minutes]
    p95 = float(np.percentile(trace.tokens.prompt, 95)) if len(trace.tokens.prompt) else 0.0
    c = np.zeros(len(counts), dtype=np.int64)
    infeasible = 0
    for m, n in enumerate(counts):
        if n <= 0:
            continue
        lam = float(peak[m]) if m < len(peak) else n / MINUTE
        cap = max_rate_within_slo(params, pm[m], om[m], p95, slo_ttft, slo_tpot)
        if cap <= 0:
            infeasible += 1
            cap = 0.99 * saturation(params, pm[m], om[m])[0]
        c[m] = max(1, math.ceil(lam / cap - 1e-9))
    if max_replicas is not None:
        c = np.minimum(c, max_replicas)
    return c, infeasible


def replicas_at_start(trace: Trace, *, params: ModelParams, slo_ttft: float, slo_tpot: float, cold_start: float,
                      max_replicas: int | None = None) -> int:
    """The replicas the plan holds when the trace starts: ``max(c_m)`` over the minutes ``m <= C / 60`` (a
    replica for any of them had to be requested at or before the start). The fair start for every policy: a
    trace cut out of a serving day starts on a fleet sized for it, as the oracle's does; starting a policy
    from fewer replicas charges it a cold start that the oracle does not pay. Pinned by
    ``tests/unit/test_oracle.py::test_replicas_at_start_is_what_the_plan_holds_at_the_start``."""
    c, _ = minute_replicas(trace, params=params, slo_ttft=slo_ttft, slo_tpot=slo_tpot, max_replicas=max_replicas,
                           minutes=int(math.floor(cold_start / MINUTE + 1e-9)) + 1)
    return int(c.max()) if c.size else 0


def plan(trace: Trace, *, params: ModelParams, slo_ttft: float, slo_tpot: float, cold_start: float,
         initial: int = 0, max_replicas: int | None = None) -> OraclePlan:
    c, infeasible = minute_replicas(trace, params=params, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                                    max_replicas=max_replicas)
    total, hold = layered_bound(c, MINUTE, cold_start, initial, trace.start)
    return OraclePlan(trace.start, c, total, tuple(hold), infeasible)
