"""PromQL for the Prometheus source: escaping, per-target selectors, the three shared queries, and PromQL's
``histogram_quantile`` re-done client-side.

Why client-side aggregation: one refresh must cost at most three queries however
many targets share a Prometheus. So the queries return per-pod series for *all*
due targets (``by (namespace, pod, model_name[, le | finished_reason])``) and
:mod:`scaler.sources.prometheus` sums them per target with :meth:`TargetSelector.matches`,
then applies :func:`histogram_quantile` -- the same algorithm as PromQL's, so the
P95 equals ``histogram_quantile(0.95, sum by (le) (rate(x_bucket{...}[w])))``
(pinned against the real Prometheus by
``tests/integration/test_prometheus_source.py::test_client_quantile_equals_promql``).

Safety: every value placed in PromQL goes through :func:`escape_string` (PromQL
double-quoted string literal) and, inside a regex matcher, :func:`escape_regex`
first (RE2 metacharacters). Prometheus anchors regex matchers (``^(?:...)$``),
so ``namespace=~"a|b"`` only ever matches the namespaces ``a`` and ``b``: a
crafted deployment or model name can not widen the namespace matcher
(``tests/unit/test_promql.py``). A target's namespace is always its configured
one (:attr:`PolicyConfig.namespace`); series are re-checked client-side with the
exact namespace before they count for a target.

The queries (``sel`` = the union selector of the targets, ``w`` = window; at most three per target):

1. gauges: for each gauge ``g`` (waiting, running, kv) and ``up``: ``g{sel}``,
   ``timestamp(g{sel})`` (age of the newest sample, for staleness) and, for
   waiting and running, ``g{sel} offset w`` (for the arrival estimate); ``max_over_time(up{sel}[B])``
   and ``up{sel} offset B`` (pods failing their scrapes for longer than the loading bound ``B``); and,
   when a namespace's name probe is due, :func:`probe_terms` (``count by (namespace)`` of each candidate
   name). Each term tagged ``scaler_term="<term>@<metric name>"`` with ``label_replace``, joined with ``or``;
2. rates: ``sum by (namespace, pod, model_name, le) (rate(<ttft|itl>_bucket{sel}[w]))``,
   ``sum by (..., finished_reason) (rate(vllm:request_success_total{sel}[w]))`` and
   ``rate(_sum)``/``rate(_count)`` of the prompt and generation token histograms, tagged the same way;
3. the target's ``activationQuery``, as the user wrote it (:mod:`scaler.sources.prometheus`).

:func:`probe_query` is the probe as a query of its own (``count by (__name__, namespace)``), for callers
outside a refresh (``vllm-scaler record``).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scaler import vllm_metrics as vm

#: Label added by ``label_replace`` to tell the terms of one ``or`` query apart.
TERM_LABEL = "scaler_term"
_RE2_META = set(r"\.+*?()|[]{}^$")


def escape_string(value: str) -> str:
    """``value`` as the inside of a PromQL double-quoted string (``\\``, ``"``, newlines escaped)."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def escape_regex(value: str) -> str:
    """``value`` as an RE2 regex matching exactly itself (metacharacters backslash-escaped)."""
    return "".join("\\" + ch if ch in _RE2_META else ch for ch in value)


def matcher(label: str, op: str, value: str) -> str:
    """One label matcher, e.g. ``matcher("pod", "=~", "a-.*")`` -> ``pod=~"a-.*"`` (value string-escaped)."""
    if op not in ("=", "!=", "=~", "!~"):
        raise ValueError(f"bad matcher operator {op!r}")
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", label):
        raise ValueError(f"bad label name {label!r}")
    return f'{label}{op}"{escape_string(value)}"'


def _one_of(label: str, values: Iterable[str]) -> str:
    vals = sorted(set(values))
    if len(vals) == 1:
        return matcher(label, "=", vals[0])
    return matcher(label, "=~", "|".join(escape_regex(v) for v in vals))


#: Kubernetes' longest generated pod name (``metadata.generateName`` is cut to 58 characters, then 5 random).
POD_NAME_MAX = 63
_GENERATE_BASE_MAX = POD_NAME_MAX - 5


def pod_pattern(deployment: str) -> str:
    """The RE2 pattern (before string escaping) matching exactly the pods of ``deployment``'s ReplicaSets.

    A Deployment ``D`` owns ReplicaSets ``D-<h>`` (``h``: the pod-template-hash, 1-10 characters of
    :data:`SAFE`) whose pods are ``D-<h>-<r>`` (``r``: 5 random characters of
    :data:`SAFE`), or, when ``D-<h>-`` is longer than 58 characters, its first 58 characters then ``r``
    (a 63-character name; for a name of 58 characters or more, its first 58 then ``r``). StatefulSet pods ``D-<ordinal>`` are matched too (a ScaledObject may target
    one). With ``S`` = :data:`SAFE`::

        m005      -> m005-(?:S{1,10}-S{5}|[0-9]+)
        m005-big  -> m005-big-(?:S{1,10}-S{5}|[0-9]+)

    and ``m005-big-7d9f8b6c5d-x2k4q`` is not a pod of ``m005`` (after ``m005-`` comes ``big-``: no
    ``S{1,10}-S{5}`` spans two dashes). Pinned by
    ``tests/unit/test_promql.py::test_pod_pattern_separates_prefixed_deployments`` and against a real
    Prometheus by ``tests/integration/test_isolation.py``. Limit: for names longer than 46 characters the
    cut form is ``D-`` then ``62 - len(D)`` characters of ``S``; a second Deployment named ``D-x`` (``x`` in
    ``S``) whose own pod names get cut right after ``x`` can not be told apart (the cut loses it).
    """
    return pods_pattern([deployment])


#: The characters of a pod-template-hash and of the 5 random characters of a generated name (Kubernetes uses
#: a subset: ``k8s.io/apimachinery/pkg/util/rand``'s alphabet has no vowels, no 0, 1 or 3).
SAFE = "[a-z0-9]"
_POD_FORMS = (SAFE + "{1,10}-" + SAFE + "{5}", "[0-9]+")


def _forms(deployment: str) -> tuple[str, ...]:
    """What may follow ``D-`` in a pod name of ``deployment`` (see :func:`pod_pattern`)."""
    keep = _GENERATE_BASE_MAX - len(deployment) - 1   # characters of "<h>-" kept after "D-" when cut
    if len(deployment) + 1 + 10 + 1 <= _GENERATE_BASE_MAX or keep < 0:
        return _POD_FORMS
    return _POD_FORMS + (SAFE + "{" + str(keep + 5) + "}",)


def _alt(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "(?:" + "|".join(values) + ")"


def pods_pattern(deployments: Iterable[str]) -> str:
    """:func:`pod_pattern` for several Deployments in one regex, the names factored out
    (``(?:a|b)-(?:S{1,10}-S{5}|[0-9]+)``; names of one length share their cut form too): about the length of
    the names, so a shared query over many targets stays small."""
    names = sorted(set(deployments))
    if not names:
        raise ValueError("no deployments")
    groups: dict[tuple[str, ...], list[str]] = {}
    for n in names:
        groups.setdefault(_forms(n), []).append(escape_regex(n))
    parts = [_alt(group) + "-" + _alt(forms) for forms, group in groups.items()]
    cut = sorted({escape_regex(n[:_GENERATE_BASE_MAX]) for n in names if len(n) >= _GENERATE_BASE_MAX})
    if cut:   # even "D-" is cut: the first 58 characters of D, then 5
        parts.append(_alt(cut) + SAFE + "{5}")
    return "|".join(parts)


@functools.lru_cache(maxsize=65536)
def _pod_re(deployment: str) -> re.Pattern[str]:
    return re.compile(pod_pattern(deployment))


@dataclass(frozen=True)
class TargetSelector:
    """Which series belong to one target: its namespace, the pods of its Deployment, optionally one model_name."""

    namespace: str
    deployment: str
    model_name: str | None = None

    @property
    def pod_regex(self) -> str:
        """The RE2 pod pattern (before string escaping): :func:`pod_pattern` of the deployment."""
        return pod_pattern(self.deployment)

    def selector(self, *, with_model: bool = True) -> str:
        """``{namespace="…",pod=~"…"[,model_name="…"]}`` for this target alone."""
        parts = [matcher(vm.LABEL_NAMESPACE, "=", self.namespace), matcher(vm.LABEL_POD, "=~", self.pod_regex)]
        if with_model and self.model_name is not None:
            parts.append(matcher(vm.LABEL_MODEL_NAME, "=", self.model_name))
        return "{" + ",".join(parts) + "}"

    def matches(self, labels: Mapping[str, str], *, with_model: bool = True) -> bool:
        """Client-side check of one result series: exact namespace, a pod of the Deployment, model if set."""
        if labels.get(vm.LABEL_NAMESPACE) != self.namespace:
            return False
        if _pod_re(self.deployment).fullmatch(labels.get(vm.LABEL_POD, "")) is None:
            return False
        if with_model and self.model_name is not None and labels.get(vm.LABEL_MODEL_NAME) != self.model_name:
            return False
        return True


def union_matchers(targets: Sequence[TargetSelector], *, with_model: bool = True) -> str:
    """Matchers (without braces) selecting every target's series: namespaces, pods, models (if all set)."""
    if not targets:
        raise ValueError("no targets")
    parts = [_one_of(vm.LABEL_NAMESPACE, (t.namespace for t in targets)),
             matcher(vm.LABEL_POD, "=~", pods_pattern(t.deployment for t in targets))]
    models = {t.model_name for t in targets}
    if with_model and None not in models:
        parts.append(_one_of(vm.LABEL_MODEL_NAME, models))  # type: ignore[arg-type]
    return ",".join(parts)


def _tag(expr: str, term: str) -> str:
    return f'label_replace({expr}, "{TERM_LABEL}", "{escape_string(term)}", "", "")'


def duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds (``60000ms``), exact for any positive float window."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        raise ValueError(f"window must be > 0, got {seconds!r}")
    return f"{ms}ms"


def probe_query(namespaces: Iterable[str]) -> str:
    """Which candidate names (new and old) exist, per namespace. Histograms are probed by ``_count``."""
    names = []
    for fam in vm.PROBED:
        names += [n + "_count" if fam.kind == "histogram" else n for n in fam.names]
    return (f'count by (__name__, {vm.LABEL_NAMESPACE}) '
            f'({{{matcher("__name__", "=~", "|".join(escape_regex(n) for n in names))},'
            f'{_one_of(vm.LABEL_NAMESPACE, namespaces)}}})')


def probe_terms(namespaces: Iterable[str]) -> list[str]:
    """The name probe as tagged terms for the gauges query: ``count by (namespace) ({__name__="<n>", ...})``
    per candidate name ``n`` (histograms by ``_count``), tagged ``probe@<n>``. Same answer as
    :func:`probe_query`, without a query of its own."""
    ns = _one_of(vm.LABEL_NAMESPACE, namespaces)
    terms = []
    for fam in vm.PROBED:
        for n in fam.names:
            name = n + "_count" if fam.kind == "histogram" else n
            terms.append(_tag(f'count by ({vm.LABEL_NAMESPACE}) ({{{matcher("__name__", "=", name)},{ns}}})',
                              f"probe@{name}"))
    return terms


def gauges_query(targets: Sequence[TargetSelector], gauge_names: Mapping[str, Iterable[str]], window: float,
                 *, probe_namespaces: Iterable[str] = (), loading_bound: float | None = None) -> str:
    """Query 2: current value, sample timestamp and value one window ago of each gauge, plus ``up``.

    ``gauge_names`` maps a term key (``waiting``, ``running``, ``kv``) to the metric names to read.
    ``probe_namespaces``: namespaces whose name probe is due, probed in this same query (:func:`probe_terms`).
    ``loading_bound`` (``B`` s): adds ``max_over_time(up[B])`` (``up_max@up``) and ``up offset B``
    (``up_then@up``): a pod with ``up == 0`` now, ``up == 0`` B ago and never 1 in between has failed its
    scrapes for longer than ``B``.
    """
    sel = "{" + union_matchers(targets) + "}"
    up_sel = "{" + union_matchers(targets, with_model=False) + "}"
    w = duration(window)
    terms = list(probe_terms(probe_namespaces)) if probe_namespaces else []
    for key, names in gauge_names.items():
        for name in sorted(set(names)):
            terms.append(_tag(f"{name}{sel}", f"{key}@{name}"))
            terms.append(_tag(f"timestamp({name}{sel})", f"{key}_ts@{name}"))
            if key in ("waiting", "running"):
                terms.append(_tag(f"{name}{sel} offset {w}", f"{key}_prev@{name}"))
    terms.append(_tag(f"{vm.UP}{up_sel}", f"up@{vm.UP}"))
    terms.append(_tag(f"timestamp({vm.UP}{up_sel})", f"up_ts@{vm.UP}"))
    if loading_bound is not None:
        b = duration(loading_bound)
        terms.append(_tag(f"max_over_time({vm.UP}{up_sel}[{b}])", f"up_max@{vm.UP}"))
        terms.append(_tag(f"{vm.UP}{up_sel} offset {b}", f"up_then@{vm.UP}"))
    return " or ".join(terms)


def idle_step(lookback: float) -> float:
    """The step (whole seconds) of the idle-clock subquery over ``lookback`` s: about 60 points, at least 5 s."""
    return float(max(5, math.ceil(lookback / 60)))


def last_demand_term(index: int, target: TargetSelector, threshold: float, lookback: float) -> str:
    """The idle clock of one target from history, a term of the gauges query tagged ``seen@<index>``.

    With ``S = sum(waiting{sel}) + sum(running{sel})`` over the target's pods, ``L`` = ``lookback``
    (``scaleToZeroAfter``) and ``s`` = :func:`idle_step`::

        max_over_time((timestamp(S > threshold) or -timestamp(S))[L+s:s])

    ``timestamp`` of a computed value is the subquery step's time. Steps with demand above the threshold
    give their time (> 0), steps with data but no demand minus their time, steps without data nothing. So
    the value ``v`` is the last step with demand when there is one, else ``-c`` with ``c`` the first step
    with data (no demand since ``c``; ``c <= now - L`` when the history covers the whole lookback, which the
    extra step guarantees, subquery steps being multiples of ``s``); absent when the pods reported nothing
    over the lookback. Worked example (L = 300 s, s = 5 s, now = 1000): W + R was 2 until step 880 and 0
    since, threshold 0 -> v = 880 (idle for 120 s); always 0 -> v = -695 (the first step, 695 <= 700:
    idle for at least 300 s). Pinned against a real Prometheus by
    ``tests/integration/test_idle_clock.py``.
    """
    sel = target.selector()
    sums = f"(sum({vm.WAITING.new}{sel}) + sum({vm.RUNNING.new}{sel}))"
    step = idle_step(lookback)
    body = (f"max_over_time((timestamp({sums} > {float(threshold)!r}) or -timestamp({sums}))"
            f"[{duration(lookback + step)}:{duration(step)}])")
    return _tag(body, f"seen@{index}")


def last_demand_pods_term(targets: Sequence[TargetSelector], lookback: float) -> str:
    """:func:`last_demand_term` at threshold 0 for many targets in one term, per pod (tagged
    ``seenpod@<lookback in ms>``): ``P`` = ``sum by (namespace, pod, model_name)`` of waiting and running over the
    union selector, then the same ``max_over_time((timestamp(P > 0) or -timestamp(P))[L+s:s])``. With threshold
    0, ``W + R > 0`` for a target exactly when it is for one of its pods, and the first step with data of the
    target is the earliest of its pods', so the target's value is the largest of its pods' values (both the
    last demand, > 0, and minus the first step with data, < 0, combine by ``max``)."""
    names = "|".join(escape_regex(n) for n in (vm.WAITING.new, vm.RUNNING.new))
    p = f'sum by ({_BY_POD}) ({{__name__=~"{names}",{union_matchers(targets)}}})'
    step = idle_step(lookback)
    body = (f"max_over_time((timestamp({p} > 0) or -timestamp({p}))"
            f"[{duration(lookback + step)}:{duration(step)}])")
    return _tag(body, f"seenpod@{duration(lookback)}")


def decode_last_demand(value: float) -> float | None:
    """``Signals.last_demand_at`` from a :func:`last_demand_term` value (``v`` or ``-c``, see there)."""
    if not math.isfinite(value) or value == 0:
        return None
    return abs(value)


_BY_POD = f"{vm.LABEL_NAMESPACE}, {vm.LABEL_POD}, {vm.LABEL_MODEL_NAME}"


def rates_query(targets: Sequence[TargetSelector], latency_names: Mapping[str, Iterable[str]], window: float) -> str:
    """Query 3: per-pod rates of the latency buckets, completions by reason and token histograms' sum/count.

    ``latency_names`` maps ``ttft``/``itl`` to the histogram base names to read.
    """
    sel = "{" + union_matchers(targets) + "}"
    w = duration(window)
    terms = []
    for key, names in latency_names.items():
        for name in sorted(set(names)):
            terms.append(_tag(f"sum by ({_BY_POD}, le) (rate({name}_bucket{sel}[{w}]))", f"{key}@{name}"))
    succ = vm.REQUEST_SUCCESS.new
    terms.append(_tag(f"sum by ({_BY_POD}, {vm.LABEL_FINISHED_REASON}) (rate({succ}{sel}[{w}]))", f"success@{succ}"))
    for fam, key in ((vm.REQUEST_PROMPT_TOKENS, "prompt"), (vm.REQUEST_GENERATION_TOKENS, "output")):
        for part in ("sum", "count"):
            terms.append(_tag(f"sum by ({_BY_POD}) (rate({fam.new}_{part}{sel}[{w}]))", f"{key}_{part}@{fam.new}"))
    return " or ".join(terms)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` (Prometheus 2.42 ``promql/quantile.go``) on (upper bound, cumulative count).

    Steps, as Prometheus does them: q < 0 -> -Inf, q > 1 -> +Inf; sort by upper
    bound; no ``+Inf`` bucket -> NaN; merge equal bounds (sum); force counts
    monotonic (a count below its predecessor is raised to it); fewer than 2
    buckets or zero observations -> NaN. Then ``rank = q * total``; take the first
    bucket ``b`` whose count >= rank; if it is the ``+Inf`` bucket return the
    highest finite bound; if it is the first bucket and its bound <= 0 return that
    bound; else interpolate linearly inside it from the previous bound (0 for the
    first bucket): ``lo + (hi - lo) * (rank - count_before) / (count_b - count_before)``.

    Worked example: buckets (0.1, 2), (0.5, 10), (+Inf, 10), q = 0.95: rank = 9.5,
    b = the 0.5 bucket, result = 0.1 + 0.4 * (9.5 - 2) / 8 = 0.475.
    Pinned by ``tests/unit/test_promql.py::test_histogram_quantile_worked_example`` and against the real
    Prometheus by ``tests/integration/test_prometheus_source.py::test_client_quantile_equals_promql``.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for ub, c in buckets:
        merged[ub] = merged.get(ub, 0.0) + c
    bs = sorted(merged.items())
    if not bs or not math.isinf(bs[-1][0]) or bs[-1][0] < 0:
        return math.nan
    if len(bs) < 2:
        return math.nan
    mono, hi = [], -math.inf
    for ub, c in bs:
        hi = max(hi, c) if not math.isnan(c) else hi
        mono.append((ub, hi))
    bs = mono
    total = bs[-1][1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    b = next((i for i in range(len(bs) - 1) if bs[i][1] >= rank), len(bs) - 1)
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start, end, count = 0.0, bs[b][0], bs[b][1]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    return start + (end - start) * (rank / count)


def latency_means_query(targets: Sequence[TargetSelector], latency_names: Mapping[str, Iterable[str]],
                        window: float) -> str:
    """For recordings (calibration): per-pod ``rate(_sum)`` and ``rate(_count)`` of the TTFT / ITL histograms."""
    sel = "{" + union_matchers(targets) + "}"
    w = duration(window)
    terms = []
    for key, names in latency_names.items():
        for name in sorted(set(names)):
            for part in ("sum", "count"):
                terms.append(_tag(f"sum by ({_BY_POD}) (rate({name}_{part}{sel}[{w}]))", f"{key}_{part}@{name}"))
    return " or ".join(terms)


def deployment_replicas_query(namespace: str, deployment: str) -> str:
    """kube-state-metrics' ``spec.replicas`` of the Deployment (absent when kube-state-metrics is not scraped)."""
    return (f"max(kube_deployment_spec_replicas{{{matcher(vm.LABEL_NAMESPACE, '=', namespace)},"
            f"{matcher('deployment', '=', deployment)}}})")
