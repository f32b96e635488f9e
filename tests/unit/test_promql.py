"""scaler.sources.promql: escaping, selectors that can not be widened, query shapes, histogram_quantile."""

from __future__ import annotations

import math
import re

import pytest

from scaler import vllm_metrics as vm
from scaler.sources import promql
from scaler.sources.promql import TargetSelector, escape_regex, escape_string, histogram_quantile


def _go_regex_full(pattern: str, s: str) -> bool:
    """What Prometheus does with a regex matcher: anchored full match (RE2 and Python agree on these)."""
    return re.fullmatch(pattern, s) is not None


def _unescape_promql_string(body: str) -> str:
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m.group(1), m.group(1)), body)


def test_escape_string_escapes_quotes_backslashes_and_newlines():
    assert escape_string('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert _unescape_promql_string(escape_string('x"} or vector(1) #\\')) == 'x"} or vector(1) #\\'


@pytest.mark.parametrize("value", ["vllm.llama-3", "a|b", "ns.*", "(x)", "a+b?", "[z]", "^$", "a\\b", "{1}"])
def test_escape_regex_matches_exactly_itself(value):
    pat = escape_regex(value)
    assert _go_regex_full(pat, value)
    assert not _go_regex_full(pat, value + "x")
    assert not _go_regex_full(pat, "x" + value)


def test_selector_pins_namespace_and_the_deployments_pods():
    sel = TargetSelector("team-a", "llama.v2", "meta/llama")
    assert sel.selector() == ('{namespace="team-a",pod=~"llama\\\\.v2-(?:[a-z0-9]{1,10}-[a-z0-9]{5}|[0-9]+)",'
                              'model_name="meta/llama"}')
    pod = "llama.v2-7f9c8d6b5-x2k4q"
    assert sel.matches({"namespace": "team-a", "pod": pod, "model_name": "meta/llama"})
    assert sel.matches({"namespace": "team-a", "pod": "llama.v2-0", "model_name": "meta/llama"})  # StatefulSet
    assert not sel.matches({"namespace": "team-a", "pod": "llamaXv2-7f9c8d6b5-x2k4q", "model_name": "meta/llama"})
    assert not sel.matches({"namespace": "team-b", "pod": pod, "model_name": "meta/llama"})
    assert not sel.matches({"namespace": "team-a", "pod": pod, "model_name": "other"})
    assert not sel.matches({"namespace": "team-a", "pod": "llama.v2-", "model_name": "meta/llama"})
    assert not sel.matches({"namespace": "team-a", "pod": "llama.v2-7f-x", "model_name": "meta/llama"})


@pytest.mark.parametrize("pod,owner", [
    ("m005-7d9f8b6c5d-x2k4q", "m005"), ("m005-big-7d9f8b6c5d-x2k4q", "m005-big"), ("m005-3", "m005"),
    ("m005-big-12", "m005-big"),
    ("m005-big-7d9f8b6c5d", None), ("m005-7d9f8b6c5d-x2k4", None), ("m005-7d9f8b6c5dab-x2k4q", None),
])
def test_pod_pattern_separates_prefixed_deployments(pod, owner):
    """Deployment ``m005``'s pattern never takes the pods of ``m005-big`` (the name prefixes the other)."""
    for dep in ("m005", "m005-big"):
        assert _go_regex_full(promql.pod_pattern(dep), pod) == (dep == owner), (dep, pod)
    union = promql.pods_pattern(["m005", "m005-big"])
    assert _go_regex_full(union, pod) == (owner is not None)


def test_pod_pattern_of_a_long_name_matches_kubernetes_cut_names():
    """``D-<hash>-`` longer than 58 characters is cut to 58, then 5 random characters (63 in all)."""
    dep = "d" * 52
    full = f"{dep}-7d9f8b6c5d-"
    pod = full[:58] + "x2k4q"
    assert len(pod) == 63 and _go_regex_full(promql.pod_pattern(dep), pod)
    assert _go_regex_full(promql.pod_pattern(dep), f"{dep}-7d9f-x2k4q")          # short hash: not cut
    assert not _go_regex_full(promql.pod_pattern(dep), pod[:-1])
    assert not _go_regex_full(promql.pod_pattern("d" * 40), f"{'d' * 40}-{'b' * 22}")  # short names never cut
    very_long = "e" * 70                                                   # even "D-" is cut: D[:58] + 5
    assert _go_regex_full(promql.pod_pattern(very_long), "e" * 58 + "x2k4q")


