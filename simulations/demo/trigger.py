"""KEDA's side of the gRPC: :class:`GrpcTrigger` (the unary calls of a ``type: external`` trigger) and
:class:`PushListener` (the ``StreamIsActive`` stream of ``external-push``), both on
:class:`scaler.server.client.ExternalScalerClient`."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import grpc

from scaler.errors import SourceError
from scaler.server.client import DEADLINE, CallError, ExternalScalerClient, ScaledObjectRef


class GrpcTrigger:
    """A ``type: external`` trigger as KEDA runs it: the three calls on a shared channel, 3 s deadline each.

    Implements :class:`simulations.keda.Trigger`; a failed call raises :class:`scaler.errors.SourceError`
    (what KEDA counts as a scaler error). Every call is recorded in ``calls`` (time, rpc, value or error).
    """

    metric_type = "AverageValue"
    DEADLINE = DEADLINE       # KEDA's budget per call

    def __init__(self, channel: grpc.Channel, ref: ScaledObjectRef, clock: Callable[[], float]):
        self.client = ExternalScalerClient(channel, deadline=self.DEADLINE)
        self.ref = ref
        self.clock = clock
        self.calls: list[tuple[float, str, Any]] = []
        self.last_metric: float | None = None
        self.last_active: bool | None = None
        self._metric_name = ""

    def _call(self, rpc: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except CallError as exc:
            self.calls.append((self.clock(), rpc, f"error {exc.code.name}"))
            raise SourceError(str(exc), source="grpc") from None

    def target(self) -> float:
        spec = self._call("GetMetricSpec", lambda: self.client.get_metric_spec(self.ref))[0]
        self._metric_name = spec.name
        return spec.target

    def metric(self, now: float) -> float:
        values = self._call("GetMetrics", lambda: self.client.get_metrics(self.ref, self._metric_name))
        total = sum(v.value for v in values)
        self.calls.append((self.clock(), "GetMetrics", total))
        self.last_metric = total
        return total

    def is_active(self, now: float) -> bool:
        result = self._call("IsActive", lambda: self.client.is_active(self.ref))
        self.calls.append((self.clock(), "IsActive", result))
        self.last_active = result
        return result


class PushListener:
    """KEDA's side of ``StreamIsActive``: a thread that queues the time of every ``true`` received."""

    def __init__(self, channel: grpc.Channel, ref: ScaledObjectRef, clock: Callable[[], float]):
        self.clock = clock
        self.trues: queue.Queue[float] = queue.Queue()
        self.received: list[tuple[float, bool]] = []
        self._stream = ExternalScalerClient(channel).stream_is_active(ref)
        self.thread = threading.Thread(target=self._run, name="stream-is-active", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for result in self._stream:
                now = self.clock()
                self.received.append((now, result))
                if result:
                    self.trues.put(now)
        except CallError:
            pass   # the server went away (a cancel at the end of the demo ends the stream quietly)

    def close(self) -> None:
        self._stream.cancel()
        self.thread.join(timeout=5)
