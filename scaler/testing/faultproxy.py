"""A fault-injecting HTTP proxy on loopback, in front of a real Prometheus, for the fault tests.

Every request is forwarded to ``upstream`` (a Prometheus base URL, switchable at run time: e.g. to a
second Prometheus with empty storage) unless :attr:`FaultProxy.fault` says otherwise:

==============  ==========================================================================
fault           what the client sees
==============  ==========================================================================
``None``        Prometheus' answer, unchanged
``"killed"``    the proxy stops listening (connection refused) until :meth:`revive`
``"http500"``   HTTP 500 with a Prometheus-shaped error body
``"delay"``     the answer after ``delay`` seconds (a client with a shorter timeout times out)
``"nan"``       Prometheus' answer with every sample value replaced by ``"NaN"``
``"garbage"``   HTTP 200 with a body that is not JSON
``"empty"``     HTTP 200, ``status: success``, the result type kept, no series
==============  ==========================================================================

It records each request it receives (``requests``: method, path, URL length, body length), so a test can
check where the PromQL travelled and how big each request was.

Usage::

    with FaultProxy(prom.url) as proxy:
        source = PrometheusSource(proxy.url, timeout=0.5)
        proxy.fault = "http500"
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = (None, "killed", "http500", "delay", "nan", "garbage", "empty")


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    url_bytes: int
    body_bytes: int


def _nan_values(data: Any) -> Any:
    """Prometheus' ``data`` with every sample value (``value: [t, v]`` / ``values: [[t, v], ...]``) set to NaN."""
    result = data.get("result") if isinstance(data, dict) else None
    if isinstance(result, list):
        for r in result:
            if isinstance(r, dict) and "value" in r:
                r["value"] = [r["value"][0], "NaN"]
            if isinstance(r, dict) and "values" in r:
                r["values"] = [[t, "NaN"] for t, _ in r["values"]]
    return data


class FaultProxy:
    """The proxy described in the module docstring; a context manager (started on enter, stopped on exit)."""

    def __init__(self, upstream: str, *, delay: float = 10.0):
        if delay <= 0:
            raise ValueError(f"delay must be > 0, got {delay!r}")
        self.upstream = upstream.rstrip("/")
        self.fault: str | None = None
        self.delay = delay
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultProxy not started")
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy._conns.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._conns.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                proxy._handle(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy._handle(self, self.rfile.read(length) if length else b"")

        server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False   # keep-alive handlers are closed by _close, not waited for
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fault-proxy-{self.port}", daemon=True)
        self._thread.start()

    def kill(self) -> None:
        """Stop listening (the ``killed`` fault): connections are refused until :meth:`revive`."""
        self.fault = "killed"
        self._close()

    def revive(self) -> None:
        """Listen again on the same port and forward unchanged."""
        self._close()
        self.fault = None
        self.start()

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:   # a killed server drops its open (keep-alive) connections too
            conns, self._conns = list(self._conns), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def stop(self) -> None:
        self._stopping.set()   # wakes requests sleeping in the delay fault
        self._close()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request -------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            self.requests.append(Seen(h.command, h.path.split("?", 1)[0], len(h.path.encode()), len(body)))
        fault = self.fault
        if fault == "http500":
            return _reply(h, 500, b'{"status":"error","errorType":"internal","error":"injected fault"}')
        if fault == "garbage":
            return _reply(h, 200, b"<html>502 Bad Gateway</html>\x00\xff", content_type="text/html")
        if fault == "delay" and self._stopping.wait(self.delay):
            return
        req = urllib.request.Request(self.upstream + h.path, data=body if h.command == "POST" else None,
                                     method=h.command)
        if h.headers.get("Content-Type"):
            req.add_header("Content-Type", h.headers["Content-Type"])
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                status, payload = r.status, r.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return _reply(h, 502, b'{"status":"error","errorType":"unavailable","error":"upstream down"}')
        if status == 200 and fault in ("nan", "empty"):
            doc = json.loads(payload)
            if fault == "empty":
                doc["data"]["result"] = []
            else:
                doc["data"] = _nan_values(doc["data"])
            payload = json.dumps(doc).encode()
        _reply(h, status, payload)


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, *, content_type: str = "application/json") -> None:
    try:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    except OSError:   # the client gave up (e.g. its timeout in the delay fault)
        pass
