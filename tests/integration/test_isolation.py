"""No tenant reads another's data, and no refresh fails for its size: a real Prometheus holding vLLM series of
two namespaces, ``inference`` and ``secret``, read through the loopback proxy that records every request.

Every trick of issue 11's "Reading another tenant's data" that reaches the source is tried; the ones that
metadata validation refuses are checked to be refused (naming the key). Each answer is compared with the
series generated here for the target's own pods.
"""

from __future__ import annotations

import pytest

from scaler.config import ConfigError, ServerDefaults, parse_metadata
from scaler.sources.prometheus import MAX_QUERY_BYTES, PrometheusSource
from scaler.sources.promql import TargetSelector
from scaler.testing.faultproxy import FaultProxy
from simulations.exposition import PodMetrics

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0
STEP = 15.0
FRAMES = 6
NOW = T0 + STEP * (FRAMES - 1)
# (namespace, pod, waiting): waiting values are distinct powers of ten so a sum names its pods.
PODS = [
    ("inference", "m005-7d9f8b6c5d-x2k4q", 1), ("inference", "m005-7d9f8b6c5d-x7m9p", 1),
    ("inference", "m005-big-6c4d5f7b8-q2w4r", 100), ("inference", "m005-big-6c4d5f7b8-z9x8c", 100),
    ("secret", "m005-7d9f8b6c5d-x2k4q", 10_000), ("secret", "m005-big-6c4d5f7b8-q2w4r", 1_000_000),
]
# 1,500 targets with 52-character names in one namespace; every 5th has a pod (its waiting = its index).
LONG = [f"tenant-{i:04d}-llama-3-1-8b-instruct-serving-prod-eu1-a" for i in range(1500)]
assert all(len(n) == 52 for n in LONG)


def _long_pod(i: int) -> str:
    return f"{LONG[i]}-5d8f7c6b9-x2k4q"[:58] + "b4c6d"   # Kubernetes cuts "<name>-<hash>-" to 58


def frames():
    pods = [(PodMetrics.new(p, ns, "meta/llama"), w) for ns, p, w in PODS]
    pods += [(PodMetrics.new(_long_pod(i), "bulk", "meta/llama"), i) for i in range(0, len(LONG), 5)]
    for k in range(FRAMES):
        for m, w in pods:
            m.waiting, m.running, m.kv_cache_usage = w, 0, 0.5
            m.request_success_total["stop"] = m.request_success_total.get("stop", 0) + 15
        yield T0 + STEP * k, [m for m, _ in pods]


@pytest.fixture(scope="module")
def prom(module_backfilled_prometheus):
    return module_backfilled_prometheus(frames())


def cfg(url, name, namespace, **md):
    defaults = ServerDefaults(prometheus_url=url, allowed_namespaces=frozenset({"inference", "secret"}))
    return parse_metadata({"prometheusAddress": url, **md}, scaled_object=name, namespace=namespace,
                          defaults=defaults)


def test_each_target_reads_only_its_own_namespace_and_deployment(prom):
    with FaultProxy(prom.url) as proxy:
        source = PrometheusSource(proxy.url, timeout=10)
        targets = [cfg(proxy.url, "m005", "inference"), cfg(proxy.url, "m005-big", "inference"),
                   cfg(proxy.url, "m005", "secret"), cfg(proxy.url, "m005-big", "secret")]
        out = source.fetch(targets, NOW)     # one shared query over both namespaces
        waiting = {(t.namespace, t.deployment): out[t.target_key].waiting for t in targets}
        assert waiting == {("inference", "m005"): 2, ("inference", "m005-big"): 200,
                           ("secret", "m005"): 10_000, ("secret", "m005-big"): 1_000_000}
        assert {out[t.target_key].pods_reporting for t in targets} == {2, 1}
        # The PromQL travelled in the POST body, never in the URL.
        assert proxy.requests and all(r.method == "POST" and r.url_bytes < 40 for r in proxy.requests)


def test_injected_query_in_the_address_is_refused(prom):
    """``prometheusAddress`` carrying ``/api/v1/query?query=<PromQL on secret>&x=`` (Prometheus takes the first
    ``query``): refused at validation (a base URL only), as are fragments and credentials."""
    injected = 'sum(vllm:num_requests_waiting{namespace="secret"})'
    from urllib.parse import quote

    for address in (f"{prom.url}/api/v1/query?query={quote(injected)}&x=", f"{prom.url}/#frag",
                    f"http://alice:s3cr3t-pw@127.0.0.1:{prom.port}"):
        with pytest.raises(ConfigError) as e:
            parse_metadata({"prometheusAddress": address}, scaled_object="m005", namespace="inference",
                           defaults=ServerDefaults(prometheus_url=prom.url))
        assert "prometheusAddress" in e.value.keys
        assert "s3cr3t-pw" not in str(e.value)


@pytest.mark.parametrize("md", [
    {"namespace": "secret"},                                   # another namespace, not allowed
    {"deploymentName": "m005.*"}, {"deploymentName": ".*"},   # regex in the name
    {"modelName": 'x",namespace="secret'},                     # matcher injection through the model
])
def test_tricks_in_metadata_are_refused_naming_the_key(prom, md):
    with pytest.raises(ConfigError) as e:
        parse_metadata(md, scaled_object="m005", namespace="inference", defaults=ServerDefaults(prometheus_url=prom.url))
    assert set(e.value.keys) & set(md)


@pytest.mark.parametrize("deployment,model", [
    ("m005", None), (".*", None), ("m005.*", None), ("m005", 'x",namespace="secret'),
    ("m005", 'meta/llama"} or vllm:num_requests_waiting{namespace="secret'),
])
def test_selector_never_reaches_the_other_namespace_even_unvalidated(prom, deployment, model):
    """Below validation: a TargetSelector built from any string reads no series of ``secret``."""
    from scaler.sources.prometheus import query

    source = PrometheusSource(prom.url, timeout=10)
    sel = TargetSelector("inference", deployment, model)
    rows = query(source.client, f"vllm:num_requests_waiting{sel.selector()}", at=NOW, timeout=10)
    assert all(r["metric"]["namespace"] == "inference" for r in rows)
    assert sum(float(r["value"][1]) for r in rows) in (0, 2)     # m005's own pods, or nothing


def test_1500_targets_with_long_names_every_refresh_succeeds_in_bounded_requests(prom):
    with FaultProxy(prom.url) as proxy:
        source = PrometheusSource(proxy.url, timeout=30)
        defaults = ServerDefaults(prometheus_url=proxy.url)
        targets = [parse_metadata({}, scaled_object=n, namespace="bulk", defaults=defaults) for n in LONG]
        out = source.fetch(targets, NOW)
        for i, t in enumerate(targets):
            s = out[t.target_key]
            if i % 5 == 0:
                assert (s.pods_reporting, s.waiting) == (1, i), (t.deployment, s)
            else:
                assert s.pods_reporting == 0 and s.waiting is None, (t.deployment, s)
        sizes = [r.body_bytes for r in proxy.requests]
        assert all(r.method == "POST" and r.url_bytes < 40 for r in proxy.requests)
        assert max(sizes) <= MAX_QUERY_BYTES + 200, max(sizes)     # + the time and timeout fields
        print(f"1,500 targets: {len(sizes)} requests, largest body {max(sizes)} bytes, total {sum(sizes)} bytes")
