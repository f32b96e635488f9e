"""Recorded Prometheus data: ``vllm-scaler record``, ``replay`` and ``calibrate``.

* ``record`` runs range queries (prometheus-api-client) for one target -- namespace, Deployment, optional
  model name -- over a time span and writes a **recording**: per tick, the same :class:`~scaler.signals.Signals`
  fields the live source computes (the very same PromQL and :func:`scaler.sources.prometheus.build_signals`,
  evaluated at each step), the replicas that served, and mean latencies for calibration.
* ``replay`` feeds each recorded tick through :func:`scaler.policy.decide` (open loop: the recorded fleet
  does not react to the answers) and marks the ticks where the policy would have asked for fewer replicas
  than were needed.
* ``calibrate`` fits the fleet model's ``alpha``, ``beta``, ``gamma`` (:class:`simulations.fleet.ModelParams`)
  to the recorded latencies and loads.

Recording file format (JSON Lines, UTF-8; ``docs/recording.md``)
------------------------------------------------------------------
Line 1, the header::

    {"format": "vllm-scaler-recording", "version": 1, "prometheus": URL, "namespace": NS,
     "deployment": DEP, "model_name": M|null, "start": T0, "end": T1, "step": S, "window": W,
     "metric_names": {"kv": ..., "itl": ...}}

then one line per tick (``t`` unix seconds, increasing; ``null`` = unknown, never 0 for unknown)::

    {"t": ..., "pods_reporting": int, "waiting": .., "running": .., "kv_cache_usage": ..,
     "ttft_p95": .., "tpot_p95": .., "completion_rate": .., "arrival_rate": .., "prompt_tokens_mean": ..,
     "output_tokens_mean": .., "ttft_mean": .., "tpot_mean": .., "replicas": int|null,
     "replicas_spec": int|null, "starting_replicas": int|null, "error": null|"no_data: ..."}

``replicas`` are the pods that served (vLLM series fresh at ``t``); ``replicas_spec`` is the Deployment's
``spec.replicas`` from kube-state-metrics when Prometheus has it; ``starting_replicas`` the pods scraped
but not serving metrics (``up == 0``: loading, or broken for less than the source's ``max_loading``),
null when there are none (absent in recordings made before it existed: read as null). A tick whose data
was missing or stale carries ``error`` and null signals.

Replay: "needed" (module-level :func:`needed_replicas`)
-------------------------------------------------------
A tick is **short** when the recorded fleet missed its targets with the replicas that ran (``N``):
observed ``ttft_p95 > ttftP95`` or ``tpot_p95 > tpotP95`` or ``waiting > queuePerReplica * N``. Then at
least ``N + 1`` replicas were needed. Any tick with requests in the fleet (``waiting + running > 0``)
needed at least 1. So ``needed = max(N + 1 if short else 0, 1 if waiting + running > 0 else 0)`` -- a lower
bound, the most the recording can prove. A tick is marked **under** when ``desired < needed``.
Worked example (``tests/unit/test_recording.py::test_needed_worked_example``): ``N = 2``, ``ttft_p95 = 3.1 s``
over a 2.5 s SLO -> short -> needed 3; a policy answering 2 is under, 3 is not.

Calibration (:func:`calibrate`)
-------------------------------
Fits the simulator's own step model (:mod:`simulations.fleet.model`): one step of a replica takes
``t = alpha + beta * n + gamma * prefill_tokens_in_step`` seconds. Only ticks whose whole window saw no queue
are used (``waiting == 0`` at every recorded tick in ``(t - window, t]``: below saturation, where the step
model's steady state holds). Per tick, per replica (``N`` replicas): ``lam = completion_rate / N`` (req/s; the
arrival rate when completions are unknown), ``P = prompt_tokens_mean``, ``L = output_tokens_mean``,
``t = tpot_mean`` (the mean inter-token latency is the step time).

1. ``gamma``: least squares through the origin of ``ttft_mean - 1.5 * t = gamma * P``, the step model's
   below-saturation TTFT ``1.5 t + gamma * p`` (half a step waiting for the next one, then the step that also
   prefills the request).
2. ``alpha, beta``: a replica receiving ``lam`` req/s prefills ``lam * t * P`` prompt tokens per step and runs
   ``n = lam * L * t`` sequences (Little's law), so ``t = alpha + beta * lam * L * t + gamma * lam * P * t``.
   The prefill share ``gamma * lam * P`` (from step 1, the window's rate and mean prompt) is subtracted,
   not counted twice: ``t = alpha / (1 - gamma * lam * P - beta * lam * L)``, fitted by least squares of the
   observed ``t`` (damped Gauss-Newton), started from the linear least squares (no intercept) of::

       1 / t = (1 - gamma * lam * P) / alpha - (beta / alpha) * lam * L

   on the columns ``1 - gamma*lam*P`` and ``lam*L`` (built from rates and sizes only; fitting ``t`` on
   ``n = lam*L*t``, which contains ``t`` itself, would bias ``beta`` upwards). The last step weighs the loaded
   ticks as their ITL does (``1/t`` gives the light ones the most weight) and so sets the knee where the data
   have it.
3. ``kv_tokens`` (when ``kv_cache_usage`` is recorded): least squares through the origin of
   ``kv_cache_usage = n * kappa / kv_tokens`` over ticks with usage in (0.02, 0.9), where ``kappa`` is the KV a
   running sequence holds on average, the fleet model's :func:`~simulations.fleet.model.kv_per_sequence`
   ``P + spread * L / 2 + block_size / 2``; ``spread = E[O^2] / E[O]^2`` of the output sizes is not in a
   recording (``--output-spread``, default 1: fixed sizes; about 2 for chat traffic with outputs as varied as
   ShareGPT's). Recorded usage is a peak or a mean depending on the source: check the result against vLLM's
   start-up log ("GPU KV cache size").

Each fit reports its R^2 (``alpha, beta``: of ``t`` predicted against ``t`` observed), RMSE and the ticks used.
Worked example (``tests/unit/test_recording.py::test_calibrate_recovers_known_parameters``): ticks
generated from the steady state of ``alpha = 0.02, beta = 0.0005, gamma = 0.0001`` are fitted back to 1e-9.
Round trip and real data: ``tests/unit/test_calibrate_fleet.py`` (a simulated fleet at known parameters) and
``tests/unit/test_calibrate_testbed.py`` (the bundled H100 testbed, via :func:`from_testbed_csv`).

Testbed measurements (:func:`from_testbed_csv`)
------------------------------------------------
``simulations/data/vllm-testbed-h100/reconciles.csv`` (one row per autoscaler reconcile, see its README)
becomes a recording: ``t``; ``replicas`` and ``pods_reporting`` = ``pods``; ``arrival_rate`` and
``completion_rate`` = ``arrival_rpm / 60`` (the CSV counts completions); ``ttft_mean``, ``tpot_mean`` =
``ttft_ms``, ``itl_ms`` / 1000 (null when 0: no traffic); ``prompt_tokens_mean``, ``output_tokens_mean`` =
``in_tok``, ``out_tok``; ``waiting`` = ``waiting_sum`` (the per-pod 1-minute maxima summed, so a zero means no
queue all minute); ``kv_cache_usage`` = ``kv_mean``; ``running`` (not logged) by Little's law
``rate * out_tok * itl``, null when a factor is unknown. Rows repeated at the boundary of two runs (same ``t``)
are kept once. The header's window is 60 s (the controller's queries), its step 30 s.
``vllm-scaler calibrate reconciles.csv`` reads such a file directly (recognised by its header line).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, TextIO

FORMAT = "vllm-scaler-recording"
VERSION = 1
MAX_POINTS_PER_QUERY = 10_000  # Prometheus refuses more than 11,000 points per series
DEFAULT_PROMETHEUS_URL = os.environ.get("VLLM_SCALER_PROMETHEUS_URL", "http://127.0.0.1:9090")

_SIGNAL_FIELDS = ("waiting", "running", "kv_cache_usage", "ttft_p95", "tpot_p95", "completion_rate",
                  "arrival_rate", "prompt_tokens_mean", "output_tokens_mean")


class RecordingError(ValueError):
    """A recording file that can not be read: names the file, the line and what is wrong."""


@dataclass(frozen=True)
class RecordingHeader:
    prometheus: str
    namespace: str
    deployment: str
    model_name: str | None
    start: float
    end: float
    step: float
    window: float
    metric_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Tick:
    """One recorded instant: Signals fields, the replicas that served, mean latencies (None = unknown)."""

    t: float
    pods_reporting: int = 0
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    ttft_p95: float | None = None
    tpot_p95: float | None = None
    completion_rate: float | None = None
    arrival_rate: float | None = None
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    ttft_mean: float | None = None
    tpot_mean: float | None = None
    replicas: int | None = None
    replicas_spec: int | None = None
    starting_replicas: int | None = None
    error: str | None = None

    def signals(self):
        """The :class:`~scaler.signals.Signals` the live source would have produced at ``t``."""
        from scaler.signals import Signals

        return Signals(observed_at=self.t, pods_reporting=self.pods_reporting,
                       ready_replicas=self.replicas, starting_replicas=self.starting_replicas,
                       **{f: getattr(self, f) for f in _SIGNAL_FIELDS})


@dataclass(frozen=True)
class Recording:
    header: RecordingHeader
    ticks: tuple[Tick, ...]

    def demand(self) -> list[tuple[float, float | None, float | None, float | None]]:
        """The recorded demand for closed-loop simulation: ``(t, arrival req/s, prompt mean, output mean)``
        per tick, oldest first; ``None`` where the tick had no data (a gap, not zero demand)."""
        return [(t.t, t.arrival_rate, t.prompt_tokens_mean, t.output_tokens_mean) for t in self.ticks]

    def write(self, out: TextIO) -> None:
        out.write(json.dumps({"format": FORMAT, "version": VERSION, **asdict(self.header)}, sort_keys=False) + "\n")
        for tick in self.ticks:
            out.write(json.dumps(asdict(tick)) + "\n")

    def save(self, path: str | os.PathLike) -> None:
        tmp = Path(f"{path}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            self.write(f)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recording":
        """Read a recording; every problem names the file, the line and the field."""
        p = Path(path)
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise RecordingError(f"{p}: cannot read recording: {exc.strerror or exc}") from None
        if not lines:
            raise RecordingError(f"{p}: empty file, not a recording")
        head = _json_line(p, 1, lines[0])
        if head.get("format") != FORMAT:
            raise RecordingError(f"{p}:1: not a recording (format is {head.get('format')!r}, expected {FORMAT!r})")
        if head.get("version") != VERSION:
            raise RecordingError(f"{p}:1: unsupported recording version {head.get('version')!r} (expected {VERSION})")
        hf = {f.name for f in fields(RecordingHeader)}
        missing = sorted(hf - set(head) - {"metric_names"})
        if missing:
            raise RecordingError(f"{p}:1: header lacks {', '.join(missing)}")
        header = RecordingHeader(**{k: head[k] for k in hf if k in head})
        ticks, last = [], -math.inf
        tf = {f.name: f for f in fields(Tick)}
        for i, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            row = _json_line(p, i, line)
            unknown = sorted(set(row) - set(tf))
            if unknown:
                raise RecordingError(f"{p}:{i}: unknown field(s) {', '.join(unknown)}")
            if not isinstance(row.get("t"), (int, float)):
                raise RecordingError(f"{p}:{i}: field t must be unix seconds, got {row.get('t')!r}")
            if row["t"] <= last:
                raise RecordingError(f"{p}:{i}: t={row['t']!r} is not after the previous tick ({last!r})")
            last = row["t"]
            for k, v in row.items():
                if k in ("t", "error"):
                    continue
                if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                                      or math.isnan(v)):
                    raise RecordingError(f"{p}:{i}: field {k} must be null or a number >= 0, got {v!r}")
            ticks.append(Tick(**row))
        return cls(header, tuple(ticks))


def _json_line(p: Path, i: int, line: str) -> dict:
    try:
        v = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{p}:{i}: not JSON: {exc.msg}") from None
    if not isinstance(v, dict):
        raise RecordingError(f"{p}:{i}: expected a JSON object, got {type(v).__name__}")
    return v


# ---------------------------------------------------------------------------------------------------
# record
# ---------------------------------------------------------------------------------------------------
def _rows_by_time(series: Iterable[Mapping[str, Any]]) -> dict[float, list[dict]]:
    out: dict[float, list[dict]] = {}
    for s in series:
        for t, v in s.get("values", ()):
            key = round(float(t), 3)
            out.setdefault(key, []).append({"metric": s["metric"], "value": [t, v]})
    return out


def _sum_ratio(rows: Sequence[Mapping], sel, num: str, den: str) -> float | None:
    from scaler.sources.promql import TERM_LABEL

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
    from scaler import vllm_metrics as vm
    from scaler.errors import NoDataError
    from scaler.sources import promql
    from scaler.sources.prometheus import build_signals, data_queries, query_range

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
            ticks.append(Tick(t=t, replicas_spec=replicas_spec, error=f"no_data: {exc}"))
            continue
        ticks.append(Tick(
            t=t, pods_reporting=s.pods_reporting, **{f: getattr(s, f) for f in _SIGNAL_FIELDS},
            ttft_mean=_sum_ratio(m, sel, "ttft_sum", "ttft_count"), tpot_mean=_sum_ratio(m, sel, "itl_sum", "itl_count"),
            replicas=s.pods_reporting, replicas_spec=replicas_spec, starting_replicas=s.starting_replicas))
    header = RecordingHeader(prometheus=str(source.client.url), namespace=namespace, deployment=deployment,
                             model_name=model_name, start=start, end=end, step=step, window=window,
                             metric_names=names.as_dict())
    return Recording(header, tuple(ticks))


# ---------------------------------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayTick:
    t: float
    replicas: int | None
    desired: int | None
    active: bool | None
    needed: int | None
    short: bool
    under: bool
    dominant: str | None
    note: str = ""
    terms: dict[str, float] = field(default_factory=dict)     # every term of the decision (replicas)
    inputs: dict[str, float] = field(default_factory=dict)    # forecast, horizon, cold start, capacity, ...
    reasons: tuple[str, ...] = ()                              # the decision's explanation, as the server logs it

    def explain(self) -> str:
        """One line: every term, then the forecast, horizon and cold start the decision used."""
        from scaler.policy import TermsText

        parts = [format(TermsText(self.terms))]
        i = self.inputs
        if "horizon_s" in i:
            parts.append(f"H={i['horizon_s']:.0f}s (cold start P90 {i['cold_start_p90_s']:.0f}s)")
        elif "cold_start_p90_s" in i:
            parts.append(f"cold start P90 {i['cold_start_p90_s']:.0f}s")
        if "forecast_peak_upper" in i:
            parts.append(f"forecast {i['forecast_rate']:.3g} req/s at H, peak upper {i['forecast_peak_upper']:.3g}")
        if "capacity_per_replica" in i:
            parts.append(f"capacity {i['capacity_per_replica']:.3g} req/s")
        return "; ".join(p for p in parts if p)


def needed_replicas(tick: Tick, config) -> tuple[int | None, bool]:
    """(needed lower bound, short?) for a recorded tick; ``(None, False)`` when the tick has no data.

    See the module docstring ("needed"): short = an SLO or the queue target missed with the replicas that ran.
    """
    if tick.error is not None:
        return None, False
    n = tick.replicas or 0
    short = ((tick.ttft_p95 is not None and tick.ttft_p95 > config.ttft_p95)
             or (tick.tpot_p95 is not None and tick.tpot_p95 > config.tpot_p95)
             or (tick.waiting is not None and tick.waiting > config.queue_per_replica * n))
    demand = (tick.waiting or 0.0) + (tick.running or 0.0)
    return max(n + 1 if short else 0, 1 if demand > 0 else 0), short


def replay(recording: Recording, config) -> list[ReplayTick]:
    """Open-loop replay: ``decide()`` at every tick with data, state carried; ticks without data are skipped
    (the server would answer from its last decision, then fail) and noted."""
    from scaler.policy import decide

    state = None
    out = []
    for tick in recording.ticks:
        needed, short = needed_replicas(tick, config)
        if tick.error is not None:
            out.append(ReplayTick(tick.t, tick.replicas, None, None, None, False, False, None, note=tick.error[:80]))
            continue
        d = decide(tick.signals(), state, config, tick.t)
        state = d.next_state
        out.append(ReplayTick(tick.t, tick.replicas, d.desired, d.active, needed, short,
                              needed is not None and d.desired < needed, d.dominant, terms=dict(d.terms),
                              inputs=dict(d.inputs), reasons=tuple(d.reasons)))
    return out


def replay_summary(recording: Recording, rows: Sequence[ReplayTick]) -> dict[str, Any]:
    step = recording.header.step
    with_data = [r for r in rows if r.desired is not None]
    return {
        "ticks": len(rows),
        "ticks_with_data": len(with_data),
        "ticks_without_data": len(rows) - len(with_data),
        "short_ticks": sum(r.short for r in with_data),
        "under_ticks": sum(r.under for r in with_data),
        "replica_hours_recorded": sum((r.replicas or 0) for r in with_data) * step / 3600,
        "replica_hours_policy": sum(r.desired or 0 for r in with_data) * step / 3600,
        "mean_replicas_recorded": (sum((r.replicas or 0) for r in with_data) / len(with_data)) if with_data else None,
        "mean_replicas_policy": (sum(r.desired or 0 for r in with_data) / len(with_data)) if with_data else None,
    }


def metadata_from_scaled_object(path: str | os.PathLike) -> tuple[dict[str, str], str | None]:
    """The external trigger's metadata and the ScaledObject's name from a KEDA ScaledObject YAML."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if d]
    except OSError as exc:
        raise ValueError(f"--scaled-object {path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"--scaled-object {path}: not YAML: {exc}") from None
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "ScaledObject":
            for trig in (doc.get("spec") or {}).get("triggers") or []:
                if isinstance(trig, dict) and trig.get("type") in ("external", "external-push"):
                    md = trig.get("metadata") or {}
                    if not isinstance(md, dict):
                        raise ValueError(f"--scaled-object {path}: trigger metadata is not a mapping")
                    return {str(k): str(v) for k, v in md.items()}, (doc.get("metadata") or {}).get("name")
            raise ValueError(f"--scaled-object {path}: the ScaledObject has no trigger of type external/external-push")
    raise ValueError(f"--scaled-object {path}: no document of kind ScaledObject")


def _parse_kv(items: Sequence[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[k.strip()] = v
    return out


def replay_config(recording: Recording, metadata: Mapping[str, str], scaled_object: str | None = None):
    """A :class:`~scaler.config.PolicyConfig` for the recording's target from trigger metadata."""
    from scaler.config import ServerDefaults, parse_metadata

    h = recording.header
    md = dict(metadata)
    md.setdefault("deploymentName", h.deployment)
    if h.model_name is not None:
        md.setdefault("modelName", h.model_name)
    md.setdefault("window", f"{h.window:g}")
    return parse_metadata(md, scaled_object=scaled_object or h.deployment, namespace=h.namespace,
                          defaults=ServerDefaults(prometheus_url=h.prometheus or "http://127.0.0.1:9090"))


# ---------------------------------------------------------------------------------------------------
# calibrate
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """A least-squares fit: coefficients, R^2, RMSE (seconds) and the number of ticks used."""

    coefficients: Mapping[str, float]
    r2: float | None
    rmse: float
    ticks: int


def _lstsq(columns: Sequence[Sequence[float]], y: Sequence[float], names: Sequence[str], *,
           intercept: bool) -> Fit:
    """Least squares; R^2 is centred with an intercept, uncentred (about 0) through the origin, and None
    when the observed values do not vary (nothing to explain)."""
    import numpy as np

    X = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    yv = np.asarray(y, dtype=float)
    coef, *_ = np.linalg.lstsq(X, yv, rcond=None)
    resid = yv - X @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((yv - yv.mean()) ** 2).sum()) if intercept else float(yv @ yv)
    r2 = None if ss_tot <= 1e-18 * max(1.0, float(yv @ yv)) else 1.0 - ss_res / ss_tot
    return Fit(dict(zip(names, (float(c) for c in coef))), r2, math.sqrt(ss_res / len(yv)), len(yv))


def _queue_free(recording: Recording) -> list[Tick]:
    """Ticks whose whole window saw no queue: ``waiting == 0`` at the tick and at every recorded tick in
    ``(t - window, t]`` (TTFT means over the window include queueing from anywhere in it)."""
    w = recording.header.window
    ticks = recording.ticks
    out = []
    for i, t in enumerate(ticks):
        j, ok = i, True
        while ok and j >= 0 and ticks[j].t > t.t - w:
            ok = ticks[j].error is None and ticks[j].waiting == 0
            j -= 1
        # the window must be covered by recorded ticks (else a queue could hide before the first one)
        if ok and j >= 0:
            out.append(t)
    return out


def _per_replica(tick: Tick) -> tuple[float, float, float, float] | None:
    """``(lam, P, L, t)`` per replica of a tick (see the module docstring), or None when one is unknown."""
    rate = tick.completion_rate if tick.completion_rate is not None else tick.arrival_rate
    if (not tick.replicas or rate is None or rate <= 0 or tick.tpot_mean is None or tick.tpot_mean <= 0
            or not tick.prompt_tokens_mean or not tick.output_tokens_mean):
        return None
    return rate / tick.replicas, tick.prompt_tokens_mean, tick.output_tokens_mean, tick.tpot_mean


def _refine_in_t(alpha: float, beta: float, gamma: float, lam, P, L, t) -> tuple[float, float]:
    """Least squares of ``t`` itself against ``alpha / (1 - gamma lam P - beta lam L)``, by damped Gauss-Newton
    from the linear fit of ``1/t`` (module docstring). A step that would make a tick's denominator <= 0 or raise
    the squared error is halved; the start is kept when nothing improves it."""
    import numpy as np

    def sse(a: float, b: float) -> float:
        d = 1.0 - gamma * lam * P - b * lam * L
        return math.inf if (d <= 0).any() else float(((t - a / d) ** 2).sum())

    best = sse(alpha, beta)
    for _ in range(100):
        d = 1.0 - gamma * lam * P - beta * lam * L
        jac = np.column_stack([1.0 / d, alpha * lam * L / d ** 2])
        step, *_ = np.linalg.lstsq(jac, t - alpha / d, rcond=None)
        for _ in range(30):
            a, b = alpha + step[0], beta + step[1]
            e = sse(a, b)
            if e <= best:
                break
            step = step / 2
        else:
            break
        done = abs(step[0]) <= 1e-12 * abs(alpha) + 1e-15 and abs(step[1]) <= 1e-12 * abs(beta) + 1e-15
        alpha, beta, best = a, b, e
        if done or e == 0:
            break
    return alpha, beta


def calibrate(recording: Recording, *, min_ticks: int = 10, output_spread: float = 1.0, block_size: int = 16
              ) -> dict[str, Fit]:
    """Fit ``gamma``, then ``alpha, beta`` with the prefill share removed, then ``kv_tokens`` (module docstring).

    Returns ``{"ttft": gamma, "tpot": alpha and beta, "kv": kv_tokens}`` (``"kv"`` only when at least
    ``min_ticks`` ticks have a usable KV usage). Raises ``ValueError`` naming the missing fields when fewer than
    ``min_ticks`` ticks are usable.
    """
    import numpy as np

    quiet = [(tick, row) for tick in _queue_free(recording) if (row := _per_replica(tick)) is not None]
    need = ("replicas > 0, completion_rate (or arrival_rate) > 0, tpot_mean, prompt_tokens_mean and "
            "output_tokens_mean")
    prefill = [(row[1], tick.ttft_mean - 1.5 * row[3]) for tick, row in quiet if tick.ttft_mean is not None]
    if len(prefill) < min_ticks:
        raise ValueError(f"calibrate: only {len(prefill)} ticks with no queue over their window have {need} "
                         f"and ttft_mean (need --min-ticks {min_ticks})")
    fit_ttft = _lstsq([[p for p, _ in prefill]], [y for _, y in prefill], ("gamma",), intercept=False)
    gamma = fit_ttft.coefficients["gamma"]

    lam, P, L, t = (np.array(col, dtype=float) for col in zip(*(row for _, row in quiet)))
    inv = _lstsq([1.0 - gamma * lam * P, lam * L], 1.0 / t, ("inv_alpha", "minus_beta_over_alpha"),
                 intercept=False)
    c0, c1 = inv.coefficients["inv_alpha"], inv.coefficients["minus_beta_over_alpha"]
    alpha = 1.0 / c0 if c0 > 0 else math.nan
    beta = -c1 * alpha
    if math.isfinite(alpha):
        alpha, beta = _refine_in_t(alpha, beta, gamma, lam, P, L, t)
    pred = alpha / (1.0 - gamma * lam * P - beta * lam * L)
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    fit_tpot = Fit({"alpha": alpha, "beta": beta}, None if ss_tot <= 0 else 1.0 - ss_res / ss_tot,
                   math.sqrt(ss_res / len(t)), len(t))
    fits = {"tpot": fit_tpot, "ttft": fit_ttft}

    from simulations.fleet.model import ModelParams, kv_per_sequence

    shape = ModelParams(block_size=block_size)
    kv = [(tick.kv_cache_usage, r[0] * r[2] * r[3] * kv_per_sequence(shape, r[1], r[2], output_spread))
          for tick, r in quiet
          if tick.kv_cache_usage is not None and 0.02 < tick.kv_cache_usage < 0.9]
    if len(kv) >= min_ticks:
        # usage = tokens / K: least squares of usage on tokens through the origin gives 1/K
        f = _lstsq([[u for _, u in kv]], [k for k, _ in kv], ("inv_kv",), intercept=False)
        inv_kv = f.coefficients["inv_kv"]
        if inv_kv > 0:
            fits["kv"] = Fit({"kv_tokens": 1.0 / inv_kv}, f.r2, f.rmse, f.ticks)
    return fits


def fitted_params(fits: Mapping[str, Fit], name: str, base=None):
    """The fitted numbers as :class:`simulations.fleet.ModelParams` (other fields from ``base``, default
    ``ModelParams()``), or a plain dict when the fleet model is not importable or rejects the numbers."""
    values: dict[str, Any] = {"alpha": fits["tpot"].coefficients["alpha"], "beta": fits["tpot"].coefficients["beta"],
                              "gamma": fits["ttft"].coefficients["gamma"]}
    if "kv" in fits:
        values["kv_tokens"] = int(round(fits["kv"].coefficients["kv_tokens"]))
    try:
        from simulations.fleet import ModelParams
    except ImportError as exc:
        return values, f"simulations.fleet.ModelParams not importable ({exc}); numbers shown as a dict"
    try:
        return replace(base if base is not None else ModelParams(), name=name, **values), None
    except ValueError as exc:
        return values, f"not a valid ModelParams: {exc}"


# ---------------------------------------------------------------------------------------------------
# the bundled testbed measurements as a recording
# ---------------------------------------------------------------------------------------------------
TESTBED_COLUMNS = ("run", "ts", "t", "variant", "replicas", "pods", "ttft_ms", "itl_ms", "arrival_rpm", "in_tok",
                   "out_tok", "waiting_sum", "waiting_max", "kv_mean", "kv_max", "kv_pods", "q_pods")


def is_testbed_csv(path: str | os.PathLike) -> bool:
    """True when the file's first line is the header of the testbed's ``reconciles.csv``."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip().split(",") == list(TESTBED_COLUMNS)
    except (OSError, UnicodeDecodeError):
        return False


def from_testbed_csv(path: str | os.PathLike) -> Recording:
    """The testbed's ``reconciles.csv`` as a :class:`Recording` (mapping: module docstring). Bad cells raise
    :class:`RecordingError` naming the file, the line and the column."""
    import csv

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read: {exc.strerror or exc}") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or rows[0] != list(TESTBED_COLUMNS):
        raise RecordingError(f"{p}:1: not a testbed reconciles.csv (expected the header {','.join(TESTBED_COLUMNS)})")

    def num(i: int, row: dict, col: str, *, zero_is_none: bool = False) -> float | None:
        raw = row[col].strip()
        if raw == "":
            return None
        try:
            v = float(raw)
        except ValueError:
            raise RecordingError(f"{p}:{i}: column {col}: not a number: {raw!r}") from None
        if not math.isfinite(v) or v < 0:
            raise RecordingError(f"{p}:{i}: column {col}: must be a finite number >= 0, got {raw!r}")
        return None if zero_is_none and v == 0 else v

    by_t: dict[float, Tick] = {}
    variants = set()
    for i, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(TESTBED_COLUMNS):
            raise RecordingError(f"{p}:{i}: expected {len(TESTBED_COLUMNS)} columns, got {len(cells)}")
        row = dict(zip(TESTBED_COLUMNS, cells))
        t = num(i, row, "t")
        if t is None:
            raise RecordingError(f"{p}:{i}: column t is empty")
        if t in by_t:            # the same reconcile logged by two consecutive runs
            continue
        variants.add(row["variant"])
        pods = int(num(i, row, "pods") or 0)
        rpm = num(i, row, "arrival_rpm")
        rate = None if rpm is None else rpm / 60.0
        ttft, itl = num(i, row, "ttft_ms", zero_is_none=True), num(i, row, "itl_ms", zero_is_none=True)
        out_tok = num(i, row, "out_tok")
        itl_s = None if itl is None else itl / 1000.0
        running = None if None in (rate, out_tok, itl_s) else rate * out_tok * itl_s
        if rate == 0:
            running = 0.0
        by_t[t] = Tick(t=t, pods_reporting=pods, replicas=pods, waiting=num(i, row, "waiting_sum"), running=running,
                       kv_cache_usage=num(i, row, "kv_mean"), completion_rate=rate, arrival_rate=rate,
                       prompt_tokens_mean=num(i, row, "in_tok"), output_tokens_mean=out_tok,
                       ttft_mean=None if ttft is None else ttft / 1000.0, tpot_mean=itl_s)
    ticks = tuple(by_t[t] for t in sorted(by_t))
    if not ticks:
        raise RecordingError(f"{p}: no rows")
    header = RecordingHeader(prometheus="", namespace="testbed", deployment=",".join(sorted(variants)),
                             model_name=None, start=ticks[0].t, end=ticks[-1].t, step=30.0, window=60.0,
                             metric_names={})
    return Recording(header, ticks)


def load_for_calibration(path: str | os.PathLike) -> Recording:
    """A recording file, or a testbed ``reconciles.csv`` (recognised by its header) converted on the fly."""
    return from_testbed_csv(path) if is_testbed_csv(path) else Recording.load(path)


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------
def parse_time(text: str, flag: str) -> float:
    """Unix seconds (``1700000000``) or ISO 8601 (``2026-11-22T10:00:00Z``; naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: not unix seconds or an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _duration(text: str, flag: str) -> float:
    from scaler.config import parse_duration

    try:
        v = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r}: {exc}") from None
    if v <= 0:
        raise ValueError(f"{flag} {text!r}: must be > 0")
    return v


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _run_record(args: argparse.Namespace) -> int:
    from scaler.config import ConfigError, parse_metadata
    from scaler.errors import SourceError
    from scaler.sources.prometheus import PrometheusSource

    try:
        step = _duration(args.step, "--step")
        window = _duration(args.window, "--window")
        timeout = _duration(args.timeout, "--timeout")
        if args.end is not None:
            end = parse_time(args.end, "--end")
        else:
            end = time.time()  # the clock, read at the CLI edge
        if args.start is not None:
            if args.last is not None:
                raise ValueError("give --start or --last, not both")
            start = parse_time(args.start, "--start")
        elif args.last is not None:
            start = end - _duration(args.last, "--last")
        else:
            raise ValueError("give --start TIME or --last DURATION")
        if end < start:
            raise ValueError(f"--end ({end}) is before --start ({start})")
        md = {"deploymentName": args.deployment, "namespace": args.namespace}
        if args.model_name is not None:
            md["modelName"] = args.model_name
        try:
            parse_metadata(md, scaled_object=args.deployment, namespace=args.namespace)
        except ConfigError as exc:
            flags = {"deploymentName": "--deployment", "namespace": "--namespace", "modelName": "--model-name"}
            raise ValueError("; ".join(f"{flags.get(p.key, p.key)} {p.value!r}: {p.message}"
                                       for p in exc.problems)) from None
    except ValueError as exc:
        print(f"vllm-scaler record: {exc}", file=sys.stderr)
        return 2
    start, end = math.floor(start), math.floor(end)  # range queries take whole seconds
    source = PrometheusSource(args.prometheus_url, timeout=timeout)
    try:
        rec = record(source, namespace=args.namespace, deployment=args.deployment, model_name=args.model_name,
                     start=start, end=end, step=step, window=window)
    except SourceError as exc:
        print(f"vllm-scaler record: Prometheus {args.prometheus_url}: {exc} ({exc.kind})", file=sys.stderr)
        return 1
    rec.save(args.out)
    bad = sum(t.error is not None for t in rec.ticks)
    print(f"wrote {args.out}: {len(rec.ticks)} ticks every {step:g} s from {start} to {end} "
          f"({bad} without data); metric names {rec.header.metric_names}")
    return 0


def _run_replay(args: argparse.Namespace) -> int:
    from scaler.config import ConfigError

    try:
        rec = Recording.load(args.recording)
        metadata: dict[str, str] = {}
        so_name = None
        if args.scaled_object:
            metadata, so_name = metadata_from_scaled_object(args.scaled_object)
        metadata.update(_parse_kv(args.metadata, "--metadata"))
        config = replay_config(rec, metadata, so_name)
    except ConfigError as exc:
        print(f"vllm-scaler replay: bad metadata: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"vllm-scaler replay: {exc}", file=sys.stderr)
        return 2
    rows = replay(rec, config)
    summary = replay_summary(rec, rows)
    print(f"replay of {args.recording} ({rec.header.namespace}/{rec.header.deployment}, policy {config.policy}), "
          "open loop: the recorded fleet did not react to these answers")
    shown = rows if args.all_ticks else [r for r in rows if r.under]
    if shown:
        print(f"{'t (UTC)':20} {'ran':>4} {'desired':>7} {'needed':>6} {'short':>5} {'under':>5}  dominant: terms; "
              "horizon, forecast, capacity / note")
        for r in shown:
            ts = datetime.fromtimestamp(r.t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            why = f"{r.dominant}: {r.explain()}" if r.dominant else ""
            print(f"{ts:20} {_fmt(r.replicas):>4} {_fmt(r.desired):>7} {_fmt(r.needed):>6} {_fmt(r.short):>5} "
                  f"{_fmt(r.under):>5}  {why}{r.note}")
    for k, v in summary.items():
        print(f"{k:26} {_fmt(v)}")
    if args.json:
        doc = {"recording": str(args.recording), "metadata": metadata,
               "config": {k: v for k, v in asdict(config).items() if k != "keda_keys"},
               "summary": summary, "ticks": [asdict(r) for r in rows]}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from simulations.cli import model_params

    try:
        base = model_params(args)
        if args.max_num_seqs is not None and args.max_num_seqs < 1:
            raise ValueError(f"--max-num-seqs must be >= 1, got {args.max_num_seqs}")
        if args.kv_tokens is not None and not (math.isfinite(args.kv_tokens) and args.kv_tokens >= 1):
            raise ValueError(f"--kv-tokens must be a number >= 1, got {args.kv_tokens}")
        rec = load_for_calibration(args.recording)
        if not (math.isfinite(args.output_spread) and 1.0 <= args.output_spread <= 100.0):
            raise ValueError(f"--output-spread must be from 1 to 100 (E[O^2]/E[O]^2), got {args.output_spread}")
        fits = calibrate(rec, min_ticks=args.min_ticks, output_spread=args.output_spread,
                         block_size=base.block_size)
    except ValueError as exc:
        print(f"vllm-scaler calibrate: {exc}", file=sys.stderr)
        return 2
    params, note = fitted_params(fits, f"calibrated from {Path(args.recording).name} on {base.name}", base)
    labels = {"ttft": "TTFT - 1.5 * TPOT = gamma * prompt_tokens",
              "tpot": "TPOT = alpha + beta * running + gamma * prefill tokens per step (prefill share removed)",
              "kv": f"KV usage = running * (prompt + {args.output_spread:g} * output/2 + block/2) / kv_tokens"}
    for key in ("ttft", "tpot", "kv"):
        if key not in fits:
            continue
        fit = fits[key]
        coefs = ", ".join(f"{k} = {v:.6g}" for k, v in fit.coefficients.items())
        print(f"{labels[key]}: {coefs}; R^2 = {_fmt(fit.r2, 4)}, RMSE = {fit.rmse:.4g} over {fit.ticks} ticks")
    if "kv" not in fits:
        print("kv_tokens not fitted (too few ticks with kv_cache_usage below 0.9 and no queue)")
    print(f"fitted: {params!r}")
    if note:
        print(f"note: {note}")
    keys = ("alpha", "beta", "gamma") + (("kv_tokens",) if "kv" in fits else ())
    values = params if isinstance(params, dict) else {k: getattr(params, k) for k in keys}
    print(f"simulate with: --model-profile {args.model_profile} "
          + " ".join(f"--model-param {k}={v:.6g}" for k, v in values.items()))
    from scaler.capacity import FleetModel

    max_num_seqs = args.max_num_seqs if args.max_num_seqs is not None else base.max_num_seqs
    kv_tokens = args.kv_tokens if args.kv_tokens is not None else values.get("kv_tokens")
    try:
        model = FleetModel(alpha=values["alpha"], beta=values["beta"], gamma=values["gamma"],
                           max_num_seqs=max_num_seqs, kv_tokens=kv_tokens)
    except ValueError as exc:
        print(f"no fleetModel metadata: {exc}")
    else:
        src = ("--max-num-seqs" if args.max_num_seqs is not None else f"profile {args.model_profile}")
        print(f'trigger metadata for the predictive policy: fleetModel: "{model.metadata()}"'
              f" (maxNumSeqs from {src}: vLLM's --max-num-seqs is not in the recording)")
        values = {**values, "fleetModel": model.metadata()}
    if args.json:
        doc = {"recording": str(args.recording), "profile": args.model_profile, "params": values,
               "fits": {k: asdict(f) for k, f in fits.items()}, "note": note}
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


def register(subparsers) -> None:
    """Add ``record``, ``replay`` and ``calibrate`` to the ``vllm-scaler`` command line."""
    p = subparsers.add_parser(
        "record", help="save a target's signals from Prometheus (range queries) to a recording file",
        description="Range-query Prometheus for one vLLM Deployment and write a recording (JSON Lines: a header, "
                    "then one line of Signals per step). Same PromQL and per-tick computation as the live scaler.")
    p.add_argument("--prometheus-url", default=DEFAULT_PROMETHEUS_URL,
                   help="Prometheus base URL (default: $VLLM_SCALER_PROMETHEUS_URL or %(default)s)")
    p.add_argument("--namespace", required=True, help="namespace of the vLLM pods")
    p.add_argument("--deployment", required=True, help="the vLLM Deployment; pods are matched as <name>-.*")
    p.add_argument("--model-name", default=None, help="only series with this model_name label (default: all)")
    p.add_argument("--start", default=None, help="first tick: unix seconds or ISO 8601 (UTC if no zone)")
    p.add_argument("--end", default=None, help="last tick: unix seconds or ISO 8601 (default: now)")
    p.add_argument("--last", default=None, help="instead of --start: this long before --end (e.g. 6h)")
    p.add_argument("--step", default="15s", help="tick spacing (default: %(default)s)")
    p.add_argument("--window", default="60s", help="rate/quantile window, as the trigger's `window` "
                                                   "(default: %(default)s)")
    p.add_argument("--timeout", default="30s", help="per-request timeout (default: %(default)s)")
    p.add_argument("--out", required=True, help="recording file to write (JSON Lines)")
    p.set_defaults(func=_run_record)

    p = subparsers.add_parser(
        "replay", help="open-loop replay of a recording through decide(): where would the policy have asked too few?",
        description="Feed every recorded tick through scaler.policy.decide() with the given trigger metadata, "
                    "against the replicas that actually ran, and mark ticks where the answer was below what was "
                    "needed (needed: replicas+1 when the recorded TTFT/TPOT P95 missed the SLO or the queue "
                    "exceeded queuePerReplica per replica; at least 1 with requests in flight).")
    p.add_argument("recording", help="a file written by `vllm-scaler record`")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="a ScaledObject trigger metadata key (repeatable; overrides --scaled-object)")
    p.add_argument("--scaled-object", default=None, metavar="FILE.yaml",
                   help="take the metadata of the external trigger of this ScaledObject manifest")
    p.add_argument("--all-ticks", action="store_true", help="print every tick, not only the under-provisioned")
    p.add_argument("--json", default=None, metavar="OUT", help="write summary and every tick as JSON")
    p.set_defaults(func=_run_replay)

    p = subparsers.add_parser(
        "calibrate", help="fit the fleet model's alpha, beta, gamma (and kv_tokens) to a recording",
        description="Over ticks with no queue in their window: gamma from TTFT - 1.5 TPOT on mean prompt tokens; "
                    "alpha, beta from the step model's steady state with the prefill share of each step removed; "
                    "kv_tokens from KV usage against the tokens the running requests hold (docs/recording.md).")
    p.add_argument("recording", help="a file written by `vllm-scaler record`, or the testbed's reconciles.csv")
    p.add_argument("--min-ticks", type=int, default=10, help="fewest usable ticks per fit (default: %(default)s)")
    from simulations.cli import add_model_flags

    add_model_flags(p)
    p.add_argument("--max-num-seqs", type=int, default=None,
                   help="the Deployment's vLLM --max-num-seqs, for the fleetModel metadata (default: the profile's)")
    p.add_argument("--output-spread", type=float, default=1.0, metavar="X",
                   help="E[O^2]/E[O]^2 of the output sizes, for the kv_tokens fit (default 1: fixed sizes; about 2 "
                        "for chat traffic like ShareGPT)")
    p.add_argument("--kv-tokens", type=float, default=None,
                   help="KV-cache capacity in tokens per replica (vLLM logs it at start-up), for fleetModel "
                        "(default: the fitted one, when the recording has KV usage)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the fitted numbers and fit quality as JSON")
    p.set_defaults(func=_run_calibrate)
