"""The pod server: a simulated fleet's pods each serve vLLM-shaped /metrics on loopback, parsed back."""

import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from simulations.fleet import ColdStartModel, ModelParams, RequestFleet
from simulations.podserver import PodServer
from simulations.traces import load


def scrape(addr: str) -> dict:
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_each_pod_serves_metrics_that_parse_back():
    tr = load("azure-2023-conv").sliced(600)
    fleet = RequestFleet(tr.arrivals, tr.prompt, tr.output, params=ModelParams(), cold_start=ColdStartModel(),
                         start=tr.start, initial_replicas=2)
    with PodServer(fleet, start=tr.start, speed=120.0, tick=0.05) as srv:
        targets = srv.targets()
        assert len(targets) == 2 and all(a.startswith("127.0.0.1:") for a, _ in targets)
        deadline = time.monotonic() + 10
        done = 0.0
        while time.monotonic() < deadline:
            fams = scrape(targets[0][0])
            succ = fams["vllm:request_success"]
            done = sum(s.value for s in succ.samples if s.labels.get("finished_reason") == "stop")
            if done > 5:
                break
            time.sleep(0.1)
        assert done > 5, "the simulated pod finished no request within the deadline"
        pod = targets[0][1]["pod"]
        running = fams["vllm:num_requests_running"].samples[0]
        assert running.labels["pod"] == pod and running.labels["model_name"] == "vllm"
        ttft = fams["vllm:time_to_first_token_seconds"]
        count = [s.value for s in ttft.samples if s.name.endswith("_count")][0]
        assert count >= done
        # the counters match the fleet's own request table at the served instant (monotone afterwards)
        idx = fleet.rs.replicas[0].index
        assert np.sum((fleet.req.replica == idx) & np.isfinite(fleet.req.finish)) >= done
    assert srv.targets() == []


def test_simulate_openmetrics_export_loads_with_promtool(tmp_path):
    import pytest

    from scaler.cli import main
    from scaler.testing.promserver import load_openmetrics, prometheus_available

    why = prometheus_available()
    if why:
        pytest.skip(why)
    om = tmp_path / "fleet.om"
    assert main(["simulate", "--duration", "300", "--policy", "reactive", "--openmetrics", str(om)]) == 0
    text = om.read_text()
    assert text.rstrip().endswith("# EOF")
    assert 'vllm:num_requests_running{' in text and 'pod="vllm-0"' in text
    load_openmetrics(str(om), tmp_path / "tsdb")          # promtool tsdb create-blocks-from openmetrics
    assert any((tmp_path / "tsdb").iterdir())