@pytest.mark.parametrize("model", ['m",namespace=~".*', 'm"} or up{namespace=~".+', "m\\", 'x\n"'])
def test_crafted_model_name_cannot_widen_namespace(model):
    q = promql.gauges_query([TargetSelector("team-a", "llama", model)],
                            {"waiting": [vm.WAITING.new]}, 60)
    # Every namespace matcher in the query is exactly the configured one...
    ns = re.findall(r'(?<![a-z_])namespace(=~|=|!=|!~)"((?:[^"\\]|\\.)*)"', q)
    assert ns and all(op == "=" and _unescape_promql_string(v) == "team-a" for op, v in ns), ns
    # ...and the model value round-trips as a single string literal.
    lit = re.findall(r'model_name="((?:[^"\\]|\\.)*)"', q)
    assert lit and all(_unescape_promql_string(v) == model for v in lit)


def test_crafted_deployment_regex_is_escaped_and_anchored():
    # deploymentName is RFC 1123 (config rejects more), but even a dotted name stays literal.
    sel = TargetSelector("team-a", "a.b")
    assert _go_regex_full(sel.pod_regex, "a.b-1") and _go_regex_full(sel.pod_regex, "a.b-7f9c-x2k4q")
    assert not _go_regex_full(sel.pod_regex, "axb-1") and not _go_regex_full(sel.pod_regex, "axb-7f9c-x2k4q")


def test_union_matchers_for_several_targets_list_only_their_namespaces():
    t = [TargetSelector("ns-1", "a"), TargetSelector("ns.2", "b", "m1")]
    m = promql.union_matchers(t)
    assert 'namespace=~"ns-1|ns\\\\.2"' in m
    assert 'pod=~"(?:a|b)-(?:[a-z0-9]{1,10}-[a-z0-9]{5}|[0-9]+)"' in m
    assert "model_name" not in m  # one target reads every model: filter client-side
    m2 = promql.union_matchers([TargetSelector("ns-1", "a", "m1"), TargetSelector("ns-1", "b", "m.2")])
    assert 'namespace="ns-1"' in m2 and 'model_name=~"m\\\\.2|m1"' in m2


def test_query_shapes_tag_every_term_and_use_window():
    t = [TargetSelector("ns", "dep")]
    g = promql.gauges_query(t, {"waiting": [vm.WAITING.new], "running": [vm.RUNNING.new],
                                "kv": [vm.KV_CACHE.new, vm.KV_CACHE.old]}, 90)
    assert g.count("label_replace(") == 2 * 4 + 2 + 2  # value+ts per gauge name, prev for 2, up + up ts
    assert "offset 90000ms" in g and f'timestamp({vm.KV_CACHE.old}{{' in g
    assert 'up{namespace="ns",pod=~"dep-(?:[a-z0-9]{1,10}-[a-z0-9]{5}|[0-9]+)"}' in g
    r = promql.rates_query(t, {"ttft": [vm.TTFT.new], "itl": [vm.ITL.old]}, 90)
    assert f"rate({vm.TTFT.new}_bucket{{" in r and f"rate({vm.ITL.old}_bucket{{" in r and "[90000ms]" in r
    assert "finished_reason" in r and "vllm:request_prompt_tokens_count" in r
    p = promql.probe_query(["ns"])
    for fam in vm.PROBED:
        for n in fam.names:
            assert escape_regex(n + ("_count" if fam.kind == "histogram" else "")) in p


def test_duration_is_exact_milliseconds():
    assert promql.duration(60) == "60000ms" and promql.duration(2.5) == "2500ms"
    with pytest.raises(ValueError):
        promql.duration(0)


def test_histogram_quantile_worked_example():
    assert histogram_quantile(0.95, [(0.1, 2), (0.5, 10), (math.inf, 10)]) == pytest.approx(0.475)


@pytest.mark.parametrize("buckets,q,expected", [
    ([(1.0, 0), (math.inf, 0)], 0.95, math.nan),            # no traffic
    ([(1.0, 5), (2.0, 5)], 0.5, math.nan),                  # no +Inf bucket
    ([(math.inf, 5)], 0.5, math.nan),                       # fewer than 2 buckets
    ([(1.0, 2), (math.inf, 10)], 0.95, 1.0),               # in +Inf: highest finite bound
    ([(0.5, 10), (1.0, 10), (math.inf, 10)], 0.5, 0.25),   # first bucket: from 0
    ([(1.0, 4), (2.0, 3), (math.inf, 10)], 0.3, 0.75),     # non-monotonic fixed to 4
    ([(1.0, 2), (1.0, 2), (2.0, 8), (math.inf, 8)], 0.5, 1.0),  # equal bounds merged (4 at le=1)
    ([(1.0, 2), (math.inf, 2)], -0.1, -math.inf),
    ([(1.0, 2), (math.inf, 2)], 1.1, math.inf),
])
def test_histogram_quantile_edge_cases(buckets, q, expected):
    got = histogram_quantile(q, buckets)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected)


