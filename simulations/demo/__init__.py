"""``vllm-scaler demo``: the whole loop, end to end, on loopback, in about a minute.

Nothing in the loop is mocked; every process and thread below is started and stopped here::

    traffic ramp -> RequestFleet (simulations.fleet: simulated vLLM pods, continuous batching)
                      | each pod's vLLM metrics (simulations.fleet.metrics.pod_metrics, rendered by
                      | simulations.exposition) on HTTP /metrics, one port per pod slot;
                      | the router's queue (requests held while no replica is ready) on one more port
                      v
                    Prometheus (Debian's `prometheus`, temporary config and TSDB: scaler.testing.promserver)
                      | PromQL, through a TCP gate the demo cuts to stage an outage
                      v
                    `vllm-scaler serve` (a subprocess, configured by VLLM_SCALER_* like deploy/base)
                      | gRPC as KEDA calls it: GetMetricSpec + GetMetrics + IsActive on every KEDA poll and every
                      | HPA sync (3 s deadline), and a StreamIsActive stream (external-push)
                      v
                    KEDA + HPA emulator (simulations.keda.KedaHpa) -> fleet.scale_to(spec.replicas)

The ScaledObject is deploy/examples/scaledobject-external-push (same triggers, behavior and fallback) with
its times compressed: the demo runs in real time, and every duration that is minutes in a cluster is seconds
here (:class:`Timing`), so a one-hour story takes a minute. Time-compression is the "accelerated clock": the
scaler, Prometheus and gRPC run on the wall clock as they do in production; only the constants shrink.

The story (seconds from the start of traffic, :func:`traffic_phases`):

======  ==========================================================================================
0-4     2 req/s on one warm replica
4-14    ramp to ~3 replicas' worth of traffic (``--peak``): scale-up while the queue is still short
14-26   plateau; 17-22: Prometheus is unreachable from the scaler (5 s, less than ``maxStaleness``)
26-30   ramp down to nothing: scale-down
30-46   idle: inactive after ``scaleToZeroAfter``, then KEDA's cooldown: zero replicas
46-54   a trickle at zero replicas: requests wait at the router; the scaler sees them through
        ``activationQuery`` and pushes ``true`` on StreamIsActive: KEDA scales 0 -> 1 at once, without
        waiting for its next poll
54-62   the woken replica serves what waited; the demo ends once it is drained (or at 62 s)
======  ==========================================================================================

:func:`check` turns the run into named pass/fail checks (``tests/integration/test_demo_loop.py`` asserts
them): woke through the stream; scaled up before the queue exploded (against the same arrivals on one fixed
replica, simulated offline); scaled down after the ramp; scaled to zero; the outage changed nothing for the
worse (no failed call, no scale-down, no deactivation, and the scaler did see the source fail).

One module per concern (imports run down this list, never up):

==================  ====================================================================================
``story``           names, :class:`Timing`, the phases, the outage, the replica model, the ScaledObject
``arrivals``        Poisson arrivals along the phases, and token sizes
``exporter``        the simulated pods' ``/metrics`` in fixed scrape slots (:class:`PodExporter`)
``gate``            the TCP gate the outage cuts (:class:`TcpGate`)
``scaler_process``  ``vllm-scaler serve`` as a subprocess (:class:`ScalerProcess`)
``trigger``         KEDA's gRPC side: :class:`GrpcTrigger`, :class:`PushListener` (on
                    :class:`scaler.server.client.ExternalScalerClient`; no generated stubs here)
``result``          :class:`DemoResult`, :class:`DemoTick`, :class:`Check`
``run``             one run of the loop (:func:`run`)
``check``           the story's claims as named checks (:func:`check`)
``cluster``         the in-cluster roles, ``--role loadgen`` and ``--role pod``
``cli``             ``vllm-scaler demo`` (also ``python -m simulations.demo``)
==================  ====================================================================================
"""

from .arrivals import arrivals
from .check import check
from .cli import register
from .cluster import assign_pods, cluster_phases, serve_loadgen, serve_pod
from .exporter import PodExporter, metrics_port
from .gate import TcpGate
from .result import Check, DemoResult, DemoTick
from .run import run
from .scaler_process import ScalerProcess, free_port
from .story import (
                    DEPLOYMENT,
                    EXAMPLE,
                    MODEL,
                    NAMESPACE,
                    OUTAGE,
                    REPO,
                    ROUTER_METRIC,
                    Phase,
                    Timing,
                    demo_model,
                    scaled_object,
                    traffic_phases,
)
from .trigger import GrpcTrigger, PushListener

__all__ = [
    "Check", "DEPLOYMENT", "DemoResult", "DemoTick", "EXAMPLE", "GrpcTrigger", "MODEL", "NAMESPACE", "OUTAGE", "Phase",
    "PodExporter", "PushListener", "REPO", "ROUTER_METRIC", "ScalerProcess", "TcpGate", "Timing",
    "arrivals", "assign_pods", "check", "cluster_phases", "demo_model", "free_port", "metrics_port", "register",
    "run", "scaled_object", "serve_loadgen", "serve_pod", "traffic_phases",
]
