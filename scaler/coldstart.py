"""Cold start of a new replica: pod created -> Ready, measured, summarised, and chosen.

The forecast horizon of the predictive policy is the cold start's P90 plus the
reaction lag of KEDA and the HPA, so this number decides how far ahead the
scaler asks for capacity. It comes from, in order of precedence:

1. ``metadata``: the ``coldStart`` key (P50 = P90 = the value);
2. ``kubernetes``: the target Deployment's pods, read with the official client
   (:mod:`scaler.sources.kubernetes`);
3. ``kube-state-metrics``: ``kube_pod_status_ready_time - kube_pod_created``
   through Prometheus (:mod:`scaler.sources.history`);
4. ``simulation``: whatever the simulator reports for its own fleet;
5. ``default``: :data:`DEFAULT_COLD_START` (180 s) when nothing was measured.

Sources 2 to 4 arrive in ``Signals.cold_start``; :func:`resolve_cold_start`
applies the override and the default. The one in use is reported in every
decision (``Decision.inputs["cold_start_p90_s"]`` and a reason line naming the
source and the sample count).

Which pods count (:func:`summarize`)
-------------------------------------
A sample is one pod: ``ready - created`` seconds, where ``created`` is
``metadata.creationTimestamp`` and ``ready`` is the ``lastTransitionTime`` of
its ``Ready`` condition while that condition is ``True``. Pods not Ready, pods
whose containers restarted (their Ready time is the restart's, not the cold
start's), and samples that are negative are skipped. Of the rest, only pods
created within ``lookback`` seconds before ``now`` (default 7 days) are kept,
and of those the ``max_pods`` most recently created (default 20): the cold start
changes with images, node pools and model versions, so old pods are not
evidence. P50 and P90 are linear-interpolation percentiles (numpy's default) of
the kept samples.

Worked example (``tests/unit/test_coldstart.py::test_percentiles_worked_example``):
samples 100, 120, 140, 160, 400 s: P50 = 140 s; P90 sits at rank 0.9 × 4 =
3.6, so 160 + 0.6 × (400 - 160) = 304 s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .signals import ColdStart

DEFAULT_COLD_START = 180.0
DEFAULT_LOOKBACK = 7 * 86400.0
DEFAULT_MAX_PODS = 20


@dataclass(frozen=True)
class PodStart:
    """One pod's cold start: created and Ready times (unix s)."""

    pod: str
    created: float
    ready: float | None  # None: not Ready (yet)
    restarts: int = 0

    @property
    def seconds(self) -> float | None:
        if self.ready is None:
            return None
        return self.ready - self.created


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), ``q`` in 0..100, of a non-empty list."""
    if not values:
        raise ValueError("percentile of no values")
    xs = sorted(values)
    rank = (len(xs) - 1) * q / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (rank - lo) * (xs[hi] - xs[lo])


def summarize(pods: Iterable[PodStart], *, now: float, source: str, lookback: float = DEFAULT_LOOKBACK,
              max_pods: int = DEFAULT_MAX_PODS) -> ColdStart | None:
    """P50/P90 over the recent, clean samples (see the module docstring); None when there are none."""
    kept = [p for p in pods
            if p.seconds is not None and p.seconds >= 0 and p.restarts == 0 and now - lookback <= p.created <= now]
    kept.sort(key=lambda p: p.created, reverse=True)
    kept = kept[:max_pods]
    if not kept:
        return None
    secs = [p.seconds for p in kept if p.seconds is not None]   # all of them (kept above)
    return ColdStart(p50=percentile(secs, 50), p90=percentile(secs, 90), source=source, samples=len(secs))


def summarize_seconds(seconds: Iterable[float], *, source: str, max_samples: int = DEFAULT_MAX_PODS) -> ColdStart | None:
    """P50/P90 over already-computed durations (e.g. from kube-state-metrics), newest first."""
    secs = [s for s in seconds if s >= 0][:max_samples]
    if not secs:
        return None
    return ColdStart(p50=percentile(secs, 50), p90=percentile(secs, 90), source=source, samples=len(secs))


def resolve_cold_start(override: float | None, measured: ColdStart | None) -> ColdStart:
    """The cold start in use: metadata override, else the measured one, else the 180 s default."""
    if override is not None:
        return ColdStart(p50=override, p90=override, source="metadata", samples=0)
    if measured is not None:
        return measured
    return ColdStart(p50=DEFAULT_COLD_START, p90=DEFAULT_COLD_START, source="default", samples=0)
