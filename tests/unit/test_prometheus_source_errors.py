"""PrometheusSource maps each way Prometheus can fail to its own error type.

A loopback HTTP server written here (real sockets, no mocking library) answers
500 / hangs past the client's timeout / closes the connection without answering /
answers 200 with garbage; a closed port gives "connection refused".
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time

import pytest

from scaler.config import parse_metadata
from scaler.errors import SourceConnectionError, SourceHTTPError, SourceTimeout, SourceUnavailable
from scaler.sources.prometheus import PrometheusSource


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "500"
    hang_s = 3.0
    requests_seen = 0

    def log_message(self, *args):  # keep test output quiet
        pass

    def _answer(self):
        type(self).requests_seen += 1
        if self.mode == "500":
            body = json.dumps({"status": "error", "error": "boom"}).encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.mode == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.mode == "hang":
            time.sleep(self.hang_s)
        elif self.mode == "close":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
        elif self.mode == "garbage":
            body = b"<html>not prometheus</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


@pytest.fixture
def http_server():
    servers = []

    def start(mode: str):
        handler = type("H", (_Handler,), {"mode": mode, "requests_seen": 0})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        th = threading.Thread(target=srv.serve_forever, daemon=True)
        th.start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}", handler

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _target():
    return parse_metadata({"deploymentName": "llama"}, scaled_object="llama", namespace="team-a")


@pytest.mark.parametrize("mode,status", [("500", 500), ("503", 503)])
def test_http_error_keeps_status_and_is_not_retried(http_server, mode, status):
    url, handler = http_server(mode)
    with pytest.raises(SourceHTTPError) as e:
        PrometheusSource(url, timeout=2).fetch([_target()], 1_700_000_000)
    assert e.value.status == status and e.value.kind == "http"
    assert handler.requests_seen == 1  # fail fast: no retry with back-off


def test_hang_past_timeout_is_a_timeout(http_server):
    url, _ = http_server("hang")
    t0 = time.monotonic()
    with pytest.raises(SourceTimeout) as e:
        PrometheusSource(url, timeout=0.3).fetch([_target()], 1_700_000_000)
    assert time.monotonic() - t0 < 2.5  # bounded by the timeout, not by the server's 3 s hang
    assert e.value.kind == "timeout" and not isinstance(e.value, SourceConnectionError)


def test_closed_connection_is_a_connection_error(http_server):
    url, _ = http_server("close")
    with pytest.raises(SourceConnectionError) as e:
        PrometheusSource(url, timeout=2).fetch([_target()], 1_700_000_000)
    assert e.value.kind == "connection" and not isinstance(e.value, SourceTimeout)


def test_refused_connection_is_a_connection_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(SourceConnectionError):
        PrometheusSource(f"http://127.0.0.1:{port}", timeout=1).fetch([_target()], 1_700_000_000)


def test_garbage_body_is_unavailable_not_empty(http_server):
    url, _ = http_server("garbage")
    with pytest.raises(SourceUnavailable) as e:
        PrometheusSource(url, timeout=2).fetch([_target()], 1_700_000_000)
    assert "malformed" in str(e.value)


def test_timeout_must_be_positive():
    with pytest.raises(ValueError, match="timeout"):
        PrometheusSource("http://127.0.0.1:9", timeout=0)
