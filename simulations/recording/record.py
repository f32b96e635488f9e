"""``record``: range queries (prometheus-api-client) for one target into a :class:`~.format.Recording`.

Per tick, the same :class:`~scaler.signals.Signals` fields the live source computes (the very same PromQL and
:func:`scaler.sources.prometheus.build_signals`, evaluated at each step), the replicas that served, and mean
latencies for calibration. File format: :mod:`simulations.recording.format`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scaler import vllm_metrics as vm
from scaler.errors import NoDataError
from scaler.signals import VLLM_AGGREGATES
from scaler.sources import promql
from scaler.sources.prometheus import build_signals, data_queries, query_range
from scaler.sources.promql import TERM_LABEL

from .format import Recording, RecordingHeader, Tick

MAX_POINTS_PER_QUERY = 10_000  # Prometheus refuses more than 11,000 points per series


def _rows_by_time(series: Iterable[Mapping[str, Any]]) -> dict[float, list[dict]]:
    out: dict[float, list[dict]] = {}
    for s in series:
        for t, v in s.get("values", ()):
            key = round(float(t), 3)
            out.setdefault(key, []).append({"metric": s["metric"], "value": [t, v]})
    return out


def _sum_ratio(rows: Sequence[Mapping], sel, num: str, den: str) -> float | None:
    n = d = 0.0
    for r in rows:
        term = r["metric"].get(TERM_LABEL, "").partition("@")[0]
        if not sel.matches(r["metric"]):
            continue
        v = float(r["value"][1])
        if math.isnan(v):
            continue
        if term == num:
            n += v
        elif term == den:
            d += v
    return None if d <= 0 else n / d


def record(source, *, namespace: str, deployment: str, model_name: str | None, start: float, end: float,
           step: float, window: float) -> Recording:
    """Range-query ``source`` (a :class:`~scaler.sources.prometheus.PrometheusSource`) into a :class:`Recording`.

    Ticks are ``start, start + step, ... <= end``; at each, :func:`~scaler.sources.prometheus.build_signals`
    runs on the rows the instant queries would have returned there. Raises ``SourceError`` subclasses when
    Prometheus fails (nothing is written then).
    """
    if step <= 0 or window <= 0 or end < start:
        raise ValueError(f"need step > 0, window > 0, end >= start; got step={step}, window={window}, "
                         f"start={start}, end={end}")
    start, end = float(math.floor(start)), float(math.floor(end))   # the range-query API takes whole seconds
    sel = promql.TargetSelector(namespace, deployment, model_name)
    # Probe the names at the end, else (Deployment at zero then?) at the middle and the start of the span.
    for at in (end, (start + end) / 2, start):
        source.invalidate_probe(namespace)
        names = source.names_for({namespace}, at)[namespace]
        if source.probe_complete(namespace):
            break
    gauges_expr, rates_expr = data_queries([sel], [names], window, loading_bound=source.max_loading)
    means_expr = promql.latency_means_query([sel], {"ttft": [vm.TTFT.new], "itl": [names.itl]}, window)
    spec_expr = promql.deployment_replicas_query(namespace, deployment)
    chunk = step * (MAX_POINTS_PER_QUERY - 1)
    gauges: dict[float, list] = {}
    rates: dict[float, list] = {}
    means: dict[float, list] = {}
    spec: dict[float, list] = {}
    t0 = start
    while t0 <= end:
        t1 = min(end, t0 + chunk)
        for expr, into in ((gauges_expr, gauges), (rates_expr, rates), (means_expr, means), (spec_expr, spec)):
            rows = query_range(source.client, expr, start=t0, end=t1, step=step, timeout=source.timeout)
            for k, v in _rows_by_time(rows).items():
                into.setdefault(k, []).extend(v)
        t0 = t1 + step
    ticks = []
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    for i in range(n):
        t = round(start + i * step, 3)
        g, r, m = gauges.get(t, []), rates.get(t, []), means.get(t, [])
        replicas_spec = int(float(spec[t][0]["value"][1])) if spec.get(t) else None
        try:
            s = build_signals(sel, names, g, r, window, t, loading_bound=source.max_loading)
        except NoDataError as exc:
            ticks.append(Tick.of(t, replicas_spec=replicas_spec, error=f"no_data: {exc}"))
            continue
        ticks.append(Tick.of(
            t, pods_reporting=s.pods_reporting, **{f: getattr(s, f) for f in VLLM_AGGREGATES},
            ttft_mean=_sum_ratio(m, sel, "ttft_sum", "ttft_count"),
            tpot_mean=_sum_ratio(m, sel, "itl_sum", "itl_count"), replicas=s.pods_reporting, replicas_spec=replicas_spec, starting_replicas=s.starting_replicas))
    header = RecordingHeader(prometheus=str(source.client.url), namespace=namespace, deployment=deployment,
                             model_name=model_name, start=start, end=end, step=step, window=window,
                             metric_names=names.as_dict())
    return Recording(header, tuple(ticks))

