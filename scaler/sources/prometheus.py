"""The Prometheus signal source: vLLM series -> one :class:`~scaler.signals.Signals` per target.

Built on prometheus-api-client's ``PrometheusConnect`` (its ``requests``
session, auth and TLS settings, no retries: a scaler refresh must fail fast and typed, not back off for
seconds); each query is a POST with the PromQL form-encoded in the body (:func:`query`), and a shared
query is split so that no request carries more than :data:`MAX_QUERY_BYTES` of it.

Cost: at most three instant queries per refresh per target (per chunk of targets when split) (see :mod:`scaler.sources.promql` for the
exact PromQL). Every target given to one :meth:`PrometheusSource.fetch` call with the same ``window``
shares the first two; the third is shared by every target with the same ``activationQuery`` text:

1. the gauges (waiting, running, KV usage, ``up``; values, sample timestamps, values one window ago;
   ``max_over_time(up[B])`` and ``up offset B`` for the loading bound), with the metric-name probe folded
   in (as ``count by (namespace)`` terms) when a namespace's probe is missing, incomplete or older than
   ``probe_ttl``; the KV gauge is then read under both names and the probe's answer picks one; and the
   idle clock from history (:func:`~scaler.sources.promql.last_demand_term` -> ``Signals.last_demand_at``);
2. the rates (TTFT / ITL bucket rates, completions by reason, token histogram sum and count rates), under
   the names the probe found;
3. the target's ``activationQuery`` (only when it has one), evaluated at ``now`` -> ``upstream_demand``
   (:func:`activation_value`).

Per target (the pods of its Deployment, :func:`~scaler.sources.promql.pod_pattern`, in the configured
namespace, optionally one ``model_name``):

==========================  =====================================================================
Signals field               how
==========================  =====================================================================
``pods_reporting``          pods with a waiting-gauge sample no older than ``window``
``waiting``, ``running``    sum over those pods of ``vllm:num_requests_waiting`` / ``_running``
``kv_cache_usage``          mean over those pods of ``vllm:kv_cache_usage_perc`` (or the old name)
``ttft_p95``/``tpot_p95``   :func:`~scaler.sources.promql.histogram_quantile` (0.95) of the bucket rates
                            summed over the pods by ``le``; NaN (no requests in the window) -> None
``completion_rate``         sum of ``rate(vllm:request_success_total[w])`` without ``finished_reason="abort"``
``prompt_tokens_mean``      sum rate(request_prompt_tokens_sum) / sum rate(_count); None when no requests
``output_tokens_mean``      the same for ``vllm:request_generation_tokens``
``starting_replicas``       pods scraped but not serving metrics (``up == 0`` and no fresh vLLM sample):
                            loading the model, or broken; pods failing for longer than ``max_loading``
                            (``up == 0`` now and ``B`` ago, ``max_over_time(up[B]) == 0``) are not counted.
                            None when there are none (a lower bound: Pending pods are no scrape targets)
``upstream_demand``         the ``activationQuery``'s value (:func:`activation_value`); None without one
``arrival_rate``            ``F + (D_now - D_then) / w``, clamped at 0: requests that finished in the window
                            (all reasons, aborts too: they arrived) plus the growth of the requests in the
                            fleet ``D = waiting + running`` over the window (``offset w``), i.e. arrivals =
                            departures + change in the number in system. Pods absent one window ago count 0.
==========================  =====================================================================

Worked example of the arrival estimate (pinned by ``tests/unit/test_promql.py::test_arrival_worked_example``;
every field is also checked against a real Prometheus by
``tests/integration/test_prometheus_source.py::test_signals_match_generated_series``): w = 60 s, 90
requests finished (1.5 req/s, aborts included), D went from 10 to 40: arrival = 1.5 + 30 / 60 = 2.0 req/s.

Outcomes per target, all distinct:

* no ``up`` and no vLLM series for the pods -> ``Signals(pods_reporting=0)`` with ``None`` gauges
  (the Deployment is at zero replicas; vLLM exports nothing there);
* no fresh vLLM series, some pods with ``up == 0`` for less than ``max_loading`` (loading the model,
  e.g. after a scale-up from zero) -> ``Signals(pods_reporting=0, starting_replicas=k)`` with every
  demand field ``None``: unknown, never zero (the policy must not read it as idle);
* no fresh vLLM series and every ``up == 0`` pod failing for longer than ``max_loading`` ->
  :class:`ScrapeFailingError` (a :class:`~scaler.errors.NoDataError`, ``.pods``);
* ``up == 1`` series for the pods or stale vLLM samples (newest older than ``window``) but no fresh vLLM
  series -> :class:`~scaler.errors.NoDataError`;
* no series while the target had demand within ``scaleToZeroAfter`` ->
  :class:`~scaler.errors.SeriesVanishedError`; scrapes stopped, or the window after a failure ->
  :class:`~scaler.errors.WindowGapError` (:meth:`PrometheusSource._screen`);
* an ``activationQuery`` Prometheus rejects (HTTP 400 ``bad_data``, 422 ``execution``) or whose result
  is not one number -> :class:`ActivationQueryError` (``.signals`` keeps the vLLM snapshot);
* timeout -> :class:`~scaler.errors.SourceTimeout`; refused/reset/closed connection ->
  :class:`~scaler.errors.SourceConnectionError`; non-200 -> :class:`~scaler.errors.SourceHTTPError`
  (``status`` kept). These three are raised for the whole call (every target shares the queries), except
  HTTP 400/422 for one chunk, which is split down to the target it fails for.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from scaler import vllm_metrics as vm
from scaler.config import PolicyConfig, TargetKey
from scaler.errors import (
    ActivationQueryError,
    NoDataError,
    ScrapeFailingError,
    SeriesVanishedError,
    SourceConnectionError,
    SourceError,
    SourceHTTPError,
    SourceTimeout,
    SourceUnavailable,
    WindowGapError,
)
from scaler.signals import Signals
from scaler.sources import promql
from scaler.sources.promql import TERM_LABEL, TargetSelector, histogram_quantile

log = logging.getLogger(__name__)

SOURCE = "prometheus"
P95 = 0.95
#: A target's newest sample is stale when older than STALE_INTERVALS scrape intervals + STALE_SLACK seconds
#: (see :meth:`PrometheusSource._screen`). Prometheus' ``rate`` extrapolates to the window's end only while
#: the last sample is within 1.1 intervals of it; beyond, the rate under-reads: held soon after.
STALE_INTERVALS = 1.5
STALE_SLACK = 2.0
#: How many newest-sample times per target are kept to learn its scrape interval.
_TICKS = 4
#: Pods failing their scrapes (``up == 0``) for longer than this (seconds) are no longer counted as loading.
DEFAULT_MAX_LOADING = 900.0
_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def prometheus_client_for(url: str, timeout: float) -> PrometheusConnect:
    # No retries: urllib3's default Retry in prometheus-api-client backs off on 5xx for seconds.
    retry = Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False)
    return PrometheusConnect(url=url, disable_ssl=False, retry=retry, timeout=timeout, method="POST")


#: Longest PromQL sent in one request, in bytes as it travels (form-encoded). Shared queries over more
#: targets are split (:meth:`PrometheusSource.fetch`; one target's own query is never split). The query travels in the POST body, form-encoded, never in the URL;
#: 64 KiB is far below what the servers on the way accept for a body (Prometheus, a Go server: 10 MB of
#: form; nginx's default ``client_max_body_size``: 1 MiB) and keeps one request's evaluation small.
MAX_QUERY_BYTES = 64 * 1024


def _shown(url: str) -> str:
    """``url`` without user:password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@contextmanager
