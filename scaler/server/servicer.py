"""KEDA's ``externalscaler.ExternalScaler`` service, answered from the target cache.

With :mod:`.client` (KEDA's side of the same calls), the only module that imports the generated protobuf
code (``scaler._proto``).
Runs on a ``grpc.aio`` server: unary RPCs are a dictionary lookup and a
message, and long-lived streams cost a coroutine, not a thread.

What each RPC answers (see docs/server.md for the KEDA side):

* ``GetMetricSpec``: one metric, :data:`METRIC_NAME`, ``targetSize = 1`` and
  ``targetSizeFloat = 1``, constant, so the HPA target never changes and the
  decision travels in the value (with ``metricType: AverageValue`` the HPA then
  computes ``ceil(value / 1)``). It also registers the target and starts its
  first refresh, so the ``GetMetrics`` KEDA sends next finds a warm cache.
* ``GetMetrics``: the desired replica count, in ``metricValue`` and
  ``metricValueFloat``.
* ``IsActive``: the decision's ``active``.
* ``StreamIsActive``: the current state once known, then ``true`` on every
  inactive -> active transition; open until the client cancels (or the server
  shuts down). Unknown or stale data sends nothing, never ``false``.
* ``StreamMetricSpec``: the spec at once, then stays open.

Errors: bad metadata -> ``INVALID_ARGUMENT`` naming every bad key and value;
no decision fresher than ``maxStaleness`` -> ``UNAVAILABLE``; a new target
beyond the server's ``--max-targets`` -> ``RESOURCE_EXHAUSTED``. On a cold cache
(a target never refreshed) ``GetMetrics``/``IsActive`` wait at most
``cold_wait`` seconds for the first refresh, then answer ``UNAVAILABLE``.
Every message returned is cut at :data:`~scaler.redact.MAX_MESSAGE` characters
and carries no ``user:password@`` of any URL (:func:`public_message`).

Audit: every refused request (``INVALID_ARGUMENT``, ``RESOURCE_EXHAUSTED``) is
one structured WARNING line ``request refused`` with the ScaledObject, its
namespace, the status code and the keys refused, never a value (a value may be
a secret); at most one line per (namespace, ScaledObject) per ``audit_interval``
seconds and 100 lines per interval in all, the next line counting the ones
``suppressed`` meanwhile (:class:`RefusalAudit`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from .._proto import externalscaler_pb2 as pb
from .._proto import externalscaler_pb2_grpc as pb_grpc
from ..errors import ConfigError, TooManyTargets, Unavailable
from ..policy import Decision
from ..redact import MAX_VALUE, redact_text, truncate
from .metrics import ScalerMetrics
from .refresher import Refresher
from .targets import Target, TargetStore

log = logging.getLogger("scaler.server.rpc")

# a gRPC call context (request and response types are the generated messages, not tracked here)
_Context = grpc.aio.ServicerContext[Any, Any]
_R = TypeVar("_R")

METRIC_NAME = "vllm-desired-replicas"
"""The one metric this scaler reports (the HPA sees it as ``s<N>-vllm-desired-replicas``)."""

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExternalScaler"].full_name  # "externalscaler.ExternalScaler"

_SPEC = pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(metricName=METRIC_NAME, targetSize=1,
                                                            targetSizeFloat=1.0)])


_INT64_MAX = 2**63 - 1   # GetMetricsResponse.metricValue is an int64


def public_message(text: str) -> str:
    """What a client may be told: no ``user:password@`` of any URL, at most ``MAX_MESSAGE`` characters."""
    return truncate(redact_text(text))


class _Fail(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        details = public_message(details)
        super().__init__(details)
        self.code = code
        self.details = details


class RefusalAudit:
    """One structured log line per refused request, rate-limited per (namespace, ScaledObject).

    A line is written when the pair was not logged within ``interval`` seconds; otherwise the refusal is
    counted and the next line reports it as ``suppressed``. A client inventing a new name per call meets a
    second limit: at most ``max_lines`` lines per ``interval`` in all, the next line counting the others as
    ``suppressed_all``. Memory is bounded: at ``max_pairs`` pairs the ones not logged within ``interval``
    are forgotten (their suppressed counts are lost, never the next line). Only key names are logged, each
    cut at ``MAX_VALUE`` characters, at most :data:`MAX_KEYS` of them.
    """

    MAX_KEYS = 20

    def __init__(self, interval: float = 60.0, max_pairs: int = 10_000, max_lines: int = 100):
        self.interval = interval
        self.max_pairs = max_pairs
        self.max_lines = max_lines
        self._last: dict[tuple[str, str], tuple[float, int]] = {}   # pair -> (logged at, suppressed since)
        self._lines_since, self._lines, self._suppressed_all = float("-inf"), 0, 0

    def refused(self, namespace: str, name: str, code: grpc.StatusCode, keys: tuple[str, ...],
                now: float) -> bool:
        """Record a refusal; True when a line was written."""
        pair = (namespace, name)
        seen = self._last.get(pair)
        if seen is not None and now - seen[0] < self.interval:
            self._last[pair] = (seen[0], seen[1] + 1)
            return False
        if now - self._lines_since >= self.interval:
            self._lines_since, self._lines = now, 0
        if self._lines >= self.max_lines:
            self._suppressed_all += 1
            return False
        self._lines += 1
        if seen is None and len(self._last) >= self.max_pairs:
            self._last = {p: v for p, v in self._last.items() if now - v[0] < self.interval}
            if len(self._last) >= self.max_pairs:
                self._last.clear()
        self._last[pair] = (now, 0)
        shown = sorted({truncate(k, MAX_VALUE) for k in keys})
        log.warning("request refused", extra={"fields": {
            "namespace": truncate(namespace, MAX_VALUE), "scaledobject": truncate(name, MAX_VALUE),
            "code": code.name, "keys": shown[:self.MAX_KEYS], "keys_total": len(shown),
            "suppressed": 0 if seen is None else seen[1], "suppressed_all": self._suppressed_all}})
        self._suppressed_all = 0
        return True


def _accepts_metric_name(name: str) -> bool:
    """Ours, empty, or ours with KEDA's ``s<N>-`` prefix (KEDA strips it; older versions may not)."""
    if name in ("", METRIC_NAME):
        return True
    head, _, tail = name.partition("-")
    return tail == METRIC_NAME and head[:1] == "s" and head[1:].isdigit()


