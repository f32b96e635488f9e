"""The server's PrometheusSource factory: bearer token only to the server's own Prometheus, re-read on change."""

import http.server
import json
import threading

import pytest

from scaler.config import ServerDefaults, parse_metadata
from scaler.server.prometheus import BearerTokenFile, PrometheusSourceFactory

EMPTY = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()


@pytest.fixture
def prometheus_api():
    """A loopback HTTP server answering every Prometheus query with an empty vector; records Authorization."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(EMPTY)))
            self.end_headers()
            self.wfile.write(EMPTY)

        do_GET = do_POST = _answer

    servers = []

    def start():
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start, seen
    for s in servers:
        s.shutdown()
        s.server_close()


def fetch(factory, address):
    config = parse_metadata({"prometheusAddress": address}, scaled_object="llama", namespace="ml",
                            defaults=ServerDefaults(prometheus_url=factory.default_url))
    return factory(address).fetch([config], 1_800_000_000.0)


def test_bearer_token_goes_to_the_servers_prometheus_only_and_is_reread(prometheus_api, tmp_path) -> None:
    start, seen = prometheus_api
    own, other = start(), start()
    token = tmp_path / "token"
    token.write_text("first-token\n")
    factory = PrometheusSourceFactory(default_url=own, timeout=2.0, bearer_token_file=str(token))
    fetch(factory, own)
    assert seen and {auth for _, auth in seen} == {"Bearer first-token"}
    seen.clear()
    fetch(factory, other)  # a prometheusAddress from metadata: never the server's credential
    assert seen and {auth for _, auth in seen} == {None}
    seen.clear()
    token.write_text("second-token-rotated\n")
    fetch(factory, own)
    assert {auth for _, auth in seen} == {"Bearer second-token-rotated"}


def test_missing_token_or_ca_file_names_the_flag(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"--prometheus-bearer-token-file='.*nope': cannot read"):
        BearerTokenFile(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match=r"--prometheus-ca-file='.*ca.pem': no such file"):
        PrometheusSourceFactory(default_url="http://p:9090", timeout=1, ca_file=str(tmp_path / "ca.pem"))
