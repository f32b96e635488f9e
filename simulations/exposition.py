"""vLLM-shaped metrics for simulated pods: Prometheus text for ``GET /metrics`` and OpenMetrics for backfill.

A simulated pod's exported state at an instant is a :class:`PodMetrics`: the
gauges vLLM exports (waiting, running, KV-cache usage) and its cumulative
counters and histograms, with the metric names, labels and bucket edges of
:mod:`scaler.vllm_metrics` (V1 names by default, ``names="v0"`` for the old
ones). Two writers:

* :func:`render_text` -- the Prometheus text format (0.0.4) that a real
  Prometheus scrapes from a simulated pod's ``/metrics``;
* :func:`write_openmetrics` -- frames of (unix seconds, pods) as OpenMetrics
  text with timestamps and ``# EOF``, which
  ``promtool tsdb create-blocks-from openmetrics`` turns into TSDB blocks.

OpenMetrics rules this writer keeps (promtool rejects the file otherwise):
one ``# TYPE``/``# HELP`` per family, each family's samples contiguous and
families never repeated; a counter family is named without ``_total`` and its
samples with it; histogram samples of one series and instant are
``_bucket`` (ascending ``le``, ending with ``+Inf``), ``_count``, ``_sum``;
timestamps in seconds, increasing within a series; ``# EOF`` last.

Every series carries ``namespace`` and ``pod`` (what Prometheus' Kubernetes
service discovery adds to real pods) and vLLM's ``model_name``; V1 names add
``engine="0"``. The OpenMetrics writer can also emit Prometheus' own ``up``
series per pod and frame (``with_up``), so that "pod scraped but exports
nothing" can be told from "no pod": a :class:`PodMetrics` with
``scraped=False`` yields only ``up 0``.

Tests: ``tests/unit/test_exposition.py`` (parsed back with prometheus_client's
parsers and loaded with the real promtool).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from scaler import vllm_metrics as vm


def format_value(x: float) -> str:
    """A sample value as Go's Prometheus client writes it (``1.0``, ``+Inf``, ``NaN``, ``1e+06``)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x)}.0"
    return repr(float(x))


def _escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in pairs) + "}"


class Histogram:
    """A cumulative histogram like a Prometheus client's: counts per upper edge, plus sum and count.

    ``bucket_counts[i]`` counts observations ``<= edges[i]`` (cumulative); the
    implicit ``+Inf`` bucket is ``count``.
    """

    def __init__(self, edges: Sequence[float]):
        e = tuple(float(x) for x in edges)
        if not e or any(b <= a for a, b in zip(e, e[1:])) or any(math.isinf(x) or math.isnan(x) for x in e):
            raise ValueError(f"histogram edges must be finite and strictly increasing, got {edges!r}")
        self.edges: tuple[float, ...] = e
        self._per_bucket = [0] * len(e)  # non-cumulative counts per finite bucket
        self.sum: float = 0.0
        self.count: int = 0

    def observe(self, x: float, n: int = 1) -> None:
        """Record ``n`` observations of value ``x`` (``n`` >= 0)."""
        if n < 0 or math.isnan(x):
            raise ValueError(f"observe needs a number and n >= 0, got x={x!r}, n={n!r}")
        if n == 0:
            return
        i = bisect.bisect_left(self.edges, x)  # first edge >= x: Prometheus' le is inclusive
        if i < len(self.edges):
            self._per_bucket[i] += n
        self.count += n
        self.sum += x * n

    @property
    def bucket_counts(self) -> tuple[int, ...]:
        """Cumulative counts per finite edge (the ``+Inf`` bucket is :attr:`count`)."""
        out, acc = [], 0
        for c in self._per_bucket:
            acc += c
            out.append(acc)
        return tuple(out)

    def copy(self) -> Histogram:
        h = Histogram(self.edges)
        h._per_bucket = list(self._per_bucket)
        h.sum, h.count = self.sum, self.count
        return h


@dataclass
class PodMetrics:
    """One simulated vLLM pod's exported state at an instant (cumulative counters, current gauges).

    ``scraped=False`` models a pod whose metrics endpoint fails: Prometheus has
    ``up 0`` for it and no vLLM series.
    """

    pod: str
    namespace: str
    model_name: str
    waiting: int
    running: int
    kv_cache_usage: float
    ttft: Histogram
    itl: Histogram
    e2e: Histogram
    request_prompt_tokens: Histogram
    request_generation_tokens: Histogram
    prompt_tokens_total: float = 0.0
    generation_tokens_total: float = 0.0
    request_success_total: dict[str, float] = field(default_factory=dict)
    scraped: bool = True

    @classmethod
    def new(cls, pod: str, namespace: str, model_name: str, *, names: str = "v1") -> PodMetrics:
        """A pod that just started: zero gauges and counters, the bucket edges of ``names``' vLLM."""
        b = vm.BUCKETS[_check_names(names)]
        return cls(pod=pod, namespace=namespace, model_name=model_name, waiting=0, running=0,
                   kv_cache_usage=0.0, ttft=Histogram(b["ttft"]), itl=Histogram(b["itl"]),
                   e2e=Histogram(b["e2e"]), request_prompt_tokens=Histogram(b["tokens"]),
                   request_generation_tokens=Histogram(b["tokens"]),
                   request_success_total={"stop": 0.0, "length": 0.0})


def _check_names(names: str) -> str:
    if names not in vm.NAME_SETS:
        raise ValueError(f"names must be one of {vm.NAME_SETS}, got {names!r}")
    return names


