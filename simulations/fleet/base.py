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

from dataclasses import dataclass

import numpy as np

from scaler.signals import Signals


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

    def status_replicas(self) -> int:
        return self.rs.count("loading") + self.rs.count("ready")

    def ready_replicas(self) -> int:
        return self.rs.count("ready")

    def spec_replicas(self) -> int:
        return self.rs.count("loading") + self.rs.count("ready")

    def gpu_seconds(self, now: float) -> float:
        return self.rs.gpu_seconds(now)

    def advance_to(self, T: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def scale_to(self, n: int, now: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def signals(self, now: float, window: float, *, upstream: bool = False,
                history: float = 0.0) -> Signals:  # pragma: no cover - interface
        raise NotImplementedError

    def in_flight(self) -> float:  # pragma: no cover - interface
        raise NotImplementedError
