"""activationQuery and pods still loading, against a real Prometheus (Debian's 2.42) loaded with promtool.

The data (600 s, a frame every 15 s, generated here):

* ``gw_queue{namespace="team-a", deployment="llama"}``: a gateway's queue for the Deployment ``llama``,
  which has no pods at all (at zero replicas): 0, then ``QUEUE`` requests for frames 20-29, then 0 again;
* ``gw_queue_split{gateway="a"|"b"}``: the same queue split over two gateways (two series);
* Deployment ``qwen``: ``qwen-5d8f-x2k4q`` reports vLLM series throughout; ``qwen-5d8f-x7m9p`` is created at frame 30 and its
  scrapes fail (``up == 0``: loading the model) until the end;
* Deployment ``mistral``: only ``mistral-6c4d-x2k4q``, scrapes failing from frame 36 (woken, loading).

Expected values come from these rules, not from the code under test.
"""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.errors import ActivationQueryError
from scaler.policy import decide
from scaler.signals import Signals
from scaler.sources.prometheus import PrometheusSource
from scaler.testing.promserver import PrometheusServer, load_openmetrics
from simulations.exposition import PodMetrics, write_openmetrics

pytestmark = pytest.mark.integration

T0 = 1_699_999_800.0
STEP = 15.0
FRAMES = 41
T_END = T0 + STEP * (FRAMES - 1)
NS = "team-a"
QUEUE = 5
WAKE = range(20, 30)          # frames with requests waiting at the gateway
QWEN_B_FROM, MISTRAL_FROM = 30, 36
LLAMA_QUERY = f'sum(gw_queue{{namespace="{NS}",deployment="llama"}})'


def t_of(k: int) -> float:
    return T0 + STEP * k


def queue_at(k: int) -> int:
    return QUEUE if k in WAKE else 0


def _frames():
    qa = PodMetrics.new("qwen-5d8f-x2k4q", NS, "qwen")
    qb = PodMetrics.new("qwen-5d8f-x7m9p", NS, "qwen")
    qb.scraped = False
    ma = PodMetrics.new("mistral-6c4d-x2k4q", NS, "mistral")
    ma.scraped = False
    for k in range(FRAMES):
        qa.waiting, qa.running, qa.kv_cache_usage = 2, 6, 0.4
        pods = [qa] + ([qb] if k >= QWEN_B_FROM else []) + ([ma] if k >= MISTRAL_FROM else [])
        yield t_of(k), pods


