"""The simulated vLLM fleet: replicas with a lifecycle, continuous batching, two fidelities.

* :class:`RequestFleet` -- per-request discrete events (hour-long traces with token sizes);
* :class:`AggregateFleet` -- a fluid model per 10-second bin (week-long count traces).

Both take a :class:`ModelParams` (iteration-time model in :mod:`simulations.fleet.model`; named
profiles of model x GPU, the default among them, with their sources in :mod:`simulations.fleet.profiles`) and a :class:`ColdStartModel`, and
expose ``advance_to``, ``scale_to``, ``signals(now, window) -> Signals``,
``status_replicas()``, ``ready_replicas()`` and ``outcome(...)``.
"""

from .aggregate_fleet import AggregateFleet
from .base import FleetBase, FleetOutcome, window_attainment
from .lifecycle import ColdStartModel, Replica, ReplicaSet
from .model import ModelParams, SteadyState, max_rate_within_slo, saturation, steady_state
from .request_fleet import RequestFleet

__all__ = [
    "AggregateFleet", "ColdStartModel", "FleetBase", "FleetOutcome", "ModelParams",
    "Replica", "ReplicaSet", "RequestFleet", "SteadyState", "max_rate_within_slo", "saturation", "steady_state",
    "window_attainment",
]
