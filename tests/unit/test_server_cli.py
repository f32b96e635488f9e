"""`vllm-scaler serve`: every setting as flag and env var, errors naming them, SIGTERM exits 0."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc
from scaler.server.cli import SETTINGS, build_settings, register, resolve

ROOT = Path(__file__).resolve().parents[2]


def parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_defaults_flags_and_env_with_flag_winning() -> None:
    values = resolve(parse([]), environ={})
    settings = build_settings(values)
    assert (settings.port, settings.metrics_port, settings.health_port) == (6000, 8080, None)
    assert settings.idle_eviction == 600 and settings.cold_wait == 0.8 and settings.grace == 10
    assert settings.defaults.allowed_namespaces is None and settings.tls is None
    env = {"VLLM_SCALER_GRPC_PORT": "7000", "VLLM_SCALER_ALLOWED_NAMESPACES": "ml=shared, *=research",
           "VLLM_SCALER_ALLOW_ACTIVATION_QUERY": "true", "VLLM_SCALER_IDLE_EVICTION": "15m",
           "VLLM_SCALER_LOG_LEVEL": "info", "VLLM_SCALER_METRICS_PORT": "off", "VLLM_SCALER_HEALTH_PORT": "6001"}
    settings = build_settings(resolve(parse(["--grpc-port", "7001"]), environ=env))
    assert settings.port == 7001  # flag beats env
    assert settings.defaults.allowed_namespaces == frozenset({("ml", "shared"), ("*", "research")})
    assert settings.defaults.allow_activation_query is True
    assert settings.idle_eviction == 900 and settings.metrics_port is None and settings.health_port == 6001


def test_bad_values_name_the_flag_or_variable_and_value_all_at_once() -> None:
    with pytest.raises(ValueError) as exc:
        resolve(parse(["--grpc-port", "70000", "--cold-wait", "soon"]),
                environ={"VLLM_SCALER_PROMETHEUS_URL": "prom:9090", "VLLM_SCALER_LOG_FORMAT": "xml"})
    text = str(exc.value)
    for part in ("--grpc-port='70000'", "--cold-wait='soon'", "VLLM_SCALER_PROMETHEUS_URL='prom:9090'",
                 "VLLM_SCALER_LOG_FORMAT='xml'"):
        assert part in text


def test_help_and_docs_list_every_flag_and_variable() -> None:
    out = subprocess.run([sys.executable, "-m", "scaler", "serve", "--help"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}, timeout=30)
    assert out.returncode == 0
    docs = (ROOT / "docs" / "server.md").read_text()
    for s in SETTINGS:
        assert s.flag in out.stdout and s.env in out.stdout, s.flag
        assert f"`{s.flag}`" in docs and f"`{s.env}`" in docs, f"docs/server.md misses {s.flag} / {s.env}"


def serving_address(proc) -> str:
    """Read the JSON log of a starting `vllm-scaler serve` up to its "serving" line; the gRPC address."""
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        line = json.loads(proc.stderr.readline())
        if line["msg"] == "serving":
            return line["grpc"]


def sigterm(proc) -> float:
    """SIGTERM ``proc``; checks exit status 0 and the last server log line "stopped"; returns seconds taken."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    took = time.monotonic() - sent
    rest = proc.stderr.read()
    assert code == 0, rest
    lines = [json.loads(x) for x in rest.splitlines() if x.startswith("{")]
    assert [x["msg"] for x in lines if x.get("logger") == "scaler.server"][-1] == "stopped"
    return took