def typed_errors(client: PrometheusConnect, timeout: float) -> Iterator[None]:
    """Map what ``requests``/prometheus-api-client raise to the typed :class:`SourceError` family."""
    url = _shown(client.url)
    try:
        yield
    except requests.exceptions.JSONDecodeError as exc:  # 200 with a body that is not Prometheus' JSON
        raise SourceUnavailable(f"malformed answer from {url}: {exc}", source=SOURCE) from exc
    except requests.exceptions.Timeout as exc:
        raise SourceTimeout(f"no answer within {timeout:g} s from {url}", source=SOURCE) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise SourceConnectionError(f"cannot reach {url}: {type(exc).__name__}", source=SOURCE) from exc
    except PrometheusApiClientException as exc:
        m = _STATUS.search(str(exc))
        status = int(m.group(1)) if m else 0
        raise SourceHTTPError(f"{url}: {str(exc)[:300]}", status=status, source=SOURCE) from exc
    except requests.exceptions.RequestException as exc:
        raise SourceConnectionError(f"request to {url} failed: {type(exc).__name__}", source=SOURCE) from exc
    except (ValueError, KeyError, TypeError) as exc:  # JSON, but not Prometheus' shape
        raise SourceUnavailable(f"malformed answer from {url}: {str(exc)[:200]!r}", source=SOURCE) from exc


def _timeout_param(timeout: float) -> str:
    return f"{max(int(timeout * 1000), 1)}ms"


def _post(client: PrometheusConnect, api: str, form: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    """POST ``form`` (form-encoded, in the body) to ``<url>/api/v1/<api>`` with the client's session, headers
    and auth; Prometheus' ``data.result``. prometheus-api-client's ``custom_query`` puts the query in the URL
    (``params``) even with ``method="POST"``, so the request is made here, on its session (the retry policy,
    TLS settings and auth the client was built with)."""
    with typed_errors(client, timeout):
        session = client._session
        response = session.post(f"{client.url.rstrip('/')}/api/v1/{api}", data=form, headers=client.headers,
                                auth=client.auth, verify=session.verify, cert=session.cert, timeout=timeout)
        if response.status_code != 200:
            raise PrometheusApiClientException(
                f"HTTP Status Code {response.status_code} ({response.content[:2000]!r})")
        rows = response.json()["data"]["result"]
    if not isinstance(rows, list):
        raise SourceUnavailable(f"malformed answer from {_shown(client.url)}: result is {type(rows).__name__}",
                                source=SOURCE)
    return rows


def query(client: PrometheusConnect, expr: str, *, at: float, timeout: float) -> list[dict[str, Any]]:
    """One instant query at ``at`` (unix seconds), PromQL in the POST body, errors typed (:func:`typed_errors`)."""
    return _post(client, "query", {"query": expr, "time": f"{at:.3f}", "timeout": _timeout_param(timeout)},
                 timeout)


def query_range(client: PrometheusConnect, expr: str, *, start: float, end: float, step: float,
                timeout: float) -> list[dict[str, Any]]:
    """A range query (``values`` per series), errors mapped as :func:`query`. Times in whole unix seconds."""
    return _post(client, "query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                         "step": promql.duration(step), "timeout": _timeout_param(timeout)},
                 timeout)


@dataclass(frozen=True)
class MetricNames:
    """The names one namespace exports for the probed families (new name first when both exist)."""

    kv: str = vm.KV_CACHE.new
    itl: str = vm.ITL.new
    found: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, str]:
        return {"waiting": vm.WAITING.new, "running": vm.RUNNING.new, "kv": self.kv, "ttft": vm.TTFT.new,
                "itl": self.itl}


