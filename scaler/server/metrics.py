"""The scaler's own ``/metrics`` (prometheus-client, on a registry of its own).

Per-target series carry the labels ``namespace``, ``scaledobject`` and
``trigger`` (8 hex digits of the trigger metadata's hash, telling apart two
external triggers of one ScaledObject, or the old and new metadata for a few
minutes after an edit). They are produced at scrape time from the
:class:`~scaler.server.targets.TargetStore` by :class:`TargetCollector`, so an
evicted target's series disappear with it and ``data_age`` is computed at
scrape time. A value that is unknown (e.g. P95 TTFT with no traffic) is
absent, never 0.

==============================================  =======  ===========================================
metric                                          type     meaning
==============================================  =======  ===========================================
vllm_scaler_desired_replicas                    gauge    last good decision's desired replicas
vllm_scaler_active                              gauge    last good decision's activation (1/0)
vllm_scaler_answering                           gauge    1 while answers are served (fresh enough),
                                                         0 while RPCs for the target fail UNAVAILABLE
vllm_scaler_policy_term_replicas{term}          gauge    each policy term (replicas, unrounded)
vllm_scaler_decision_dominant{term}             gauge    1 for the term that set ``desired``
vllm_scaler_decision_input{input}               gauge    each ``Decision.inputs`` value
vllm_scaler_signal{signal}                      gauge    each known ``Signals`` number (units: see docs)
vllm_scaler_data_age_seconds                    gauge    now - observed_at of the last good signals
vllm_scaler_source_errors_total{source,kind}    counter  failed refreshes by ``SourceError.kind``
vllm_scaler_refreshes_total                     counter  good refreshes
vllm_scaler_open_streams                        gauge    open StreamIsActive/StreamMetricSpec streams
vllm_scaler_targets                             gauge    live targets (no per-target labels)
vllm_scaler_targets_refused_total               counter  new targets refused at ``--max-targets``
vllm_scaler_rpc_duration_seconds{method,code}   hist.    unary RPC latency by method and status code
vllm_scaler_source_fetch_duration_seconds       hist.    one ``SignalSource.fetch`` call, by ``source``
vllm_scaler_refresh_cutoffs_total               counter  targets' refreshes cut off by the per-target
                                                         budget (``--refresh-budget``; which target:
                                                         ``source_errors_total{kind="budget"}`` and
                                                         the log line ``refresh cut off``)
vllm_scaler_refresh_lag_seconds                 gauge    the most any target's refresh is overdue
vllm_scaler_refresh_hopeless_targets            gauge    targets overdue by more than their
                                                         ``maxStaleness`` (health is ``NOT_SERVING``
                                                         while it is above 0)
==============================================  =======  ===========================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import Unavailable
from ..signals import ColdStart, Signals
from .targets import Target, TargetStore

TARGET_LABELS = ("namespace", "scaledobject", "trigger")

# Latency buckets from 100 us: answers come from memory, the interesting range is sub-millisecond.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FETCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def signal_values(signals: Signals) -> dict[str, float]:
    """Every known number in a ``Signals`` (``None`` = unknown, left out), by field name.

    Read generically from the dataclass fields so that signals added later
    (e.g. by an enricher) are exported without touching this module.
    ``cold_start`` becomes ``cold_start_p50`` / ``cold_start_p90`` (seconds).
    """
    out: dict[str, float] = {}
    for f in dataclasses.fields(signals):
        if f.name == "observed_at":
            continue
        v = getattr(signals, f.name)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)):
            out[f.name] = float(v)
        elif isinstance(v, ColdStart):
            out["cold_start_p50"] = float(v.p50)
            out["cold_start_p90"] = float(v.p90)
    return out


class TargetCollector(Collector):
    """Builds the per-target families from the store at scrape time."""

    def __init__(self, store: TargetStore, clock: Callable[[], float], open_streams: Callable[[], int],
                 lag: Callable[[float], tuple[float, int]] | None = None):
        self._store = store
        self._clock = clock
        self._open_streams = open_streams
        self.lag = lag

    def describe(self) -> list[Metric]:
        return []  # families are built per scrape

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        targets = self._store.targets()
        lbl = list(TARGET_LABELS)
        desired = GaugeMetricFamily("vllm_scaler_desired_replicas", "Desired replicas of the last good decision.",
                                    labels=lbl)
        active = GaugeMetricFamily("vllm_scaler_active", "Activation of the last good decision (1 active, 0 not).",
                                   labels=lbl)
        answering = GaugeMetricFamily(
            "vllm_scaler_answering",
            "1 while RPCs for the target are answered (decision younger than maxStaleness), 0 while UNAVAILABLE.",
            labels=lbl)
        terms = GaugeMetricFamily("vllm_scaler_policy_term_replicas",
                                  "Each policy term of the last good decision (replicas, before rounding).",
                                  labels=lbl + ["term"])
        dominant = GaugeMetricFamily("vllm_scaler_decision_dominant",
                                     "1 for the term that set desired (or min/max when clamped).",
                                     labels=lbl + ["term"])
        inputs = GaugeMetricFamily("vllm_scaler_decision_input", "Each named input the policy reported.",
                                   labels=lbl + ["input"])
        signal = GaugeMetricFamily("vllm_scaler_signal",
                                   "Each known signal of the last good refresh (units in docs/server.md).",
                                   labels=lbl + ["signal"])
        age = GaugeMetricFamily("vllm_scaler_data_age_seconds",
                                "Seconds since the last good signals were observed.", labels=lbl)
        errors = CounterMetricFamily("vllm_scaler_source_errors",
                                     "Failed refreshes and enrichments by source and SourceError kind.",
                                     labels=lbl + ["source", "kind"])
        refreshes = CounterMetricFamily("vllm_scaler_refreshes", "Good refreshes (a decision was made).",
                                        labels=lbl)
        for t in targets:
            self._one(t, now, desired, active, answering, terms, dominant, inputs, signal, age, errors, refreshes)
        yield from (desired, active, answering, terms, dominant, inputs, signal, age, errors, refreshes)
        yield GaugeMetricFamily("vllm_scaler_targets", "Live targets (asked about recently).", value=len(targets))
        yield CounterMetricFamily("vllm_scaler_targets_refused", "New targets refused at --max-targets.",
                                  value=self._store.refused)
        yield GaugeMetricFamily("vllm_scaler_open_streams", "Open StreamIsActive and StreamMetricSpec streams.",
                                value=self._open_streams())
        if self.lag is not None:
            worst, hopeless = self.lag(now)
            yield GaugeMetricFamily("vllm_scaler_refresh_lag_seconds",
                                    "The most any target's refresh is overdue (seconds).", value=worst)
            yield GaugeMetricFamily("vllm_scaler_refresh_hopeless_targets",
                                    "Targets whose refresh is overdue by more than their maxStaleness.",
                                    value=hopeless)

    @staticmethod
    def _one(t: Target, now: float, desired: GaugeMetricFamily, active: GaugeMetricFamily,
             answering: GaugeMetricFamily, terms: GaugeMetricFamily, dominant: GaugeMetricFamily,
             inputs: GaugeMetricFamily, signal: GaugeMetricFamily, age: GaugeMetricFamily,
             errors: CounterMetricFamily, refreshes: CounterMetricFamily) -> None:
        base = [t.namespace, t.scaled_object, t.trigger]
        try:
            t.current(now)
            answering.add_metric(base, 1.0)
        except Unavailable:
            answering.add_metric(base, 0.0)
        for (source, kind), n in sorted(dict(t.error_counts).items()):
            errors.add_metric(base + [source, kind], float(n))
        refreshes.add_metric(base, float(t.refreshes))
        good = t.good
        if good is None:
            return
        d = good.decision
        desired.add_metric(base, float(d.desired))
        active.add_metric(base, 1.0 if d.active else 0.0)
        for name, value in d.terms.items():
            terms.add_metric(base + [name], float(value))
            dominant.add_metric(base + [name], 1.0 if name == d.dominant else 0.0)
        if d.dominant not in d.terms:
            dominant.add_metric(base + [d.dominant], 1.0)
        for name, value in d.inputs.items():
            inputs.add_metric(base + [name], float(value))
        for name, value in signal_values(good.signals).items():
            signal.add_metric(base + [name], value)
        age.add_metric(base, max(0.0, now - good.signals.observed_at))


class ScalerMetrics:
    """The registry and the instruments the server writes to directly (RPC and fetch latency)."""

    def __init__(self, store: TargetStore, clock: Callable[[], float], open_streams: Callable[[], int],
                 registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self.rpc_duration = Histogram("vllm_scaler_rpc_duration_seconds", "Unary RPC latency by method and code.",
                                      ["method", "code"], buckets=RPC_BUCKETS, registry=self.registry)
        self.fetch_duration = Histogram("vllm_scaler_source_fetch_duration_seconds",
                                        "Duration of one SignalSource.fetch call, by source address.",
                                        ["source"], buckets=FETCH_BUCKETS, registry=self.registry)
        self.cutoffs = Counter("vllm_scaler_refresh_cutoffs", "Target refreshes cut off by the per-target budget.",
                               registry=self.registry)
        self.collector = TargetCollector(store, clock, open_streams)
        self.registry.register(self.collector)
        self._rpc_children: dict[tuple[str, str], Histogram] = {}

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        child = self._rpc_children.get((method, code))
        if child is None:
            child = self._rpc_children[(method, code)] = self.rpc_duration.labels(method, code)
        child.observe(seconds)

    def observe_fetch(self, source: str, seconds: float) -> None:
        self.fetch_duration.labels(source).observe(seconds)

    def observe_cutoff(self) -> None:
        self.cutoffs.inc()
