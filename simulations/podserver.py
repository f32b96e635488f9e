"""Serve a simulated fleet as vLLM pods: one HTTP ``/metrics`` per pod on 127.0.0.1, so a real Prometheus scrapes it.

The fleet runs on a virtual clock tied to the wall clock: ``virtual = start +
speed * (wall - wall_at_start)`` (``speed = 1``: real time; 60: a minute per
second). A background thread advances the fleet every ``tick`` wall seconds;
each pod that vLLM runs in (ready or draining) gets its own server on an
ephemeral loopback port, opened when the pod appears and closed when it is
gone. ``/metrics`` renders :func:`simulations.exposition.render_text` of the
pod's :class:`~simulations.exposition.PodMetrics` at the last advance.
``targets()`` gives ``("127.0.0.1:PORT", {"pod": ..., "namespace": ...})`` pairs
for a Prometheus scrape config (``scaler.testing.promserver.PrometheusServer``).

Command line (runs until Ctrl-C):
``python -m simulations.podserver --trace azure-2023-conv --replicas 2 --speed 10``.
Tests: ``tests/integration/test_podserver.py``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .exposition import render_text
from .fleet.metrics import pod_metrics

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Respond = Callable[[str], "tuple[int, bytes] | None"]


class TextHTTPServer:
    """A threaded HTTP server answering GET with ``respond(path)`` -> ``(status, body)``, or 404 on ``None``.

    Bodies are sent as Prometheus' text exposition type. The one small server behind every simulated
    endpoint: per-pod ``/metrics`` here, and the demo's pod slots, router, loadgen and pod roles.
    """

    def __init__(self, respond: Respond, *, host: str = "127.0.0.1", port: int = 0, name: str = "http",
                 poll_interval: float = 0.5):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answer = respond(self.path.split("?")[0])
                if answer is None:
                    self.send_error(404)
                    return
                code, body = answer
                self.send_response(code)
                self.send_header("Content-Type", EXPOSITION_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": poll_interval},
                                       name=f"{name}-{self.port}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def metrics_only(body: Callable[[], str]) -> Respond:
    """A ``respond`` serving ``body()`` at ``/metrics`` and 404 elsewhere."""
    return lambda path: (200, body().encode()) if path == "/metrics" else None


def _pod_http(owner: PodServer, pod: str) -> TextHTTPServer:
    return TextHTTPServer(metrics_only(lambda: owner.render(pod)), name=f"pod-{pod}")


class PodServer:
    """A simulated fleet behind per-pod ``/metrics`` endpoints (see the module docstring)."""

    def __init__(self, fleet, *, start: float, speed: float = 1.0, tick: float = 0.2, namespace: str = "default",
                 model_name: str = "vllm", names: str = "v1", wall: Callable[[], float] = time.monotonic):
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.fleet, self.start_v, self.speed, self.tick = fleet, start, speed, tick
        self.namespace, self.model_name, self.names, self.wall = namespace, model_name, names, wall
        self._lock = threading.Lock()
        self._pods: dict[str, TextHTTPServer] = {}
        self._metrics: dict = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wall0 = 0.0
        self.now = start

    def virtual_now(self) -> float:
        return self.start_v + self.speed * (self.wall() - self._wall0)

    def advance(self, now: float) -> None:
        """Advance the fleet to virtual ``now``; open/close pod servers; snapshot every pod's metrics."""
        pms = pod_metrics(self.fleet, now, namespace=self.namespace, model_name=self.model_name, names=self.names)
        with self._lock:
            self._metrics = {p.pod: p for p in pms}
            self.now = now
            for name in set(self._metrics) - set(self._pods):
                self._pods[name] = _pod_http(self, name)
            gone = [n for n in self._pods if n not in self._metrics]
        for n in gone:
            self._pods.pop(n).close()

    def render(self, pod: str) -> str:
        with self._lock:
            pm = self._metrics.get(pod)
        return render_text([pm] if pm is not None else [], names=self.names)

    def targets(self) -> list[tuple[str, dict[str, str]]]:
        with self._lock:
            return [(f"127.0.0.1:{h.port}", {"pod": n, "namespace": self.namespace}) for n, h in self._pods.items()]

    def start(self) -> None:
        self._wall0 = self.wall()
        self.advance(self.start_v)
        self._thread = threading.Thread(target=self._loop, name="podserver-clock", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick):
            self.advance(self.virtual_now())

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for h in list(self._pods.values()):
            h.close()
        self._pods.clear()

    def __enter__(self) -> PodServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from .fleet import ColdStartModel, ModelParams, RequestFleet
    from .traces import load

    ap = argparse.ArgumentParser(prog="python -m simulations.podserver", description=__doc__.split("\n")[0])
    ap.add_argument("--trace", default="azure-2023-conv")
    ap.add_argument("--replicas", type=int, default=2, help="fixed number of ready pods (default 2)")
    ap.add_argument("--speed", type=float, default=1.0, help="virtual seconds per wall second (default 1)")
    ap.add_argument("--names", choices=("v1", "v0"), default="v1", help="vLLM metric names (default v1)")
    args = ap.parse_args(argv)
    tr = load(args.trace)
    a, p, o = tr.requests_view(np.random.default_rng(0))
    fleet = RequestFleet(a, p, o, params=ModelParams(), cold_start=ColdStartModel(), start=tr.start,
                         initial_replicas=args.replicas)
    with PodServer(fleet, start=tr.start, speed=args.speed, names=args.names) as srv:
        time.sleep(0.5)
        for addr, labels in srv.targets():
            print(f"http://{addr}/metrics  {labels}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