def choose_names(found: Iterable[str]) -> MetricNames:
    """Newest candidate present wins; a family with none present keeps its new name (and is re-probed)."""
    present = frozenset(found)

    def pick(fam: vm.MetricFamily) -> str:
        for n in fam.names:
            if (n + "_count" if fam.kind == "histogram" else n) in present:
                return n
        return fam.new

    return MetricNames(kv=pick(vm.KV_CACHE), itl=pick(vm.ITL), found=present)


def data_queries(targets: Sequence[TargetSelector], names: Iterable[MetricNames], window: float, *,
                 loading_bound: float | None = None) -> tuple[str, str]:
    """The gauges and rates PromQL for ``targets``, reading every name in ``names`` (without the name probe:
    :meth:`PrometheusSource.fetch` folds it into the gauges query itself)."""
    names = list(names)
    kv_names = {n.kv for n in names} or {vm.KV_CACHE.new}
    itl_names = {n.itl for n in names} or {vm.ITL.new}
    return (promql.gauges_query(targets, {"waiting": [vm.WAITING.new], "running": [vm.RUNNING.new],
                                          "kv": kv_names}, window, loading_bound=loading_bound),
            promql.rates_query(targets, {"ttft": [vm.TTFT.new], "itl": itl_names}, window))


@dataclass
class _Probe:
    names: MetricNames
    at: float
    complete: bool


@dataclass
class _PodSeries:
    """What the two data queries returned for one (namespace, pod, model_name) series group."""

    gauges: dict[str, float] = field(default_factory=dict)       # term -> value
    ts: dict[str, float] = field(default_factory=dict)           # term -> newest sample time
    buckets: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    success: dict[str, float] = field(default_factory=dict)      # finished_reason -> rate
    tokens: dict[str, float] = field(default_factory=dict)       # prompt_sum, prompt_count, ...
    series: dict[str, int] = field(default_factory=dict)         # term -> number of series summed