def _series_labels(p: PodMetrics, names: str) -> list[tuple[str, str]]:
    labels = [(vm.LABEL_NAMESPACE, p.namespace), (vm.LABEL_POD, p.pod), (vm.LABEL_MODEL_NAME, p.model_name)]
    if names == "v1":
        labels.append((vm.LABEL_ENGINE, "0"))
    return labels


def _family_samples(family: vm.MetricFamily, p: PodMetrics, names: str) -> list[tuple[str, list, float]]:
    """(sample name, labels, value) of one pod for one family, in exposition order."""
    name = vm.name_for(family, names)
    base = _series_labels(p, names)
    if family.kind == "gauge":
        value = {"waiting": p.waiting, "running": p.running, "kv_cache": p.kv_cache_usage}[family.key]
        return [(name, base, float(value))]
    if family.kind == "counter":
        if family.key == "request_success":
            return [(name, base + [(vm.LABEL_FINISHED_REASON, reason)], float(v))
                    for reason, v in sorted(p.request_success_total.items())]
        value = {"prompt_tokens": p.prompt_tokens_total, "generation_tokens": p.generation_tokens_total}[family.key]
        return [(name, base, float(value))]
    h: Histogram = getattr(p, family.key)
    out = [(name + "_bucket", base + [("le", format_value(edge))], float(c))
           for edge, c in zip(h.edges, h.bucket_counts)]
    out.append((name + "_bucket", base + [("le", "+Inf")], float(h.count)))
    out.append((name + "_count", base, float(h.count)))
    out.append((name + "_sum", base, float(h.sum)))
    return out


def _family_name(family: vm.MetricFamily, names: str, openmetrics: bool) -> str:
    name = vm.name_for(family, names)
    if family.kind == "counter" and openmetrics:
        return name[: -len("_total")]
    return name


def render_text(pods: Iterable[PodMetrics], *, names: str = "v1") -> str:
    """The Prometheus text exposition (format 0.0.4) of ``pods`` at this instant, as ``/metrics`` serves it.

    One pod per simulated endpoint is the usual call; several pods are allowed
    (their series differ by ``pod``). Pods with ``scraped=False`` are left out
    (their endpoint fails instead; see :mod:`simulations` servers).
    """
    _check_names(names)
    plist = [p for p in pods if p.scraped]
    lines: list[str] = []
    for family in vm.FAMILIES:
        fname = _family_name(family, names, openmetrics=False)
        lines.append(f"# HELP {fname} {family.help}")
        lines.append(f"# TYPE {fname} {family.kind}")
        for p in plist:
            for sname, labels, value in _family_samples(family, p, names):
                lines.append(f"{sname}{_labels(labels)} {format_value(value)}")
    return "\n".join(lines) + "\n"


def _format_ts(t: float) -> str:
    if not math.isfinite(t):
        raise ValueError(f"frame timestamp must be finite unix seconds, got {t!r}")
    return f"{t:.3f}"


def write_openmetrics(frames: Iterable[tuple[float, Iterable[PodMetrics]]], out: TextIO, *, names: str = "v1",
                      with_up: bool = True) -> None:
    """Write frames of (unix seconds, pods) as OpenMetrics with timestamps, ending with ``# EOF``.

    Pods are rendered as each frame is consumed, so a generator that mutates
    the same :class:`PodMetrics` objects between frames is fine. Frame times
    must increase. ``with_up`` adds Prometheus' ``up`` gauge per pod and frame
    (1, or 0 for ``scraped=False``). The output loads with
    ``promtool tsdb create-blocks-from openmetrics`` (see
    :func:`scaler.testing.promserver.load_openmetrics`).
    """
    _check_names(names)
    # family key -> series key -> lines; rendered eagerly, written grouped (OpenMetrics needs
    # each family contiguous, and each series' samples in time order).
    grouped: dict[str, dict[tuple, list[str]]] = {f.key: {} for f in vm.FAMILIES}
    up: dict[tuple, list[str]] = {}
    last_t = -math.inf
    for t, pods in frames:
        if t <= last_t:
            raise ValueError(f"frame times must increase: {t!r} after {last_t!r}")
        last_t = t
        ts = _format_ts(t)
        for p in pods:
            if with_up:
                key = (p.namespace, p.pod)
                up.setdefault(key, []).append(
                    f"{vm.UP}{_labels([(vm.LABEL_NAMESPACE, p.namespace), (vm.LABEL_POD, p.pod)])} "
                    f"{'1' if p.scraped else '0'} {ts}")
            if not p.scraped:
                continue
            for family in vm.FAMILIES:
                samples = _family_samples(family, p, names)
                if family.kind == "histogram":
                    # one MetricPoint: every bucket, count and sum of this pod at this instant
                    labels = tuple(_series_labels(p, names))
                    grouped[family.key].setdefault(labels, []).extend(
                        f"{s}{_labels(lab)} {format_value(v)} {ts}" for s, lab, v in samples)
                else:
                    for s, lab, v in samples:
                        grouped[family.key].setdefault(tuple(lab), []).append(
                            f"{s}{_labels(lab)} {format_value(v)} {ts}")
    for family in vm.FAMILIES:
        series = grouped[family.key]
        if not series:
            continue
        fname = _family_name(family, names, openmetrics=True)
        out.write(f"# HELP {fname} {family.help}\n# TYPE {fname} {family.kind}\n")
        for lines in series.values():
            out.write("\n".join(lines))
            out.write("\n")
    if up:
        out.write(f"# HELP {vm.UP} 1 if the target was scraped, 0 if the scrape failed.\n# TYPE {vm.UP} gauge\n")
        for lines in up.values():
            out.write("\n".join(lines))
            out.write("\n")
    out.write("# EOF\n")
