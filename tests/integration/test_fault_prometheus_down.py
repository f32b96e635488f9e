"""Fault: Prometheus stops mid-run. The server keeps answering the last good decision for at most maxStaleness,
then answers UNAVAILABLE (so KEDA's fallback applies); never 0 replicas, never inactive."""

from __future__ import annotations

import time
import urllib.request

import grpc
import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.policy import decide
from scaler.server import METRIC_NAME
from scaler.server.client import CallError, ExternalScalerClient, ScaledObjectRef
from scaler.signals import Signals

from .test_grpc_prometheus import NS, LivePods, start_server

pytestmark = pytest.mark.integration

# reactive: the expected answer below is its formula on the pods' queue, running and KV (the predictive policy,
# the default, also reads the live rate and forecast, which this test does not control). The fault handling
# under test is the server's, the same for both policies.
MD = {"window": "5", "refreshInterval": "0.5", "maxStaleness": "3", "policy": "reactive"}
MAX_STALENESS = 3.0


def test_prometheus_stopped_mid_run(prometheus_required) -> None:
    with LivePods([("llama-7f9c-xbbbb", NS, "llama"), ("llama-7f9c-xcccc", NS, "llama")]) as pods:
        pods.set("llama-7f9c-xbbbb", waiting=6, running=5, kv_cache_usage=0.5)
        pods.set("llama-7f9c-xcccc", waiting=8, running=5, kv_cache_usage=0.5)
        server = start_server(pods.prometheus.url, cold_wait=2.5)
        try:
            _run(server, pods)
        finally:
            server.stop(grace=1.0)


def _run(server, pods) -> None:
    config = parse_metadata(MD, scaled_object="llama", namespace=NS,
                            defaults=ServerDefaults(prometheus_url=pods.prometheus.url))
    now = time.time()
    want = decide(Signals(observed_at=now, pods_reporting=2, waiting=14, running=10, kv_cache_usage=0.5), None,
                  config, now)
    assert want.desired == 3 and want.active
    ref = ScaledObjectRef("llama", NS, MD)
    with grpc.insecure_channel(server.address) as channel:
        client = ExternalScalerClient(channel, deadline=3)
        # Healthy: wait (bounded) until both pods are scraped and the answer is the policy's.
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get_metrics(ref, METRIC_NAME)[0].value == want.desired:
                    break
            except CallError:
                pass
            assert time.monotonic() < deadline, "server never answered the expected value"
            time.sleep(0.2)
        assert client.is_active(ref) is True

        pods.prometheus.stop()
        target = server.store.targets()[0]
        time.sleep(0.7)  # at least one refresh fails after the stop
        last_good = target.good.at
        answers, first_unavailable = [], None
        end = time.time() + MAX_STALENESS + 1.5
        while time.time() < end:
            t = time.time()
            for call in (lambda: client.get_metrics(ref, METRIC_NAME)[0].value, lambda: client.is_active(ref)):
                try:
                    answers.append((t, call()))
                except CallError as exc:
                    assert exc.code == grpc.StatusCode.UNAVAILABLE, exc
                    assert "maxStaleness" in exc.details and "connection" in exc.details, exc.details
                    answers.append((t, "UNAVAILABLE"))
                    if first_unavailable is None:
                        first_unavailable = t
            time.sleep(0.1)

    served = [a for t, a in answers if a != "UNAVAILABLE"]
    assert served, "nothing was served from the last good decision"
    # Served answers are the last good decision only: never 0, never inactive.
    assert set(served) <= {want.desired, True}, set(served)
    assert 0 not in served and False not in served
    # Served while younger than maxStaleness, UNAVAILABLE from then on, without flapping back.
    assert first_unavailable is not None
    assert last_good + MAX_STALENESS - 0.2 <= first_unavailable <= last_good + MAX_STALENESS + 1.0
    assert all(a == "UNAVAILABLE" for t, a in answers if t > first_unavailable)
    assert all(a != "UNAVAILABLE" for t, a in answers if t < last_good + MAX_STALENESS - 0.2)

    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    errors = [line for line in text.splitlines() if line.startswith("vllm_scaler_source_errors_total{")
              and 'kind="connection"' in line and 'scaledobject="llama"' in line]
    assert errors and float(errors[0].rsplit(" ", 1)[1]) >= 2
    assert any(line.startswith("vllm_scaler_answering{") and line.endswith(" 0.0") for line in text.splitlines())
