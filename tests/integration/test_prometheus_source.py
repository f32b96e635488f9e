"""PrometheusSource against a real Prometheus holding vLLM-shaped series for several pods.

The series are generated here from simple per-pod, per-frame rules; every expected
Signals field is computed in this file from those rules (not with the code under
test), for the new (V1) and the old (V0) metric names.
"""

from __future__ import annotations

import logging

import pytest
from prometheus_api_client import PrometheusConnect

from scaler.config import parse_metadata
from scaler.errors import NoDataError, ScrapeFailingError
from scaler.signals import Signals
from scaler.sources.prometheus import PrometheusSource
from scaler.sources.promql import histogram_quantile
from simulations.exposition import PodMetrics

pytestmark = pytest.mark.integration

T0 = 1_699_999_800.0   # first frame (unix s)
STEP = 15.0            # scrape interval of the generated frames
FRAMES = 41            # T0 .. T0 + 600 s
T_END = T0 + STEP * (FRAMES - 1)
WINDOW = 60.0
NS = "team-a"


class Pod:
    """Rules for one pod: per frame k, `done` requests finish (19 of 20 with TTFT 0.3 s, 1 with 3.0 s; ITL 80 %
    at 0.02 s, 20 % at 0.06 s), `aborts` abort; gauges are simple functions of k."""

    def __init__(self, name, ns=NS, model="meta/llama", i=0, done=20, aborts=1, prompt=500, output=100,
                 idle_after=None, scraped=True, last_frame=FRAMES - 1):
        self.name, self.ns, self.model, self.i = name, ns, model, i
        self.done, self.aborts, self.prompt, self.output = done, aborts, prompt, output
        self.idle_after, self.scraped, self.last_frame = idle_after, scraped, last_frame

    def finishing(self, k):
        if k == 0 or (self.idle_after is not None and k > self.idle_after):
            return 0, 0
        return self.done, self.aborts

    def waiting(self, k):
        return (k + self.i) % 7

    def running(self, k):
        return 10 + self.i + k % 3

    def kv(self, k):
        return round(0.1 * (self.i + 1) + 0.01 * (k % 10), 4)


