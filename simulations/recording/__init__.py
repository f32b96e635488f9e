"""Recorded Prometheus data: ``vllm-scaler record``, ``replay`` and ``calibrate``.

* ``record`` runs range queries (prometheus-api-client) for one target -- namespace, Deployment, optional
  model name -- over a time span and writes a **recording**: per tick, the same :class:`~scaler.signals.Signals`
  fields the live source computes, the replicas that served, and mean latencies for calibration.
* ``replay`` feeds each recorded tick through :func:`scaler.policy.decide` (open loop: the recorded fleet
  does not react to the answers) and marks the ticks where the policy would have asked for fewer replicas
  than were needed.
* ``calibrate`` fits the fleet model's ``alpha``, ``beta``, ``gamma`` (:class:`simulations.fleet.ModelParams`)
  to the recorded latencies and loads.

One module per concern (imports run down this list, never up; ``docs/recording.md`` for the user's view):

=============  ==================================================================================
``format``     the file format (JSON Lines): :class:`Recording`, :class:`RecordingHeader`, :class:`Tick`
``testbed``    the bundled H100 testbed's ``reconciles.csv`` read as a :class:`Recording`
``record``     range queries against Prometheus into a :class:`Recording`
``replay``     open-loop replay through ``decide()`` and the "needed" lower bound
``calibrate``  least-squares fit of the fleet model's step-time parameters
``cli``        the three subcommands (``register`` adds them to ``vllm-scaler``)
=============  ==================================================================================

The ScaledObject reader (``replay --scaled-object``) is :func:`simulations.keda.metadata_from_scaled_object`;
``--metadata KEY=VALUE`` items are read by :func:`simulations.runner.parse_metadata_pairs`.
"""

from simulations.keda import metadata_from_scaled_object

from .calibrate import Fit, calibrate, fitted_params
from .cli import DEFAULT_PROMETHEUS_URL, parse_time, register
from .format import FORMAT, VERSION, Recording, RecordingError, RecordingHeader, Tick
from .record import MAX_POINTS_PER_QUERY, record
from .replay import ReplayTick, needed_replicas, replay, replay_config, replay_summary
from .testbed import TESTBED_COLUMNS, from_testbed_csv, is_testbed_csv, load_for_calibration

__all__ = [
    "DEFAULT_PROMETHEUS_URL", "FORMAT", "Fit", "MAX_POINTS_PER_QUERY", "Recording", "RecordingError",
    "RecordingHeader", "ReplayTick", "TESTBED_COLUMNS", "Tick", "VERSION", "calibrate", "fitted_params",
    "from_testbed_csv", "is_testbed_csv", "load_for_calibration", "metadata_from_scaled_object", "needed_replicas",
    "parse_time", "record", "register", "replay", "replay_config", "replay_summary",
]
