"""A small typed client for the scaler's gRPC service, calling it as KEDA does.

KEDA's ``type: external`` trigger makes three unary calls on every poll and every HPA sync --
``GetMetricSpec``, ``GetMetrics``, ``IsActive`` -- each under a deadline, and an ``external-push`` trigger
keeps one ``StreamIsActive`` stream open. :class:`ExternalScalerClient` makes those calls on a channel the
caller owns and answers in plain Python values; the generated stubs (``scaler._proto``) stay next to the
servicer (:mod:`.servicer`), so the demo (``simulations.demo``) never imports them. Tests of the wire
protocol itself (field numbers, raw messages) use the stubs directly.

Conversions are KEDA's: a metric spec's target is ``targetSizeFloat`` when it is set (> 0), else
``targetSize``; a metric value is ``metricValueFloat`` when set, else ``metricValue``.
Tests: ``tests/unit/test_server_client.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from scaler._proto import externalscaler_pb2 as pb
from scaler._proto import externalscaler_pb2_grpc as pb_grpc

DEADLINE = 3.0     # seconds: the budget KEDA's HPA path gives each call


@dataclass(frozen=True)
class ScaledObjectRef:
    """Which ScaledObject a call is about, and its trigger's metadata (what KEDA sends on every call)."""

    name: str
    namespace: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def message(self) -> pb.ScaledObjectRef:
        return pb.ScaledObjectRef(name=self.name, namespace=self.namespace,
                                  scalerMetadata={str(k): str(v) for k, v in self.metadata.items()})


@dataclass(frozen=True)
class MetricSpec:
    name: str
    target: float


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float


class CallError(Exception):
    """A call that failed: the RPC's name, the gRPC status code and the server's details."""

    def __init__(self, rpc: str, code: grpc.StatusCode, details: str):
        self.rpc, self.code, self.details = rpc, code, details
        super().__init__(f"{rpc}: {code.name}: {details}")


class ActiveStream:
    """An open ``StreamIsActive`` call: iterate for the ``bool`` messages; :meth:`cancel` ends it.

    Iteration ends when the call is cancelled; any other failure raises :class:`CallError`.
    """

    def __init__(self, call: Any) -> None:   # the generated stub's response iterator (untyped)
        self._call = call

    def __iter__(self) -> Iterator[bool]:
        try:
            for msg in self._call:
                yield bool(msg.result)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                raise CallError("StreamIsActive", exc.code(), exc.details() or "") from None

    def cancel(self) -> None:
        self._call.cancel()


class ExternalScalerClient:
    """KEDA's calls to the ExternalScaler service on ``channel``, each under ``deadline`` seconds."""

    def __init__(self, channel: grpc.Channel, *, deadline: float = DEADLINE):
        if not deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {deadline!r}")
        self.channel = channel
        self.deadline = deadline
        self._stub = pb_grpc.ExternalScalerStub(channel)

    def _unary(self, rpc: str, request: Message) -> Any:   # the generated stub's response (untyped)
        try:
            return getattr(self._stub, rpc)(request, timeout=self.deadline)
        except grpc.RpcError as exc:
            raise CallError(rpc, exc.code(), exc.details() or "") from None

    def get_metric_spec(self, ref: ScaledObjectRef) -> tuple[MetricSpec, ...]:
        specs = self._unary("GetMetricSpec", ref.message()).metricSpecs
        return tuple(MetricSpec(s.metricName, s.targetSizeFloat if s.targetSizeFloat > 0 else float(s.targetSize))
                     for s in specs)

    def get_metrics(self, ref: ScaledObjectRef, metric_name: str) -> tuple[MetricValue, ...]:
        req = pb.GetMetricsRequest(scaledObjectRef=ref.message(), metricName=metric_name)
        values = self._unary("GetMetrics", req).metricValues
        return tuple(MetricValue(v.metricName,
                                 v.metricValueFloat if v.metricValueFloat > 0 else float(v.metricValue))
                     for v in values)

    def is_active(self, ref: ScaledObjectRef) -> bool:
        return bool(self._unary("IsActive", ref.message()).result)

    def stream_is_active(self, ref: ScaledObjectRef) -> ActiveStream:
        """Open ``StreamIsActive`` (no deadline: KEDA keeps it open for the ScaledObject's life)."""
        return ActiveStream(self._stub.StreamIsActive(ref.message()))

    def serving(self, service: str = "") -> bool:
        """True when the gRPC health service answers SERVING (``""``: the whole server) within the deadline."""
        try:
            status = health_pb2_grpc.HealthStub(self.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.deadline).status
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)