class PrometheusSource:
    """:class:`~scaler.signals.SignalSource` reading vLLM series from one Prometheus.

    ``url_or_client``: the base URL, or a ready ``PrometheusConnect`` (its own
    session/auth/TLS settings are then used as they are). ``timeout``: seconds per
    request. ``probe_ttl``: how long a namespace's name probe is reused. ``max_loading``: seconds after
    which a pod whose scrapes keep failing (``up == 0``) counts as broken instead of loading
    (default :data:`DEFAULT_MAX_LOADING`, 900 s; None: never).
    """

    name = SOURCE

    def __init__(self, url_or_client: str | PrometheusConnect, *, timeout: float, probe_ttl: float = 300.0,
                 max_loading: float | None = DEFAULT_MAX_LOADING):
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout!r}")
        if max_loading is not None and max_loading <= 0:
            raise ValueError(f"max_loading must be > 0 seconds (or None), got {max_loading!r}")
        self.max_loading = max_loading
        self.timeout = timeout
        self.client = prometheus_client_for(url_or_client, timeout) if isinstance(url_or_client, str) else url_or_client
        self.probe_ttl = probe_ttl
        self._probes: dict[str, _Probe] = {}
        self.queries_sent = 0  # for tests and the server's own metrics
        # Per target_key (see _screen): when demand was last reported, in Prometheus' history, failures.
        self._seen: dict[TargetKey, float] = {}
        self._history_demand: dict[TargetKey, bool] = {}   # this fetch: demand within scaleToZeroAfter in history
        self._failed_at: dict[TargetKey, float] = {}
        self._recovered_at: dict[TargetKey, float] = {}
        self._ticks: dict[TargetKey, deque[float]] = {}
        self._newest: dict[TargetKey, float] = {}   # filled by _fetch_group for the current fetch
        self._pruned_at = -math.inf

    # -- probing --------------------------------------------------------------------------------
    def due_probes(self, namespaces: Iterable[str], now: float) -> list[str]:
        """Namespaces whose name probe is missing, incomplete or older than ``probe_ttl``."""
        return sorted(ns for ns in set(namespaces)
                      if ns not in self._probes or not self._probes[ns].complete
                      or abs(now - self._probes[ns].at) > self.probe_ttl)

    def names_for(self, namespaces: set[str], now: float) -> dict[str, MetricNames]:
        """The metric names per namespace, probing (one query for all due namespaces) when needed."""
        due = self.due_probes(namespaces, now)
        if due:
            rows = self._query(promql.probe_query(due), now)
            found: dict[str, set[str]] = defaultdict(set)
            for r in rows:
                found[r["metric"].get(vm.LABEL_NAMESPACE, "")].add(r["metric"].get("__name__", ""))
            self._record_probes(due, found, now)
        return {ns: self._probes[ns].names for ns in namespaces}

    def _record_probes(self, due: Iterable[str], found: Mapping[str, set[str]], now: float) -> None:
        for ns in due:
            names = choose_names(found.get(ns, ()))
            complete = all(any((n + "_count" if f.kind == "histogram" else n) in names.found for n in f.names)
                           for f in vm.PROBED)
            old = self._probes.get(ns)
            if old is None or old.names.as_dict() != names.as_dict() or old.complete != complete:
                log.info("vLLM metric names in namespace %s: KV cache %s, inter-token latency %s%s", ns,
                         names.kv, names.itl,
                         "" if complete else " (some not found yet; using the new names, will probe again)")
            self._probes[ns] = _Probe(names, now, complete)

    def probe_complete(self, namespace: str) -> bool:
        """Whether the last probe of ``namespace`` found a name for every probed family."""
        probe = self._probes.get(namespace)
        return probe is not None and probe.complete

    def invalidate_probe(self, namespace: str) -> None:
        """Forget a namespace's probe (e.g. after vLLM was upgraded); the next fetch probes again."""
        self._probes.pop(namespace, None)

    def query(self, expr: str, now: float) -> list[dict[str, Any]]:
        """An instant query through this source's client (counted in ``queries_sent``), errors typed."""
        return self._query(expr, now)

    def _query(self, expr: str, now: float) -> list[dict[str, Any]]:
        self.queries_sent += 1
        return query(self.client, expr, at=now, timeout=self.timeout)

    # -- fetch ---------------------------------------------------------------------------------
    def fetch(self, targets: Sequence[PolicyConfig], now: float) -> dict[TargetKey, Signals | SourceError]:
        """Signals (or the per-target :class:`SourceError`) for ``targets`` at ``now``.

        Raises :class:`SourceUnavailable` subclasses when Prometheus can not be asked.
        Targets with different windows are fetched in separate query groups, each split into chunks whose
        queries stay within :data:`MAX_QUERY_BYTES`; a chunk Prometheus rejects (HTTP 400/422) is split
        again down to the target it fails for, so one target's query never fails another's. The activation
        queries are shared by every target with the same text, whatever its window. Every target is read
        from this source's Prometheus (``PolicyConfig.prometheus_address`` is the caller's business: the
        server keeps one source per address). Each result then passes :meth:`_screen` (missing data after
        demand, and the window after a failure, are typed errors, never zeros).
        """
        out: dict[TargetKey, Signals | SourceError] = {}
        by_window: dict[float, list[PolicyConfig]] = defaultdict(list)
        for t in targets:
            by_window[t.window].append(t)
        self._newest, self._history_demand = {}, {}   # this fetch's, filled by _fetch_group (one fetch at a time)
        try:
            for window, group in sorted(by_window.items()):
                group = sorted(group, key=lambda c: (c.namespace, c.deployment, c.model_name or ""))
                out.update(self._fetch_group(group, window, now))
            texts = sorted({t.activation_query for t in targets if t.activation_query is not None})
            if texts:
                values = {text: self.activation(text, now) for text in texts}
                for t in targets:
                    if t.activation_query is not None:
                        out[t.target_key] = with_upstream(out[t.target_key], values[t.activation_query])
        except SourceError:
            for t in targets:
                self._failed_at[t.target_key] = now
                self._recovered_at.pop(t.target_key, None)
            raise
        self._prune(now)
        newest, self._newest = self._newest, {}
        history, self._history_demand = self._history_demand, {}
        return {t.target_key: self._screen(t, out[t.target_key], now, newest.get(t.target_key),
                                           history.get(t.target_key, False))
                for t in targets if t.target_key in out}

    def _prune(self, now: float) -> None:
        """Forget per-target memory not refreshed for a day (targets come and go; memory stays bounded)."""
        if now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        for d in (self._seen, self._failed_at, self._recovered_at):
            for k in [k for k, t in d.items() if now - t > 86400]:
                del d[k]
        for k in [k for k, q in self._ticks.items() if not q or now - q[-1] > 86400]:
            del self._ticks[k]

    def _screen(self, config: PolicyConfig, result: Signals | SourceError, now: float,
                newest: float | None = None, history_demand: bool = False) -> Signals | SourceError:
        """Missing data is never zero, and a window spanning a failure is never read as a surge.

        * **Vanished series.** A "zero replicas" snapshot (no series, no pod loading) for a target whose
          waiting + running was above ``activationThreshold`` within ``scaleToZeroAfter`` (at least
          ``window``: :func:`_memory`; in Prometheus' history, ``Signals.last_demand_at``, or in this source's memory of its last reporting snapshot,
          for a Prometheus restarted with empty storage) is :class:`SeriesVanishedError`: KEDA scales a
          target to zero only after it was idle that long, so its pods exist and their data is missing.
        * **Scrapes stopped.** ``newest`` is the time of the target's newest waiting sample. The scrape
          interval ``i`` is the smallest step between the newest-sample times seen at earlier refreshes
          (the last :data:`_TICKS`). When the newest sample is older than :data:`STALE_INTERVALS` ``* i +``
          :data:`STALE_SLACK` (scrapes stopped: Prometheus was down, the pods unreachable), rates over the
          window already under-read its end: :class:`WindowGapError`, a failure like the others below.
          Before ``i`` is known, only the ``window`` freshness of :func:`build_signals` applies. Worked
          example: samples every 15 s, the last at 1000; at 1025 it is 25 s old > 1.5 * 15 + 2 = 24.5 ->
          held.
        * **Window after a failure.** After any failed read of the target (Prometheus unreachable, an
          error, no data, scrapes stopped), the first good read at ``r`` starts a hold: until
          ``r + window`` the answer is :class:`WindowGapError` (the server keeps its last good decision,
          then ``UNAVAILABLE``), so rates, quantiles and the arrival estimate are read only over a window
          of data after the gap (a snapshot without reporting pods has no rates: not held, and it ends the
          hold) (held rather than a shortened window: a window of a few scrapes gives a
          noisy rate, which the forecaster would learn as a trend).

        Both are :class:`NoDataError`\\ s: the server holds, then answers ``UNAVAILABLE``, for both
        policies and for ``IsActive``. Pinned by ``tests/unit/test_prometheus_screen.py`` and the fault
        matrix ``tests/integration/test_fault_matrix.py``.
        """
        key = config.target_key
        if isinstance(result, SourceError):
            if not isinstance(result, (ActivationQueryError, WindowGapError)):
                self._failed_at[key] = now
                self._recovered_at.pop(key, None)
            return result
        seen = self._seen.get(key)
        if result.pods_reporting > 0:
            if result.demand > config.activation_threshold:
                self._seen[key] = now
            ticks = self._ticks.setdefault(key, deque(maxlen=_TICKS))
            if newest is not None and (not ticks or newest > ticks[-1]):
                ticks.append(newest)
            steps = [b - a for a, b in zip(ticks, list(ticks)[1:]) if b - a >= 1.0]
            if steps and newest is not None and now - newest > STALE_INTERVALS * min(steps) + STALE_SLACK:
                self._failed_at[key] = now
                self._recovered_at.pop(key, None)
                return WindowGapError(
                    f"{config.namespace}/{config.deployment}: newest sample is {now - newest:.0f} s old, over "
                    f"{STALE_INTERVALS:g} scrape intervals ({min(steps):g} s) + {STALE_SLACK:g} s: scrapes stopped, "
                    f"rates over the window under-read its end", source=SOURCE)
        elif result.starting_replicas is None:
            remembered = seen is not None and now - seen < _memory(config)
            if remembered or history_demand:
                last = seen if remembered else result.last_demand_at
                error = SeriesVanishedError(
                    f"{config.namespace}/{config.deployment}: no series now, but waiting+running was above "
                    f"{config.activation_threshold:g} {now - (last or now):.0f} s ago (within {_memory(config):g} s, "
                    f"the longer of scaleToZeroAfter and window): pods exist, their data is missing", source=SOURCE)
                self._failed_at[key] = now
                self._recovered_at.pop(key, None)
                return error
        if result.pods_reporting == 0:   # zero replicas (or loading): no rates to hold; a failure is over
            self._failed_at.pop(key, None)
            self._recovered_at.pop(key, None)
        elif key in self._failed_at:
            since = self._recovered_at.setdefault(key, now)
            if now - since < config.window:
                return WindowGapError(
                    f"{config.namespace}/{config.deployment}: data is back since {now - since:.0f} s after a "
                    f"failed read; holding until the {config.window:g} s window holds no gap",
                    source=SOURCE)
            del self._failed_at[key]
            del self._recovered_at[key]
        return result

    def activation(self, expr: str, now: float) -> float | None | ActivationQueryError:
        """One activation query at ``now``: its value (:func:`activation_value`), or the error naming it.

        HTTP 400 (``bad_data``: PromQL that does not parse) and 422 (``execution``: e.g. a many-to-many
        match) are the query's fault and come back as :class:`ActivationQueryError`; other failures
        (timeout, connection, 5xx) are Prometheus' and are raised, as for the vLLM queries.
        """
        try:
            result = self._query(expr, now)
        except SourceHTTPError as exc:
            if exc.status not in (400, 422):
                raise
            return ActivationQueryError(expr, "Prometheus rejected it: " + prometheus_error(exc))
        try:
            return activation_value(result)
        except ValueError as exc:
            return ActivationQueryError(expr, str(exc))

    def _fetch_group(self, configs: Sequence[PolicyConfig], window: float,
                     now: float) -> dict[TargetKey, Signals | SourceError]:
        """One chunk's two queries, split in halves while a query is over :data:`MAX_QUERY_BYTES` or
        Prometheus rejects it (400/422: the failing target ends up alone, answered with the error)."""
        sels = {c.target_key: TargetSelector(c.namespace, c.deployment, c.model_name) for c in configs}
        targets = list(dict.fromkeys(sels.values()))
        namespaces = {s.namespace for s in targets}
        due = self.due_probes(namespaces, now)
        # Namespaces with a due probe are probed inside the gauges query; their KV gauge is read under every
        # candidate name meanwhile, and the rates query (sent after) uses the names the probe found.
        kv_names = {self._probes[ns].names.kv for ns in namespaces if ns not in due}
        if due:
            kv_names |= set(vm.KV_CACHE.names)
        gauges_expr = promql.gauges_query(
            targets, {"waiting": [vm.WAITING.new], "running": [vm.RUNNING.new], "kv": kv_names}, window,
            probe_namespaces=due, loading_bound=self.max_loading)
        # The idle clock (promql.last_demand_term): one per-pod term per scaleToZeroAfter for targets at the
        # default threshold 0, a term of its own for a target with another threshold.
        by_lookback: dict[float, list[TargetSelector]] = defaultdict(list)
        for c in configs:
            if c.activation_threshold == 0:
                by_lookback[_memory(c)].append(sels[c.target_key])
        seen_terms = [promql.last_demand_pods_term(list(dict.fromkeys(ts)), lb) for lb, ts in by_lookback.items()]
        seen_terms += [promql.last_demand_term(i, sels[c.target_key], c.activation_threshold, _memory(c))
                       for i, c in enumerate(configs) if c.activation_threshold != 0]
        gauges_expr = " or ".join([gauges_expr, *seen_terms])
        half = len(configs) // 2
        if len(quote_plus(gauges_expr)) > MAX_QUERY_BYTES and half:   # the rates query is shorter
            return {**self._fetch_group(configs[:half], window, now), **self._fetch_group(configs[half:], window, now)}
        try:
            gauge_rows = self._query(gauges_expr, now)
            if due:
                found: dict[str, set[str]] = defaultdict(set)
                for r in gauge_rows:
                    term, _, name = r["metric"].get(TERM_LABEL, "").partition("@")
                    if term == "probe" and float(r["value"][1]) > 0:
                        found[r["metric"].get(vm.LABEL_NAMESPACE, "")].add(name)
                self._record_probes(due, found, now)
            names = {ns: self._probes[ns].names for ns in namespaces}
            _, rates_expr = data_queries(targets, names.values(), window)
            rate_rows = self._query(rates_expr, now)
        except SourceHTTPError as exc:
            if exc.status not in (400, 422):
                raise
            if half:
                return {**self._fetch_group(configs[:half], window, now),
                        **self._fetch_group(configs[half:], window, now)}
            return {configs[0].target_key: exc}
        seen: dict[int, float] = {}
        stamps: dict[str, dict[str, float]] = defaultdict(dict)   # namespace -> pod -> newest waiting sample
        per_pod: dict[str, list[tuple[Mapping[str, str], float]]] = defaultdict(list)   # lookback -> (labels, v)
        for r in gauge_rows:
            labels = r["metric"]
            term, _, rest = labels.get(TERM_LABEL, "").partition("@")
            if term == "seen":
                seen[int(rest)] = float(r["value"][1])
            elif term == "seenpod":
                per_pod[rest].append((labels, float(r["value"][1])))
            elif term == "waiting_ts" and rest == vm.WAITING.new:
                pods = stamps[labels.get(vm.LABEL_NAMESPACE, "")]
                pod = labels.get(vm.LABEL_POD, "")
                pods[pod] = max(float(r["value"][1]), pods.get(pod, -math.inf))
        out: dict[TargetKey, Signals | SourceError] = {}
        gauge_index, rate_index = index_rows(gauge_rows), index_rows(rate_rows)
        for i, c in enumerate(configs):
            sel = sels[c.target_key]
            v = seen.get(i)
            if c.activation_threshold == 0:
                vs = [x for labels, x in per_pod.get(promql.duration(_memory(c)), ())
                      if sel.matches(labels) and math.isfinite(x)]
                v = max(vs) if vs else None
            mine = [t for pod, t in stamps.get(sel.namespace, {}).items()
                    if sel.matches({vm.LABEL_NAMESPACE: sel.namespace, vm.LABEL_POD: pod}, with_model=False)
                    and now - t <= window]
            if mine:
                self._newest[c.target_key] = max(mine)
            self._history_demand[c.target_key] = v is not None and v > 0 and now - v < _memory(c)
            try:
                sig = build_signals(sel, names[sel.namespace], rows_for(sel, gauge_index), rows_for(sel, rate_index),
                                    window, now, loading_bound=self.max_loading)
                out[c.target_key] = sig if v is None else replace(sig, last_demand_at=promql.decode_last_demand(v))
            except NoDataError as exc:
                out[c.target_key] = exc
            except (ValueError, KeyError, TypeError) as exc:  # NaN, negative or malformed values
                out[c.target_key] = NoDataError(
                    f"{sel.namespace}/{sel.deployment}: unusable values from Prometheus: {str(exc)[:200]}",
                    source=SOURCE)
        return out


