"""The KEDA external scaler service: ``vllm-scaler serve``.

Modules: :mod:`.targets` (parse cache, per-target state and answers),
:mod:`.refresher` (background refresh, source factory and enricher hook),
:mod:`.servicer` (the gRPC ExternalScaler service), :mod:`.client` (KEDA's calls
as a typed client, for the demo and the tests; it and the servicer are the only users of the
generated stubs), :mod:`.metrics` (``/metrics``), :mod:`.tls`, :mod:`.logs`,
:mod:`.app` (assembly and graceful shutdown), :mod:`.cli` (flags and env).
"""

from ..errors import Unavailable
from .app import ScalerServer, ServerSettings
from .refresher import Refresher, SignalEnricher, SourceFactory
from .servicer import METRIC_NAME
from .targets import Target, TargetStore

__all__ = ["METRIC_NAME", "Refresher", "ScalerServer", "ServerSettings", "SignalEnricher", "SourceFactory",
           "Target", "TargetStore", "Unavailable"]