def frames_gen(pods, names):
    """Frames of the pods' state, mutated between yields (the exposition renders each frame as consumed)."""
    state = {}
    for k in range(FRAMES):
        live = []
        for p in pods:
            if k > p.last_frame:
                continue
            m = state.setdefault(p.name + p.ns, PodMetrics.new(p.name, p.ns, p.model, names=names))
            m.scraped = p.scraped
            m.waiting, m.running, m.kv_cache_usage = p.waiting(k), p.running(k), p.kv(k)
            done, aborts = p.finishing(k)
            if done:
                m.ttft.observe(0.3, done * 19 // 20)
                m.ttft.observe(3.0, done // 20)
                m.itl.observe(0.02, done * 8)
                m.itl.observe(0.06, done * 2)
                m.request_prompt_tokens.observe(p.prompt, done)
                m.request_generation_tokens.observe(p.output, done)
                m.request_success_total["stop"] += done - 2
                m.request_success_total["length"] += 2
                m.request_success_total["abort"] = m.request_success_total.get("abort", 0) + aborts
            live.append(m)
        yield T0 + STEP * k, live


# Pod names as Kubernetes makes them for Deployment "llama-7f9c": <deployment>-<pod-template-hash>-<5 random>.
LLAMA = [Pod(f"llama-7f9c-6d5f8-x{c * 4}", i=i, done=20 * (i + 1), prompt=500 + 100 * i, output=100 + 50 * i)
         for i, c in enumerate("bcd")]
OTHER_MODEL = Pod("llama-7f9c-6d5f8-xmmmm", model="other-model", i=5, done=40, prompt=2000, output=10)
DECOYS = [
    Pod("llama-7f9c-6d5f8-xzzzz", ns="team-b", i=9, done=400),          # same deployment name, other namespace
    Pod("llamas-0", i=9, done=400),                             # other deployment, similar prefix
]
IDLE = [Pod(f"idle-{i}", i=i, idle_after=FRAMES - 1 - 6) for i in range(2)]   # no requests in last 90 s
BROKEN = [Pod("broken-0", scraped=False)]
ALL = LLAMA + [OTHER_MODEL] + DECOYS + IDLE + BROKEN


def cfg(deployment, **meta):
    md = {"deploymentName": deployment, "window": str(int(WINDOW)), **meta}
    return parse_metadata(md, scaled_object=deployment, namespace=NS)


def expected(pods, now=T_END, window=WINDOW) -> dict:
    """Signals fields computed from the rules (rate over samples exactly at now-w and now: no extrapolation)."""
    k_now = int((now - T0) / STEP)
    k_then = int((now - window - T0) / STEP)
    ks = range(k_then + 1, k_now + 1)   # frames whose finishing lies in (now-w, now]
    done = sum(p.finishing(k)[0] for p in pods for k in ks)
    aborts = sum(p.finishing(k)[1] for p in pods for k in ks)
    prompt = sum(p.finishing(k)[0] * p.prompt for p in pods for k in ks)
    output = sum(p.finishing(k)[0] * p.output for p in pods for k in ks)
    d_now = sum(p.waiting(k_now) + p.running(k_now) for p in pods)
    d_then = sum(p.waiting(k_then) + p.running(k_then) for p in pods)
    return dict(
        pods_reporting=len(pods),
        waiting=sum(p.waiting(k_now) for p in pods),
        running=sum(p.running(k_now) for p in pods),
        kv_cache_usage=sum(p.kv(k_now) for p in pods) / len(pods),
        completion_rate=done / window,
        arrival_rate=max(0.0, (done + aborts + d_now - d_then) / window),
        prompt_tokens_mean=prompt / done if done else None,
        output_tokens_mean=output / done if done else None,
        # 95 % of TTFTs in (0.25, 0.5] and 5 % in (2.5, 5]: rank 0.95 N is the top of (0.25, 0.5] -> 0.5.
        ttft_p95=0.5 if done else None,
        # ITL: 80 % in (0.01, 0.025], 20 % in (0.05, 0.075]: 0.05 + 0.025 * (0.95 - 0.8) / 0.2 = 0.06875.
        tpot_p95=0.06875 if done else None,
    )


def check(sig: Signals, exp: dict):
    for k, v in exp.items():
        got = getattr(sig, k)
        if v is None:
            assert got is None, (k, got)
        else:
            assert got == pytest.approx(v, rel=1e-9, abs=1e-12), (k, got, v)


@pytest.fixture(params=["v1", "v0"])
def prom(request, backfilled_prometheus):
    return request.param, backfilled_prometheus(frames_gen(ALL, request.param), names=request.param)


def test_signals_match_generated_series(prom, caplog):
    names, server = prom
    src = PrometheusSource(server.url, timeout=5)
    targets = [cfg("llama-7f9c"), cfg("llama-7f9c", modelName="meta/llama"), cfg("idle"), cfg("absent"),
               cfg("broken")]
    with caplog.at_level(logging.INFO, logger="scaler.sources.prometheus"):
        out = src.fetch(targets, T_END)
    assert src.queries_sent == 2   # gauges (with the name probe folded in) + rates, for all five targets
    check(out[targets[0].target_key], expected(LLAMA + [OTHER_MODEL]))
    check(out[targets[1].target_key], expected(LLAMA))
    sig = out[targets[1].target_key]
    if names == "v1":
        assert sig.metric_names["kv"] == "vllm:kv_cache_usage_perc"
        assert sig.metric_names["itl"] == "vllm:inter_token_latency_seconds"
    else:
        assert sig.metric_names["kv"] == "vllm:gpu_cache_usage_perc"
        assert sig.metric_names["itl"] == "vllm:time_per_output_token_seconds"
    assert sig.metric_names["kv"] in caplog.text and sig.metric_names["itl"] in caplog.text
    # idle: no requests finished in the window -> latency and token sizes unknown (NaN -> None), rate 0
    idle = out[targets[2].target_key]
    check(idle, expected(IDLE))
    assert idle.ttft_p95 is None and idle.tpot_p95 is None and idle.completion_rate == 0.0
    # no pods at all (Deployment at zero): a snapshot, not an error
    absent = out[targets[3].target_key]
    assert absent.pods_reporting == 0 and absent.waiting is None and absent.running is None
    # scrape failing (up == 0) for the 600 s of data, less than the default bound (900 s): loading, so
    # on the way, with demand unknown (None), not zero and not an error
    loading = out[targets[4].target_key]
    assert isinstance(loading, Signals) and (loading.pods_reporting, loading.starting_replicas) == (0, 1)
    assert loading.waiting is None and loading.running is None
    # with a 300 s bound the same pod is broken: ScrapeFailingError (a NoDataError) naming it
    strict = PrometheusSource(server.url, timeout=5, max_loading=300).fetch(targets[4:], T_END)
    assert isinstance(strict[targets[4].target_key], ScrapeFailingError)
    assert strict[targets[4].target_key].pods == ("broken-0",) and "more than 300 s" in str(strict[targets[4].target_key])
    # the probe is cached: the next refresh costs two queries again, and logs nothing new
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="scaler.sources.prometheus"):
        out2 = src.fetch(targets[:3], T_END - STEP)
    assert src.queries_sent == 4
    assert "metric names" not in caplog.text
    check(out2[targets[1].target_key], expected(LLAMA, now=T_END - STEP))


def test_stale_samples_are_no_data_not_zero(prom):
    _names, server = prom
    src = PrometheusSource(server.url, timeout=5)
    t = cfg("llama-7f9c")
    # two windows after the last sample: Prometheus' 5 min lookback still returns the gauges
    out = src.fetch([t], T_END + 2 * WINDOW)
    assert isinstance(out[t.target_key], NoDataError)
    assert "older than the window" in str(out[t.target_key])


def test_client_quantile_equals_promql(prom):
    """Our client-side quantile == Prometheus' histogram_quantile on the same bucket rates (several q, windows)."""
    names, server = prom
    c = PrometheusConnect(server.url)
    base = "vllm:inter_token_latency_seconds" if names == "v1" else "vllm:time_per_output_token_seconds"
    for metric in ("vllm:time_to_first_token_seconds", base):
        for w in ("45s", "2m", "5m"):
            sel = f'{metric}_bucket{{namespace="{NS}",pod=~"llama-7f9c-.*"}}'
            rates = c.custom_query(f"sum by (le) (rate({sel}[{w}]))", params={"time": T_END})
            buckets = [(float(r["metric"]["le"]), float(r["value"][1])) for r in rates]
            for q in (0.5, 0.9, 0.95, 0.99, 0.999):
                want = float(c.custom_query(f"histogram_quantile({q}, sum by (le) (rate({sel}[{w}])))",
                                            params={"time": T_END})[0]["value"][1])
                got = histogram_quantile(q, buckets)
                assert got == pytest.approx(want, rel=1e-12), (metric, w, q)


def test_scraped_simulated_pods_are_read_live(prometheus_required):
    """PrometheusServer scraping loopback /metrics (render_text) -> PrometheusSource sees the pods; stop() cleans up."""
    import http.server
    import os
    import threading
    import time

    from scaler.testing.promserver import PrometheusServer
    from simulations.exposition import render_text

    pods = [PodMetrics.new(f"llama-7f9c-6d5f8-x{c * 4}", NS, "meta/llama") for c in "bc"]
    for i, p in enumerate(pods):
        p.waiting, p.running, p.kv_cache_usage = 2 + i, 5, 0.5

    def serve(pod):
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                body = render_text([pod]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv

    servers = [serve(p) for p in pods]
    targets = [(f"127.0.0.1:{s.server_address[1]}", {"namespace": NS, "pod": p.pod}) for s, p in zip(servers, pods)]
    prom = PrometheusServer(scrape_targets=targets, scrape_interval=0.5)
    try:
        prom.start()
        pid, workdir = prom._proc.pid, prom._workdir
        src = PrometheusSource(prom.url, timeout=2)
        t = cfg("llama-7f9c", window="5")
        deadline = time.monotonic() + 20
        sig = None
        while time.monotonic() < deadline:
            sig = src.fetch([t], time.time())[t.target_key]
            if isinstance(sig, Signals) and sig.pods_reporting == 2:
                break
            time.sleep(0.3)
        assert isinstance(sig, Signals) and sig.pods_reporting == 2, sig
        assert sig.waiting == 5 and sig.running == 10 and sig.kv_cache_usage == pytest.approx(0.5)
    finally:
        prom.stop()
        for s in servers:
            s.shutdown()
            s.server_close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not workdir.exists()


def test_prometheus_server_start_failure_is_reported_with_its_log(prometheus_required):
    from scaler.testing.promserver import PrometheusServer

    server = PrometheusServer(extra_args=["--no-such-flag"])
    with pytest.raises(RuntimeError, match="did not become ready") as e:
        server.start(timeout=10)
    assert "no-such-flag" in str(e.value)   # the log tail says why
    assert server._proc is None and server._workdir is None


def test_given_client_timeout_applies_even_if_the_client_has_none():
    """A PrometheusConnect built elsewhere (auth, CA) without a timeout still gets the source's timeout."""
    import http.server
    import threading
    import time

    from scaler.errors import SourceTimeout

    class Hang(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            time.sleep(3)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hang)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = PrometheusConnect(f"http://127.0.0.1:{srv.server_address[1]}", method="POST")
        t0 = time.monotonic()
        with pytest.raises(SourceTimeout):
            PrometheusSource(client, timeout=0.3).fetch([cfg("llama-7f9c")], T_END)
        assert time.monotonic() - t0 < 2.5
    finally:
        srv.shutdown()
        srv.server_close()


def test_regex_like_model_names_stay_literal_in_a_real_prometheus(backfilled_prometheus):
    """modelName ".*" (a legal label value) must match nothing here, alone (`=`) or in a union (`=~`, escaped)."""
    server = backfilled_prometheus(frames_gen(ALL, "v1"))
    src = PrometheusSource(server.url, timeout=5)
    wild, real = cfg("llama-7f9c", modelName=".*"), cfg("llama-7f9c", modelName="meta/llama")
    alone = src.fetch([wild], T_END)[wild.target_key]
    assert isinstance(alone, NoDataError)   # the pods are scrape targets (up) but none has model_name ".*"
    both = src.fetch([wild, real], T_END)
    assert isinstance(both[wild.target_key], NoDataError)
    check(both[real.target_key], expected(LLAMA))
