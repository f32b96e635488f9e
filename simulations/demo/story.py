"""The demo's story: its names, its compressed :class:`Timing`, the traffic phases, the outage, the replica
model and the ScaledObject (the package docstring tells the story)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulations.fleet import ModelParams
from simulations.keda import read_scaled_object_doc

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "scaledobject-external-push" / "scaledobject.yaml"

NAMESPACE = "demo"
DEPLOYMENT = "llama-3-8b"
MODEL = "llama-3-8b"
ROUTER_METRIC = "demo_router_pending_requests"


@dataclass(frozen=True)
class Timing:
    """Every duration of the loop, compressed (cluster value in the comment). Seconds."""

    scrape_interval: float = 0.5     # PodMonitor interval: 5 s
    refresh_interval: float = 0.5    # refreshInterval: 5 s
    window: float = 4.0              # window: 60 s
    max_staleness: float = 8.0       # maxStaleness: 60 s
    scale_to_zero_after: float = 3.0  # scaleToZeroAfter: 300 s
    polling_interval: int = 3        # pollingInterval: 15 s
    hpa_sync_period: float = 1.0     # the HPA's sync: 15 s
    cooldown_period: int = 4         # cooldownPeriod: 600 s
    initial_cooldown: int = 10       # initialCooldownPeriod: (unset in the example)
    scale_down_window: int = 6       # scaleDown.stabilizationWindowSeconds: 300 s
    cold_start: float = 2.0          # pod created -> Ready: 180 s
    tick: float = 0.1                # how often the demo advances the fleet and the emulator


@dataclass(frozen=True)
class Phase:
    """Traffic from ``start`` to ``end`` (seconds from the start of traffic), rate linear between the ends."""

    name: str
    start: float
    end: float
    rate_from: float
    rate_to: float

    def rate(self, t: float) -> float:
        if self.end == self.start:
            return self.rate_from
        return self.rate_from + (self.rate_to - self.rate_from) * (t - self.start) / (self.end - self.start)


def traffic_phases(peak: float = 12.0) -> tuple[Phase, ...]:
    return (
        Phase("warm", 0, 4, 2, 2),
        Phase("ramp-up", 4, 14, 2, peak),
        Phase("plateau", 14, 26, peak, peak),
        Phase("ramp-down", 26, 30, peak, 0),
        Phase("idle", 30, 46, 0, 0),
        Phase("trickle", 46, 54, 1, 1),
        Phase("drain", 54, 62, 0, 0),
    )


OUTAGE = (17.0, 22.0)   # Prometheus unreachable from the scaler (seconds from the start of traffic)


def demo_model():
    """A small replica so that a few req/s need several: saturates near 5 req/s (see the package docstring).

    Same iteration-time model as :class:`simulations.fleet.ModelParams`, with ``max_num_seqs = 16``
    and a slower decode, i.e. a smaller GPU; prompts of ~200 and outputs of ~48 tokens (:func:`arrivals`).
    """
    return ModelParams(alpha=0.02, beta=0.002, gamma=0.0001, max_num_seqs=16, kv_tokens=100_000,
                       name="demo replica (Llama-3.1-8B-shaped, max_num_seqs 16, slower decode)")



def scaled_object(timing: Timing, policy: str = "reactive") -> dict[str, Any]:
    """deploy/examples/scaledobject-external-push, times compressed, TLS removed, the demo's metadata."""
    so = read_scaled_object_doc(EXAMPLE)
    spec = so["spec"]
    so["metadata"]["namespace"] = NAMESPACE
    spec["pollingInterval"] = timing.polling_interval
    spec["cooldownPeriod"] = timing.cooldown_period
    # A new ScaledObject on a Deployment with no traffic yet would be scaled to zero at once: give it time.
    spec["initialCooldownPeriod"] = timing.initial_cooldown
    spec["maxReplicaCount"] = 8
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    behavior["scaleUp"]["policies"] = [{"type": "Pods", "value": 4, "periodSeconds": 1}]
    behavior["scaleDown"]["stabilizationWindowSeconds"] = timing.scale_down_window
    behavior["scaleDown"]["policies"] = [{"type": "Pods", "value": 1, "periodSeconds": 1}]
    (trigger,) = spec["triggers"]
    trigger.pop("authenticationRef", None)     # the demo's gRPC is plaintext on loopback
    md = trigger["metadata"]
    md.update({
        "policy": policy,
        "maxReplicas": "8",
        "queuePerReplica": "4",
        "runningPerReplica": "8",
        "ttftP95": "1.0",
        "tpotP95": "0.1",
        "refreshInterval": f"{timing.refresh_interval}s",
        "window": f"{timing.window}s",
        "maxStaleness": f"{timing.max_staleness}s",
        "scaleToZeroAfter": f"{timing.scale_to_zero_after}s",
        "coldStart": f"{timing.cold_start}s",
        "reactionLag": f"{timing.polling_interval}s",
        # At zero replicas vLLM exports nothing: demand is read upstream, at the router.
        "activationQuery": f'sum({ROUTER_METRIC}{{namespace="{NAMESPACE}"}})',
    })
    if policy == "reactive":
        for key in ("reactionLag", "targetUtilization", "forecast"):
            md.pop(key, None)
    return so
