"""The simulated vLLM fleet: replicas with a lifecycle, continuous batching, two fidelities.

* :class:`RequestFleet` -- per-request discrete events (hour-long traces with token sizes);
* :class:`AggregateFleet` -- a fluid model per 10-second bin (week-long count traces).

Both take a :class:`ModelParams` (iteration-time model, defaults and their
source in :mod:`simulations.fleet.model`) and a :class:`ColdStartModel`, and
expose ``advance_to``, ``scale_to``, ``signals(now, window) -> Signals``,
``status_replicas()``, ``ready_replicas()`` and ``outcome(...)``.
"""

from .aggregate_fleet import AggregateFleet
from .base import FleetBase, FleetOutcome, window_attainment
from .lifecycle import ColdStartModel, Replica, ReplicaSet
from .model import LLAMA_3_1_8B_A100, ModelParams, SteadyState, max_rate_within_slo, saturation, steady_state
from .request_fleet import RequestFleet

__all__ = [
    "AggregateFleet", "ColdStartModel", "FleetBase", "FleetOutcome", "LLAMA_3_1_8B_A100", "ModelParams",
    "Replica", "ReplicaSet", "RequestFleet", "SteadyState", "max_rate_within_slo", "saturation", "steady_state",
    "window_attainment",
]
