"""Assembles the running scaler: gRPC (ExternalScaler, health, reflection), refresher, ``/metrics``.

:class:`ScalerServer` owns one asyncio event loop on a thread of its own (the
``grpc.aio`` server lives there), the :class:`~scaler.server.refresher.Refresher`
threads and the metrics HTTP server. ``start()`` returns once all of them
serve; ``stop(grace)`` shuts down in this order:

1. health goes ``NOT_SERVING`` (probes and load balancers stop sending),
2. open streams end (``StreamIsActive`` / ``StreamMetricSpec`` return; KEDA
   reconnects to another replica),
3. the gRPC server stops accepting and gives in-flight RPCs ``grace`` seconds,
4. the refresher and the metrics endpoint stop.

Extension points: ``source_factory`` (Prometheus address -> ``SignalSource``)
and ``enrichers`` (a sequence of
:class:`~scaler.server.refresher.SignalEnricher`), both passed to the
constructor; see docs/server.md.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from ..config import ServerDefaults
from .metrics import ScalerMetrics
from .refresher import Refresher, RefreshObserver, SignalEnricher, SourceFactory
from .servicer import SERVICE_NAME, ExternalScalerServicer, ServicerBase, add_to_server
from .targets import TargetStore
from .tls import TlsFiles

log = logging.getLogger("scaler.server")


@dataclass(frozen=True)
class ServerSettings:
    """Every server setting (the CLI fills these from flags and ``VLLM_SCALER_*``; see docs/server.md)."""

    host: str = "0.0.0.0"
    port: int = 6000  # 0: pick a free port (tests)
    health_port: int | None = None  # extra plaintext port serving grpc.health.v1 only
    metrics_host: str | None = None  # default: same as host
    metrics_port: int | None = 8080  # None: no metrics endpoint; 0: pick a free port
    defaults: ServerDefaults = field(default_factory=ServerDefaults)
    prometheus_timeout: float = 3.0
    tls: TlsFiles | None = None
    idle_eviction: float = 600.0
    max_targets: int | None = 5000  # live targets; a new one beyond it is refused RESOURCE_EXHAUSTED
    cold_wait: float = 0.8
    grace: float = 10.0
    max_concurrent_rpcs: int | None = None
    refresh_workers: int = 4
    refresh_budget: float | None = 1.0  # CPU seconds per target per refresh (enrichers + decide); None: unbounded
    health_interval: float = 1.0  # how often health is re-checked against the refresh lag (seconds)
    # Python's GIL hand-off interval while serving (default 5 ms). The refresh threads run decide() for
    # every target; a short interval keeps them from holding the RPC event loop off for milliseconds
    # (benchmark: p99 at 200 calls/s with 1,000 targets, docs/server.md). None leaves it alone.
    gil_switch_interval: float | None = 0.0005
    # After start, collect once and gc.freeze() what is alive (modules, generated protobuf code, clients):
    # a full collection then scans only what serving creates, instead of pausing the RPC loop for tens of ms.
    gc_freeze: bool = True


class ScalerServer:
    """The whole server; a context manager (``with ScalerServer(...) as s: ...``)."""

    def __init__(self, settings: ServerSettings, *, source_factory: SourceFactory,
                 enrichers: Sequence[SignalEnricher] = (), clock: Callable[[], float] = time.time,
                 background_refresh: bool = True, servicer_factory: Callable[[], ServicerBase] | None = None):
        self.settings = settings
        self.clock = clock
        self.store = TargetStore(settings.defaults, max_targets=settings.max_targets)
        self._servicer: ExternalScalerServicer | None = None
        self.metrics = ScalerMetrics(self.store, clock, lambda: self._servicer.open_streams if self._servicer else 0)
        self.refresher = Refresher(self.store, source_factory, clock=clock, enrichers=enrichers,
                                   workers=settings.refresh_workers, idle_eviction=settings.idle_eviction,
                                   budget=settings.refresh_budget,
                                   observer=RefreshObserver(fetch_seconds=self.metrics.observe_fetch,
                                                            cutoff=self.metrics.observe_cutoff))
        self.metrics.collector.lag = self.refresher.lag
        self._background_refresh = background_refresh
        self._servicer_factory = servicer_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._health_server: grpc.aio.Server | None = None
        self.health_port: int | None = None
        self._metrics_http: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()
        self._health_task: asyncio.Task[None] | None = None
        self.serving: bool | None = None  # what health last said (None before start)
        self.port: int | None = None
        self.metrics_port: int | None = None

    @property
    def servicer(self) -> ExternalScalerServicer | None:
        return self._servicer

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "::", "") else self.settings.host
        return f"{host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> ScalerServer:
        if self.settings.gil_switch_interval is not None:
            sys.setswitchinterval(min(sys.getswitchinterval(), self.settings.gil_switch_interval))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-aio", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout)
            if self.settings.metrics_port is not None:
                host = self.settings.metrics_host or self.settings.host
                try:
                    self._metrics_http = _metrics_http_server(host, self.settings.metrics_port,
                                                              self.metrics.registry)
                except OSError as exc:
                    raise OSError(f"--metrics-port: cannot listen on {host}:{self.settings.metrics_port}: "
                                  f"{exc.strerror or exc}") from None
                self.metrics_port = self._metrics_http.server_address[1]
            if self._background_refresh:
                self.refresher.start()
            if self.settings.gc_freeze:
                gc.collect()
                gc.freeze()
        except BaseException:
            try:  # release whatever did start (a bound gRPC port) before reporting the failure
                asyncio.run_coroutine_threadsafe(self._stop(0), self._loop).result(5)
            except Exception:
                pass
            self._halt_loop()
            raise
        log.info("serving", extra={"fields": {
            "grpc": f"{self.settings.host}:{self.port}", "tls": _tls_mode(self.settings.tls),
            "metrics": None if self.metrics_port is None else f"{self.settings.metrics_host or self.settings.host}:"
                                                              f"{self.metrics_port}",
            "prometheus_default": self.settings.defaults.prometheus_url,
            "enrichers": [getattr(e, "name", type(e).__name__) for e in self.refresher.enrichers]}})
        return self

    async def _start(self) -> None:
        options = [("grpc.so_reuseport", 0)]
        self._server = grpc.aio.server(options=options, maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs)
        if self._servicer_factory is not None:
            servicer = self._servicer_factory()
        else:
            servicer = self._servicer = ExternalScalerServicer(
                self.store, self.refresher, self.metrics, clock=self.clock, cold_wait=self.settings.cold_wait)
        add_to_server(servicer, self._server)
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server)
        bind = f"{self.settings.host}:{self.settings.port}"
        try:
            if self.settings.tls is not None:
                self.port = self._server.add_secure_port(bind, self.settings.tls.server_credentials())
            else:
                self.port = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"--grpc-port: cannot listen on {bind}: {exc}") from None
        await self._server.start()
        if self.settings.health_port is not None:
            # Plaintext, health only: the kubelet's gRPC probe cannot speak TLS.
            self._health_server = grpc.aio.server(options=options)
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
            bind_health = f"{self.settings.host}:{self.settings.health_port}"
            try:
                self.health_port = self._health_server.add_insecure_port(bind_health)
            except RuntimeError as exc:
                raise OSError(f"--health-port: cannot listen on {bind_health}: {exc}") from None
            await self._health_server.start()
        await self._set_health(True)
        if self._background_refresh:
            self._health_task = asyncio.get_running_loop().create_task(self._watch_health())

    async def _set_health(self, serving: bool) -> None:
        assert self._health is not None
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)
        self.serving = serving

    async def _watch_health(self) -> None:
        """Health follows the refresh: ``NOT_SERVING`` while any target is hopelessly behind.

        Hopelessly behind: a target's refresh overdue by more than its ``maxStaleness``
        (:meth:`Refresher.lag`), so it answers ``UNAVAILABLE`` because of this process (a stuck worker, a
        stalled loop, more work than CPU), not because of its source. Readiness then takes the replica out
        of KEDA's rotation and liveness restarts it; ``SERVING`` again once every target is back in time.
        """
        while True:
            await asyncio.sleep(self.settings.health_interval)
            try:
                worst, hopeless = self.refresher.lag(self.clock())
                if (hopeless == 0) != self.serving:
                    await self._set_health(hopeless == 0)
                    (log.info if hopeless == 0 else log.error)(
                        "health %s: refresh %s", "SERVING" if hopeless == 0 else "NOT_SERVING",
                        "back in time" if hopeless == 0 else "hopelessly behind",
                        extra={"fields": {"targets_behind": hopeless, "max_lag_s": round(worst, 1)}})
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die silently
                log.exception("health check failed")

    def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown (see the module docstring). Safe to call twice."""
        if self._stopped.is_set() or self._loop is None:
            return
        self._stopped.set()
        grace = self.settings.grace if grace is None else grace
        log.info("shutting down", extra={"fields": {"grace_s": grace}})
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace), self._loop).result(grace + 10)
        finally:
            self.refresher.stop()
            if self._metrics_http is not None:
                self._metrics_http.shutdown()
                self._metrics_http.server_close()
            self._halt_loop()
        log.info("stopped")

    async def _stop(self, grace: float) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._servicer is not None:
            self._servicer.close_streams()
        if self._server is not None:
            await self._server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(0)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(5)
        if not loop.is_running():
            loop.close()

    def __enter__(self) -> ScalerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True


def _metrics_http_server(host: str, port: int, registry: CollectorRegistry) -> ThreadingHTTPServer:
    """``GET /metrics`` on its own thread (polls for shutdown every 50 ms, so stopping is quick)."""
    httpd = _MetricsHTTPServer((host, port), MetricsHandler.factory(registry))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="metrics-http",
                     daemon=True).start()
    return httpd


def _tls_mode(tls: TlsFiles | None) -> str:
    return "off" if tls is None else ("mutual" if tls.mutual else "server")