def _memory(config: PolicyConfig) -> float:
    """How far back demand makes missing series "missing data": ``scaleToZeroAfter`` (KEDA scales a target to
    zero only after that long idle), at least ``window`` (so ``scaleToZeroAfter: 0`` still has one)."""
    return max(config.scale_to_zero_after, config.window)


_BYTES_BODY = re.compile(r"\((b(?:'.*'|\".*\"))\)\s*$", re.S)


def prometheus_error(exc: SourceHTTPError) -> str:
    """``<errorType>: <error>`` from Prometheus' JSON error body (``bad_data: ... parse error: ...``).

    prometheus-api-client puts the body in its message as a bytes literal
    (``HTTP Status Code 400 (b'{"status":"error",...}')``); anything else is returned as it is.
    """
    text = str(exc.__cause__ or exc)
    m = _BYTES_BODY.search(text)
    try:
        body = json.loads(ast.literal_eval(m.group(1))) if m else None
    except (ValueError, SyntaxError):
        body = None
    if not isinstance(body, dict) or "error" not in body:
        return str(exc)
    return f"{body.get('errorType', 'error')}: {body['error']}"


def activation_value(result: Any) -> float | None:
    """The upstream demand an instant query's ``result`` states (Prometheus' ``data.result``).

    ==============================  =============================================================
    result                          upstream demand
    ==============================  =============================================================
    scalar ``[t, "v"]``             ``v``
    vector with one series          its value
    empty vector                    ``0.0``: no demand series means no demand (e.g. ``sum(q)`` over
                                    no queue series). For "absent means unknown" write
                                    ``sum(q) or vector(NaN)``
    NaN                             ``None`` (unknown; never read as zero)
    vector with several series      ``ValueError`` naming the count: aggregate in the query
                                    (``sum(...)``, ``max(...)``) so the choice is yours, not ours
    range vector, string, negative  ``ValueError``
    ==============================  =============================================================

    Pinned by ``tests/unit/test_activation_value.py``.
    """
    if (isinstance(result, list) and len(result) == 2 and isinstance(result[0], (int, float))
            and not isinstance(result[0], bool) and isinstance(result[1], str)):
        raw = result[1]
    elif isinstance(result, list) and all(isinstance(r, dict) for r in result):
        if any("values" in r for r in result):
            raise ValueError("the query returns a range vector; it must return an instant vector or a scalar "
                             "(drop the [range] or wrap it, e.g. max_over_time(q[5m]))")
        if not result:
            return 0.0
        if len(result) > 1:
            shown = ", ".join(_series_name(r.get("metric", {})) for r in result[:3])
            raise ValueError(f"the query returns {len(result)} series ({shown}{', ...' if len(result) > 3 else ''}); "
                             "it must return one number: aggregate it, e.g. sum(...) or max(...)")
        raw = result[0]["value"][1]
    else:
        raise ValueError(f"the query returns {str(result)[:80]!r}, not a scalar or an instant vector")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"the query returns {raw!r}, not a number") from None
    if math.isnan(value):
        return None
    if value < 0:
        raise ValueError(f"the query returns {value:g}; upstream demand must be >= 0")
    return value