class ExternalScalerServicer(pb_grpc.ExternalScalerServicer):
    """Answers KEDA from a :class:`TargetStore` that a :class:`Refresher` keeps fresh."""

    def __init__(self, store: TargetStore, refresher: Refresher | None, metrics: ScalerMetrics | None, *,
                 clock: Callable[[], float] = time.time, cold_wait: float = 0.8, audit_interval: float = 60.0):
        self._store = store
        self.audit = RefusalAudit(audit_interval)
        self._refresher = refresher
        self._metrics = metrics
        self._clock = clock
        self.cold_wait = cold_wait
        self._closing = False
        self._stream_wakers: set[asyncio.Event] = set()

    # -- plumbing -----------------------------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._stream_wakers)

    def close_streams(self) -> None:
        """End every open stream now (server shutdown); call on the server's event loop."""
        self._closing = True
        for wake in list(self._stream_wakers):
            wake.set()

    def _refuse(self, ref: pb.ScaledObjectRef, code: grpc.StatusCode, keys: tuple[str, ...],
                details: str) -> _Fail:
        self.audit.refused(ref.namespace, ref.name, code, keys, self._clock())
        return _Fail(code, details)

    def _resolve(self, ref: pb.ScaledObjectRef, now: float) -> Target:
        try:
            target = self._store.resolve(ref.name, ref.namespace, ref.scalerMetadata, now)
        except ConfigError as exc:
            raise self._refuse(ref, grpc.StatusCode.INVALID_ARGUMENT, exc.keys, str(exc)) from None
        except TooManyTargets as exc:
            raise self._refuse(ref, grpc.StatusCode.RESOURCE_EXHAUSTED, (), str(exc)) from None
        if target.next_due == float("-inf") and self._refresher is not None:
            self._refresher.kick()
        return target

    async def _decision(self, target: Target) -> Decision:
        """The target's decision now; on a cold cache wait up to ``cold_wait`` for the first refresh."""
        try:
            return target.current(self._clock())
        except Unavailable as exc:
            if not exc.cold or self.cold_wait <= 0:
                raise _Fail(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        loop = asyncio.get_running_loop()
        updated = asyncio.Event()

        def on_update() -> None:
            loop.call_soon_threadsafe(updated.set)

        target.subscribe(on_update)
        deadline = loop.time() + self.cold_wait
        try:
            while True:
                try:
                    return target.current(self._clock())
                except Unavailable as exc:
                    left = deadline - loop.time()
                    if not exc.cold or left <= 0:
                        raise _Fail(grpc.StatusCode.UNAVAILABLE,
                                    f"{exc} (waited {self.cold_wait:g}s for the first refresh)" if exc.cold
                                    else str(exc)) from None
                updated.clear()
                try:
                    await asyncio.wait_for(updated.wait(), timeout=left)
                except TimeoutError:
                    pass
        finally:
            target.unsubscribe(on_update)

    async def _unary(self, method: str, context: _Context, answer: Callable[[], Awaitable[_R]]) -> _R:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await answer()
        except _Fail as fail:
            code = fail.code
            if code is not grpc.StatusCode.INVALID_ARGUMENT:
                log.debug("%s failed: %s", method, fail.details)
            await context.abort(fail.code, fail.details)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            await context.abort(grpc.StatusCode.INTERNAL,
                                public_message(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            if self._metrics is not None:
                self._metrics.observe_rpc(method, code.name, time.perf_counter() - started)

    # -- unary RPCs ---------------------------------------------------------------------------
    async def GetMetricSpec(self, request: pb.ScaledObjectRef, context: _Context) -> pb.GetMetricSpecResponse:
        async def answer() -> pb.GetMetricSpecResponse:
            self._resolve(request, self._clock())
            return _SPEC

        return await self._unary("GetMetricSpec", context, answer)

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: _Context) -> pb.GetMetricsResponse:
        async def answer() -> pb.GetMetricsResponse:
            if not _accepts_metric_name(request.metricName):
                raise self._refuse(request.scaledObjectRef, grpc.StatusCode.INVALID_ARGUMENT, ("metricName",),
                                   f"metricName={truncate(request.metricName, MAX_VALUE)!r}: unknown metric "
                                   f"(this scaler reports {METRIC_NAME!r})")
            target = self._resolve(request.scaledObjectRef, self._clock())
            d = await self._decision(target)
            # desired is within [minReplicas, maxReplicas] (bounded far below int64); clamped anyway so no
            # reply can fail to serialise
            value = min(max(d.desired, 0), _INT64_MAX)
            return pb.GetMetricsResponse(metricValues=[pb.MetricValue(
                metricName=METRIC_NAME, metricValue=value, metricValueFloat=float(value))])

        return await self._unary("GetMetrics", context, answer)

    async def IsActive(self, request: pb.ScaledObjectRef, context: _Context) -> pb.IsActiveResponse:
        async def answer() -> pb.IsActiveResponse:
            target = self._resolve(request, self._clock())
            d = await self._decision(target)
            return pb.IsActiveResponse(result=d.active)

        return await self._unary("IsActive", context, answer)

    # -- streams ------------------------------------------------------------------------------
    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: _Context) -> AsyncIterator[pb.IsActiveResponse]:
        try:
            target = self._resolve(request, self._clock())
        except _Fail as fail:
            await context.abort(fail.code, fail.details)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def on_update() -> None:
            loop.call_soon_threadsafe(wake.set)

        with target.streaming(on_update):
            self._stream_wakers.add(wake)
            known: bool | None = None  # the last activation seen from a fresh decision
            try:
                while not self._closing:
                    now = self._clock()
                    target.asked(now)
                    try:
                        active = target.current(now).active
                    except Unavailable:
                        active = None  # unknown or stale: say nothing
                    if active is not None:
                        if known is None or (active and not known):
                            yield pb.IsActiveResponse(result=active)
                        known = active
                    wake.clear()
                    await wake.wait()
            finally:
                self._stream_wakers.discard(wake)

    async def StreamMetricSpec(self, request: pb.ScaledObjectRef,
                               context: _Context) -> AsyncIterator[pb.GetMetricSpecResponse]:
        try:
            target = self._resolve(request, self._clock())
        except _Fail as fail:
            await context.abort(fail.code, fail.details)
        wake = asyncio.Event()
        with target.streaming():
            self._stream_wakers.add(wake)
            try:
                yield _SPEC
                while not self._closing:
                    await wake.wait()
                    wake.clear()
            finally:
                self._stream_wakers.discard(wake)


# what add_to_server registers (the generated base class)
ServicerBase = pb_grpc.ExternalScalerServicer


def add_to_server(servicer: ServicerBase, server: grpc.aio.Server) -> None:
    """Register an ExternalScaler servicer (keeps the generated code imported here only)."""
    pb_grpc.add_ExternalScalerServicer_to_server(servicer, server)


class ConstantServicer(pb_grpc.ExternalScalerServicer):
    """A do-nothing servicer answering constants: the baseline the benchmark compares against."""

    _METRICS = pb.GetMetricsResponse(metricValues=[pb.MetricValue(metricName=METRIC_NAME, metricValue=1,
                                                                  metricValueFloat=1.0)])

    async def GetMetricSpec(self, request: pb.ScaledObjectRef, context: _Context) -> pb.GetMetricSpecResponse:
        return _SPEC

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: _Context) -> pb.GetMetricsResponse:
        return self._METRICS

    async def IsActive(self, request: pb.ScaledObjectRef, context: _Context) -> pb.IsActiveResponse:
        return pb.IsActiveResponse(result=True)
