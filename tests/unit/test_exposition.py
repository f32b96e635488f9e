"""simulations.exposition: parsed back by prometheus_client's parsers and loaded by the real promtool."""

from __future__ import annotations

import io
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from scaler import vllm_metrics as vm
from scaler.testing.promserver import load_openmetrics, prometheus_available
from simulations.exposition import Histogram, PodMetrics, render_text, write_openmetrics


def _pod(name="llama-7f9c-abcde", ns="team-a", names="v1") -> PodMetrics:
    p = PodMetrics.new(name, ns, "meta/llama", names=names)
    p.waiting, p.running, p.kv_cache_usage = 3, 7, 0.42
    p.ttft.observe(0.3, 5)
    p.ttft.observe(3.0, 1)
    p.itl.observe(0.02, 100)
    p.e2e.observe(4.0, 6)
    p.request_prompt_tokens.observe(700, 6)
    p.request_generation_tokens.observe(150, 6)
    p.prompt_tokens_total, p.generation_tokens_total = 4200, 900
    p.request_success_total.update(stop=5, length=1)
    return p


def test_histogram_is_cumulative_with_inclusive_upper_edges():
    h = Histogram((0.1, 1.0, 10.0))
    h.observe(0.1)          # on an edge: counted in le="0.1" (Prometheus' le is <=)
    h.observe(0.5, n=2)
    h.observe(50.0)         # only in +Inf
    assert h.bucket_counts == (1, 3, 3)
    assert h.count == 4 and h.sum == pytest.approx(51.1)


def test_histogram_rejects_bad_edges_and_values():
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram((1.0, 1.0))
    with pytest.raises(ValueError):
        Histogram((1.0,)).observe(float("nan"))


@pytest.mark.parametrize("names", ["v1", "v0"])
def test_render_text_parses_back_with_names_labels_and_buckets(names):
    fams = {f.name: f for f in parse_text(render_text([_pod(names=names)], names=names))}
    kv = vm.name_for(vm.KV_CACHE, names)
    itl = vm.name_for(vm.ITL, names)
    assert fams[kv].samples[0].value == pytest.approx(0.42)
    labels = fams["vllm:num_requests_waiting"].samples[0].labels
    expected = {"namespace": "team-a", "pod": "llama-7f9c-abcde", "model_name": "meta/llama"}
    if names == "v1":
        expected["engine"] = "0"
    assert labels == expected
    buckets = [s for s in fams["vllm:time_to_first_token_seconds"].samples if s.name.endswith("_bucket")]
    edges = vm.TTFT_BUCKETS_V1 if names == "v1" else vm.TTFT_BUCKETS_V0
    assert [float(s.labels["le"]) for s in buckets] == list(edges) + [float("inf")]
    assert {s.labels["le"]: s.value for s in buckets}["0.25"] == 0
    assert {s.labels["le"]: s.value for s in buckets}["0.5"] == 5
    assert itl in fams
    success = {s.labels["finished_reason"]: s.value for s in fams["vllm:request_success"].samples
               if s.name == "vllm:request_success_total"}
    assert success == {"stop": 5, "length": 1}


def test_openmetrics_single_frame_passes_the_strict_openmetrics_parser():
    # prometheus_client 0.26's OpenMetrics parser rejects a histogram series with several timestamps
    # ("+Inf bucket missing") although each point is complete; several frames are checked with the real
    # consumer, promtool, in test_many_frames_load_with_real_promtool.
    buf = io.StringIO()
    write_openmetrics([(1_700_000_000.0, [_pod(), _pod("llama-7f9c-fghij")])], buf)
    text = buf.getvalue()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in parse_openmetrics(text)}
    # counters: family without _total, samples with it
    assert "vllm:request_success" in fams and "vllm:prompt_tokens" in fams
    s = [x for x in fams["vllm:prompt_tokens"].samples if x.name == "vllm:prompt_tokens_total"]
    assert len(s) == 2 and s[0].value == 4200 and s[0].timestamp.sec == 1_700_000_000
    assert {x.labels["pod"] for x in fams["up"].samples} == {"llama-7f9c-abcde", "llama-7f9c-fghij"}


def test_openmetrics_frames_must_increase():
    with pytest.raises(ValueError, match="increase"):
        write_openmetrics([(10.0, [_pod()]), (10.0, [_pod()])], io.StringIO())


def test_unscraped_pod_has_only_up_zero():
    p = _pod()
    p.scraped = False
    buf = io.StringIO()
    write_openmetrics([(1_700_000_000.0, [p])], buf)
    fams = {f.name: f for f in parse_openmetrics(buf.getvalue())}
    assert set(fams) == {"up"} and fams["up"].samples[0].value == 0


@pytest.mark.skipif(prometheus_available() is not None, reason=str(prometheus_available()))
@pytest.mark.parametrize("names", ["v1", "v0"])
def test_many_frames_load_with_real_promtool(tmp_path, names):
    pods = [_pod(f"llama-{i}", names=names) for i in range(3)]

    def frames():
        for k in range(40):
            for p in pods:
                p.waiting = k % 5
                p.ttft.observe(0.2, 1)
                p.request_success_total["stop"] += 1
            yield 1_690_000_000.0 + 15 * k, pods

    buf = io.StringIO()
    write_openmetrics(frames(), buf, names=names)
    load_openmetrics(buf.getvalue(), tmp_path / "tsdb")
    dump = subprocess.run(["promtool", "tsdb", "list", str(tmp_path / "tsdb")], capture_output=True, text=True,
                          check=True).stdout
    # one block, every sample present: per pod per frame 3 gauges + histograms + counters + up
    per_frame = 3 + sum((len(getattr(pods[0], f.key).edges) + 3) for f in vm.FAMILIES if f.kind == "histogram") \
        + 2 + 2 + 1
    row = dump.strip().splitlines()[1].split()
    assert int(row[4]) == 40 * 3 * per_frame


def test_load_openmetrics_reports_promtool_errors(tmp_path):
    if prometheus_available():
        pytest.skip(prometheus_available())
    with pytest.raises(RuntimeError, match="create-blocks-from openmetrics"):
        load_openmetrics("# TYPE x gauge\nx{ 1 10\n# EOF\n", tmp_path / "tsdb")