def _series_name(labels: Mapping[str, str]) -> str:
    name = labels.get("__name__", "")
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"


def with_upstream(result: Signals | SourceError, value: float | None | ActivationQueryError) -> Signals | SourceError:
    """One target's outcome with its activation query's value: ``upstream_demand`` set, or the typed error."""
    if isinstance(value, ActivationQueryError):
        return value.for_target(result if isinstance(result, Signals) else None)
    if isinstance(result, Signals):
        return replace(result, upstream_demand=value)
    return result


Row = dict[str, Any]
"""One series of a Prometheus query result, as its JSON API returns it (``{"metric": {...}, "value": [t, "v"]}``)."""

RowIndex = dict[str, dict[tuple[str, str | None], list[Row]]]
"""Result rows by namespace, then by (pod, model_name): the labels :meth:`TargetSelector.matches` reads."""


def index_rows(rows: list[Row]) -> RowIndex:
    """Group one query's rows once per fetch, so each target looks at its own pods' rows only.

    Without it every target scanned every row of the shared queries: n targets x ~60 rows per pod, about
    6e7 label checks a refresh for 1,000 targets (tens of seconds of CPU). Rows without a pod label are left
    out: no target's selector matches them.
    """
    index: RowIndex = defaultdict(lambda: defaultdict(list))
    for r in rows:
        labels = r["metric"]
        pod = labels.get(vm.LABEL_POD)
        if pod:
            index[labels.get(vm.LABEL_NAMESPACE, "")][(pod, labels.get(vm.LABEL_MODEL_NAME))].append(r)
    return index