def _gateway_text() -> str:
    lines = ["# HELP gw_queue requests waiting at the gateway", "# TYPE gw_queue gauge"]
    lines += [f'gw_queue{{namespace="{NS}",deployment="llama"}} {queue_at(k)} {t_of(k):.3f}' for k in range(FRAMES)]
    lines += ["# HELP gw_queue_split requests waiting per gateway", "# TYPE gw_queue_split gauge"]
    for g in "ab":
        lines += [f'gw_queue_split{{namespace="{NS}",gateway="{g}"}} {queue_at(k)} {t_of(k):.3f}' for k in range(FRAMES)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from scaler.testing.promserver import prometheus_available

    reason = prometheus_available()
    if reason:
        pytest.skip(reason)
    buf = io.StringIO()
    write_openmetrics(_frames(), buf)
    text = buf.getvalue()
    assert text.rstrip().endswith("# EOF")
    text = text.rstrip()[: -len("# EOF")] + _gateway_text() + "# EOF\n"
    tsdb = tmp_path_factory.mktemp("tsdb")
    load_openmetrics(text, tsdb)
    with PrometheusServer(tsdb_dir=tsdb) as s:
        yield s


def cfg(deployment, **meta):
    md = {"deploymentName": deployment, "window": "60", "minReplicas": "0", "activationThreshold": "1",
          "scaleToZeroAfter": "120", **meta}
    return parse_metadata(md, scaled_object=deployment, namespace=NS,
                          defaults=ServerDefaults(allow_activation_query=True))


def test_gateway_queue_wakes_a_deployment_at_zero_and_idles_out_after_scale_to_zero_after(server):
    """At zero pods, upstream demand above activationThreshold makes decide() active; at 0 it goes inactive
    once scaleToZeroAfter (120 s) has passed since the last demand, and stays so."""
    c = cfg("llama", activationQuery=LLAMA_QUERY)
    src = PrometheusSource(server.url, timeout=5)
    state = None
    last_demand = None
    for k in range(2, FRAMES):
        sig = src.fetch([c], t_of(k))[c.target_key]
        assert isinstance(sig, Signals), sig
        assert sig.pods_reporting == 0 and sig.waiting is None
        assert sig.upstream_demand == float(queue_at(k)), k      # empty-vector rule not needed: sum of a series
        d = decide(sig, state, c, t_of(k))
        state = d.next_state
        if queue_at(k) > 1:
            last_demand = k
        expected = last_demand is not None and (k - last_demand) * STEP < 120
        assert d.active == expected, (k, d.reasons)
    assert last_demand == WAKE[-1] and not d.active


def test_queries_per_refresh_stay_within_three_and_same_text_is_shared(server):
    a, b = cfg("llama", activationQuery=LLAMA_QUERY), cfg("qwen", activationQuery=LLAMA_QUERY)
    other = cfg("mistral", activationQuery=f'max(gw_queue{{namespace="{NS}"}})')
    src = PrometheusSource(server.url, timeout=5)
    out = src.fetch([a, b], t_of(25))
    assert src.queries_sent == 3   # gauges (+ name probe) + rates + the one shared activation query
    assert out[a.target_key].upstream_demand == out[b.target_key].upstream_demand == QUEUE
    src.fetch([a, b, other], t_of(26))
    assert src.queries_sent == 3 + 4   # a second text: one more query, still 3 for each target


@pytest.mark.parametrize("query, expected", [
    (f'scalar({LLAMA_QUERY})', QUEUE),                          # a scalar
    (f'gw_queue{{namespace="{NS}",deployment="llama"}}', QUEUE),   # one series, not aggregated
    ('sum(no_such_metric{namespace="team-a"})', 0.0),             # empty vector: no demand series
    ('sum(no_such_metric{namespace="team-a"}) or vector(NaN)', None),   # the user's "absent means unknown"
])
def test_result_shapes(server, query, expected):
    c = cfg("llama", activationQuery=query)
    sig = PrometheusSource(server.url, timeout=5).fetch([c], t_of(25))[c.target_key]
    assert isinstance(sig, Signals) and sig.upstream_demand == expected


def test_several_series_is_an_error_naming_the_key_and_the_count(server):
    c = cfg("qwen", activationQuery=f'gw_queue_split{{namespace="{NS}"}}')
    out = PrometheusSource(server.url, timeout=5).fetch([c], t_of(25))[c.target_key]
    assert isinstance(out, ActivationQueryError) and out.kind == "activation_query"
    assert "activationQuery=" in str(out) and "returns 2 series" in str(out)
    # the vLLM snapshot read in the same refresh is kept on the error
    assert out.signals is not None and out.signals.pods_reporting == 1 and out.signals.waiting == 2


def test_promql_error_is_a_typed_error_with_prometheus_message_and_other_targets_unharmed(server):
    bad = cfg("qwen", activationQuery='sum(gw_queue{namespace="team-a"')
    good = cfg("llama", activationQuery=LLAMA_QUERY)
    plain = cfg("mistral")
    out = PrometheusSource(server.url, timeout=5).fetch([bad, good, plain], t_of(25))
    err = out[bad.target_key]
    assert isinstance(err, ActivationQueryError)
    assert "activationQuery='sum(gw_queue" in str(err) and "bad_data" in str(err) and "parse error" in str(err)
    assert err.signals is not None and err.signals.upstream_demand is None and err.signals.running == 6
    assert out[good.target_key].upstream_demand == QUEUE
    assert isinstance(out[plain.target_key], Signals) and out[plain.target_key].upstream_demand is None


def test_pods_loading_are_starting_replicas_and_the_others_still_report(server):
    c = cfg("qwen")
    src = PrometheusSource(server.url, timeout=5)
    before = src.fetch([c], t_of(QWEN_B_FROM - 1))[c.target_key]
    assert (before.pods_reporting, before.starting_replicas) == (1, None)
    sig = src.fetch([c], T_END)[c.target_key]
    assert (sig.pods_reporting, sig.starting_replicas) == (1, 1)
    assert (sig.waiting, sig.running, sig.kv_cache_usage) == (2, 6, pytest.approx(0.4))


def test_woken_deployment_with_its_only_pod_loading_stays_active(server):
    """mistral was woken by the gateway queue; its only pod loads (up == 0): Signals, not an error, with
    demand unknown and the pod on the way; the gateway queue keeps it active."""
    c = cfg("mistral", activationQuery=LLAMA_QUERY)
    src = PrometheusSource(server.url, timeout=5)
    sig = src.fetch([c], t_of(MISTRAL_FROM + 1))[c.target_key]
    assert isinstance(sig, Signals), sig
    assert (sig.pods_reporting, sig.starting_replicas, sig.waiting, sig.running) == (0, 1, None, None)
    # frame 37 has no gateway queue any more; one with queue (as at frame 25) is active at once
    assert sig.upstream_demand == 0.0
    d = decide(replace(sig, upstream_demand=float(QUEUE)), None, c, t_of(MISTRAL_FROM + 1))
    assert d.active


@pytest.mark.parametrize("policy", ["reactive", "predictive"])
def test_policy_does_not_read_pods_loading_as_idle(server, policy):
    from scaler.policy import PolicyState

    c = cfg("mistral", policy=policy, maxReplicas="4")       # no activation query: nothing upstream to see
    now = t_of(FRAMES - 1)
    sig = PrometheusSource(server.url, timeout=5).fetch([c], now)[c.target_key]
    assert (sig.pods_reporting, sig.starting_replicas) == (0, 1)
    # two replicas asked for, demand last seen 300 s ago (> scaleToZeroAfter 120 s), the pod still loading
    state = PolicyState(desired=2, active=True, last_demand_at=now - 300, decided_at=now - 15)
    d = decide(sig, state, c, now)
    assert d.active and d.desired >= 2, d.reasons