# --- client-side aggregation (scaler.sources.prometheus.build_signals) on rows shaped as Prometheus answers ---
from scaler.errors import NoDataError, ScrapeFailingError  # noqa: E402
from scaler.sources.prometheus import MetricNames, build_signals  # noqa: E402

NOW = 1_700_000_000.0


def _row(term, metric, value, pod, ns="team-a", **labels):
    return {"metric": {"scaler_term": f"{term}@{metric}", "namespace": ns, "pod": pod, **labels},
            "value": [NOW, str(value)]}


def _gauges(pod, *, waiting=1, running=2, kv=(0.5,), age=0.0):
    rows = []
    for i, k in enumerate(kv):   # one series per V1 engine
        e = {"engine": str(i)}
        rows += [_row("waiting", vm.WAITING.new, waiting, pod, **e), _row("waiting_ts", vm.WAITING.new, NOW - age, pod, **e),
                 _row("running", vm.RUNNING.new, running, pod, **e), _row("running_ts", vm.RUNNING.new, NOW - age, pod, **e),
                 _row("kv", vm.KV_CACHE.new, k, pod, **e), _row("kv_ts", vm.KV_CACHE.new, NOW - age, pod, **e)]
    return rows


SEL = TargetSelector("team-a", "llama")


def test_kv_usage_is_a_mean_over_engines_not_a_sum_per_pod():
    rows = _gauges("llama-7f9c-xbbbb", kv=(0.9, 0.7)) + _gauges("llama-7f9c-xcccc", kv=(0.2,))
    sig = build_signals(SEL, MetricNames(), rows, [], 60, NOW)
    assert sig.pods_reporting == 2
    assert sig.waiting == 3 and sig.running == 6            # queues of every engine add up
    assert sig.kv_cache_usage == pytest.approx((0.9 + 0.7 + 0.2) / 3)


def test_up_without_vllm_series_is_no_data():
    up1 = [_row("up", "up", 1, "llama-7f9c-xbbbb"), _row("up_ts", "up", NOW, "llama-7f9c-xbbbb")]
    with pytest.raises(NoDataError) as e:
        build_signals(SEL, MetricNames(), up1, [], 60, NOW)
    assert not isinstance(e.value, ScrapeFailingError) and "llama-7f9c-xbbbb" in str(e.value)


def _up(pod, value, *, then=None, up_max=None, instance=None):
    lab = {"instance": instance or f"{pod}:8000"}
    rows = [_row("up", "up", value, pod, **lab), _row("up_ts", "up", NOW, pod, **lab)]
    if then is not None:
        rows.append(_row("up_then", "up", then, pod, **lab))
    if up_max is not None:
        rows.append(_row("up_max", "up", up_max, pod, **lab))
    return rows


def test_pods_loading_alongside_reporting_pods_are_starting_replicas():
    """up == 0 pods ("scraped but not serving metrics: loading, or broken") are on the way; the signals come
    from the pods that report."""
    rows = _gauges("llama-7f9c-xbbbb", waiting=3, running=4) + _up("llama-7f9c-xbbbb", 1) + _up("llama-7f9c-xcccc", 0) + _up("llama-7f9c-xdddd", 0)
    sig = build_signals(SEL, MetricNames(), rows, [], 60, NOW, loading_bound=900)
    assert sig.pods_reporting == 1 and sig.starting_replicas == 2
    assert sig.waiting == 3 and sig.running == 4 and sig.kv_cache_usage == pytest.approx(0.5)
    # none loading: unknown to Prometheus (None), not 0, so a Kubernetes count or the policy's estimate applies
    assert build_signals(SEL, MetricNames(), _gauges("llama-7f9c-xbbbb") + _up("llama-7f9c-xbbbb", 1), [], 60, NOW
                         ).starting_replicas is None


