"""The whole loop on loopback, once (`vllm-scaler demo`, about 70 s): real Prometheus, real server, real gRPC.

One run (module fixture) of :func:`simulations.demo.run`: simulated vLLM pods serving /metrics over HTTP,
Debian's Prometheus scraping them, `vllm-scaler serve` as a subprocess reading Prometheus through a gate the
demo cuts for 5 s, and the KEDA + HPA emulator calling the server over gRPC as KEDA does (GetMetricSpec,
GetMetrics, IsActive with a 3 s deadline; a StreamIsActive stream) and resizing the simulated fleet. Each
claim of the story is its own test, so a failure names the claim; the figures are in the message.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scaler.testing.promserver import prometheus_available

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REASON = prometheus_available()


def _children() -> set[int]:
    """PIDs of this process' live children (zombies not yet reaped count too)."""
    me, kids = os.getpid(), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            kids.add(int(stat.parent.name))
    return kids


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    from simulations import demo as d

    before = _children()
    result = d.run(workdir=tmp_path_factory.mktemp("demo"))
    leftover = _children() - before
    return d, result, {c.name: c for c in d.check(result)}, leftover


def _assert(checks, name: str) -> None:
    c = checks[name]
    assert c.ok, f"{name}: {c.detail}"


def test_scales_up_before_the_queue_explodes(demo) -> None:
    _, _, checks, _ = demo
    _assert(checks, "scaled_up_before_the_queue_exploded")


def test_prometheus_outage_changes_nothing_for_the_worse(demo) -> None:
    _, _, checks, _ = demo
    _assert(checks, "prometheus_outage_changed_nothing_for_the_worse")


def test_scales_down_after_the_ramp(demo) -> None:
    _, _, checks, _ = demo
    _assert(checks, "scaled_down_after_the_ramp")


def test_scales_to_zero(demo) -> None:
    _, _, checks, _ = demo
    _assert(checks, "scaled_to_zero")


def test_wakes_from_zero_through_stream_is_active(demo) -> None:
    _, _, checks, _ = demo
    _assert(checks, "woke_through_stream_is_active")


def test_every_process_is_stopped(demo) -> None:
    _, result, checks, leftover = demo
    _assert(checks, "scaler_exited_cleanly_on_sigterm")
    assert not leftover, f"processes left running after the demo: {sorted(leftover)}"


def test_the_emulator_called_as_keda_does(demo) -> None:
    _, result, _, _ = demo
    rpcs = [c[1] for c in result.calls]
    assert rpcs.count("GetMetrics") >= 20 and rpcs.count("IsActive") >= 20
    # Every reading is a whole replica count (the scaler dictates N against a target of 1).
    values = [c[2] for c in result.calls if c[1] == "GetMetrics" and not isinstance(c[2], str)]
    assert values and all(v == int(v) and 0 <= v <= 8 for v in values)
    assert result.pushes and result.pushes[0][1] in (True, False)   # the stream sent the current state at once


def test_pod_role_serves_health_after_the_startup_delay_and_the_loadgen_share() -> None:
    """`vllm-scaler demo --role pod` (the kind e2e's simulated vLLM container), against a stand-in loadgen."""
    import socket
    import subprocess
    import sys
    import threading
    import time
    import urllib.error
    import urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    share = b'vllm:num_requests_waiting{pod="sim-0"} 3\n'

    class Loadgen(BaseHTTPRequestHandler):   # serves /pods/<name>/metrics like --role loadgen
        def do_GET(self) -> None:
            body = share if self.path == "/pods/sim-0/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    loadgen = ThreadingHTTPServer(("127.0.0.1", 0), Loadgen)
    threading.Thread(target=loadgen.serve_forever, daemon=True).start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "scaler", "demo", "--role", "pod", "--port", str(port),
                             "--startup-delay", "1.5", "--loadgen-url", f"http://127.0.0.1:{loadgen.server_port}"],
                            env={**os.environ, "POD_NAME": "sim-0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""

    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                first = get("/health")
                break
            except OSError:
                assert time.monotonic() < deadline, "the pod role did not start listening"
                time.sleep(0.05)
        assert first[0] == 503                                  # still "loading the model"
        time.sleep(1.6)
        assert get("/health")[0] == 200
        assert get("/metrics") == (200, share)
    finally:
        proc.terminate()
        exit_code = proc.wait(timeout=10)
        loadgen.shutdown()
        loadgen.server_close()
    assert exit_code == 0, "SIGTERM should stop the pod role cleanly"


@pytest.mark.parametrize(("current", "ready", "replicas", "expected"), [
    pytest.param({}, ["a"], ["r0"], {"a": "r0"}, id="first-pod"),
    pytest.param({"a": "r0"}, ["a", "b"], ["r0", "r1"], {"a": "r0", "b": "r1"}, id="keeps-pairs-adds-new"),
    pytest.param({"a": "r0", "b": "r1"}, ["b"], ["r1"], {"b": "r1"}, id="pod-gone"),
    pytest.param({"a": "r0", "b": "r1"}, ["a", "b"], ["r0"], {"a": "r0"}, id="replica-drained-first"),
    pytest.param({"a": "r0"}, ["a", "b"], ["r0"], {"a": "r0"}, id="no-free-replica-yet"),
    pytest.param({}, [], [], {}, id="zero"),
])
def test_assign_pods(current, ready, replicas, expected) -> None:
    from simulations.demo import assign_pods

    assert assign_pods(current, ready, replicas) == expected


def test_cluster_story_goes_zero_one_n_zero() -> None:
    """The kind loadgen's phases: starts idle (0 replicas), trickle (wake to 1), ramp (N), ends idle (0)."""
    from simulations.demo import cluster_phases

    phases = cluster_phases(12.0, 10.0)
    assert [p.name for p in phases] == ["idle", "trickle", "ramp-up", "plateau", "ramp-down", "idle-after"]
    assert phases[0].rate(0) == 0 and phases[1].rate(phases[1].start) == 1 and phases[3].rate_to == 12.0
    assert phases[-1].rate_from == phases[-1].rate_to == 0
    assert all(a.end == b.start for a, b in zip(phases, phases[1:]))
    assert phases[2].end == 180.0                         # stretched 10x for the HPA's 15 s sync