def rows_for(sel: TargetSelector, index: RowIndex) -> list[Row]:
    """The rows of ``index`` whose series may be ``sel``'s (``matches`` without the model; the caller checks all)."""
    out: list[Row] = []
    for (pod, _model), rows in index.get(sel.namespace, {}).items():
        if sel.matches({vm.LABEL_NAMESPACE: sel.namespace, vm.LABEL_POD: pod}, with_model=False):
            out.extend(rows)
    return out


def build_signals(sel: TargetSelector, names: MetricNames, gauge_rows: list[Row], rate_rows: list[Row], window: float,
                  now: float, *, loading_bound: float | None = None) -> Signals:
    """One target's :class:`Signals` from the rows of the gauges and rates queries (see the module table).

    Rows are Prometheus' instant-query results (``{"metric": {...}, "value": [t, "v"]}``), for every target
    of the query; this picks the target's series. Raises :class:`NoDataError` as the module docstring says.
    """
    wanted = {"waiting": vm.WAITING.new, "running": vm.RUNNING.new, "kv": names.kv, "up": vm.UP,
              "ttft": vm.TTFT.new, "itl": names.itl}
    pods: dict[str, _PodSeries] = defaultdict(_PodSeries)
    # One entry per scrape target (a pod may have several, e.g. a sidecar's): up, up_max, up_then.
    up_series: dict[frozenset[tuple[str, str]], dict[str, float]] = defaultdict(dict)
    up_pod: dict[frozenset[tuple[str, str]], str] = {}
    for r in gauge_rows:
        labels = r["metric"]
        term, _, metric = labels.get(TERM_LABEL, "").partition("@")
        base = term.removesuffix("_ts").removesuffix("_prev")
        if metric == vm.UP and term in ("up", "up_max", "up_then"):
            if sel.matches(labels, with_model=False):
                key = frozenset((k, v) for k, v in labels.items() if k not in (TERM_LABEL, "__name__"))
                up_series[key][term] = float(r["value"][1])
                up_pod[key] = labels[vm.LABEL_POD]
            continue
        if wanted.get(base) != metric:
            continue
        if not sel.matches(labels, with_model=base != "up"):
            continue
        value = float(r["value"][1])
        pod = labels[vm.LABEL_POD]
        if base == "up":
            continue

        if term.endswith("_ts"):
            pods[pod].ts[base] = max(value, pods[pod].ts.get(base, -math.inf))
        else:
            pods[pod].gauges[term] = pods[pod].gauges.get(term, 0.0) + value
            pods[pod].series[term] = pods[pod].series.get(term, 0) + 1   # V1: one series per engine
    for r in rate_rows:
        labels = r["metric"]
        term, _, metric = labels.get(TERM_LABEL, "").partition("@")
        if term in ("ttft", "itl") and wanted[term] != metric:
            continue
        if not sel.matches(labels):
            continue
        value = float(r["value"][1])
        if math.isnan(value):
            continue
        ps = pods[labels[vm.LABEL_POD]]
        if term in ("ttft", "itl"):
            le = float(labels.get("le", "nan"))
            ps.buckets[term][le] = ps.buckets[term].get(le, 0.0) + value
        elif term == "success":
            reason = labels.get(vm.LABEL_FINISHED_REASON, "")
            ps.success[reason] = ps.success.get(reason, 0.0) + value
        else:
            ps.tokens[term] = ps.tokens.get(term, 0.0) + value

    fresh = sorted(p for p, s in pods.items() if "waiting" in s.ts and now - s.ts["waiting"] <= window)
    metric_names = names.as_dict()
    # Scraped but not serving metrics (up == 0): loading the model, or broken. Broken for sure once the
    # scrapes have failed for longer than loading_bound (up == 0 then, and never 1 since).
    up_value = {up_pod[k]: v["up"] for k, v in up_series.items() if "up" in v}   # pods that are scrape targets
    down = [k for k, v in up_series.items() if v.get("up") == 0 and up_pod[k] not in fresh]
    failing = sorted({up_pod[k] for k in down})
    too_long = sorted(set(failing) - {up_pod[k] for k in down
                                      if not (up_series[k].get("up_then") == 0 and up_series[k].get("up_max") == 0)})
    loading = [p for p in failing if p not in too_long]
    if not fresh:
        if loading:
            # Ambiguous: nobody reports, so demand is unknown (None), not zero; the pods are on the way.
            return Signals(observed_at=now, pods_reporting=0, starting_replicas=len(loading),
                           metric_names=metric_names)
        if too_long:
            raise ScrapeFailingError(
                f"{sel.namespace}/{sel.deployment}: pods {too_long} have failed every scrape (up=0) for more "
                f"than {loading_bound:g} s: broken, not loading", pods=tuple(too_long))
        stale = {p: now - s.ts["waiting"] for p, s in pods.items() if "waiting" in s.ts}
        if stale:
            raise NoDataError(
                f"{sel.namespace}/{sel.deployment}: newest vLLM samples are {min(stale.values()):.0f} s old, "
                f"older than the window ({window:g} s) for pods {sorted(stale)}", source=SOURCE)
        if up_value:
            raise NoDataError(
                f"{sel.namespace}/{sel.deployment}: pods {sorted(up_value)} are scrape targets (up) but export "
                f"no {vm.WAITING.new} series" + (f" for model_name={sel.model_name!r}" if sel.model_name else ""),
                source=SOURCE)
        return Signals(observed_at=now, pods_reporting=0, metric_names=metric_names)

    live = [pods[p] for p in fresh]
    waiting = sum(s.gauges.get("waiting", 0.0) for s in live)
    running = sum(s.gauges.get("running", 0.0) for s in live)
    # KV usage is a fraction per engine: average over series (not a per-pod sum of engines).
    kv_live = [s for s in live if "kv" in s.gauges and now - s.ts.get("kv", -math.inf) <= window]
    kv_series = sum(s.series["kv"] for s in kv_live)
    # Rates from every matching pod (also pods that left during the window: their requests counted).
    every = list(pods.values())

    def quantile(term: str) -> float | None:
        merged: dict[float, float] = {}
        for s in every:
            for le, v in s.buckets.get(term, {}).items():
                merged[le] = merged.get(le, 0.0) + v
        if not merged:
            return None
        v = histogram_quantile(P95, merged.items())
        return None if math.isnan(v) else v

    def ratio(num: str, den: str) -> float | None:
        d = sum(s.tokens.get(den, 0.0) for s in every)
        return None if d <= 0 else sum(s.tokens.get(num, 0.0) for s in every) / d

    have_success = any(s.success for s in every)
    completion = sum(v for s in every for r, v in s.success.items() if r not in vm.ABORT_REASONS) \
        if have_success else None
    finished_all = sum(v for s in every for v in s.success.values()) if have_success else None
    arrival = None
    if finished_all is not None:
        # in-flight one window ago over the pods that reported then and are still fresh or that have
        # samples in the window (a pod gone long ago would otherwise add its last value).
        relevant = live + [s for p, s in pods.items() if p not in fresh and (s.success or s.buckets)]
        prev = sum(s.gauges.get("waiting_prev", 0.0) + s.gauges.get("running_prev", 0.0) for s in relevant)
        arrival = max(0.0, finished_all + (waiting + running - prev) / window)
    return Signals(
        observed_at=now, pods_reporting=len(fresh), waiting=waiting, running=running,
        kv_cache_usage=(sum(s.gauges["kv"] for s in kv_live) / kv_series) if kv_series else None,
        ttft_p95=quantile("ttft"), tpot_p95=quantile("itl"),
        completion_rate=completion, arrival_rate=arrival,
        prompt_tokens_mean=ratio("prompt_sum", "prompt_count"),
        output_tokens_mean=ratio("output_sum", "output_count"),
        starting_replicas=len(loading) if loading else None,
        metric_names=metric_names,
    )