def test_only_loading_pods_is_unknown_demand_not_idle_and_not_an_error():
    sig = build_signals(SEL, MetricNames(), _up("llama-7f9c-xbbbb", 0, then=0, up_max=0) + _up("llama-7f9c-xcccc", 0), [], 60, NOW,
                        loading_bound=900)
    # llama-a: up == 0 now and 900 s ago, never 1 between: broken, not counted; llama-b: loading
    assert sig.pods_reporting == 0 and sig.starting_replicas == 1
    for field in ("waiting", "running", "kv_cache_usage", "ttft_p95", "tpot_p95", "completion_rate",
                  "arrival_rate", "prompt_tokens_mean", "output_tokens_mean", "upstream_demand"):
        assert getattr(sig, field) is None, field     # nothing invented: no zeros


def test_pods_failing_scrapes_longer_than_the_bound_are_scrape_failing():
    rows = _up("llama-7f9c-xbbbb", 0, then=0, up_max=0)
    with pytest.raises(ScrapeFailingError, match="more than 900 s") as e:
        build_signals(SEL, MetricNames(), rows, [], 60, NOW, loading_bound=900)
    assert e.value.pods == ("llama-7f9c-xbbbb",) and e.value.kind == "no_data"
    # up == 1 at some point in the bound (max 1), or not yet a target B ago (no up_then): still loading
    for extra in (dict(then=0, up_max=1), dict(then=1, up_max=1), dict(up_max=0)):
        sig = build_signals(SEL, MetricNames(), _up("llama-7f9c-xbbbb", 0, **extra), [], 60, NOW, loading_bound=900)
        assert sig.starting_replicas == 1, extra


def test_a_pod_with_one_failing_scrape_target_among_several_counts_as_loading():
    """up is per scrape target: a sidecar's target answering (up 1) does not hide vLLM's failing one."""
    rows = _up("llama-7f9c-xbbbb", 1, instance="llama-7f9c-xbbbb:15020") + _up("llama-7f9c-xbbbb", 0, instance="llama-7f9c-xbbbb:8000")
    assert build_signals(SEL, MetricNames(), rows, [], 60, NOW).starting_replicas == 1


def test_no_series_at_all_is_zero_pods_not_an_error():
    sig = build_signals(SEL, MetricNames(), [_row("up", "up", 1, "other-a")], [], 60, NOW)
    assert sig.pods_reporting == 0 and sig.waiting is None and sig.kv_cache_usage is None


def test_stale_gauges_are_no_data():
    with pytest.raises(NoDataError, match="older than the window"):
        build_signals(SEL, MetricNames(), _gauges("llama-7f9c-xbbbb", age=61), [], 60, NOW)
    assert build_signals(SEL, MetricNames(), _gauges("llama-7f9c-xbbbb", age=60), [], 60, NOW).pods_reporting == 1


def test_series_of_other_namespaces_and_old_names_are_ignored():
    rows = _gauges("llama-7f9c-xbbbb") + [_row("waiting", vm.WAITING.new, 50, "llama-7f9c-xffff", ns="team-b"),
                                 _row("waiting_ts", vm.WAITING.new, NOW, "llama-7f9c-xffff", ns="team-b"),
                                 _row("kv", vm.KV_CACHE.old, 0.99, "llama-7f9c-xbbbb", engine="0"),
                                 _row("kv_ts", vm.KV_CACHE.old, NOW, "llama-7f9c-xbbbb", engine="0")]
    sig = build_signals(SEL, MetricNames(), rows, [], 60, NOW)   # probe chose the new KV name
    assert sig.waiting == 1 and sig.kv_cache_usage == pytest.approx(0.5)


def test_arrival_worked_example():
    """w = 60 s, 1.5 req/s finished (1.2 stop + 0.3 abort: aborts arrived too), D from 10 to 40 -> 2.0 req/s."""
    rows = _gauges("llama-7f9c-xbbbb", waiting=15, running=25) + [
        _row("waiting_prev", vm.WAITING.new, 4, "llama-7f9c-xbbbb", engine="0"),
        _row("running_prev", vm.RUNNING.new, 6, "llama-7f9c-xbbbb", engine="0")]
    rates = [_row("success", vm.REQUEST_SUCCESS.new, 1.2, "llama-7f9c-xbbbb", finished_reason="stop"),
             _row("success", vm.REQUEST_SUCCESS.new, 0.3, "llama-7f9c-xbbbb", finished_reason="abort")]
    sig = build_signals(SEL, MetricNames(), rows, rates, 60, NOW)
    assert sig.completion_rate == pytest.approx(1.2)          # aborts are not completions
    assert sig.arrival_rate == pytest.approx(1.5 + 30 / 60)   # but they did arrive