def test_serve_answers_then_exits_0_on_sigterm(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_SCALER_METRICS_PORT": "0",
           "VLLM_SCALER_PROMETHEUS_URL": "http://127.0.0.1:9"}  # nothing listens on port 9 (discard)
    proc = subprocess.Popen([sys.executable, "-m", "scaler", "serve", "--host", "127.0.0.1", "--grpc-port", "0",
                             "--cold-wait", "2s", "--grace-period", "2s", "--prometheus-timeout", "1s"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        address = serving_address(proc)
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            ref = pb.ScaledObjectRef(name="llama", namespace="ml")
            with pytest.raises(grpc.RpcError) as exc:  # Prometheus unreachable: UNAVAILABLE, never a 0
                pb_grpc.ExternalScalerStub(channel).GetMetrics(
                    pb.GetMetricsRequest(scaledObjectRef=ref, metricName="vllm-desired-replicas"), timeout=3)
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE, exc.value.details()
            assert "connection" in exc.value.details()
        assert sigterm(proc) < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_setting_exits_2_naming_it() -> None:
    out = subprocess.run([sys.executable, "-m", "scaler", "serve", "--tls-cert", "/nonexistent.crt"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         timeout=30)
    assert out.returncode == 2 and "--tls-key" in out.stderr


def test_port_in_use_exits_1_naming_the_flag() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("--grpc-port", "--metrics-port"):
            other = "--metrics-port" if flag == "--grpc-port" else "--grpc-port"
            out = subprocess.run([sys.executable, "-m", "scaler", "serve", "--host", "127.0.0.1", flag, str(port),
                                  other, "0"], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=30)
            assert out.returncode == 1, out.stderr
            assert f"{flag}: cannot listen on 127.0.0.1:{port}" in out.stderr


def test_enrichers_follow_cold_start_source_and_demand_history(tmp_path) -> None:
    from scaler.server.cli import build_enrichers
    from scaler.server.prometheus import PrometheusSourceFactory

    factory = PrometheusSourceFactory(default_url="http://127.0.0.1:9", timeout=1.0)
    no_cluster = {"KUBECONFIG": str(tmp_path / "absent")}

    def names(argv, environ=no_cluster):
        values = resolve(parse(argv), environ={})
        return [e.name for e in build_enrichers(values, factory, environ=environ)]

    assert names([]) == ["demand-history"]  # auto without Kubernetes access: no cold-start reader
    assert names(["--cold-start-source", "none", "--demand-history", "false"]) == []
    assert names(["--cold-start-source", "kube-state-metrics"]) == ["cold-start-kube-state-metrics",
                                                                     "demand-history"]
    with pytest.raises(ValueError, match=r"--cold-start-source='kubernetes': no Kubernetes API access"):
        names(["--cold-start-source", "kubernetes"])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        "clusters: [{name: t, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\nusers: [{name: t, user: {token: x}}]\n")
    assert names(["--cold-start-source", "kubernetes"], {"KUBECONFIG": str(kubeconfig)}) == [
        "cold-start-kubernetes", "demand-history"]
    # The Prometheus readers share the server's connection settings (token, CA) through factory.client.
    readers = build_enrichers(resolve(parse(["--cold-start-source", "kube-state-metrics"]), environ={}), factory,
                              environ=no_cluster)
    assert all(r._factory == factory.client for r in readers)


def test_allowed_prometheus_urls_reach_the_metadata_parser() -> None:
    from scaler.config import parse_metadata
    from scaler.errors import ConfigError

    def defaults(argv, env):
        return build_settings(resolve(parse(argv), environ=env)).defaults

    locked = defaults(["--prometheus-url", "http://prom:9090"], {})  # the default: only --prometheus-url
    assert locked.allowed_prometheus_urls == frozenset()
    assert parse_metadata({"prometheusAddress": "http://prom:9090"}, scaled_object="llama", namespace="ml",
                          defaults=locked).prometheus_address == "http://prom:9090"
    assert defaults(["--allowed-prometheus-urls", "*"], {}).allowed_prometheus_urls is None  # `*`: any, opt-in
    with pytest.raises(ConfigError) as err:
        parse_metadata({"prometheusAddress": "http://elsewhere:9090"}, scaled_object="llama", namespace="ml",
                       defaults=locked)
    assert err.value.keys == ("prometheusAddress",)
    two = defaults(["--allowed-prometheus-urls", "http://a:9090, https://b:9090/"], {})
    assert two.allowed_prometheus_urls == frozenset({"http://a:9090", "https://b:9090"})
    with pytest.raises(ValueError, match="--allowed-prometheus-urls"):
        resolve(parse(["--allowed-prometheus-urls", "a:9090"]), environ={})


def test_allowed_namespaces_are_from_to_pairs_checked_by_the_metadata_parser() -> None:
    from scaler.config import parse_metadata
    from scaler.errors import ConfigError

    d = build_settings(resolve(parse(["--allowed-namespaces", "team-a=shared,*=public,ml=ml"]), environ={})).defaults
    assert d.allowed_namespaces == frozenset({("team-a", "shared"), ("*", "public"), ("ml", "ml")})

    def reads(own, other):
        try:
            return parse_metadata({"namespace": other}, scaled_object="llama", namespace=own,
                                  defaults=d).namespace == other
        except ConfigError as err:
            assert err.keys == ("namespace",)
            return False

    assert reads("team-a", "shared") and not reads("team-b", "shared")   # only the pair's FROM
    assert not reads("shared", "team-a")                                 # pairs are one-way
    assert reads("team-b", "public") and reads("anything", "public")    # `*=TO`
    assert reads("team-b", "team-b")                                     # its own: always, no flag needed
    assert not reads("ml", "secret")
    assert build_settings(resolve(parse([]), environ={})).defaults.allowed_namespaces is None


@pytest.mark.parametrize("value, message", [
    ("secret", r"'secret' is not FROM=TO \(team-a=secret: .*\*=secret: ScaledObjects in any namespace may\)"),
    ("ml=Secret_NS", r"'Secret_NS' not a namespace name"),
    ("ml=*", r"'\*' not a namespace name \(`\*` is allowed as FROM only\)"),
    ("ml=a,b", r"'b' is not FROM=TO"),
])
def test_bad_allowed_namespaces_name_the_flag_and_the_pair(value, message) -> None:
    with pytest.raises(ValueError, match=r"--allowed-namespaces=.*" + message):
        resolve(parse(["--allowed-namespaces", value]), environ={})


# A `vllm-scaler serve` whose source spins in CPU work forever (in Python: the GIL changes hands), for the
# SIGTERM test: the real command line, with only the source factory swapped.
_SPINNING_SERVE = """
import sys
import scaler.server.prometheus as p
from scaler.cli import main

class Spinning:
    name = "spinning"
    def fetch(self, targets, now):
        sys.stderr.write('{"msg": "spinning", "logger": "test"}\\n'); sys.stderr.flush()
        while True:
            pass

p.PrometheusSourceFactory.__call__ = lambda self, address: Spinning()
sys.exit(main(["serve"] + sys.argv[1:]))
"""


@pytest.mark.parametrize("stuck", ["blocked-socket", "cpu"])
def test_sigterm_stops_serve_whatever_the_refresh_is_doing(stuck) -> None:
    """SIGTERM ends the process within --grace-period (+3 s) while a refresh is stuck, exit status 0."""
    import socket

    blackhole = socket.socket()  # accepts connections (backlog) and never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    url = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
    args = ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "off", "--grace-period", "2s",
            "--prometheus-url", url, "--prometheus-timeout", "1h", "--cold-start-source", "none",
            "--demand-history", "false", "--cold-wait", "0.2s"]
    cmd = ([sys.executable, "-m", "scaler", "serve", *args] if stuck == "blocked-socket"
           else [sys.executable, "-c", _SPINNING_SERVE, *args])
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE,
                            text=True)
    try:
        address = serving_address(proc)
        deadline = time.monotonic() + 20
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            stub.GetMetricSpec(pb.ScaledObjectRef(name="llama", namespace="ml"), timeout=3)  # starts the refresh
            if stuck == "cpu":
                while json.loads(proc.stderr.readline())["msg"] != "spinning":
                    assert time.monotonic() < deadline
            else:
                conn, _ = blackhole.accept()  # the fetch is connected and waiting for an answer that never comes
            time.sleep(0.5)
        took = sigterm(proc)
        assert took < 2 + 3, took  # --grace-period + the shutdown margin
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        blackhole.close()
