"""vllm-scaler: a predictive KEDA external scaler for GPU vLLM Deployments.

The public surface: :func:`decide` (the one policy), :class:`Signals`,
:class:`PolicyConfig` / :func:`parse_metadata`, :class:`Decision`,
:class:`PolicyState` and the error hierarchy in :mod:`scaler.errors`.
"""

from .config import PolicyConfig, ServerDefaults, parse_metadata
from .errors import ConfigError, NoDataError, ScalerError, SourceError, SourceUnavailable
from .policy import Decision, PolicyState, decide
from .signals import ColdStart, Signals, SignalSource

__all__ = [
    "ColdStart", "ConfigError", "Decision", "NoDataError", "PolicyConfig", "PolicyState", "ScalerError",
    "ServerDefaults", "SignalSource", "Signals", "SourceError", "SourceUnavailable", "decide", "parse_metadata",
]
__version__ = "0.1.0"
