"""What every fleet fidelity offers the runner, and the outcome it reports.

A fleet is driven by a virtual clock the runner owns: ``advance_to(T)``,
``scale_to(n, now)`` (the Deployment's ``spec.replicas``), ``signals(now,
window)`` (what the scaler would read from Prometheus), replica counts for the
HPA (``status_replicas``: loading + ready pods; ``ready_replicas``), and
``outcome(end, slo_ttft, slo_tpot)``.

Outcome definitions (docs/simulation.md, "Outcomes"):

* ``ttft_ok`` / ``tpot_ok``: requests whose TTFT (arrival to first token, gateway
  hold and queueing included) / TPOT ((last token - first token) / (output - 1);
  a one-token answer has no TPOT and counts as within) is within the SLO.
  Unserved and still unfinished requests count as misses.
* ``window_attainment``: fraction of 1-minute windows (from the start, holding
  at least one arrival) in which at least 95 % of the requests arriving in the
  window had TTFT within the SLO -- exactly "the window's nearest-rank P95 TTFT
  is within the SLO".
* GPU-seconds, cold starts, scale events, seconds at zero: see
  :mod:`simulations.fleet.lifecycle`. Unserved: see the fleet's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from scaler.forecast import STEP as HISTORY_STEP
from scaler.signals import Signals

if TYPE_CHECKING:
    from .lifecycle import ReplicaSet


@dataclass(frozen=True)
class FleetOutcome:
    requests: float
    ttft_ok: float
    tpot_ok: float
    window_attainment: float | None
    gpu_seconds: float
    cold_starts: int
    scale_events: int
    seconds_at_zero: float
    unserved: float
    after_idle_requests: float = 0.0          # the first requests after each idle gap (see first_after_idle)
    after_idle_ttft_ok: float = 0.0           # of those, within the TTFT SLO
    after_idle_ttft_p50: float | None = None  # their median TTFT, seconds (inf when more than half missed service)


@dataclass(frozen=True)
class AfterIdle:
    """Which requests count as "first after idle": the first ``first_n`` arrivals after each gap of at least
    ``gap`` seconds without arrivals (fewer if the next gap comes first). Default gap 60 s: the scaler's default
    ``scaleToZeroAfter`` (300 s) / 5, long enough for a policy to have shed replicas. The same requests for
    every policy (they depend on the trace only)."""

    gap: float = 60.0
    first_n: int = 10


def first_after_idle(starts: np.ndarray, ends: np.ndarray, weight: np.ndarray, ok: np.ndarray, ttft: np.ndarray,
                     rule: AfterIdle) -> tuple[float, float, float | None]:
    """(requests, within-SLO, median TTFT) of the first requests after each idle gap.

    Entries in time order: ``[starts, ends]`` the span their ``weight`` requests arrived in (a request: a
    point; an aggregate slice: its span), ``ok`` the within-SLO amount, ``ttft`` a TTFT per entry (inf when
    unserved) for the median. A gap precedes entry ``j`` when ``starts[j]`` is at least ``rule.gap`` after the
    end of the previous entry with arrivals; the trace's first requests are not after a gap. The last entry
    taken is pro-rated to make exactly ``first_n``.
    Worked example (``tests/unit/test_fleet.py::test_first_after_idle_worked_example``): arrivals at 0, 1,
    100, 101, 102 s, gap 60, first_n 2: the requests at 100 and 101 count.
    """
    w = np.asarray(weight, dtype=float)
    has = np.flatnonzero(w > 1e-12)
    if has.size < 2:
        return 0.0, 0.0, None
    st, en = np.asarray(starts, dtype=float)[has], np.asarray(ends, dtype=float)[has]
    heads = np.flatnonzero(st[1:] - en[:-1] >= rule.gap) + 1      # positions in `has` that follow a gap
    if heads.size == 0:
        return 0.0, 0.0, None
    stops = np.append(heads[1:], has.size)
    okv, tv = np.asarray(ok, dtype=float), np.asarray(ttft, dtype=float)
    total = good = 0.0
    pairs: list[tuple[float, float]] = []
    for h, stop in zip(heads.tolist(), stops.tolist()):
        need = float(rule.first_n)
        for pos in range(h, stop):
            k = has[pos]
            take = min(w[k], need)
            f = take / w[k]
            total += take
            good += okv[k] * f
            pairs.append((tv[k], take))
            need -= take
            if need <= 1e-12:
                break
    pairs.sort()
    acc, half = 0.0, total / 2 - 1e-12
    p50 = None
    for v, x in pairs:
        acc += x
        if acc >= half:
            p50 = float(v)
            break
    return total, good, p50


def window_attainment(times: np.ndarray, ok: np.ndarray, weight: np.ndarray, start: float, end: float,
                      window: float = 60.0, quantile: float = 0.95) -> float | None:
    """Fraction of windows with traffic whose share of within-SLO requests is at least ``quantile``.

    ``times``: arrival instants; ``ok``: within-SLO amount per entry (0/1 per
    request, or a fraction of a bin's arrivals); ``weight``: requests per entry.
    Pinned by ``tests/unit/test_fleet.py::test_window_attainment``.
    """
    if len(times) == 0:
        return None
    idx = np.floor((np.asarray(times) - start) / window).astype(np.int64)
    keep = (idx >= 0) & (np.asarray(times) < end)
    idx = idx[keep]
    if idx.size == 0:
        return None
    n = int(idx.max()) + 1
    tot = np.bincount(idx, weights=np.asarray(weight, dtype=float)[keep], minlength=n)
    good = np.bincount(idx, weights=np.asarray(ok, dtype=float)[keep], minlength=n)
    has = tot > 1e-9
    if not has.any():
        return None
    return float(((good[has] >= quantile * tot[has] - 1e-9)).mean())


class FleetBase:
    """Shared queries over ``self.rs`` (a :class:`~simulations.fleet.lifecycle.ReplicaSet`)."""

    fidelity = "?"
    # set by each fleet's __init__
    rs: ReplicaSet
    start: float

    def outcome(self, end: float, slo_ttft: float, slo_tpot: float, after_idle: AfterIdle = AfterIdle()) -> FleetOutcome:
        """What the run achieved up to ``end`` (each fleet computes it its own way)."""
        raise NotImplementedError

    def status_replicas(self) -> int:
        return self.rs.count("loading") + self.rs.count("ready")

    def ready_replicas(self) -> int:
        return self.rs.count("ready")

    def spec_replicas(self) -> int:
        return self.rs.count("loading") + self.rs.count("ready")

    def gpu_seconds(self, now: float) -> float:
        return self.rs.gpu_seconds(now)

    # -- what Prometheus would return, shared by both fidelities -------------------------------------------
    def observed_span(self, now: float, window: float) -> float:
        """Seconds of ``(now - window, now]`` since the trace started: rates are over this span, as
        Prometheus' ``rate()`` over a counter that appeared mid-window (the time before the start is unknown,
        not idle); 0 at the start itself (no rate)."""
        return min(window, now - self.start)

    @staticmethod
    def history_minute(now: float) -> float:
        """The instant ``DemandHistoryReader`` evaluates its range query at: the start of ``now``'s minute."""
        return math.floor(now / HISTORY_STEP) * HISTORY_STEP

    def history_instants(self, at: float, history: float) -> list[float]:
        """The instants of the reader's points as of ``at`` (:meth:`history_minute`): absolute minute
        boundaries over the last ``history`` seconds, each ending a minute wholly after the trace's start.
        Minutes before the start are absent, not zero (Prometheus has no sample before a series exists):
        zeros would read as a ramp from nothing to the trace's rate.

        The newest point is ``at`` itself (the minute just ended): a Prometheus subquery evaluated at ``at``
        includes its end step (checked against Prometheus 2.42: ``[1560m:1m]`` at a minute boundary returns
        1,561 points, the last at ``at``). The instants are counted back from ``at`` in whole steps: an
        ``np.arange`` up to ``at + 1e-9`` left ``at`` out at Unix times (``1.7e9 + 1e-9 == 1.7e9``), so the
        simulated policy saw the demand one minute later than the server does
        (``tests/unit/test_aggregate_history.py::test_history_ends_at_the_minute_just_ended_at_unix_times``)."""
        n = int(round(history / HISTORY_STEP))
        return [t for t in (at - k * HISTORY_STEP for k in range(n - 1, -1, -1)) if t - HISTORY_STEP >= self.start]

    def advance_to(self, T: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def scale_to(self, n: int, now: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def signals(self, now: float, window: float, *, upstream: bool = False,
                history: float = 0.0) -> Signals:  # pragma: no cover - interface
        raise NotImplementedError

    def rate_and_ttft_p95(self, now: float, window: float) -> tuple[float | None, float | None]:
        """``(signals(now, window).arrival_rate, .ttft_p95)``: what the runner's timeline records (a fleet
        may compute just these two)."""
        sig = self.signals(now, window)
        return sig.arrival_rate, sig.ttft_p95

    def in_flight(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def waiting_and_pods(self, now: float) -> tuple[float | None, int]:  # pragma: no cover - interface
        """``(signals(now).waiting, signals(now).pods_reporting)`` without computing the rest of the signals:
        what KEDA's ``avg(vllm:num_requests_waiting)`` trigger reads every poll."""
        raise NotImplementedError
